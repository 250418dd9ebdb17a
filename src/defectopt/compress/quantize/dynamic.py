"""Dynamic INT8 (torch.ao): INT8 Linear weights, activation ranges taken per batch at run time.

The natural ViT path on CPU (almost all ViT weights and MACs are in Linear layers). On CNNs it
quantizes only the Linear layers (the classifier, and ConvNeXt's MLPs): the note says how much.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectopt.compress.quantize.common import Parent, Result
from defectopt.compress.quantize.produce import produce
from defectopt.errors import DefectoptError
from defectopt.models import torch_quantized as torch_formats
from defectopt.models.formats import FORMAT_TORCH_INT8_DYNAMIC
from defectopt.store.db import Store


def check_applicable(parent: Parent, backend: str) -> None:
    if backend not in ("torch", "auto"):
        raise DefectoptError(f"--method dynamic runs on --backend torch (torch.ao dynamic INT8), not '{backend}'; "
                             "for OpenVINO/ONNX Runtime INT8 use --method static")
    names = torch_formats.linear_names(parent.model)
    if not names:
        raise DefectoptError(f"{parent.artifact.alias} has no Linear layers, so dynamic INT8 would change nothing; "
                             "use --method static (--backend openvino)")


def run(store: Store, parent: Parent, *, keep_fp: list[str] | None = None, device: str = "cpu") -> Result:
    if device != "cpu":
        raise DefectoptError("torch dynamic INT8 kernels run on CPU only; use --device cpu (or --method fp16 on CUDA)")
    check_applicable(parent, "torch")
    names = torch_formats.linear_names(parent.model, keep_fp)
    qmodel = torch_formats.quantize_dynamic(parent.model, names)
    notes: list[str] = []
    facts: dict[str, Any] = {}

    def write(folder: Path, meta: dict[str, Any]) -> None:
        facts.update(torch_formats.save_dynamic(parent.model, qmodel, folder))
        meta.update(facts, skeleton=torch_formats.skeleton_meta(parent.artifact))

    result = produce(store, parent, method="dynamic", backend="torch", precision="int8", fmt=FORMAT_TORCH_INT8_DYNAMIC,
                     params={"linear_layers": len(names)}, write=write, keep_fp=keep_fp, device=device, notes=notes)
    frac = facts.get("int8_param_fraction", 0.0)
    if parent.family != "vit":
        result.notes.append(f"dynamic INT8 quantizes only Linear layers: {frac:.0%} of {parent.artifact.alias}'s "
                            "weights; convolutions stay FP32 (use --method static for a CNN)")
    return result
