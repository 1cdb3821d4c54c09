"""CIFAR-10 readers returning uint8 arrays ``[N, 3, 32, 32]`` (RGB, CHW) and int64 labels.

- ``read_bin``: the binary batches (1 label byte + 3072 CHW bytes per record).
- ``read_jpeg_tarball``: ``train/<class>/NNNN.jpg`` / ``test/<class>/NNNN.jpg`` decoded with
  Pillow in a process pool (Pillow is imported only there).

Only numpy is needed at import time.
"""

import io
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .zoo import CIFAR10_CLASSES

RECORD = 3073
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_cifar_dir():
    """``$JMDC_CIFAR_DIR`` or ``<repo>/../shared/datasets/cifar-10``."""
    env = os.environ.get("JMDC_CIFAR_DIR")
    if env:
        return Path(env)
    return (REPO_ROOT / ".." / "shared" / "datasets" / "cifar-10").resolve()


def parse_bin(data, limit=None):
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size % RECORD:
        raise ValueError(f"CIFAR binary data of {raw.size} bytes is not a multiple of {RECORD}")
    raw = raw.reshape(-1, RECORD)
    if limit is not None:
        raw = raw[:limit]
    labels = raw[:, 0].astype(np.int64)
    if labels.size and labels.max() > 9:
        raise ValueError("label byte > 9: not CIFAR-10 binary data")
    images = raw[:, 1:].reshape(-1, 3, 32, 32).copy()
    return images, labels


def read_bin(paths, limit=None):
    """Reads one or more CIFAR-10 binary batch files."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    xs, ys = [], []
    for p in paths:
        x, y = parse_bin(Path(p).read_bytes())
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def read_bin_dir(batches_dir, split):
    d = Path(batches_dir)
    if split == "train":
        return read_bin([d / f"data_batch_{i}.bin" for i in range(1, 6)])
    return read_bin(d / "test_batch.bin")


def _decode_chunk(blobs):
    from PIL import Image  # only the training environment has Pillow

    out = np.empty((len(blobs), 32, 32, 3), dtype=np.uint8)
    for i, b in enumerate(blobs):
        im = Image.open(io.BytesIO(b))
        im = im.convert("RGB")
        if im.size != (32, 32):
            raise ValueError(f"JPEG of size {im.size}, expected 32x32")
        out[i] = np.asarray(im, dtype=np.uint8)
    return out


def read_jpeg_tarball(path, workers=None):
    """Returns ``{"train": (x, y), "test": (x, y)}`` from the JPEG tarball.

    Files are sorted by (class index, file name) inside each split."""
    entries = {"train": [], "test": []}
    cls_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile() or not m.name.lower().endswith(".jpg"):
                continue
            parts = m.name.lstrip("./").split("/")
            if len(parts) < 3:
                continue
            split, cls, fname = parts[-3], parts[-2], parts[-1]
            if split not in entries or cls not in cls_index:
                continue
            entries[split].append((cls_index[cls], fname, tf.extractfile(m).read()))
    workers = workers or min(16, os.cpu_count() or 1)
    out = {}
    with ProcessPoolExecutor(max_workers=workers) as ex:
        for split, items in entries.items():
            if not items:
                raise ValueError(f"{path}: no {split}/<class>/*.jpg files")
            items.sort(key=lambda t: (t[0], t[1]))
            blobs = [t[2] for t in items]
            labels = np.array([t[0] for t in items], dtype=np.int64)
            n_chunks = max(1, workers * 4)
            step = (len(blobs) + n_chunks - 1) // n_chunks
            chunks = [blobs[i:i + step] for i in range(0, len(blobs), step)]
            imgs = np.concatenate(list(ex.map(_decode_chunk, chunks)))
            out[split] = (np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)), labels)
    return out


def channel_stats(images):
    """Per-channel mean and std of pixel/255 over a uint8 ``[N, 3, H, W]`` array."""
    x = images.reshape(images.shape[0], images.shape[1], -1)
    n = x.shape[0] * x.shape[2]
    s = np.zeros(x.shape[1], dtype=np.float64)
    s2 = np.zeros(x.shape[1], dtype=np.float64)
    for i in range(0, x.shape[0], 5000):
        c = x[i:i + 5000].astype(np.float64) / 255.0
        s += c.sum(axis=(0, 2))
        s2 += (c * c).sum(axis=(0, 2))
    mean = s / n
    std = np.sqrt(s2 / n - mean * mean)
    return [float(v) for v in mean], [float(v) for v in std]


def normalize(images, mean, std, pixel_scale=255.0):
    """uint8 ``[N, 3, H, W]`` -> float32 normalised as the package manifest says."""
    x = images.astype(np.float32) / np.float32(pixel_scale)
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (x - m) / s


def save_npz(path, data):
    np.savez(path, train_x=data["train"][0], train_y=data["train"][1],
             test_x=data["test"][0], test_y=data["test"][1])


def load_npz(path):
    z = np.load(path)
    return {"train": (z["train_x"], z["train_y"]), "test": (z["test_x"], z["test_y"])}
