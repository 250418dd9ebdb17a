"""TensorRT runner (CUDA only): builds an engine from an ONNX model and caches it.

Registered for `onnx` artifacts (FP32 exports and INT8 QDQ models: TensorRT reads the Q/DQ
nodes as explicit quantization) and for `tensorrt` artifacts (a serialized engine
`model.plan`); FP32 torch models reach it through the derived ONNX export. Engines are
specific to a GPU and a TensorRT version, so the cache file name carries both.

The module imports without tensorrt: opening a runner without tensorrt or without a CUDA
device raises one clear DefectoptError.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import numpy as np

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.base import Runner
from defectopt.errors import DefectoptError
from defectopt.models.formats import FORMAT_ONNX, FORMAT_TENSORRT
from defectopt.models.formats import TENSORRT_ENGINE as ENGINE_FILE

MAX_BATCH = 64  # optimization profile upper bound: covers eval batches and --batch-sizes up to 64


def _require_tensorrt(device: str):
    if device != "cuda":
        raise DefectoptError("the tensorrt backend runs on --device cuda only")
    import torch

    if not torch.cuda.is_available():
        raise DefectoptError("--backend tensorrt needs a CUDA device; none is available")
    try:
        import tensorrt as trt
    except ImportError:
        raise DefectoptError("--backend tensorrt needs the tensorrt package: pip install -e '.[gpu]'") from None
    return trt


def build_engine(onnx_path: Path, *, precision: str, img_size: int, int8_qdq: bool = False) -> bytes:
    """Serialized engine with a dynamic batch profile 1..MAX_BATCH."""
    trt = _require_tensorrt("cuda")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT >= 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DefectoptError(f"TensorRT cannot parse {onnx_path}: {errors[:200]}")
    config = builder.create_builder_config()
    if precision in ("fp16", "bf16"):
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
    if int8_qdq:
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, 3, img_size, img_size), (1, 3, img_size, img_size), (MAX_BATCH, 3, img_size, img_size))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise DefectoptError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(engine)


def engine_cache_name(precision: str) -> str:
    import tensorrt as trt
    import torch

    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-")
    return f"{gpu}-trt{trt.__version__}-{precision}.plan"


@register_runner(FORMAT_TENSORRT, "tensorrt", default=True)
class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, artifact, *, device="cpu", threads=None, onnx_path=None, cache_dir=None, precision=None):
        super().__init__(artifact, device=device, threads=threads)
        trt = _require_tensorrt(device)
        import torch

        self._torch = torch
        self.precision = precision or artifact.meta.get("precision", "fp32")
        if artifact.format == FORMAT_TENSORRT:
            serialized = artifact.file(artifact.meta.get("engine_file", ENGINE_FILE)).read_bytes()
        else:
            from defectopt.models.formats import ONNX_FILE

            onnx_path = Path(onnx_path or artifact.file(artifact.meta.get("onnx_file", ONNX_FILE)))
            cache_dir = Path(cache_dir) if cache_dir else artifact.dir.parent / ".derived" / f"{artifact.id}-{artifact.sha256[:12]}" / "tensorrt"
            cache = cache_dir / engine_cache_name(self.precision)
            if cache.is_file():
                serialized = cache.read_bytes()
            else:
                serialized = build_engine(onnx_path, precision=self.precision, img_size=artifact.img_size,
                                          int8_qdq=self.precision == "int8")
                cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex[:8]}")
                tmp.write_bytes(serialized)
                os.replace(tmp, cache)  # atomic: a half-written engine is never loaded
                self.derived_from = str(cache_dir)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise DefectoptError(f"TensorRT cannot load the engine of model {artifact.id} (built for another GPU/version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.settings = {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(0)}

    def prepare(self, batch: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()

    def run(self, prepared):
        torch = self._torch
        n = prepared.shape[0]
        if n > MAX_BATCH:
            raise DefectoptError(f"TensorRT engines here take batches up to {MAX_BATCH}, got {n}")
        self.context.set_input_shape(self.input_name, tuple(prepared.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input_name, prepared.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        # run on torch's current stream so CUDA events recorded by the timing harness bracket it
        self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = self.run(self.prepare(batch))
        return out.cpu().numpy()


# INT8 QDQ and FP32 ONNX models build into TensorRT engines on CUDA.
register_runner(FORMAT_ONNX, "tensorrt")(TensorRTRunner)
