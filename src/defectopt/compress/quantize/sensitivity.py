"""Per-layer quantization sensitivity: quantize one layer group at a time (the rest FP32),
score it on val in the target runtime, rank by recall drop then logit error.

Groups are blocks (`blocks.3`, `stages.2`, `layer1`) plus the top-level layers (`patch_embed`,
`head`); see common.layer_groups. The ranking is stored in the `sensitivity` table (replacing an
earlier analysis of the same model, method and backend) and drives `--keep-fp N`.
Deterministic: fixed calibration images, fixed group order, ties broken by forward order, and
the error rounded to 6 digits so thread-order float noise cannot swap two layers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete

from defectopt.bench.runners.base import Runner
from defectopt.compress.quantize import static
from defectopt.compress.quantize.common import (
    Parent,
    compare_logits,
    layer_groups,
    matched_recalls,
    score_runner,
)
from defectopt.models import torch_quantized as torch_formats
from defectopt.store.db import Store
from defectopt.store.schema import Sensitivity


class _ModuleRunner(Runner):
    """An in-memory torch module behind the Runner interface (for trial quantizations)."""

    backend = "torch"

    def __init__(self, artifact, module, precision: str = "int8"):
        super().__init__(artifact)
        self.module = module.eval()
        self.precision = precision

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()


def analyse(store: Store, parent: Parent, *, method: str, backend: str, calib: list[np.ndarray],
            progress=None, overflow_fix: str = "auto") -> list[dict[str, Any]]:
    """Ranked rows {rank, layer, recall_drop, logit_error, margin_corr, val_recall}; also stored."""
    base = parent.val()
    groups = layer_groups(parent.model)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trial = _trial_factory(parent, method, backend, calib, tmp, overflow_fix)
        for i, group in enumerate(groups):
            if progress:
                progress(i, len(groups), group)
            runner = trial(group)
            if runner is None:  # nothing quantizable in this group
                continue
            try:
                scored = score_runner(runner, parent.dataset, parent.artifact.threshold)
            finally:
                runner.close()
            cmp = compare_logits(base["logits"], scored["logits"])
            ref, got, _ = matched_recalls(parent, base, scored)
            rows.append({"layer": group, "order": i, "recall_drop": round(ref - got, 9),
                         "logit_error": round(cmp["logit_rel_err"], 6), "margin_corr": cmp["margin_corr"],
                         "val_recall": got})
    rows.sort(key=lambda r: (-r["recall_drop"], -r["logit_error"], r["order"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    with store.session() as s:
        s.execute(delete(Sensitivity).where(Sensitivity.model_id == parent.id, Sensitivity.method == method,
                                            Sensitivity.backend == backend))
        for r in rows:
            s.add(Sensitivity(model_id=parent.id, method=method, backend=backend, layer=r["layer"], rank=r["rank"],
                              recall_drop=r["recall_drop"], logit_error=r["logit_error"]))
    return rows


def _trial_factory(parent: Parent, method: str, backend: str, calib: list[np.ndarray], tmp: Path, overflow_fix: str):
    """A function group -> runner of the model with only that group quantized (None: nothing to do)."""
    if method == "dynamic":
        def trial(group: str):
            names = [n for n in torch_formats.linear_names(parent.model) if n == group or n.startswith(group + ".")]
            if not names:
                return None
            return _ModuleRunner(parent.artifact, torch_formats.quantize_dynamic(parent.model, names))

        return trial

    if backend == "openvino":
        import openvino as ov

        from defectopt.bench.runners.openvino_runner import OpenVINORunner

        fp_dir = tmp / "fp32"
        fp_dir.mkdir()
        fp_xml = static.save_openvino(static.ov_fp32_model(parent), fp_dir)
        core = ov.Core()

        def trial(group: str):
            out = tmp / group
            out.mkdir(exist_ok=True)
            q = static.quantize_openvino(parent, calib, only_group=group, fp_model=core.read_model(str(fp_xml)),
                                         overflow_fix=overflow_fix)
            static.save_openvino(q, out)
            return OpenVINORunner(parent.artifact, path=out / "model.xml", inference_precision="fp32")

        return trial

    from defectopt.bench.runners.onnx_runner import OnnxRuntimeRunner

    fp_path = static.export_fp32_onnx(parent, tmp)
    facts = static.onnx_graph_facts(fp_path)

    def trial(group: str):
        if not static.ort_targets(facts, parent.family, only_group=group):
            return None
        out = tmp / f"{group}.onnx"
        static.quantize_onnx(parent, calib, out, only_group=group, fp32_path=fp_path, overflow_fix=overflow_fix)
        return OnnxRuntimeRunner(parent.artifact, path=out)

    return trial
