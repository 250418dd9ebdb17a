"""The frozen split: seeded, stratified by (label, defect type), hashed, stored once per dataset."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict

from defectopt.data.records import Sample

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def make_split(samples: list[Sample], seed: int, fractions=DEFAULT_FRACTIONS) -> list[dict]:
    """Assign each sample to train/val/test; every stratum of >= 3 images reaches all three."""
    strata: dict[tuple[int, str], list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.path):
        strata[(s.label, s.defect_type)].append(s)
    rng = random.Random(seed)
    manifest = []
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        n = len(group)
        n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
        n_test = max(1, round(n * fractions[2])) if n >= 3 else (1 if n == 2 else 0)
        n_train = n - n_val - n_test
        names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        manifest.extend(
            {"path": s.path, "label": s.label, "defect_type": s.defect_type, "split": sp} for s, sp in zip(group, names)
        )
    manifest.sort(key=lambda r: r["path"])
    return manifest


def manifest_hash(manifest: list[dict]) -> str:
    canon = json.dumps(sorted(manifest, key=lambda r: r["path"]), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def counts(manifest: list[dict]) -> dict[str, dict[str, int]]:
    """{defect_type: {split: count}}."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for r in manifest:
        out[r["defect_type"]][r["split"]] += 1
    return {k: dict(v) for k, v in sorted(out.items())}
