"""Logits of a runner over a split of the frozen dataset, with the artifact's own transform."""

from __future__ import annotations

import numpy as np
import torch

from defectopt.bench.runners.base import Runner
from defectopt.data.catalog import DatasetInfo
from defectopt.data.loading import MultiViewDataset, eval_transform, make_loader
from defectopt.models.artifacts import data_config


def split_batches(artifact, dataset: DatasetInfo, split: str, batch_size: int = 32):
    """Yield (float32 NCHW numpy batch, labels numpy) over a split, in manifest order."""
    records = dataset.split(split)
    ds = MultiViewDataset(dataset.root, records, [eval_transform(data_config(artifact))])
    for x, y, _ in make_loader(ds, batch_size):
        yield x.numpy().astype(np.float32), y.numpy()


def predict_split(runner: Runner, dataset: DatasetInfo, split: str, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = [], []
    with torch.inference_mode():
        for x, y in split_batches(runner.artifact, dataset, split, batch_size):
            logits.append(runner.predict(x))
            labels.append(y)
    return np.concatenate(logits), np.concatenate(labels)
