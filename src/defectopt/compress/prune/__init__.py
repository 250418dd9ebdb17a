"""Pruning: structured (Torch-Pruning, really faster) and unstructured (magnitude, comparison).

The entry point is `api.prune_models(store, PruneOptions(...))`; the options live in `options`
(no torch). The `torch-pruned` format itself (record and rebuild of a pruned structure, its
loader) lives in `models.pruned`, so loading and running a pruned model needs nothing from here.

    from defectopt.compress.prune.api import prune_models
    from defectopt.compress.prune.options import PruneOptions
    results = prune_models(store, PruneOptions(model="7", ratios=(0.3, 0.5), finetune_epochs=2))
"""
