"""Does structured pruning make models really faster? Pruned vs unpruned, side by side.

For each architecture (random init: speed does not depend on the weights' values):
  * MACs and parameters before / after structured pruning at --ratio (round-to 8, uniform, l1);
  * latency at batch 1 of unpruned vs pruned, interleaved in one process (bench.timing's
    compare_interleaved: alternating blocks, median of per-round ratios), in
      - torch eager FP32, and
      - OpenVINO FP32 (the fastest CPU runtime here; exported with models.export);
  * with --int8: NNCF INT8 of the unpruned and of the pruned model (OpenVINO), in the same
    interleaved comparison, to check that pruning and INT8 compound;
  * with --unstructured: magnitude pruning at the same ratio (dense kernels: expect ~1.0x).

Targets (issue 8): at ratio 0.5, pruned/unpruned latency <= 0.35 for vit_s16 and <= 0.5 for
convnext_tiny, in eager and in the fastest runtime.

    python benchmarks/bench_prune.py --models vit_s16,convnext_tiny --int8 --out prune.json
    python benchmarks/bench_prune.py --models vit_t16 --quick        # smoke run

INT8 calibration here uses random normal inputs: fine for speed, meaningless for accuracy
(`defectopt quantize` calibrates on the train split). Timings on a shared machine are noisy;
the JSON keeps every block median and the load average with each figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from defectopt.bench.timing import DEFAULT, QUICK, compare_interleaved
from defectopt.models.export import export_openvino
from defectopt.compress.prune.structured import StructuredConfig, attention_modules, prune_structured
from defectopt.compress.prune.unstructured import apply_masks, make_permanent
from defectopt.models.factory import count_macs, create, param_count
from defectopt.models.registry import get

TARGETS = {"vit_s16": 0.35, "convnext_tiny": 0.5}
ALL = ("vit_s16", "convnext_tiny", "vit_t16", "efficientnet_b0", "mobilevit_s")


def torch_call(model: torch.nn.Module, x: torch.Tensor):
    model.eval()

    def run():
        with torch.inference_mode():
            model(x)

    return run


def openvino_call(compiled, x: np.ndarray):
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


def compile_openvino(ov_model_or_path, threads: int, img: int):
    from defectopt.runtime.sessions import compile_ir

    # static batch-1 shape, as the OpenVINO runner compiles it
    return compile_ir(ov_model_or_path, threads=threads, inference_precision="fp32", shape=(1, 3, img, img))


def int8_openvino(model: torch.nn.Module, alias: str, img: int, folder: Path, n_calib: int):
    """NNCF INT8 IR of `model` via the quantize module's own code path (random calibration)."""
    import openvino as ov

    from defectopt.compress.quantize.common import Parent
    from defectopt.compress.quantize.static import quantize_openvino

    parent = Parent(artifact=SimpleNamespace(alias=alias, img_size=img, id=0), model=model, dataset=None,
                    family=get(alias).family)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, img, img), dtype=np.float32) for _ in range(n_calib)]
    fp32 = ov.convert_model(model.eval(), example_input=torch.zeros(1, 3, img, img), input=[(-1, 3, img, img)])
    q = quantize_openvino(parent, calib, fp_model=fp32)
    path = folder / "int8.xml"
    ov.save_model(q, str(path), compress_to_fp16=False)
    return path


def ratio_line(res, base: str, cand: str) -> dict:
    spread = res.speedup_spread(base, cand)
    return {
        "ratio": 1.0 / spread["speedup"],  # latency(candidate) / latency(baseline)
        "speedup": spread["speedup"], "speedup_p10": spread["p10"], "speedup_p90": spread["p90"],
        "base_ms": res.results[base].median_ms, "cand_ms": res.results[cand].median_ms,
    }


