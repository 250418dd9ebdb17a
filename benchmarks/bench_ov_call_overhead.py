"""How much of a small OpenVINO model's latency is the Python call, not the network?

Times, interleaved in one process, each given study model through two call paths of the same
compiled request: the dict path (`request.infer({0: batch})`, which copies the input and builds
an OVDict; what `runtime.sessions.OpenVINOSession.predict` did before session 29) and the
session's path (the caller's array bound as a shared-memory input tensor, the output tensor read
directly). Same weights, same compiled model, same thread count: the ratio is the call overhead.

    python benchmarks/bench_ov_call_overhead.py --db /work/study/neu-c.sqlite --ids 1,13 \
        --out benchmarks/results/ov_call_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from defectopt.bench.host import fingerprint
from defectopt.bench.runners import open_runner
from defectopt.bench.timing import DEFAULT, compare_interleaved, random_batch
from defectopt.models.artifacts import load_artifact
from defectopt.report.table import write_atomic
from defectopt.store.db import open_store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--ids", required=True, help="comma-separated model ids with an OpenVINO artifact or export")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    store = open_store(args.db)
    candidates, runners = {}, []
    for mid in (int(i) for i in args.ids.split(",")):
        art = load_artifact(store, mid)
        runner = open_runner(art, device="cpu", backend="openvino", threads=args.threads)
        runners.append(runner)
        batch = np.ascontiguousarray(random_batch(art.img_size, 1), dtype=np.float32)
        compiled, request = runner.session.compiled_for(tuple(batch.shape))
        output = compiled.output(0)

        def dict_path(request=request, output=output, batch=batch):
            return np.asarray(request.infer({0: batch})[output])

        def session_path(session=runner.session, batch=batch):
            return session.predict(batch)

        label = f"{mid} {art.alias} {runner.precision} {art.img_size}"
        candidates[f"{label} dict"] = dict_path
        candidates[f"{label} session"] = session_path
    result = compare_interleaved(candidates, cfg=DEFAULT.with_blocks(args.blocks))
    for r in runners:
        r.close()
    summary = result.to_dict()
    names = list(candidates)
    for n in names:
        print(f"  {n:50s} median {summary['results'][n]['median_of_block_medians_ms']:8.3f} ms")
    ratios = {}
    for dict_name in names[::2]:
        session_name = dict_name.removesuffix(" dict") + " session"
        ratios[dict_name.removesuffix(" dict")] = sp = result.speedup_spread(dict_name, session_name)
        print(f"  {dict_name.removesuffix(' dict')}: session path {sp['speedup']:.3f}x the dict path "
              f"(p10-p90 {sp['p10']:.3f}-{sp['p90']:.3f}, {sp['rounds']} rounds)")
    if args.out:
        payload = {"host": fingerprint(), "threads": args.threads, "db": str(args.db), "session_vs_dict": ratios,
                   **summary}
        write_atomic(args.out, json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
