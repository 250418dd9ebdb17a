"""Image -> model input, implemented once (bench, training and predict all call this).

It is what timm's eval transform does with `crop_pct = 1` (the setting defectopt trains and
measures with): the shorter side resized to `size` with the model's interpolation (PIL's, with
its antialiasing), a centre crop of size x size (a no-op for square images), RGB scaled to
[0, 1], then (x - mean) / std per channel, channels first. Grey, 16-bit, palette and RGBA images
become 8-bit RGB first (grey replicated to the three channels; alpha composited on black).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectopt.errors import DefectoptError

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)  # 2-D uint8 -> mode L
    if img.mode == "RGBA" or img.mode == "LA" or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


class UnreadableImage(DefectoptError):
    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"corrupt or unreadable image {path}: {reason}; run with --skip-bad-images to skip such files")
        self.path, self.reason = str(path), reason


def load_rgb(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(path, str(exc)) from None


@dataclass(frozen=True)
class Preprocess:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise DefectoptError(f"unknown interpolation '{self.interpolation}'; known: {', '.join(INTERPOLATIONS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise DefectoptError("preprocessing needs three means and three positive standard deviations (RGB)")

    @classmethod
    def from_data_config(cls, cfg: dict[str, Any]) -> Preprocess:
        """From timm's data config (input_size, mean, std, interpolation)."""
        return cls(int(cfg["input_size"][-1]), tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]),
                   str(cfg.get("interpolation", "bilinear")))

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "resize": "shorter side to size", "crop": "centre, size x size",
                "interpolation": self.interpolation, "scale": "RGB / 255", "mean": list(self.mean), "std": list(self.std),
                "channel_order": "RGB", "grey": "replicated to RGB", "alpha": "composited on black", "layout": "NCHW",
                "dtype": "float32"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocess:
        try:
            return cls(int(data["size"]), tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]),
                       str(data.get("interpolation", "bilinear")))
        except (KeyError, TypeError, ValueError) as exc:
            raise DefectoptError(f"bundle preprocessing is incomplete or malformed: {exc}") from None


def preprocess(img: Image.Image, spec: Preprocess) -> np.ndarray:
    """One image -> float32 (3, size, size)."""
    img = to_rgb(img)
    w, h = img.size
    s = spec.size
    if min(w, h) != s:
        # torchvision's Resize(int): the shorter side becomes s, the longer int(s * long / short)
        if w <= h:
            new_w, new_h = s, int(s * h / w)
        else:
            new_w, new_h = int(s * w / h), s
        img = img.resize((new_w, new_h), INTERPOLATIONS[spec.interpolation])
        w, h = new_w, new_h
    if (w, h) != (s, s):
        left, top = int(round((w - s) / 2.0)), int(round((h - s) / 2.0))
        img = img.crop((left, top, left + s, top + s))
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def defect_scores(logits: np.ndarray) -> np.ndarray:
    """Binary tasks: the probability of class 1 ('defect')."""
    return softmax(np.asarray(logits, dtype=np.float64))[:, 1]


def binary_decisions(logits: np.ndarray, threshold: float | None) -> np.ndarray:
    """1 = flagged as defect: score >= the calibrated threshold (argmax when there is none)."""
    logits = np.asarray(logits)
    if threshold is None:
        return (logits.argmax(axis=1) == 1).astype(np.int64)
    return (defect_scores(logits) >= threshold).astype(np.int64)
