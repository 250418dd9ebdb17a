"""`defectopt models | ls | show | gc`."""

from __future__ import annotations

from typing import Annotated

import typer

from defectopt.cli.app import DbOption, app, console
from defectopt.cli.output import FormatOption, check_format, emit
from defectopt.report.listing import Column, Listing, default_text


_STATUS_STYLE = {"running": "yellow", "failed": "red"}


def _mb(value, _row) -> str:
    return f"{value / 1e6:.2f}" if value else ""


MODELS_COLUMNS = [
    Column("alias"), Column("timm_name", "timm name"), Column("family", optional=True), Column("role", optional=True),
    Column("params", "params (M)", numeric=True, text=lambda v, _r: f"{v / 1e6:.2f}"),
    Column("gmacs", "GMACs@224", numeric=True, text=lambda v, _r: f"{v:.2f}"),
    Column("weights", "weights here", wrap=True, text=lambda v, _r: ", ".join(v) or "none (random init)"),
]
# `lineage` is the parent ("← 3 resnet18"); the whole chain is `chain` (csv/json).
LS_COLUMNS = [
    Column("id", numeric=True), Column("alias"), Column("lineage"), Column("technique"), Column("dataset", optional=True),
    Column("img_size", "img", numeric=True, optional=True), Column("format", optional=True),
    Column("size_bytes", "size MB", numeric=True, optional=True, text=_mb), Column("status"),
    Column("parent_id", machine_only=True), Column("chain", machine_only=True),
]
EPOCH_COLUMNS = [
    Column("epoch", numeric=True), Column("train_loss", "train loss", numeric=True), Column("val_recall", "val recall", numeric=True),
    Column("val_precision", "val precision", numeric=True), Column("val_f1", "val F1", numeric=True),
    Column("lr", numeric=True), Column("seconds", "s", numeric=True),
]
MEASUREMENT_COLUMNS = [
    Column("device"), Column("backend"), Column("precision"), Column("batch_size", "batch", numeric=True),
    Column("threads", numeric=True), Column("metric"), Column("value", numeric=True),
    Column("created_at", "when", optional=True, text=lambda v, _r: str(v)[:19]),
]


def _field_text(value, _row) -> str:
    import json

    # technique params and config are JSON in the DB: shown as JSON, not as Python reprs
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list)) else default_text(value)


@app.command("models")
def models_cmd(fmt: FormatOption = "table"):
    """List registry aliases with their timm names, parameters, GMACs at 224x224 and the weights
    available on this machine (any other timm architecture works as timm:<name>)."""
    from defectopt.models.catalog import describe_aliases

    fmt = check_format(fmt)
    emit(console, fmt, Listing(MODELS_COLUMNS, describe_aliases()))


@app.command("ls")
def ls_cmd(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include failed runs.")] = True,
    fmt: FormatOption = "table",
    db: DbOption = None,
):
    """List models with their lineage, technique, status and artifact size."""
    from defectopt.models.catalog import list_models
    from defectopt.store.db import open_store

    fmt = check_format(fmt)
    rows = [r for r in list_models(open_store(db)) if all_ or r["status"] != "failed"]
    emit(console, fmt, Listing(LS_COLUMNS, rows, row_styles=[_STATUS_STYLE.get(r["status"]) for r in rows]))



@app.command("show")
def show_cmd(model_id: Annotated[int, typer.Argument(help="Model ID.")], fmt: FormatOption = "table", db: DbOption = None):
    """One model's metadata, lineage, training curve and measurements."""
    from defectopt.models.catalog import describe_model
    from defectopt.store.db import open_store

    fmt = check_format(fmt)
    info = describe_model(open_store(db), model_id)
    fields = {key.replace(" ", "_"): value for key, value in info["fields"].items()}
    meta = Listing([Column("field"), Column("value", wrap=True, text=_field_text)],
                   [{"field": k, "value": v} for k, v in fields.items()], title=f"model {model_id}", show_header=False)
    listings = [meta]
    if info["epochs"] or fmt == "csv":  # csv keeps every section, so a reader finds them in one place
        listings.append(Listing(EPOCH_COLUMNS, info["epochs"], title="training curve (val split)"))
    if info["measurements"] or fmt == "csv":
        listings.append(Listing(MEASUREMENT_COLUMNS, info["measurements"], title="measurements"))
    document = {"model": {"id": model_id, **fields}, "epochs": info["epochs"], "measurements": info["measurements"]}
    emit(console, fmt, listings, document=document)


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

