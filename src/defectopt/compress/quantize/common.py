"""What every quantization method shares: the parent, calibration images, the new model row,
fidelity measured by the engine that runs the artifact, and layer groups.

Fidelity is always measured through `open_runner` + `predict_split` on the val split, so a
quantized model is scored by the same runtime that executes it (never by a torch emulation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from defectopt.errors import DefectoptError
from defectopt.models import artifacts
from defectopt.models.artifacts import Artifact
from defectopt.models.formats import TORCH_FAMILY
from defectopt.store.db import Store
from defectopt.store.schema import Model
from defectopt.metrics import N

# technique rows are named quantize-<method>
TECHNIQUE_PREFIX = "quantize-"


BACKEND_SHORT = {"openvino": "ov", "onnxruntime": "ort", "torch": "torch", "pt2e": "pt2e", "fx": "fx"}


@dataclass
class Parent:
    """The FP32 model being quantized: its artifact, torch module, dataset and FP32 val scores."""

    artifact: Artifact
    model: Any  # torch.nn.Module, eval mode, cpu
    dataset: Any  # DatasetInfo
    family: str
    _val: dict[str, Any] | None = None

    @property
    def id(self) -> int:
        return self.artifact.id

    @property
    def img_size(self) -> int:
        return self.artifact.img_size

    def val(self, device: str = "cpu") -> dict[str, Any]:
        """Val logits/labels/metrics of the parent in its own runtime (cached)."""
        if self._val is None:
            from defectopt.bench.runners import open_runner

            runner = open_runner(self.artifact, device=device)
            try:
                self._val = score_runner(runner, self.dataset, self.artifact.threshold)
            finally:
                runner.close()
        return self._val


@dataclass
class Result:
    """One quantize attempt: the new row and its fidelity versus the parent on val."""

    model_id: int
    method: str
    backend: str
    label: str
    fidelity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_parent(store: Store, model_id: int) -> Parent:
    from defectopt.data.catalog import get_dataset

    art = artifacts.load_artifact(store, model_id)
    if art.format not in TORCH_FAMILY:
        raise DefectoptError(
            f"model {model_id} has format '{art.format}'; quantize needs a torch-family FP32 model "
            f"(its parent {art.parent_id} perhaps)" if art.parent_id else
            f"model {model_id} has format '{art.format}'; quantize needs a torch-family FP32 model"
        )
    if art.dataset_id is None:
        raise DefectoptError(f"model {model_id} has no dataset; quantize calibrates and scores on its dataset's frozen split")
    from defectopt.models.registry import get

    model = artifacts.load_torch_model(art).eval().cpu()
    return Parent(artifact=art, model=model, dataset=get_dataset(store, art.dataset_id), family=get(art.alias).family)


def child_meta(parent: Parent, **extra: Any) -> dict[str, Any]:
    """meta.json fields of a quantized child: the parent's normalization and classes, plus extra."""
    keep = ("mean", "std", "interpolation", "classes", "crop_pct")
    meta = {k: parent.artifact.meta[k] for k in keep if k in parent.artifact.meta}
    meta["parent_format"] = parent.artifact.format
    meta.update(extra)
    return meta


def begin_child(store: Store, parent: Parent, *, method: str, params: dict[str, Any]) -> int:
    art = parent.artifact
    return artifacts.begin_model(
        store, alias=art.alias, timm_name=art.timm_name, technique=TECHNIQUE_PREFIX + method,
        technique_params={"method": method, **params}, parent_id=art.id, dataset_id=art.dataset_id,
        img_size=art.img_size, num_classes=art.num_classes, config={"quantize": {"method": method, **params}},
    )


def make_label(precision: str, method: str, backend: str, keep_fp: list[str] | None = None) -> str:
    label = f"{precision}-{method}-{BACKEND_SHORT.get(backend, backend)}" if method not in ("bf16", "fp16") else f"{precision}-{BACKEND_SHORT.get(backend, backend)}"
    if keep_fp:
        label += f"-fp{len(keep_fp)}"
    return label


