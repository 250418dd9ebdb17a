"""OpenVINO runner for `openvino` IR artifacts (FP32 and NNCF INT8): an artifact adapter over
`runtime.sessions.OpenVINOSession`, the same session a deployed bundle runs.

OpenVINO picks BF16 by default on CPUs with AVX512-BF16/AMX, so the inference precision hint is
always set explicitly (from the artifact's metadata, FP32 unless it says otherwise) and the
runner reports it: "fp32" then really means FP32. The IR is stored with a dynamic batch
dimension; the session compiles one static-shape copy per batch shape it is asked for.
"""

from __future__ import annotations

import numpy as np

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.base import Runner
from defectopt.errors import DefectoptError
from defectopt.models.formats import FORMAT_OPENVINO, OPENVINO_XML
from defectopt.runtime.sessions import OpenVINOSession


@register_runner(FORMAT_OPENVINO, "openvino", default=True)
class OpenVINORunner(Runner):
    backend = "openvino"

    def __init__(self, artifact, *, device="cpu", threads=None, path=None, inference_precision=None):
        super().__init__(artifact, device=device, threads=threads)
        if device != "cpu":
            raise DefectoptError("the OpenVINO backend runs on --device cpu here; use tensorrt or torch for cuda")
        # the weights' precision (int8 for NNCF models) and the precision of the remaining float math
        self.inference_precision = inference_precision or artifact.meta.get("inference_precision", "fp32")
        self.precision = artifact.meta.get("precision", self.inference_precision)
        self.session = OpenVINOSession(path or artifact.file(artifact.meta.get("openvino_file", OPENVINO_XML)),
                                       threads=threads, inference_precision=self.inference_precision,
                                       img_size=artifact.img_size)
        self.settings = self.session.settings

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.predict(batch)

    def close(self) -> None:
        self.session.close()
