"""The deployment bundle: `bundle.json` (preprocessing, classes, threshold, provenance, sha256 of
every file) beside the model file(s). Written by `defectopt export`, read here without torch.

Loading verifies the hash of every listed file and refuses a bundle whose files were changed,
removed or added to, in one line. JSON only: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectopt.errors import DefectoptError
from defectopt.runtime.preprocess import Preprocess

BUNDLE_FILE = "bundle.json"
BUNDLE_VERSION = 1
# the runtime each bundle format needs, and the model file it starts from
# bundle format -> the runtime that runs it (bench's backend of the same name); defined once here
RUNTIMES = {"openvino": "openvino", "onnx": "onnxruntime", "tflite": "litert"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    folder: Path
    data: dict[str, Any]  # bundle.json as written
    preprocess: Preprocess

    @property
    def format(self) -> str:
        return self.data["format"]

    @property
    def model_file(self) -> Path:
        return self.folder / self.data["model_file"]

    @property
    def task(self) -> str:
        return self.data["task"]

    @property
    def classes(self) -> list[str]:
        return list(self.data["classes"])

    @property
    def threshold(self) -> float | None:
        return self.data["decision"].get("threshold")


def load_bundle(folder: str | Path) -> Bundle:
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise DefectoptError(f"{folder} is not a defectopt bundle (no {BUNDLE_FILE}); make one with 'defectopt export --id N --out DIR'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DefectoptError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("bundle_version") != BUNDLE_VERSION:
        raise DefectoptError(f"{path}: not a version-{BUNDLE_VERSION} defectopt bundle")
    for key in ("format", "model_file", "task", "classes", "decision", "preprocess", "files"):
        if key not in data:
            raise DefectoptError(f"{path}: missing '{key}'")
    if data["format"] not in RUNTIMES:
        raise DefectoptError(f"{path}: unknown format '{data['format']}' (known: {', '.join(RUNTIMES)})")
    verify_files(folder, data["files"])
    if data["model_file"] not in data["files"]:
        raise DefectoptError(f"{path}: the model file {data['model_file']} is not among the hashed files")
    return Bundle(folder, data, Preprocess.from_json(data["preprocess"]))


def verify_files(folder: Path, files: dict[str, str]) -> None:
    """Every listed file present with its sha256; no other file beside bundle.json."""
    for name, want in files.items():
        p = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not p.is_file():
            raise DefectoptError(f"bundle {folder} is incomplete: {name} is missing")
        if sha256_file(p) != want:
            raise DefectoptError(f"bundle {folder} was modified: the sha256 of {name} does not match bundle.json; "
                                 "re-export it rather than editing it")
    extra = sorted(p.name for p in folder.iterdir() if p.name != BUNDLE_FILE and p.name not in files)
    if extra:
        raise DefectoptError(f"bundle {folder} holds files bundle.json does not list: {', '.join(extra)}")
