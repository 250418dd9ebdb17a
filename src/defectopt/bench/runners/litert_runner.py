"""LiteRT (TFLite) runner: the ai-edge-litert interpreter with its XNNPACK CPU delegate, for
`tflite` artifacts and the cached TFLite export of FP32 torch models (optional extra)."""

from __future__ import annotations

import numpy as np

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.base import Runner
from defectopt.errors import DefectoptError
from defectopt.models.formats import FORMAT_TFLITE, TFLITE_FILE


@register_runner(FORMAT_TFLITE, "litert", default=True)
class LiteRTRunner(Runner):
    backend = "litert"

    def __init__(self, artifact, *, device="cpu", threads=None, path=None):
        super().__init__(artifact, device=device, threads=threads)
        if device != "cpu":
            raise DefectoptError("the LiteRT backend runs on --device cpu here")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise DefectoptError("the litert backend needs ai-edge-litert: pip install 'defectopt[tflite]'") from None
        self.precision = artifact.meta.get("precision", "fp32")
        self.interpreter = Interpreter(model_path=str(path or artifact.file(TFLITE_FILE)), num_threads=threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None
        self.settings = {"delegate": "XNNPACK (default CPU)", "num_threads": threads or 0}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape != self._shape:  # the batch axis is resized, then tensors are re-allocated
            self.interpreter.resize_tensor_input(self._input, list(batch.shape))
            self.interpreter.allocate_tensors()
            self._shape = tuple(batch.shape)
        self.interpreter.set_tensor(self._input, batch)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output))
