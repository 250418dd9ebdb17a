"""Artifacts: immutable folders `artifacts/<id>/` holding `meta.json` plus a format's payload.

Life of a model row (see store.schema.ModelStatus):
  1. `begin_model()` inserts a `running` row (with the owner's pid) and returns its id.
  2. `publish()` yields a private staging folder; the caller writes the payload there. On
     success the folder is hashed, renamed atomically to `artifacts/<id>/`, and the row turns
     `ready` with sha256/size in one transaction. On any error or Ctrl-C the staging folder is
     removed and the row is marked `failed`. A SIGKILL leaves a `running` row and possibly a
     `.staging-*` folder, which `defectopt gc` removes; nothing ever loads a non-ready row.
  3. `load_artifact()` refuses non-ready rows, paths outside the artifacts root and any
     sha256 mismatch. Payloads are safetensors/ONNX/OpenVINO IR/JSON: never pickle.

Formats register a torch loader here (`register_torch_loader`) so `load_torch_model()` can
rebuild e.g. a pruned architecture from its stored widths; runtime runners live in bench.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from defectopt.errors import DefectoptError
from defectopt.models.formats import FORMAT_TORCH, META_FILE, WEIGHTS_FILE  # noqa: F401  (re-exported: the artifact API)
from defectopt.store.db import Store
from defectopt.store.schema import Model, ModelStatus, Technique, utcnow


@dataclass
class Artifact:
    """A verified, ready artifact and its metadata (the DB row's fields copied out)."""

    id: int
    dir: Path
    meta: dict[str, Any]
    alias: str
    timm_name: str
    format: str
    img_size: int
    num_classes: int
    threshold: float | None
    parent_id: int | None
    dataset_id: int | None
    sha256: str
    size_bytes: int
    technique: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        return safe_child(self.dir, name)


def safe_child(folder: Path, name: str) -> Path:
    """folder/name, refusing names from metadata that would escape the folder."""
    cand = (folder / name).resolve()
    root = folder.resolve()
    if cand == root or root not in cand.parents:
        raise DefectoptError(f"artifact metadata names a path outside its folder: {name!r}")
    return cand


def hash_dir(folder: Path) -> tuple[str, int]:
    """sha256 over (relative path, file sha256) of every file, and the total size in bytes."""
    outer = hashlib.sha256()
    total = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        total += path.stat().st_size
        outer.update(f"{path.relative_to(folder).as_posix()}\0{h.hexdigest()}\n".encode())
    return outer.hexdigest(), total


def begin_model(
    store: Store,
    *,
    alias: str,
    timm_name: str,
    technique: str,
    technique_params: dict[str, Any] | None = None,
    parent_id: int | None,
    dataset_id: int | None,
    img_size: int,
    num_classes: int,
    config: dict[str, Any] | None = None,
) -> int:
    with store.session() as s:
        tech = Technique(name=technique, params=technique_params or {})
        s.add(tech)
        s.flush()
        row = Model(
            alias=alias,
            timm_name=timm_name,
            parent_id=parent_id,
            technique_id=tech.id,
            dataset_id=dataset_id,
            img_size=img_size,
            num_classes=num_classes,
            status=ModelStatus.RUNNING,
            pid=os.getpid(),
            config=config or {},
        )
        s.add(row)
        s.flush()
        return row.id


def mark_failed(store: Store, model_id: int, reason: str = "") -> None:
    with store.session() as s:
        row = s.get(Model, model_id)
        if row is not None and row.status == ModelStatus.RUNNING:
            row.status = ModelStatus.FAILED
            row.finished_at = utcnow()
            row.config = {**(row.config or {}), "failure": reason[:300]}


@contextlib.contextmanager
def publish(
    store: Store,
    model_id: int,
    *,
    format: str,
    meta: dict[str, Any],
    threshold: float | None = None,
    param_count: int | None = None,
) -> Iterator[Path]:
    """Yield a staging folder; on success move it to artifacts/<id>/ and mark the row ready."""
    root = store.artifacts_root
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{model_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        with store.session() as s:
            row = s.get(Model, model_id)
            full_meta = {
                "id": model_id,
                "alias": row.alias,
                "timm_name": row.timm_name,
                "num_classes": row.num_classes,
                "img_size": row.img_size,
                "parent_id": row.parent_id,
                "technique": row.technique.name if row.technique else None,
                "threshold": threshold,
                "format": format,
                **meta,
            }
        _write_json_atomic(staging / META_FILE, full_meta)
        digest, size = hash_dir(staging)
        final = root / str(model_id)
        if final.exists():  # left by a crash between rename and commit of this same id
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(root)
        with store.session() as s:
            row = s.get(Model, model_id)
            row.artifact_path = str(model_id)
            row.artifact_format = format
            row.sha256 = digest
            row.size_bytes = size
            row.threshold = threshold
            row.param_count = param_count
            row.status = ModelStatus.READY
            row.finished_at = utcnow()
            row.pid = None
    except BaseException as exc:  # includes KeyboardInterrupt: never leave a half artifact
        shutil.rmtree(staging, ignore_errors=True)
        final = root / str(model_id)
        with contextlib.suppress(Exception):
            with store.session() as s:
                status = s.get(Model, model_id).status
            if status != ModelStatus.READY and final.exists():
                shutil.rmtree(final, ignore_errors=True)
        with contextlib.suppress(Exception):
            mark_failed(store, model_id, f"{type(exc).__name__}: {exc}")
        raise


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def get_row(store: Store, model_id: int) -> Model:
    with store.session() as s:
        row = s.get(Model, model_id)
        if row is None:
            raise DefectoptError(f"no model with id {model_id} (see 'defectopt ls')")
        s.expunge(row)
        return row


def load_artifact(store: Store, model_id: int, *, verify: bool = True) -> Artifact:
    with store.session() as s:
        row = s.get(Model, model_id)
        if row is None:
            raise DefectoptError(f"no model with id {model_id} (see 'defectopt ls')")
        if row.status != ModelStatus.READY:
            raise DefectoptError(f"model {model_id} is '{row.status}', not ready (see 'defectopt ls'; 'defectopt gc' cleans stale runs)")
        technique = row.technique.name if row.technique else None
        fields = dict(
            id=row.id, alias=row.alias, timm_name=row.timm_name, format=row.artifact_format,
            img_size=row.img_size, num_classes=row.num_classes, threshold=row.threshold,
            parent_id=row.parent_id, dataset_id=row.dataset_id, sha256=row.sha256,
            size_bytes=row.size_bytes, technique=technique, config=dict(row.config or {}),
        )
        rel = row.artifact_path
    root = store.artifacts_root
    folder = safe_child(root, rel or "")
    if not folder.is_dir():
        raise DefectoptError(f"artifact of model {model_id} is missing at {folder}")
    if verify:
        digest, _ = hash_dir(folder)
        if digest != fields["sha256"]:
            raise DefectoptError(
                f"artifact of model {model_id} at {folder} does not match its recorded sha256 "
                "(modified or corrupt); refusing to load it"
            )
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DefectoptError(f"artifact of model {model_id} has an unreadable {META_FILE}: {exc}") from None
    return Artifact(dir=folder, meta=meta, **fields)


# --- torch payloads -------------------------------------------------------------------------

TorchLoader = Callable[[Artifact], "Any"]
_TORCH_LOADERS: dict[str, TorchLoader] = {}


def register_torch_loader(fmt: str) -> Callable[[TorchLoader], TorchLoader]:
    def deco(fn: TorchLoader) -> TorchLoader:
        _TORCH_LOADERS[fmt] = fn
        return fn

    return deco


def save_torch_weights(model, folder: Path) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path = folder / WEIGHTS_FILE
    save_file(state, str(path))
    return path


def read_safetensors(path: Path) -> dict[str, Any]:
    """Tensors of a safetensors file; anything else (a pickle, a torch zip, garbage) is one line."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError, OSError, ...: the file is not what its name says
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DefectoptError(f"{path} is not a readable safetensors file ({reason}); refusing to load it") from None


@register_torch_loader(FORMAT_TORCH)
def _load_plain_torch(artifact: Artifact):
    from defectopt.models.factory import create

    path = artifact.file(WEIGHTS_FILE)
    model = create(artifact.alias, artifact.num_classes, artifact.img_size)
    try:
        model.load_state_dict(read_safetensors(path))
    except RuntimeError as exc:  # tensor names/shapes do not fit the architecture in meta
        raise DefectoptError(f"weights {path} do not fit {artifact.alias}: {str(exc).splitlines()[0][:160]}") from None
    return model.eval()


def load_torch_model(artifact: Artifact):
    """An nn.Module for a torch-family artifact (rebuilt from metadata, weights from safetensors)."""
    loader = _TORCH_LOADERS.get(artifact.format)
    if loader is None:
        raise DefectoptError(
            f"model {artifact.id} has format '{artifact.format}', which has no PyTorch module form"
        )
    return loader(artifact)


def data_config(artifact_or_meta) -> dict[str, Any]:
    """Normalization and input size stored with the artifact (from timm's data config)."""
    meta = artifact_or_meta.meta if isinstance(artifact_or_meta, Artifact) else artifact_or_meta
    return {
        "input_size": (3, meta["img_size"], meta["img_size"]),
        "mean": tuple(meta.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(meta.get("std", (0.229, 0.224, 0.225))),
        "interpolation": meta.get("interpolation", "bilinear"),
    }


def stale_rows(store: Store) -> list[Model]:
    """`running` rows whose owning process is gone (killed or crashed)."""
    import psutil

    with store.session() as s:
        rows = s.scalars(select(Model).where(Model.status == ModelStatus.RUNNING)).all()
        stale = [r for r in rows if r.pid is None or not psutil.pid_exists(r.pid)]
        for r in stale:
            s.expunge(r)
    return stale
