"""Sequential CNN described as a list of layer specs (plain dicts, no PyTorch needed).

A layer spec is a dict with a ``kind`` and a ``name``:

- ``{"kind": "conv", "name": "conv1", "out": 64, "k": 5, "stride": 1, "pad": 1, "relu": True}``
- ``{"kind": "batchnorm", "name": "bn1", "relu": True}`` (channels = previous layer's channels)
- ``{"kind": "lrn", "name": "lrn1", "size": 2, "alpha": 1e-4, "beta": 0.75, "k": 2.0}``
  (PyTorch ``LocalResponseNorm`` semantics)
- ``{"kind": "maxpool", "name": "pool1", "k": 3, "stride": 2}`` (optional ``"pad"``)
- ``{"kind": "linear", "name": "fc1", "out": 384, "relu": True}`` (a flatten in front of the first
  linear layer is part of that layer)

Any layer may carry ``"relu": True`` (its activation); conv and linear layers may carry
``"bias": False`` (no bias parameter).

Pruning changes only the ``out`` of conv layers; every other shape follows.
"""

import copy

KINDS = ("conv", "batchnorm", "lrn", "maxpool", "linear")


def conv_out(n, k, stride, pad):
    return (n + 2 * pad - k) // stride + 1


def infer(layers, input_shape):
    """Per layer: input shape, output shape, MACs and parameter count (batch dim excluded).

    MACs: conv/linear multiply-accumulates; batchnorm one per output element; LRN ``size`` per
    output element (the squared-window accumulation); maxpool 0 (comparisons only).
    Params: trainable parameters as PyTorch counts them (BN: weight + bias).
    """
    shape = list(input_shape)
    out = []
    for i, l in enumerate(layers):
        kind = l["kind"]
        if kind not in KINDS:
            raise ValueError(f"layer {i}: unknown kind {kind!r}")
        ishape = list(shape)
        if kind == "conv":
            if len(shape) != 3:
                raise ValueError(f"layer {i} ({l['name']}): conv after flatten")
            c, h, w = shape
            k, s, p = l["k"], l.get("stride", 1), l.get("pad", 0)
            oh, ow = conv_out(h, k, s, p), conv_out(w, k, s, p)
            oc = l["out"]
            macs = oc * oh * ow * c * k * k
            params = oc * c * k * k + (oc if l.get("bias", True) else 0)
            shape = [oc, oh, ow]
        elif kind == "batchnorm":
            macs = shape[0] * shape[1] * shape[2]
            params = 2 * shape[0]
        elif kind == "lrn":
            macs = l["size"] * shape[0] * shape[1] * shape[2]
            params = 0
        elif kind == "maxpool":
            c, h, w = shape
            k, s, p = l["k"], l.get("stride", l["k"]), l.get("pad", 0)
            shape = [c, conv_out(h, k, s, p), conv_out(w, k, s, p)]
            macs, params = 0, 0
        else:  # linear
            fin = 1
            for d in shape:
                fin *= d
            macs = fin * l["out"]
            params = fin * l["out"] + (l["out"] if l.get("bias", True) else 0)
            shape = [l["out"]]
        if any(d <= 0 for d in shape):
            raise ValueError(f"layer {i} ({l['name']}): empty output shape {shape}")
        out.append({"input_shape": ishape, "output_shape": list(shape), "macs": int(macs),
                    "params": int(params)})
    return out


def conv_indices(layers):
    return [i for i, l in enumerate(layers) if l["kind"] == "conv"]


def gate_position(layers, conv_idx):
    """Index of the layer after whose output the SE gate of conv ``conv_idx`` sits: the conv
    itself (its ReLU included), or the following batchnorm (BN + ReLU) if there is one."""
    nxt = conv_idx + 1
    if nxt < len(layers) and layers[nxt]["kind"] == "batchnorm":
        return nxt
    return conv_idx


def pruned_spec(layers, keep_counts):
    """Copy of ``layers`` with conv ``out`` replaced by ``keep_counts[conv_index]``."""
    new = copy.deepcopy(layers)
    for i, n in keep_counts.items():
        assert new[i]["kind"] == "conv"
        new[i]["out"] = int(n)
    return new


def keep_count(channels, ratio):
    """Channels kept for a keep ratio: round(ratio * C), at least 1."""
    return max(1, int(round(ratio * channels)))
