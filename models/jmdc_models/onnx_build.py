"""Writes ONNX graphs directly with ``onnx.helper`` from numpy weights (no PyTorch exporter:
the result does not depend on the PyTorch version, has no training-only ops and is small).

Every graph: opset 17, IR version 8, one float32 input ``x`` ``[N, ...]`` and one output ``y``
``[N, ...]`` with a dynamic batch dimension ``N``.

Per layer:
- conv: ``Conv`` (+ ``Relu``). If a batchnorm layer follows a conv without activation, the BN is
  folded into that conv (``fold_bn=True``, default) and the batchnorm layer becomes ``Relu`` only
  (or ``Identity``); otherwise batchnorm is ``Mul`` + ``Add`` per channel (+ ``Relu``).
- lrn: PyTorch ``LocalResponseNorm`` semantics from primitive ops (ONNX Runtime rejects even
  LRN sizes, and ONNX's window differs from PyTorch's): ``Mul`` (square), ``Pad`` zero channels
  (``size//2`` in front, ``(size-1)//2`` behind), ``Slice`` + ``Add`` over the window, ``Mul``/``Add``
  for ``k + alpha/size * sum``, ``d**0.75`` as ``Sqrt(d) * Sqrt(Sqrt(d))``, ``Div``.
- maxpool: ``MaxPool``. linear: ``Flatten`` (first linear only, when its input is 4-D) + ``Gemm``
  (+ ``Relu``). Every kind ends with ``Relu`` when its spec says ``"relu": True`` (a pooling or LRN
  layer followed by a ReLU, e.g. ``relu(max_pool2d(conv(x)))``); a linear layer without bias
  (``"bias": False``) gets a zero ``Gemm`` bias.

Weight storage (``storage``; conv and linear weight tensors only, biases stay float32):
- ``fp32`` (default): plain float32 initializers.
- ``fp16``: float16 initializer + ``Cast(to=FLOAT)``.
- ``int8``: symmetric int8 per output channel, ``w = q * scale[c]``: int8 initializer +
  ``Cast(to=FLOAT)`` + ``Mul`` by a float32 scale of shape ``[C, 1, ...]``.
Both casts have only constant inputs, so ONNX Runtime folds them into float32 weights when the
session is created (graph optimisation level basic or higher): the files are 2x / 4x smaller and
inference runs on float32 weights exactly as with ``fp32`` storage.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import spec as S

OPSET = 17
IR_VERSION = 8
INPUT = "x"
OUTPUT = "y"


STORAGES = ("fp32", "fp16", "int8")


def quantize_int8(arr):
    """Symmetric per-output-channel (axis 0) int8: returns ``(q, scale)`` with
    ``arr ~= q * scale`` and ``scale`` shaped ``[C, 1, ...]`` (an all-zero channel gets scale 1)."""
    a = np.asarray(arr, np.float32)
    amax = np.abs(a.reshape(a.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    scale = scale.reshape((-1,) + (1,) * (a.ndim - 1))
    q = np.clip(np.rint(a / scale), -127, 127).astype(np.int8)
    return q, scale


class _G:
    def __init__(self, prefix, storage="fp32"):
        if storage not in STORAGES:
            raise ValueError(f"unknown weight storage {storage!r}; known: {', '.join(STORAGES)}")
        self.prefix = prefix
        self.storage = storage
        self.nodes = []
        self.inits = []
        self.n = 0

    def weight(self, base, arr):
        """A conv/linear weight tensor in this graph's storage; returns the float32 value name."""
        arr = np.asarray(arr, np.float32)
        if self.storage == "fp16":
            return self.node("Cast", [self.const(base + "_f16", arr.astype(np.float16))],
                             to=TensorProto.FLOAT)
        if self.storage == "int8":
            q, scale = quantize_int8(arr)
            wf = self.node("Cast", [self.const(base + "_q", q)], to=TensorProto.FLOAT)
            return self.node("Mul", [wf, self.const(base + "_scale", scale)])
        return self.const(base, arr)

    def name(self, base):
        self.n += 1
        return f"{self.prefix}{base}_{self.n}"

    def const(self, base, arr):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), nm))
        return nm

    def node(self, op, inputs, output=None, **attrs):
        out = output or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out


def bn_affine(w):
    scale = w["weight"] / np.sqrt(w["running_var"] + w.get("eps", 1e-5))
    shift = w["bias"] - w["running_mean"] * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def plan_folding(layers, fold_bn=True):
    """Set of batchnorm layer indices folded into the preceding conv."""
    folded = set()
    if not fold_bn:
        return folded
    for i, l in enumerate(layers):
        if (l["kind"] == "batchnorm" and i > 0 and layers[i - 1]["kind"] == "conv"
                and not layers[i - 1].get("relu", False)):
            folded.add(i)
    return folded


