"""Structured pruning with Torch-Pruning's dependency graph: narrower layers, really faster.

The dependency graph finds every group of coupled channels (a conv's outputs, the BatchNorm
after it, the next conv's inputs, a residual stream shared by a whole stage...) and removes
whole groups, so the result is an ordinary dense model with smaller tensors.

- CNNs (ConvNeXt, EfficientNet, MobileViT, ResNet): channels of every prunable group.
- ViTs (timm `Attention`): whole attention heads (head_dim stays, so the softmax scale and the
  fused SDPA kernel are unchanged), the MLP hidden width and the embedding width. timm 1.0.31
  reshapes with `num_heads`, `head_dim` and `attn_dim`; they are updated after every step, so
  the stock forward runs the pruned model (no patching).
- The classifier keeps its outputs (its inputs shrink with the features).

`round_to` keeps widths multiples of 8 so GEMM/conv kernels of every runtime stay on their
fast paths; `pruning_ratio` shrinks both inputs and outputs, so parameters and MACs fall about
(1 - r)^2.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from defectopt.errors import DefectoptError

IMPORTANCES = ("l1", "l2", "taylor", "random")


@dataclass(frozen=True)
class StructuredConfig:
    ratio: float
    importance: str = "l1"
    global_pruning: bool = False
    iterative_steps: int = 1
    round_to: int | None = 8
    seed: int = 0


def _importance(name: str):
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    raise DefectoptError(f"unknown importance '{name}'; choose one of {', '.join(IMPORTANCES)}")


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """timm multi-head attention modules whose heads can be removed (qkv fused in one Linear)."""
    from timm.layers import Attention

    return [m for m in model.modules()
            if isinstance(m, Attention) and isinstance(getattr(m, "qkv", None), nn.Linear) and m.gate is None]


def _head_schedule(initial_heads: int, ratio: float, steps: int) -> list[float]:
    """Per-step head ratios for torch-pruning's local head pruning.

    torch-pruning removes ceil(ratio_k x *current* heads) at step k, which over-prunes when
    steps > 1 (6 heads, r=0.5, 2 steps -> 6, 4, 2). This gives ratios relative to the current
    count so that step k keeps floor(H0 x (1 - r k / K)) heads, as a one-step run would.
    """
    schedule = [0.0]
    current = initial_heads
    for k in range(1, steps + 1):
        target = max(1, math.floor(initial_heads * (1 - ratio * k / steps) + 1e-9))
        remove = current - target
        # slightly below the exact fraction so ceil() gives `remove`, never one more
        schedule.append((remove - 1e-6) / current if remove > 0 else 0.0)
        current = target
    return schedule


def _sync_attention(attn_modules: Iterable[nn.Module], num_heads: dict[nn.Module, int]) -> None:
    for m in attn_modules:
        heads = num_heads[m.qkv]
        attn_dim = m.qkv.out_features // 3
        if attn_dim % heads or attn_dim // heads != m.head_dim:
            raise DefectoptError(f"head pruning left an inconsistent attention ({attn_dim} dims for {heads} heads)")
        m.num_heads = heads
        m.attn_dim = attn_dim


def prune_structured(
    model: nn.Module,
    *,
    img_size: int,
    cfg: StructuredConfig,
    calibration: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None,
) -> dict[str, Any]:
    """Prune `model` in place; returns a summary (kept heads per attention, widths...).

    `calibration()` yields (images, labels) batches; it is required for taylor importance,
    whose scores are |weight x gradient| of the cross-entropy on those batches.
    """
    import torch_pruning as tp

    if not 0 < cfg.ratio < 1:
        raise DefectoptError(f"pruning ratio must be between 0 and 1 (exclusive), got {cfg.ratio:g}")
    if cfg.iterative_steps < 1:
        raise DefectoptError(f"--iterative-steps must be at least 1, got {cfg.iterative_steps}")
    if cfg.importance == "taylor" and calibration is None:
        raise DefectoptError("taylor importance needs calibration batches from the train split (the model has no dataset)")
    torch.manual_seed(cfg.seed)  # random importance, and any tie-breaking, is reproducible
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)  # taylor scores need every gradient; a frozen parent must not hide layers
    example = torch.zeros(1, 3, img_size, img_size)
    attn = attention_modules(model)
    num_heads = {m.qkv: m.num_heads for m in attn}
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    ignored = [classifier] if isinstance(classifier, nn.Module) else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tp warns about every unwrapped parameter (pos_embed, cls_token...)
        pruner = tp.pruner.MetaPruner(
            model, example, importance=_importance(cfg.importance),
            pruning_ratio=cfg.ratio, global_pruning=cfg.global_pruning, iterative_steps=cfg.iterative_steps,
            round_to=cfg.round_to if cfg.round_to and cfg.round_to > 1 else None,
            ignored_layers=ignored,
            num_heads=num_heads, prune_num_heads=bool(num_heads), prune_head_dims=not num_heads,
            head_pruning_ratio=cfg.ratio if num_heads else 0.0,
        )
    if num_heads and not cfg.global_pruning:
        for qkv, heads in num_heads.items():
            pruner.head_pruning_ratio_dict[qkv] = _head_schedule(heads, cfg.ratio, cfg.iterative_steps)
    for _ in range(cfg.iterative_steps):
        if cfg.importance == "taylor":
            _accumulate_gradients(model, calibration)
        pruner.step()
        _sync_attention(attn, pruner.num_heads)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        out = model(example)
    num_classes = out.shape[-1]
    if classifier is not None and getattr(classifier, "out_features", num_classes) != num_classes:
        raise DefectoptError("pruning changed the classifier's outputs")  # ignored_layers guarantees not; be loud if it did
    return {"heads": [m.num_heads for m in attn]}


def _accumulate_gradients(model: nn.Module, calibration) -> None:
    model.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss()
    seen = 0
    with torch.enable_grad():
        for images, labels in calibration():
            loss = loss_fn(model(images), labels)
            loss.backward()
            seen += len(labels)
    if not seen:
        raise DefectoptError("taylor importance got no calibration images (empty train split)")
