"""Eager PyTorch runner for the quantized formats executed by torch (models.torch_quantized).

`torch-int8-dynamic` takes FP32 input (activations are quantized inside each INT8 Linear);
`torch-bf16` / `torch-fp16` models hold half weights, so inputs are cast to the weights' dtype
and logits come back as float32.
"""

from __future__ import annotations

import numpy as np
import torch

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.torch_runner import TorchRunner
from defectopt.errors import DefectoptError
from defectopt.models.formats import (
    FORMAT_TORCH_BF16,
    FORMAT_TORCH_FP16,
    FORMAT_TORCH_INT8_DYNAMIC,
)

_PRECISION = {FORMAT_TORCH_INT8_DYNAMIC: "int8", FORMAT_TORCH_BF16: "bf16", FORMAT_TORCH_FP16: "fp16"}


@register_runner(FORMAT_TORCH_INT8_DYNAMIC, "torch", default=True)
@register_runner(FORMAT_TORCH_BF16, "torch", default=True)
@register_runner(FORMAT_TORCH_FP16, "torch", default=True)
class QuantizedTorchRunner(TorchRunner):
    def __init__(self, artifact, *, device="cpu", threads=None):
        if artifact.format == FORMAT_TORCH_INT8_DYNAMIC and device != "cpu":
            raise DefectoptError("torch dynamic INT8 kernels (fbgemm/x86) run on --device cpu only")
        super().__init__(artifact, device=device, threads=threads)
        self.precision = _PRECISION[artifact.format]
        self.input_dtype = {FORMAT_TORCH_BF16: torch.bfloat16, FORMAT_TORCH_FP16: torch.float16}.get(artifact.format, torch.float32)
        self.settings = {**self.settings, "quantized_engine": torch.backends.quantized.engine}

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        return x.to(self.device).to(self.input_dtype)
