"""ONNX Runtime runner for `onnx` artifacts (FP32 exports and INT8 QDQ models alike)."""

from __future__ import annotations

import numpy as np

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.base import Runner
from defectopt.errors import DefectoptError
from defectopt.models.formats import FORMAT_ONNX, ONNX_FILE


def make_session(path, *, device: str = "cpu", threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DefectoptError("--device cuda requested but onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


@register_runner(FORMAT_ONNX, "onnxruntime", default=True)
class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, artifact, *, device="cpu", threads=None, path=None):
        super().__init__(artifact, device=device, threads=threads)
        self.precision = artifact.meta.get("precision", "fp32")
        self.session = make_session(path or artifact.file(artifact.meta.get("onnx_file", ONNX_FILE)), device=device, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.settings = {"providers": self.session.get_providers(), "intra_op_threads": threads or 0}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
