"""The Runner interface every runtime adapter implements."""

from __future__ import annotations

import numpy as np

from defectopt.models.artifacts import Artifact


class Runner:
    backend: str = ""
    precision: str = "fp32"

    def __init__(self, artifact: Artifact, *, device: str = "cpu", threads: int | None = None):
        self.artifact = artifact
        self.device = device
        self.threads = threads

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 NCHW batch that is already resized and normalized."""
        raise NotImplementedError

    def close(self) -> None:
        pass
