"""What every layout loader returns: a list of samples with a label and a defect type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
BINARY_CLASSES = ["good", "defect"]


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the dataset root, POSIX separators
    label: int
    defect_type: str  # "good" for good images; the defect's type (or class) otherwise


@dataclass
class ScannedDataset:
    kind: str
    root: Path
    class_names: list[str]
    task: str  # binary | multiclass
    samples: list[Sample] = field(default_factory=list)
    name: str = ""


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
