"""A model file in its runtime: float32 NCHW batch in, logits out — written once.

bench's runners (artifact -> file -> session) and the bundle predictor both use these, so the
engine settings that change results or speed (OpenVINO's precision hint, static shapes, thread
counts, LiteRT's batch resize) are the same in a measurement and in deployment. Each runtime is
imported on first use: a factory PC needs only the one its bundle names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from defectopt.errors import DefectoptError

# OpenVINO INFERENCE_PRECISION_HINT values; the plugin picks BF16 by default on AVX512-BF16/AMX
# CPUs, so the hint is always set explicitly and "fp32" really means FP32
OV_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
MAX_COMPILED_SHAPES = 4  # evaluation uses a full and a last partial batch; timing one batch size


def compile_ir(path, *, threads: int | None = None, inference_precision: str = "fp32",
               shape: tuple[int, ...] | None = None):
    """Compile an IR file (or an ov.Model) for the CPU; with `shape`, for that static input shape."""
    import openvino as ov

    core = ov.Core()
    model = path.clone() if isinstance(path, ov.Model) else core.read_model(str(path))
    if shape is not None:
        model.reshape(list(shape))
    config = {"INFERENCE_PRECISION_HINT": OV_HINTS[inference_precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config)


class Session:
    runtime = ""
    settings: dict[str, Any]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OpenVINOSession(Session):
    """One static-shape compiled copy per batch shape (measured here: static shapes make NNCF INT8
    vit_s16 13.3 -> 11.2 ms with the BF16 hint, FP32 39.9 -> 38.9 ms, against a dynamic batch)."""

    runtime = "openvino"

    def __init__(self, path: str | Path, *, threads: int | None = None, inference_precision: str = "fp32",
                 img_size: int | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise DefectoptError("this model needs OpenVINO: pip install openvino") from None
        if inference_precision not in OV_HINTS:
            raise DefectoptError(f"unknown OpenVINO inference precision '{inference_precision}'")
        self.threads, self.inference_precision = threads, inference_precision
        self._ov, self._bound = ov, None
        self._model = ov.Core().read_model(str(path))
        self._compiled: dict[tuple[int, ...], tuple] = {}
        self.settings = {}
        if img_size:
            compiled, _ = self.compiled_for((1, 3, img_size, img_size))
            # what the plugin really uses, read back (not just what was asked for)
            self.settings = {"inference_precision_hint": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
                             "inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
                             "input_shape": "static per batch"}

    def compiled_for(self, shape: tuple[int, ...]):
        """(compiled model, infer request) for one static input shape, compiled on first use."""
        if shape not in self._compiled:
            if len(self._compiled) >= MAX_COMPILED_SHAPES:
                self._compiled.pop(next(iter(self._compiled)))
            compiled = compile_ir(self._model, threads=self.threads, inference_precision=self.inference_precision,
                                  shape=shape)
            self._compiled[shape] = (compiled, compiled.create_infer_request())
        return self._compiled[shape]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        _, request = self.compiled_for(tuple(batch.shape))
        # The caller's array is bound as the input tensor (no copy, no per-call dict/OVDict) and the
        # output tensor is read directly; below 1 ms that Python-side work is a few per cent of the
        # latency (benchmarks/bench_ov_call_overhead.py: 1.04-1.07x on the study's 80-px INT8 Lite0,
        # none on its 7-ms Lite2 teacher). The tensor wraps `batch` without owning it, so the session
        # keeps both alive until the next call rebinds; the output is copied because the request
        # reuses its memory on the next inference.
        tensor = self._ov.Tensor(batch, shared_memory=True)
        request.set_input_tensor(tensor)
        self._bound = (tensor, batch)
        request.infer()
        return request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self._compiled.clear()
        self._bound = None


class OnnxSession(Session):
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, device: str = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DefectoptError("this model needs ONNX Runtime: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise DefectoptError("--device cuda requested but onnxruntime has no CUDAExecutionProvider "
                                     "(pip install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.settings = {"providers": self.session.get_providers(), "intra_op_threads": threads or 0}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class LiteRTSession(Session):
    """The ai-edge-litert interpreter (XNNPACK CPU delegate); the batch axis is resized on demand."""

    runtime = "litert"

    def __init__(self, path: str | Path, *, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise DefectoptError("this model needs the LiteRT interpreter: pip install ai-edge-litert "
                                 "(or defectopt[tflite])") from None
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None
        self.settings = {"delegate": "XNNPACK (default CPU)", "num_threads": threads or 0}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape != self._shape:  # resize the batch axis, then re-allocate the tensors
            self.interpreter.resize_tensor_input(self._input, list(batch.shape))
            self.interpreter.allocate_tensors()
            self._shape = tuple(batch.shape)
        self.interpreter.set_tensor(self._input, batch)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output))
