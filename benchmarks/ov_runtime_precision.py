"""Which precision OpenVINO's CPU plugin actually executes each compute layer of an IR in.

An INT8 IR that is no faster than its FP32 parent could mean the plugin fell back to float
kernels, or that the INT8 kernels are simply not faster on this CPU (no VNNI). The compiled
model's runtime graph tells them apart: per executed node it records the layer type, the
runtime precision and the primitive (e.g. `jit_avx2_I8`). This counts them for the layers that
carry the arithmetic (Convolution, FullyConnected, MatMul), compiled by the runtime's own
`compile_ir` as bench compiles them (CPU, FP32 hint, latency mode, the given thread count).

    python benchmarks/ov_runtime_precision.py DB4-artifacts/3/model.xml DB4-artifacts/4/model.xml
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

COMPUTE_LAYERS = ("Convolution", "FullyConnected", "MatMul")


def runtime_layers(xml: Path, threads: int) -> dict[str, int]:
    from defectopt.runtime.sessions import compile_ir

    def rt(info, key: str, default: str) -> str:
        return info[key].astype(str) if key in info else default

    counts: collections.Counter[str] = collections.Counter()
    for node in compile_ir(xml, threads=threads).get_runtime_model().get_ops():
        info = node.get_rt_info()
        layer = rt(info, "layerType", node.get_type_name())
        if layer in COMPUTE_LAYERS:
            counts[f"{layer} {rt(info, 'runtimePrecision', '?')} {rt(info, 'primitiveType', '?')}"] += 1
    return dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xml", nargs="+", type=Path, help="OpenVINO IR (model.xml) files")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.xml if not p.is_file()]
    if missing:
        print(f"error: no such IR: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(json.dumps({str(p): runtime_layers(p, args.threads) for p in args.xml}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
