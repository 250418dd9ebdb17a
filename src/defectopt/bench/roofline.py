"""Hardware-aware roofline: the host's peak matrix-multiply rate per precision, measured once.

A short square GEMM microbenchmark per dtype, with the runtime libraries the models use:
  fp32  torch.matmul (oneDNN/MKL sgemm) and OpenVINO MatMul, the faster counts
  bf16  torch.matmul on bfloat16 (oneDNN: AVX512-BF16 / AMX-BF16 when present) and OpenVINO bf16
  int8  OpenVINO FakeQuantize+MatMul (low-precision transformations -> VNNI/AMX-INT8 kernels) and
        torch._int_mm, the faster counts (torch's CPU _int_mm is not VNNI-tuned on every build)
  cuda  torch.matmul fp32 (TF32 off), fp16, bf16 and torch._int_mm int8
The peak is stored in `host_peaks` keyed by (host hash, device, dtype, threads) and reused;
every efficiency row then reports achieved MAC/s and the fraction of its precision's peak.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import select

from defectopt.bench.timing import TimingConfig, time_fn
from defectopt.store.db import Store
from defectopt.store.schema import HostPeak

GEMM_N = 1024  # 1024^3 MACs: large enough to be compute-bound, short enough for 2 cores
PEAK_TIMING = TimingConfig(min_iters=10, min_seconds=0.6, blocks=3, warmup_min_iters=2, warmup_window=2,
                           warmup_max_seconds=1.0, max_seconds=5.0)
CPU_DTYPES = ("fp32", "bf16", "int8")
CUDA_DTYPES = ("fp32", "fp16", "bf16", "int8")


def _torch_gemm(dtype: str, device: str, n: int) -> Callable[[], Any] | None:
    import torch

    if dtype == "int8":
        a = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=device)
        try:
            torch._int_mm(a, b)
        except (RuntimeError, NotImplementedError):
            return None
        return lambda: torch._int_mm(a, b)
    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device).to(tdt)
    b = torch.randn(n, n, device=device).to(tdt)
    return lambda: torch.matmul(a, b)


def _openvino_gemm(dtype: str, n: int, threads: int) -> Callable[[], Any] | None:
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    x = ops.parameter([n, n], np.float32, name="x")
    if dtype == "int8":
        lo, hi = ops.constant(np.float32(-4.0)), ops.constant(np.float32(4.0))
        xq = ops.fake_quantize(x, lo, hi, lo, hi, 256)
        w = ops.constant(rng.integers(-127, 127, (n, n)).astype(np.int8))
        wd = ops.multiply(ops.convert(w, np.float32), ops.constant(np.float32(0.01)))
        y = ops.matmul(xq, wd, False, True)
    else:
        y = ops.matmul(x, ops.constant(rng.standard_normal((n, n), dtype=np.float32)), False, True)
    hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[dtype]
    try:
        compiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    except Exception:  # e.g. bf16 on a CPU without bf16 support
        return None
    request = compiled.create_infer_request()
    data = rng.standard_normal((n, n), dtype=np.float32)
    return lambda: request.infer({0: data})


def measure_peaks(device: str = "cpu", threads: int = 1, *, n: int = GEMM_N,
                  cfg: TimingConfig = PEAK_TIMING) -> dict[str, dict[str, Any]]:
    """{dtype: {"macs_per_s", "method", "candidates"}} measured now."""
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)
    out: dict[str, dict[str, Any]] = {}
    for dtype in CPU_DTYPES if device == "cpu" else CUDA_DTYPES:
        candidates: dict[str, float] = {}
        fns = {"torch": _torch_gemm(dtype, device, n)}
        if device == "cpu":
            fns["openvino"] = _openvino_gemm(dtype, n, threads)
        for name, fn in fns.items():
            if fn is None:
                continue
            if device == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
            result = time_fn(fn, cfg=cfg, device=device)
            candidates[name] = n ** 3 / (result.median_ms / 1e3)
        if candidates:
            best = max(candidates, key=candidates.get)
            out[dtype] = {"macs_per_s": candidates[best], "method": best, "candidates": candidates, "gemm_n": n}
    return out


def host_peaks(store: Store, host: dict[str, Any], device: str, threads: int, *, remeasure: bool = False) -> dict[str, float]:
    """{dtype: peak MAC/s} for this host/device/threads, measuring and storing it the first time."""
    with store.session() as s:
        rows = s.scalars(select(HostPeak).where(HostPeak.host_hash == host["hash"], HostPeak.device == device,
                                                HostPeak.threads == threads)).all()
        peaks = {r.dtype: r.macs_per_s for r in rows}
    if peaks and not remeasure:
        return peaks
    measured = measure_peaks(device, threads)
    with store.session() as s:
        for dtype, info in measured.items():
            row = s.scalars(select(HostPeak).where(HostPeak.host_hash == host["hash"], HostPeak.device == device,
                                                   HostPeak.dtype == dtype, HostPeak.threads == threads)).first()
            detail = {**host, "gemm": {k: v for k, v in info.items() if k != "macs_per_s"}}
            if row is None:
                s.add(HostPeak(host_hash=host["hash"], device=device, dtype=dtype, threads=threads,
                               macs_per_s=info["macs_per_s"], host=detail))
            else:
                row.macs_per_s, row.host = info["macs_per_s"], detail
    return {dtype: info["macs_per_s"] for dtype, info in measured.items()}


def peak_for_precision(peaks: dict[str, float], precision: str | None) -> tuple[str, float] | None:
    """The ceiling a model of `precision` is compared with (mixed int8 models -> the int8 peak)."""
    p = (precision or "fp32").lower()
    key = "int8" if "int8" in p or p.startswith("w8") else "bf16" if "bf16" in p else "fp16" if "fp16" in p else "fp32"
    if key in peaks:
        return key, peaks[key]
    return None
