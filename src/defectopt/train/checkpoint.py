"""Run folders and resumable checkpoints.

A training run keeps its state under `<artifacts root>/.runs/<model id>/` (`defectopt gc` only
removes numeric artifact folders and stale staging folders, so it leaves run folders alone):

  last.pt          model, optimizer, scheduler, grad-scaler and RNG states, completed epochs,
                   the best epoch so far and the per-epoch history
  best-e<N>.pt     the weights of the best epoch so far (named by epoch so that a crash between
                   the two writes can never pair a checkpoint with the wrong best weights)
  features.pt      cached frozen-backbone features of a linear probe

Files hold only tensors and plain Python values, written with torch.save to a temp file and
renamed into place; they are read back with `torch.load(weights_only=True)`, which refuses
arbitrary pickled objects.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defectopt.errors import DefectoptError

RUNS_DIR = ".runs"
LAST = "last.pt"


def run_dir_for(store, model_id: int) -> Path:
    return Path(store.artifacts_root) / RUNS_DIR / str(model_id)


def best_name(epoch: int) -> str:
    return f"best-e{epoch}.pt"


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DefectoptError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0][:200]}") from None


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), None))


def prune_best_files(run_dir: Path, keep: str) -> None:
    for f in run_dir.glob("best-e*.pt"):
        if f.name != keep:
            f.unlink(missing_ok=True)


def discard_run(run_dir: Path | None) -> None:
    """Remove a run folder once its model is published (the checkpoint has no further use)."""
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
