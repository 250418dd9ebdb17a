"""Runners: one small adapter per artifact format / runtime with the same two calls.

    runner = open_runner(artifact, device="cpu", backend="auto", threads=2)
    logits = runner.predict(batch)   # float32 numpy NCHW (already normalized) -> numpy logits

Evaluation, timing and memory measurement are written once against this interface, so every
backend is scored and timed by the same code. A format registers its runner class with
`register_runner(format, backend)`; `backend="auto"` picks the format's native runtime. An FP32
torch-family model also runs on onnxruntime / openvino / tensorrt through a cached derived
export (see `derived.py`), so INT8 is compared with FP32 in the same runtime.
"""

from __future__ import annotations

from collections.abc import Callable

from defectopt.bench.runners.base import Runner
from defectopt.errors import DefectoptError
from defectopt.models.artifacts import Artifact

_RUNNERS: dict[tuple[str, str], type[Runner]] = {}
_DEFAULT_BACKEND: dict[str, str] = {}

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt", "litert")
# Which devices each runtime serves here (OpenVINO: CPU plugin; TensorRT: NVIDIA GPUs only).
BACKEND_DEVICES = {"torch": ("cpu", "cuda"), "onnxruntime": ("cpu", "cuda"), "openvino": ("cpu",), "tensorrt": ("cuda",),
                   "litert": ("cpu",)}


def register_runner(fmt: str, backend: str, *, default: bool = False) -> Callable[[type[Runner]], type[Runner]]:
    def deco(cls: type[Runner]) -> type[Runner]:
        _RUNNERS[(fmt, backend)] = cls
        if default or fmt not in _DEFAULT_BACKEND:
            _DEFAULT_BACKEND[fmt] = backend
        return cls

    return deco


def backends_for(fmt: str) -> list[str]:
    return [b for (f, b) in _RUNNERS if f == fmt]


def native_backend(fmt: str) -> str | None:
    return _DEFAULT_BACKEND.get(fmt)


def available_backends(artifact: Artifact, device: str = "cpu") -> list[str]:
    """Backends that can run this artifact on `device`: its own runners plus derived exports."""
    from defectopt.bench.runners import derived

    native = native_backend(artifact.format)
    own = set(backends_for(artifact.format))
    out = [b for b in BACKENDS if device in BACKEND_DEVICES[b]
           and (b in own or derived.can_derive(artifact, b, native))]
    return out


def open_runner(artifact: Artifact, *, device: str = "cpu", backend: str = "auto", threads: int | None = None) -> Runner:
    if backend == "auto":
        backend = _DEFAULT_BACKEND.get(artifact.format, "")
    precision = artifact.meta.get("precision", "fp32")
    if precision == "fp16" and device == "cpu":
        raise DefectoptError(
            f"model {artifact.id} is FP16: CPU runtimes here emulate FP16 (slow, not a deployment "
            "figure); bench it with --device cuda"
        )
    if backend in BACKEND_DEVICES and device not in BACKEND_DEVICES[backend]:
        where = " or ".join(BACKEND_DEVICES[backend])
        raise DefectoptError(f"backend '{backend}' runs on --device {where}, not {device}")
    cls = _RUNNERS.get((artifact.format, backend))
    if cls is not None:
        runner = cls(artifact, device=device, threads=threads)
        if runner.precision == "fp16" and device == "cpu":
            runner.close()
            raise DefectoptError(
                f"model {artifact.id} runs in FP16: CPU runtimes here emulate FP16 (slow, not a deployment "
                "figure); bench it with --device cuda"
            )
        return runner
    from defectopt.bench.runners import derived

    if derived.can_derive(artifact, backend, _DEFAULT_BACKEND.get(artifact.format)):
        return derived.open_derived(artifact, backend, device=device, threads=threads)
    known = ", ".join(available_backends(artifact, device)) or "none"
    raise DefectoptError(
        f"model {artifact.id} (format '{artifact.format}') cannot run on backend '{backend}'; available: {known}"
    )


# The runners register themselves on import (each module imports its runtime lazily, so this
# works without onnxruntime/openvino/tensorrt installed); the registry above imports none of them.
from defectopt.bench.runners import (  # noqa: E402,F401
    litert_runner,
    onnx_runner,
    openvino_runner,
    quantized_torch_runner,
    tensorrt_runner,
    torch_runner,
)

__all__ = ["Runner", "open_runner", "register_runner", "backends_for", "available_backends", "native_backend", "BACKENDS"]