def bench_one(alias: str, args) -> dict:
    img, threads = args.img, args.threads
    cfg = QUICK if args.quick else DEFAULT
    torch.manual_seed(0)
    base = create(alias, 2, img).eval()
    pruned = copy.deepcopy(base)
    t0 = time.perf_counter()
    prune_structured(pruned, img_size=img, cfg=StructuredConfig(ratio=args.ratio, round_to=args.round_to))
    prune_s = time.perf_counter() - t0
    out = {
        "alias": alias, "ratio": args.ratio, "round_to": args.round_to, "img": img, "threads": threads,
        "prune_seconds": round(prune_s, 2),
        "macs_before": count_macs(base, img), "macs_after": count_macs(pruned, img),
        "params_before": param_count(base), "params_after": param_count(pruned),
        "heads_after": [m.num_heads for m in attention_modules(pruned)][:1],
    }
    out["macs_ratio"] = out["macs_after"] / out["macs_before"]
    print(f"[{alias}] MACs {out['macs_before'] / 1e9:.3f}G -> {out['macs_after'] / 1e9:.3f}G "
          f"({out['macs_ratio']:.2f}x), params {out['params_before'] / 1e6:.2f}M -> {out['params_after'] / 1e6:.2f}M",
          flush=True)

    torch.set_num_threads(threads)
    x = torch.randn(1, 3, img, img)
    eager = {"unpruned": torch_call(base, x), "pruned": torch_call(pruned, x)}
    if args.unstructured:
        sparse = copy.deepcopy(base)
        make_permanent(apply_masks(sparse, ratio=args.ratio, importance="l1", global_pruning=True))
        eager["unstructured"] = torch_call(sparse, x)
    res = compare_interleaved(eager, cfg=cfg)
    out["eager"] = {"pruned": ratio_line(res, "unpruned", "pruned"), "timing": res.to_dict()}
    if args.unstructured:
        out["eager"]["unstructured"] = ratio_line(res, "unpruned", "unstructured")
    print(f"[{alias}] torch eager  : {res.results['unpruned'].median_ms:.2f} ms -> {res.results['pruned'].median_ms:.2f} ms"
          f"  pruned/unpruned {out['eager']['pruned']['ratio']:.3f}"
          + (f"; unstructured/unpruned {out['eager']['unstructured']['ratio']:.3f}" if args.unstructured else ""),
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "base").mkdir()
        (tmp / "pruned").mkdir()
        xn = x.numpy()
        compiled = {
            "unpruned": compile_openvino(export_openvino(base, img, tmp / "base"), threads, img),
            "pruned": compile_openvino(export_openvino(pruned, img, tmp / "pruned"), threads, img),
        }
        if args.int8:
            (tmp / "base8").mkdir()
            (tmp / "pruned8").mkdir()
            compiled["unpruned_int8"] = compile_openvino(int8_openvino(base, alias, img, tmp / "base8", args.calib), threads, img)
            compiled["pruned_int8"] = compile_openvino(int8_openvino(pruned, alias, img, tmp / "pruned8", args.calib), threads, img)
        calls = {name: openvino_call(c, xn) for name, c in compiled.items()}
        res = compare_interleaved(calls, cfg=cfg)
    out["openvino"] = {"pruned": ratio_line(res, "unpruned", "pruned"), "timing": res.to_dict()}
    line = (f"[{alias}] OpenVINO FP32: {res.results['unpruned'].median_ms:.2f} ms -> {res.results['pruned'].median_ms:.2f} ms"
            f"  pruned/unpruned {out['openvino']['pruned']['ratio']:.3f}")
    if args.int8:
        for name in ("unpruned_int8", "pruned_int8"):
            out["openvino"][name] = ratio_line(res, "unpruned", name)
        out["openvino"]["pruned_int8_vs_pruned"] = ratio_line(res, "pruned", "pruned_int8")
        out["openvino"]["pruned_int8_vs_unpruned_int8"] = ratio_line(res, "unpruned_int8", "pruned_int8")
        line += (f"; INT8 {res.results['unpruned_int8'].median_ms:.2f} ms, pruned+INT8 {res.results['pruned_int8'].median_ms:.2f} ms"
                 f" (vs unpruned FP32 {out['openvino']['pruned_int8']['ratio']:.3f}x)")
    print(line, flush=True)
    target = TARGETS.get(alias) if abs(args.ratio - 0.5) < 1e-9 else None
    if target is not None:
        out["target"] = target
        out["meets_target"] = {rt: out[rt]["pruned"]["ratio"] <= target for rt in ("eager", "openvino")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ALL), help="comma-separated registry aliases")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", action="store_true", help="also NNCF INT8 of unpruned and pruned (OpenVINO)")
    parser.add_argument("--calib", type=int, default=16, help="random calibration batches for --int8")
    parser.add_argument("--unstructured", action="store_true", help="also magnitude pruning in eager")
    parser.add_argument("--quick", action="store_true", help="bench.timing QUICK config (smoke runs)")
    parser.add_argument("--out", type=Path, help="write all figures as JSON here")
    args = parser.parse_args(argv)
    import os

    results = {"host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                        "loadavg_start": os.getloadavg()[0], "torch": torch.__version__},
               "models": []}
    if args.threads > 1 and os.getloadavg()[0] + args.threads > (os.cpu_count() or 1) + 0.5:
        # torch's OpenMP threads spin at every op's barrier; when another process holds the other
        # core, each barrier waits a scheduler slice: eager ViT measured 10-20x slower at 2 threads
        # than at 1 on this machine under load. OpenVINO's own thread pool suffers far less.
        print(f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: multi-threaded eager timings "
              "will be dominated by OpenMP barrier waits; use --threads 1 or an idle machine", flush=True)
    for alias in [a.strip() for a in args.models.split(",") if a.strip()]:
        results["models"].append(bench_one(alias, args))
    results["host"]["loadavg_end"] = os.getloadavg()[0]
    print("\nalias            MACs×   eager×  OpenVINO×  target")
    for r in results["models"]:
        tgt = f"<= {r['target']}: " + ("eager ok" if r["meets_target"]["eager"] else "eager MISS") + ", " + (
            "ov ok" if r["meets_target"]["openvino"] else "ov MISS") if "target" in r else ""
        print(f"{r['alias']:<16} {r['macs_ratio']:.3f}   {r['eager']['pruned']['ratio']:.3f}   "
              f"{r['openvino']['pruned']['ratio']:.3f}      {tgt}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=float))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
