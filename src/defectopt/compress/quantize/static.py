"""Static INT8 PTQ: weights and activations INT8, activation ranges calibrated on train images.

Backends (a recorded choice, see `BACKENDS`):
- `openvino` (default): OpenVINO IR quantized by NNCF (`nncf.quantize`, `ModelType.TRANSFORMER`
  for ViT/MobileViT). The fastest INT8 path on this CPU for every architecture measured.
- `onnxruntime`: ONNX Runtime static QDQ (U8 activations, per-channel S8 weights). For
  transformers only the weight MatMul/Gemm are quantized (see `ort_targets`): QDQ around every
  op (LayerNorm, Softmax, GELU, Add) costs ViT fidelity (logit-margin correlation 0.3-0.9).
- `pt2e` / `fx`: refused with the reason and the backend to use instead (see `refuse_backend`).

`--keep-fp` groups stay in float (NNCF ignored_scope / ORT nodes_to_exclude); `only_group`
quantizes a single group (sensitivity analysis). `--overflow-fix` picks the weight grid
(`resolve_overflow_fix`): full 8-bit, or half of it where the CPU's INT8 kernels would saturate.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from defectopt.compress.quantize.common import Parent
from defectopt.errors import DefectoptError
from defectopt.quiet import quiet_libraries

BACKENDS = ("openvino", "onnxruntime", "pt2e", "fx")
# Tried and measured (benchmarks/check_pt2e.py): with torch 2.15 + torchao 0.18, Inductor cannot
# compile X86InductorQuantizer's converted graph (torchao's weight-prepack pass emits
# onednn.qconv_prepack as an op packet), and run uncompiled the graph executes reference
# quantize/dequantize ops, slower than FP32. Offered again once that script passes.
PT2E_BLOCKED = ("--backend pt2e is not offered: torch.compile cannot lower torchao's PT2E INT8 graph with the installed "
                "torch/torchao (run benchmarks/check_pt2e.py), and uncompiled it is slower than FP32; "
                "use --backend openvino (fastest INT8 here) or onnxruntime")
TRANSFORMER_FAMILIES = ("vit", "mobilevit")


def refuse_backend(backend: str, family: str, alias: str) -> None:
    """One-line refusals where a static backend does not give a usable INT8 model."""
    if backend == "pt2e":
        if family == "mobilevit":
            raise DefectoptError(f"PT2E INT8 is far slower than FP32 on {alias} (its unfold/fold attention defeats "
                                 "Inductor's INT8 fusions); use --backend openvino")
        raise DefectoptError(PT2E_BLOCKED)
    if backend == "fx":
        if family == "mobilevit":
            raise DefectoptError(f"torch FX graph mode cannot trace {alias} (data-dependent control flow); "
                                 "use --backend openvino or onnxruntime")
        raise DefectoptError("--backend fx (torch.ao FX graph mode, deprecated upstream in favour of PT2E) is not "
                             "offered: its converted GraphModule cannot be stored without pickle; "
                             "use --backend openvino or onnxruntime")
    if backend not in BACKENDS:
        raise DefectoptError(f"unknown static backend '{backend}'; choose from {', '.join(BACKENDS)}")


def resolve_overflow_fix(choice: str) -> str:
    """NNCF's overflow_fix for `choice` ("auto": by this CPU). Without VNNI/AMX the x86 INT8 kernels
    add u8 x s8 products pairwise into int16 and saturate on large weights, so the deployed model
    computes something other than what was calibrated (or trained, for QAT): measured on an AVX2
    host (benchmarks/int8_runtime_fidelity.py), NNCF's default first-layer fix left OpenVINO's
    INT8 Lite0 disagreeing with its own fake-quant simulation on 27 of 360 val images (runtime val
    recall 0.911 vs simulated 0.975), half-range weights in every dense layer on 3 (0.969 vs 0.967)."""
    if choice != "auto":
        return choice
    from defectopt.bench.host import cpu_has_int8_dot

    return "first_layer_only" if cpu_has_int8_dot() else "enable"


def grid_label(overflow_fix: str) -> str:
    """Label suffix of a weight grid other than NNCF's default (first layer on 7 bits): rows that
    differ only in it must not share a lineage label."""
    return {"enable": "+w7", "disable": "+w8"}.get(overflow_fix, "")


def nncf_advanced_parameters(overflow_fix: str):
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    return AdvancedQuantizationParameters(overflow_fix=OverflowFix(resolve_overflow_fix(overflow_fix)))


# --- OpenVINO + NNCF ----------------------------------------------------------------------------


def _ov_group_pattern(group: str) -> str:
    # OpenVINO node names from ov.convert_model: "__module.blocks.3.attn.qkv/aten::linear/MatMul"
    return rf"__module\.{re.escape(group)}[./]"


def ov_fp32_model(parent: Parent):
    import openvino as ov
    import torch

    with quiet_libraries():
        return ov.convert_model(parent.model, example_input=torch.zeros(1, 3, parent.img_size, parent.img_size),
                                input=[(-1, 3, parent.img_size, parent.img_size)])


def quantize_openvino(parent: Parent, calib: list[np.ndarray], *, keep_fp: list[str] | None = None,
                      only_group: str | None = None, fp_model=None, overflow_fix: str = "auto"):
    """NNCF INT8 ov.Model. keep_fp groups stay float; only_group quantizes that group alone."""
    import nncf

    patterns = [_ov_group_pattern(g) for g in keep_fp or []]
    if only_group is not None:
        patterns.append(rf"(?!{_ov_group_pattern(only_group)})")  # every node outside the group
    kwargs: dict[str, Any] = {"advanced_parameters": nncf_advanced_parameters(overflow_fix)}
    if parent.family in TRANSFORMER_FAMILIES:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if patterns:
        kwargs["ignored_scope"] = nncf.IgnoredScope(patterns=patterns, validate=False)
    with quiet_libraries():
        _nncf_quiet()
        try:
            return nncf.quantize(fp_model if fp_model is not None else ov_fp32_model(parent), nncf.Dataset(calib),
                                 subset_size=len(calib), **kwargs)
        except Exception as exc:  # NNCF raises many types; the first line says what failed
            raise DefectoptError(f"NNCF quantization of {parent.artifact.alias} failed: {str(exc).splitlines()[0][:200]}; "
                                 "try --backend onnxruntime") from None


def _nncf_quiet() -> None:
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)


def save_openvino(ov_model, folder: Path) -> Path:
    import openvino as ov

    from defectopt.models.formats import OPENVINO_XML

    path = folder / OPENVINO_XML
    # compress_to_fp16=False: weights NNCF quantized are stored INT8; the rest stays FP32
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path


# --- ONNX Runtime static QDQ ---------------------------------------------------------------------


def export_fp32_onnx(parent: Parent, folder: Path) -> Path:
    from defectopt.models.export import export_onnx

    path = folder / "fp32.onnx"
    with quiet_libraries():
        export_onnx(parent.model, parent.img_size, path)
    return path


def onnx_graph_facts(path: Path) -> dict[str, list[str]]:
    """Node names, the weight MatMul/Gemm nodes (one input is an initializer), and the nodes
    that write the graph outputs (the classifier)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    return {
        "names": [n.name for n in graph.node],
        "weight_matmuls": [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and inits & set(n.input)],
        "output_producers": [n.name for n in graph.node if outputs & set(n.output)],
    }


