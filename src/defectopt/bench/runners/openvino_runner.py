"""OpenVINO runner for `openvino` IR artifacts (FP32 and NNCF INT8).

OpenVINO picks BF16 by default on CPUs with AVX512-BF16/AMX, so the inference precision hint is
always set explicitly (from the artifact's metadata, FP32 unless it says otherwise) and the
runner reports it: "fp32" then really means FP32.
"""

from __future__ import annotations

import numpy as np

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.base import Runner
from defectopt.compress.export import OPENVINO_XML
from defectopt.errors import DefectoptError

FORMAT_OPENVINO = "openvino"
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def compile_ir(path, *, threads: int | None = None, inference_precision: str = "fp32"):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": HINTS[inference_precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(str(path), "CPU", config)


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
        self.compiled = compile_ir(path or artifact.file(artifact.meta.get("openvino_file", OPENVINO_XML)),
                                   threads=threads, inference_precision=self.inference_precision)
        self.request = self.compiled.create_infer_request()
        # what the plugin really uses, read back (not just what was asked for)
        self.settings = {
            "inference_precision_hint": str(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "inference_num_threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
        }

    def predict(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(result[self.compiled.output(0)])
