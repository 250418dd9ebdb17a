"""Shared fixtures: an isolated store per test, the synthetic dataset, tiny ready models.

Tests never touch db/defectopt.sqlite: DEFECTOPT_DB points into tmp_path. The synthetic data
is generated once per session (it is deterministic) and shared through DEFECTOPT_DATA_CACHE.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Two cores: tests spawn subprocesses (DDP, memory probes, SIGKILL cases); one thread each
# avoids oversubscription, and tiny test models gain nothing from a second thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("generated-data")


@pytest.fixture
def db_path(tmp_path, monkeypatch, data_cache) -> Path:
    path = tmp_path / "db" / "test.sqlite"
    monkeypatch.setenv("DEFECTOPT_DB", str(path))
    monkeypatch.setenv("DEFECTOPT_DATA_CACHE", str(data_cache))
    monkeypatch.delenv("DEFECTOPT_ARTIFACTS", raising=False)
    # Imported weights live per user (~/.cache); a test imports into its own folder.
    monkeypatch.setenv("DEFECTOPT_WEIGHTS", str(tmp_path / "weights"))
    return path


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for tests that run real-size models: on a shared 2-core box, 2 OpenMP
    threads spin at every op's barrier while the other core is busy (eager forwards measured 10x
    slower); results are identical."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store(db_path):
    from defectopt.store.db import open_store

    s = open_store(db_path)
    yield s
    s.dispose()


@pytest.fixture
def synthetic(store):
    """The built-in synthetic dataset, small: 80 images (48 train, 16 val, 16 test)."""
    from defectopt.data.catalog import resolve_dataset

    return resolve_dataset(store, "synthetic:80")


def make_ready_model(store, alias: str, dataset=None, img_size: int = 32, num_classes: int | None = None,
                     seed: int = 0, parent_id: int | None = None, technique: str = "finetune") -> int:
    """Register a random-init timm model as a ready artifact (format 'torch')."""
    import torch

    from defectopt.data.loading import resolve_model_data_config
    from defectopt.models import artifacts
    from defectopt.models.factory import create, param_count
    from defectopt.models.registry import get

    n = num_classes or (dataset.num_classes if dataset else 2)
    torch.manual_seed(seed)
    model = create(alias, n, img_size).eval()
    cfg = resolve_model_data_config(model, img_size)
    mid = artifacts.begin_model(
        store, alias=alias, timm_name=get(alias).timm_name, technique=technique, technique_params={"test": True},
        parent_id=parent_id, dataset_id=dataset.id if dataset else None, img_size=img_size, num_classes=n,
    )
    meta = {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "interpolation": cfg["interpolation"],
            "classes": dataset.class_names if dataset else [str(i) for i in range(n)]}
    with artifacts.publish(store, mid, format=artifacts.FORMAT_TORCH, meta=meta, param_count=param_count(model)) as d:
        artifacts.save_torch_weights(model, d)
    return mid


@pytest.fixture
def ready_model(store, synthetic):
    return make_ready_model(store, "test_resnet", synthetic)


def needs_shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset {path} is not present")
    return path
