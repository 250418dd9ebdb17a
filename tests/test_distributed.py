"""`torchrun --nproc-per-node 2 -m defectopt distill ...` with DDP over gloo on CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from conftest import make_ready_model


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_process_gloo_distill_writes_once_from_rank_zero(store, synthetic, db_path):
    from defectopt.models.artifacts import load_artifact, load_torch_model
    from defectopt.store.db import table_counts
    from defectopt.store.schema import Model, TrainEpoch

    teacher = make_ready_model(store, "test_vit", synthetic, img_size=32)
    before = table_counts(store)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEFECTOPT_DB": str(db_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "defectopt", "distill", "--teacher", str(teacher), "--student", "test_resnet", "--img-size", "40",
           "--alpha", "0.5", "--epochs", "2", "--batch-size", "8", "--no-pretrained", "--device", "cpu", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes" in proc.stdout
    # one log line per epoch: only rank 0 prints
    assert proc.stdout.count("epoch 2/2") == 1

    after = table_counts(store)
    assert after["models"] == before["models"] + 1
    assert after["techniques"] == before["techniques"] + 1
    assert after["datasets"] == before["datasets"]
    with store.session() as s:
        row = s.scalars(select(Model).order_by(Model.id.desc())).first()
        assert (row.status, row.parent_id, row.alias) == ("ready", teacher, "test_resnet")
        epochs = s.scalars(select(TrainEpoch.epoch).where(TrainEpoch.model_id == row.id)).all()
        model_id = row.id
    assert sorted(epochs) == [1, 2]
    art = load_artifact(store, model_id)
    assert art.meta["alpha"] == 0.5 and art.img_size == 40
    model = load_torch_model(art)  # a plain module state dict: no "module." prefixes from DDP
    assert all(not k.startswith("module.") for k in model.state_dict())
    assert not any((store.artifacts_root / ".runs").glob("*"))
