"""`defectopt doctor`: what this machine can do for defectopt, and what is missing.

Which quantization paths are fast here depends on the runtimes installed (and their devices and
execution providers), the CPU's ISA extensions (VNNI and AMX for INT8, AVX512-BF16/AMX for BF16
float math), the GPU, which pretrained weights are available offline, and the state of the
results store. `diagnose()` gathers all of it into one JSON-ready dict; every check reports
what it could not do as a warning instead of raising, so the command always exits 0.
"""

from __future__ import annotations

import importlib
import os
import platform
import sqlite3
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import defectopt
from defectopt.bench.host import INT8_DOT_FLAGS

# `defectopt --version -v`: the libraries whose versions change results or behaviour.
KEY_LIBRARIES = ("torch", "timm", "torch-pruning", "onnxruntime", "openvino", "nncf", "typer", "rich",
                 "sqlalchemy", "pandas")

# (name shown, module imported, what it runs, how to get it)
RUNTIMES = (
    ("torch", "torch", "training, eager and torch-quantized models", "pip install -e ."),
    ("onnxruntime", "onnxruntime", "ONNX models and ORT static INT8 (QDQ)", "pip install -e ."),
    ("openvino", "openvino", "OpenVINO IR: NNCF INT8 and BF16 (the default static INT8 backend)", "pip install -e ."),
    ("tensorrt", "tensorrt", "TensorRT engines on CUDA", "pip install -e '.[gpu]'"),
    ("litert", "ai_edge_litert", "LiteRT (TFLite) models", "pip install ai-edge-litert"),
)

# ISA flags as /proc/cpuinfo spells them, and what each one enables here.
ISA_ENABLES_X86 = (
    ("avx2", "AVX2: 256-bit SIMD, the baseline of fast FP32 kernels"),
    ("avx512f", "AVX-512: 512-bit SIMD for FP32 kernels"),
    ("avx_vnni", "AVX-VNNI: INT8 dot products on 256-bit registers"),
    ("avx512_vnni", "VNNI: fast INT8 dot products (static INT8 models beat FP32)"),
    ("avx512_bf16", "AVX512-BF16: BF16 float math (bf16 models; the float parts of INT8 models)"),
    ("avx512_fp16", "AVX512-FP16: native FP16 arithmetic (fp16 stays CUDA-only: measured 4-16x slower than FP32 on CPU)"),
    ("amx_tile", "AMX: INT8/BF16 matrix tiles"),
    ("amx_int8", "AMX-INT8: INT8 matrix multiplies on tiles"),
    ("amx_bf16", "AMX-BF16: BF16 matrix multiplies on tiles"),
)
ISA_ENABLES_ARM = (
    ("asimd", "NEON: 128-bit SIMD for FP32 and INT8 kernels"),
    ("sve", "SVE: scalable vectors"),
)


def package_version() -> str:
    return defectopt.__version__


def library_versions() -> dict[str, str | None]:
    """Installed versions of KEY_LIBRARIES (None: not installed), from package metadata only:
    nothing is imported, so `--version -v` stays instant."""
    out: dict[str, str | None] = {}
    for dist in KEY_LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def probe_runtime(name: str, module: str, runs: str, install: str) -> dict[str, Any]:
    """Import a runtime and report its version and devices/providers; any failure is data."""
    entry: dict[str, Any] = {"name": name, "module": module, "runs": runs, "install": install, "available": False,
                             "version": None, "details": {}, "error": None}
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken install raises more than ImportError; all mean "not usable"
        entry["error"] = _one_line(exc)
        return entry
    entry["available"] = True
    # the package's release (openvino's __version__ adds a long build string; kept in details)
    entry["version"] = _dist_version(module) or str(getattr(mod, "__version__", "") or "unknown")
    try:
        entry["details"] = _RUNTIME_DETAILS.get(name, lambda _m: {})(mod)
    except Exception as exc:  # imported but cannot list its devices: usable in part, say so
        entry["error"] = f"imported, but querying it failed: {_one_line(exc)}"
    return entry


def _dist_version(module: str) -> str | None:
    for dist in metadata.packages_distributions().get(module, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _torch_details(torch) -> dict[str, Any]:
    return {"cuda": torch.version.cuda, "cuda_available": bool(torch.cuda.is_available()),
            "threads": torch.get_num_threads()}


def _ort_details(ort) -> dict[str, Any]:
    return {"providers": list(ort.get_available_providers())}


def _openvino_details(ov) -> dict[str, Any]:
    return {"devices": list(ov.Core().available_devices), "build": ov.get_version()}


_RUNTIME_DETAILS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "torch": _torch_details, "onnxruntime": _ort_details, "openvino": _openvino_details,
}


def isa_report(flags: list[str]) -> dict[str, Any]:
    """Each relevant ISA flag (present or not) with what it enables, and the two decisions they
    drive: hardware INT8 dot products, and BF16 float math for INT8 models."""
    have = set(flags)
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    table = ISA_ENABLES_X86 if x86 else ISA_ENABLES_ARM
    rows = [{"flag": flag, "present": flag in have, "enables": enables} for flag, enables in table]
    bf16 = _bf16_float_math()
    capabilities = [
        {"name": "INT8 dot products in hardware (VNNI/AMX): static INT8 is the fast path; without them "
                 "quantize --overflow-fix auto puts dense INT8 weights on 7 bits", "available": bool(have & INT8_DOT_FLAGS)},
        {"name": "BF16 float math for INT8 models (quantize --float-precision auto picks bf16)", "available": bf16},
        {"name": "AMX tiles: INT8/BF16 matrix multiplies on tiles (oneDNN and OpenVINO use them)", "available": "amx_tile" in have},
    ]
    return {"flags": rows, "capabilities": capabilities}


