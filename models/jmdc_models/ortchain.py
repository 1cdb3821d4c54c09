"""ONNX Runtime helpers shared by ``finalize`` and ``verify`` (numpy + onnxruntime only)."""

import hashlib
import json
from pathlib import Path

import numpy as np


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(pkg_dir):
    return json.loads((Path(pkg_dir) / "manifest.json").read_text())


def write_manifest(pkg_dir, manifest):
    text = json.dumps(manifest, indent=2) + "\n"
    (Path(pkg_dir) / "manifest.json").write_text(text)


def session(path, threads=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class Chain:
    """Per-layer sessions of one variant, run one after the other."""

    def __init__(self, variant_dir, variant, input_name="x", output_name="y", threads=None):
        d = Path(variant_dir)
        self.sessions = [session(d / l["file"], threads) for l in variant["layers"]]
        self.input_name, self.output_name = input_name, output_name

    def run(self, x, start=0, end=None):
        end = len(self.sessions) if end is None else end
        for s in self.sessions[start:end]:
            x = s.run([self.output_name], {self.input_name: x})[0]
        return x


def top1(run, images, labels, normalize, batch=500):
    correct = 0
    for i in range(0, len(images), batch):
        x = normalize(images[i:i + batch])
        logits = run(x)
        correct += int((logits.argmax(axis=1) == labels[i:i + batch]).sum())
    return correct / len(images)


def ort_version():
    import onnxruntime as ort

    return ort.__version__