def ort_targets(facts: dict[str, list[str]], family: str, *, keep_fp: list[str] | None = None,
                only_group: str | None = None) -> list[str] | None:
    """Nodes ORT may quantize (None: every supported op).

    Transformers: only weight MatMul/Gemm (activation x activation MatMuls in attention and
    QDQ around LayerNorm/Softmax/GELU cost fidelity for no speed; measured on vit_t16 at 224:
    margin correlation 0.91 -> 0.996, and faster). The classifier always stays float: ORT
    would quantize the logits themselves to uint8.
    """
    excluded = set(facts["output_producers"])
    excluded |= {n for n in facts["names"] if any(_in_group(n, g) for g in keep_fp or [])}
    pool = facts["weight_matmuls"] if family in TRANSFORMER_FAMILIES else facts["names"]
    if only_group is not None:
        pool = [n for n in pool if _in_group(n, only_group)]
    elif family not in TRANSFORMER_FAMILIES:
        return None
    return [n for n in pool if n not in excluded]


def _in_group(node_name: str, group: str) -> bool:
    # torch.onnx node names: "/blocks/blocks.3/attn/qkv/MatMul", "/head/fc/Gemm", "/layer1/layer1.0/conv1/Conv"
    return f"/{group}/" in node_name


class _CalibrationReader:
    def __init__(self, input_name: str, calib: list[np.ndarray]):
        self.input_name = input_name
        self._it = iter(calib)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}