# --- calibration images ---------------------------------------------------------------------


def calibration_records(dataset, n: int, seed: int = 0) -> list[dict]:
    """n train-split records in a seeded order (the whole split when n exceeds it)."""
    records = dataset.split("train")
    if not records:
        raise DefectoptError("the dataset's train split is empty: nothing to calibrate on")
    if n <= 0:
        raise DefectoptError("--calib-images must be a positive number")
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order[: min(n, len(records))]]


def calibration_batches(parent: Parent, n: int, seed: int = 0) -> list[np.ndarray]:
    """Normalized float32 NCHW batches of one image each (what the runtimes' calibrators want)."""
    from defectopt.data.loading import MultiViewDataset, eval_transform

    recs = calibration_records(parent.dataset, n, seed)
    ds = MultiViewDataset(parent.dataset.root, recs, [eval_transform(artifacts.data_config(parent.artifact))])
    return [ds[i][0].unsqueeze(0).numpy().astype(np.float32) for i in range(len(ds))]


# --- scoring --------------------------------------------------------------------------------


def score_runner(runner, dataset, threshold: float | None) -> dict[str, Any]:
    from defectopt.bench.evaluate import predict_split
    from defectopt.metrics.task import evaluate_logits

    logits, labels = predict_split(runner, dataset, "val")
    metrics = evaluate_logits(logits, labels, dataset.task, dataset.num_classes, threshold)
    return {"logits": np.asarray(logits, dtype=np.float64), "labels": labels, N.recall: float(metrics[N.recall]), "metrics": metrics}


