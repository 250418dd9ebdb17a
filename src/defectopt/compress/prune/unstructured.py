"""Unstructured magnitude pruning (torch.nn.utils.prune): the comparison point.

Zeroing individual weights keeps every tensor's shape, so dense kernels do exactly the same
work: no speedup in any runtime here. What it buys is compressibility, reported both ways:
the dense safetensors file (what runs) and its deflate-compressed / CSR sizes (what would ship
if the runtime understood sparsity).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from defectopt.errors import DefectoptError

UNSTRUCTURED_IMPORTANCES = ("l1", "l2", "random")


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, "weight") of every conv and linear layer except the classifier."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    skip = {id(m) for m in classifier.modules()} if isinstance(classifier, nn.Module) else set()
    return [(m, "weight") for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in skip]


def apply_masks(model: nn.Module, *, ratio: float, importance: str = "l1", global_pruning: bool = True,
                seed: int = 0) -> list[tuple[nn.Module, str]]:
    """Mask `ratio` of the conv/linear weights (reparametrized: weight = weight_orig * mask).

    The masks stay attached so recovery fine-tuning keeps the zeros at zero; `make_permanent`
    folds them in afterwards. l1 and l2 rank single weights identically (by magnitude).
    """
    if not 0 < ratio < 1:
        raise DefectoptError(f"pruning ratio must be between 0 and 1 (exclusive), got {ratio:g}")
    if importance not in UNSTRUCTURED_IMPORTANCES:
        raise DefectoptError(
            f"--method unstructured supports importance {', '.join(UNSTRUCTURED_IMPORTANCES)}, not '{importance}'"
        )
    torch.manual_seed(seed)
    targets = prunable_weights(model)
    method = torch_prune.RandomUnstructured if importance == "random" else torch_prune.L1Unstructured
    if global_pruning:
        torch_prune.global_unstructured(targets, pruning_method=method, amount=ratio)
    else:
        for module, name in targets:
            method.apply(module, name, amount=ratio)
    return targets


def make_permanent(targets: list[tuple[nn.Module, str]]) -> None:
    for module, name in targets:
        if torch_prune.is_pruned(module):
            torch_prune.remove(module, name)


def sparsity_report(model: nn.Module, targets: list[tuple[nn.Module, str]]) -> dict[str, Any]:
    pruned = sum(int((getattr(m, n) == 0).sum()) for m, n in targets)
    prunable = sum(getattr(m, n).numel() for m, n in targets)
    total = sum(p.numel() for p in model.parameters())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return {
        "sparsity": pruned / prunable if prunable else 0.0,  # of the pruned layers' weights
        "model_sparsity": zeros / total if total else 0.0,  # of all parameters
        "nonzero_params": total - zeros,
    }


def payload_sizes(state: dict[str, torch.Tensor], serialized: bytes) -> dict[str, int]:
    """Dense bytes (the file that runs), deflate-compressed bytes, and a CSR estimate."""
    csr = 0
    for tensor in state.values():
        flat = tensor.reshape(tensor.shape[0], -1) if tensor.dim() >= 2 else None
        nnz = int((tensor != 0).sum())
        if flat is not None and nnz < tensor.numel() // 2:
            # fp32 values + int32 column indices + int32 row pointers
            csr += nnz * (tensor.element_size() + 4) + 4 * (flat.shape[0] + 1)
        else:
            csr += tensor.numel() * tensor.element_size()
    return {
        "dense_bytes": len(serialized),
        "compressed_bytes": len(zlib.compress(serialized, 6)),
        "csr_bytes": csr,
    }
