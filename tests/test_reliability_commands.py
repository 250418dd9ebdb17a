"""SIGKILL against the real commands (distill, prune, quantize, bench) on tiny configs, and
pretrained weights that cannot be fetched: clean failure, nothing registered."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_ready_model
from fixtures.clihelp import assert_user_error, db_state, run_cli
from fixtures.crash import assert_cleaned_by_gc, assert_consistent


def _commands() -> set[str]:
    import typer.main

    from defectopt.cli import app

    return set(typer.main.get_command(app).commands)


def _need(command: str) -> None:
    if command not in _commands():
        pytest.skip(f"command '{command}' is not in the CLI yet")


def _query(db: Path, sql: str):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _start(args: list[str], db: Path) -> subprocess.Popen:
    env = {**os.environ, "DEFECTOPT_DB": str(db), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "defectopt", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _kill_when(proc: subprocess.Popen, db: Path, sql: str, delay: float, timeout: float = 60) -> bool:
    """Wait until `sql` returns a row (the command reached that point), sleep `delay`, SIGKILL.
    False when the command finished before it could be killed."""
    deadline = time.monotonic() + timeout
    while not _query(db, sql):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"command ended ({proc.returncode}) before the kill point: {err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("command never reached the kill point")
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        proc.communicate()
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()
    return True


def _kill_then_gc(store, args: list[str], kill_when_sql: str) -> None:
    """SIGKILL the command once `kill_when_sql` finds a row: the DB stays consistent, the killed
    run's row is left behind as running, and gc cleans it."""
    proc = _start(args, store.path)
    assert _kill_when(proc, store.path, kill_when_sql, delay=0.0)
    by_status = assert_consistent(store)
    assert by_status.get("running"), by_status  # the killed run's row is left behind ...
    assert_cleaned_by_gc(store, by_status["running"])  # ... and gc cleans it


@pytest.fixture
def teacher(store):
    """A ready teacher on the smallest synthetic set (24 train images): kills land mid-run, yet
    every command finishes in seconds when it is not killed."""
    from defectopt.data.catalog import resolve_dataset

    return make_ready_model(store, "test_resnet", resolve_dataset(store, "synthetic:40"), img_size=32)


def test_sigkill_distill_then_resume(store, teacher):
    """Killed after its first epoch row: consistent DB, stale row in ls; --resume finishes it."""
    _need("distill")
    args = ["distill", "--teacher", teacher, "--student", "test_resnet", "--no-pretrained", "--epochs", "2",
            "--img-size", "32", "--batch-size", "8", "--device", "cpu", "--quiet", "--no-augment"]
    proc = _start(args, store.path)
    killed = _kill_when(proc, store.path, "SELECT 1 FROM train_epochs", delay=0.0)
    by_status = assert_consistent(store)
    if not killed:
        pytest.skip("distill finished before the kill point on this machine")
    (stale,) = by_status["running"]
    listed = run_cli(["ls"])
    assert any(f"{stale}" in line and "running" in line for line in listed.stdout.splitlines())
    resumed = run_cli(["distill", "--resume", str(stale), "--device", "cpu", "--quiet"])
    assert resumed.code == 0, resumed.stderr + resumed.stdout
    by_status = assert_consistent(store)
    assert stale in by_status["ready"] and not by_status.get("running")
    epochs = _query(store.path, f"SELECT epoch FROM train_epochs WHERE model_id = {stale} ORDER BY epoch")
    assert len(epochs) == 2 and len(set(epochs)) == 2  # every epoch once: resumed, not restarted


def test_sigkill_distill_then_gc(store, teacher):
    _need("distill")
    args = ["distill", "--teacher", teacher, "--student", "test_resnet", "--no-pretrained", "--epochs", "2",
            "--img-size", "32", "--batch-size", "8", "--device", "cpu", "--quiet", "--no-augment"]
    # killed as soon as its row exists: before any epoch (the resume test kills after one)
    _kill_then_gc(store, args, f"SELECT 1 FROM models WHERE id > {teacher}")


def test_sigkill_prune(store, teacher):
    _need("prune")
    args = ["prune", "--id", teacher, "--ratio", "0.3", "--finetune-epochs", "3", "--batch-size", "8",
            "--device", "cpu", "--quiet"]
    # pruned, first recovery epoch recorded, two more to go
    _kill_then_gc(store, args, f"SELECT 1 FROM train_epochs WHERE model_id > {teacher}")


def test_sigkill_quantize(store, teacher):
    _need("quantize")
    args = ["quantize", "--id", teacher, "--method", "static", "--backend", "onnxruntime", "--quiet"]
    # killed right after its row exists: calibrating/exporting
    _kill_then_gc(store, args, f"SELECT 1 FROM models WHERE id > {teacher}")


def test_sigkill_bench_then_rerun(store, teacher):
    """Killed while exporting/measuring: no debris is picked up, a rerun measures cleanly."""
    _need("bench")
    args = ["bench", "--ids", teacher, "--backend", "onnxruntime", "--quick", "--no-memory", "--no-roofline",
            "--batch-sizes", "1", "--bootstrap", "50", "--quiet"]
    derived = store.artifacts_root / ".derived"
    proc = _start(args, store.path)
    deadline = time.monotonic() + 60
    while not derived.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # kill while the ONNX export is being written
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()
    assert_consistent(store)
    again = run_cli(args)
    assert again.code == 0, again.stderr + again.stdout
    rows = _query(store.path, f"SELECT COUNT(*) FROM measurements WHERE model_id = {teacher} AND backend = 'onnxruntime'")
    assert rows[0][0] > 0
    assert_consistent(store)


# --- pretrained weights unavailable ----------------------------------------------------------


def test_pretrained_offline_is_one_line_and_registers_nothing(store, synthetic, tmp_path, monkeypatch):
    """Hub offline with an empty cache, through timm's real loader: the message says so and
    names the way out, and nothing is registered."""
    _need("finetune-teacher")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    before = db_state(store.path)
    res = run_cli(["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--pretrained",
                   "--epochs", "1", "--img-size", "32", "--quiet"])
    assert_user_error(res, "pretrained", "offline", "--weights", "--no-pretrained")
    assert db_state(store.path) == before
    assert not store.artifacts_root.exists() or not any(store.artifacts_root.iterdir())


def test_interrupted_download_is_one_line_and_registers_nothing(store, synthetic, monkeypatch):
    """The hub connection drops mid-download (simulated in timm's loader)."""
    _need("finetune-teacher")
    import timm.models._builder as builder

    def broken(*args, **kwargs):
        raise OSError("Connection broken: IncompleteRead(1048576 bytes read, 4194304 more expected)")

    monkeypatch.setattr(builder, "load_pretrained", broken)
    before = db_state(store.path)
    res = run_cli(["finetune-teacher", "--model", "test_resnet", "--data", "synthetic:80", "--pretrained",
                   "--epochs", "1", "--img-size", "32", "--quiet"])
    assert_user_error(res, "IncompleteRead", "--weights", "--no-pretrained")
    assert db_state(store.path) == before
