"""Does PT2E static INT8 (torchao X86InductorQuantizer + torch.compile) work with the installed
torch/torchao? `defectopt quantize --backend pt2e` is refused until this script passes.

    python benchmarks/check_pt2e.py                      # tiny test_convnext at 32 px (a minute)
    python benchmarks/check_pt2e.py --model convnext_tiny --img-size 224

It exports the model with a dynamic batch, calibrates, converts, compiles with Inductor
(`freezing=True`, which is what turns the quantize/dequantize pairs into oneDNN INT8 kernels)
and, if that works, times eager FP32, Inductor FP32 and PT2E INT8 at batch 1. Exit 0 when the
compiled INT8 graph runs, 1 otherwise (with the first line of the error).

Seen with torch 2.15.0 + torchao 0.18.0 (2026-11): compile fails with
"UnsupportedOperatorException: onednn.qconv_prepack.default" (torchao's weight-prepack pass
emits the op packet, which Inductor no longer accepts; patching that in only moves the failure
to "packed_weight must be a graph constant" for the Linear layers).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="test_convnext", help="timm model name")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        import torchao
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as exc:
        print(f"torchao is not installed ({exc}); pip install torchao")
        return 1
    import timm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = args.img_size
    model = timm.create_model(args.model, num_classes=2).eval()
    print(f"torch {torch.__version__}, torchao {torchao.__version__}, {args.model} at {s} px")
    exported = torch.export.export(model, (torch.randn(2, 3, s, s),),
                                   dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},)).module()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for _ in range(8):
            prepared(torch.randn(1, 3, s, s))
    converted = convert_pt2e(prepared)
    x = torch.randn(1, 3, s, s)
    int8 = torch.compile(converted, dynamic=False, options={"freezing": True})
    try:
        with torch.inference_mode():
            got = int8(x)
    except Exception as exc:  # report the first line: that is the finding
        print("PT2E INT8 does NOT compile:", (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300])
        return 1
    fp32 = torch.compile(model, dynamic=False, options={"freezing": True})

    def ms(fn, n=30):
        with torch.inference_mode():
            for _ in range(5):
                fn(x)
            t = time.perf_counter()
            for _ in range(n):
                fn(x)
        return (time.perf_counter() - t) / n * 1e3

    with torch.inference_mode():
        err = (converted(x) - got).abs().max().item()
    print(f"PT2E INT8 compiles (max |compiled - reference| = {err:.4g}); batch 1 ms: eager FP32 {ms(model):.2f}, "
          f"Inductor FP32 {ms(fp32):.2f}, PT2E INT8 {ms(int8):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
