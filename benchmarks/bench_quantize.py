"""Is INT8 really faster? FP32 vs INT8 (and BF16) in the SAME runtime, side by side.

For each architecture (random init at 224x224: speed does not depend on the weights' values),
the exact code paths `defectopt quantize` uses build:
  * torch eager:  FP32  vs  torch.ao dynamic INT8 (Linear layers)            [method dynamic]
  * ONNX Runtime: FP32  vs  static QDQ INT8 (per-channel; weight MatMul/Gemm
                  only for transformers)                                      [static --backend onnxruntime]
  * OpenVINO:     FP32, BF16 hint, NNCF INT8 (FP32 hint), NNCF INT8 + BF16    [static / bf16]
                  (compiled for the static batch-1 shape, as the runner does)
PT2E (torchao + torch.compile) is not here: see benchmarks/check_pt2e.py for why.
All candidates of one architecture are timed interleaved in one process (bench.timing's
compare_interleaved: warm-up until stable, rotating blocks A B C.., median of per-round
ratios), batch 1, fixed threads. Speedups are only computed within that comparison.

Also: artifact sizes (the deployable payload files) and fidelity: correlation of the logit
margin (top-1 minus top-2) of each variant with FP32 torch on held-out images. Calibration
and fidelity images are the built-in synthetic surface images (not random noise).

Targets (issue 7): INT8 >= 2.0x faster than FP32 in the same runtime for vit_b16, vit_s16 and
convnext_tiny; deployed INT8 vit_s16 >= 4x faster than its FP32 torch-eager parent; INT8
artifacts >= 3.5x smaller. A variant slower than its FP32 baseline is reported as "slower".

    python benchmarks/bench_quantize.py --out quantize.json                 # all six models
    python benchmarks/bench_quantize.py --models vit_t16 --quick            # smoke run

Timings on a shared machine are noisy: the JSON keeps every block median and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from defectopt.runtime.sessions import OnnxSession
from defectopt.runtime.sessions import compile_ir
from defectopt.bench.timing import DEFAULT, QUICK, compare_interleaved
from defectopt.compress.quantize import static
from defectopt.models import torch_quantized as torch_formats
from defectopt.compress.quantize.common import Parent, compare_logits
from defectopt.quiet import quiet_libraries
from defectopt.models.factory import create
from defectopt.models.registry import get

MODELS = ("vit_b16", "vit_s16", "vit_t16", "convnext_tiny", "efficientnet_b0", "mobilevit_s")
SAME_RUNTIME_TARGET = {"vit_b16": 2.0, "vit_s16": 2.0, "convnext_tiny": 2.0}
DEPLOYED_TARGET = {"vit_s16": 4.0}
SIZE_TARGET = 3.5


def surface_images(n: int, img_size: int, cfg: dict) -> np.ndarray:
    """n normalized synthetic surface images (NCHW float32), resized with the model's data config."""
    from defectopt.data import synthetic
    from defectopt.data.images import load_rgb
    from defectopt.data.loading import eval_transform

    root = Path(tempfile.gettempdir()) / "defectopt-bench-quantize-synthetic"
    if not root.exists():
        synthetic.generate(root, n=max(n, 80), seed=0)
    paths = sorted(root.rglob("*.png"))[:n]
    tf = eval_transform({**cfg, "input_size": (3, img_size, img_size)})
    return np.stack([tf(load_rgb(p)).numpy() for p in paths]).astype(np.float32)


