#!/usr/bin/env python3
"""Writes N small PNG frames (32x32 RGB gradients, standard library only) into FOLDER for the package
tests (check-deb.sh --run, install-test.sh). Each is written under a hidden name and renamed in, as a
producer for the edge's watched folder should.

Usage: test-frames.py FOLDER [N]   (N defaults to 8)
"""
import os
import struct
import sys
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(n: int) -> bytes:
    def pixel(x: int, y: int) -> tuple:
        return ((x * 8 + n * 30) % 256, (y * 8) % 256, (x * y + n * 17) % 256)

    rows = b"".join(b"\0" + bytes(v for x in range(32) for v in pixel(x, y)) for y in range(32))
    header = struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    folder = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) == 3 else 8
    for n in range(count):
        tmp = os.path.join(folder, f".frame{n:02d}.png.tmp")
        with open(tmp, "wb") as f:
            f.write(png(n))
        os.rename(tmp, os.path.join(folder, f"frame{n:02d}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
