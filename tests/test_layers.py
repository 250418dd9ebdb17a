"""The one-way layering of pyproject.toml's [tool.importlinter] contract holds (import-linter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())", "--no-cache"]


def test_import_layers_are_one_way():
    # lint-imports reads the contract from pyproject.toml in the working directory
    proc = subprocess.run(LINT, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "one-way layers KEPT" in proc.stdout and "the runtime imports no training stack KEPT" in proc.stdout
    assert "0 broken" in proc.stdout


def test_the_contract_catches_an_upward_import(tmp_path):
    """The check is live: a module of a lower layer importing a higher one breaks it."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = cfg["contracts"][0]["layers"]
    assert layers.index("defectopt.bench") > layers.index("defectopt.compress")  # bench is below compress
    probe = ROOT / "src" / "defectopt" / "bench" / "_layer_probe.py"
    probe.write_text("import defectopt.compress  # noqa: F401  (deliberately upward)\n")
    try:
        proc = subprocess.run(LINT, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        probe.unlink()
    assert proc.returncode != 0
    assert "defectopt.bench._layer_probe -> defectopt.compress" in proc.stdout