def dir_size(paths) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def bench_model(alias: str, args) -> dict:
    from timm.data import resolve_data_config

    from defectopt.models.export import export_onnx

    torch.manual_seed(0)
    spec = get(alias)
    model = create(alias, 2, args.img_size).eval()
    cfg = resolve_data_config({}, model=model)
    images = surface_images(args.calib + args.eval_images, args.img_size, cfg)
    calib = [images[i : i + 1] for i in range(args.calib)]
    held_out = images[args.calib :]
    parent = Parent(artifact=SimpleNamespace(alias=alias, id=0, img_size=args.img_size), model=model, dataset=None,
                    family=spec.family)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-quantize-{alias}-"))
    out: dict = {"alias": alias, "family": spec.family, "img_size": args.img_size, "threads": args.threads}
    torch.set_num_threads(args.threads)
    candidates: dict = {}
    sizes: dict = {}
    fidelity_logits: dict = {}
    x1 = held_out[:1]

    # torch eager: FP32 and dynamic INT8
    (tmp / "torch").mkdir()
    from defectopt.models.artifacts import save_torch_weights

    sizes["torch-fp32"] = dir_size([save_torch_weights(model, tmp / "torch")])
    qdyn = torch_formats.quantize_dynamic(model, torch_formats.linear_names(model))
    (tmp / "dyn").mkdir()
    facts = torch_formats.save_dynamic(model, qdyn, tmp / "dyn")
    sizes["torch-int8-dynamic"] = dir_size((tmp / "dyn").iterdir())
    out["dynamic_int8_param_fraction"] = facts["int8_param_fraction"]
    xt = torch.from_numpy(x1)

    def torch_call(m):
        def fn():
            with torch.inference_mode():
                return m(xt)
        return fn

    candidates["torch-fp32"] = torch_call(model)
    candidates["torch-int8-dynamic"] = torch_call(qdyn)
    with torch.inference_mode():
        fidelity_logits["torch-fp32"] = model(torch.from_numpy(held_out)).numpy()
        fidelity_logits["torch-int8-dynamic"] = qdyn(torch.from_numpy(held_out)).numpy()

    # ONNX Runtime: FP32 and static QDQ INT8
    with quiet_libraries():
        fp_onnx = export_onnx(model, args.img_size, tmp / "fp32.onnx")
    static.quantize_onnx(parent, calib, tmp / "int8.onnx", fp32_path=fp_onnx)
    for name, path in (("ort-fp32", fp_onnx), ("ort-int8-static", tmp / "int8.onnx")):
        sess = OnnxSession(path, threads=args.threads).session
        sizes[name] = dir_size([path])
        candidates[name] = (lambda s: (lambda: s.run(None, {"input": x1})))(sess)
        fidelity_logits[name] = np.concatenate([sess.run(None, {"input": held_out[i : i + 1]})[0] for i in range(len(held_out))])

    # OpenVINO: FP32, BF16 hint, NNCF INT8 (+ BF16 hint for the float rest)
    (tmp / "ov32").mkdir()
    (tmp / "ov8").mkdir()
    static.save_openvino(static.ov_fp32_model(parent), tmp / "ov32")
    static.save_openvino(static.quantize_openvino(parent, calib), tmp / "ov8")
    sizes["ov-fp32"] = dir_size((tmp / "ov32").iterdir())
    sizes["ov-int8-nncf"] = dir_size((tmp / "ov8").iterdir())
    for name, folder, hint in (("ov-fp32", "ov32", "fp32"), ("ov-bf16", "ov32", "bf16"),
                               ("ov-int8-nncf", "ov8", "fp32"), ("ov-int8-nncf+bf16", "ov8", "bf16")):
        if hint == "bf16" and args.no_bf16:
            continue
        compiled = compile_ir(tmp / folder / "model.xml", threads=args.threads, inference_precision=hint,
                              shape=(1, 3, args.img_size, args.img_size))  # as the runner compiles it
        req = compiled.create_infer_request()
        candidates[name] = (lambda r: (lambda: r.infer({0: x1})))(req)
        fidelity_logits[name] = np.concatenate([np.asarray(req.infer({0: held_out[i : i + 1]})[compiled.output(0)])
                                                for i in range(len(held_out))])

    ref = fidelity_logits["torch-fp32"]
    out["fidelity"] = {k: compare_logits(ref, v) for k, v in fidelity_logits.items() if k != "torch-fp32"}
    out["size_bytes"] = sizes
    res = compare_interleaved(candidates, cfg=QUICK if args.quick else DEFAULT)
    out["latency_ms"] = {k: r.per_image_ms for k, r in res.results.items()}
    runtime_base = {"torch": "torch-fp32", "ort": "ort-fp32", "ov": "ov-fp32"}
    # per-variant speedup over the FP32 model of its runtime: median of per-round ratios (same machine state)
    out["vs_fp32_same_runtime"] = {k: res.speedup(runtime_base[k.split("-")[0]], k) for k in candidates
                                   if k != runtime_base[k.split("-")[0]]}
    out["timing"] = res.to_dict()["results"]
    pairs = {"torch": ("torch-fp32", "torch-int8-dynamic"), "onnxruntime": ("ort-fp32", "ort-int8-static"),
             "openvino": ("ov-fp32", "ov-int8-nncf")}
    out["same_runtime_speedup"] = {rt: res.speedup_spread(a, b) for rt, (a, b) in pairs.items()}
    if "ov-bf16" in candidates:
        out["same_runtime_speedup"]["openvino-bf16"] = res.speedup_spread("ov-fp32", "ov-bf16")
        out["same_runtime_speedup"]["openvino-int8+bf16"] = res.speedup_spread("ov-fp32", "ov-int8-nncf+bf16")
    int8 = [k for k in candidates if "int8" in k]
    best = min(int8, key=lambda k: out["latency_ms"][k])
    out["best_int8"] = best
    out["deployed_speedup_vs_torch_fp32"] = res.speedup_spread("torch-fp32", best)
    out["size_ratio"] = {"torch": sizes["torch-fp32"] / sizes["torch-int8-dynamic"],
                         "onnxruntime": sizes["ort-fp32"] / sizes["ort-int8-static"],
                         "openvino": sizes["ov-fp32"] / sizes["ov-int8-nncf"]}
    return out


