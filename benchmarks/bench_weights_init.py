"""Imported ImageNet weights vs random init, same recipe, on the frozen test split (issue 12's check).

For each dataset: `finetune-teacher --weights NAME` and the same command with `--no-pretrained`
(same epochs, image size, lr default per init as the command chooses it), then `bench --quick`
on CPU, and the test-split figures of both: macro / min-class recall (multi-class) or recall at
the val-calibrated threshold, precision and AUROC (binary), plus wall time of each training run.
Every command is the real CLI; a DB under --work keeps finished runs, so a re-run resumes (a run
whose row is ready is not trained again).

    python benchmarks/bench_weights_init.py --data neu:../shared/data/neu-det --epochs 4
    python benchmarks/bench_weights_init.py --data mvtec:../shared/data/mvtec/screw --img-size 260 --epochs 8 \\
        --options "--balance sampler"
"""

from __future__ import annotations

import argparse
import json
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

FIGURES = ("recall", "recall_ci_low", "recall_ci_high", "macro_recall", "min_class_recall", "precision", "f1",
           "auroc", "recall_argmax", "fn")


def cli(args: list[str], db: Path) -> str:
    cmd = [sys.executable, "-m", "defectopt", *args, "--db", str(db)]
    print("$", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def ready_run(db: Path, init: str) -> int | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT m.id FROM models m JOIN techniques t ON t.id = m.technique_id "
                          "WHERE m.status='ready' AND t.name='finetune' AND json_extract(t.params, '$.init')=? "
                          "ORDER BY m.id DESC LIMIT 1", (init,)).fetchone()
    return row[0] if row else None


def figures(db: Path, model_id: int) -> dict[str, float]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT metric, value FROM measurements WHERE model_id=? ORDER BY id", (model_id,)).fetchall()
        epochs = con.execute("SELECT SUM(seconds) FROM train_epochs WHERE model_id=?", (model_id,)).fetchone()
    out = {k: v for k, v in rows if k in FIGURES}
    out["train_seconds"] = epochs[0] if epochs else None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="efficientnet_lite2")
    p.add_argument("--weights", default="efficientnet_lite2", help="imported weights name")
    p.add_argument("--img-size", type=int, default=None, help="default: the weights' native size")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--options", default="", help="extra finetune-teacher options, e.g. '--balance sampler'")
    p.add_argument("--work", type=Path, default=Path("out/weights-init"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    db = args.work / "study.sqlite"
    args.work.mkdir(parents=True, exist_ok=True)
    common = ["finetune-teacher", "--model", args.model, "--data", args.data, "--epochs", str(args.epochs), "--quiet",
              *shlex.split(args.options)]
    if args.img_size:
        common += ["--img-size", str(args.img_size)]
    results = {}
    for init, extra in (("weights", ["--weights", args.weights]), ("random", ["--no-pretrained"])):
        mid = ready_run(db, init)
        if mid is None:
            if init == "random" and not args.img_size:  # the same size the weights run used
                common += ["--img-size", str(_native_size(db))]
            t0 = time.time()
            cli([*common, *extra], db)
            mid = ready_run(db, init)
            print(f"{init}: model {mid} trained in {time.time() - t0:.0f} s", flush=True)
        cli(["bench", "--ids", str(mid), "--device", "cpu", "--quick", "--batch-sizes", "1", "--no-memory"], db)
        results[init] = {"model_id": mid, **figures(db, mid)}
        print(init, json.dumps(results[init]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=2) + "\n")
    return 0


def _native_size(db: Path) -> int:
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT m.img_size FROM models m JOIN techniques t ON t.id = m.technique_id "
                          "WHERE t.name='finetune' AND json_extract(t.params, '$.init')='weights' "
                          "ORDER BY m.id DESC LIMIT 1").fetchone()
    if row is None:
        raise SystemExit("the weights run has no row: run it first")
    return row[0]


if __name__ == "__main__":
    raise SystemExit(main())
