#!/usr/bin/env python3
"""Would per-channel quantization ranges from the package buy accuracy per byte? (issue 14, part 2)

Measured before building it. For each (variant, split, bits) of the bundled AlexNet-CIFAR package the
head runs on the CIFAR-10 test images with ONNX Runtime, the split tensor is quantized, dequantized
and the tail run on it, two ways:

  tensor    the codec today: one affine range per tensor and frame (min and max of the frame's values)
  chan-max  per-channel *equalization* from the package: each channel divided by a gain g_c before the
            per-tensor quantization and multiplied back after it; g_c is the largest value channel c
            took on the first 2,000 *training* images (data_batch_1.bin), so no per-frame bytes are
            added and the test images are not used to fit it
  chan-p9999  the same with g_c the channel's 99.99th percentile (values above it are simply coded with
            the larger per-frame range)

and reports top-1 on the first N test images and the order-0 entropy of the codes in bits per value
(what the entropy stage's size follows; it codes 3-24 % below it on these tensors, docs/codec.md §10).
Region selection is ρ = 1 (every position kept), as in the plans the Pareto tables pick at these
splits. Needs numpy and onnxruntime; reads ../shared/datasets/cifar-10.

    python3 bench/channel_ranges.py [-n 10000] [--splits 6,9] [--bits 2,3,4]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "models/packages/alexnet-cifar10"
DATA = REPO.parent / "shared/datasets/cifar-10/cifar-10-batches-bin"


def load(path, n, norm):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)[:n]
    x = raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / norm["pixel_scale"]
    mean = np.array(norm["mean"], np.float32)[None, :, None, None]
    std = np.array(norm["std"], np.float32)[None, :, None, None]
    return (x - mean) / std, raw[:, 0].astype(int)


def run(variant, first, last, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    for i in range(first, last):
        s = ort.InferenceSession(str(PKG / variant / f"layer{i:02d}.onnx"), so)
        name = s.get_inputs()[0].name
        x = np.concatenate([s.run(None, {name: x[j:j + 500]})[0] for j in range(0, len(x), 500)])
    return x


def quantize(v, bits):
    """The codec's per-tensor affine quantization per frame (rows of v); returns (dequantized, codes)."""
    levels = 2**bits - 1
    lo = v.min(1, keepdims=True)
    scale = (v.max(1, keepdims=True) - lo) / levels
    scale = np.where(scale == 0, 1, scale)
    q = np.clip(np.rint((v - lo) / scale), 0, levels)
    return lo + q * scale, q


def h0(q):
    total = 0.0
    for row in q:
        _, counts = np.unique(row, return_counts=True)
        p = counts / counts.sum()
        total += -(counts * np.log2(p)).sum()
    return total / q.size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--splits", default="6,9")
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--variants", default="keep100,keep075,keep050")
    args = ap.parse_args()
    manifest = json.loads((PKG / "manifest.json").read_text())
    norm = manifest["normalization"]
    layers = len(list((PKG / "keep100").glob("layer*.onnx")))
    x_test, y_test = load(DATA / "test_batch.bin", args.n, norm)
    x_fit, _ = load(DATA / "data_batch_1.bin", 2000, norm)
    print(f"AlexNet-CIFAR, first {args.n} CIFAR-10 test images; channel gains from the first 2,000 "
          "images of data_batch_1.bin; ρ = 1\n")
    print("| variant | split | bits | unquantized top-1 | tensor top-1 (bit/value) | chan-max top-1 (bit/value) | chan-p9999 top-1 (bit/value) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for split in [int(s) for s in args.splits.split(",")]:
        for variant in args.variants.split(","):
            head = run(variant, 0, split, x_test)
            fit = run(variant, 0, split, x_fit)
            c = head.shape[1]
            per_channel = head.reshape(len(head), c, -1)
            fit_channel = fit.reshape(len(fit), c, -1)

            def top1(t):
                return 100.0 * (run(variant, split, layers, t.reshape(head.shape).astype(np.float32)).argmax(1) == y_test).mean()

            gains = {
                "max": fit_channel.max(axis=(0, 2)),
                "p9999": np.percentile(fit_channel.transpose(1, 0, 2).reshape(c, -1), 99.99, axis=1),
            }
            base = top1(head)
            for bits in [int(b) for b in args.bits.split(",")]:
                cells = []
                dq, q = quantize(head.reshape(len(head), -1), bits)
                cells.append(f"{top1(dq):.2f} % ({h0(q):.2f})")
                for name in ["max", "p9999"]:
                    g = np.maximum(gains[name], 1e-3 * gains[name].max())[None, :, None]
                    dq, q = quantize((per_channel / g).reshape(len(head), -1), bits)
                    dq = dq.reshape(per_channel.shape) * g
                    cells.append(f"{top1(dq):.2f} % ({h0(q):.2f})")
                print(f"| {variant} | {split} | {bits} | {base:.2f} % | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
