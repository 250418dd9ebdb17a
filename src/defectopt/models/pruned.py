"""Record and rebuild the structure of a pruned timm model without pickling modules.

A structurally pruned model is the registry architecture with narrower tensors and a few
changed integer attributes (Conv2d.out_channels, LayerNorm.normalized_shape, timm
Attention.num_heads/attn_dim, ...). `capture_structure` records exactly that, as JSON:

- the shape of every parameter and buffer, by its state-dict name;
- every plain attribute in a module's instance `__dict__` that differs from a freshly built
  model of the same alias (properties such as timm's `ConvNormAct.in_channels` live on the
  class and are derived, so they are never recorded or set; that is where
  `torch_pruning.load_state_dict` breaks on mobilevit_s).

`rebuild` creates the unpruned architecture (storage uninitialized), swaps in empty tensors of the recorded shapes, sets the
recorded attributes and loads the safetensors weights strictly. It needs neither
torch-pruning nor the original object, and works the same for every architecture because it
never reasons about one: whatever torch-pruning changed is, by construction, in the record.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from defectopt.errors import DefectoptError
from defectopt.models.artifacts import Artifact, register_torch_loader
from defectopt.models.formats import FORMAT_PRUNED, WEIGHTS_FILE

STRUCTURE_VERSION = 1
# Per-instance attributes that describe state, not structure.
_IGNORED_ATTRS = {"training"}
_PLAIN = (bool, int, float, str, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _like(reference: Any, value: Any) -> Any:
    """A JSON value converted back to the container type of the attribute it replaces."""
    if isinstance(reference, tuple) and isinstance(value, list):
        inner = reference[0] if reference else None
        return tuple(_like(inner, v) for v in value)
    return value


def _plain_attrs(module: nn.Module) -> dict[str, Any]:
    return {
        k: v for k, v in vars(module).items()
        if not k.startswith("_") and k not in _IGNORED_ATTRS and _is_plain(v)
    }


def fresh_model(alias: str, num_classes: int, img_size: int, *, device: str | torch.device = "cpu") -> nn.Module:
    from defectopt.models.factory import create

    with torch.device(device):
        return create(alias, num_classes, img_size).eval()


def _skeleton(alias: str, num_classes: int, img_size: int) -> nn.Module:
    """The registry architecture with uninitialized storage: its weights are about to be replaced.

    Built on the meta device and materialized empty, which skips timm's weight init (seconds
    for a ConvNeXt on 2 cores). Non-persistent buffers get their values only from __init__
    and are not in the weights file, so a model that has any is built normally instead.
    """
    model = fresh_model(alias, num_classes, img_size, device="meta")
    persistent = set(model.state_dict())
    if any(name not in persistent for name, _ in model.named_buffers()):
        return fresh_model(alias, num_classes, img_size)
    return model.to_empty(device="cpu")


def capture_structure(model: nn.Module, *, alias: str, num_classes: int, img_size: int) -> dict[str, Any]:
    """What `rebuild` needs to recreate `model`'s structure from the registry architecture."""
    reference = fresh_model(alias, num_classes, img_size, device="meta")  # attributes only: no memory
    ref_modules = dict(reference.named_modules())
    attrs: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        ref = ref_modules.get(name)
        if ref is None or type(ref) is not type(module):
            raise DefectoptError(
                f"cannot record the pruned structure: module '{name}' is not part of the {alias} architecture"
            )
        ref_attrs = _plain_attrs(ref)
        changed = {k: _jsonable(v) for k, v in _plain_attrs(module).items() if k in ref_attrs and ref_attrs[k] != v}
        if changed:
            attrs[name] = changed
    return {
        "version": STRUCTURE_VERSION,
        "params": {n: list(p.shape) for n, p in model.named_parameters()},
        "buffers": {n: list(b.shape) for n, b in model.named_buffers()},
        "attrs": attrs,
    }


def _owner(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent, _, leaf = dotted.rpartition(".")
    return (model.get_submodule(parent) if parent else model), leaf


def rebuild(alias: str, num_classes: int, img_size: int, structure: dict[str, Any],
            state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The registry model reshaped to `structure`, loaded with `state_dict` (strictly); without
    one, every tensor is zero (a skeleton for callers that load their own payload)."""
    if structure.get("version") != STRUCTURE_VERSION:
        raise DefectoptError(f"pruned-structure record has version {structure.get('version')}, expected {STRUCTURE_VERSION}")
    model = _skeleton(alias, num_classes, img_size)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    if set(params) != set(structure["params"]) or set(buffers) != set(structure["buffers"]):
        missing = sorted((set(structure["params"]) | set(structure["buffers"])) - set(params) - set(buffers))
        extra = sorted((set(params) | set(buffers)) - set(structure["params"]) - set(structure["buffers"]))
        example = (missing or extra)[0]
        raise DefectoptError(
            f"the stored pruned structure does not match the {alias} architecture of this timm version "
            f"({len(missing)} tensors missing, {len(extra)} unexpected, e.g. '{example}')"
        )
    persistent = set(model.state_dict())
    for name, shape in structure["params"].items():
        old = params[name]
        if list(old.shape) != shape:
            owner, leaf = _owner(model, name)
            setattr(owner, leaf, nn.Parameter(torch.empty(shape, dtype=old.dtype), requires_grad=old.requires_grad))
    for name, shape in structure["buffers"].items():
        old = buffers[name]
        if list(old.shape) != shape:
            if name not in persistent:
                # its values come from __init__, not from the weights file: we could not restore them
                raise DefectoptError(f"cannot rebuild the pruned {alias}: non-persistent buffer '{name}' changed shape")
            owner, leaf = _owner(model, name)
            owner._buffers[leaf] = torch.empty(shape, dtype=old.dtype)  # keeps its registration (persistent)
    modules = dict(model.named_modules())
    for name, changed in structure["attrs"].items():
        module = modules.get(name)
        if module is None:
            raise DefectoptError(f"the stored pruned structure names module '{name}', which {alias} does not have")
        current = vars(module)
        for key, value in changed.items():
            setattr(module, key, _like(current.get(key), value))
    if state_dict is None:
        with torch.no_grad():  # deterministic zeros rather than whatever memory held
            for tensor in (*model.parameters(), *model.buffers()):
                tensor.zero_()
    else:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise DefectoptError(f"pruned weights do not fit the stored structure: {str(exc).splitlines()[0][:200]}") from None
    return model.eval()


@register_torch_loader(FORMAT_PRUNED)
def load_pruned(artifact: Artifact) -> nn.Module:
    """A pruned artifact as a plain nn.Module, rebuilt from its stored structure (no pickle)."""
    from safetensors.torch import load_file

    structure = artifact.meta.get("structure")
    if not isinstance(structure, dict):
        raise DefectoptError(f"model {artifact.id} is '{FORMAT_PRUNED}' but its meta.json has no pruned structure")
    state = load_file(str(artifact.file(WEIGHTS_FILE)))
    return rebuild(artifact.alias, artifact.num_classes, artifact.img_size, structure, state)
