#!/usr/bin/env python3
"""How much would an entropy stage save on real split tensors? (issue 14, measured before building it)

For each case: the head of the bundled AlexNet-CIFAR variant runs on the 256 sample images
(`models/samples/cifar10-test-256.bin`) with ONNX Runtime, the split tensor goes through the codec's
region selection and per-tensor affine quantization (as `docs/codec.md` specifies them), and the
codes are sized five ways:

  fixed      the codec today: b bits per code (plus the mask when positions are dropped; header apart)
  H0         order-0 entropy of the frame's own codes: what an ideal adaptive entropy coder reaches
             without sending a table (a real coder adds a few bytes)
  static     order-0 entropy under one table per (variant, split, bits) learned from all frames:
             what a table stored in the model package would give
  per-chan   H0 of codes quantized per channel, plus 4 bytes of ranges (f16 min + scale) per channel
  zlib, lzma general-purpose compressors over the packed codes
  zstd       zstandard (level 19, magicless frame without checksum or size) over the packed codes
  range      what jmdc's entropy stage (`QuantMode::Coded`, `core/proto/src/codec/entropy.rs`) really sent:
             read from `--coded TABLE`, a calibration table measured by `jmdc-edge calibrate` on the
             same 256 images with the `intNac` codecs (mean encoded bytes minus the codec header)

Calibrated top-1 comes from the package's `calibration.json` (the real codec; 10,000 test images for
AlexNet, 2,000 for VGG16). `--model vgg16-cifar10` measures the bundled VGG16 at its calibrated splits.
Needs numpy, onnxruntime and zstandard (e.g. `python3 -m venv /tmp/ev && /tmp/ev/bin/pip install numpy
onnxruntime zstandard`).
"""
import json
import lzma
import math
import sys
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import zstandard

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "models/samples/cifar10-test-256.bin"
ALEXNET_CASES = [
    ("keep050", 6, 1.0, 3), ("keep050", 6, 1.0, 2), ("keep050", 6, 0.75, 3), ("keep100", 6, 1.0, 3),
    ("keep100", 6, 1.0, 2), ("keep075", 6, 1.0, 3), ("keep050", 3, 1.0, 3), ("keep050", 3, 0.5, 2),
    ("keep050", 7, 1.0, 2), ("keep100", 7, 1.0, 3), ("keep100", 12, 1.0, 2), ("keep050", 10, 0.75, 2),
]
# VGG16: splits 10 (pool2, 128x8x8), 17 (pool3, 256x4x4), 24 (pool4, 512x2x2), 31 (pool5, 512x1x1)
VGG16_CASES = [
    ("keep100", 10, 0.5, 2), ("keep100", 17, 0.75, 2), ("keep100", 17, 0.75, 3), ("keep100", 24, 1.0, 2),
    ("keep100", 24, 0.75, 2), ("keep100", 31, 1.0, 2), ("keep050", 17, 0.5, 2), ("keep050", 24, 0.5, 2),
    ("keep050", 31, 1.0, 2), ("keep050", 31, 1.0, 4), ("keep075", 31, 1.0, 2),
]
MODELS = {"alexnet-cifar10": ALEXNET_CASES, "vgg16-cifar10": VGG16_CASES}


def images(manifest):
    norm = manifest["normalization"]
    raw = np.fromfile(SAMPLES, dtype=np.uint8).reshape(-1, 3073)
    x = raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / norm["pixel_scale"]
    mean = np.array(norm["mean"], np.float32)[None, :, None, None]
    std = np.array(norm["std"], np.float32)[None, :, None, None]
    return (x - mean) / std


def head(pkg, xs, variant, split):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(str(pkg / variant / f"layer{i:02d}.onnx"), so) for i in range(split)]
    out = []
    for x in xs:
        t = x[None]
        for s in sessions:
            t = s.run(None, {s.get_inputs()[0].name: t})[0]
        out.append(t[0])
    return out


def select(t, keep):
    if t.ndim != 3:
        return t.reshape(1, -1), 0
    c, h, w = t.shape
    k = max(1, min(h * w, math.ceil(keep * h * w * (1 - 2**-23))))
    importance = (t.astype(np.float64) ** 2).sum(0).reshape(-1)
    kept = sorted(sorted(range(h * w), key=lambda p: (-importance[p], p))[:k])
    mask = math.ceil(h * w / 8) if k < h * w else 0
    return t.reshape(c, -1)[:, kept], mask


