"""`export_bundle`: one ready model -> a bundle folder, written atomically.

The bundle holds the model in one deployment format and `bundle.json`: the classes, the decision
rule and its val-calibrated threshold with the recall target it was chosen for, the exact
preprocessing (`runtime.preprocess`'s parameters), the lineage, the model's measured rows with
the host they were measured on, the defectopt version and the sha256 of every file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from defectopt.deploy.options import BUNDLE_FORMATS, ExportOptions
from defectopt.errors import DefectoptError
from defectopt.metrics import N
from defectopt.models.artifacts import Artifact, data_config, load_artifact
from defectopt.models.formats import (
    FORMAT_ONNX,
    FORMAT_OPENVINO,
    FORMAT_TFLITE,
    ONNX_FILE,
    OPENVINO_XML,
    TFLITE_FILE,
    TORCH_FAMILY,
)
from defectopt.runtime.bundle import BUNDLE_FILE, BUNDLE_VERSION, RUNTIMES, sha256_file
from defectopt.runtime.preprocess import Preprocess
from defectopt.store.db import Store
from defectopt.store.schema import Measurement, Model

# bundle format -> its model file (the runtime that runs it: runtime.bundle.RUNTIMES)
MODEL_FILE = {"openvino": OPENVINO_XML, "onnx": ONNX_FILE, "tflite": TFLITE_FILE}
SHIPPED_METRICS = (N.recall, N.recall_ci_low, N.recall_ci_high, "precision", N.f1, N.fnr, N.auroc, N.macro_recall,
                   N.min_class_recall, N.latency_ms, N.throughput_ips, N.size_mb, N.peak_rss_mb)


def _validate(opts: ExportOptions) -> None:
    if not str(opts.model).strip():
        raise DefectoptError("export needs --id ID|ALIAS (the model to ship)")
    if not str(opts.out).strip():
        raise DefectoptError("export needs --out DIR (the bundle folder to create)")
    if opts.format is not None and opts.format not in BUNDLE_FORMATS:
        raise DefectoptError(f"--format takes one of {', '.join(BUNDLE_FORMATS)}, got '{opts.format}'")
    if opts.format == "tflite":
        from defectopt.models.export import TFLITE_EXTRA, litert_available

        if not litert_available():
            raise DefectoptError(f"--format tflite needs the LiteRT converter: {TFLITE_EXTRA}")
    out = Path(opts.out)
    if out.exists() and not opts.force:
        raise DefectoptError(f"{out} already exists; choose another --out or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise DefectoptError(f"{out} exists and is not a folder")


def _rows(store: Store, model_id: int) -> list[Measurement]:
    with store.session() as s:
        rows = s.scalars(select(Measurement).where(Measurement.model_id == model_id).order_by(Measurement.id)).all()
        s.expunge_all()
        return list(rows)


def choose_format(art: Artifact, rows: list[Measurement]) -> str:
    """The format of the runtime the model was measured fastest in at batch 1; else its own."""
    timed = [r for r in rows if r.metric == N.latency_ms and r.batch_size == 1 and r.device == "cpu"
             and r.backend in RUNTIMES.values() and r.value is not None]
    if timed:
        best = min(timed, key=lambda r: r.value)
        return next(f for f, b in RUNTIMES.items() if b == best.backend)
    if art.format == FORMAT_ONNX:
        return "onnx"
    return "openvino"


def _model_files(art: Artifact, fmt: str) -> tuple[Path, list[Path]]:
    """(model file, every file it needs) in the requested format."""
    native = {FORMAT_OPENVINO: "openvino", FORMAT_ONNX: "onnx", FORMAT_TFLITE: "tflite"}.get(art.format)
    if native == fmt:
        folder = art.dir
    elif art.format in TORCH_FAMILY:
        from defectopt.bench.runners.derived import ensure_export

        folder = ensure_export(art, fmt)  # the same FP32 export bench measured, cached beside the artifact
    else:
        hint = {"onnx": "quantized with --backend onnxruntime, or its FP32 parent", "openvino": "quantized with "
                "--backend openvino, or its FP32 parent", "tflite": "in FP32 (its torch parent)"}[fmt]
        raise DefectoptError(f"model {art.id} is a '{art.format}' artifact, which has no {fmt} form; export a model {hint}")
    name = art.meta.get(f"{fmt}_file", MODEL_FILE[fmt]) if native == fmt else MODEL_FILE[fmt]
    model_file = folder / name
    if not model_file.is_file():
        raise DefectoptError(f"model {art.id}: {model_file} is missing")
    files = [model_file]
    if fmt == "openvino":
        files.append(model_file.with_suffix(".bin"))
    elif fmt == "onnx":
        files += [p for p in folder.iterdir() if p.suffix == ".data" or p.name.endswith(".onnx.data")]
    return model_file, files


def _lineage(store: Store, model_id: int) -> list[dict[str, Any]]:
    out = []
    with store.session() as s:
        row = s.get(Model, model_id)
        while row is not None:
            tech = row.technique
            out.append({"id": row.id, "alias": row.alias, "timm_name": row.timm_name, "img_size": row.img_size,
                        "technique": tech.name if tech else None, "params": (tech.params if tech else None) or {}})
            row = s.get(Model, row.parent_id) if row.parent_id else None
    return out


def _threshold(store: Store, art: Artifact, task: str, rows: list[Measurement]) -> dict[str, Any]:
    if task != "binary":
        return {"rule": "argmax: every class is a defect type; the predicted type is the most probable class",
                "threshold": None}
    with store.session() as s:
        threshold = s.get(Model, art.id).threshold
    if threshold is None:
        raise DefectoptError(f"model {art.id} has no val-calibrated threshold yet: run 'defectopt bench --ids {art.id}' "
                             "first (it chooses the threshold on val for --target-recall)")
    recall_rows = [r for r in rows if r.metric == N.recall and r.batch_size == 0 and (r.extra or {}).get("threshold") == threshold]
    extra = recall_rows[-1].extra if recall_rows else {}
    return {"rule": "flag as defect when P(defect) >= threshold (softmax of the logits, class 1)",
            "threshold": float(threshold), "target_recall": extra.get("target_recall"),
            "val_recall": extra.get("val_recall"), "chosen_on": "val split (never test)"}


def _measured(rows: list[Measurement]) -> list[dict[str, Any]]:
    shipped = []
    for r in rows:
        if r.metric not in SHIPPED_METRICS or r.value is None:
            continue
        host = r.host or {}
        shipped.append({"metric": r.metric, "value": r.value, "device": r.device, "backend": r.backend,
                        "precision": r.precision, "batch_size": r.batch_size, "threads": r.threads,
                        "host": {k: host[k] for k in ("cpu", "physical_cores", "logical_cores", "isa", "os", "gpu", "hash") if k in host},
                        "measured_at": r.created_at.isoformat() if r.created_at else None})
    return shipped


def export_bundle(store: Store, opts: ExportOptions) -> Path:
    """Write the bundle folder (temp folder + rename; --force swaps the old one out atomically)."""
    from defectopt import __version__
    from defectopt.data.catalog import get_dataset
    from defectopt.models.catalog import resolve_model_ref

    _validate(opts)
    art = load_artifact(store, resolve_model_ref(store, opts.model))
    if art.dataset_id is None:
        raise DefectoptError(f"model {art.id} records no dataset: its classes are unknown, so it cannot be shipped")
    dataset = get_dataset(store, art.dataset_id)
    rows = _rows(store, art.id)
    fmt = opts.format or choose_format(art, rows)
    decision = _threshold(store, art, dataset.task, rows)
    model_file, files = _model_files(art, fmt)
    prep = Preprocess.from_data_config(data_config(art))
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for f in files:
            shutil.copy2(f, staging / f.name)
        hashes = {f.name: sha256_file(staging / f.name) for f in files}
        bundle = {
            "bundle_version": BUNDLE_VERSION,
            "defectopt_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model_id": art.id,
            "alias": art.alias,
            "format": fmt,
            "runtime": RUNTIMES[fmt],
            "model_file": model_file.name,
            "precision": art.meta.get("precision", "fp32"),
            "inference_precision": art.meta.get("inference_precision", "fp32"),
            "task": dataset.task,
            "classes": list(art.meta.get("classes") or dataset.class_names),
            "defect_classes": (["defect"] if dataset.task == "binary" else list(dataset.class_names)),
            "dataset": {"name": dataset.name, "split_hash": dataset.split_hash},
            "decision": decision,
            "preprocess": prep.to_json(),
            "lineage": _lineage(store, art.id),
            "measurements": _measured(rows),
            "files": hashes,
        }
        (staging / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2, default=str) + "\n", encoding="utf-8")
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _swap_in(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
