"""`defectopt export` (a model -> a deployment bundle) and `defectopt predict` (images -> decisions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from defectopt.cli.app import DbOption, QuietOption, app, console, err_console
from defectopt.deploy.options import BUNDLE_FORMATS, ExportOptions
from defectopt.runtime.predictor import PredictOptions

E, P = ExportOptions(), PredictOptions()  # the defaults shown below are the entry points' own
# `--fail-on-defect`: the exit code when any image is flagged (0 ok, 1 bug, 2 user error, 130 Ctrl-C)
DEFECT_EXIT = 3
SHOWN_ROWS = 50  # more images than this: only the flagged ones are printed (all go to --out)


@app.command("export")
def export_cmd(
    model: Annotated[str, typer.Option("--id", help="Model to ship: an ID, or an alias meaning its latest ready model.")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to create (written atomically).")],
    fmt: Annotated[Optional[str], typer.Option(
        "--format", help=f"{' | '.join(BUNDLE_FORMATS)}; default: the runtime the model was measured fastest in "
                         "(else its own format, else openvino).", show_default=False)] = E.format,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle folder.")] = E.force,
    db: DbOption = None,
):
    """Write a self-contained deployment bundle: the model file(s), and bundle.json with the preprocessing,
    classes, the val-calibrated threshold and its recall target, lineage, measured rows with their host,
    and the sha256 of every file. `defectopt predict --bundle DIR` (numpy, pillow and one runtime) reads it.

    Example: defectopt export --id 11 --out ship/
    """
    import json

    from defectopt.deploy.api import export_bundle
    from defectopt.runtime.bundle import BUNDLE_FILE
    from defectopt.store.db import open_store

    opts = ExportOptions(model=model, out=str(out), format=fmt, force=force)
    folder = export_bundle(open_store(db), opts)
    meta = json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
    thr = meta["decision"].get("threshold")
    rule = f"threshold {thr:.4g} (target recall {meta['decision'].get('target_recall')})" if thr is not None else "argmax"
    console.print(f"[bold green]bundle[/] {folder}: model {meta['model_id']} ({meta['alias']}), {meta['format']} "
                  f"{meta['precision']}, {meta['task']}, decision: {rule}; files: {', '.join(meta['files'])}",
                  highlight=False, soft_wrap=True)


@app.command("predict")
def predict_cmd(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (recursive) or glob patterns.", show_default=False)],
    model: Annotated[Optional[str], typer.Option("--id", help="Screen with this model (exported to a temporary bundle first).", show_default=False)] = None,
    bundle: Annotated[Optional[Path], typer.Option("--bundle", help="Screen with this bundle folder (defectopt export).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write every result to this .csv or .json file (atomically).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per inference call.")] = P.batch_size,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="Inference threads.", show_default="the runtime's default")] = P.threads,
    skip_bad_images: Annotated[bool, typer.Option("--skip-bad-images", help="List and skip corrupt or unreadable images instead of failing.")] = P.skip_bad_images,
    fail_on_defect: Annotated[bool, typer.Option("--fail-on-defect", help=f"Exit with code {DEFECT_EXIT} when any image is flagged (for line-side scripts).")] = False,
    quiet: QuietOption = False,
    db: DbOption = None,
):
    """Screen images: one decision per image at the bundle's calibrated threshold (binary), or the predicted
    defect type (multi-class), with the defect score and the time per image.

    Exit code: 0 done; 2 bad input (nothing written); 3 with --fail-on-defect when any image was flagged.
    Example: defectopt predict --bundle ship/ line3/*.png --out results.csv
    """
    import tempfile
    from dataclasses import replace

    from defectopt.errors import DefectoptError

    if (model is None) == (bundle is None):
        raise DefectoptError("give exactly one of --bundle DIR or --id N")
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise DefectoptError(f"--out must end in .csv or .json, got {out}")
    opts = PredictOptions(bundle=str(bundle or ""), paths=tuple(paths), batch_size=batch_size, threads=threads,
                          skip_bad_images=skip_bad_images)
    with tempfile.TemporaryDirectory(prefix="defectopt-bundle-") as tmp:
        if model is not None:
            from defectopt.deploy.api import export_bundle
            from defectopt.store.db import open_store

            folder = export_bundle(open_store(db), ExportOptions(model=model, out=str(Path(tmp) / "bundle")))
            opts = replace(opts, bundle=str(folder))
        outcome = _run(opts, quiet)
    _show(outcome)
    if out is not None:
        _write(out, outcome, str(bundle) if bundle is not None else f"model {model} (exported for this run)")
        console.print(f"wrote {out}", highlight=False)
    if fail_on_defect and outcome.flagged:
        raise typer.Exit(DEFECT_EXIT)


def _run(opts, quiet):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from defectopt.runtime.predictor import predict

    if quiet or not err_console.is_terminal:
        return predict(opts)
    with Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("", total=None)
        return predict(opts, on_start=lambda n: progress.update(task, total=n),
                       on_result=lambda r: progress.advance(task))


def _show(outcome) -> None:
    from defectopt.cli.output import emit
    from defectopt.report.listing import Column, Listing

    rows = [r.as_row() for r in outcome.results]
    shown = rows if len(rows) <= SHOWN_ROWS else [r for r in rows if r["flagged"]]
    columns = [Column("path", wrap=True), Column("score", numeric=True), Column("flagged"), Column("predicted"),
               Column("ms", numeric=True)]
    if shown:
        title = "results" if shown is rows else f"flagged images ({len(shown)} of {len(rows)}; every result goes to --out)"
        emit(console, "table", Listing(columns, shown, title=title))
    for path, why in outcome.unreadable:
        console.print(f"[yellow]skipped unreadable image[/] {path}: {why}", highlight=False, soft_wrap=True)
    console.print(f"{len(outcome.results)} images, {outcome.flagged} flagged, {len(outcome.unreadable)} unreadable; "
                  f"{outcome.images_per_second:.1f} images/s", highlight=False)


def _write(out: Path, outcome, source: str) -> None:
    import csv
    import io
    import json

    from defectopt.report.table import write_atomic

    rows = [r.as_row() for r in outcome.results]
    if out.suffix.lower() == ".json":
        doc = {"bundle": source, "images": rows,
               "unreadable": [{"path": p, "why": w} for p, w in outcome.unreadable],
               "summary": {"images": len(rows), "flagged": outcome.flagged, "unreadable": len(outcome.unreadable),
                           "images_per_second": outcome.images_per_second}}
        write_atomic(out, json.dumps(doc, indent=2) + "\n")
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "score", "flagged", "predicted", "ms"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out, buf.getvalue())
