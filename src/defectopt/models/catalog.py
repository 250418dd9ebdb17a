"""Queries about models: the alias catalogue, lineage labels, `ls`/`show` data, model refs, gc."""

from __future__ import annotations

import shutil
from typing import Any

from sqlalchemy import delete, select

from defectopt.errors import DefectoptError
from defectopt.models.artifacts import stale_rows
from defectopt.models.registry import REGISTRY
from defectopt.store.db import Store
from defectopt.store.schema import Dataset, Measurement, Model, ModelStatus, Technique, TrainEpoch, utcnow


def describe_aliases(img_size: int = 224) -> list[dict[str, Any]]:
    """Params and GMACs per alias, computed on the meta device (no memory, no weights), and
    where weights for it are on this machine (imported names, timm's hub cache)."""
    import torch

    from defectopt.models.factory import count_macs, create, param_count
    from defectopt.models.weights import hub_cached, list_imported

    imported = list_imported()
    out = []
    for spec in REGISTRY.values():
        here = [f"imported '{w.name}'" for w in imported if w.timm_name == spec.timm_name]
        if spec.role != "test" and hub_cached(spec.timm_name):
            here.append("timm hub cache")
        with torch.device("meta"):
            model = create(spec.alias, 1000, img_size)
        out.append({
            "alias": spec.alias, "timm_name": spec.timm_name, "family": spec.family, "role": spec.role,
            "params": param_count(model), "gmacs": count_macs(model, img_size, device="meta") / 1e9,
            "weights": here,
        })
    return out


def technique_label(row: Model) -> str:
    """Short label of the step that produced a model, e.g. `mobilevit_s[KD α0.5]`, `prune0.3`."""
    tech = row.technique.name if row.technique else ""
    p = row.technique.params if row.technique else {}
    if tech == "distill":
        alpha = p.get("alpha", 0)
        return f"{row.alias}[KD α{alpha:g}]" if alpha else f"{row.alias}[no-KD]"
    if tech == "prune":
        return f"prune{p.get('ratio', '?')}" + ("-unstructured" if p.get("method") == "unstructured" else "")
    if tech.startswith("quantize"):
        return p.get("label") or tech.removeprefix("quantize-")
    return row.alias


def lineage(session, row: Model) -> str:
    chain = []
    seen = set()
    cur: Model | None = row
    while cur is not None and cur.id not in seen:
        seen.add(cur.id)
        chain.append(technique_label(cur))
        cur = session.get(Model, cur.parent_id) if cur.parent_id else None
    return " → ".join(reversed(chain))


def lineage_label(store: Store, model_id: int) -> str:
    """`efficientnet_lite2 → efficientnet_lite0[KD α0.5] → int8-qat-ov` for one model ID."""
    with store.session() as s:
        row = s.get(Model, model_id)
        return lineage(s, row) if row is not None else f"model {model_id}"


def list_models(store: Store) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = s.scalars(select(Model).order_by(Model.id)).all()
        out = []
        for r in rows:
            parent = s.get(Model, r.parent_id) if r.parent_id else None
            out.append({
                "id": r.id, "alias": r.alias, "status": r.status, "img_size": r.img_size, "parent_id": r.parent_id,
                "lineage": f"← {parent.id} {parent.alias}" if parent else "",
                "chain": lineage(s, r),
                "technique": r.technique.name if r.technique else None,
                "dataset": r.dataset.name if r.dataset else None,
                "format": r.artifact_format, "size_bytes": r.size_bytes,
            })
        return out


