"""`defectopt models | ls | show | gc`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from defectopt.cli.app import DbOption, app, console


@app.command("models")
def models_cmd():
    """List registry aliases with their timm names, parameters, GMACs at 224x224 and the weights
    available on this machine (any other timm architecture works as timm:<name>)."""
    from defectopt.models.catalog import describe_aliases

    table = Table(title="model registry")
    for col in ("alias", "timm name", "family", "role", "params (M)", "GMACs@224", "weights here"):
        table.add_column(col, justify="right" if col[0] in "pG" else "left")
    for row in describe_aliases():
        table.add_row(row["alias"], row["timm_name"], row["family"], row["role"], f"{row['params'] / 1e6:.2f}",
                      f"{row['gmacs']:.2f}", escape(", ".join(row["weights"]) or "none (random init)"))
    console.print(table)


@app.command("ls")
def ls_cmd(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include failed runs.")] = True,
    db: DbOption = None,
):
    """List models with their lineage, technique, status and artifact size."""
    from defectopt.models.catalog import list_models
    from defectopt.store.db import open_store

    rows = list_models(open_store(db))
    table = Table(title="models")
    for col in ("id", "alias", "lineage", "technique", "dataset", "img", "format", "size MB", "status"):
        table.add_column(col)
    for r in rows:
        if not all_ and r["status"] == "failed":
            continue
        style = {"ready": "", "running": "yellow", "failed": "red"}.get(r["status"], "")
        # escape(): labels like "mobilevit_s[no-KD]" and user-chosen names are data, not Rich markup
        table.add_row(
            str(r["id"]), escape(r["alias"]), escape(r["lineage"]), escape(r["technique"] or ""), escape(r["dataset"] or ""),
            str(r["img_size"]), escape(r["format"] or ""), f"{r['size_bytes'] / 1e6:.2f}" if r["size_bytes"] else "", f"[{style}]{r['status']}" if style else r["status"],
        )
    console.print(table)


@app.command("show")
def show_cmd(model_id: Annotated[int, typer.Argument(help="Model ID.")], db: DbOption = None):
    """One model's metadata, lineage, training curve and measurements."""
    from defectopt.models.catalog import describe_model
    from defectopt.store.db import open_store

    info = describe_model(open_store(db), model_id)
    meta = Table(title=f"model {model_id}", show_header=False)
    meta.add_column("field", style="bold")
    meta.add_column("value")
    for key, value in info["fields"].items():
        meta.add_row(key, escape(str(value)))
    console.print(meta)
    if info["epochs"]:
        curve = Table(title="training curve (val split)")
        for col in ("epoch", "train loss", "val recall", "val precision", "val F1", "lr", "s"):
            curve.add_column(col, justify="right")
        for e in info["epochs"]:
            curve.add_row(*[_fmt(e[k]) for k in ("epoch", "train_loss", "val_recall", "val_precision", "val_f1", "lr", "seconds")])
        console.print(curve)
    if info["measurements"]:
        ms = Table(title="measurements")
        for col in ("device", "backend", "precision", "batch", "threads", "metric", "value", "when"):
            ms.add_column(col)
        for m in info["measurements"]:
            ms.add_row(*map(escape, (m["device"], m["backend"], m["precision"] or "", str(m["batch_size"]), str(m["threads"]),
                                     m["metric"], _fmt(m["value"]), str(m["created_at"])[:19])))
        console.print(ms)


@app.command("gc")
def gc_cmd(
    delete_failed: Annotated[bool, typer.Option("--delete-failed", help="Also delete failed rows (and their curves).")] = False,
    db: DbOption = None,
):
    """Clean up after crashed runs: stale 'running' rows become 'failed'; orphan folders are removed."""
    from defectopt.models.catalog import collect_garbage
    from defectopt.store.db import open_store

    report = collect_garbage(open_store(db), delete_failed=delete_failed)
    console.print(
        f"marked {len(report['stale'])} stale run(s) failed {report['stale'] or ''}; removed {report['folders']} orphan folder(s)"
        + (f"; deleted {report['deleted']} failed row(s)" if delete_failed else "")
    )


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
