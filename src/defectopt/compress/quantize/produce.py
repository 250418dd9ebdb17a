"""Create one quantized child row: begin, write the payload, publish, score it in its engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from defectopt.compress.quantize.common import (
    Parent,
    Result,
    begin_child,
    child_meta,
    evaluate_child,
    make_label,
)
from defectopt.models import artifacts
from defectopt.store.db import Store


def produce(store: Store, parent: Parent, *, method: str, backend: str, precision: str, fmt: str,
            params: dict[str, Any], write: Callable[[Path, dict[str, Any]], None], keep_fp: list[str] | None = None,
            device: str = "cpu", model_id: int | None = None, notes: list[str] | None = None,
            label_suffix: str = "") -> Result:
    """write(staging_dir, meta) writes the payload and may add meta fields. model_id: a row
    begun earlier (QAT trains under its own row before the payload exists)."""
    label = make_label(precision, method, backend, keep_fp) + label_suffix
    if model_id is None:
        model_id = begin_child(store, parent, method=method,
                               params={**params, "backend": backend, "precision": precision, "label": label,
                                       "keep_fp": keep_fp or []})
    meta = child_meta(parent, precision=precision, quantize={"method": method, "backend": backend, **params,
                                                              "keep_fp": keep_fp or []})
    with artifacts.publish(store, model_id, format=fmt, meta=meta, threshold=parent.artifact.threshold,
                           param_count=artifacts.get_row(store, parent.id).param_count) as staging:
        write(staging, meta)  # meta is read by publish after this block: the writer may extend it
    fid = evaluate_child(store, parent, model_id, device=device)
    return Result(model_id=model_id, method=method, backend=backend, label=label, fidelity=fid, notes=list(notes or []))