def verdicts(r: dict) -> list[str]:
    lines = []
    alias = r["alias"]
    best_same = max(r["same_runtime_speedup"][rt]["speedup"] for rt in ("torch", "onnxruntime", "openvino"))
    if alias in SAME_RUNTIME_TARGET:
        ok = best_same >= SAME_RUNTIME_TARGET[alias]
        lines.append(f"{alias}: best INT8 vs FP32 in the same runtime {_times(best_same)} "
                     f"(target >= {SAME_RUNTIME_TARGET[alias]}x faster): {'PASS' if ok else 'FAIL'}")
    if alias in DEPLOYED_TARGET:
        d = r["deployed_speedup_vs_torch_fp32"]["speedup"]
        ok = d >= DEPLOYED_TARGET[alias]
        lines.append(f"{alias}: deployed INT8 ({r['best_int8']}) vs FP32 torch eager {_times(d)} "
                     f"(target >= {DEPLOYED_TARGET[alias]}x faster): {'PASS' if ok else 'FAIL'}")
    sz = max(r["size_ratio"].values())
    lines.append(f"{alias}: INT8 artifact up to {sz:.2f}x smaller (target >= {SIZE_TARGET}x): "
                 f"{'PASS' if sz >= SIZE_TARGET else 'FAIL'} ({', '.join(f'{k} {v:.2f}x' for k, v in r['size_ratio'].items())})")
    return lines


def _times(speedup: float) -> str:
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x SLOWER"


def print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{r['alias']} @ {r['img_size']}, batch 1, {r['threads']} threads (interleaved)")
    for col in ("variant", "ms/image", "vs FP32 same runtime", "size MB", "margin corr vs FP32"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, ms in r["latency_ms"].items():
        rel = _times(r["vs_fp32_same_runtime"][name]) if name in r["vs_fp32_same_runtime"] else ""
        size = r["size_bytes"].get(name)
        corr = r["fidelity"].get(name, {}).get("margin_corr")
        table.add_row(name, f"{ms:.2f}", rel, f"{size / 1e6:.2f}" if size else "", f"{corr:.4f}" if corr is not None else "ref")
    Console().print(table)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--calib", type=int, default=32, help="calibration images (synthetic surfaces)")
    p.add_argument("--eval-images", type=int, default=32, help="held-out images for logit fidelity")
    p.add_argument("--quick", action="store_true", help="short timing (smoke run; numbers are rough)")
    p.add_argument("--no-bf16", action="store_true", help="skip the OpenVINO BF16 variants")
    p.add_argument("--out", type=Path, help="write all figures as JSON")
    args = p.parse_args(argv)
    results, lines = [], []
    for alias in [m.strip() for m in args.models.split(",") if m.strip()]:
        load = os.getloadavg()[0]
        r = bench_model(alias, args)
        r["loadavg_before"] = load
        r["loadavg_after"] = os.getloadavg()[0]
        results.append(r)
        print_table(r)
        for line in verdicts(r):
            print(line)
            lines.append(line)
    if args.out:
        from defectopt.bench.host import fingerprint

        args.out.write_text(json.dumps({"host": fingerprint(), "python": platform.python_version(), "results": results,
                                        "verdicts": lines}, indent=2, default=float))
    return 0 if all("FAIL" not in ln for ln in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
