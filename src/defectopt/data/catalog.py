"""Resolving a dataset spec to a registered dataset with its frozen split (one DB row).

The first use of a dataset scans its layout, checks every image, makes the seeded stratified
split and stores it with its hash; every later command reads the same manifest, so all models
are scored on exactly the same test images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from defectopt.data import synthetic
from defectopt.data.images import find_bad_images
from defectopt.data.layouts import SCANNERS
from defectopt.data.split import make_split, manifest_hash
from defectopt.data.spec import DatasetSpec, parse_spec
from defectopt.errors import DefectoptError
from defectopt.store.db import Store
from defectopt.store.schema import Dataset


@dataclass
class DatasetInfo:
    id: int
    name: str
    kind: str
    root: Path
    class_names: list[str]
    task: str
    split_seed: int
    split_hash: str
    manifest: list[dict]
    skipped_bad_images: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> list[dict]:
        return [r for r in self.manifest if r["split"] == name]


def _info(row: Dataset) -> DatasetInfo:
    return DatasetInfo(
        row.id, row.name, row.kind, Path(row.root), list(row.class_names), row.task, row.split_seed,
        row.split_hash, list(row.manifest), row.skipped_bad_images,
    )


def _scan(spec: DatasetSpec, store: Store):
    if spec.kind == "synthetic":
        out = store.generated_data_root / f"synthetic-v{synthetic.GENERATOR_VERSION}-{spec.n}"
        synthetic.generate(out, n=spec.n, seed=0)
        scanned = SCANNERS["mvtec"](out / "surface")
        scanned.kind = "synthetic"
        scanned.name = f"synthetic-{spec.n}"
        return scanned
    return SCANNERS[spec.kind](spec.path.resolve())


def resolve_dataset(store: Store, spec_text: str, *, seed: int = 0, skip_bad_images: bool = False) -> DatasetInfo:
    spec = parse_spec(spec_text)
    scanned = _scan(spec, store)
    root = str(scanned.root)
    with store.session() as s:
        row = s.scalars(
            select(Dataset).where(Dataset.kind == scanned.kind, Dataset.root == root, Dataset.split_seed == seed)
        ).first()
        if row is not None:
            info = _info(row)
    if row is not None:
        present = {smp.path for smp in scanned.samples}
        missing = [r["path"] for r in info.manifest if r["path"] not in present]
        if missing:
            raise DefectoptError(
                f"dataset {info.name} at {root} changed since its split was frozen: {len(missing)} files missing "
                f"(e.g. {missing[0]}); restore them or use another --split-seed"
            )
        return info

    bad = find_bad_images(scanned.root, [smp.path for smp in scanned.samples])
    if bad and not skip_bad_images:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise DefectoptError(f"{len(bad)} corrupt or empty image(s) in {root}: {shown}; pass --skip-bad-images to skip them")
    bad_set = set(bad)
    samples = [smp for smp in scanned.samples if smp.path not in bad_set]
    if not samples:
        raise DefectoptError(f"dataset {root} has no readable images")
    labels = {smp.label for smp in samples}
    if len(labels) < 2:
        raise DefectoptError(
            f"dataset {root} has images of one class only ({scanned.class_names[labels.pop()]}); a classifier needs at least two"
        )
    manifest = make_split(samples, seed)
    name = _dataset_name(scanned.kind, scanned.root) if scanned.kind != "synthetic" else scanned.name
    name += f"-s{seed}" if seed else ""
    with store.session() as s:
        if s.scalars(select(Dataset).where(Dataset.name == name)).first() is not None:
            name = f"{name}-{hashlib.sha256(root.encode()).hexdigest()[:6]}"
        row = Dataset(
            name=name, kind=scanned.kind, root=root, spec=str(spec), class_names=scanned.class_names,
            task=scanned.task, split_seed=seed, split_hash=manifest_hash(manifest), manifest=manifest,
            skipped_bad_images=len(bad),
        )
        s.add(row)
        s.flush()
        return _info(row)


def _dataset_name(kind: str, root: Path) -> str:
    # "neu-det" rather than "neu-neu-det"; "mvtec-screw" for a category folder
    return root.name if root.name.lower().startswith(kind) else f"{kind}-{root.name}"


def get_dataset(store: Store, dataset_id: int) -> DatasetInfo:
    with store.session() as s:
        row = s.get(Dataset, dataset_id)
        if row is None:
            raise DefectoptError(f"no dataset with id {dataset_id}")
        return _info(row)