def _bf16_float_math() -> bool:
    # the very test `quantize --float-precision auto` applies, so doctor and quantize agree
    from defectopt.bench.host import cpu_has_bf16

    return cpu_has_bf16()


def gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}"})
    return out


def weights_report() -> dict[str, Any]:
    from defectopt import paths
    from defectopt.models.registry import REGISTRY
    from defectopt.models.weights import hub_cached, list_imported

    imported = [{"name": w.name, "timm_name": w.timm_name, "source": w.sidecar.get("source")} for w in list_imported()]
    cached = [spec.alias for spec in REGISTRY.values() if spec.role != "test" and hub_cached(spec.timm_name)]
    return {"root": str(paths.weights_root()), "imported": imported, "hub_cached": cached}


def db_report(db: str | os.PathLike | None) -> tuple[dict[str, Any], list[str]]:
    """Path, Alembic revision against this code's head, and row counts, read without creating
    or migrating anything (doctor must not change the store it reports on)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from defectopt import paths
    from defectopt.store.db import migrations_dir
    from defectopt.store.schema import Base

    path = paths.resolve_db_path(db)
    info: dict[str, Any] = {"path": str(path.absolute()), "exists": path.is_file(), "revision": None, "head": None,
                            "state": None, "counts": {}}
    warnings: list[str] = []
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    script = ScriptDirectory.from_config(cfg)
    info["head"] = script.get_current_head()
    if path.is_dir():
        info["state"] = "a directory, not a database"
        warnings.append(f"database path {path} is a directory; pass another --db")
        return info, warnings
    if not path.exists():
        info["state"] = "not created yet (the first command creates it)"
        warnings.append(f"no database at {path} yet: the first command that needs it creates it")
        return info, warnings
    try:
        con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "alembic_version" in tables:
                info["revision"] = con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            info["counts"] = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                              for t in Base.metadata.tables if t in tables}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        info["state"] = "not a usable SQLite database"
        warnings.append(f"{path} is not a usable SQLite database ({exc}); pass another --db")
        return info, warnings
    known = {rev.revision for rev in script.walk_revisions()}
    if info["revision"] == info["head"]:
        info["state"] = "up to date"
    elif info["revision"] is None:
        info["state"] = "not migrated (the next command migrates it)"
    elif info["revision"] in known:
        info["state"] = "older schema (the next command upgrades it)"
    else:
        info["state"] = "newer than this defectopt (refused until defectopt is upgraded)"
        warnings.append(f"database {path} is at schema revision {info['revision']}, newer than this defectopt "
                        f"(head {info['head']}); upgrade defectopt or use another --db")
    return info, warnings


def artifacts_report(db: str | os.PathLike | None) -> dict[str, Any]:
    from defectopt import paths

    root = paths.artifacts_root(paths.resolve_db_path(db))
    info: dict[str, Any] = {"path": str(Path(root).absolute()), "exists": root.is_dir(), "bytes": 0, "models": 0}
    if root.is_dir():
        info["models"] = sum(1 for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        for folder, _dirs, files in os.walk(root):
            for name in files:
                try:
                    info["bytes"] += os.lstat(os.path.join(folder, name)).st_size
                except OSError:  # removed while we walk (a concurrent gc): not there, not counted
                    continue
    return info


def diagnose(db: str | os.PathLike | None = None) -> dict[str, Any]:
    """Everything doctor reports, as JSON-ready data; `warnings` lists what is missing or failed."""
    report: dict[str, Any] = {"defectopt": package_version(), "libraries": library_versions()}
    warnings: list[str] = []

    def check(key: str, fn: Callable[[], Any], default: Any) -> Any:
        try:
            report[key] = fn()
        except Exception as exc:  # doctor reports a failed check; it must not crash on it
            report[key] = default
            warnings.append(f"{key} check failed: {_one_line(exc)}")
        return report[key]

    from defectopt.bench.host import fingerprint

    host = check("host", fingerprint, {})
    runtimes = check("runtimes", lambda: [probe_runtime(*r) for r in RUNTIMES], [])
    for r in runtimes:
        if not r["available"]:
            warnings.append(f"runtime {r['name']} missing ({r['error']}): no {r['runs']} here; {r['install']}")
        elif r["error"]:
            warnings.append(f"runtime {r['name']}: {r['error']}")
    check("isa", lambda: isa_report(host.get("isa", [])), {"flags": [], "capabilities": []})
    if check("gpus", gpus, None) == []:
        warnings.append("no CUDA GPU: --device cuda, fp16 and TensorRT are unavailable")
    report["gpus"] = report["gpus"] or []
    check("weights", weights_report, {"root": None, "imported": [], "hub_cached": []})
    db_info = check("db", lambda: db_report(db), ({}, []))
    report["db"], db_warnings = db_info
    warnings += db_warnings
    check("artifacts", lambda: artifacts_report(db), {})
    report["warnings"] = warnings
    return report
