"""Simulated low-bit models (`torch-lowbit-sim`): every Conv2d/Linear computes with its weights
fake-quantized to B bits (symmetric, per output channel, straight-through estimator in training)
and its input fake-quantized to 8 bits (per tensor, asymmetric, ranges from a moving-average
observer). The first convolution and the classifier keep 8-bit weights (common practice: they
hold few weights and most of the low-bit damage).

No CPU runtime here executes 2-6-bit weights, so such a model is an accuracy row: bench scores it
on the frozen test split and stores its packed size (B bits per weight plus one FP32 scale per
output channel, everything else FP32) and never times it. The artifact holds the base model's
float weights (`model.safetensors`, keys of the plain architecture, loaded by the parent format's
own loader) and the activation ranges (`fakequant.safetensors`); nothing is pickled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from defectopt.errors import DefectoptError
from defectopt.models.artifacts import Artifact, load_torch_model, read_safetensors, register_torch_loader
from defectopt.models.formats import FAKEQUANT_FILE, FORMAT_TORCH_LOWBIT_SIM

ACT_BITS = 8
EDGE_BITS = 8  # first conv and classifier


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel fake quantization in [-(2^(b-1) - 1), 2^(b-1) - 1] x scale,
    with a straight-through gradient (2 bits: the ternary {-1, 0, 1} x scale)."""
    qmax = 2 ** (bits - 1) - 1
    dims = tuple(range(1, weight.dim()))
    scale = weight.detach().abs().amax(dim=dims, keepdim=True).clamp(min=1e-12) / qmax
    quantized = torch.round(weight / scale).clamp(-qmax, qmax) * scale
    return weight + (quantized - weight).detach()


class LowBit(nn.Module):
    """A Conv2d or Linear computing with B-bit weights and 8-bit inputs (both simulated)."""

    def __init__(self, inner: nn.Module, bits: int):
        super().__init__()
        from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver

        self.inner, self.bits = inner, bits
        self.act = FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=2 ** ACT_BITS - 1,
                                dtype=torch.quint8, qscheme=torch.per_tensor_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        w = fake_quant_weight(self.inner.weight, self.bits)
        if isinstance(self.inner, nn.Conv2d):
            c = self.inner
            return F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)
        return F.linear(x, w, self.inner.bias)


def wrap(model: nn.Module, bits: int) -> list[str]:
    """Replace every Conv2d/Linear in place; returns the names kept at EDGE_BITS."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not targets:
        raise DefectoptError("low-bit QAT needs Conv2d or Linear layers; this model has none")
    edges = {targets[0][0], targets[-1][0]}
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LowBit(module, EDGE_BITS if name in edges else bits))
    return sorted(edges)


def set_observers(model: nn.Module, enabled: bool) -> None:
    from torch.ao.quantization import disable_observer, enable_observer

    model.apply(enable_observer if enabled else disable_observer)


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The float weights under the plain architecture's names (no wrapper levels, no ranges)."""
    out = {}
    for key, value in model.state_dict().items():
        if ".act." in f".{key}" or key.startswith("act."):
            continue
        out[key.replace(".inner.", ".").removeprefix("inner.")] = value.detach().contiguous().cpu()
    return out


def range_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if ".act." in f".{k}"}


def packed_bytes(model: nn.Module) -> int:
    """Bytes of the model stored at its bit widths: B bits per quantized weight + an FP32 scale per
    output channel; every other parameter and buffer FP32 (the observers' own state left out)."""
    total, quantized = 0, set()
    for name, m in model.named_modules():
        if isinstance(m, LowBit):
            w = m.inner.weight
            total += (w.numel() * m.bits + 7) // 8 + w.shape[0] * 4
            quantized.add(f"{name}.inner.weight")
    for key, value in model.state_dict().items():
        if key in quantized or ".act." in f".{key}":
            continue
        total += value.numel() * 4
    return int(total)


@register_torch_loader(FORMAT_TORCH_LOWBIT_SIM)
def load_lowbit(artifact: Artifact) -> nn.Module:
    meta = artifact.meta.get("lowbit")
    if not isinstance(meta, dict) or "bits" not in meta or "base_format" not in meta:
        raise DefectoptError(f"model {artifact.id} is '{FORMAT_TORCH_LOWBIT_SIM}' but its meta.json has no lowbit record")
    base = load_torch_model(dataclasses.replace(artifact, format=meta["base_format"]))
    wrap(base, int(meta["bits"]))
    ranges = read_safetensors(artifact.file(FAKEQUANT_FILE))
    missing, unexpected = base.load_state_dict(ranges, strict=False)
    if unexpected or any(".act." in f".{k}" for k in missing):
        raise DefectoptError(f"model {artifact.id}: activation ranges do not fit the model")
    set_observers(base, False)  # ranges are frozen: the same input gives the same logits every time
    return base.eval()


def describe(bits: int) -> dict[str, Any]:
    return {"bits": bits, "act_bits": ACT_BITS, "edge_bits": EDGE_BITS, "precision": f"w{bits}a{ACT_BITS}-sim"}
