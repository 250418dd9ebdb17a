"""Commit a study DB's content as text, so that its figures outlive the DB.

Study databases stay out of git and a machine can lose them (it happened between sessions 24
and 25: the NEU-DET DB and its checkpoints were gone, the committed CSVs were not). This writes

- `tradeoff.csv`  — `SELECT * FROM tradeoff`: every measured row (the table the README pastes);
- `models.csv`    — lineage, technique, size, status and the stored config of every model;
- `epochs.csv`    — the per-epoch training curve of every trained model;
- `decisions.csv` — the per-image test decisions of every `recall` row (space-separated class
  indices in manifest order of the frozen test split, with the split's hash), so a paired
  McNemar test against these models stays possible after the DB is gone
  (`benchmarks/mcnemar_pair.py`).

    python benchmarks/dump_study.py --db /work/study/neu.sqlite --out benchmarks/results/study-neu-det
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from sqlalchemy import select

from defectopt.store.db import open_store
from defectopt.store.queries import tradeoff_frame
from defectopt.store.schema import Measurement, Model, TrainEpoch

MODEL_COLUMNS = ("id", "alias", "timm_name", "parent_id", "technique_id", "img_size", "num_classes", "threshold",
                 "artifact_format", "sha256", "size_bytes", "param_count", "status", "created_at", "finished_at", "config")
EPOCH_COLUMNS = ("model_id", "epoch", "train_loss", "val_recall", "val_precision", "val_f1", "lr", "seconds")
DECISION_COLUMNS = ("measurement_id", "model_id", "device", "backend", "precision", "batch_size", "split_hash",
                    "labels", "decisions")


def write_csv(path: Path, header: tuple[str, ...] | list[str], rows) -> int:
    """Atomic: a temp file renamed over the target, so a failed dump leaves the old file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            n += 1
    os.replace(tmp, path)
    return n


def cell(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="the study DB (read only)")
    ap.add_argument("--out", required=True, help="folder for the CSVs (created)")
    args = ap.parse_args(argv)
    if not Path(args.db).is_file():
        print(f"error: no such DB: {args.db}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(args.db, migrate=False)

    frame = tradeoff_frame(store)
    tmp = out / "tradeoff.csv.tmp"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out / "tradeoff.csv")
    counts = {"tradeoff.csv": len(frame)}

    with store.session() as s:
        models = s.execute(select(*(getattr(Model, c) for c in MODEL_COLUMNS)).order_by(Model.id)).all()
        epochs = s.execute(select(*(getattr(TrainEpoch, c) for c in EPOCH_COLUMNS))
                           .order_by(TrainEpoch.model_id, TrainEpoch.epoch)).all()
        recalls = s.execute(select(Measurement.id, Measurement.model_id, Measurement.device, Measurement.backend,
                                   Measurement.precision, Measurement.batch_size, Measurement.extra)
                            .where(Measurement.metric == "recall").order_by(Measurement.id)).all()
    counts["models.csv"] = write_csv(out / "models.csv", MODEL_COLUMNS, ([cell(v) for v in r] for r in models))
    counts["epochs.csv"] = write_csv(out / "epochs.csv", EPOCH_COLUMNS, epochs)

    def decision_rows():
        for mid, model_id, device, backend, precision, batch, extra in recalls:
            extra = extra or {}
            decisions, labels = extra.get("decisions"), extra.get("labels")
            if isinstance(decisions, list) and isinstance(labels, list) and len(decisions) == len(labels):
                yield (mid, model_id, device, backend, precision, batch, extra.get("split_hash", ""),
                       " ".join(str(int(v)) for v in labels), " ".join(str(int(v)) for v in decisions))

    counts["decisions.csv"] = write_csv(out / "decisions.csv", DECISION_COLUMNS, decision_rows())
    store.dispose()
    for name, n in counts.items():
        print(f"{out / name}: {n} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
