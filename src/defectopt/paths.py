"""Where things live on disk: the DB file, artifacts, generated datasets.

Resolution order for the DB: explicit `--db PATH` > `DEFECTOPT_DB` > `db/defectopt.sqlite`
(relative to the current directory). Artifacts and generated data default to folders beside
the DB file, so one `--db` keeps a whole study together; `DEFECTOPT_ARTIFACTS` overrides.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = Path("db") / "defectopt.sqlite"


def resolve_db_path(db: str | os.PathLike | None = None) -> Path:
    if db:
        return Path(db)
    env = os.environ.get("DEFECTOPT_DB")
    return Path(env) if env else DEFAULT_DB


def artifacts_root(db_path: Path) -> Path:
    env = os.environ.get("DEFECTOPT_ARTIFACTS")
    if env:
        return Path(env)
    # db/defectopt.sqlite -> artifacts/ beside db/ (the documented default); any other DB
    # file gets "<stem>-artifacts" beside it so test DBs never share artifacts.
    db_path = Path(db_path)
    if db_path.parent.name == "db" and db_path.name == DEFAULT_DB.name:
        return db_path.parent.parent / "artifacts"
    return db_path.parent / f"{db_path.stem}-artifacts"


def generated_data_root(db_path: Path) -> Path:
    """Where `synthetic[:N]` datasets are generated (deterministic, so safe to cache)."""
    env = os.environ.get("DEFECTOPT_DATA_CACHE")
    if env:
        return Path(env)
    return artifacts_root(db_path).parent / "generated-data"


def weights_root() -> Path:
    """Imported checkpoints (`defectopt weights import`): per user, like timm's hub cache, so every
    DB and study on the machine can name them; `DEFECTOPT_WEIGHTS` overrides."""
    env = os.environ.get("DEFECTOPT_WEIGHTS")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "defectopt" / "weights"


def shipped_folder(name: str, marker: str) -> Path | None:
    """A data folder kept at the repository's top level (`migrations/`, `configs/`: the design
    card's layout) that a wheel ships inside the package (`defectopt/<name>`, by a package-dir
    mapping in pyproject.toml). A source checkout or editable install finds the top-level one, an
    installed wheel its own copy; `marker` is a file the folder must hold. None when neither exists."""
    for parent in Path(__file__).resolve().parents:
        cand = parent / name
        if (cand / marker).is_file():
            return cand
    return None
