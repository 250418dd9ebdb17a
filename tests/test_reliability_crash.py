"""SIGKILL at arbitrary points never corrupts the DB, never leaves a 'ready' model without its
complete artifact, and never lets a later command pick up a half-written one; the stale row
shows in `ls` and `gc` cleans it (or the training command resumes it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from conftest import make_ready_model
from fixtures.crash import assert_cleaned_by_gc, assert_consistent

# A child that publishes an artifact and pauses at a chosen phase (announced through a file) so
# the parent can kill it exactly there; 'random' phases are killed after a delay instead.
PUBLISHER = r"""
import os, sys, time
from pathlib import Path
from defectopt.models import artifacts
from defectopt.store.db import open_store

db, phase, flag = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def pause(here):
    if phase == here:
        flag.write_text(str(os.getpid()))
        time.sleep(600)

real_replace, real_fsync_dir = os.replace, artifacts._fsync_dir
def replace(src, dst):
    if Path(dst).name.isdigit():
        pause("before_rename")      # hashed, meta written, not yet renamed into artifacts/<id>
    return real_replace(src, dst)
def fsync_dir(folder):
    real_fsync_dir(folder)
    pause("after_rename")           # artifacts/<id> complete on disk, row still 'running'
artifacts.os.replace = replace
artifacts._fsync_dir = fsync_dir

store = open_store(db)
mid = artifacts.begin_model(store, alias="test_resnet", timm_name="test_resnet", technique="finetune",
                            parent_id=None, dataset_id=None, img_size=32, num_classes=2)
pause("begun")
if phase == "random":
    flag.write_text(str(os.getpid()))
with artifacts.publish(store, mid, format="torch", meta={"classes": ["good", "defect"]}) as staging:
    with open(staging / "model.safetensors", "wb") as fh:
        for i in range(400):        # a big payload written slowly: 400 x 64 KiB
            fh.write(os.urandom(1 << 16))
            fh.flush()
            if i == 100:
                pause("staging")
            time.sleep(0.002)
pause("published")
"""

# A child that holds a write transaction with many rows, then is killed before COMMIT.
TRANSACTION = r"""
import os, sys, time
from pathlib import Path
from defectopt.store.db import open_store
from defectopt.store.schema import Measurement

db, model_id, flag = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
store = open_store(db)
with store.session() as s:
    for i in range(500):
        s.add(Measurement(model_id=model_id, run_id="doomed", device="cpu", backend="torch", batch_size=1,
                          threads=1, metric="latency_ms", value=float(i)))
    s.flush()                       # rows are in the WAL, uncommitted
    flag.write_text(str(os.getpid()))
    time.sleep(600)
"""


def _spawn(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(flag: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("child never reached the kill point")
        time.sleep(0.01)


def _kill(proc: subprocess.Popen, *, may_have_finished: bool = False) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # A child killed after a random delay can finish between poll() and kill() (the signal then
    # reaches a zombie): a clean exit is a valid outcome there, never at a pause point.
    allowed = (-signal.SIGKILL, 0) if may_have_finished else (-signal.SIGKILL,)
    assert proc.returncode in allowed
    proc.stdout.close()
    proc.stderr.close()


# Pause points inside publish() (the dangerous windows), then kills after a delay from the start
# of publishing: together they cover before, during and after every step of the artifact's life.
PHASES = ["begun", "staging", "before_rename", "after_rename"]
DELAYS = [0.1, 0.7]


def test_sigkill_while_publishing(tmp_path, data_cache, monkeypatch):
    """All kill points run at once, one DB each (the children are mostly waiting)."""
    from defectopt.models.catalog import resolve_model_ref
    from defectopt.store.db import open_store

    monkeypatch.delenv("DEFECTOPT_ARTIFACTS", raising=False)
    cases = [(p, None) for p in PHASES] + [("random", d) for d in DELAYS]
    runs = []
    for phase, delay in cases:
        folder = tmp_path / f"{phase}-{delay}"
        folder.mkdir()
        store = open_store(folder / "db.sqlite")
        keep = make_ready_model(store, "test_resnet", None)
        flag = folder / "flag"
        runs.append((phase, delay, store, keep, flag, _spawn(PUBLISHER, store.path, phase, flag)))
    for phase, delay, store, keep, flag, proc in runs:
        _wait_for(flag, proc)
        if delay is None:
            _kill(proc)
    for phase, delay, store, keep, flag, proc in runs:
        if delay is not None:
            time.sleep(delay)
            if proc.poll() is None:
                _kill(proc, may_have_finished=True)
            else:
                proc.communicate()
    for phase, delay, store, keep, flag, proc in runs:
        by_status = assert_consistent(store)
        if delay is None:
            assert by_status == {"ready": [keep], "running": [keep + 1]}, phase
            if phase in ("staging", "before_rename"):  # debris that gc has to remove
                assert [p for p in store.artifacts_root.iterdir() if p.name.startswith(".staging-")], phase
            if phase == "after_rename":  # a complete folder whose row never turned ready
                assert (store.artifacts_root / str(keep + 1) / "meta.json").is_file()
        else:
            assert set(by_status) <= {"ready", "running"}, by_status
        # a later command asking for "the latest test_resnet" never gets a half-published one
        newest_ready = max(by_status["ready"])
        assert resolve_model_ref(store, "test_resnet") == newest_ready
        assert_cleaned_by_gc(store, by_status.get("running", []))
        store.dispose()


def test_sigkill_inside_an_open_write_transaction(store, tmp_path):
    from defectopt.store.db import table_counts
    from defectopt.store.schema import Measurement

    keep = make_ready_model(store, "test_resnet", None)
    before = table_counts(store)
    flag = tmp_path / "flag"
    proc = _spawn(TRANSACTION, store.path, keep, flag)
    _wait_for(flag, proc)
    _kill(proc)
    assert_consistent(store)
    assert table_counts(store) == before  # the uncommitted rows are gone
    # and the write lock died with the process: the next writer does not wait or fail
    t0 = time.monotonic()
    with store.session() as s:
        s.add(Measurement(model_id=keep, run_id="after", device="cpu", backend="torch", batch_size=1, threads=1,
                          metric="latency_ms", value=1.0))
    assert time.monotonic() - t0 < 5
