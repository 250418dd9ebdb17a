"""The one training loop: finetune, distill, QAT and prune recovery all call `train_model`.

What it does, in order:
  * AdamW (no weight decay on biases and norm parameters), per-step schedule: linear warm-up
    then cosine decay to `min_lr_ratio`·lr; gradient accumulation; optional bf16 autocast
    (CPU or CUDA) or fp16 autocast with a grad scaler (CUDA).
  * Light surface augmentation (flips, small rotations) applied once per image and shared by
    the student's and the teacher's views (`MultiViewDataset`): in distillation both models see
    the same augmented image, each through its own resize and normalization.
  * Class balance: `balance="loss"` weights the CE term by inverse class frequency,
    `balance="sampler"` draws a class-balanced sample each epoch.
  * After every epoch: val-split metrics, a TrainEpoch row, and a checkpoint in the run folder
    (see train.checkpoint), so `resume=True` continues an interrupted run to the same final
    epoch with the same result.
  * Model selection on the frozen val split (see `selection_key`).
  * Under torchrun: DistributedDataParallel (gloo on CPU, nccl on CUDA) and a distributed
    sampler; only rank 0 writes rows and files.

Determinism: the shuffling order of epoch e is a function of (seed, e) alone, and the global
RNG states (augmentation, dropout) are saved in every checkpoint and restored on resume, so on
CPU an interrupted-and-resumed run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from defectopt.errors import DefectoptError
from defectopt.metrics.task import evaluate_logits
from defectopt.train import checkpoint as ckpt
from defectopt.train.distributed import DistContext, context, from_main
from defectopt.train.losses import class_balanced_weights, kd_loss
from defectopt.train.options import RECIPE_FIELDS, TrainConfig
from defectopt.metrics import N


@dataclass
class TrainResult:
    model: nn.Module  # best-epoch weights loaded, eval mode, on the training device
    best_epoch: int  # 1-based, as in the TrainEpoch rows and the log lines
    best_val: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None
    epochs_run: int = 0  # epochs trained by this call (fewer than cfg.epochs after a resume)


LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
StepHook = Callable[[int, int], None]
# Called with each finished epoch's history row (epoch, train_loss, val_recall, ...), after its
# checkpoint and TrainEpoch row are written; raising StopTraining ends the run there.
EpochHook = Callable[[dict[str, Any]], None]


class StopTraining(DefectoptError):
    """Raised by an epoch hook to end a run early (e.g. `search`'s early-stopping rule); the run
    is recorded as failed with this message, its checkpoints kept."""


# --- model selection -------------------------------------------------------------------------

# An epoch takes part in recall-first selection only when its val F1 clears the best constant
# predictor's F1 by this fraction of the remaining headroom. The constant "flag everything"
# classifier has recall 1.0 and precision = base rate; without the gate it would win every
# recall-first selection in the first, still-degenerate epochs.
SELECTION_F1_MARGIN = 0.25


def constant_predictor_f1(labels: np.ndarray, task: str, num_classes: int) -> float:
    """The best F1 any constant prediction ("all defect", "all class c") reaches on these labels."""
    labels = np.asarray(labels)
    best = 0.0
    for c in range(num_classes):
        logits = np.zeros((len(labels), num_classes), dtype=np.float32)
        logits[:, c] = 1.0
        best = max(best, evaluate_logits(logits, labels, task, num_classes)[N.f1])
    return best


def selection_key(val: dict[str, float], trivial_f1: float) -> tuple:
    """Sort key of an epoch (larger is better).

    Rule: among epochs whose val F1 >= trivial + 0.25·(1 - trivial) (trivial = the best constant
    predictor's F1, e.g. flag-everything), the highest val defect recall wins (macro recall for
    multi-class), ties broken by F1, then by the earlier epoch. If no epoch clears the gate the
    best F1 wins (then recall): a degenerate epoch is never preferred for its recall.
    """
    floor = trivial_f1 + SELECTION_F1_MARGIN * (1.0 - trivial_f1)
    recall, f1 = round(float(val[N.recall]), 9), round(float(val[N.f1]), 9)
    if f1 >= floor and f1 > trivial_f1:
        return (1, recall, f1)
    return (0, f1, recall)


def val_metrics(logits: np.ndarray, labels: np.ndarray, task: str, num_classes: int) -> dict[str, float]:
    """Headline val metrics at argmax; for multi-class adds macro precision (not in task_metrics)."""
    out = evaluate_logits(logits, labels, task, num_classes)
    if "precision" not in out:
        pred = np.asarray(logits).argmax(axis=1)
        labels = np.asarray(labels)
        precisions = []
        for c in np.unique(labels):
            flagged = pred == c
            precisions.append(float((labels[flagged] == c).mean()) if flagged.any() else 0.0)
        out["precision"] = float(np.mean(precisions)) if precisions else 0.0
    return {k: float(v) for k, v in out.items()}


# --- data --------------------------------------------------------------------------------------

class EpochSampler(Sampler[int]):
    """Indices for one epoch as a function of (seed, epoch): shuffled, or class-balanced draws
    with replacement; under DDP each rank takes every world-th index of the padded order
    (the DistributedSampler scheme, extended to weighted sampling)."""

    def __init__(self, n: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 weights: torch.Tensor | None = None):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.shuffle, self.weights, self.epoch = shuffle, weights, 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights.double(), self.n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / len(order)))[:total]
        return iter(order[self.rank:total:self.world_size])

    def __len__(self) -> int:
        return self.per_rank


class _TensorItems(Dataset):
    """(features, label, index) triples: the training items of a linear probe."""

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor):
        self.feats, self.labels = feats, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.feats[i], int(self.labels[i]), i


def _labels(records: Sequence[dict]) -> torch.Tensor:
    return torch.tensor([int(r["label"]) for r in records], dtype=torch.long)


# --- helpers -----------------------------------------------------------------------------------

def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Biases and normalization scales/offsets (1-d tensors) are not decayed: standard for AdamW.
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier per optimizer step: linear warm-up to 1, then cosine down to min_ratio."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _state_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class _Reporter:
    """Rich progress bar per epoch (live loss, last val recall) or plain log lines (--quiet)."""

    def __init__(self, quiet: bool, enabled: bool, label: str):
        from rich.console import Console

        self.quiet, self.enabled, self.label = quiet, enabled, label
        self.console = Console(highlight=False, soft_wrap=True)
        self.progress = None
        self.task = None

    def start_epoch(self, epoch: int, epochs: int, batches: int, last_recall: float | None) -> None:
        if not self.enabled or self.quiet:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val recall {task.fields[recall]}"),
            TimeElapsedColumn(), console=self.console, transient=True,
        )
        self.progress.start()
        rec = f"{last_recall:.3f}" if last_recall is not None else "-"
        self.task = self.progress.add_task(f"{self.label} epoch {epoch + 1}/{epochs}", total=batches, loss="-", recall=rec)

    def step(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=f"{loss:.4f}")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def end_epoch(self, row: dict[str, Any], epochs: int, best: bool) -> None:
        self.stop()
        if not self.enabled:
            return
        self.console.print(
            f"{self.label} epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  "
            f"val recall {row['val_recall']:.4f} precision {row['val_precision']:.4f} F1 {row['val_f1']:.4f}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.1f}s" + ("  *best*" if best else "")
        )

    def info(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)


# --- DB rows -----------------------------------------------------------------------------------

def _write_epoch_row(store, model_id: int, row: dict[str, Any]) -> None:
    from sqlalchemy import delete

    from defectopt.store.schema import TrainEpoch

    with store.session() as s:
        s.execute(delete(TrainEpoch).where(TrainEpoch.model_id == model_id, TrainEpoch.epoch == row["epoch"]))
        s.add(TrainEpoch(model_id=model_id, epoch=row["epoch"], train_loss=row["train_loss"],
                         val_recall=row["val_recall"], val_precision=row["val_precision"], val_f1=row["val_f1"],
                         lr=row["lr"], seconds=row["seconds"]))


def _drop_epoch_rows_from(store, model_id: int, first_epoch: int) -> None:
    from sqlalchemy import delete

    from defectopt.store.schema import TrainEpoch

    with store.session() as s:
        s.execute(delete(TrainEpoch).where(TrainEpoch.model_id == model_id, TrainEpoch.epoch >= first_epoch))


# --- the loop ----------------------------------------------------------------------------------

@torch.no_grad()
def _eval_loader_logits(net: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    logits, labels = [], []
    for batch in loader:
        x, y = batch[0], batch[-2]
        logits.append(net(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def _fit(
    store, *, ctx: DistContext, model_id: int | None, net: nn.Module, items: Dataset, labels: torch.Tensor,
    val_loader: DataLoader, num_classes: int, task: str, cfg: TrainConfig, teacher: nn.Module | None,
    loss_fn: LossFn, run_dir: Path | None, resume: bool, on_step: StepHook | None, label: str,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    device = ctx.device
    net.to(device)
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if not any(p.requires_grad for p in net.parameters()):
        raise DefectoptError("the model has no trainable parameters")

    sample_weights = None
    if cfg.balance == "sampler":
        class_w = class_balanced_weights(labels, num_classes)
        sample_weights = class_w[labels]
    sampler = EpochSampler(len(items), seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size,
                           weights=sample_weights)
    # A trailing batch of one sample breaks BatchNorm in train mode; drop just that one sample.
    drop_last = len(sampler) > cfg.batch_size and len(sampler) % cfg.batch_size == 1
    batches = len(sampler) // cfg.batch_size if drop_last else math.ceil(len(sampler) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    # Warm-up never takes more than half the run (a 1-epoch smoke run still decays).
    warmup_steps = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total_steps // 2)

    train_net: nn.Module = net
    if ctx.distributed:
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(_param_groups(net, cfg.weight_decay), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps, cfg.min_lr_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    trivial_f1 = None

    start_epoch, best_epoch, best_key, best_val, history = 0, 0, None, {}, []
    best_state: dict[str, torch.Tensor] | None = None
    _seed_all(cfg.seed + ctx.rank)
    last_path = run_dir / ckpt.LAST if run_dir is not None else None
    if resume and last_path is not None and last_path.is_file():
        state = ckpt.load(last_path)
        saved = state.get("recipe", {})
        diff = [k for k in RECIPE_FIELDS if k in saved and saved[k] != getattr(cfg, k)]
        if diff:
            raise DefectoptError(f"cannot resume: the recipe differs from the interrupted run's ({', '.join(diff)})")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"][ctx.rank] if ctx.rank < len(state["rng"]) else state["rng"][0])
        start_epoch, best_epoch, history = int(state["epoch"]), int(state["best_epoch"]), list(state["history"])
        best_key, best_val = tuple(state["best_key"]) if state["best_key"] else None, dict(state["best_val"])
        if best_epoch >= 1:
            best_state = ckpt.load(run_dir / ckpt.best_name(best_epoch))
    writes = ctx.is_main and store is not None and model_id is not None
    if writes:
        _drop_epoch_rows_from(store, model_id, start_epoch + 1)

    reporter = _Reporter(cfg.quiet, ctx.is_main, label)
    if start_epoch:
        reporter.info(f"{label}: resuming after epoch {start_epoch}/{cfg.epochs}")
    kd_active = teacher is not None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            loader = DataLoader(items, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                                drop_last=drop_last)
            train_net.train()
            reporter.start_epoch(epoch, cfg.epochs, batches,
                                 history[-1]["val_recall"] if history else None)
            loss_sum = torch.zeros(2, dtype=torch.float64)
            optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(loader):
                x, y = batch[0].to(device, non_blocking=True), batch[-2].to(device, non_blocking=True)
                last_micro = (i + 1) % cfg.grad_accum == 0 or i + 1 == batches
                sync = contextlib.nullcontext() if (last_micro or not ctx.distributed) else train_net.no_sync()
                with sync:
                    t_logits = None
                    if kd_active:
                        with torch.no_grad(), _autocast(device, cfg.amp):
                            t_logits = teacher(batch[1].to(device, non_blocking=True)).float()
                    with _autocast(device, cfg.amp):
                        s_logits = train_net(x)
                    loss = loss_fn(s_logits.float(), y, t_logits)
                    scaler.scale(loss / cfg.grad_accum).backward()
                if last_micro:
                    if cfg.clip_grad_norm:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise DefectoptError(f"{label}: training diverged (loss {value}) in epoch {epoch + 1}; lower --lr")
                loss_sum += torch.tensor([value * len(y), len(y)], dtype=torch.float64)
                reporter.step(value)
                if on_step is not None:
                    on_step(epoch, i)
            if ctx.distributed:
                import torch.distributed as dist

                dist.all_reduce(loss_sum)  # the epoch's loss over every rank's samples
            # Every rank scores the whole val split with the same weights, so all ranks reach the
            # same selection decision without further communication.
            v_logits, v_labels = _eval_loader_logits(net, val_loader, device)
            if trivial_f1 is None:
                trivial_f1 = constant_predictor_f1(v_labels, task, num_classes)
            val = val_metrics(v_logits, v_labels, task, num_classes)
            key = selection_key(val, trivial_f1)
            is_best = best_key is None or key > best_key
            row = {
                "epoch": epoch + 1, "train_loss": float(loss_sum[0] / max(loss_sum[1], 1)),
                "val_recall": val[N.recall], "val_precision": val["precision"], "val_f1": val[N.f1],
                "lr": float(optimizer.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            if is_best:
                best_key, best_epoch, best_val, best_state = key, epoch + 1, val, _state_cpu(net)
            if run_dir is not None and ctx.is_main:
                if is_best:
                    ckpt.save_atomic(best_state, run_dir / ckpt.best_name(epoch + 1))
                rngs = _gather_rng(ctx)
                ckpt.save_atomic({
                    "model": _state_cpu(net), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng": rngs,
                    "epoch": epoch + 1, "best_epoch": best_epoch, "best_key": list(best_key), "best_val": best_val,
                    "history": history, "recipe": cfg.recipe(),
                }, last_path)
                ckpt.prune_best_files(run_dir, ckpt.best_name(best_epoch))
            elif ctx.distributed:
                _gather_rng(ctx)
            if writes:
                _write_epoch_row(store, model_id, row)
            reporter.end_epoch(row, cfg.epochs, is_best)
            if on_epoch is not None:
                on_epoch(row)
            if ctx.distributed:
                import torch.distributed as dist

                dist.barrier()  # the checkpoint is complete before any rank moves on
    finally:
        reporter.stop()

    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return TrainResult(model=net, best_epoch=best_epoch, best_val=best_val, history=history, run_dir=run_dir,
                       epochs_run=cfg.epochs - start_epoch)


def _gather_rng(ctx: DistContext) -> list[dict[str, Any]]:
    """Every rank's RNG state (rank 0 stores them all so each rank resumes its own stream)."""
    state = ckpt.rng_state()
    if not ctx.distributed:
        return [state]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, state)
    return out


