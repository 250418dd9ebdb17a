"""Host fingerprint: what a measurement ran on, and a stable hash of it.

Every measurement row carries this JSON (and `host_peaks` is keyed by its hash), so figures
from different machines, library versions or GPUs are never silently compared. Only stable
facts go in (no load, no free memory, no clock speed), so the hash stays the same across runs
on one machine with one software stack.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

# ISA features that decide which kernels run (VNNI/AMX for INT8, AVX512-BF16/AMX for BF16).
ISA_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "sve",
)
# INT8 dot products that accumulate in int32 (x86 VNNI/AMX; ARM NEON): fast static INT8, and no
# int16 saturation (what `quantize --overflow-fix auto` and `doctor` both test)
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimd"})
LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "timm", "numpy", "tensorrt")


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), sorted(f for f in ISA_FLAGS if f in flags)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _gpu() -> dict[str, Any] | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        return {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda, "count": torch.cuda.device_count()}
    except Exception:  # a broken driver must not stop CPU benchmarking
        return None


@functools.lru_cache(maxsize=1)
def fingerprint() -> dict[str, Any]:
    """The host's stable description plus `hash` (16 hex digits of sha256 over the rest)."""
    import psutil

    cpu_model, flags = _cpuinfo()
    info: dict[str, Any] = {
        "cpu": cpu_model,
        "isa": flags,
        "physical_cores": psutil.cpu_count(logical=False) or os.cpu_count(),
        "logical_cores": psutil.cpu_count(logical=True) or os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {lib: v for lib in LIBRARIES if (v := _version(lib)) is not None},
        "gpu": _gpu(),
    }
    info["hash"] = host_hash(info)
    return info


def host_hash(info: dict[str, Any]) -> str:
    body = {k: v for k, v in info.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def default_threads() -> int:
    """Physical cores: one inference thread per core (hyper-threads only add contention)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


if __name__ == "__main__":  # python -m defectopt.bench.host
    json.dump(fingerprint(), sys.stdout, indent=2)
    print()


def cpu_has_bf16() -> bool:
    """BF16 float math in hardware (AVX512-BF16 or AMX): what `quantize --float-precision auto`
    and `doctor` both test, so they agree."""
    isa = set(fingerprint().get("isa", []))
    return bool(isa & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot() -> bool:
    """An INT8 dot product that accumulates in int32 (INT8_DOT_FLAGS). Without one, x86 INT8
    kernels add u8 x s8 products pairwise into int16 (vpmaddubsw), which saturates on large
    weights: what `quantize --overflow-fix auto` and `doctor` test."""
    return bool(set(fingerprint().get("isa", [])) & INT8_DOT_FLAGS)
