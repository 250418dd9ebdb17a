"""`--format table|md|csv|json` for every listing command, and where each format is printed.

`table` is a Rich table on a terminal (fitted without cutting cells) and plain aligned text
everywhere else (pipes, files, `| grep`); md, csv and json are the same on both. The
renderings themselves live in `defectopt.report.listing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from defectopt.errors import DefectoptError
from defectopt.report.listing import Listing, print_terminal, render_text, to_json

from defectopt.report.table import FORMATS  # the output formats: defined once, beside their renderer
# The `table` command called its terminal format "rich" before every command had --format.
ALIASES = {"rich": "table"}

FormatOption = Annotated[str, typer.Option(
    "--format", help="table (a terminal table; plain aligned text through a pipe) | md | csv | json (keys: see README).",
    autocompletion=lambda: list(FORMATS))]


def check_format(fmt: str, allowed: Sequence[str] = FORMATS) -> str:
    """The canonical name of a --format value; anything else is one line and exit code 2."""
    name = ALIASES.get(fmt, fmt)
    if name not in allowed:
        raise DefectoptError(f"unknown --format '{fmt}'; choose one of {', '.join(allowed)}")
    return name


def emit(console, fmt: str, listings: Listing | Sequence[Listing], *, document: Any = None) -> None:
    """Print listings in a checked format. JSON prints `document` when given (several listings
    make one object), else the single listing's records."""
    items = [listings] if isinstance(listings, Listing) else list(listings)
    if fmt == "table" and console.is_terminal:
        for listing in items:
            print_terminal(console, listing)
        return
    text = to_json(document if document is not None else items[0]) if fmt == "json" else render_text(items, fmt)
    # the console's own stream (stdout or stderr) as it is now, bypassing Rich's wrapping
    console.file.write(text)
    console.file.flush()
