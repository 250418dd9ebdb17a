"""Build timm models from aliases, with pretrained weights, a local weights file, or random init."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from defectopt.errors import DefectoptError
from defectopt.models.registry import get


def create(
    alias: str,
    num_classes: int,
    img_size: int = 224,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """timm.create_model for a registry alias.

    pretrained=True uses timm's normal hub mechanism (cache first); `weights` is the name of
    imported weights (`defectopt weights import`) or a local timm/safetensors checkpoint, with the
    classifier re-initialised when its class count differs. Offline with nothing cached fails
    with one line suggesting the alternatives.
    """
    import timm

    spec = get(alias)
    kwargs = {"num_classes": num_classes}
    if spec.takes_img_size:
        kwargs["img_size"] = img_size
    if weights is not None:
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        load_weights_file(model, resolve_weights(str(weights), spec.timm_name))
        return model
    if pretrained:
        try:
            return timm.create_model(spec.timm_name, pretrained=True, **kwargs)
        except Exception as exc:  # hub errors come as many types (OSError, HTTPError, LocalEntryNotFound...)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DefectoptError(
                f"cannot get pretrained weights for {alias} ({spec.timm_name}): {reason[:160]}; "
                "offline? pass --weights NAME|FILE (imported weights or a local checkpoint) or --no-pretrained"
            ) from None
    return timm.create_model(spec.timm_name, pretrained=False, **kwargs)


def resolve_weights(weights: str, timm_name: str) -> Path:
    """The checkpoint file behind `--weights NAME|FILE` (an imported name wins over a file)."""
    from defectopt.models.weights import find, get_imported

    if find(weights) is not None:
        imported = get_imported(weights)
        if imported.timm_name != timm_name:
            raise DefectoptError(f"weights '{weights}' are for timm {imported.timm_name}, not {timm_name}")
        return imported.path
    path = Path(weights)
    if not path.is_file():
        raise DefectoptError(f"--weights {weights}: no imported weights of that name (see 'defectopt weights ls') and no such file")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint without unpickling arbitrary objects."""
    if not path.is_file():
        raise DefectoptError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DefectoptError(f"cannot read weights file {path}: {str(exc).splitlines()[0][:200]}") from None
    for key in ("state_dict", "model", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise DefectoptError(f"weights file {path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_weights_file(model: nn.Module, path: Path) -> None:
    state = read_state_dict(path)
    own = model.state_dict()
    # Drop tensors whose shape differs (typically the classifier of an ImageNet checkpoint).
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise DefectoptError(f"weights file {path} does not match the architecture (no tensor names/shapes in common)")
    missing = [k for k in own if k not in usable]
    head_names = set(_classifier_param_names(model))
    structural = [k for k in missing if k not in head_names and not k.endswith("num_batches_tracked")]
    if structural:
        raise DefectoptError(
            f"weights file {path} is missing {len(structural)} tensors of the architecture (e.g. {structural[0]})"
        )
    model.load_state_dict(usable, strict=False)


def _classifier_param_names(model: nn.Module) -> list[str]:
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        return []
    head = get_classifier()
    ids = {id(p) for p in head.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, img_size: int, device: str = "cpu") -> float:
    """Multiply-accumulates for one image (torch's FlopCounterMode counts FLOPs = 2 x MACs)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, img_size, img_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 2
