"""Finalise a model package on the CPU with ONNX Runtime: recompute every SHA-256 and measure
top-1 of every variant with its chained per-layer files on the full CIFAR-10 test set.

    python -m jmdc_models.finalize packages/alexnet-cifar10 [--import-from GPU_OUT/alexnet-cifar10/package/alexnet-cifar10]

``--import-from`` first replaces the package's manifest and variant folders with those of a draft
package (as written by ``jmdc_models.pipeline``). Needs numpy + onnxruntime only.
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import cifar, ortchain


def import_package(src, dst):
    src, dst = Path(src), Path(dst)
    m = ortchain.load_manifest(src)
    dst.mkdir(parents=True, exist_ok=True)
    old = dst / "manifest.json"
    if old.exists():
        for v in ortchain.load_manifest(dst).get("variants", []):
            d = dst / v["dir"]
            if d.is_dir():
                shutil.rmtree(d)
    for v in m["variants"]:
        shutil.copytree(src / v["dir"], dst / v["dir"])
    shutil.copy2(src / "manifest.json", dst / "manifest.json")
    print(f"imported {len(m['variants'])} variants from {src} into {dst}")


def finalize(pkg, test_bin, batch=500, limit=None):
    pkg = Path(pkg)
    m = ortchain.load_manifest(pkg)
    images, labels = cifar.read_bin(test_bin, limit=limit)
    norm = m["normalization"]

    def normalize(x):
        return cifar.normalize(x, norm["mean"], norm["std"], norm["pixel_scale"])

    version = ortchain.ort_version()
    for v in m["variants"]:
        vdir = pkg / v["dir"]
        for l in v["layers"]:
            l["sha256"] = ortchain.sha256_file(vdir / l["file"])
        if v.get("full_model"):
            v["full_model"]["sha256"] = ortchain.sha256_file(vdir / v["full_model"]["file"])
        t = time.time()
        chain = ortchain.Chain(vdir, v, m["input"]["name"], m["output_name"])
        acc = ortchain.top1(chain.run, images, labels, normalize, batch)
        v["accuracy"] = {"top1": round(acc, 6), "images": int(len(labels)),
                         "dataset": "CIFAR-10 (JPEG copy) test_batch.bin",
                         "runtime": f"onnxruntime {version}",
                         "method": "chained per-layer files"}
        print(f"{m['name']} {v['name']}: top-1 {acc * 100:.2f} % on {len(labels)} images "
              f"(ONNX Runtime {version}, chained per-layer files, {time.time() - t:.1f}s)")
        tr = m.get("training")
        if isinstance(tr, dict) and isinstance(tr.get("variants"), dict) and v["name"] in tr["variants"]:
            tr["variants"][v["name"]]["onnxruntime_top1"] = round(acc, 6)
    ortchain.write_manifest(pkg, m)
    print(f"wrote {pkg / 'manifest.json'}")
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("package", help="package folder (models/packages/<name>)")
    p.add_argument("--import-from", help="draft package folder to copy in first")
    p.add_argument("--test-bin", help="test_batch.bin (default: $JMDC_CIFAR_DIR or "
                                      "../shared/datasets/cifar-10 from the repo root)")
    p.add_argument("--batch", type=int, default=500)
    args = p.parse_args(argv)
    if args.import_from:
        import_package(args.import_from, args.package)
    test_bin = Path(args.test_bin) if args.test_bin else (
        cifar.default_cifar_dir() / "cifar-10-batches-bin" / "test_batch.bin")
    if not test_bin.is_file():
        print(f"error: {test_bin} not found (set JMDC_CIFAR_DIR or --test-bin)", file=sys.stderr)
        return 2
    finalize(args.package, test_bin, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
