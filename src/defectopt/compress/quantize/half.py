"""BF16 and FP16: half-precision weights and math, where the hardware has the kernels.

- bf16: CPUs with AVX512-BF16 or AMX (OpenVINO IR run with INFERENCE_PRECISION_HINT=bf16, the
  default backend; or torch bf16 weights) and CUDA (torch).
- fp16: CUDA only. FP16 on this CPU measured 4-16x *slower* than FP32 (no fast FP16 CPU kernels
  in PyTorch / ONNX Runtime), so it is refused on CPU with a pointer to bf16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectopt.bench.host import cpu_has_bf16
from defectopt.compress.quantize.common import Parent, Result
from defectopt.compress.quantize.produce import produce
from defectopt.errors import DefectoptError
from defectopt.models import torch_quantized as torch_formats
from defectopt.models.formats import FORMAT_TORCH_BF16, FORMAT_TORCH_FP16
from defectopt.quiet import quiet_libraries
from defectopt.store.db import Store

BF16_BACKENDS = ("openvino", "torch")


def refuse_fp16(device: str) -> None:
    """fp16 is for CUDA; on a CPU say why not and what to use."""
    if device == "cpu":
        raise DefectoptError("FP16 is offered on CUDA only: on this CPU FP16 runs 4-16x slower than FP32 "
                             "(no fast FP16 kernels); use --method bf16 (AVX512-BF16/AMX) or --method static for INT8")
    import torch

    if not torch.cuda.is_available():
        raise DefectoptError("--device cuda requested but no CUDA device is available; on CPU use --method bf16")


def run_bf16(store: Store, parent: Parent, *, backend: str = "openvino", device: str = "cpu") -> Result:
    if backend == "auto":
        backend = "openvino" if device == "cpu" else "torch"
    if backend not in BF16_BACKENDS:
        raise DefectoptError(f"--method bf16 runs on --backend {' or '.join(BF16_BACKENDS)}, not '{backend}'")
    if device == "cpu" and not cpu_has_bf16():
        raise DefectoptError("this CPU has no AVX512-BF16/AMX: BF16 would be emulated (slower than FP32); "
                             "use --method static (INT8) or --method dynamic")
    if backend == "openvino":
        if device != "cpu":
            raise DefectoptError("the OpenVINO backend runs on --device cpu here; use --backend torch on CUDA")

        def write(folder: Path, meta: dict[str, Any]) -> None:
            import openvino as ov

            from defectopt.compress.quantize.static import ov_fp32_model
            from defectopt.models.formats import OPENVINO_XML

            # weights stored as FP16 (half the size, exact enough for BF16 math: FP16 has more mantissa)
            ov.save_model(ov_fp32_model(parent), str(folder / OPENVINO_XML), compress_to_fp16=True)
            meta.update(inference_precision="bf16", weights_storage="fp16")

        from defectopt.models.formats import FORMAT_OPENVINO

        return produce(store, parent, method="bf16", backend="openvino", precision="bf16", fmt=FORMAT_OPENVINO,
                       params={"inference_precision": "bf16"}, write=write, device=device)
    return _run_torch_half(store, parent, method="bf16", fmt=FORMAT_TORCH_BF16, device=device)


def run_fp16(store: Store, parent: Parent, *, backend: str = "torch", device: str = "cpu") -> Result:
    refuse_fp16(device)
    if backend not in ("torch", "auto"):
        raise DefectoptError(f"--method fp16 runs on --backend torch (CUDA), not '{backend}'")
    return _run_torch_half(store, parent, method="fp16", fmt=FORMAT_TORCH_FP16, device=device)


def _run_torch_half(store: Store, parent: Parent, *, method: str, fmt: str, device: str) -> Result:
    import torch

    dtype = torch.bfloat16 if method == "bf16" else torch.float16

    def write(folder: Path, meta: dict[str, Any]) -> None:
        with quiet_libraries():
            torch_formats.save_half(parent.model, folder, dtype)
        meta.update(skeleton=torch_formats.skeleton_meta(parent.artifact))

    return produce(store, parent, method=method, backend="torch", precision=method, fmt=fmt, params={}, write=write,
                   device=device)
