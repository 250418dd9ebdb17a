"""Weight-only INT4/INT8 (NNCF compress_weights) vs INT8 static and FP32, in OpenVINO, interleaved.

For each architecture (random init: speed and size do not depend on the weights' values) the
FP32 IR, NNCF static INT8 (calibrated on random inputs: a speed/size figure, not an accuracy one),
INT8 weight-only and INT4 weight-only (group 64) are compiled with the same inference-precision
hint and timed side by side with compare_interleaved at batch 1 and 16; sizes are the saved IR
files. Every ratio is a median of per-round ratios in one process.

    python benchmarks/bench_weight_compression.py --out benchmarks/results/weight_compression.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from defectopt.bench.host import cpu_has_bf16, fingerprint
from defectopt.bench.timing import DEFAULT, QUICK, compare_interleaved, random_batch

ARCHS = {"vit_s16": ("vit_small_patch16_224", 224, True), "vit_t16": ("vit_tiny_patch16_224", 224, True),
         "efficientnet_lite0": ("efficientnet_lite0", 224, False)}


def variants(timm_name: str, size: int, transformer: bool) -> dict:
    import nncf
    import openvino as ov
    import timm

    model = timm.create_model(timm_name, pretrained=False, num_classes=2).eval()
    fp32 = ov.convert_model(model, example_input=torch.zeros(1, 3, size, size), input=[(-1, 3, size, size)])
    calib = nncf.Dataset([random_batch(size, 1, seed=i) for i in range(16)])
    kw = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    # compress_weights rewrites the model it is given in place: each variant starts from a clone
    return {
        "fp32": fp32,
        "int8-static": nncf.quantize(fp32.clone(), calib, subset_size=16, **kw),
        "int8-weights": nncf.compress_weights(fp32.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM),
        "int4-weights-g64": nncf.compress_weights(fp32.clone(), mode=nncf.CompressWeightsMode.INT4_SYM, group_size=64),
    }


def main(argv=None) -> int:
    import openvino as ov

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="vit_s16,efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--hint", default="bf16" if cpu_has_bf16() else "f32", help="OpenVINO INFERENCE_PRECISION_HINT for all")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    core = ov.Core()
    report = {"host": fingerprint(), "threads": args.threads, "hint": args.hint, "loadavg_start": os.getloadavg()[0],
              "archs": {}}
    for alias in args.archs.split(","):
        timm_name, size, transformer = ARCHS[alias]
        models = variants(timm_name, size, transformer)
        entry = {"img_size": size, "size_mb": {}, "batches": {}}
        with tempfile.TemporaryDirectory() as tmp:
            for name, m in models.items():
                path = Path(tmp) / f"{name}.xml"
                ov.save_model(m, str(path), compress_to_fp16=False)
                entry["size_mb"][name] = round((path.stat().st_size + path.with_suffix(".bin").stat().st_size) / 1e6, 3)
        for batch in (1, 16):
            fns = {}
            for name, m in models.items():
                mm = m.clone()
                mm.reshape([batch, 3, size, size])
                compiled = core.compile_model(mm, "CPU", {"INFERENCE_PRECISION_HINT": args.hint, "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": args.threads})
                req, x = compiled.create_infer_request(), random_batch(size, batch)
                fns[name] = (lambda r=req, xx=x: r.infer({0: xx}))
            res = compare_interleaved(fns, batch_size=batch, cfg=QUICK if args.quick else DEFAULT)
            entry["batches"][batch] = {
                "ms_per_image": {n: round(r.per_image_ms, 4) for n, r in res.results.items()},
                "speedup_vs_fp32": {n: round(res.speedup("fp32", n), 3) for n in fns if n != "fp32"},
                "speedup_vs_int8_static": {n: round(res.speedup("int8-static", n), 3) for n in fns if n != "int8-static"},
                "contention_cores": {n: round(r.contention.other_cores, 3) for n, r in res.results.items() if r.contention},
            }
            print(alias, batch, json.dumps(entry["batches"][batch]["ms_per_image"]), json.dumps(entry["batches"][batch]["speedup_vs_fp32"]))
        print(alias, "size MB", entry["size_mb"])
        report["archs"][alias] = entry
    report["loadavg_end"] = os.getloadavg()[0]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
