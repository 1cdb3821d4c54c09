#!/usr/bin/env python3
"""Measure this machine's single-thread ONNX Runtime time for the networks of ncnn's benchmark
table and divide published Raspberry Pi times by it: the `pi4` and `pi3` edge speed factors
(docs/edge-profiles.md).

    python3 -m venv /tmp/pivenv
    /tmp/pivenv/bin/pip install numpy==2.3.5 onnx==1.19.1 onnxruntime==1.31.1
    /tmp/pivenv/bin/python bench/pi_factors.py [--runs 30] [--rounds 3] [--json out.json]

Graphs are built with onnx.helper (opset 17, random He-scaled weights, batch 1) to match the
ncnn benchmark models (Tencent/ncnn benchmark/alexnet.param, vgg16.param, resnet18.param):

- alexnet      BVLC/Caffe AlexNet as ncnn has it: 3x227x227, conv1 96 11x11 s4, LRN(5), pool 3/2,
               conv2 256 5x5 p2 group 2, LRN(5), pool, conv3 384 3x3, conv4 384 group 2,
               conv5 256 group 2, pool, FC 9216-4096-4096-1000, softmax. LRN written from primitive
               ops with d^0.75 = sqrt(d)*sqrt(sqrt(d)), as models/jmdc_models/onnx_build.py does.
- alexnet_lrnop  the same with ONNX's own LRN operator (for reference: ORT's LRN kernel is slow).
- alexnet_features  the alexnet above without its FC layers: how much of
               AlexNet's time here is the 58.6 M-weight FC part.
- alexnet_tv   torchvision AlexNet (3x224x224, no LRN, no groups; 64/192/384/256/256) for reference.
- vgg16        13 conv 3x3 + 5 maxpool + FC 25088-4096-4096-1000, softmax, 3x224x224.
- resnet18     the Caffe ResNet-18 of ncnn's table (1x1 projection also in res2a, ceil-mode pool1,
               BN folded into conv), softmax, 3x224x224.

Session: 1 intra-op and 1 inter-op thread, ORT_ENABLE_ALL, CPU provider. Each round runs every
model (interleaved): 5 warm-up runs, then --runs timed runs; median, p10, p90 per round.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# Published ncnn benchncnn averages in ms (Tencent/ncnn benchmark/README.md); the exact lines,
# files and commits are quoted in docs/edge-profiles.md. None: the table has no row.
PI = {
    # Raspberry Pi 4 Model B BCM2711B0 Cortex-A72 1.5GHz x 4, "./benchncnn 8 1 0", num_threads = 1
    # (ncnn commit d9e45ec703100e06de6136d8035e78222bf74de7, replaced in cc37c10997e8)
    "pi4": {"alexnet": 213.76, "vgg16": 1307.79, "resnet18": 226.49},
    # Raspberry Pi 4 Model B BCM2711B0 Cortex-A72 1.8GHz x 4, "./benchncnn 10 1 0 -1 1"
    # (the table today, commit a4d2ea1d4422c9e849f166fd7a4aefb52f942f6a)
    "pi4_1.8GHz": {"alexnet": 139.40, "vgg16": 1071.85, "resnet18": 191.10},
    # Raspberry Pi 3 Model B+ BCM2837B0 Cortex-A53 1.4GHz x 4, "./benchncnn 4 1 0 -1 1" (a4d2ea1d)
    "pi3": {"alexnet": 270.55, "vgg16": None, "resnet18": 379.57},
    # Raspberry Pi Zero 2 W BCM2710A1 Cortex-A53 1.0GHz x 4, num_threads = 1 (a4d2ea1d)
    "pi_zero2w": {"alexnet": 689.15, "vgg16": None, "resnet18": 654.69},
}

rng = np.random.default_rng(0)


class G:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def const(self, p, arr):
        nm = self.name(p)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def node(self, op, ins, out=None, **attrs):
        out = out or self.name(op.lower())
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def conv(self, x, cin, cout, k, s=1, p=0, group=1, relu=True):
        w = rng.standard_normal((cout, cin // group, k, k), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / (cin // group * k * k)))
        b = np.zeros(cout, np.float32)
        y = self.node("Conv", [x, self.const("W", w), self.const("B", b)], kernel_shape=[k, k],
                      strides=[s, s], pads=[p, p, p, p], group=group)
        return self.node("Relu", [y]) if relu else y

    def pool(self, x, k, s, ceil=0):
        return self.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], ceil_mode=ceil)

    def fc(self, x, cin, cout, relu=True):
        w = rng.standard_normal((cout, cin), dtype=np.float32) * np.float32(np.sqrt(2.0 / cin))
        y = self.node("Gemm", [x, self.const("W", w), self.const("B", np.zeros(cout, np.float32))],
                      transB=1)
        return self.node("Relu", [y]) if relu else y

    def lrn_primitive(self, x, size=5, alpha=1e-4, beta=0.75, k=1.0):
        """Caffe/ncnn ACROSS_CHANNELS LRN: x / (k + alpha/size * sum_window x^2)^beta, window
        centred (size odd), zero padded; d^0.75 as sqrt(d) * sqrt(sqrt(d))."""
        assert beta == 0.75 and size % 2 == 1
        half = size // 2
        sq = self.node("Mul", [x, x])
        pads = np.array([0, half, 0, 0, 0, half, 0, 0], np.int64)
        padded = self.node("Pad", [sq, self.const("pads", pads)], mode="constant")
        ax = self.const("axis", np.array([1], np.int64))
        acc = None
        for j in range(size):
            end_off = size - 1 - j
            end = -end_off if end_off else np.iinfo(np.int64).max
            sl = self.node("Slice", [padded, self.const("st", np.array([j], np.int64)),
                                     self.const("en", np.array([end], np.int64)), ax])
            acc = sl if acc is None else self.node("Add", [acc, sl])
        d = self.node("Mul", [acc, self.const("a", np.array(alpha / size, np.float32))])
        d = self.node("Add", [d, self.const("k", np.array(k, np.float32))])
        r = self.node("Sqrt", [d])
        rr = self.node("Sqrt", [r])
        return self.node("Div", [x, self.node("Mul", [r, rr])])

    def lrn_op(self, x, size=5, alpha=1e-4, beta=0.75, k=1.0):
        return self.node("LRN", [x], size=size, alpha=alpha, beta=beta, bias=k)

    def model(self, out, shape, name, out_shape=(1, 1000)):
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("data", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m


def alexnet_bvlc(native_lrn=False, features_only=False):
    g = G()
    lrn = g.lrn_op if native_lrn else g.lrn_primitive
    x = g.conv("data", 3, 96, 11, s=4)                    # 55x55
    x = g.pool(lrn(x), 3, 2)                              # 27
    x = g.conv(x, 96, 256, 5, p=2, group=2)
    x = g.pool(lrn(x), 3, 2)                              # 13
    x = g.conv(x, 256, 384, 3, p=1)
    x = g.conv(x, 384, 384, 3, p=1, group=2)
    x = g.conv(x, 384, 256, 3, p=1, group=2)
    x = g.node("Flatten", [g.pool(x, 3, 2)], axis=1)      # 6x6x256 = 9216
    if features_only:   # conv part only (no FC layers): output 1x9216
        x = g.node("Identity", [x], "prob")
        return g.model(x, [1, 3, 227, 227], "alexnet_features", [1, 9216]), (1, 3, 227, 227)
    x = g.fc(g.fc(x, 9216, 4096), 4096, 4096)
    y = g.node("Softmax", [g.fc(x, 4096, 1000, relu=False)], "prob", axis=1)
    return g.model(y, [1, 3, 227, 227], "alexnet_bvlc"), (1, 3, 227, 227)


def alexnet_tv():
    g = G()
    x = g.pool(g.conv("data", 3, 64, 11, s=4, p=2), 3, 2)
    x = g.pool(g.conv(x, 64, 192, 5, p=2), 3, 2)
    x = g.conv(x, 192, 384, 3, p=1)
    x = g.conv(x, 384, 256, 3, p=1)
    x = g.conv(x, 256, 256, 3, p=1)
    x = g.node("Flatten", [g.pool(x, 3, 2)], axis=1)      # 6x6x256
    x = g.fc(g.fc(x, 9216, 4096), 4096, 4096)
    y = g.fc(x, 4096, 1000, relu=False)
    return g.model(y, [1, 3, 224, 224], "alexnet_tv"), (1, 3, 224, 224)


def vgg16():
    g = G()
    x, cin = "data", 3
    for cout, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(n):
            x, cin = g.conv(x, cin, cout, 3, p=1), cout
        x = g.pool(x, 2, 2)
    x = g.node("Flatten", [x], axis=1)                    # 7x7x512 = 25088
    x = g.fc(g.fc(x, 25088, 4096), 4096, 4096)
    y = g.node("Softmax", [g.fc(x, 4096, 1000, relu=False)], "prob", axis=1)
    return g.model(y, [1, 3, 224, 224], "vgg16"), (1, 3, 224, 224)


def resnet18():
    g = G()
    x = g.pool(g.conv("data", 3, 64, 7, s=2, p=3), 3, 2, ceil=1)   # 112 -> 56 (ceil, as ncnn)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for blk in range(2):
            s = 2 if (stage > 0 and blk == 0) else 1
            if blk == 0:   # Caffe ResNet-18 (ncnn's table): projection shortcut in every 'a' block
                short = g.conv(x, cin, cout, 1, s=s, relu=False)
            else:
                short = x
            y = g.conv(x, cin, cout, 3, s=s, p=1)
            y = g.conv(y, cout, cout, 3, p=1, relu=False)
            x = g.node("Relu", [g.node("Add", [short, y])])
            cin = cout
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    y = g.node("Softmax", [g.fc(x, 512, 1000, relu=False)], "prob", axis=1)
    return g.model(y, [1, 3, 224, 224], "resnet18"), (1, 3, 224, 224)


BUILDERS = {
    "alexnet": lambda: alexnet_bvlc(False),
    "alexnet_lrnop": lambda: alexnet_bvlc(True),
    "alexnet_tv": alexnet_tv,
    "alexnet_features": lambda: alexnet_bvlc(False, True),
    "vgg16": vgg16,
    "resnet18": resnet18,
}


def session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def time_once(sess, feed, warmup, runs):
    for _ in range(warmup):
        sess.run(None, feed)
    ts, cs = [], []
    for _ in range(runs):
        c0 = time.thread_time_ns()   # with 1 intra-op thread ORT computes on this thread
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        ts.append((time.perf_counter_ns() - t0) / 1e6)
        cs.append((time.thread_time_ns() - c0) / 1e6)
    a = np.array(ts)
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)),
            "p90": float(np.percentile(a, 90)), "min": float(a.min()),
            "cpu_median": float(np.median(cs)), "runs": len(ts)}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines()
                    if l.startswith("Model name"))
    except Exception:  # noqa: BLE001
        return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models",
                    default="alexnet,vgg16,resnet18,alexnet_tv,alexnet_lrnop,alexnet_features")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    names = args.models.split(",")

    sessions = {}
    for n in names:
        m, shape = BUILDERS[n]()
        onnx.checker.check_model(m)
        sessions[n] = (session(m), {"data": rng.standard_normal(shape, dtype=np.float32)})

    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "cpu": cpu_model(), "onnxruntime": ort.__version__, "onnx": onnx.__version__,
              "numpy": np.__version__, "loadavg_start": os.getloadavg(), "runs": args.runs,
              "warmup": args.warmup, "rounds": []}
    print(f"cpu: {result['cpu']}  onnxruntime {ort.__version__}  1 thread, ORT_ENABLE_ALL")
    for r in range(args.rounds):
        row = {}
        for n in names:   # interleaved: every model once per round
            sess, feed = sessions[n]
            row[n] = time_once(sess, feed, args.warmup, args.runs)
            s = row[n]
            print(f"round {r + 1} {n:14s} median {s['median']:8.2f} ms  "
                  f"p10 {s['p10']:8.2f}  p90 {s['p90']:8.2f}  min {s['min']:8.2f}  "
                  f"thread-cpu median {s['cpu_median']:8.2f}  load {os.getloadavg()[0]:.2f}",
                  flush=True)
        result["rounds"].append(row)

    # Median over the rounds of the per-round medians, of wall time and of thread CPU time. On a
    # shared machine the wall time includes time the thread waited for a core; the thread CPU
    # time does not, and it is what the factors use (docs/edge-profiles.md).
    for key, label in (("median", "wall"), ("cpu_median", "thread-cpu")):
        med = {n: float(np.median([rd[n][key] for rd in result["rounds"]])) for n in names}
        result[f"{label}_median_of_medians"] = med
        result.setdefault("factors", {})[label] = {}
        print(f"\n{label}: median of round medians (ms):",
              {n: round(v, 2) for n, v in med.items()})
        for board, times in PI.items():
            f = {n: times[n] / med[n] for n in ("alexnet", "vgg16", "resnet18")
                 if n in med and times.get(n) is not None}
            result["factors"][label][board] = f
            print(f"  {board:11s}", "  ".join(f"{n} {times[n]:.2f}/{med[n]:.2f} = {v:.2f}"
                                             for n, v in f.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
