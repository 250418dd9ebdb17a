"""Peak memory of one model, measured in a fresh process so models do not pollute each other.

    measure_memory(artifact, device="cpu", backend="openvino", threads=2)
    # runs: python -m defectopt.bench.memory --artifact '{"id": 7, "dir": ..., ...}' --backend openvino ...

The parent has already loaded and verified the artifact; the child gets its fields as JSON and
never opens the SQLite store (a second process closing the last connection of a WAL database
would checkpoint and remove the -wal/-shm files under the parent's feet). The child imports everything first (torch, the runtime library, defectopt), then takes the
baseline: on Linux the RSS high-water mark is reset (`/proc/self/clear_refs` = 5) and the
current RSS read. It then loads the model, runs a few batches and reports the high-water mark
above that baseline (VmHWM - baseline; getrusage's ru_maxrss when /proc is unavailable, which
can only over-state), plus torch.cuda.max_memory_allocated on CUDA. It prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from defectopt.errors import DefectoptError
from defectopt.metrics import N

MB = 1e6


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _ru_maxrss_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from defectopt.bench.runners import (
        open_runner,  # imports every runner module: part of the baseline
    )
    from defectopt.bench.timing import random_batch
    from defectopt.models.artifacts import META_FILE, Artifact

    if args.backend in ("onnxruntime", "auto"):
        import onnxruntime  # noqa: F401  (imports belong to the baseline, not to the model)
    if args.backend in ("openvino", "auto"):
        import openvino  # noqa: F401
    import timm  # noqa: F401  (~200 MB of module state: a library cost, not the model's)

    if args.threads:
        torch.set_num_threads(args.threads)
    fields = json.loads(args.artifact)
    folder = Path(fields.pop("dir"))
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DefectoptError(f"cannot read {folder / META_FILE}: {exc}") from None
    artifact = Artifact(dir=folder, meta=meta, **fields)
    batch = random_batch(artifact.img_size, args.batch)
    if args.device == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    hwm_reset = _reset_hwm()
    baseline_kb = _status_kb("VmRSS") or 0
    ru_before = _ru_maxrss_kb()
    runner = open_runner(artifact, device=args.device, backend=args.backend, threads=args.threads or None)
    for _ in range(args.iters):
        out = runner.predict(batch)
    np.asarray(out)
    hwm_kb = _status_kb("VmHWM") if hwm_reset else None
    peak_kb = hwm_kb if hwm_kb is not None else max(_ru_maxrss_kb(), ru_before)
    result = {
        N.peak_rss_mb: max(0, peak_kb - baseline_kb) * 1024 / MB,
        "baseline_rss_mb": baseline_kb * 1024 / MB,
        "method": "VmHWM after clear_refs" if hwm_kb is not None else "ru_maxrss (upper bound)",
        "batch_size": args.batch, "iters": args.iters, "backend": runner.backend, "precision": runner.precision,
    }
    if args.device == "cuda":
        result[N.cuda_peak_mb] = torch.cuda.max_memory_allocated() / MB
    return result


def measure_memory(artifact, *, device: str, backend: str, threads: int, batch_size: int = 1,
                   iters: int = 3, timeout_s: float = 600) -> dict[str, Any]:
    """Run the child for one (verified) artifact and return its JSON result; DefectoptError if it failed."""
    import dataclasses

    fields = {f.name: getattr(artifact, f.name) for f in dataclasses.fields(artifact) if f.name != "meta"}
    fields["dir"] = str(artifact.dir)
    model_id = artifact.id
    cmd = [sys.executable, "-m", "defectopt.bench.memory", "--artifact", json.dumps(fields, default=str),
           "--device", device, "--backend", backend, "--threads", str(threads), "--batch", str(batch_size),
           "--iters", str(iters)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise DefectoptError(f"memory measurement of model {model_id} took over {timeout_s:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    data = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or "error" in data or not data:
        reason = data.get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DefectoptError(f"memory measurement of model {model_id} failed: {reason[:200]}")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defectopt.bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True, help="JSON of the verified artifact's fields (see measure_memory)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        result = _child(args)
    except DefectoptError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
