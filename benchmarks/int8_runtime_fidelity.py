"""Does OpenVINO's INT8 execution on this CPU compute what NNCF's fake-quantized model simulates?

NNCF quantizes a torch model by inserting fake quantizers (exact integer grids, computed in
float); OpenVINO's CPU plugin turns the same FakeQuantize ops into INT8 kernels. On CPUs without
VNNI (AVX2, AVX-512 without VNNI) those kernels multiply u8 x s8 pairs into int16 and can
saturate ("overflow issue"); NNCF's `overflow_fix` quantizes weights to half the 8-bit range
(7 bits) to avoid it — by default for the first convolution only. This script quantizes one FP32
model of a study DB per `overflow_fix` mode with NNCF on the torch model (the PTQ that initialises
`--method qat`; `--method static` runs the same NNCF settings on the OpenVINO graph) and scores,
on val and test: the FP32 parent (torch), the simulation (torch, fake quantizers) and the runtime
(OpenVINO IR, compiled as bench compiles it). Runtime vs simulation agreement isolates what the
CPU's INT8 kernels change; simulation vs parent is what quantization itself costs. Choose a mode
on val; test is reported to check that choice. Recall is read at argmax (a binary model's
deployed threshold is bench's choice), so for binary models read the agreement figures.

    python benchmarks/int8_runtime_fidelity.py --db DB --id 3 --modes first_layer_only,enable \
        --out benchmarks/results/int8_runtime_fidelity_neu_s37_3_avx2.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("first_layer_only", "enable", "disable")
SPLITS = ("val", "test")


def _logits_torch(model, batches) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x)).float().numpy() for x in batches])


def _logits_openvino(compiled, batches) -> np.ndarray:
    return np.concatenate([np.asarray(compiled(x)[0]) for x in batches])


def _scores(logits: np.ndarray, labels: np.ndarray, dataset) -> dict:
    from defectopt.metrics.task import evaluate_logits

    m = evaluate_logits(logits, labels, dataset.task, dataset.num_classes, None)
    return {"recall": float(m["recall"]), "wrong": int((logits.argmax(1) != labels).sum())}


def _agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    from defectopt.compress.quantize.common import compare_logits

    c = compare_logits(ref, got)
    return {"top1_agreement": c["top1_agreement"], "logit_rel_err": c["logit_rel_err"],
            "disagreeing_images": int((ref.argmax(1) != got.argmax(1)).sum())}


def measure(db: Path, model_id: int, modes: list[str], calib_images: int, threads: int) -> dict:
    import openvino as ov
    import torch

    from defectopt.bench.evaluate import split_batches
    from defectopt.bench.host import fingerprint
    from defectopt.compress.quantize.common import calibration_batches, load_parent
    from defectopt.compress.quantize.qat import fake_quant_model
    from defectopt.compress.quantize.static import save_openvino
    from defectopt.quiet import quiet_libraries
    from defectopt.runtime.sessions import compile_ir
    from defectopt.store.db import open_store

    torch.set_num_threads(threads)
    parent = load_parent(open_store(db, migrate=False), model_id)
    data = {s: list(split_batches(parent.artifact, parent.dataset, s)) for s in SPLITS}
    batches = {s: [x for x, _ in data[s]] for s in SPLITS}
    labels = {s: np.concatenate([y for _, y in data[s]]) for s in SPLITS}
    fp32 = {s: _logits_torch(parent.model, batches[s]) for s in SPLITS}
    calib = calibration_batches(parent, calib_images)
    host = fingerprint()
    out = {"db": str(db), "model_id": model_id, "alias": parent.artifact.alias, "img_size": parent.img_size,
           "calib_images": len(calib), "threads": threads,
           "host": {k: host[k] for k in ("cpu", "isa", "versions", "hash")},
           "parent_fp32_torch": {s: _scores(fp32[s], labels[s], parent.dataset) for s in SPLITS}, "modes": {}}
    for mode in modes:
        t0 = time.perf_counter()
        sim = fake_quant_model(parent, calib, overflow_fix=mode).eval()  # QAT's own initialisation
        size = parent.img_size
        with quiet_libraries():
            ir = ov.convert_model(sim, example_input=torch.zeros(1, 3, size, size), input=[(-1, 3, size, size)])
        with tempfile.TemporaryDirectory() as tmp:
            # saved and read back as published IRs are: saving folds the weight quantizers to INT8
            compiled = compile_ir(save_openvino(ir, Path(tmp)), threads=threads)
            row = {}
            for s in SPLITS:
                sim_logits, rt_logits = _logits_torch(sim, batches[s]), _logits_openvino(compiled, batches[s])
                row[s] = {"simulated": _scores(sim_logits, labels[s], parent.dataset),
                          "runtime": _scores(rt_logits, labels[s], parent.dataset),
                          "runtime_vs_simulated": _agreement(sim_logits, rt_logits),
                          "simulated_vs_parent": _agreement(fp32[s], sim_logits)}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out["modes"][mode] = row
        print(f"{mode}: " + "; ".join(
            f"{s} recall parent {out['parent_fp32_torch'][s]['recall']:.3f} sim {row[s]['simulated']['recall']:.3f} "
            f"runtime {row[s]['runtime']['recall']:.3f} (runtime≠sim on {row[s]['runtime_vs_simulated']['disagreeing_images']})"
            for s in SPLITS), file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--id", type=int, required=True, help="an FP32 torch-family model of the DB")
    parser.add_argument("--modes", default="first_layer_only,enable", help=f"comma-separated of {', '.join(MODES)}")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        print(f"error: --modes takes {', '.join(MODES)}; got {args.modes!r}", file=sys.stderr)
        return 2
    if not args.db.is_file():
        print(f"error: no such DB: {args.db}", file=sys.stderr)
        return 2
    from defectopt.errors import DefectoptError

    try:
        result = measure(args.db, args.id, modes, args.calib_images, args.threads)
    except DefectoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    if args.out:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
