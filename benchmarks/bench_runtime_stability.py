"""Is the bench timing harness trustworthy? (issue 6 acceptance; not a unit test)

For each model (FP32, random init, 224x224 by default) and runtime:
  1. harness run A: defectopt.bench.timing.time_runner (warm-up until stable, blocks, median of block medians)
  2. direct timing: a plain perf_counter loop over the runtime's own call (torch module,
     onnxruntime session.run, openvino infer request), after a fixed warm-up, median
  3. harness run B, straight after
and checks |A - direct| / direct <= 10 % and |B - A| / A <= 5 % on p50 (batch 1).

    python benchmarks/bench_runtime_stability.py                      # the six models, torch eager
    python benchmarks/bench_runtime_stability.py --models vit_t16 --backends torch,onnxruntime,openvino
    python benchmarks/bench_runtime_stability.py --json out.json

Models are registered as artifacts in a throw-away store (a temp folder) so the runners,
derived exports and the harness are exactly those `defectopt bench` uses. Threads default to
the physical cores. Exit code 1 when a check fails. On a shared/loaded machine the 1-minute
load average is printed with each row: above the core count, expect failures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("vit_b16", "vit_s16", "vit_t16", "mobilevit_s", "convnext_tiny", "efficientnet_b0")
DIRECT_TOL = 0.10
REPEAT_TOL = 0.05


def register(store, alias: str, img_size: int) -> int:
    import torch

    from defectopt.data.loading import resolve_model_data_config
    from defectopt.models import artifacts
    from defectopt.models.factory import create, param_count
    from defectopt.models.registry import get

    torch.manual_seed(0)
    model = create(alias, 2, img_size).eval()
    cfg = resolve_model_data_config(model, img_size)
    mid = artifacts.begin_model(store, alias=alias, timm_name=get(alias).timm_name, technique="random-init",
                                parent_id=None, dataset_id=None, img_size=img_size, num_classes=2)
    meta = {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "interpolation": cfg["interpolation"],
            "classes": ["good", "defect"], "precision": "fp32"}
    with artifacts.publish(store, mid, format=artifacts.FORMAT_TORCH, meta=meta, param_count=param_count(model)) as d:
        artifacts.save_torch_weights(model, d)
    return mid


def direct_call(runner, batch):
    """The runtime's own call, with no defectopt code in the loop."""
    import torch

    if runner.backend == "torch":
        model, x = runner.model, runner.prepare(batch)

        def fn():
            with torch.inference_mode():
                model(x)
        return fn
    if runner.backend == "onnxruntime":
        session, name = runner.session, runner.input_name
        return lambda: session.run(None, {name: batch})
    if runner.backend == "openvino":
        _, request = runner.compiled_for(tuple(batch.shape))
        return lambda: request.infer({0: batch})
    raise SystemExit(f"no direct timing for backend {runner.backend}")


def time_direct(fn, *, warmup: int, iters: int, min_seconds: float) -> float:
    """Plain loop: median ms of at least `iters` calls and `min_seconds`."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--backends", default="torch", help="comma list of torch, onnxruntime, openvino")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--direct-warmup", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from defectopt.bench.host import default_threads, fingerprint
    from defectopt.bench.runners import open_runner
    from defectopt.bench.timing import DEFAULT, random_batch, time_runner
    from defectopt.models.artifacts import load_artifact
    from defectopt.store.db import open_store

    threads = args.threads or default_threads()
    console = Console()
    results = []
    with tempfile.TemporaryDirectory(prefix="defectopt-stability-") as tmp:
        os.environ["DEFECTOPT_ARTIFACTS"] = str(Path(tmp) / "artifacts")
        store = open_store(Path(tmp) / "stability.sqlite")
        for alias in [m.strip() for m in args.models.split(",") if m.strip()]:
            mid = register(store, alias, args.img_size)
            artifact = load_artifact(store, mid)
            for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
                runner = open_runner(artifact, backend=backend, threads=threads)
                batch = random_batch(args.img_size, 1)
                a = time_runner(runner, batch_size=1, cfg=DEFAULT)
                direct = time_direct(direct_call(runner, batch), warmup=args.direct_warmup,
                                     iters=DEFAULT.min_iters, min_seconds=DEFAULT.min_seconds)
                b = time_runner(runner, batch_size=1, cfg=DEFAULT)
                row = {
                    "model": alias, "backend": backend, "img_size": args.img_size, "threads": threads,
                    "harness_a_ms": a.median_ms, "harness_a_p50_ms": a.percentile(50), "direct_ms": direct,
                    "harness_b_ms": b.median_ms, "harness_b_p50_ms": b.percentile(50),
                    "vs_direct": a.median_ms / direct - 1.0,
                    "repeat_p50": b.percentile(50) / a.percentile(50) - 1.0,
                    "spread_a": a.spread(), "spread_b": b.spread(),
                    "warmup_a": {"iters": a.warmup.iters, "stable": a.warmup.stable},
                    "loadavg_1m": b.loadavg,
                }
                row["ok_direct"] = abs(row["vs_direct"]) <= DIRECT_TOL
                row["ok_repeat"] = abs(row["repeat_p50"]) <= REPEAT_TOL
                results.append(row)
                console.print(f"{alias} [{backend}]: harness {a.median_ms:.2f} ms, direct {direct:.2f} ms, "
                              f"again {b.median_ms:.2f} ms (load {b.loadavg})", highlight=False, markup=False)
                runner.close()
        store.dispose()

    table = Table(title=f"bench harness vs direct timing, batch 1, {threads} thread(s), FP32 @ {args.img_size}")
    for col in ("model", "backend", "harness ms", "direct ms", "Δ vs direct", "run 2 p50 ms", "Δ p50", "load", "ok"):
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for r in results:
        ok = r["ok_direct"] and r["ok_repeat"]
        table.add_row(r["model"], r["backend"], f"{r['harness_a_ms']:.2f}", f"{r['direct_ms']:.2f}", f"{r['vs_direct']:+.1%}",
                      f"{r['harness_b_p50_ms']:.2f}", f"{r['repeat_p50']:+.1%}", str(r["loadavg_1m"]),
                      "[green]yes[/]" if ok else "[red]no[/]")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"host": fingerprint(), "tolerances": {"vs_direct": DIRECT_TOL, "repeat_p50": REPEAT_TOL},
                                         "results": results}, indent=2))
        console.print(f"wrote {args.json}")
    return 0 if all(r["ok_direct"] and r["ok_repeat"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
