"""torch Datasets and DataLoaders over a frozen split, with timm's data config per model.

Training images get light geometric augmentation suited to surface images (flips, small
rotations: defects have no canonical orientation), applied once per image and shared by every
view, so in distillation teacher and student see the same augmented image, each through its own
resize + normalization (`MultiViewDataset`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from defectopt.runtime.preprocess import Preprocess, load_rgb, preprocess


def resolve_model_data_config(model, img_size: int) -> dict[str, Any]:
    """timm's data config for the model, at our image size and without centre cropping."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    cfg["input_size"] = (3, img_size, img_size)
    cfg["crop_pct"] = 1.0  # a centre crop could cut off a defect at the border
    return cfg


class EvalTransform:
    """PIL image -> normalized CHW tensor: `runtime.preprocess`, the one implementation (the same
    numbers as timm's eval transform at crop_pct 1; predict and bundles use it too)."""

    def __init__(self, cfg: dict[str, Any]):
        self.spec = Preprocess.from_data_config(cfg)

    def __call__(self, img) -> torch.Tensor:
        return torch.from_numpy(preprocess(img, self.spec))


def eval_transform(cfg: dict[str, Any]) -> Callable:
    return EvalTransform(cfg)


def train_augmentation(rotation_deg: float = 10.0) -> Callable:
    from torchvision import transforms as T

    return T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.RandomRotation(rotation_deg)])


class MultiViewDataset(Dataset):
    """(view_1, ..., view_k, label, index) per sample; one shared augmentation, k transforms."""

    def __init__(self, root: Path, records: Sequence[dict], views: Sequence[Callable], augment: Callable | None = None):
        self.root = Path(root)
        self.records = list(records)
        self.views = list(views)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        img = load_rgb(self.root / rec["path"])
        if self.augment is not None:
            img = self.augment(img)
        return (*[v(img) for v in self.views], rec["label"], i)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, sampler=None,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
        num_workers=num_workers, generator=generator, drop_last=drop_last,
    )
