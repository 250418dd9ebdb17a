"""Pruning: structured (Torch-Pruning, really faster) and unstructured (magnitude, comparison).

The `torch-pruned` format itself (record and rebuild of a pruned structure, its loader) lives in
`models.pruned`, so loading and running a pruned model needs nothing from here.

    from defectopt.compress.prune import PruneOptions, prune_models
    results = prune_models(store, "7", [0.3, 0.5], PruneOptions(finetune_epochs=2))
"""

from __future__ import annotations

from defectopt.compress.prune.service import PruneOptions, PruneResult, parse_ratios, prune_models

__all__ = ["PruneOptions", "PruneResult", "parse_ratios", "prune_models"]
