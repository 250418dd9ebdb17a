"""`quantize_model`: the one entry point behind `defectopt quantize` (and the pipeline)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from defectopt.bench.host import cpu_has_bf16
from defectopt.compress.quantize import auto, dynamic, half, qat, sensitivity, static
from defectopt.compress.quantize.common import (
    Result,
    calibration_batches,
    layer_groups,
    load_parent,
    resolve_keep_fp,
)
from defectopt.errors import DefectoptError
from defectopt.store.db import Store

METHODS = ("dynamic", "static", "bf16", "fp16", "qat", "auto")
DEFAULT_BACKEND = {"dynamic": "torch", "static": "openvino", "bf16": "openvino", "fp16": "torch", "qat": "openvino",
                   "auto": "openvino"}
BACKEND_CHOICES = ("auto", "openvino", "onnxruntime", "torch", "pt2e", "fx")


@dataclass
class QuantizeOptions:
    method: str
    backend: str = "auto"
    calib_images: int = 256
    keep_fp: str | None = None  # "N" or "NAME,..."
    sensitivity: bool = False
    max_recall_drop: float = 0.01
    max_keep_fp: int = 3
    device: str = "cpu"
    # OpenVINO hint for the float parts of an INT8 model; "auto": bf16 where the CPU has
    # AVX512-BF16/AMX (measured faster for every INT8 model in benchmarks/bench_quantize.py,
    # e.g. vit_s16 12.1 -> 10.6 ms, with the same logit fidelity), else fp32
    float_precision: str = "auto"
    qat: qat.QATConfig = field(default_factory=qat.QATConfig)
    seed: int = 0
    time_keep_fp: bool = True  # time the speed cost of --keep-fp (off in tests: tiny models)


@dataclass
class QuantizeOutcome:
    results: list[Result] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] | None = None
    speed: dict[str, float] | None = None
    chosen: Result | None = None
    notes: list[str] = field(default_factory=list)
    parent_id: int = 0


def _validate(opts: QuantizeOptions, backend: str, parent) -> None:
    """Everything a user can get wrong, checked before any row is written."""
    if opts.method not in METHODS:
        raise DefectoptError(f"unknown --method '{opts.method}'; choose from {', '.join(METHODS)}")
    if opts.device not in ("cpu", "cuda"):
        raise DefectoptError(f"--device must be cpu or cuda, not '{opts.device}'")
    if opts.float_precision not in ("auto", "fp32", "bf16"):
        raise DefectoptError("--float-precision must be auto, fp32 or bf16")
    if opts.float_precision == "bf16" and not cpu_has_bf16():
        raise DefectoptError("--float-precision bf16 needs a CPU with AVX512-BF16 or AMX; this one has neither (use fp32)")
    if opts.method == "fp16":
        half.refuse_fp16(opts.device)
    if opts.method in ("static", "auto"):
        static.refuse_backend(backend, parent.family, parent.artifact.alias)
    if opts.method == "dynamic":
        dynamic.check_applicable(parent, backend)
    if opts.sensitivity and opts.method not in ("static", "dynamic"):
        raise DefectoptError("--sensitivity applies to --method static or dynamic (auto runs it when PTQ misses the budget)")
    if opts.keep_fp and opts.method not in ("static", "dynamic", "qat"):
        raise DefectoptError("--keep-fp applies to --method static, dynamic or qat")
    if opts.calib_images <= 0:
        raise DefectoptError("--calib-images must be a positive number")
    if not 0.0 <= opts.max_recall_drop < 1.0:
        raise DefectoptError(f"--max-recall-drop must be in [0, 1), got {opts.max_recall_drop:g}")
    if opts.max_keep_fp < 0:
        raise DefectoptError(f"--max-keep-fp must be >= 0, got {opts.max_keep_fp}")


def resolve_float_precision(choice: str) -> str:
    if choice == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return choice


def quantize_model(store: Store, ref: str | int, opts: QuantizeOptions,
                   log: Callable[[str], None] = print, progress=None) -> QuantizeOutcome:
    from defectopt.models.catalog import resolve_model_ref

    parent = load_parent(store, resolve_model_ref(store, ref))
    backend = DEFAULT_BACKEND[opts.method] if opts.method in DEFAULT_BACKEND and opts.backend == "auto" else opts.backend
    _validate(opts, backend, parent)
    out = QuantizeOutcome(parent_id=parent.id)
    float_precision = resolve_float_precision(opts.float_precision)
    needs_calib = opts.method in ("static", "qat", "auto") or (opts.sensitivity and backend != "torch")
    calib = calibration_batches(parent, opts.calib_images, opts.seed) if needs_calib else []
    if calib and len(calib) < opts.calib_images:
        out.notes.append(f"calibrated on all {len(calib)} train images (fewer than --calib-images {opts.calib_images})")

    if opts.method == "auto":
        res = auto.run(store, parent, calib=calib, max_recall_drop=opts.max_recall_drop, backend=backend,
                       qat_cfg=opts.qat, max_keep_fp=opts.max_keep_fp, device=opts.device, log=log,
                       float_precision=float_precision)
        out.results, out.chosen, out.sensitivity = res.attempts, res.chosen, res.sensitivity
        return out

    ranking = None
    if opts.sensitivity:
        out.sensitivity = sensitivity.analyse(store, parent, method=opts.method, backend=backend, calib=calib,
                                              progress=progress)
        ranking = [r["layer"] for r in out.sensitivity]
    keep = resolve_keep_fp(opts.keep_fp, layer_groups(parent.model), ranking)

    if opts.method == "dynamic":
        out.results.append(dynamic.run(store, parent, keep_fp=keep, device=opts.device))
    elif opts.method == "static":
        result = static.run(store, parent, backend=backend, calib=calib, keep_fp=keep, device=opts.device,
                            float_precision=float_precision)
        out.results.append(result)
        if keep and opts.time_keep_fp:
            from defectopt.models.artifacts import load_artifact

            out.speed = static.speed_cost(parent, calib, backend=backend, keep_fp=keep,
                                          mixed_id_artifact=load_artifact(store, result.model_id),
                                          float_precision=float_precision)
    elif opts.method == "bf16":
        out.results.append(half.run_bf16(store, parent, backend=backend, device=opts.device))
    elif opts.method == "fp16":
        out.results.append(half.run_fp16(store, parent, backend=backend, device=opts.device))
    elif opts.method == "qat":
        out.results.append(qat.run(store, parent, calib=calib, cfg=opts.qat, keep_fp=keep, device=opts.device,
                                   backend=backend, float_precision=float_precision))
    out.chosen = out.results[-1] if out.results else None
    for r in out.results:
        out.notes.extend(r.notes)
    return out
