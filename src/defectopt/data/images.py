"""Finding bad image files before anything is written (reading them as RGB: `runtime.preprocess`)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError


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