# --- frozen-backbone features (linear probe) ----------------------------------------------------

@torch.no_grad()
def _features(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    feats, labels = [], []
    for batch in loader:
        x, y = batch[0].to(device), batch[-2]
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels)


def _cached_features(model, dataset, data_cfg, cfg, ctx, run_dir, reporter_label) -> dict[str, torch.Tensor]:
    from defectopt.data.loading import MultiViewDataset, eval_transform

    key = f"{dataset.split_hash}:{data_cfg['input_size']}:{tuple(data_cfg['mean'])}:{tuple(data_cfg['std'])}"
    path = run_dir / "features.pt" if run_dir is not None else None
    if path is not None and path.is_file():
        cached = ckpt.load(path)
        if cached.get("key") == key:
            return cached
    if ctx.is_main and not cfg.quiet:
        print(f"{reporter_label}: computing frozen-backbone features once (train + val)")
    tf = eval_transform(data_cfg)
    out: dict[str, Any] = {"key": key}
    for split in ("train", "val"):
        ds = MultiViewDataset(dataset.root, dataset.split(split), [tf])
        loader = DataLoader(ds, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.workers)
        out[f"{split}_x"], out[f"{split}_y"] = _features(model, loader, ctx.device)
    if path is not None and ctx.is_main:
        ckpt.save_atomic(out, path)
    return out


