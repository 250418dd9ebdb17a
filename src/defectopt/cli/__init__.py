"""Command-line interface: thin modules that parse options, call the library, print results.

`main()` is the console script. A DefectoptError (anything a user can cause) becomes one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from defectopt.cli.app import app, err_console
from defectopt.errors import DefectoptError

# Importing a command module registers its commands on `app`.
COMMAND_MODULES = ("data", "models", "train", "prune", "quantize", "bench", "report", "pipeline")
for _name in COMMAND_MODULES:
    importlib.import_module(f"defectopt.cli.{_name}")


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="defectopt")
    except DefectoptError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)


__all__ = ["app", "main"]
