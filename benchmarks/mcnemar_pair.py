"""McNemar's paired test between two models' test decisions, from a DB or a committed decisions.csv.

`table` tests each child against its parent inside one DB. This compares any two models — also
across DBs, or against a model whose DB is gone but whose decisions were committed by
`benchmarks/dump_study.py` — as long as both were scored on the same frozen test split (the
split hash must match; otherwise it refuses).

    python benchmarks/mcnemar_pair.py benchmarks/results/study-neu-det/decisions.csv:2 /work/study/neu.sqlite:1
    python benchmarks/mcnemar_pair.py DB:55:openvino DB:1:torch

Each side is SOURCE:MODEL_ID[:BACKEND]; without a backend the model's first recall row is used.
Multi-class: right = predicted class == label over all images. Binary: recall's test pairs the
defect images only (right = defect flagged, defectopt.report.stats); a second test pairs every
image (right = decision == label), so false alarms count.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from defectopt.report.stats import mcnemar_from_extras, paired_outcomes


def _rows_from_csv(path: Path, model_id: int):
    with path.open(newline="") as fh:
        for r in csv.DictReader(fh):
            if int(r["model_id"]) == model_id:
                yield r["backend"], {"split_hash": r["split_hash"], "labels": [int(v) for v in r["labels"].split()],
                                     "decisions": [int(v) for v in r["decisions"].split()]}


def _rows_from_db(path: Path, model_id: int):
    from sqlalchemy import select

    from defectopt.store.db import open_store
    from defectopt.store.schema import Measurement

    store = open_store(path, migrate=False)
    with store.session() as s:
        rows = s.execute(select(Measurement.backend, Measurement.extra)
                         .where(Measurement.model_id == model_id, Measurement.metric == "recall")
                         .order_by(Measurement.id)).all()
    store.dispose()
    yield from ((backend, extra or {}) for backend, extra in rows)


def load(spec: str) -> tuple[str, dict]:
    parts = spec.rsplit(":", 2)
    if len(parts) >= 3 and not parts[-1].isdigit():
        source, model, backend = parts
    else:
        source, model = spec.rsplit(":", 1)
        backend = None
    path = Path(source)
    if not path.is_file() or not model.isdigit():
        raise SystemExit(f"error: '{spec}' is not SOURCE:MODEL_ID[:BACKEND] with an existing SOURCE")
    rows = (_rows_from_csv if path.suffix == ".csv" else _rows_from_db)(path, int(model))
    for row_backend, extra in rows:
        if (backend is None or row_backend == backend) and paired_outcomes(extra) is not None:
            return f"{spec} ({row_backend})", extra
    raise SystemExit(f"error: no recall row with per-image decisions for {spec}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parent", help="SOURCE:MODEL_ID[:BACKEND] (b counts the images this one got right and the other did not)")
    ap.add_argument("child", help="SOURCE:MODEL_ID[:BACKEND]")
    args = ap.parse_args(argv)
    (pname, pextra), (cname, cextra) = load(args.parent), load(args.child)
    test = mcnemar_from_extras(pextra, cextra)
    if test is None:
        print("error: the two rows were not scored on the same test images (split hash or labels differ)", file=sys.stderr)
        return 2
    _, labels = paired_outcomes(pextra)
    binary = set(labels) <= {0, 1}  # as stats.mcnemar_from_extras decides it
    for name, extra in ((pname, pextra), (cname, cextra)):
        decisions = [int(v) for v in extra["decisions"]]
        if binary:  # recall's McNemar pairs the defects only; false alarms are the other half of the story
            caught = sum(1 for d, y in zip(decisions, labels) if y == 1 and d == 1)
            alarms = sum(1 for d, y in zip(decisions, labels) if y == 0 and d == 1)
            print(f"{name}: {caught}/{labels.count(1)} defects flagged, {alarms}/{labels.count(0)} false alarms")
        else:
            print(f"{name}: {sum(d == y for d, y in zip(decisions, labels))}/{len(labels)} right")
    what = "defects" if binary else "all images"
    print(f"McNemar ({what}): b={test.b} c={test.c} n={test.n} p={test.p_value:.4g} ({test.method})")
    if binary:
        every = mcnemar_from_extras(pextra, cextra, task="multiclass")  # right = decision == label, every image
        print(f"McNemar (all images): b={every.b} c={every.c} n={every.n} p={every.p_value:.4g} ({every.method})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
