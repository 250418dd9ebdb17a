"""Does INT8 keep defect recall on a TRAINED model? One study per architecture, on the frozen test split.

For each alias: train on the built-in synthetic set (`finetune-teacher`, from random init unless
--pretrained: no hub access here), quantize with each method that applies, bench every model
on CPU, and compare each INT8 child with its FP32 parent on the same test images:
recall at the val-chosen threshold (`--target-recall`, stored on the parent and inherited by the
child), recall at argmax, AUROC, and McNemar's exact test on per-image decisions (from `table`).

    python benchmarks/bench_quantize_recall.py --out benchmarks/results/quantize_recall.json
    python benchmarks/bench_quantize_recall.py --models vit_t16 --epochs 3        # smoke run
    python benchmarks/bench_quantize_recall.py --teacher resnet18 --models convnext_tiny,vit_t16 --epochs 25
    python benchmarks/bench_quantize_recall.py --pretrained --models vit_s16,vit_t16,convnext_tiny   # with timm weights

Target (issue 7): for every architecture, at least one INT8 method within 1 recall point of its
FP32 parent. Every command is the real CLI, run in a fresh DB under --work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("vit_t16", "vit_s16", "convnext_tiny", "efficientnet_b0", "mobilevit_s")
METHODS = {  # alias family -> INT8 methods that apply (dynamic only quantizes Linear layers: ViTs)
    "vit": ["static", "dynamic", "static --backend onnxruntime"],
    "default": ["static", "static --backend onnxruntime"],
}
MAX_DROP = 0.01
# a parent that ranks defects no better than chance flags everything (recall 1.0 by construction):
# comparing INT8 with it says nothing, so no verdict is given
MIN_PARENT_AUROC = 0.8


def cli(args: list[str], db: Path) -> str:
    cmd = [sys.executable, "-m", "defectopt", *args, "--db", str(db)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def metric(db: Path, model_id: int, name: str) -> float | None:
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT value FROM measurements WHERE model_id=? AND metric=? ORDER BY id DESC LIMIT 1",
                          (model_id, name)).fetchone()
    return None if row is None else row[0]


def model_ids(db: Path) -> list[tuple[int, int | None, str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT m.id, m.parent_id, m.alias, COALESCE(json_extract(t.params, '$.label'), t.name) "
                           "FROM models m LEFT JOIN techniques t ON t.id = m.technique_id WHERE m.status='ready' "
                           "ORDER BY m.id").fetchall()


def main(argv=None) -> int:
    from defectopt.models.registry import get

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--data", default="synthetic:400")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pretrained", action="store_true",
                   help="start from timm's ImageNet weights (needs the hub or its cache; offline this fails in one line)")
    p.add_argument("--teacher", help="distill each model from this alias (trained first) instead of training it alone")
    p.add_argument("--work", type=Path, default=Path("/tmp/defectopt-quantize-recall"))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    db = args.work / "study.sqlite"
    results, verdicts = [], []
    teacher_id = None
    init = "--pretrained" if args.pretrained else "--no-pretrained"
    for alias in [m.strip() for m in args.models.split(",") if m.strip()]:
        t0 = time.time()
        common = ["--img-size", str(args.img_size), "--epochs", str(args.epochs), "--batch-size", "16",
                  "--lr", str(args.lr), "-q"]
        if args.teacher:
            if teacher_id is None:
                cli(["finetune-teacher", "--model", args.teacher, "--data", args.data, init, *common], db)
                teacher_id = max(r[0] for r in model_ids(db) if r[2] == args.teacher and r[1] is None)
            cli(["distill", "--teacher", str(teacher_id), "--student", alias, init, *common], db)
            parent = max(r[0] for r in model_ids(db) if r[2] == alias and r[1] == teacher_id)
        else:
            cli(["finetune-teacher", "--model", alias, "--data", args.data, init, *common], db)
            parent = max(r[0] for r in model_ids(db) if r[2] == alias and r[1] is None)
        train_s = time.time() - t0
        family = get(alias).family
        for method in METHODS.get(family, METHODS["default"]):
            cli(["quantize", "--id", str(parent), "--method", *method.split(), "--calib-images", "128"], db)
        cli(["bench", "--device", "cpu", "--ids", "all", "--quick", "--no-memory", "--batch-sizes", "1", "-q"], db)
        table = json.loads(cli(["table", "--format", "json"], db))
        rows = {r["id"]: r for r in table}
        base = {"recall": metric(db, parent, "recall"), "recall_argmax": metric(db, parent, "recall_argmax"),
                "auroc": metric(db, parent, "auroc"), "precision": metric(db, parent, "precision")}
        children = []
        for mid, pid, _, label in model_ids(db):
            if pid != parent or mid == parent:
                continue
            child = {"id": mid, "label": label, "recall": metric(db, mid, "recall"),
                     "recall_argmax": metric(db, mid, "recall_argmax"), "auroc": metric(db, mid, "auroc"),
                     "precision": metric(db, mid, "precision"), "p_vs_parent": rows.get(mid, {}).get("p_vs_parent"),
                     "latency_ms": rows.get(mid, {}).get("latency_ms"), "backend": rows.get(mid, {}).get("backend")}
            child["drop"] = base["recall"] - child["recall"]
            child["drop_argmax"] = base["recall_argmax"] - child["recall_argmax"]
            children.append(child)
        ok = [c for c in children if c["drop"] <= MAX_DROP + 1e-12 and c["drop_argmax"] <= MAX_DROP + 1e-12]
        learned = (base["auroc"] or 0.0) >= MIN_PARENT_AUROC
        verdict = ("PASS" if ok else "FAIL") if learned else f"NO VERDICT (the FP32 parent did not learn: AUROC < {MIN_PARENT_AUROC})"
        line = (f"{alias}: FP32 test recall {base['recall']:.3f} (argmax {base['recall_argmax']:.3f}, AUROC "
                f"{base['auroc']:.3f}); INT8 within {MAX_DROP:g}: "
                + (", ".join(f"{c['label']} {c['recall']:.3f}/{c['recall_argmax']:.3f} (p={c['p_vs_parent']})"
                             for c in ok) or "none")
                + f" -> {verdict}")
        print(line, flush=True)
        for c in children:
            print(f"    {c['label']:<28} recall {c['recall']:.3f} (Δ {-c['drop']:+.3f})  argmax {c['recall_argmax']:.3f} "
                  f"(Δ {-c['drop_argmax']:+.3f})  AUROC {c['auroc']:.3f}  precision {c['precision']:.3f}  "
                  f"McNemar p {c['p_vs_parent']}  {c['latency_ms']:.2f} ms ({c['backend']})", flush=True)
        verdicts.append(line)
        results.append({"alias": alias, "parent_id": parent, "train_seconds": train_s, "parent": base,
                        "children": children})
        if args.out:  # after every model: a long study that is stopped keeps what it measured
            write_json(args, results, verdicts)
    return 0 if all("FAIL" not in v for v in verdicts) else 1


def write_json(args, results, verdicts) -> None:
    if args.out:
        from defectopt.bench.host import fingerprint

        args.out.write_text(json.dumps({"host": fingerprint(), "args": {k: str(v) for k, v in vars(args).items()},
                                        "results": results, "verdicts": verdicts}, indent=2, default=float))


if __name__ == "__main__":
    sys.exit(main())