def _emit_layer(g, i, layers, weights, info, x, y, folded):
    l, w = layers[i], weights[i]
    kind = l["kind"]
    relu = l.get("relu", False)
    if kind == "conv":
        wt, b = w["weight"].astype(np.float32), w.get("bias")
        b = np.zeros(wt.shape[0], np.float32) if b is None else b.astype(np.float32)
        if (i + 1) in folded:
            scale, shift = bn_affine(weights[i + 1])
            wt = wt * scale[:, None, None, None]
            b = b * scale + shift
        p = l.get("pad", 0)
        s = l.get("stride", 1)
        out = g.node("Conv", [x, g.weight("W", wt), g.const("B", b)],
                     None if relu else y, kernel_shape=[l["k"], l["k"]], pads=[p, p, p, p],
                     strides=[s, s])
        if relu:
            g.node("Relu", [out], y)
    elif kind == "batchnorm":
        if i in folded:
            g.node("Relu" if relu else "Identity", [x], y)
        else:
            scale, shift = bn_affine(w)
            t = g.node("Mul", [x, g.const("scale", scale.reshape(1, -1, 1, 1))])
            t = g.node("Add", [t, g.const("shift", shift.reshape(1, -1, 1, 1))],
                       None if relu else y)
            if relu:
                g.node("Relu", [t], y)
    elif kind == "lrn":
        size, alpha, beta, k = l["size"], l["alpha"], l["beta"], l["k"]
        front, back = size // 2, (size - 1) // 2
        sq = g.node("Mul", [x, x])
        if front or back:
            pads = np.array([0, front, 0, 0, 0, back, 0, 0], dtype=np.int64)
            padded = g.node("Pad", [sq, g.const("pads", pads)], mode="constant")
        else:
            padded = sq
        ax = g.const("axis1", np.array([1], np.int64))
        acc = None
        for j in range(size):
            # window element j: padded[:, j : j + C] == padded[:, j : (C + size - 1) - (size-1-j)]
            start = g.const("start", np.array([j], np.int64))
            end_off = size - 1 - j
            end = g.const("end", np.array([-end_off if end_off else np.iinfo(np.int64).max],
                                          np.int64))
            sl = g.node("Slice", [padded, start, end, ax])
            acc = sl if acc is None else g.node("Add", [acc, sl])
        d = g.node("Mul", [acc, g.const("alpha", np.array(alpha / size, np.float32))])
        d = g.node("Add", [d, g.const("k", np.array(k, np.float32))])
        if beta == 0.75:
            r = g.node("Sqrt", [d])
            rr = g.node("Sqrt", [r])
            den = g.node("Mul", [r, rr])
        else:
            den = g.node("Pow", [d, g.const("beta", np.array(beta, np.float32))])
        out = g.node("Div", [x, den], None if relu else y)
        if relu:
            g.node("Relu", [out], y)
    elif kind == "maxpool":
        k, s, p = l["k"], l.get("stride", l["k"]), l.get("pad", 0)
        out = g.node("MaxPool", [x], None if relu else y, kernel_shape=[k, k], strides=[s, s],
                     pads=[p, p, p, p])
        if relu:
            g.node("Relu", [out], y)
    elif kind == "linear":
        if len(info[i]["input_shape"]) > 1:
            x = g.node("Flatten", [x], axis=1)
        wt, b = w["weight"].astype(np.float32), w.get("bias")
        b = np.zeros(wt.shape[0], np.float32) if b is None else b.astype(np.float32)
        out = g.node("Gemm", [x, g.weight("W", wt), g.const("B", b)],
                     None if relu else y, transB=1)
        if relu:
            g.node("Relu", [out], y)
    else:
        raise ValueError(f"unknown kind {kind}")


def _model(g, in_shape, out_shape, graph_name, doc=""):
    xi = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *in_shape])
    yo = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", *out_shape])
    graph = helper.make_graph(g.nodes, graph_name, [xi], [yo], initializer=g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="jmdc_models", doc_string=doc)
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m)
    return m


def layer_model(layers, weights, input_shape, i, fold_bn=True, storage="fp32"):
    info = S.infer(layers, input_shape)
    folded = plan_folding(layers, fold_bn)
    g = _G(f"l{i:02d}_", storage)
    _emit_layer(g, i, layers, weights, info, INPUT, OUTPUT, folded)
    return _model(g, info[i]["input_shape"], info[i]["output_shape"],
                  f"layer{i:02d}_{layers[i]['name']}")


def full_model(layers, weights, input_shape, fold_bn=True, storage="fp32"):
    info = S.infer(layers, input_shape)
    folded = plan_folding(layers, fold_bn)
    g = _G("", storage)
    x = INPUT
    for i in range(len(layers)):
        y = OUTPUT if i == len(layers) - 1 else f"t{i:02d}"
        g.prefix = f"l{i:02d}_"
        _emit_layer(g, i, layers, weights, info, x, y, folded)
        x = y
    return _model(g, input_shape, info[-1]["output_shape"], "full")


def save(model, path):
    data = model.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    return data
