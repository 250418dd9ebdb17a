"""Weight-only integer compression of an OpenVINO IR (NNCF `compress_weights`): the weights of
MatMul/Linear layers (and, with all_layers, convolutions) stored as INT8 or INT4 with per-group
scales, activations left in float. Data-free. OpenVINO's CPU plugin decompresses the weights
inside its matmul kernels, so this is a real deployable artifact, mostly for ViTs (most of their
weights are Linear); a CNN's convolutions are compressed only with all_layers. Whether it is
faster than FP32 or INT8 static depends on the model: bench says, in the same runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectopt.compress.quantize.common import Parent, Result
from defectopt.compress.quantize.produce import produce
from defectopt.compress.quantize.static import ov_fp32_model, save_openvino
from defectopt.errors import DefectoptError
from defectopt.quiet import quiet_libraries
from defectopt.store.db import Store

MODES = {"int4": "INT4_SYM", "int8": "INT8_ASYM"}  # NNCF CompressWeightsMode per bit width


def run(store: Store, parent: Parent, *, bits: str, group_size: int, ratio: float, all_layers: bool,
        device: str = "cpu", float_precision: str = "fp32") -> Result:
    if device != "cpu":
        raise DefectoptError("weight-only compression targets OpenVINO on --device cpu")
    if bits not in MODES:
        raise DefectoptError(f"weight-only compression takes int4 or int8, not '{bits}'")
    params: dict[str, Any] = {"weights": bits, "inference_precision": float_precision}
    if bits == "int4":
        params.update(group_size=group_size, ratio=ratio, all_layers=all_layers)

    def write(folder: Path, meta: dict[str, Any]) -> None:
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)
        kwargs: dict[str, Any] = {"mode": getattr(nncf.CompressWeightsMode, MODES[bits])}
        if bits == "int4":  # NNCF's INT8 modes take none of these
            kwargs.update(group_size=group_size, ratio=ratio, all_layers=all_layers)
        with quiet_libraries():
            try:
                compressed = nncf.compress_weights(ov_fp32_model(parent), **kwargs)
            except Exception as exc:  # e.g. a channel count not divisible by the group size
                raise DefectoptError(f"NNCF weight compression failed: {str(exc).splitlines()[0][:200]}") from None
        save_openvino(compressed, folder)
        meta.update(inference_precision=float_precision, weights_storage=bits)

    from defectopt.models.formats import FORMAT_OPENVINO

    precision = f"{bits}w"  # integer weights, float activations
    return produce(store, parent, method=f"weights-{bits}", backend="openvino", precision=precision,
                   fmt=FORMAT_OPENVINO, params=params, write=write, device=device,
                   label_suffix="" if float_precision == "fp32" else f"+{float_precision}")
