"""Opening the store: engine with WAL + busy timeout, automatic Alembic upgrade, sessions.

Every command calls `open_store()`; a new file is created and migrated to head, an old one is
upgraded, a DB from a newer defectopt is refused, and a file that is not SQLite is reported in
one line. Write transactions start with BEGIN IMMEDIATE so concurrent writers queue on the
busy timeout instead of failing with "database is locked" on lock upgrade.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from defectopt import paths
from defectopt.errors import DefectoptError

BUSY_TIMEOUT_MS = 60_000


def migrations_dir() -> Path:
    found = paths.shipped_folder("migrations", "env.py")
    if found is None:
        raise DefectoptError("cannot find the Alembic migrations (neither the repository's migrations/ nor the "
                             "wheel's defectopt/migrations); reinstall defectopt")
    return found


def _alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


def make_engine(db_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{db_path}", future=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event below emit BEGIN itself (pysqlite's own
        # transaction handling would issue a deferred BEGIN).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _check_is_sqlite(db_path: Path) -> None:
    if not db_path.exists():
        return
    if db_path.is_dir():
        raise DefectoptError(f"database path {db_path} is a directory, not an SQLite file")
    if not os.access(db_path, os.R_OK):
        raise DefectoptError(f"cannot read database {db_path}: permission denied")
    # Ask SQLite itself rather than open()ing the file: closing a plain file descriptor drops
    # every POSIX lock this process holds on it, which corrupts locking of open connections.
    try:
        conn = sqlite3.connect(f"file:{quote(str(db_path.resolve()))}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DefectoptError(f"{db_path} is not a usable SQLite database ({exc}); pass another --db") from None


def _current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@dataclass
class Store:
    path: Path
    engine: Engine

    def __post_init__(self):
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self._sessions() as s:
            with s.begin():
                yield s

    @property
    def artifacts_root(self) -> Path:
        return paths.artifacts_root(self.path)

    @property
    def generated_data_root(self) -> Path:
        return paths.generated_data_root(self.path)

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(db: str | Path | None = None, *, migrate: bool = True) -> Store:
    """Open (creating or upgrading) the results store; raise DefectoptError on a bad file."""
    db_path = paths.resolve_db_path(db)
    _check_is_sqlite(db_path)
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DefectoptError(f"cannot create folder for database {db_path}: {exc.strerror}") from None
    engine = make_engine(db_path)
    try:
        if migrate:
            _upgrade(engine, db_path)
    except (DatabaseError, OperationalError, sqlite3.DatabaseError) as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise DefectoptError(f"cannot open database {db_path}: {reason}") from None
    return Store(db_path, engine)


def _upgrade(engine: Engine, db_path: Path) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(f"sqlite:///{db_path}")
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    current = _current_revision(engine)
    if current == head:
        return
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        raise DefectoptError(
            f"database {db_path} is at schema revision {current}, newer than this defectopt "
            f"(head {head}); upgrade defectopt or use another --db"
        )
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def table_counts(store: Store) -> dict[str, int]:
    """Row count per table (used by tests and `defectopt show` to prove nothing changed)."""
    from defectopt.store.schema import Base

    with store.engine.connect() as conn:
        return {name: conn.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar_one() for name in Base.metadata.tables}
