"""`defectopt finetune-teacher` and `defectopt distill` (also under `torchrun -m defectopt`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from defectopt.cli.app import DbOption, QuietOption, SplitSeedOption, app, console
from defectopt.train.options import DISTILL, FINETUNE, KD_ALPHA, RunRequest, TrainConfig
from defectopt.metrics import N

T, R = TrainConfig(), RunRequest(command=FINETUNE, model="")  # the defaults shown below are the entry points' own

SELECTION_HELP = (
    "The saved weights are those of the best epoch on the frozen val split: highest defect recall "
    "(macro recall for multi-class), ties broken by F1, among epochs whose F1 clears the best constant "
    "predictor's F1 (e.g. 'flag everything') by a quarter of the remaining headroom; if none does, the best F1 wins."
)

EpochsOption = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")]
BatchOption = Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch (per process under torchrun).")]
LrOption = Annotated[Optional[float], typer.Option(
    "--lr", help="AdamW peak learning rate (default: 1e-4 fine-tuning pretrained weights, 1e-3 from random init, "
                 "5e-3 linear probe).", show_default=False)]
WdOption = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (not applied to biases/norms).")]
WarmupOption = Annotated[float, typer.Option("--warmup-epochs", help="Linear warm-up length before the cosine decay.")]
AccumOption = Annotated[int, typer.Option("--grad-accum", min=1, help="Gradient accumulation steps per optimizer step.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Training seed (init, order, augmentation).")]
BalanceOption = Annotated[str, typer.Option(
    "--balance", help="Class balance for imbalanced data: none, loss (inverse-frequency CE weights) or sampler "
                      "(class-balanced sampling).")]
AmpOption = Annotated[str, typer.Option("--amp", help="Autocast: none, bf16 (CPU or CUDA) or fp16 (CUDA, with grad scaling).")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu or cuda.")]
AugmentOption = Annotated[bool, typer.Option("--augment/--no-augment", help="Flips and small rotations on training images.")]
WorkersOption = Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes.")]
ResumeOption = Annotated[Optional[int], typer.Option(
    "--resume", help="Continue the interrupted run of this model ID (its 'running'/'failed' row) to its final epoch; "
                     "the recipe comes from the row, only --device/--quiet/--workers apply.", show_default=False)]
PretrainedOption = Annotated[bool, typer.Option(
    "--pretrained/--no-pretrained", help="Start from timm's ImageNet weights (hub cache), or from random init.")]
WeightsOption = Annotated[Optional[str], typer.Option(
    "--weights", help="Imported weights NAME ('defectopt weights ls') or a local timm/safetensors checkpoint FILE to "
                      "start from (overrides --pretrained); imported weights bring their input size and normalization.",
    show_default=False)]
ImgSizeOption = Annotated[Optional[int], typer.Option("--img-size", min=16, help="Input side in pixels.", show_default=False)]


def _config(epochs, batch_size, weight_decay, warmup_epochs, grad_accum, seed, balance, amp, device, augment,
            workers, quiet, alpha=T.alpha, temperature=T.temperature):
    return TrainConfig(epochs=epochs, batch_size=batch_size, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                       grad_accum=grad_accum, seed=seed, balance=balance.lower(), amp=amp.lower(), device=device.lower(),
                       augment=augment, workers=workers, quiet=quiet, alpha=alpha, temperature=temperature)


def _open_store_main(db, device: str):
    """The store on rank 0 only: under torchrun the other ranks never open the DB."""
    from defectopt.store.db import open_store
    from defectopt.train.distributed import context

    return open_store(db) if context(device).is_main else None


def _report(outcome, what: str) -> None:
    from defectopt.train.distributed import is_main_process

    if not is_main_process():
        return
    v = outcome.best_val
    console.print(
        f"[bold green]ready[/] model {outcome.model_id}: {what}; best epoch {outcome.best_epoch} "
        f"val recall {v.get(N.recall, 0):.4f} precision {v.get('precision', 0):.4f} F1 {v.get(N.f1, 0):.4f}",
        highlight=False,
    )


@app.command("finetune-teacher", help="Fine-tune a teacher (any registry alias) on a dataset; registers a ready model.\n\n"
             + SELECTION_HELP)
def finetune_teacher_cmd(
    model: Annotated[Optional[str], typer.Option("--model", help="Registry alias, e.g. vit_b16, convnext_base, efficientnet_b7.", show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset spec: neu:PATH, mvtec:PATH, dagm:PATH, folder:PATH or synthetic[:N].", show_default=False)] = None,
    pretrained: PretrainedOption = R.pretrained,
    weights: WeightsOption = R.weights,
    freeze_backbone: Annotated[bool, typer.Option(
        "--freeze-backbone", help="Linear probe: train only the classifier head on frozen features, computed once and cached.")] = R.freeze_backbone,
    epochs: EpochsOption = T.epochs,
    img_size: ImgSizeOption = R.img_size,
    batch_size: BatchOption = T.batch_size,
    lr: LrOption = R.lr,
    weight_decay: WdOption = T.weight_decay,
    warmup_epochs: WarmupOption = T.warmup_epochs,
    grad_accum: AccumOption = T.grad_accum,
    seed: SeedOption = T.seed,
    balance: BalanceOption = T.balance,
    amp: AmpOption = T.amp,
    device: DeviceOption = T.device,
    augment: AugmentOption = T.augment,
    workers: WorkersOption = T.workers,
    split_seed: SplitSeedOption = 0,
    resume: ResumeOption = None,
    quiet: QuietOption = False,
    db: DbOption = None,
):
    from defectopt.errors import DefectoptError
    from defectopt.train.api import finetune_teacher

    cfg = _config(epochs, batch_size, weight_decay, warmup_epochs, grad_accum, seed, balance, amp, device, augment,
                  workers, quiet)
    if resume is None and (not model or not data):
        raise DefectoptError("finetune-teacher needs --model ALIAS and --data SPEC (or --resume ID)")
    req = RunRequest(command=FINETUNE, model=model or "", data=data, split_seed=split_seed, img_size=img_size,
                     pretrained=pretrained, weights=str(weights) if weights else None,
                     freeze_backbone=freeze_backbone, lr=lr, train=cfg)
    store = _open_store_main(db, device)
    outcome = finetune_teacher(store, req, resume_id=resume, echo=lambda t: console.print(t, highlight=False))
    _report(outcome, f"teacher on {outcome.dataset}, init: {outcome.init}")


@app.command("distill", help="Distill a frozen teacher into a student alias (--alpha 0: the no-KD baseline with the "
             "identical recipe); registers a ready model whose parent is the teacher.\n\n" + SELECTION_HELP)
def distill_cmd(
    teacher: Annotated[Optional[str], typer.Option(
        "--teacher", help="Teacher model ID, or an alias meaning its latest ready finetuned model on the dataset.", show_default=False)] = None,
    student: Annotated[Optional[str], typer.Option("--student", help="Student registry alias, e.g. mobilevit_s, efficientnet_b0.", show_default=False)] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="KD weight: (1-α)·CE + α·T²·KL(teacher‖student); 0 = no-KD baseline.")] = KD_ALPHA,
    temperature: Annotated[float, typer.Option("--temperature", min=1e-3, help="KD softmax temperature T.")] = T.temperature,
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset spec (default: the teacher's dataset).", show_default=False)] = None,
    pretrained: PretrainedOption = R.pretrained,
    weights: WeightsOption = R.weights,
    epochs: EpochsOption = T.epochs,
    img_size: Annotated[Optional[int], typer.Option("--img-size", min=16, help="Student input side (default: the teacher's).", show_default=False)] = R.img_size,
    batch_size: BatchOption = T.batch_size,
    lr: LrOption = R.lr,
    weight_decay: WdOption = T.weight_decay,
    warmup_epochs: WarmupOption = T.warmup_epochs,
    grad_accum: AccumOption = T.grad_accum,
    seed: SeedOption = T.seed,
    balance: BalanceOption = T.balance,
    amp: AmpOption = T.amp,
    device: DeviceOption = T.device,
    augment: AugmentOption = T.augment,
    workers: WorkersOption = T.workers,
    split_seed: SplitSeedOption = 0,
    resume: ResumeOption = None,
    quiet: QuietOption = False,
    db: DbOption = None,
):
    from defectopt.errors import DefectoptError
    from defectopt.train.api import distill

    cfg = _config(epochs, batch_size, weight_decay, warmup_epochs, grad_accum, seed, balance, amp, device, augment,
                  workers, quiet, alpha=alpha, temperature=temperature)
    if resume is None and (not teacher or not student):
        raise DefectoptError("distill needs --teacher ID|ALIAS and --student ALIAS (or --resume ID)")
    req = RunRequest(command=DISTILL, model=student or "", data=data, split_seed=split_seed, img_size=img_size,
                     pretrained=pretrained, weights=str(weights) if weights else None, teacher=teacher, lr=lr,
                     train=cfg)
    store = _open_store_main(db, device)
    outcome = distill(store, req, resume_id=resume, echo=lambda t: console.print(t, highlight=False))
    kind = f"KD α={alpha:g} T={temperature:g}" if alpha > 0 else "no-KD baseline"
    if resume is not None:
        kind = "resumed distillation"
    _report(outcome, f"student of teacher {outcome.teacher_id} ({kind}) on {outcome.dataset}")
