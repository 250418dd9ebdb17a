"""Derived exports: any FP32 torch-family artifact runs in ONNX Runtime, OpenVINO or TensorRT.

So that INT8 is compared with FP32 *in the same runtime*, bench exports an FP32 torch model on
demand and caches the export as a derived artifact beside (never inside) the immutable
artifact folder:

    <artifacts root>/.derived/<id>-<sha12>/onnx/model.onnx
    <artifacts root>/.derived/<id>-<sha12>/openvino/model.xml (+ .bin)
    <artifacts root>/.derived/<id>-<sha12>/tensorrt/<gpu>-trt<version>-<precision>.plan

The key includes the source artifact's sha256, so a changed artifact never reuses a stale
export. Each export is written to a temporary folder and renamed into place (atomic; a
concurrent export of the same model simply loses the race and is discarded).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

from defectopt.errors import DefectoptError
from defectopt.models.artifacts import Artifact

DERIVED_DIR = ".derived"
# runtime -> export kind it consumes
EXPORT_FOR_BACKEND = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "onnx", "litert": "tflite"}


def derived_root(artifact: Artifact) -> Path:
    return artifact.dir.parent / DERIVED_DIR / f"{artifact.id}-{artifact.sha256[:12]}"


def can_derive(artifact: Artifact, backend: str, native_backend: str | None) -> bool:
    """FP32 models whose native runtime is torch eager (plain or pruned) can be exported."""
    if backend == "litert":
        from defectopt.models.export import litert_available

        if not litert_available():  # an optional extra: without it the backend is simply not offered
            return False
    return (backend in EXPORT_FOR_BACKEND and native_backend == "torch"
            and artifact.meta.get("precision", "fp32") == "fp32")


def ensure_export(artifact: Artifact, kind: str) -> Path:
    """The folder of the cached `kind` export ("onnx" | "openvino" | "tflite"), exporting it if missing."""
    from defectopt.models.artifacts import load_torch_model
    from defectopt.models.export import export_onnx, export_openvino, export_tflite
    from defectopt.models.formats import ONNX_FILE, OPENVINO_XML, TFLITE_FILE

    root = derived_root(artifact)
    final = root / kind
    payload = {"onnx": ONNX_FILE, "openvino": OPENVINO_XML, "tflite": TFLITE_FILE}[kind]
    if (final / payload).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{kind}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        model = load_torch_model(artifact).eval().cpu()
        with warnings.catch_warnings():  # tracer deprecation/shape warnings are noise to a bench user
            warnings.simplefilter("ignore")
            if kind == "onnx":
                export_onnx(model, artifact.img_size, tmp / ONNX_FILE)
            elif kind == "openvino":
                export_openvino(model, artifact.img_size, tmp)
            elif kind == "tflite":
                export_tflite(model, artifact.img_size, tmp)
            else:
                raise ValueError(kind)
        (tmp / "derived.json").write_text(json.dumps({
            "source_id": artifact.id, "source_sha256": artifact.sha256, "kind": kind, "precision": "fp32",
        }, indent=2))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same export first: use theirs
            if not (final / payload).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def open_derived(artifact: Artifact, backend: str, *, device: str, threads: int | None):
    """A runner of `backend` over the cached FP32 export of a torch artifact."""
    from defectopt.models.formats import ONNX_FILE, OPENVINO_XML, TFLITE_FILE

    folder = ensure_export(artifact, EXPORT_FOR_BACKEND[backend])
    if backend == "onnxruntime":
        from defectopt.bench.runners.onnx_runner import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(artifact, device=device, threads=threads, path=folder / ONNX_FILE)
    elif backend == "openvino":
        from defectopt.bench.runners.openvino_runner import OpenVINORunner

        runner = OpenVINORunner(artifact, device=device, threads=threads, path=folder / OPENVINO_XML,
                                inference_precision="fp32")
    elif backend == "tensorrt":
        from defectopt.bench.runners.tensorrt_runner import TensorRTRunner

        runner = TensorRTRunner(artifact, device=device, threads=threads, onnx_path=folder / ONNX_FILE,
                                cache_dir=derived_root(artifact) / "tensorrt", precision="fp32")
    elif backend == "litert":
        from defectopt.bench.runners.litert_runner import LiteRTRunner

        runner = LiteRTRunner(artifact, device=device, threads=threads, path=folder / TFLITE_FILE)
    else:  # pragma: no cover - guarded by can_derive
        raise DefectoptError(f"no derived export for backend '{backend}'")
    runner.precision = "fp32"
    runner.derived_from = str(folder)
    return runner
