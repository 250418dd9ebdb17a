"""Concurrent writers: several processes on one SQLite file never fail with 'database is locked'."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

WRITER = r"""
import sys, time
from pathlib import Path
from defectopt.store.db import open_store
from defectopt.store.schema import Measurement, Model

db, worker, n, gate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
(gate.parent / f"ready-{worker}").touch()
while not gate.exists():          # start all writers at the same moment
    time.sleep(0.005)
store = open_store(db)            # a fresh DB: whoever gets the write lock first migrates it
with store.session() as s:
    model = Model(alias="test_resnet", timm_name="test_resnet", img_size=32, num_classes=2)
    s.add(model)
    s.flush()
    model_id = model.id
for i in range(n):
    with store.session() as s:    # one transaction per row: 4 x n lock hand-overs
        s.add(Measurement(model_id=model_id, run_id=f"w{worker}", device="cpu", backend="torch",
                          precision="fp32", batch_size=1, threads=1, metric="latency_ms", value=float(i),
                          extra={"worker": worker, "i": i}, host={"pid": worker}))
print("done", worker)
"""


def _run_writers(tmp_path: Path, db: Path, n_workers: int, rows: int) -> list[subprocess.CompletedProcess]:
    gate = tmp_path / "gate" / "go"
    gate.parent.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(w), str(rows), str(gate)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(n_workers)]
    deadline = time.monotonic() + 60
    while len(list(gate.parent.glob("ready-*"))) < n_workers and time.monotonic() < deadline:
        time.sleep(0.02)
    gate.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def _check(results):
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
        assert "locked" not in r.stderr.lower() and "busy" not in r.stderr.lower(), r.stderr[-2000:]


def test_four_processes_write_200_measurements_to_a_fresh_db(tmp_path):
    """4 commands start at once on a DB that does not exist yet: one creates and migrates it,
    the others wait on the busy timeout; then 4 x 50 single-row transactions interleave."""
    db = tmp_path / "new" / "race.sqlite"
    results = _run_writers(tmp_path, db, 4, 50)
    _check(results)
    con = sqlite3.connect(db)
    rows = con.execute("SELECT run_id, COUNT(*), COUNT(DISTINCT value), COUNT(DISTINCT model_id) FROM measurements"
                       " GROUP BY run_id").fetchall()
    assert sorted(rows) == [(f"w{w}", 50, 50, 1) for w in range(4)]
    assert con.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 4
    assert con.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0] == 1
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
