"""A real wheel: built from the tree, installed non-editable into a fresh venv, it finds its
Alembic migrations and bundled configs (shipped as defectopt/migrations and defectopt/configs)
and creates a DB."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_list_matches_the_source_tree():
    """pyproject lists packages by hand (so migrations/ can ship inside the wheel); a new
    subpackage missing from that list would be left out of every wheel."""
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    src = ROOT / "src"
    on_disk = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")}
    assert declared == on_disk | {"defectopt.configs", "defectopt.migrations"}


@pytest.mark.slow
def test_wheel_installs_non_editable_and_creates_a_db(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", ignore=ignore)
    shutil.copytree(ROOT / "migrations", tree / "migrations", ignore=ignore)
    shutil.copytree(ROOT / "configs", tree / "configs", ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(tree)],
                   check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("defectopt-*.whl")
    # the dependencies come from this interpreter's site-packages; defectopt itself from the wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True, text=True)
    shutil.rmtree(tree)  # nothing may still point at the source tree
    probe = ("import defectopt.store.db as d, defectopt.paths as p, defectopt.pipeline as pl; "
             "print(d.__file__); print(d.migrations_dir()); print(p.shipped_folder('configs', 'default.toml')); "
             "print(len(pl.load_config('study-neu-det')[0]['students']))")
    where = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert all(w.startswith(str(venv)) for w in where[:3]), where
    assert int(where[3]) > 0
    cli = venv / "bin" / "defectopt"
    models = subprocess.run([str(cli), "models", "--format", "json"], capture_output=True, text=True, cwd=tmp_path)
    assert models.returncode == 0, models.stderr
    assert any(m["alias"] == "vit_b16" for m in json.loads(models.stdout))
    db = tmp_path / "fresh.sqlite"
    listed = subprocess.run([str(cli), "ls", "--db", str(db), "--format", "json"], capture_output=True, text=True, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    doctor = subprocess.run([str(cli), "doctor", "--db", str(db), "--format", "json"], capture_output=True, text=True, cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    state = json.loads(doctor.stdout)["db"]
    assert state["exists"] and state["revision"] == state["head"], state  # migrated to head by the wheel's own scripts
