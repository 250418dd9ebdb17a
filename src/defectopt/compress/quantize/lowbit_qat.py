"""`quantize --method qat --bits B` for B < 8: low-bit QAT with the shared training engine (and KD
when --kd-from is given), stored as a simulated model (`models.lowbit`): an accuracy and
packed-size row, never timed as if it were fast.

Why torch fake quantization (straight-through estimator, per-channel symmetric weights) and not
NNCF or Brevitas: NNCF's QAT exports INT8 only, so its 2-6-bit models could not be deployed
either; Brevitas would add a dependency for the same simulation. What the study needs from
sub-8-bit is the accuracy curve, and this is the standard recipe behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectopt.compress.quantize.common import Parent, Result, begin_child, make_label
from defectopt.compress.quantize.options import QATConfig
from defectopt.compress.quantize.produce import produce
from defectopt.errors import DefectoptError
from defectopt.models import artifacts
from defectopt.models.formats import (
    FAKEQUANT_FILE,
    FORMAT_TORCH_LOWBIT_SIM,
    WEIGHTS_FILE,
)
from defectopt.store.db import Store

BITS = (2, 3, 4, 5, 6)


def run(store: Store, parent: Parent, *, bits: int, cfg: QATConfig, device: str = "cpu") -> Result:
    import copy

    from safetensors.torch import save_file

    from defectopt.compress.quantize.qat import qat_teacher
    from defectopt.models import lowbit
    from defectopt.train import checkpoint
    from defectopt.train.engine import TrainConfig, train_model

    if bits not in BITS:
        raise DefectoptError(f"--bits takes {', '.join(map(str, BITS))} (simulated) or 8 (deployable INT8), not {bits}")
    teacher, teacher_cfg = qat_teacher(store, cfg)
    spec = lowbit.describe(bits)
    params = {"bits": bits, "act_bits": spec["act_bits"], "epochs": cfg.epochs, "lr": cfg.lr,
              "batch_size": cfg.batch_size, "kd_from": cfg.kd_from, "alpha": cfg.alpha if teacher is not None else 0.0,
              "simulated": True}
    model = copy.deepcopy(parent.model).cpu()
    edges = lowbit.wrap(model, bits)
    train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, warmup_epochs=0.0, seed=cfg.seed,
                            device=device, alpha=params["alpha"], temperature=cfg.temperature, quiet=cfg.quiet)
    label = make_label(spec["precision"], "qat", "torch")
    model_id = begin_child(store, parent, method="qat",
                           params={**params, "backend": "torch", "precision": spec["precision"], "label": label})
    run_dirs: list[Path] = []  # the engine's checkpoint folder, discarded once the artifact is published

    def write(folder: Path, meta: dict[str, Any]) -> None:
        result = train_model(store, model_id=model_id, model=model, dataset=parent.dataset, cfg=train_cfg,
                             data_cfg=artifacts.data_config(parent.artifact), teacher=teacher,
                             teacher_data_cfg=teacher_cfg, label=f"QAT w{bits} {parent.artifact.alias}")
        trained = result.model.cpu().eval()
        lowbit.set_observers(trained, False)
        save_file(lowbit.base_state(trained), str(folder / WEIGHTS_FILE))
        save_file(lowbit.range_state(trained), str(folder / FAKEQUANT_FILE))
        meta.update(simulated=True, packed_bytes=lowbit.packed_bytes(trained),
                    lowbit={**spec, "base_format": parent.artifact.format, "edge_layers": edges},
                    qat={"best_epoch": result.best_epoch, "best_val": result.best_val})
        if "structure" in parent.artifact.meta:  # a pruned parent: its loader rebuilds the narrower layers
            meta["structure"] = parent.artifact.meta["structure"]
        if result.run_dir:
            run_dirs.append(result.run_dir)

    out = produce(store, parent, method="qat", backend="torch", precision=spec["precision"], fmt=FORMAT_TORCH_LOWBIT_SIM,
                  params=params, write=write, device=device, model_id=model_id,
                  notes=[f"simulated {bits}-bit weights: an accuracy and packed-size row; no CPU runtime here runs it, "
                         "so bench does not time it"])
    for run_dir in run_dirs:
        checkpoint.discard_run(run_dir)
    return out
