"""The results store: migration from empty equals the schema module, round trips, upgrades, refusals."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the main file so the file's hash reflects every committed row."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def _open(path):
    from defectopt.store.db import open_store

    return open_store(path)


# --- migration from empty == schema.py ------------------------------------------------------


def test_new_db_is_migrated_to_head_in_wal_mode(tmp_path):
    from defectopt.store.db import head_revision

    path = tmp_path / "sub" / "fresh.sqlite"  # parent folder is created too
    store = _open(path)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() >= 10_000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
        views = conn.execute(text("SELECT name FROM sqlite_master WHERE type='view'")).scalars().all()
    assert "tradeoff" in views
    store.dispose()


def test_migrated_tables_equal_the_schema_module(tmp_path):
    from defectopt.store.schema import Base

    store = _open(tmp_path / "fresh.sqlite")
    insp = inspect(store.engine)
    migrated = {t for t in insp.get_table_names() if t != "alembic_version"}
    assert migrated == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        cols = {c["name"]: c for c in insp.get_columns(name)}
        assert set(cols) == {c.name for c in table.columns}, name
        for c in table.columns:
            assert cols[c.name]["nullable"] == c.nullable, (name, c.name)
        assert {tuple(fk["constrained_columns"]) for fk in insp.get_foreign_keys(name)} == {
            (fk.parent.name,) for fk in table.foreign_keys
        }, name
    store.dispose()


def test_alembic_autogenerate_finds_no_difference(tmp_path):
    """The strongest form of 'migrations == schema.py': Alembic's own comparison is empty."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from defectopt.store.schema import Base

    store = _open(tmp_path / "fresh.sqlite")
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    store.dispose()


def test_reopening_at_head_writes_nothing(tmp_path):
    path = tmp_path / "s.sqlite"
    _open(path).dispose()
    _checkpoint(path)
    before = _sha(path)
    again = _open(path)
    again.dispose()
    assert _sha(path) == before


# --- round trip -----------------------------------------------------------------------------


def test_round_trip_of_every_core_table(tmp_path):
    from defectopt.store.db import table_counts
    from defectopt.store.schema import Dataset, Measurement, Model, ModelStatus, Technique, TrainEpoch

    path = tmp_path / "rt.sqlite"
    store = _open(path)
    manifest = [{"path": "a/1.png", "label": 1, "defect_type": "scratch", "split": "test"}]
    with store.session() as s:
        ds = Dataset(name="d", kind="folder", root="/x", spec="folder:/x", class_names=["good", "defect"], task="binary",
                     split_seed=3, split_hash="h", manifest=manifest, skipped_bad_images=2)
        tech = Technique(name="distill", params={"alpha": 0.5, "temperature": 4.0})
        s.add_all([ds, tech])
        s.flush()
        parent = Model(alias="vit_b16", timm_name="vit_base_patch16_224", technique_id=tech.id, dataset_id=ds.id,
                       img_size=224, num_classes=2, status=ModelStatus.READY, config={"lr": 1e-4})
        s.add(parent)
        s.flush()
        child = Model(alias="mobilevit_s", timm_name="mobilevit_s", parent_id=parent.id, technique_id=tech.id,
                      dataset_id=ds.id, img_size=224, num_classes=2, threshold=0.42)
        s.add(child)
        s.flush()
        s.add(Measurement(model_id=child.id, run_id="r1", device="cpu", backend="onnxruntime", precision="int8",
                          batch_size=1, threads=2, metric="latency_ms", value=3.25, extra={"p95": 4.0},
                          host={"cpu": "x"}))
        s.add(TrainEpoch(model_id=child.id, epoch=0, train_loss=0.7, val_recall=0.9))
        child_id = child.id
    store.dispose()

    store = _open(path)
    with store.session() as s:
        child = s.get(Model, child_id)
        assert child.parent.alias == "vit_b16" and child.status == ModelStatus.RUNNING  # the default
        assert child.threshold == pytest.approx(0.42)
        assert child.technique.params == {"alpha": 0.5, "temperature": 4.0}
        assert child.dataset.manifest == manifest and child.dataset.skipped_bad_images == 2
        assert child.parent.config == {"lr": 1e-4}
        m = s.scalars(select(Measurement)).one()
        assert (m.metric, m.value, m.extra, m.host, m.precision) == ("latency_ms", 3.25, {"p95": 4.0}, {"cpu": "x"}, "int8")
        assert child.created_at is not None
    counts = table_counts(store)
    assert counts["models"] == 2 and counts["measurements"] == 1 and counts["train_epochs"] == 1
    store.dispose()


def test_session_rolls_back_on_error(store):
    from defectopt.store.db import table_counts
    from defectopt.store.schema import Technique

    before = table_counts(store)
    with pytest.raises(RuntimeError):
        with store.session() as s:
            s.add(Technique(name="finetune", params={}))
            s.flush()
            raise RuntimeError("boom")
    assert table_counts(store) == before


def test_model_ids_are_never_reused(store):
    from sqlalchemy import delete

    from defectopt.store.schema import Model

    with store.session() as s:
        s.add(Model(alias="a", timm_name="a", img_size=32, num_classes=2))
    with store.session() as s:
        first = s.scalars(select(Model.id)).one()
        s.execute(delete(Model))
    with store.session() as s:
        s.add(Model(alias="b", timm_name="b", img_size=32, num_classes=2))
    with store.session() as s:
        assert s.scalars(select(Model.id)).one() > first


# --- paths ----------------------------------------------------------------------------------


