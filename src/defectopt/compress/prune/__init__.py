"""Pruning: structured (Torch-Pruning, really faster) and unstructured (magnitude, comparison).

Importing this package registers the `torch-pruned` format: its PyTorch loader (rebuild the
registry architecture to the stored widths, then load the safetensors weights) and its runner
(the ordinary eager TorchRunner). `models.artifacts.load_torch_model` imports it on demand.

    from defectopt.compress.prune import PruneOptions, prune_models
    results = prune_models(store, "7", [0.3, 0.5], PruneOptions(finetune_epochs=2))
"""

from __future__ import annotations

from defectopt.bench.runners import register_runner
from defectopt.bench.runners.torch_runner import TorchRunner
from defectopt.compress.prune.structure import FORMAT_PRUNED
from defectopt.models.artifacts import WEIGHTS_FILE, Artifact, register_torch_loader


@register_torch_loader(FORMAT_PRUNED)
def load_pruned(artifact: Artifact):
    """A pruned artifact as a plain nn.Module, rebuilt from its stored structure (no pickle)."""
    from safetensors.torch import load_file

    from defectopt.compress.prune.structure import rebuild
    from defectopt.errors import DefectoptError

    structure = artifact.meta.get("structure")
    if not isinstance(structure, dict):
        raise DefectoptError(f"model {artifact.id} is '{FORMAT_PRUNED}' but its meta.json has no pruned structure")
    state = load_file(str(artifact.file(WEIGHTS_FILE)))
    return rebuild(artifact.alias, artifact.num_classes, artifact.img_size, structure, state)


# A pruned model is an ordinary dense nn.Module: eager torch runs it as is.
register_runner(FORMAT_PRUNED, "torch", default=True)(TorchRunner)

from defectopt.compress.prune.service import PruneOptions, PruneResult, parse_ratios, prune_models  # noqa: E402

__all__ = ["FORMAT_PRUNED", "PruneOptions", "PruneResult", "load_pruned", "parse_ratios", "prune_models"]
