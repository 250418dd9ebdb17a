"""Options of `quantize` (the entry point `compress.quantize.api.quantize_model`): every default in
one place, importable without torch (the CLI shows them, the pipeline builds them from TOML).
The methods themselves, with their names and default backends, are classes in `api`."""

from __future__ import annotations

from dataclasses import dataclass, field

from defectopt.options import added_later

BACKEND_CHOICES = ("auto", "openvino", "onnxruntime", "torch", "pt2e", "fx")
# How auto judges an attempt against --max-recall-drop on val: "point" (the measured net drop is
# within it), "new-misses" (also the val images it newly misses, none offset by one it regains)
# or "bound" (also the one-sided 90% exact upper bound of that loss); see compress.quantize.auto
AUTO_EVIDENCE = ("point", "new-misses", "bound")
# NNCF's `overflow_fix` names (ONNX Runtime: "enable" is its reduce_range, the others full range);
# "auto" resolves per CPU in compress.quantize.static.resolve_overflow_fix
OVERFLOW_FIX_CHOICES = ("auto", "first_layer_only", "enable", "disable")


@dataclass(frozen=True)
class QATConfig:
    epochs: int = 3
    lr: float = 1e-4  # a fine-tune of an already trained model: small steps keep the ranges valid
    batch_size: int = 32
    kd_from: int | None = None
    alpha: float = 0.5  # KD weight when kd_from is given
    temperature: float = 4.0
    seed: int = 0
    quiet: bool = False


@dataclass(frozen=True)
class QuantizeOptions:
    model: str = ""  # the FP32 model to quantize: an ID, or an alias meaning its latest ready model
    method: str = "auto"  # a name in api.METHODS
    backend: str = "auto"  # auto: the method's own default runtime
    calib_images: int = 256
    keep_fp: str | None = None  # "N" or "NAME,..."
    sensitivity: bool = False
    max_recall_drop: float = 0.01
    max_keep_fp: int = 3
    # a name in AUTO_EVIDENCE. "new-misses" since session 31: on NEU-DET "point" kept two PTQs whose
    # net val drop hid 4 and 6 newly missed images and that read below teacher - 1 pt on test;
    # "new-misses" went on to QATs that qualify (README_RESULTS 1.2). Steps keyed before it are "point".
    auto_evidence: str = added_later("new-misses", "session 31", legacy="point")
    device: str = "cpu"
    # OpenVINO hint for the float parts of an INT8 model; "auto": bf16 where the CPU has
    # AVX512-BF16/AMX (measured faster for every INT8 model in benchmarks/bench_quantize.py,
    # e.g. vit_s16 12.1 -> 10.6 ms, with the same logit fidelity), else fp32
    float_precision: str = "auto"
    # INT8 weights on half the 8-bit range (7 bits) in no / the first / every dense layer (NNCF keeps
    # depthwise convolutions on the full grid). "auto": every dense layer on CPUs without VNNI/AMX,
    # whose INT8 kernels saturate otherwise (measured on an AVX2 host: with NNCF's default
    # first-layer fix the OpenVINO INT8 Lite0 disagreed with its own fake-quant simulation on 27 of
    # 360 val images, with every layer on 3; README_RESULTS 1.9); NNCF's default "first_layer_only"
    # elsewhere (what the study host's rows used)
    overflow_fix: str = added_later("auto", "session 38")
    qat: QATConfig = field(default_factory=QATConfig)
    bits: int = 8  # qat: 8 = deployable INT8 (NNCF -> OpenVINO); 2-6 = simulated low-bit (accuracy rows)
    seed: int = 0
    time_keep_fp: bool = True  # time the speed cost of --keep-fp (off in tests: tiny models)
    # weights-int4 / weights-int8 (NNCF weight compression of the OpenVINO IR)
    group_size: int = 64  # int4: weights per scale group (must divide the layers' input channels)
    int4_ratio: float = 1.0  # int4: fraction of the compressible layers in INT4, the rest INT8
    all_layers: bool = False  # also the convolutions and the first/last layers (NNCF keeps them INT8 otherwise)
