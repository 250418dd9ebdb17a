"""`defectopt prune`: parent model -> pruned model(s) -> optional recovery fine-tuning -> artifact.

One new model row per ratio (parent = the pruned model's source). Nothing is written before
every option has been checked, so a user error leaves the DB unchanged; a failure after the
row exists marks it failed (see models.artifacts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from defectopt.compress.prune.options import (
    METHODS,
    PRUNABLE_FORMATS,
    STRUCTURED,
    UNSTRUCTURED,
    PruneOptions,
    validate_ratio,
)
from defectopt.errors import DefectoptError
from defectopt.models.artifacts import (
    FORMAT_TORCH,
    WEIGHTS_FILE,
    Artifact,
    begin_model,
    data_config,
    load_artifact,
    load_torch_model,
    mark_failed,
    publish,
)
from defectopt.models.formats import FORMAT_PRUNED
from defectopt.store.db import Store
from defectopt.metrics import N

TECHNIQUE = "prune"
# Normalization and labels carried over from the parent's meta.json.
_INHERITED_META = ("mean", "std", "interpolation", "classes")


@dataclass
class PruneResult:
    model_id: int
    parent_id: int
    ratio: float
    method: str
    macs_before: float
    macs_after: float
    params_before: int
    params_after: int
    format: str
    best_val: dict[str, float] | None = None
    best_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # with keep_models=True

    def line(self) -> str:
        text = (f"model {self.model_id} ← {self.parent_id}: prune{self.ratio:g} {self.method}  "
                f"GMACs {self.macs_before / 1e9:.3f} → {self.macs_after / 1e9:.3f}  "
                f"params {self.params_before / 1e6:.2f}M → {self.params_after / 1e6:.2f}M")
        if self.best_val:
            text += f"  val recall {self.best_val.get(N.recall, float('nan')):.3f} (epoch {self.best_epoch})"
        return text


# --- validation ------------------------------------------------------------------------------

def validate_options(opts: PruneOptions) -> None:
    from defectopt.compress.prune.structured import IMPORTANCES
    from defectopt.compress.prune.unstructured import UNSTRUCTURED_IMPORTANCES

    if not str(opts.model).strip():
        raise DefectoptError("prune needs --id ID|ALIAS (the model to prune)")
    if not opts.ratios:
        raise DefectoptError("give --ratio R or --ratios R1,R2,...")
    for ratio in opts.ratios:
        validate_ratio(ratio)
    if opts.method not in METHODS:
        raise DefectoptError(f"--method must be one of {', '.join(METHODS)}, got '{opts.method}'")
    allowed = IMPORTANCES if opts.method == STRUCTURED else UNSTRUCTURED_IMPORTANCES
    if opts.importance not in allowed:
        raise DefectoptError(f"--importance for {opts.method} pruning must be one of {', '.join(allowed)}, got '{opts.importance}'")
    if opts.finetune_epochs > 0:
        from defectopt.train.distributed import resolve_device

        resolve_device(opts.device)  # "--device cuda" without a GPU fails here, before any row exists
    checks = [
        (opts.iterative_steps >= 1, f"--iterative-steps must be at least 1, got {opts.iterative_steps}"),
        (opts.round_to >= 1, f"--round-to must be at least 1 (1 = no rounding), got {opts.round_to}"),
        (opts.finetune_epochs >= 0, f"--finetune-epochs must be >= 0, got {opts.finetune_epochs}"),
        (opts.calib_batches >= 1, f"--calib-batches must be at least 1, got {opts.calib_batches}"),
        (opts.kd_from is None or opts.finetune_epochs > 0,
         "--kd-from distills during recovery fine-tuning; give --finetune-epochs N (N > 0) too"),
        (opts.method == STRUCTURED or opts.iterative_steps == 1, "--iterative-steps applies to structured pruning only"),
    ]
    for ok, message in checks:
        if not ok:
            raise DefectoptError(message)
    if opts.finetune_epochs > 0:
        _train_config(opts, with_teacher=opts.kd_from is not None).validate()


def _train_config(opts: PruneOptions, *, with_teacher: bool):
    from defectopt.train.engine import TrainConfig

    return TrainConfig(
        epochs=max(1, opts.finetune_epochs), batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
        device=opts.device, amp=opts.amp, alpha=opts.alpha if with_teacher else 0.0,
        temperature=opts.temperature, quiet=opts.quiet,
        warmup_epochs=0.0 if opts.finetune_epochs <= 2 else 1.0,  # short recoveries start at full rate
    )


# --- entry point -----------------------------------------------------------------------------

def prune_models(store: Store, opts: PruneOptions, *, on_result: Callable[[PruneResult], None] | None = None, keep_models: bool = False) -> list[PruneResult]:
    """Prune the parent once per ratio; each ratio becomes its own model row.

    keep_models: also return each pruned nn.Module (the published weights) in `result.model`.
    """
    from defectopt.models.catalog import resolve_model_ref

    validate_options(opts)
    ratios = [validate_ratio(r) for r in opts.ratios]
    parent = load_artifact(store, resolve_model_ref(store, opts.model))
    if parent.format not in PRUNABLE_FORMATS:
        raise DefectoptError(
            f"model {parent.id} has format '{parent.format}'; pruning needs a float PyTorch model "
            f"({', '.join(PRUNABLE_FORMATS)}): prune before quantizing or exporting"
        )
    needs_data = opts.finetune_epochs > 0 or (opts.method == STRUCTURED and opts.importance == "taylor")
    dataset = _dataset(store, parent, opts) if needs_data else None
    teacher = teacher_art = None
    if opts.kd_from is not None:
        teacher_art = load_artifact(store, resolve_model_ref(store, opts.kd_from, dataset_id=dataset.id))
        if teacher_art.num_classes != parent.num_classes:
            raise DefectoptError(
                f"teacher {teacher_art.id} has {teacher_art.num_classes} classes, model {parent.id} has {parent.num_classes}"
            )
        teacher = load_torch_model(teacher_art).eval()
    results = []
    for ratio in ratios:
        result = prune_one(store, parent, ratio, opts, dataset=dataset, teacher=teacher, teacher_art=teacher_art,
                           keep_model=keep_models)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _dataset(store: Store, parent: Artifact, opts: PruneOptions):
    from defectopt.data.catalog import get_dataset, resolve_dataset

    if opts.data:
        dataset = resolve_dataset(store, opts.data, seed=opts.split_seed)
    elif parent.dataset_id is not None:
        dataset = get_dataset(store, parent.dataset_id)
    else:
        raise DefectoptError(f"model {parent.id} records no dataset; recovery fine-tuning and taylor importance need --data SPEC")
    if dataset.num_classes != parent.num_classes:
        raise DefectoptError(
            f"dataset {dataset.name} has {dataset.num_classes} classes but model {parent.id} has {parent.num_classes}"
        )
    return dataset


def _calibration(dataset, data_cfg: dict[str, Any], batch_size: int, n_batches: int, seed: int):
    """A callable yielding the first n shuffled train batches (the same ones on every call)."""
    from defectopt.data.loading import MultiViewDataset, eval_transform, make_loader

    ds = MultiViewDataset(dataset.root, dataset.split("train"), [eval_transform(data_cfg)])

    def batches():
        for i, (x, y, _) in enumerate(make_loader(ds, batch_size, shuffle=True, seed=seed)):
            if i >= n_batches:
                return
            yield x, y

    return batches


def prune_one(store: Store, parent: Artifact, ratio: float, opts: PruneOptions, *, dataset=None,
              teacher: nn.Module | None = None, teacher_art: Artifact | None = None, keep_model: bool = False) -> PruneResult:
    from defectopt.compress.prune import unstructured as unstr
    from defectopt.compress.prune.structured import StructuredConfig, prune_structured
    from defectopt.models.factory import count_macs, param_count
    from defectopt.models.pruned import capture_structure

    img = parent.img_size
    data_cfg = data_config(parent)
    model = load_torch_model(parent).cpu().eval()
    macs_before, params_before = count_macs(model, img), param_count(model)
    params: dict[str, Any] = {
        "ratio": ratio, "method": opts.method, "importance": opts.importance, "global": opts.global_pruning,
        "iterative_steps": opts.iterative_steps, "round_to": opts.round_to if opts.method == STRUCTURED else None,
        "seed": opts.seed, "finetune_epochs": opts.finetune_epochs,
        "kd_from": teacher_art.id if teacher_art is not None else None,
        "alpha": opts.alpha if teacher_art is not None else 0.0,
    }
    masks: list = []
    summary: dict[str, Any] = {}
    if opts.method == STRUCTURED:
        calibration = (_calibration(dataset, data_cfg, opts.batch_size, opts.calib_batches, opts.seed)
                       if opts.importance == "taylor" else None)
        cfg = StructuredConfig(ratio=ratio, importance=opts.importance, global_pruning=opts.global_pruning,
                               iterative_steps=opts.iterative_steps, round_to=opts.round_to, seed=opts.seed)
        summary = prune_structured(model, img_size=img, cfg=cfg, calibration=calibration)
    else:
        masks = unstr.apply_masks(model, ratio=ratio, importance=opts.importance,
                                  global_pruning=opts.global_pruning, seed=opts.seed)
        summary = unstr.sparsity_report(model, masks)
    macs_after, params_after = count_macs(model, img), param_count(model)
    params.update(macs_before=macs_before, macs_after=macs_after, params_before=params_before, params_after=params_after)
    if opts.method == UNSTRUCTURED:
        params.update(sparsity=round(summary["sparsity"], 6), nonzero_params=summary["nonzero_params"])
    fmt = FORMAT_PRUNED if (opts.method == STRUCTURED or parent.format == FORMAT_PRUNED) else FORMAT_TORCH

    model_id = begin_model(
        store, alias=parent.alias, timm_name=parent.timm_name, technique=TECHNIQUE, technique_params=params,
        parent_id=parent.id, dataset_id=dataset.id if dataset is not None else parent.dataset_id,
        img_size=img, num_classes=parent.num_classes,
        config={"prune": {k: v for k, v in asdict(opts).items() if k not in ("quiet",)}},
    )
    try:
        best_val = best_epoch = None
        run_dir = None
        if opts.finetune_epochs > 0:
            from defectopt.train.engine import train_model

            trained = train_model(
                store, model_id=model_id, model=model, dataset=dataset,
                cfg=_train_config(opts, with_teacher=teacher is not None), data_cfg=data_cfg,
                teacher=teacher, teacher_data_cfg=data_config(teacher_art) if teacher_art is not None else None,
                label=f"prune{ratio:g} → model {model_id}",
            )
            model, best_val, best_epoch, run_dir = trained.model.cpu().eval(), trained.best_val, trained.best_epoch, trained.run_dir
        meta: dict[str, Any] = {k: parent.meta[k] for k in _INHERITED_META if k in parent.meta}
        pruning_meta = dict(params)
        if opts.method == UNSTRUCTURED:
            unstr.make_permanent(masks)
            pruning_meta.update(unstr.sparsity_report(model, masks))
        else:
            pruning_meta["heads"] = summary.get("heads", [])
        if best_val is not None:
            pruning_meta["recovery"] = {"best_epoch": best_epoch, "best_val": best_val}
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        serialized = _safetensors_bytes(state)
        if opts.method == UNSTRUCTURED:
            pruning_meta.update(unstr.payload_sizes(state, serialized))
        meta["pruning"] = pruning_meta
        if fmt == FORMAT_PRUNED:
            meta["structure"] = capture_structure(model, alias=parent.alias, num_classes=parent.num_classes, img_size=img)
            _check_rebuild(model, parent, meta["structure"], state)
    except BaseException as exc:
        mark_failed(store, model_id, f"{type(exc).__name__}: {exc}")
        raise
    with publish(store, model_id, format=fmt, meta=meta, param_count=params_after) as staging:
        (staging / WEIGHTS_FILE).write_bytes(serialized)
    if run_dir is not None:
        from defectopt.train.checkpoint import discard_run

        discard_run(run_dir)
    return PruneResult(
        model_id=model_id, parent_id=parent.id, ratio=ratio, method=opts.method, macs_before=macs_before,
        macs_after=macs_after, params_before=params_before, params_after=params_after, format=fmt,
        best_val=best_val, best_epoch=best_epoch,
        extra={k: pruning_meta[k] for k in ("heads", "sparsity", "dense_bytes", "compressed_bytes", "csr_bytes")
               if k in pruning_meta},
        model=model if keep_model else None,
    )


def _safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(state)


def _check_rebuild(model: nn.Module, parent: Artifact, structure: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """The stored record must rebuild this exact model: checked before anything is published."""
    from defectopt.models.pruned import rebuild

    rebuilt = rebuild(parent.alias, parent.num_classes, parent.img_size, structure, state)
    x = torch.randn(1, 3, parent.img_size, parent.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model.eval()(x), rebuilt(x)
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"pruned {parent.alias} does not rebuild from its stored structure "
                           f"(max |diff| {float((a - b).abs().max()):.3g})")
