"""Torch-executed quantized formats, stored without pickle and rebuilt deterministically.

- `torch-int8-dynamic`: torch.ao dynamic INT8 Linear layers. Stored as real INT8: each
  quantized Linear's int8 weight, per-channel float64 scales, zero points and FP32 bias in
  safetensors, plus every other tensor in FP32. Loading rebuilds the FP32 skeleton, applies
  the same `quantize_dynamic` and overwrites each packed weight with the stored int8 one, so the
  reloaded model computes exactly what was saved.
- `torch-bf16` / `torch-fp16`: the state dict cast to bf16/fp16; the runner casts inputs.

The skeleton is the parent's architecture: the registry model, or a pruned one rebuilt from the
parent's stored structure (copied into meta.json as `skeleton`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from defectopt.errors import DefectoptError
from defectopt.models.artifacts import Artifact, register_torch_loader
from defectopt.models.formats import (
    FLOAT_FILE,
    FORMAT_PRUNED,
    FORMAT_TORCH,
    FORMAT_TORCH_BF16,
    FORMAT_TORCH_FP16,
    FORMAT_TORCH_INT8_DYNAMIC,
    WEIGHTS_FILE,
)
from defectopt.models.formats import INT8_LINEAR_FILE as INT8_FILE
from defectopt.quiet import quiet_libraries


def skeleton_meta(parent: Artifact) -> dict[str, Any]:
    """What rebuilds the parent's architecture (meta.json field `skeleton`)."""
    if parent.format == FORMAT_TORCH:
        return {"format": FORMAT_TORCH}
    if parent.format == FORMAT_PRUNED:
        return {"format": FORMAT_PRUNED, "structure": parent.meta["structure"]}
    raise DefectoptError(f"model {parent.id}: format '{parent.format}' has no rebuildable torch architecture")


def build_skeleton(artifact: Artifact) -> nn.Module:
    sk = artifact.meta.get("skeleton") or {"format": FORMAT_TORCH}
    if sk["format"] == FORMAT_TORCH:
        from defectopt.models.factory import create

        return create(artifact.alias, artifact.num_classes, artifact.img_size)
    if sk["format"] == FORMAT_PRUNED:
        from defectopt.models.pruned import rebuild

        return rebuild(artifact.alias, artifact.num_classes, artifact.img_size, sk["structure"])
    raise DefectoptError(f"model {artifact.id}: unknown skeleton format {sk['format']!r} in meta.json")


# --- dynamic INT8 -----------------------------------------------------------------------------


def linear_names(model: nn.Module, keep_fp: list[str] | None = None) -> list[str]:
    """Names of the nn.Linear modules to quantize (those outside the --keep-fp groups)."""
    keep = tuple(keep_fp or ())
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(n == g or n.startswith(g + ".") for g in keep)]


def quantize_dynamic(model: nn.Module, names: list[str]) -> nn.Module:
    """torch.ao dynamic INT8 (per-channel weights, per-batch activation ranges) of the named Linears."""
    from torch.ao.quantization import per_channel_dynamic_qconfig
    from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic

    if torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn"):
        torch.backends.quantized.engine = "x86"
    with quiet_libraries():
        return ao_quantize_dynamic(copy.deepcopy(model).eval().cpu(), {n: per_channel_dynamic_qconfig for n in names},
                                   dtype=torch.qint8)


def _dynamic_modules(qmodel: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    return {n: m for n, m in qmodel.named_modules() if isinstance(m, DynLinear)}


def save_dynamic(fp_model: nn.Module, qmodel: nn.Module, folder: Path) -> dict[str, Any]:
    """Write the INT8 Linear payload and the remaining FP32 tensors; returns size facts."""
    from safetensors.torch import save_file

    qmods = _dynamic_modules(qmodel)
    int8: dict[str, torch.Tensor] = {}
    for name, mod in qmods.items():
        w = mod.weight()
        int8[name + ".int8_weight"] = w.int_repr().contiguous()
        int8[name + ".scales"] = w.q_per_channel_scales().to(torch.float64).contiguous()
        int8[name + ".zero_points"] = w.q_per_channel_zero_points().to(torch.int64).contiguous()
        b = mod.bias()
        if b is not None:
            int8[name + ".bias"] = b.detach().float().contiguous()
    covered = {f"{n}.weight" for n in qmods} | {f"{n}.bias" for n in qmods}
    rest = {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
            for k, v in fp_model.state_dict().items() if k not in covered}
    save_file(int8, str(folder / INT8_FILE))
    save_file(rest, str(folder / FLOAT_FILE))
    q_params = sum(mod.weight().numel() for mod in qmods.values())
    total = sum(p.numel() for p in fp_model.parameters())
    return {"int8_linear": sorted(qmods), "int8_param_fraction": q_params / max(total, 1)}


@register_torch_loader(FORMAT_TORCH_INT8_DYNAMIC)
def load_dynamic(artifact: Artifact) -> nn.Module:
    from safetensors.torch import load_file

    names = artifact.meta.get("int8_linear")
    if not isinstance(names, list):
        raise DefectoptError(f"model {artifact.id} is '{FORMAT_TORCH_INT8_DYNAMIC}' but meta.json lists no int8_linear layers")
    model = build_skeleton(artifact)
    rest = load_file(str(artifact.file(FLOAT_FILE)))
    missing, unexpected = model.load_state_dict(rest, strict=False)
    expected_missing = {f"{n}.{leaf}" for n in names for leaf in ("weight", "bias")}
    if unexpected or set(missing) - expected_missing:
        raise DefectoptError(f"model {artifact.id}: stored tensors do not match the {artifact.alias} architecture")
    qmodel = quantize_dynamic(model, names)
    int8 = load_file(str(artifact.file(INT8_FILE)))
    qmods = _dynamic_modules(qmodel)
    if sorted(qmods) != sorted(names):
        raise DefectoptError(f"model {artifact.id}: quantized layers do not match meta.json")
    with quiet_libraries():
        for name, mod in qmods.items():
            qweight = torch._make_per_channel_quantized_tensor(
                int8[name + ".int8_weight"], int8[name + ".scales"], int8[name + ".zero_points"], 0)
            mod.set_weight_bias(qweight, int8.get(name + ".bias"))
    return qmodel.eval()


# --- bf16 / fp16 torch weights ------------------------------------------------------------------

HALF_DTYPES = {FORMAT_TORCH_BF16: torch.bfloat16, FORMAT_TORCH_FP16: torch.float16}


def save_half(model: nn.Module, folder: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v).contiguous().cpu()
             for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))


def _load_half(artifact: Artifact) -> nn.Module:
    from safetensors.torch import load_file

    dtype = HALF_DTYPES[artifact.format]
    model = build_skeleton(artifact).to(dtype)
    model.load_state_dict(load_file(str(artifact.file(WEIGHTS_FILE))))
    return model.eval()


register_torch_loader(FORMAT_TORCH_BF16)(_load_half)
register_torch_loader(FORMAT_TORCH_FP16)(_load_half)
