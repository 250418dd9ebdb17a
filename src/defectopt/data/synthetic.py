"""Built-in synthetic defect dataset: textured metal-like surfaces with four defect types.

Writes an MVTec-style layout (`surface/train/good`, `surface/test/{good,scratch,spot,crack,stain}`)
so it goes through the same loader as real data. Defects vary in size and contrast, and a share
of them is faint on purpose, so a small model is good but not perfect. Seeded: the same
(N, seed, size) always produces the same bytes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

DEFECT_TYPES = ("scratch", "spot", "crack", "stain")
# Bump when the images change: generated folders are cached by (version, N).
GENERATOR_VERSION = 2
DEFECT_FRACTION = 0.4  # 40 % defects, 10 % per type: imbalanced like real inspection data


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    # brushed-metal look: low-frequency shading + directional streaks + fine grain
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.45 + 0.1 * rng.uniform(-1, 1)
    shade = 0.08 * np.sin(2 * np.pi * (rng.uniform(0.3, 1.2) * xx + rng.uniform(0, 1))) * np.cos(2 * np.pi * rng.uniform(0.2, 0.8) * yy)
    streak_rows = rng.normal(0, 0.04, size=(size, 1))
    streaks = np.repeat(streak_rows, size, axis=1)
    if rng.random() < 0.5:
        streaks = streaks.T
    grain = rng.normal(0, 0.035, size=(size, size))
    return base + shade + streaks + grain


def _draw_line(img, x0, y0, x1, y1, value, width):
    n = int(max(abs(x1 - x0), abs(y1 - y0)) * 2) + 1
    size = img.shape[0]
    for t in np.linspace(0, 1, n):
        x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
        xs, ys = int(round(x)), int(round(y))
        r = max(0, width // 2)
        img[max(0, ys - r) : min(size, ys + r + 1), max(0, xs - r) : min(size, xs + r + 1)] += value


def _contrast(rng: np.random.Generator, lo: float, hi: float) -> float:
    # ~20 % of defects are faint: the "hard" tail that keeps recall below 100 %
    c = rng.uniform(lo * 0.35, lo) if rng.random() < 0.2 else rng.uniform(lo, hi)
    return c * (1 if rng.random() < 0.3 else -1)


def _add_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> None:
    size = img.shape[0]
    if kind == "scratch":
        x0, y0 = rng.uniform(0.1, 0.9, 2) * size
        ang, length = rng.uniform(0, np.pi), rng.uniform(0.15, 0.5) * size
        _draw_line(img, x0, y0, x0 + np.cos(ang) * length, y0 + np.sin(ang) * length, _contrast(rng, 0.2, 0.45), int(rng.integers(2, 4)))
    elif kind == "spot":
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
        r = rng.uniform(0.03, 0.08) * size
        yy, xx = np.mgrid[0:size, 0:size]
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        img += _contrast(rng, 0.2, 0.45) * np.clip(1.5 - d / r, 0, 1)
    elif kind == "crack":
        x, y = rng.uniform(0.2, 0.8, 2) * size
        ang = rng.uniform(0, 2 * np.pi)
        value = -abs(_contrast(rng, 0.2, 0.4))
        for _ in range(int(rng.integers(6, 14))):
            ang += rng.normal(0, 0.6)
            step = rng.uniform(0.02, 0.06) * size
            nx, ny = np.clip(x + np.cos(ang) * step, 0, size - 1), np.clip(y + np.sin(ang) * step, 0, size - 1)
            _draw_line(img, x, y, nx, ny, value, 2)
            x, y = nx, ny
    elif kind == "stain":
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        rx, ry = rng.uniform(0.08, 0.22, 2) * size
        yy, xx = np.mgrid[0:size, 0:size]
        blob = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))
        img += _contrast(rng, 0.15, 0.3) * blob
    else:
        raise ValueError(kind)


def generate(out: Path, n: int = 400, seed: int = 0, size: int = 128) -> Path:
    """Write the dataset under `out` (atomically: a temp folder renamed into place)."""
    out = Path(out)
    if (out / "surface").is_dir():
        return out
    rng = np.random.default_rng(seed)
    # The temp folder lives inside `out` and only `surface/` is renamed into place, so `out`
    # may be an existing folder holding other files (e.g. `data synth --out ~/data`).
    tmp = out / f".tmp-{uuid.uuid4().hex[:6]}"
    n_defect = int(round(n * DEFECT_FRACTION))
    n_good = n - n_defect
    plan = ["good"] * n_good + [DEFECT_TYPES[i % len(DEFECT_TYPES)] for i in range(n_defect)]
    try:
        counters: dict[str, int] = {}
        for i, kind in enumerate(plan):
            img = _texture(rng, size)
            if kind != "good":
                _add_defect(img, kind, rng)
            arr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
            # good images split between train/good and test/good like MVTec; defects in test/<type>
            folder = ("train/good" if i % 4 else "test/good") if kind == "good" else f"test/{kind}"
            d = tmp / "surface" / folder
            d.mkdir(parents=True, exist_ok=True)
            counters[folder] = counters.get(folder, 0) + 1
            Image.fromarray(arr).save(d / f"{counters[folder]:04d}.png")
        try:
            os.replace(tmp / "surface", out / "surface")
        except OSError:  # another process generated it first
            if not (out / "surface").is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