def quantize_onnx(parent: Parent, calib: list[np.ndarray], out_path: Path, *, keep_fp: list[str] | None = None,
                  only_group: str | None = None, fp32_path: Path | None = None, overflow_fix: str = "auto") -> dict[str, Any]:
    """Static QDQ INT8 ONNX at out_path; returns the quantization settings (recorded in meta).
    ORT has no first-layer-only fix: "enable" is its reduce_range (7-bit weights), else full range."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    reduce_range = resolve_overflow_fix(overflow_fix) == "enable"
    with tempfile.TemporaryDirectory() as tmp:
        src = fp32_path or export_fp32_onnx(parent, Path(tmp))
        facts = onnx_graph_facts(src)
        targets = ort_targets(facts, parent.family, keep_fp=keep_fp, only_group=only_group)
        if targets is not None and not targets:
            raise DefectoptError(f"nothing to quantize in {only_group or parent.artifact.alias} with ONNX Runtime")
        exclude = [n for n in facts["names"] if n in set(facts["output_producers"])
                   or any(_in_group(n, g) for g in keep_fp or [])]
        transformer = parent.family in TRANSFORMER_FAMILIES
        extra = {"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]} if transformer else {}
        with quiet_libraries():
            try:
                quantize_static(
                    str(src), str(out_path), _CalibrationReader("input", calib), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_quantize=targets, nodes_to_exclude=exclude or None,
                    calibrate_method=CalibrationMethod.MinMax, extra_options=extra,
                )
            except Exception as exc:
                raise DefectoptError(f"ONNX Runtime static quantization of {parent.artifact.alias} failed: "
                                     f"{str(exc).splitlines()[0][:200]}; try --backend openvino") from None
    return {"quant_format": "QDQ", "per_channel": True, "activations": "uint8",
            "weights": "int8, 7-bit range (reduce_range)" if reduce_range else "int8",
            "nodes": "weight MatMul/Gemm" if transformer else "all", "nodes_quantized": len(targets) if targets else "all",
            "nodes_excluded": len(exclude), "classifier": "float"}


# --- the method ------------------------------------------------------------------------------


def run(store, parent: Parent, *, backend: str = "openvino", calib: list[np.ndarray], keep_fp: list[str] | None = None,
        device: str = "cpu", float_precision: str = "fp32", overflow_fix: str = "auto"):
    """One static INT8 child row (format openvino or onnx), scored on val in its own runtime."""
    from defectopt.compress.quantize.produce import produce

    refuse_backend(backend, parent.family, parent.artifact.alias)
    if device != "cpu":
        raise DefectoptError(f"static INT8 via {backend} is a CPU deployment path here; use --device cpu")
    overflow_fix = resolve_overflow_fix(overflow_fix)
    params: dict[str, Any] = {"calib_images": len(calib), "overflow_fix": overflow_fix}
    if backend == "openvino":
        from defectopt.models.formats import FORMAT_OPENVINO

        qmodel = quantize_openvino(parent, calib, keep_fp=keep_fp, overflow_fix=overflow_fix)

        def write(folder: Path, meta: dict[str, Any]) -> None:
            save_openvino(qmodel, folder)
            meta.update(inference_precision=float_precision,
                        nncf={"model_type": "transformer" if parent.family in TRANSFORMER_FAMILIES else "default",
                              "subset_size": len(calib), "overflow_fix": overflow_fix})

        params["inference_precision"] = float_precision
        return produce(store, parent, method="static", backend="openvino", precision="int8", fmt=FORMAT_OPENVINO,
                       params=params, write=write, keep_fp=keep_fp, device=device,
                       label_suffix=("+bf16" if float_precision == "bf16" else "") + grid_label(overflow_fix))

    from defectopt.models.formats import FORMAT_ONNX, ONNX_FILE

    params["overflow_fix"] = "enable" if overflow_fix == "enable" else "disable"  # ORT: reduce_range or full range

    def write_onnx(folder: Path, meta: dict[str, Any]) -> None:
        meta["ort_quantization"] = quantize_onnx(parent, calib, folder / ONNX_FILE, keep_fp=keep_fp,
                                                 overflow_fix=overflow_fix)

    return produce(store, parent, method="static", backend="onnxruntime", precision="int8", fmt=FORMAT_ONNX,
                   params=params, write=write_onnx, keep_fp=keep_fp, device=device,
                   label_suffix=grid_label("enable") if overflow_fix == "enable" else "")


def speed_cost(parent: Parent, calib: list[np.ndarray], *, backend: str, keep_fp: list[str], mixed_id_artifact,
               float_precision: str = "fp32", quick: bool = False, overflow_fix: str = "auto") -> dict[str, float]:
    """What keeping layers in float costs: FP32, full INT8 and the mixed model, timed side by side
    (interleaved, batch 1) in the same runtime."""
    from defectopt.bench import timing
    from defectopt.bench.runners import open_runner
    from defectopt.bench.runners.onnx_runner import OnnxRuntimeRunner
    from defectopt.bench.runners.openvino_runner import OpenVINORunner

    cfg = timing.QUICK if quick else timing.TimingConfig(min_iters=20, min_seconds=1.0, blocks=4, max_seconds=8.0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if backend == "openvino":
            fp = ov_fp32_model(parent)
            fp_dir, q_dir = tmp / "fp32", tmp / "int8"
            fp_dir.mkdir()
            q_dir.mkdir()
            save_openvino(fp, fp_dir)
            # fresh conversion: NNCF may rewrite the model it is given (smooth quant)
            save_openvino(quantize_openvino(parent, calib, fp_model=ov_fp32_model(parent), overflow_fix=overflow_fix), q_dir)
            runners = {
                "fp32": OpenVINORunner(parent.artifact, path=fp_dir / "model.xml", inference_precision="fp32"),
                "int8": OpenVINORunner(parent.artifact, path=q_dir / "model.xml", inference_precision=float_precision),
            }
        else:
            fp_path = export_fp32_onnx(parent, tmp)
            quantize_onnx(parent, calib, tmp / "int8.onnx", fp32_path=fp_path, overflow_fix=overflow_fix)
            runners = {"fp32": OnnxRuntimeRunner(parent.artifact, path=fp_path),
                       "int8": OnnxRuntimeRunner(parent.artifact, path=tmp / "int8.onnx")}
        runners[f"int8+fp{len(keep_fp)}"] = open_runner(mixed_id_artifact)
        res = timing.compare_interleaved(runners, img_size=parent.img_size, cfg=cfg)
        mixed = f"int8+fp{len(keep_fp)}"
        out = {f"{k}_ms": res.results[k].per_image_ms for k in runners}
        out["int8_speedup_vs_fp32"] = res.speedup("fp32", "int8")
        out["mixed_speedup_vs_fp32"] = res.speedup("fp32", mixed)
        out["mixed_cost_vs_int8"] = res.speedup(mixed, "int8")  # > 1: the mixed model is this much slower
        for r in runners.values():
            r.close()
    return out
