"""Decode the CIFAR-10 JPEG tarball once into an uncompressed .npz (uint8) for the trainers.

    python -m jmdc_models.prepare cifar-10-jpeg.tar.gz /tmp/cifar10.npz [--workers 16]
"""

import argparse
import sys
import time

from . import cifar


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("tarball")
    p.add_argument("out")
    p.add_argument("--workers", type=int, default=0)
    a = p.parse_args(argv)
    t = time.time()
    data = cifar.read_jpeg_tarball(a.tarball, workers=a.workers or None)
    cifar.save_npz(a.out, data)
    print(f"[{time.strftime('%H:%M:%S')}] decoded {len(data['train'][1])} train + "
          f"{len(data['test'][1])} test JPEGs from {a.tarball} in {time.time() - t:.1f}s -> {a.out}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
