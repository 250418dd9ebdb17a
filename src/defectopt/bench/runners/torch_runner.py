"""PyTorch eager runner for torch-family artifacts (plain, pruned, torch-quantized)."""

from __future__ import annotations

import numpy as np
import torch

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.base import Runner
from defectopt.errors import DefectoptError
from defectopt.models.artifacts import load_torch_model
from defectopt.models.formats import FORMAT_PRUNED, FORMAT_TORCH, FORMAT_TORCH_LOWBIT_SIM


# A pruned model is an ordinary dense nn.Module: eager torch runs it as is.
@register_runner(FORMAT_TORCH_LOWBIT_SIM, "torch", default=True)  # scored only: bench does not time it
@register_runner(FORMAT_PRUNED, "torch", default=True)
@register_runner(FORMAT_TORCH, "torch", default=True)
class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, artifact, *, device="cpu", threads=None):
        super().__init__(artifact, device=device, threads=threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise DefectoptError("--device cuda requested but no CUDA device is available")
        if threads:
            torch.set_num_threads(threads)
        self.precision = artifact.meta.get("precision", "fp32")
        self.model = load_torch_model(artifact).eval().to(device)
        self.settings = {"torch_threads": torch.get_num_threads()}

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)

    @torch.inference_mode()
    def run(self, prepared: torch.Tensor) -> torch.Tensor:
        return self.model(prepared)

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.run(self.prepare(batch)).float().cpu().numpy()
