"""ONNX Runtime runner for `onnx` artifacts (FP32 exports and INT8 QDQ models alike): an artifact
adapter over `runtime.sessions.OnnxSession`, the same session a deployed bundle runs."""

from __future__ import annotations

import numpy as np

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.base import Runner
from defectopt.models.formats import FORMAT_ONNX, ONNX_FILE
from defectopt.runtime.sessions import OnnxSession


@register_runner(FORMAT_ONNX, "onnxruntime", default=True)
class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, artifact, *, device="cpu", threads=None, path=None):
        super().__init__(artifact, device=device, threads=threads)
        self.precision = artifact.meta.get("precision", "fp32")
        self.session = OnnxSession(path or artifact.file(artifact.meta.get("onnx_file", ONNX_FILE)), device=device,
                                   threads=threads)
        self.settings = self.session.settings

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.predict(batch)