def logit_margin(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per image: how decided the model is (what flips decisions)."""
    s = np.sort(np.asarray(logits, dtype=np.float64), axis=1)
    return s[:, -1] - s[:, -2]


def compare_logits(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Logit error and agreement of a quantized model against its FP32 parent."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    scale = float(np.abs(ref).max()) or 1.0
    ma, mb = logit_margin(ref), logit_margin(got)
    corr = float(np.corrcoef(ma, mb)[0, 1]) if len(ma) > 1 and ma.std() > 0 and mb.std() > 0 else (1.0 if np.allclose(ma, mb) else 0.0)
    return {
        "logit_max_abs_err": float(np.abs(ref - got).max()),
        # error relative to the logit range: comparable across models (the sensitivity metric)
        "logit_rel_err": float(np.sqrt(np.mean((ref - got) ** 2)) / scale),
        "margin_corr": corr,
        "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
    }


def matched_recalls(parent: Parent, base: dict[str, Any], scored: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
    """(parent val recall, child val recall, how they were read) at the same operating point.

    Multi-class: argmax recall of both. Binary: both at the parent's val false-alarm count at
    its own threshold. A child's scores shift under INT8, so reading it at the parent's
    threshold judged another rule than the one deployed (bench recalibrates each model's
    threshold): measured on MVTec screw, a QAT child with val AUROC 0.90 read -20.8 pt at the
    parent's threshold while bench, at its own threshold, found the parent's test recall.
    Matching false alarms keeps the comparison about ranking, which is what INT8 can break.

    `how` also holds the paired counts at that operating point: `val_new_misses` (images the
    parent gets right and the child wrong: defects it no longer flags, binary) and
    `val_regained` (the reverse); auto's `new-misses` and `bound` evidence judge the first.
    """
    labels = np.asarray(base["labels"]).astype(np.int64)
    if parent.dataset.task != "binary":
        return base[N.recall], scored[N.recall], _paired(labels == np.argmax(base["logits"], axis=1),
                                                         labels == np.argmax(scored["logits"], axis=1))
    from defectopt.metrics.task import flags_at_false_alarms

    defects = labels == 1
    if not defects.any():  # no val defect: nothing to compare
        return base[N.recall], scored[N.recall], {}
    false_alarms = int(base["metrics"]["fp"])
    goods = int((~defects).sum())
    # one flag vector per model (the rule recall_at_false_alarms reads): recall and paired counts alike
    ref_hits = flags_at_false_alarms(base["logits"], labels, false_alarms)[defects]
    got_hits = flags_at_false_alarms(scored["logits"], labels, false_alarms)[defects]
    ref, got = float(ref_hits.mean()), float(got_hits.mean())
    how = {"operating_point": f"at most {false_alarms} of {goods} val good images flagged "
                              "(the parent's false alarms at its threshold)",
           "val_recall_at_parent_threshold": scored[N.recall], **_paired(ref_hits, got_hits)}
    if false_alarms >= goods:
        # Measured on MVTec screw: random-init ViT-B/16 / ConvNeXt-Base flag every val image at their
        # threshold; at "all good images flagged" every child has full recall, so no loss can show.
        how["operating_point_vacuous"] = True
    return ref, got, how


def _paired(parent_right: np.ndarray, child_right: np.ndarray) -> dict[str, int]:
    return {"val_new_misses": int((parent_right & ~child_right).sum()),
            "val_regained": int((~parent_right & child_right).sum())}


def fidelity(parent: Parent, scored: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    base = parent.val(device)
    ref, got, how = matched_recalls(parent, base, scored)
    out = {"val_recall": got, "parent_val_recall": ref, "recall_drop": ref - got, **how,
           **compare_logits(base["logits"], scored["logits"])}
    for key in ("precision", N.f1, N.accuracy):
        if key in scored["metrics"]:
            out[f"val_{key}"] = float(scored["metrics"][key])
    return out


def evaluate_child(store: Store, parent: Parent, model_id: int, *, device: str = "cpu") -> dict[str, Any]:
    """Load the published child by ID, run it in its own engine on val, store fidelity on the row."""
    from defectopt.bench.runners import open_runner

    art = artifacts.load_artifact(store, model_id)
    runner = open_runner(art, device=device)
    try:
        fid = fidelity(parent, score_runner(runner, parent.dataset, art.threshold), device)
        fid["backend"] = runner.backend
        fid["precision"] = runner.precision
    finally:
        runner.close()
    with store.session() as s:
        row = s.get(Model, model_id)
        row.config = {**(row.config or {}), "fidelity": fid}
    return fid


# --- layer groups (the unit of sensitivity analysis and of --keep-fp) ---------------------------

# containers whose children are the repeated blocks/stages: one group per child
_CONTAINERS = ("blocks", "stages", "layers", "features")


def layer_groups(model) -> list[str]:
    """Module paths that partition the model's weighted layers into blocks, in forward order:
    top-level children, with block containers (blocks/stages/...) expanded one level."""
    import torch

    groups: list[str] = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if name in _CONTAINERS and isinstance(child, (torch.nn.Sequential, torch.nn.ModuleList)):
            groups.extend(f"{name}.{sub}" for sub, c in child.named_children() if any(True for _ in c.parameters()))
        else:  # includes resnet's layer1..4 (one stage each) and the stem/head
            groups.append(name)
    return groups


def resolve_keep_fp(spec: str | None, groups: list[str], ranking: list[str] | None) -> list[str]:
    """--keep-fp N (the N most sensitive groups) or --keep-fp NAME,... (exact group names)."""
    if not spec:
        return []
    spec = spec.strip()
    if spec.isdigit():
        n = int(spec)
        if ranking is None:
            raise DefectoptError("--keep-fp N needs a sensitivity ranking: add --sensitivity (or name the layers: --keep-fp blocks.0,head)")
        return ranking[:n]
    names = [x.strip() for x in spec.split(",") if x.strip()]
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise DefectoptError(f"--keep-fp: unknown layer group(s) {', '.join(unknown)}; known: {', '.join(groups)}")
    return names
