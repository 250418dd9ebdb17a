"""Runners: one small adapter per artifact format / runtime with the same two calls.

    runner = open_runner(artifact, device="cpu", backend="auto", threads=2)
    logits = runner.predict(batch)   # float32 numpy NCHW (already normalized) -> numpy logits

Evaluation, timing and memory measurement are written once against this interface, so every
backend is scored and timed by the same code. A format registers its runner class with
`register_runner(format, backend)`; `backend="auto"` picks the format's native runtime.
"""

from __future__ import annotations

from collections.abc import Callable

from defectopt.bench.runners.base import Runner
from defectopt.errors import DefectoptError
from defectopt.models.artifacts import Artifact

_RUNNERS: dict[tuple[str, str], type[Runner]] = {}
_DEFAULT_BACKEND: dict[str, str] = {}


def register_runner(fmt: str, backend: str, *, default: bool = False) -> Callable[[type[Runner]], type[Runner]]:
    def deco(cls: type[Runner]) -> type[Runner]:
        _RUNNERS[(fmt, backend)] = cls
        if default or fmt not in _DEFAULT_BACKEND:
            _DEFAULT_BACKEND[fmt] = backend
        return cls

    return deco


def _load_runner_modules() -> None:
    import contextlib
    import importlib

    for name in ("torch_runner", "onnx_runner", "openvino_runner", "tensorrt_runner"):
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(f"defectopt.bench.runners.{name}")


def backends_for(fmt: str) -> list[str]:
    _load_runner_modules()
    return [b for (f, b) in _RUNNERS if f == fmt]


def open_runner(artifact: Artifact, *, device: str = "cpu", backend: str = "auto", threads: int | None = None) -> Runner:
    _load_runner_modules()
    if backend == "auto":
        backend = _DEFAULT_BACKEND.get(artifact.format, "")
    cls = _RUNNERS.get((artifact.format, backend))
    if cls is None:
        known = ", ".join(backends_for(artifact.format)) or "none"
        raise DefectoptError(
            f"model {artifact.id} (format '{artifact.format}') cannot run on backend '{backend}'; available: {known}"
        )
    return cls(artifact, device=device, threads=threads)


__all__ = ["Runner", "open_runner", "register_runner", "backends_for"]
