"""`defectopt data synth|info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from defectopt.cli.app import DbOption, SkipBadOption, SplitSeedOption, console, data_app
from defectopt.cli.output import emit
from defectopt.report.listing import Column, Listing


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the MVTec-style dataset into.")],
    n: Annotated[int, typer.Option("--n", min=40, help="Number of images.")] = 400,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    size: Annotated[int, typer.Option("--size", min=32, help="Image side in pixels.")] = 128,
):
    """Write the built-in synthetic defect dataset (textured surfaces; scratch, spot, crack, stain)."""
    from defectopt.data.synthetic import generate
    from defectopt.errors import DefectoptError

    try:
        generate(out, n=n, seed=seed, size=size)
    except OSError as exc:
        raise DefectoptError(f"cannot write synthetic dataset to {out}: {exc.strerror or exc}") from None
    console.print(escape(f"wrote {n} images to {out}/surface  (use it as --data mvtec:{out}/surface)"))


@data_app.command("info")
def info(
    spec: Annotated[str, typer.Argument(help="Dataset spec, e.g. neu:../shared/data/neu-det or synthetic:400.")],
    split_seed: SplitSeedOption = 0,
    skip_bad_images: SkipBadOption = False,
    db: DbOption = None,
):
    """Counts per class / defect type and split (registers the dataset and freezes its split on first use)."""
    from defectopt.data.catalog import resolve_dataset
    from defectopt.data.split import SPLITS, counts
    from defectopt.store.db import open_store

    store = open_store(db)
    ds = resolve_dataset(store, spec, seed=split_seed, skip_bad_images=skip_bad_images)
    columns = [Column("type", "defect type / class"), *(Column(sp, numeric=True) for sp in SPLITS), Column("total", numeric=True)]
    rows, totals = [], dict.fromkeys(SPLITS, 0)
    for dtype, per in counts(ds.manifest).items():
        rows.append({"type": dtype, **{sp: per[sp] for sp in SPLITS}, "total": sum(per.values())})
        for sp in SPLITS:
            totals[sp] += per[sp]
    rows.append({"type": "all", **totals, "total": sum(totals.values())})
    title = f"{ds.name}  ({ds.kind}, {ds.task}, {ds.num_classes} classes: {', '.join(ds.class_names)})"
    emit(console, "table", Listing(columns, rows, title=title, row_styles=[None] * (len(rows) - 1) + ["bold"]))
    console.print(f"root {escape(str(ds.root))}")
    console.print(f"frozen split: seed {ds.split_seed}, sha256 {ds.split_hash}  (dataset id {ds.id})")
    if ds.skipped_bad_images:
        console.print(f"skipped {ds.skipped_bad_images} corrupt/empty images")