# --- public entry point -------------------------------------------------------------------------

def train_model(
    store,
    *,
    model_id: int | None,
    model: nn.Module,
    dataset,
    cfg: TrainConfig,
    data_cfg: dict[str, Any],
    teacher: nn.Module | None = None,
    teacher_data_cfg: dict[str, Any] | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    loss_fn: LossFn | None = None,
    freeze_backbone: bool = False,
    on_step: StepHook | None = None,
    label: str | None = None,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train `model` on `dataset`'s frozen train split, select on its val split, return the best.

    model: any nn.Module mapping a normalized NCHW batch to logits (timm model, pruned model,
      fake-quant QAT model...). Its weights are updated in place; the returned model has the
      best epoch's weights, in eval mode, on the training device.
    dataset: a `DatasetInfo` (data.catalog.resolve_dataset).
    data_cfg / teacher_data_cfg: timm-style data configs (input_size, mean, std, interpolation)
      for the student's and the teacher's view of each (shared-augmentation) image.
    teacher: frozen during training (eval, no grad). Used by the default loss when cfg.alpha > 0
      (KD), and passed to a custom `loss_fn(student_logits, labels, teacher_logits)` if given.
    run_dir: checkpoint folder; default `<artifacts>/.runs/<model_id>/` when model_id is set.
      Remove it with `checkpoint.discard_run(result.run_dir)` after publishing the artifact.
    resume: continue from run_dir's last checkpoint (a fresh start when there is none).
    freeze_backbone: linear probe: the backbone's features (timm forward_features/forward_head
      with pre_logits) are computed once without augmentation and cached in run_dir; only
      `model.get_classifier()` is trained.
    on_step(epoch, batch_index): called after every batch (tests use it to interrupt a run).
    on_epoch(history_row): called after every epoch; raise StopTraining in it to end the run.
    Writes a TrainEpoch row per epoch for model_id (rank 0 only; pass store=None on other ranks).
    """
    from defectopt.data.loading import (
        MultiViewDataset,
        eval_transform,
        train_augmentation,
    )

    cfg.validate()
    ctx = context(cfg.device)
    label = label or (f"model {model_id}" if model_id is not None else "train")
    if cfg.amp == "fp16" and ctx.device.type != "cuda":
        raise DefectoptError("--amp fp16 needs CUDA; use --amp bf16 on CPU")
    if run_dir is None and model_id is not None:
        run_dir = from_main(lambda: ckpt.run_dir_for(store, model_id) if store is not None else None)
    if run_dir is not None:
        run_dir = Path(run_dir)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
    if len(dataset.split("train")) == 0 or len(dataset.split("val")) == 0:
        raise DefectoptError(f"dataset {dataset.name} has an empty train or val split; it needs more images")
    num_classes, task = dataset.num_classes, dataset.task
    class_weights = None
    train_labels = _labels(dataset.split("train"))
    if cfg.balance == "loss":
        class_weights = class_balanced_weights(train_labels, num_classes)
    use_teacher = teacher is not None and (cfg.alpha > 0 or loss_fn is not None)
    if cfg.alpha > 0 and teacher is None and loss_fn is None:
        raise DefectoptError("--alpha > 0 (knowledge distillation) needs a teacher")
    if use_teacher and freeze_backbone:
        raise DefectoptError("a linear probe (--freeze-backbone) cannot be distilled from a teacher")
    if loss_fn is None:
        def loss_fn(s_logits, y, t_logits, _w=class_weights):
            return kd_loss(s_logits, t_logits, y, alpha=cfg.alpha if t_logits is not None else 0.0,
                           temperature=cfg.temperature, class_weights=_w)

    if freeze_backbone:
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if not isinstance(head, nn.Module) or not any(True for _ in head.parameters()):
            raise DefectoptError("--freeze-backbone needs a timm model with a classifier head")
        model.to(ctx.device)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
        feats = _cached_features(model, dataset, data_cfg, cfg, ctx, run_dir, label)
        items = _TensorItems(feats["train_x"], feats["train_y"])
        val_loader = DataLoader(_TensorItems(feats["val_x"], feats["val_y"]), batch_size=cfg.eval_batch_size)
        result = _fit(store, ctx=ctx, model_id=model_id, net=head, items=items, labels=feats["train_y"],
                      val_loader=val_loader, num_classes=num_classes, task=task, cfg=cfg, teacher=None,
                      loss_fn=loss_fn, run_dir=run_dir, resume=resume, on_step=on_step, label=label, on_epoch=on_epoch)
        result.model = model.eval()
        return result

    views = [eval_transform(data_cfg)]
    if use_teacher:
        views.append(eval_transform(teacher_data_cfg or data_cfg))
    augment = train_augmentation(cfg.rotation_deg) if cfg.augment else None
    items = MultiViewDataset(dataset.root, dataset.split("train"), views, augment)
    val_ds = MultiViewDataset(dataset.root, dataset.split("val"), [eval_transform(data_cfg)])
    val_loader = DataLoader(val_ds, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.workers)
    return _fit(store, ctx=ctx, model_id=model_id, net=model, items=items, labels=train_labels,
                val_loader=val_loader, num_classes=num_classes, task=task, cfg=cfg,
                teacher=teacher if use_teacher else None, loss_fn=loss_fn, run_dir=run_dir, resume=resume,
                on_step=on_step, label=label, on_epoch=on_epoch)
