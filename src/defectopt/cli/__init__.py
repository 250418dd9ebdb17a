"""Command-line interface: thin modules that parse options, call the library, print results.

`main()` is the console script. A DefectoptError (anything a user can cause) becomes one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer
from rich.markup import escape

from defectopt.cli.app import app, err_console
from defectopt.errors import DefectoptError

# Usage errors: typer >= 0.20 vendors Click (typer._click), older typer raises click's own.
USAGE_ERRORS = tuple({click.ClickException, getattr(typer, "TyperException", click.ClickException)})
try:
    from typer._click.exceptions import NoArgsIsHelpError
except ImportError:  # typer built on the click package
    from click.exceptions import NoArgsIsHelpError

# Importing a command module registers its commands on `app`.
COMMAND_MODULES = ("data", "weights", "models", "train", "prune", "quantize", "bench", "report", "ship", "pipeline", "search", "doctor")
for _name in COMMAND_MODULES:
    importlib.import_module(f"defectopt.cli.{_name}")


def _fail(message: str, code: int) -> None:
    # escape(): messages carry paths and labels such as "x[no-KD]" that Rich would eat as markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    # standalone_mode=False: Click hands usage errors (bad option values, unknown commands) to
    # us instead of drawing a multi-line panel, so every error a user can cause is one line.
    try:
        rv = app(args=argv, prog_name="defectopt", standalone_mode=False)
    except DefectoptError as exc:
        _fail(str(exc), exc.exit_code)
    except NoArgsIsHelpError as exc:  # a bare group name: show its help
        exc.show()
        sys.exit(exc.exit_code)
    except (typer.Abort, click.exceptions.Abort):
        err_console.print("aborted", highlight=False)
        sys.exit(130)
    except USAGE_ERRORS as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(" ".join(exc.format_message().split()) + hint, getattr(exc, "exit_code", 2))
    # In non-standalone mode Click returns the code of an explicit typer.Exit(code) as rv
    # (commands themselves return None: they print, they do not return results).
    if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
        sys.exit(rv)


__all__ = ["app", "main"]
