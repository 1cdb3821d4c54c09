"""PyTorch modules built from a layer list (see ``spec``), SE gates and physical pruning."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import spec as S


def lrn_primitive(x, size, alpha, beta, k):
    """PyTorch ``LocalResponseNorm`` written with elementwise ops (the same ops the ONNX export
    uses): pad ``size // 2`` zero channels in front and ``(size - 1) // 2`` behind the squared
    input, average each channel window, ``x / (k + alpha * avg) ** beta``. Computed in float32."""
    xf = x.float()
    sq = xf * xf
    front, back = size // 2, (size - 1) // 2
    c = sq.shape[1]
    padded = F.pad(sq, (0, 0, 0, 0, front, back))
    acc = padded[:, 0:c]
    for j in range(1, size):
        acc = acc + padded[:, j:j + c]
    d = k + (alpha / size) * acc
    if beta == 0.75:
        r = torch.sqrt(d)
        den = r * torch.sqrt(r)
    else:
        den = d.pow(beta)
    return (xf / den).to(x.dtype)


class SEGate(nn.Module):
    """Squeeze-and-excitation channel gate; remembers the last gate values for scoring."""

    def __init__(self, channels, reduction=4, min_hidden=8):
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, 2.0)  # start mostly open (sigmoid(2) = 0.88)
        self.last = None

    def forward(self, x):
        s = x.float().mean(dim=(2, 3))
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        self.last = g
        return x * g.to(x.dtype)[:, :, None, None]


class Layer(nn.Module):
    """One layer of the split model (its activation included); optional SE gate at the end."""

    def __init__(self, lspec, in_shape):
        super().__init__()
        self.spec = dict(lspec)
        self.kind = lspec["kind"]
        self.gate = None
        kind = self.kind
        if kind == "conv":
            self.op = nn.Conv2d(in_shape[0], lspec["out"], lspec["k"], stride=lspec.get("stride", 1),
                                padding=lspec.get("pad", 0), bias=lspec.get("bias", True))
        elif kind == "batchnorm":
            self.op = nn.BatchNorm2d(in_shape[0])
        elif kind == "linear":
            fin = 1
            for d in in_shape:
                fin *= d
            self.op = nn.Linear(fin, lspec["out"], bias=lspec.get("bias", True))
        elif kind in ("lrn", "maxpool"):
            self.op = None
        else:
            raise ValueError(f"unknown layer kind {kind!r}")

    def forward(self, x):
        s, kind = self.spec, self.kind
        if kind == "lrn":
            y = lrn_primitive(x, s["size"], s["alpha"], s["beta"], s["k"])
        elif kind == "maxpool":
            y = F.max_pool2d(x, s["k"], s.get("stride", s["k"]), s.get("pad", 0))
        elif kind == "linear":
            y = self.op(torch.flatten(x, 1))
        else:
            y = self.op(x)
        if s.get("relu", False):
            y = F.relu(y)
        if self.gate is not None:
            y = self.gate(y)
        return y


class SeqNet(nn.Module):
    def __init__(self, layers, input_shape):
        super().__init__()
        self.layer_specs = [dict(l) for l in layers]
        self.input_shape = list(input_shape)
        info = S.infer(layers, input_shape)
        self.layers = nn.ModuleList(Layer(l, inf["input_shape"]) for l, inf in zip(layers, info))
        self.reset_parameters()

    def reset_parameters(self):
        """He (fan-in, ReLU) initialisation for conv/linear layers, zero biases; the last layer
        gets a small normal init. (PyTorch's default init shrinks the signal by ~6x per layer,
        which stalls this BN-free AlexNet at chance level for a long time.)"""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if layer.kind in ("conv", "linear"):
                if i == last:
                    nn.init.normal_(layer.op.weight, std=0.01)
                else:
                    nn.init.kaiming_normal_(layer.op.weight, mode="fan_in", nonlinearity="relu")
                if layer.op.bias is not None:
                    nn.init.zeros_(layer.op.bias)

    def forward(self, x, upto=None):
        for i, layer in enumerate(self.layers):
            if upto is not None and i >= upto:
                break
            x = layer(x)
        return x


def build(layers, input_shape):
    return SeqNet(layers, input_shape)


# --- SE gates ---------------------------------------------------------------------------------

def attach_gates(net):
    """Adds an SE gate after each conv's activation (after BN+ReLU when a BN follows)."""
    info = S.infer(net.layer_specs, net.input_shape)
    gates = {}
    for ci in S.conv_indices(net.layer_specs):
        pos = S.gate_position(net.layer_specs, ci)
        g = SEGate(info[pos]["output_shape"][0])
        p = next(net.parameters())
        net.layers[pos].gate = g.to(device=p.device)
        gates[ci] = pos
    return gates


def detach_gates(net):
    for layer in net.layers:
        layer.gate = None


# --- physical pruning -------------------------------------------------------------------------

def prune(net, keep):
    """New ``SeqNet`` keeping, for every conv layer index ``i``, output channels ``keep[i]``
    (sorted index lists). Following BN layers, the next conv's input channels and the first
    linear layer's input features (``C*H*W`` flatten order) are sliced to match. Gates are not
    copied."""
    layers = net.layer_specs
    new_specs = S.pruned_spec(layers, {i: len(v) for i, v in keep.items()})
    new = SeqNet(new_specs, net.input_shape)
    old_info = S.infer(layers, net.input_shape)
    dev = next(net.parameters()).device
    new = new.to(dev)
    cur = None  # kept input channel indices of the tensor flowing into layer i (None = all)
    flattened = False
    with torch.no_grad():
        for i, (lo, ln) in enumerate(zip(net.layers, new.layers)):
            kind = lo.kind
            if kind == "conv":
                idx_out = torch.as_tensor(sorted(keep[i]), dtype=torch.long, device=dev)
                w = lo.op.weight
                if cur is not None:
                    w = w[:, cur]
                ln.op.weight.copy_(w[idx_out])
                if lo.op.bias is not None:
                    ln.op.bias.copy_(lo.op.bias[idx_out])
                cur = idx_out
            elif kind == "batchnorm":
                sel = cur if cur is not None else slice(None)
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(ln.op, name).copy_(getattr(lo.op, name)[sel])
                ln.op.num_batches_tracked.copy_(lo.op.num_batches_tracked)
            elif kind == "linear":
                w = lo.op.weight
                if not flattened and cur is not None:
                    c, h, wd = old_info[i]["input_shape"]
                    feat = (cur[:, None] * (h * wd) + torch.arange(h * wd, device=dev)[None, :])
                    w = w[:, feat.reshape(-1)]
                ln.op.weight.copy_(w)
                if lo.op.bias is not None:
                    ln.op.bias.copy_(lo.op.bias)
                flattened = True
                cur = None
    return new


def state_dict_cpu(net, half=False):
    sd = {}
    for k, v in net.state_dict().items():
        if ".gate." in k:
            continue
        v = v.detach().cpu()
        if half and v.is_floating_point() and v.ndim >= 2:  # conv/linear weights; BN stays fp32
            v = v.half()
        sd[k] = v
    return sd


def numpy_weights(net):
    """Per layer index: dict of float32 numpy arrays (conv/linear weight & bias, BN params)."""
    out = []
    for layer in net.layers:
        d = {}
        if layer.op is not None:
            for k, v in layer.op.state_dict().items():
                if k == "num_batches_tracked":
                    continue
                d[k] = v.detach().float().cpu().numpy()
            if layer.kind == "batchnorm":
                d["eps"] = layer.op.eps
        out.append(d)
    return out