def quantize(v, bits):
    lo, hi = float(v.min()), float(v.max())
    scale = (hi - lo) / (2**bits - 1)
    if scale == 0:
        return np.zeros(v.shape, np.int64)
    return np.rint((v - lo) / scale).astype(np.int64)


def entropy_bits(codes):
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() * codes.size)


def packed(codes, bits):
    planes = np.unpackbits(codes.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def top1(table, variant, split, keep, bits):
    for e in table["entries"]:
        if (e["variant"], e["split"], e["keep_ratio"], e["codec"]) == (variant, split, keep, f"int{bits}"):
            return e["top1"]
    return None


def coded_payload(coded, variant, split, keep, bits, rank):
    """Mean bytes of the entropy stage's mask + payload: the table's mean encoded bytes minus the
    codec header (8 + 4·rank + 16 bytes)."""
    if coded is None:
        return None
    for e in coded["entries"]:
        if (e["variant"], e["split"], e["keep_ratio"], e["codec"]) == (variant, split, keep, f"int{bits}ac"):
            return e["bytes"] - (8 + 4 * rank + 16)
    return None


def main():
    args = sys.argv[1:]
    model, coded = "alexnet-cifar10", None
    while args:
        if len(args) >= 2 and args[0] == "--model" and args[1] in MODELS:
            model = args[1]
        elif len(args) >= 2 and args[0] == "--coded":
            coded = json.loads(Path(args[1]).read_text())
        else:
            print(f"usage: {sys.argv[0]} [--model {'|'.join(MODELS)}] [--coded TABLE]", file=sys.stderr)
            return 2
        args = args[2:]
    pkg = REPO / "models/packages" / model
    manifest = json.loads((pkg / "manifest.json").read_text())
    table = json.loads((pkg / "calibration.json").read_text())
    xs = images(manifest)
    cache = {}
    zstd = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters.from_level(
            19, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_checksum=0, write_content_size=0, write_dict_id=0
        )
    )
    print("| variant | split | keep | bits | top-1 | elements | fixed B | H0 B (bit/elem) | static B | per-chan B | zlib B | lzma B | zstd B | range B (bit/elem) | zero codes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant, split, keep, bits in MODELS[model]:
        if (variant, split) not in cache:  # setdefault would run the head for every case
            cache[(variant, split)] = head(pkg, xs, variant, split)
        tensors = cache[(variant, split)]
        n = len(tensors)
        sums = dict(fixed=0.0, h0=0.0, per_chan=0.0, zlib=0.0, lzma=0.0, zstd=0.0, masks=0.0, zeros=0.0, elements=0)
        codes_all = []
        for t in tensors:
            v, mask = select(t, keep)
            codes = quantize(v, bits).reshape(-1)
            codes_all.append(codes)
            p = packed(codes, bits)
            sums["elements"] += codes.size
            sums["masks"] += mask
            sums["fixed"] += math.ceil(codes.size * bits / 8) + mask
            sums["h0"] += entropy_bits(codes) / 8 + mask
            per_chan = np.concatenate([quantize(ch, bits) for ch in v])
            sums["per_chan"] += entropy_bits(per_chan) / 8 + mask + 4 * v.shape[0]
            sums["zlib"] += len(zlib.compress(p, 9)) + mask
            sums["lzma"] += len(lzma.compress(p, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])) + mask
            sums["zstd"] += len(zstd.compress(p)) + mask
            sums["zeros"] += float((codes == 0).mean())
        static = entropy_bits(np.concatenate(codes_all)) / 8 / n + sums["masks"] / n
        acc = top1(table, variant, split, keep, bits)
        elems = sums["elements"] / n
        rc = coded_payload(coded, variant, split, keep, bits, tensors[0].ndim)
        rc_text = "–" if rc is None else f"{rc} ({8 * (rc - sums['masks'] / n) / elems:.2f})"
        print(
            f"| {variant} | {split} | {keep:.2f} | {bits} | {'–' if acc is None else f'{acc * 100:.1f} %'} | {elems:.0f} | "
            f"{sums['fixed'] / n:.1f} | {sums['h0'] / n:.1f} ({8 * (sums['h0'] - sums['masks']) / sums['elements']:.2f}) | "
            f"{static:.1f} | {sums['per_chan'] / n:.1f} | {sums['zlib'] / n:.1f} | {sums['lzma'] / n:.1f} | "
            f"{sums['zstd'] / n:.1f} | {rc_text} | {sums['zeros'] / n:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
