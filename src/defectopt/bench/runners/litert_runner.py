"""LiteRT (TFLite) runner for `tflite` artifacts and the cached TFLite export of FP32 torch models
(optional extra): an artifact adapter over `runtime.sessions.LiteRTSession`."""

from __future__ import annotations

import numpy as np

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.base import Runner
from defectopt.errors import DefectoptError
from defectopt.models.formats import FORMAT_TFLITE, TFLITE_FILE
from defectopt.runtime.sessions import LiteRTSession


@register_runner(FORMAT_TFLITE, "litert", default=True)
class LiteRTRunner(Runner):
    backend = "litert"

    def __init__(self, artifact, *, device="cpu", threads=None, path=None):
        super().__init__(artifact, device=device, threads=threads)
        if device != "cpu":
            raise DefectoptError("the LiteRT backend runs on --device cpu here")
        self.precision = artifact.meta.get("precision", "fp32")
        self.session = LiteRTSession(path or artifact.file(TFLITE_FILE), threads=threads)
        self.settings = self.session.settings

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.predict(batch)