def test_db_path_resolution_order(tmp_path, monkeypatch):
    from defectopt import paths

    monkeypatch.delenv("DEFECTOPT_DB", raising=False)
    monkeypatch.delenv("DEFECTOPT_ARTIFACTS", raising=False)
    assert paths.resolve_db_path(None) == Path("db/defectopt.sqlite")
    monkeypatch.setenv("DEFECTOPT_DB", str(tmp_path / "env.sqlite"))
    assert paths.resolve_db_path(None) == tmp_path / "env.sqlite"
    assert paths.resolve_db_path(tmp_path / "cli.sqlite") == tmp_path / "cli.sqlite"
    assert paths.artifacts_root(Path("db/defectopt.sqlite")) == Path("artifacts")
    assert paths.artifacts_root(tmp_path / "x.sqlite") == tmp_path / "x-artifacts"
    monkeypatch.setenv("DEFECTOPT_ARTIFACTS", str(tmp_path / "arts"))
    assert paths.artifacts_root(tmp_path / "x.sqlite") == tmp_path / "arts"


# --- schema upgrades --------------------------------------------------------------------------


def test_fixture_db_at_0001_upgrades_to_head_with_rows_intact(tmp_path):
    import sys

    sys.path.insert(0, str(FIXTURES))
    try:
        from make_db_0001 import EXPECTED
    finally:
        sys.path.remove(str(FIXTURES))
    from defectopt.models.catalog import describe_model, list_models
    from defectopt.store.db import head_revision, table_counts

    path = tmp_path / "old.sqlite"
    shutil.copyfile(FIXTURES / "db_0001.sqlite3", path)
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0001"
        before = {t: con.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in EXPECTED}
    store = _open(path)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
        after = {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY id"))] for t in EXPECTED}
        assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
        view = conn.execute(text("SELECT * FROM tradeoff")).mappings().all()
    # the view's id column is 'model_id' in v1 and 'id' from v2 on
    tradeoff = [(r.get("id", r.get("model_id")), r["recall"]) for r in view if r["recall"] is not None]
    assert after == before  # every old row, every column, unchanged
    counts = table_counts(store)
    assert {t: counts[t] for t in EXPECTED} == EXPECTED
    assert counts["train_epochs"] == 0 and counts["sensitivity"] == 0  # new tables exist, empty
    assert tradeoff == [(2, pytest.approx(0.97))]
    # the ORM of today reads the old rows
    rows = list_models(store)
    assert [(r["id"], r["alias"], r["lineage"]) for r in rows] == [(1, "vit_b16", ""), (2, "mobilevit_s", "← 1 vit_b16")]
    assert describe_model(store, 2)["fields"]["technique params"] == {"alpha": 0.5, "temperature": 4.0}
    store.dispose()


def test_fixture_script_reproduces_the_0001_schema(tmp_path):
    """The committed fixture and migration 0001 agree (editing 0001 after release breaks this)."""
    import subprocess
    import sys

    out = tmp_path / "regen.sqlite3"
    subprocess.run([sys.executable, str(FIXTURES / "make_db_0001.py"), str(out)], check=True, capture_output=True)

    def schema(p):
        with sqlite3.connect(p) as con:
            return sorted(con.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall())

    assert schema(out) == schema(FIXTURES / "db_0001.sqlite3")


def test_db_newer_than_the_code_is_refused(tmp_path):
    from defectopt.errors import DefectoptError

    path = tmp_path / "future.sqlite"
    _open(path).dispose()
    with sqlite3.connect(path) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    _checkpoint(path)
    before = _sha(path)
    with pytest.raises(DefectoptError) as exc:
        _open(path)
    msg = str(exc.value)
    assert "9999_from_the_future" in msg and "newer" in msg and "\n" not in msg
    assert _sha(path) == before


# --- files that are not a usable DB -----------------------------------------------------------


NOT_SQLITE = "not a usable SQLite database|not an SQLite database|cannot open database"


@pytest.mark.parametrize("content,expect", [
    (b"id,alias\n1,vit_b16\n" * 10, NOT_SQLITE),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), NOT_SQLITE),
    (b"SQLite format 3\x00" + b"\xff" * 2000, NOT_SQLITE),  # right header, garbage body
], ids=["csv", "png", "sqlite-header-garbage-body"])
def test_file_that_is_not_a_usable_sqlite_db(tmp_path, content, expect):
    from defectopt.errors import DefectoptError

    path = tmp_path / "results.sqlite"
    path.write_bytes(content)
    with pytest.raises(DefectoptError, match=expect) as exc:
        _open(path)
    assert "\n" not in str(exc.value)
    assert path.read_bytes() == content  # untouched
    assert not (tmp_path / "results.sqlite-wal").exists() or (tmp_path / "results.sqlite-wal").stat().st_size == 0


def test_db_path_that_is_a_directory(tmp_path):
    from defectopt.errors import DefectoptError

    with pytest.raises(DefectoptError, match="is a directory"):
        _open(tmp_path)


def test_db_under_a_regular_file_is_refused(tmp_path):
    from defectopt.errors import DefectoptError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(DefectoptError, match="cannot create folder"):
        _open(tmp_path / "afile" / "db.sqlite")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_db_file(tmp_path):
    from defectopt.errors import DefectoptError

    path = tmp_path / "locked.sqlite"
    _open(path).dispose()
    path.chmod(0)
    try:
        with pytest.raises(DefectoptError, match="cannot read database|permission"):
            _open(path)
    finally:
        path.chmod(0o644)
