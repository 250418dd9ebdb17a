"""The study's speedup figures, measured the only way a ratio may be: interleaved in one process.

Candidates are models of a study DB, each in a named runtime (`ID:BACKEND`), plus an optional
random-init ViT-B/16 in torch eager at 224 px (the issue's reference (c): speed does not depend on
the weights' values). Each runs at its own input size (the artifact's), batch --batch-size,
--threads threads; compare_interleaved warms every candidate, then rotates blocks of each so the
machine's state hits all alike, and every speedup is the median of per-round ratios with its
p10-p90 spread. Nothing is divided across runs.

    python benchmarks/bench_study_speedups.py --db /work/study/neu.sqlite \
        --candidates 2:torch,2:openvino,9:openvino --vit-b16 --out benchmarks/results/study_neu_speedups.json

The JSON keeps each candidate's median/p10/p90 ms, every pairwise speedup and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from defectopt.bench.host import fingerprint
from defectopt.bench.runners import open_runner
from defectopt.bench.timing import DEFAULT, QUICK, compare_interleaved, random_batch
from defectopt.models.artifacts import load_artifact
from defectopt.report.table import write_atomic
from defectopt.store.db import open_store

VIT_B16 = "vit_b16 torch fp32 224 (random init)"


def vit_b16_eager(batch_size: int):
    import timm

    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=6).eval()
    x = torch.from_numpy(random_batch(224, batch_size))

    def run():
        with torch.inference_mode():
            model(x)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--candidates", required=True, help="comma-separated ID:BACKEND, e.g. 2:torch,9:openvino")
    ap.add_argument("--vit-b16", action="store_true", help="add a random-init ViT-B/16 in torch eager at 224 px")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="short budgets (smoke runs; noisier figures)")
    ap.add_argument("--blocks", type=int, help="rounds of the rotation (default: the timing default, 5); more rounds "
                    "narrow the p10-p90 of each ratio")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    store = open_store(args.db)
    candidates, runners = {}, []
    for item in args.candidates.split(","):
        mid, _, backend = item.partition(":")
        art = load_artifact(store, int(mid))
        runner = open_runner(art, device="cpu", backend=backend or "auto", threads=args.threads)
        runners.append(runner)
        label = f"{mid} {art.alias} {runner.backend} {runner.precision} {art.img_size}"
        candidates[label] = runner
    if args.vit_b16:
        candidates[VIT_B16] = vit_b16_eager(args.batch_size)
    load_before = os.getloadavg()
    cfg = QUICK if args.quick else DEFAULT
    if args.blocks:
        cfg = cfg.with_blocks(args.blocks)
    result = compare_interleaved(candidates, batch_size=args.batch_size, cfg=cfg)
    load_after = os.getloadavg()
    for r in runners:
        r.close()
    summary = result.to_dict()
    names = list(candidates)
    print(f"batch {args.batch_size}, {args.threads} threads, load average before {load_before[0]:.2f} / after {load_after[0]:.2f}")
    for n in names:
        s = summary["results"][n]
        print(f"  {n:55s} median {s['median_of_block_medians_ms']:8.3f} ms  (p10 {s['p10_ms']:.3f}, p90 {s['p90_ms']:.3f})")
    fastest = min(names, key=lambda n: summary["results"][n]["median_of_block_medians_ms"])
    for base in names:
        if base != fastest:
            sp = result.speedup_spread(base, fastest)
            print(f"  {fastest} vs {base}: {sp['speedup']:.2f}x (p10-p90 {sp['p10']:.2f}-{sp['p90']:.2f}, {sp['rounds']} rounds)")
    if args.out:
        payload = {"host": fingerprint(), "batch_size": args.batch_size, "threads": args.threads,
                   "load_before": load_before, "load_after": load_after, "db": str(args.db), **summary}
        write_atomic(args.out, json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