def describe_model(store: Store, model_id: int) -> dict[str, Any]:
    with store.session() as s:
        r = s.get(Model, model_id)
        if r is None:
            raise DefectoptError(f"no model with id {model_id} (see 'defectopt ls')")
        fields = {
            "alias": r.alias, "timm name": r.timm_name, "status": r.status, "lineage": lineage(s, r),
            "parent id": r.parent_id, "technique": r.technique.name if r.technique else None,
            "technique params": r.technique.params if r.technique else None,
            "dataset": r.dataset.name if r.dataset else None, "image size": r.img_size,
            "classes": r.num_classes, "threshold": r.threshold, "artifact": r.artifact_path,
            "format": r.artifact_format, "sha256": r.sha256, "size bytes": r.size_bytes,
            "parameters": r.param_count, "created": r.created_at, "finished": r.finished_at, "config": r.config,
        }
        epochs = [
            {k: getattr(e, k) for k in ("epoch", "train_loss", "val_recall", "val_precision", "val_f1", "lr", "seconds")}
            for e in s.scalars(select(TrainEpoch).where(TrainEpoch.model_id == model_id).order_by(TrainEpoch.epoch))
        ]
        measurements = [
            {k: getattr(m, k) for k in ("device", "backend", "precision", "batch_size", "threads", "metric", "value", "created_at")}
            for m in s.scalars(select(Measurement).where(Measurement.model_id == model_id).order_by(Measurement.id))
        ]
    return {"fields": fields, "epochs": epochs, "measurements": measurements}


def resolve_model_ref(store: Store, ref: str | int, *, dataset_id: int | None = None, technique: str | None = None) -> int:
    """A model ID, or an alias meaning the latest ready model of that alias (optionally of a
    technique and dataset). Raises one line when nothing matches."""
    text = str(ref).strip()
    if text.isdigit():
        with store.session() as s:
            row = s.get(Model, int(text))
            if row is None:
                raise DefectoptError(f"no model with id {text} (see 'defectopt ls')")
            if row.status != ModelStatus.READY:
                raise DefectoptError(f"model {text} is '{row.status}', not ready")
            return row.id
    from defectopt.models.registry import get

    alias = get(text).alias
    with store.session() as s:
        q = select(Model).where(Model.alias == alias, Model.status == ModelStatus.READY)
        if dataset_id is not None:
            q = q.where(Model.dataset_id == dataset_id)
        if technique is not None:
            q = q.join(Technique, Technique.id == Model.technique_id).where(Technique.name == technique)
        row = s.scalars(q.order_by(Model.id.desc())).first()
        if row is None:
            what = f"{technique} " if technique else ""
            where = ""
            if dataset_id is not None:
                ds = s.get(Dataset, dataset_id)
                where = f" on dataset {ds.name if ds else dataset_id}"
            raise DefectoptError(f"no ready {what}model of alias '{alias}'{where}; run finetune-teacher first or pass an ID")
        return row.id


def collect_garbage(store: Store, *, delete_failed: bool = False) -> dict[str, Any]:
    stale = stale_rows(store)
    with store.session() as s:
        for r in stale:
            row = s.get(Model, r.id)
            row.status = ModelStatus.FAILED
            row.finished_at = utcnow()
            row.config = {**(row.config or {}), "failure": "stale: owner process gone (collected by gc)"}
    root = store.artifacts_root
    removed = 0
    with store.session() as s:
        ready = {str(i) for i in s.scalars(select(Model.id).where(Model.status == ModelStatus.READY))}
        running = {str(i) for i in s.scalars(select(Model.id).where(Model.status == ModelStatus.RUNNING))}
    if root.is_dir():
        for d in root.iterdir():
            if not d.is_dir():
                continue
            if d.name.startswith(".staging-"):
                owner = d.name.split("-")[1]
                if owner in running:
                    continue
            elif d.name.isdigit():
                if d.name in ready or d.name in running:
                    continue
            else:
                continue  # caches and run folders of other modules manage themselves
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    deleted = 0
    if delete_failed:
        with store.session() as s:
            ids = list(s.scalars(select(Model.id).where(Model.status == ModelStatus.FAILED)))
            if ids:
                s.execute(delete(TrainEpoch).where(TrainEpoch.model_id.in_(ids)))
                s.execute(delete(Measurement).where(Measurement.model_id.in_(ids)))
                s.execute(delete(Model).where(Model.id.in_(ids)))
            deleted = len(ids)
        # a deleted row can no longer be resumed: drop its training checkpoints too
        for model_id in ids:
            shutil.rmtree(root / ".runs" / str(model_id), ignore_errors=True)
    return {"stale": [r.id for r in stale], "folders": removed, "deleted": deleted}
