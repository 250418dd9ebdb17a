"""Quantization-aware training: NNCF inserts fake quantizers into the torch model (initialised
by PTQ calibration), the shared train engine fine-tunes it a few epochs with straight-through
gradients (optionally distilling from `--kd-from ID`), and the result is converted to an
OpenVINO INT8 IR: the fake quantizers become real INT8 ops, the same engine as `static`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from defectopt.compress.quantize.common import Parent, Result, begin_child, make_label
from defectopt.compress.quantize.options import QATConfig
from defectopt.compress.quantize.produce import produce
from defectopt.compress.quantize.static import (
    TRANSFORMER_FAMILIES,
    grid_label,
    nncf_advanced_parameters,
    resolve_overflow_fix,
    save_openvino,
)
from defectopt.errors import DefectoptError
from defectopt.models import artifacts
from defectopt.quiet import quiet_libraries
from defectopt.store.db import Store


def fake_quant_model(parent: Parent, calib: list[np.ndarray], keep_fp: list[str] | None = None,
                     overflow_fix: str = "auto"):
    """The parent with NNCF fake quantizers, initialised from calibration (a copy: parent untouched).
    The weight grid (`overflow_fix`) is trained as is: the IR's INT8 weights keep it."""
    import logging

    import nncf
    import torch

    nncf.set_log_level(logging.ERROR)
    kwargs: dict[str, Any] = {"advanced_parameters": nncf_advanced_parameters(overflow_fix)}
    if parent.family in TRANSFORMER_FAMILIES:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if keep_fp:
        # NNCF torch node names carry the module path, e.g. "blocks.3.attn.qkv/linear/0"
        import re

        kwargs["ignored_scope"] = nncf.IgnoredScope(patterns=[rf".*\b{re.escape(g)}[./]" for g in keep_fp], validate=False)
    data = [torch.from_numpy(x) for x in calib]
    with quiet_libraries():
        try:
            return nncf.quantize(copy.deepcopy(parent.model).cpu().eval(), nncf.Dataset(data), subset_size=len(data), **kwargs)
        except Exception as exc:
            raise DefectoptError(f"NNCF could not insert fake quantizers into {parent.artifact.alias}: "
                                 f"{str(exc).splitlines()[0][:200]}; use --method static") from None


def qat_teacher(store: Store, cfg: QATConfig):
    """(teacher module, its data config) for KD during QAT, or (None, None); checks the epochs."""
    if cfg.epochs < 1:
        raise DefectoptError("--epochs must be at least 1 for QAT")
    if cfg.kd_from is None:
        return None, None
    t_art = artifacts.load_artifact(store, cfg.kd_from)
    return artifacts.load_torch_model(t_art).eval(), artifacts.data_config(t_art)


def run(store: Store, parent: Parent, *, calib: list[np.ndarray], cfg: QATConfig, keep_fp: list[str] | None = None,
        device: str = "cpu", backend: str = "openvino", float_precision: str = "fp32", overflow_fix: str = "auto") -> Result:
    import openvino as ov
    import torch

    from defectopt.models.formats import FORMAT_OPENVINO
    from defectopt.train import checkpoint
    from defectopt.train.engine import TrainConfig, train_model

    if backend not in ("openvino", "auto"):
        raise DefectoptError(f"--method qat exports through NNCF to --backend openvino, not '{backend}'")
    teacher, teacher_cfg = qat_teacher(store, cfg)
    overflow_fix = resolve_overflow_fix(overflow_fix)
    params = {"calib_images": len(calib), "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
              "kd_from": cfg.kd_from, "alpha": cfg.alpha if teacher is not None else 0.0,
              "inference_precision": float_precision, "overflow_fix": overflow_fix}
    label = make_label("int8", "qat", "openvino", keep_fp) + grid_label(overflow_fix)
    model_id = begin_child(store, parent, method="qat",
                           params={**params, "backend": "openvino", "precision": "int8", "label": label,
                                   "keep_fp": keep_fp or []})
    try:
        qmodel = fake_quant_model(parent, calib, keep_fp, overflow_fix)
        train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, warmup_epochs=0.0,
                                seed=cfg.seed, device=device, alpha=params["alpha"], temperature=cfg.temperature,
                                quiet=cfg.quiet)
        with quiet_libraries():
            result = train_model(store, model_id=model_id, model=qmodel, dataset=parent.dataset, cfg=train_cfg,
                                 data_cfg=artifacts.data_config(parent.artifact), teacher=teacher,
                                 teacher_data_cfg=teacher_cfg, label=f"QAT {parent.artifact.alias}")
            trained = result.model.cpu().eval()
            size = parent.img_size
            # the fake quantizers convert to OpenVINO FakeQuantize ops, folded to INT8 weights on save
            ov_model = ov.convert_model(trained, example_input=torch.zeros(1, 3, size, size), input=[(-1, 3, size, size)])
    except BaseException as exc:
        artifacts.mark_failed(store, model_id, f"{type(exc).__name__}: {exc}")
        raise

    def write(folder: Path, meta: dict[str, Any]) -> None:
        save_openvino(ov_model, folder)
        meta.update(inference_precision=float_precision, qat={"best_epoch": result.best_epoch, "best_val": result.best_val})

    out = produce(store, parent, method="qat", backend="openvino", precision="int8", fmt=FORMAT_OPENVINO, params=params,
                  write=write, keep_fp=keep_fp, device="cpu", model_id=model_id, label_suffix=grid_label(overflow_fix))
    checkpoint.discard_run(result.run_dir)
    return out
