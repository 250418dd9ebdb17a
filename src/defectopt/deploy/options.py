"""Options of `export` (the entry point `deploy.api.export_bundle`), defaults in one place."""

from __future__ import annotations

from dataclasses import dataclass

from defectopt.runtime.bundle import RUNTIMES

BUNDLE_FORMATS = tuple(RUNTIMES)


@dataclass(frozen=True)
class ExportOptions:
    model: str = ""  # an ID, or an alias meaning its latest ready model
    out: str = ""  # the bundle folder to create
    format: str | None = None  # None: the runtime the model was measured fastest in (openvino or onnx)
    force: bool = False  # replace an existing bundle folder (atomically)
