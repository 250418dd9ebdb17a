"""`finetune-teacher` and `distill` as library calls: resolve inputs, register the model row,
train with the engine, publish the artifact. The CLI only parses options and prints.

Every run records its whole request in the model row's config (`config["request"]`), so
`--resume ID` rebuilds exactly the same run from the DB alone. Under torchrun only rank 0 opens
the store (pass `store=None` on the other ranks); they receive the dataset, the teacher's
artifact record and the model id from rank 0.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from defectopt.errors import DefectoptError
from defectopt.train import checkpoint as ckpt
from defectopt.train.distributed import barrier, context, from_main
from defectopt.train.engine import EpochHook, StepHook, train_model
from defectopt.train.options import (
    DISTILL,
    FINETUNE,
    LR_FINETUNE_PRETRAINED,
    LR_FROM_SCRATCH,
    LR_LINEAR_PROBE,
    RunRequest,
)
from defectopt.metrics import N


@dataclass
class RunOutcome:
    model_id: int
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict[str, Any]]
    init: str
    dataset: str
    teacher_id: int | None = None


Echo = Callable[[str], None]


def _imported_weights(req: RunRequest):
    """The imported weights that `--weights` names, or None (a plain file, or no --weights)."""
    from defectopt.models.weights import find, get_imported

    return get_imported(req.weights) if req.weights and find(req.weights) is not None else None


def _apply_weights_data_config(data_cfg: dict[str, Any], imported) -> dict[str, Any]:
    """The checkpoint's own normalization/interpolation replace timm's defaults for the arch."""
    if imported is None:
        return data_cfg
    wcfg = imported.data_config()
    return {**data_cfg, "mean": tuple(wcfg["mean"]), "std": tuple(wcfg["std"]), "interpolation": wcfg["interpolation"]}


def _weights_meta(imported) -> dict[str, Any]:
    return {"weights": imported.provenance()} if imported is not None else {}


def _init_description(req: RunRequest) -> str:
    imported = _imported_weights(req)
    if imported is not None:
        return f"imported weights '{imported.name}' ({imported.sidecar['source']}, mapped by {imported.sidecar['mapping']})"
    if req.weights:
        return f"weights file {req.weights}"
    return "ImageNet-pretrained (timm hub)" if req.pretrained else "random initialization (--no-pretrained)"


def _resolved_lr(req: RunRequest) -> float:
    if req.lr is not None:
        return req.lr
    if req.freeze_backbone:
        return LR_LINEAR_PROBE
    return LR_FINETUNE_PRETRAINED if (req.pretrained or req.weights) and req.command == FINETUNE else LR_FROM_SCRATCH


def _reopen_for_resume(store, model_id: int, command: str) -> RunRequest:
    """The stored request of an interrupted run; its row goes back to 'running' under this pid."""
    import psutil

    from defectopt.store.schema import Model, ModelStatus

    technique = FINETUNE if command == FINETUNE else DISTILL
    with store.session() as s:
        row = s.get(Model, model_id)
        if row is None:
            raise DefectoptError(f"no model with id {model_id} (see 'defectopt ls')")
        tech = row.technique.name if row.technique else None
        if tech != technique or "request" not in (row.config or {}):
            raise DefectoptError(f"model {model_id} is not a {technique} run of this command; cannot resume it here")
        if row.status == ModelStatus.READY:
            raise DefectoptError(f"model {model_id} already finished (ready); nothing to resume")
        if row.status == ModelStatus.RUNNING and row.pid and row.pid != os.getpid() and psutil.pid_exists(row.pid):
            raise DefectoptError(f"model {model_id} is still being trained by process {row.pid}")
        row.status = ModelStatus.RUNNING
        row.pid = os.getpid()
        row.finished_at = None
        row.config = {k: v for k, v in (row.config or {}).items() if k != "failure"}
        return RunRequest.from_dict(row.config["request"])


def _publish(store, model_id: int, result, data_cfg: dict[str, Any], dataset, req: RunRequest,
             extra_meta: dict[str, Any]) -> None:
    from defectopt.models import artifacts
    from defectopt.models.factory import param_count
    from defectopt.store.schema import Model

    summary = {
        "best_epoch": result.best_epoch,
        "best_val": {k: result.best_val[k] for k in (N.recall, "precision", N.f1) if k in result.best_val},
        "epochs": req.train.epochs,
    }
    with store.session() as s:
        row = s.get(Model, model_id)
        row.config = {**(row.config or {}), "result": summary}
    meta = {
        "mean": [float(v) for v in data_cfg["mean"]],
        "std": [float(v) for v in data_cfg["std"]],
        "interpolation": data_cfg.get("interpolation", "bilinear"),
        "classes": list(dataset.class_names),
        "task": dataset.task,
        "dataset": dataset.name,
        "init": _init_description(req),
        "pretrained": bool(req.pretrained and not req.weights),
        "train": summary,
        **extra_meta,
    }
    model = result.model
    with artifacts.publish(store, model_id, format=artifacts.FORMAT_TORCH, meta=meta,
                           param_count=param_count(model)) as staging:
        artifacts.save_torch_weights(model, staging)


def _run(store, req: RunRequest, model_id: int, model, dataset, data_cfg, *, resume: bool, teacher=None,
         teacher_data_cfg=None, on_step: StepHook | None, echo: Echo, extra_meta: dict[str, Any],
         on_epoch: EpochHook | None = None):
    """Train then publish; on any failure or Ctrl-C the row ends 'failed' with its run folder kept."""
    from defectopt.models.artifacts import mark_failed

    ctx = context(req.train.device)
    label = f"{req.command} {req.model}"
    try:
        result = train_model(
            store if ctx.is_main else None, model_id=model_id, model=model, dataset=dataset, cfg=req.train,
            data_cfg=data_cfg, teacher=teacher, teacher_data_cfg=teacher_data_cfg, resume=resume,
            freeze_backbone=req.freeze_backbone, on_step=on_step, label=label, on_epoch=on_epoch,
        )
        if ctx.is_main:
            _publish(store, model_id, result, data_cfg, dataset, req, extra_meta)
            ckpt.discard_run(result.run_dir)
        barrier()
    except BaseException as exc:
        if ctx.is_main and store is not None:
            mark_failed(store, model_id, f"{type(exc).__name__}: {exc}")
            if isinstance(exc, KeyboardInterrupt):
                echo(f"interrupted: model {model_id} marked failed, no artifact written; "
                     f"continue it with --resume {model_id}")
        raise
    return result


def _echo_main(echo: Echo) -> Echo:
    def out(text: str) -> None:
        if context().is_main:
            echo(text)

    return out


def _resume_request(store, req: RunRequest, resume_id: int, command: str) -> RunRequest:
    """The stored request of run `resume_id`, keeping this invocation's device/quiet/workers
    (where and how to run may change on resume; what to train may not)."""
    device, quiet, workers = req.train.device, req.train.quiet, req.train.workers
    stored = from_main(lambda: _reopen_for_resume(store, resume_id, command))
    stored.train.device, stored.train.quiet, stored.train.workers = device, quiet, workers
    return stored


def finetune_teacher(store, req: RunRequest, *, resume_id: int | None = None, on_step: StepHook | None = None,
                     echo: Echo = print, on_epoch: EpochHook | None = None) -> RunOutcome:
    """Fine-tune (or train from scratch / linear-probe) a registry alias on a dataset."""
    from defectopt.data.catalog import resolve_dataset
    from defectopt.data.loading import resolve_model_data_config
    from defectopt.models import artifacts
    from defectopt.models.factory import create
    from defectopt.models.registry import get

    ctx = context(req.train.device)
    echo = _echo_main(echo)
    req = RunRequest.from_dict(req.to_dict())  # resolved below (alias, size, lr): the caller's object stays as given
    if resume_id is not None:
        req = _resume_request(store, req, resume_id, FINETUNE)
    spec = get(req.model)
    req.model = spec.alias
    imported = _imported_weights(req)
    # Imported weights know their native input size; otherwise timm's usual 224.
    req.img_size = req.img_size or (imported.data_config()["input_size"] if imported else 224)
    req.lr = _resolved_lr(req)
    req.train.lr = req.lr
    req.train.validate()
    dataset = from_main(lambda: resolve_dataset(store, req.data, seed=req.split_seed))
    init = _init_description(req)
    torch.manual_seed(req.train.seed)
    model = create(spec.alias, dataset.num_classes, req.img_size, pretrained=req.pretrained and not req.weights,
                   weights=req.weights)
    data_cfg = _apply_weights_data_config(resolve_model_data_config(model, req.img_size), imported)
    if resume_id is None:
        params = {"init": "weights" if req.weights else ("pretrained" if req.pretrained else "random"),
                  "freeze_backbone": req.freeze_backbone, "epochs": req.train.epochs, "lr": req.lr,
                  "seed": req.train.seed, **_weights_meta(imported)}
        model_id = from_main(lambda: artifacts.begin_model(
            store, alias=spec.alias, timm_name=spec.timm_name, technique=FINETUNE, technique_params=params,
            parent_id=None, dataset_id=dataset.id, img_size=req.img_size, num_classes=dataset.num_classes,
            config={"request": req.to_dict(), "init": init},
        ))
    else:
        model_id = resume_id
    echo(f"model {model_id}: finetune {spec.alias} ({spec.timm_name}) on {dataset.name}, img {req.img_size}, "
         f"init: {init}" + (", linear probe on frozen backbone" if req.freeze_backbone else "")
         + (f", {ctx.world_size} processes" if ctx.distributed else "") + f", device {ctx.device.type}")
    if not req.pretrained and not req.weights:
        echo("note: the teacher is trained from random initialization (--no-pretrained), not from pretrained weights")
    result = _run(store, req, model_id, model, dataset, data_cfg, resume=resume_id is not None, on_step=on_step,
                  on_epoch=on_epoch, echo=echo, extra_meta={"freeze_backbone": req.freeze_backbone, **_weights_meta(imported)})
    return RunOutcome(model_id, result.best_epoch, result.best_val, result.history, init, dataset.name)


def _resolve_teacher(store, req: RunRequest):
    """(teacher artifact, dataset) for a distill request, or one-line errors."""
    from defectopt.data.catalog import get_dataset, resolve_dataset
    from defectopt.models.artifacts import load_artifact
    from defectopt.models.catalog import resolve_model_ref

    if not req.teacher:
        raise DefectoptError("distill needs --teacher ID|ALIAS")
    is_id = str(req.teacher).strip().isdigit()
    if is_id:  # an unknown or unready teacher ID is refused before the dataset row is written
        load_artifact(store, int(req.teacher))
    dataset = resolve_dataset(store, req.data, seed=req.split_seed) if req.data else None
    teacher_id = resolve_model_ref(store, req.teacher, dataset_id=None if (is_id or dataset is None) else dataset.id,
                                   technique=None if is_id else FINETUNE)
    art = load_artifact(store, teacher_id)
    if dataset is None:
        if art.dataset_id is None:
            raise DefectoptError(f"teacher {teacher_id} records no dataset; pass --data SPEC")
        dataset = get_dataset(store, art.dataset_id)
    if art.num_classes != dataset.num_classes:
        raise DefectoptError(
            f"teacher {teacher_id} predicts {art.num_classes} classes but dataset {dataset.name} has "
            f"{dataset.num_classes}; distill on the teacher's dataset or fine-tune a teacher on this one"
        )
    return art, dataset


def distill(store, req: RunRequest, *, resume_id: int | None = None, on_step: StepHook | None = None,
            echo: Echo = print, on_epoch: EpochHook | None = None) -> RunOutcome:
    """Train a student alias against a frozen teacher (α > 0) or as the no-KD baseline (α = 0)."""
    from defectopt.data.loading import resolve_model_data_config
    from defectopt.models import artifacts
    from defectopt.models.factory import create
    from defectopt.models.registry import get

    ctx = context(req.train.device)
    echo = _echo_main(echo)
    req = RunRequest.from_dict(req.to_dict())  # resolved below (alias, teacher, size, lr): the caller's stays as given
    if resume_id is not None:
        req = _resume_request(store, req, resume_id, DISTILL)
    spec = get(req.model)
    req.model = spec.alias
    teacher_art, dataset = from_main(lambda: _resolve_teacher(store, req))
    req.teacher = str(teacher_art.id)  # a resumed run must use the same teacher, not "the latest"
    req.data = req.data or None
    imported = _imported_weights(req)
    req.img_size = req.img_size or teacher_art.img_size
    req.lr = _resolved_lr(req)
    req.train.lr = req.lr
    req.train.validate()
    kd = req.train.alpha > 0
    teacher = None
    teacher_data_cfg = artifacts.data_config(teacher_art)
    if kd:
        teacher = artifacts.load_torch_model(teacher_art)
    init = _init_description(req)
    torch.manual_seed(req.train.seed)
    student = create(spec.alias, dataset.num_classes, req.img_size, pretrained=req.pretrained and not req.weights,
                     weights=req.weights)
    data_cfg = _apply_weights_data_config(resolve_model_data_config(student, req.img_size), imported)
    params = {"alpha": req.train.alpha, "temperature": req.train.temperature, "teacher_id": teacher_art.id,
              "kd": kd, "init": "weights" if req.weights else ("pretrained" if req.pretrained else "random"),
              "epochs": req.train.epochs, "lr": req.lr, "seed": req.train.seed, **_weights_meta(imported)}
    if resume_id is None:
        model_id = from_main(lambda: artifacts.begin_model(
            store, alias=spec.alias, timm_name=spec.timm_name, technique=DISTILL, technique_params=params,
            # The no-KD baseline also records the teacher as parent: it is the comparison run of
            # that teacher's distillation (same recipe), and lineage shows it as "[no-KD]".
            parent_id=teacher_art.id, dataset_id=dataset.id, img_size=req.img_size,
            num_classes=dataset.num_classes, config={"request": req.to_dict(), "init": init},
        ))
    else:
        model_id = resume_id
    what = (f"KD α={req.train.alpha:g} T={req.train.temperature:g}" if kd
            else "no-KD baseline (α=0: cross-entropy only, same recipe)")
    echo(f"model {model_id}: distill {teacher_art.alias} (model {teacher_art.id}, img {teacher_art.img_size}) -> "
         f"{spec.alias} (img {req.img_size}) on {dataset.name}, {what}, student init: {init}"
         + (f", {ctx.world_size} processes" if ctx.distributed else "") + f", device {ctx.device.type}")
    result = _run(store, req, model_id, student, dataset, data_cfg, resume=resume_id is not None, teacher=teacher,
                  teacher_data_cfg=teacher_data_cfg, on_step=on_step, on_epoch=on_epoch, echo=echo,
                  extra_meta={"alpha": req.train.alpha, "temperature": req.train.temperature,
                              "teacher_id": teacher_art.id, "kd": kd, **_weights_meta(imported)})
    return RunOutcome(model_id, result.best_epoch, result.best_val, result.history, init, dataset.name,
                      teacher_id=teacher_art.id)
