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
        # Set by open_runner when the runtime runs a derived export of a torch artifact
        # (e.g. .derived/<id>-<sha12>/onnx/model.onnx); None for the artifact's own payload.
        self.derived_from: str | None = None
        # Runtime settings that change results or speed (precision hints, providers), recorded in rows.
        self.settings: dict = {}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 NCHW batch that is already resized and normalized."""
        raise NotImplementedError

    # Timing hooks: `prepare` places an input once (e.g. on the GPU) and `run` does only the
    # work a deployment repeats per batch. The defaults time predict() end to end.
    def prepare(self, batch: np.ndarray):
        return np.ascontiguousarray(batch, dtype=np.float32)

    def run(self, prepared):
        return self.predict(prepared)

    def payload_files(self) -> list:
        """Files of the deployable model this runner executes (for size_mb)."""
        from pathlib import Path

        from defectopt.models.artifacts import META_FILE

        folder = Path(self.derived_from) if self.derived_from else self.artifact.dir
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META_FILE)

    def close(self) -> None:
        pass
