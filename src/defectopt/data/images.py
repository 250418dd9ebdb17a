"""Reading images of any mode (grey, RGBA, palette, 16-bit) as 8-bit RGB, and finding bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectopt.errors import DefectoptError


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


def load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DefectoptError(f"corrupt or unreadable image {path}: {exc}; run with --skip-bad-images to skip such files") from None


def find_bad_images(root: Path, rel_paths: list[str]) -> list[str]:
    """Relative paths of files that are empty or that PIL cannot decode."""
    bad = []
    for rel in rel_paths:
        path = root / rel
        try:
            if path.stat().st_size == 0:
                bad.append(rel)
                continue
            # Decode fully: verify() only checks headers/CRCs and lets truncated JPEGs through,
            # which would then fail mid-training instead of here, before anything is written.
            with Image.open(path) as img:
                img.load()
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            bad.append(rel)
    return bad
