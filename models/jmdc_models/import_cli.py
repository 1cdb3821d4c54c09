"""Bring your own model: export a PyTorch model as a jmdc model package and check the package
against the model's own forward pass.

    python -m jmdc_models import --module model.pt --out packages/mynet
    python -m jmdc_models import --code mynet.py:build --state-dict weights.pt --out packages/mynet
    ... [--spec alexnet-cifar10 | --spec layers.json]  [--weights fp32|fp16|int8]

The model:
  --module FILE       a whole module saved with torch.save(model, FILE). Loading it unpickles it
                      (torch.load(weights_only=False)), which runs code named in the file: use it
                      only for files you trust.
  --code SRC          your model's code: SRC is path/to/file.py:NAME or package.module:NAME, where
                      NAME is a class or function that builds the module without arguments;
                      --state-dict FILE is then loaded into it (torch.load(weights_only=True),
                      strict: every key must match). A dict holding a "state_dict" or
                      "model_state_dict" entry (a training checkpoint) works too.
A state dict alone cannot be checked (no forward pass to check against): give --code with it.

The model must be a chain (each step consumes only the previous step's output) of: Conv2d
(square kernel/stride/padding, groups 1, dilation 1), BatchNorm2d (running statistics), ReLU,
MaxPool2d (square, no ceil_mode), LocalResponseNorm, Linear, a flatten (nn.Flatten,
torch.flatten(x, 1), x.view(x.size(0), -1), x.reshape(...)) before the first Linear, and steps
that are the identity in eval mode (Dropout, Identity, an adaptive pooling to the size it already
has). Calls in forward() (F.relu, F.max_pool2d, torch.flatten, ...) count like modules: the
model is traced with torch.fx. Anything else is refused with the module or call it cannot map.

The layer list is derived from the model (conv, batchnorm, lrn, maxpool, linear; each ReLU joins
the layer before it, the flatten joins the first linear layer). --spec gives it instead (a zoo
name or a JSON file with a list of layer dicts, see jmdc_models/spec.py): the spec's layers must
have the model's kinds in the model's order; its ReLUs and hyper-parameters are exported as the
spec says and then checked below; any difference from the model (a "note:") refuses the package
even where the sample inputs do not show it.

The check: the model (eval mode) runs on sample inputs (the first --samples images of
samples/cifar10-test-256.bin, normalised with --mean/--std; or --random-inputs; or --inputs
X.npy); the exported per-layer ONNX files run with ONNX Runtime. Every package layer is run on the
model's own input to that layer and compared with the model's output at that point, and the
chained files are compared with the model's final output (max |diff| relative to the largest
|value|, tolerance by weight storage, plus argmax agreement). On a mismatch nothing is left at
--out (--keep-rejected keeps the files in OUT.rejected/ with manifest.json renamed so nothing
loads it), the first diverging layer is printed with its numbers, and the exit status is 1.
Exit status 2: bad input (file, module or argument), with a message saying which.
"""

import argparse
import importlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import cifar, export, ortchain, verify, zoo
from . import onnx_build as OB
from . import spec as S

MODELS_DIR = Path(__file__).resolve().parents[1]
SAMPLES = MODELS_DIR / "samples" / "cifar10-test-256.bin"
# CIFAR-10 training-set mean/std (50,000 images), as in packages/alexnet-cifar10/manifest.json.
CIFAR10_MEAN = [0.49125, 0.48209, 0.446521]
CIFAR10_STD = [0.245232, 0.242782, 0.260629]

# Largest allowed max|diff| / max|reference| per weight storage: (per layer, final logits).
TOLERANCES = {"fp32": (1e-4, 1e-4), "fp16": (2e-3, 5e-3), "int8": (5e-2, 1e-1)}


class InputError(Exception):
    """Bad input: a file, module or argument that cannot be used (exit status 2)."""


# --- loading the user's model -----------------------------------------------------------------

def _torch():
    try:
        import torch
    except ModuleNotFoundError as e:
        raise InputError(
            "PyTorch is not installed in this environment (python -m jmdc_models import needs it "
            "to run your model; see models/README.md, 'Bring your own model')") from e
    return torch


def _sha256(path):
    return ortchain.sha256_file(path)


def load_pickled_module(path, python_path=()):
    torch = _torch()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--module {p}: no such file")
    for d in python_path:
        sys.path.insert(0, str(Path(d).resolve()))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as e:
        raise InputError(
            f"--module {p}: the pickle names a class or function that cannot be imported here "
            f"({e}). A module pickled from a script refers to '__main__.<Class>'; move the class "
            f"to a file and add its folder with --python-path, or give --code FILE.py:NAME with "
            f"--state-dict instead") from e
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad input file
        raise InputError(f"--module {p}: torch.load failed: {type(e).__name__}: {e}") from e
    if isinstance(obj, torch.jit.ScriptModule):
        raise InputError(f"--module {p}: a TorchScript module; save the nn.Module itself "
                         f"(torch.save(model, FILE)) or use --code + --state-dict")
    if isinstance(obj, dict):
        raise InputError(f"--module {p} holds a dict ({len(obj)} entries: a state dict or a "
                         f"checkpoint), not a module: give it as --state-dict with --code "
                         f"FILE.py:NAME that builds your model")
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"--module {p} holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _load_code(src, python_path=()):
    if ":" not in src:
        raise InputError(f"--code {src!r}: expected path/to/file.py:NAME or package.module:NAME")
    where, name = src.rsplit(":", 1)
    for d in python_path:
        sys.path.insert(0, str(Path(d).resolve()))
    if where.endswith(".py"):
        f = Path(where)
        if not f.is_file():
            raise InputError(f"--code {src}: no such file {f}")
        sys.path.insert(0, str(f.resolve().parent))
        spec = importlib.util.spec_from_file_location(f.stem, f)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f.stem] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"--code {src}: running {f} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            mod = importlib.import_module(where)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"--code {src}: cannot import {where}: {type(e).__name__}: {e}") from e
    if not hasattr(mod, name):
        raise InputError(f"--code {src}: {where} has no attribute {name!r}")
    return getattr(mod, name)


def load_code_module(src, state_dict=None, python_path=()):
    torch = _torch()
    build = _load_code(src, python_path)
    try:
        model = build()
    except Exception as e:  # noqa: BLE001
        raise InputError(f"--code {src}: calling {src.rsplit(':', 1)[1]}() failed: "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"--code {src}: {src.rsplit(':', 1)[1]}() returned a "
                         f"{type(model).__name__}, not a torch.nn.Module")
    if state_dict is not None:
        p = Path(state_dict)
        if not p.is_file():
            raise InputError(f"--state-dict {p}: no such file")
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"--state-dict {p}: torch.load(weights_only=True) failed: "
                             f"{type(e).__name__}: {e}") from e
        if isinstance(sd, dict):
            for key in ("state_dict", "model_state_dict"):
                if isinstance(sd.get(key), dict):
                    sd = sd[key]
                    break
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise InputError(f"--state-dict {p}: not a state dict (a dict of tensors)")
        res = model.load_state_dict(sd, strict=False)
        if res.missing_keys or res.unexpected_keys:
            raise InputError(
                f"--state-dict {p} does not fit the model built by --code {src}: missing keys "
                f"{res.missing_keys[:6]}{' ...' if len(res.missing_keys) > 6 else ''}, unexpected "
                f"keys {res.unexpected_keys[:6]}{' ...' if len(res.unexpected_keys) > 6 else ''}")
    return model


# --- tracing the model into a chain of steps ---------------------------------------------------

class Step:
    """One tensor-valued step of the traced model: ``op`` is conv, batchnorm, relu, maxpool, lrn,
    linear, flatten or identity; ``where`` names the module or call for messages."""

    def __init__(self, node, op, where, module=None, params=None):
        self.node, self.op, self.where, self.module = node, op, where, module
        self.params = params or {}

    def __repr__(self):
        return f"{self.op}({self.where})"


def _pair(v, what, where):
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise InputError(f"{where}: {what} {tuple(v)} is not square (the package format "
                             f"needs equal height and width)")
        return int(v[0])
    return int(v)


def _arg(node, i, name, default):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _maxpool_params(k, stride, pad, dilation, ceil_mode, return_indices, where):
    if return_indices:
        raise InputError(f"{where}: max pooling with return_indices is not supported")
    if ceil_mode:
        raise InputError(f"{where}: max pooling with ceil_mode=True is not supported")
    if _pair(dilation, "dilation", where) != 1:
        raise InputError(f"{where}: max pooling with dilation is not supported")
    k = _pair(k, "kernel_size", where)
    stride = k if stride is None or stride == [] or stride == () else _pair(stride, "stride", where)
    return {"k": k, "stride": stride, "pad": _pair(pad, "padding", where)}


SUPPORTED = ("Conv2d, BatchNorm2d, ReLU, MaxPool2d, LocalResponseNorm, Linear, Flatten, "
             "Dropout, Identity")


def _module_step(node, mod, name, value, inp):
    torch = _torch()
    nn = torch.nn
    where = f"module '{name}' ({type(mod).__name__})"
    if isinstance(mod, nn.Conv2d):
        if mod.groups != 1:
            raise InputError(f"{where}: groups={mod.groups} is not supported (groups 1 only)")
        if _pair(mod.dilation, "dilation", where) != 1:
            raise InputError(f"{where}: dilation {mod.dilation} is not supported")
        if mod.padding_mode != "zeros":
            raise InputError(f"{where}: padding_mode {mod.padding_mode!r} is not supported")
        if isinstance(mod.padding, str):
            if mod.padding != "valid":
                raise InputError(f"{where}: padding={mod.padding!r} is not supported; give "
                                 f"the padding as a number")
            pad = 0
        else:
            pad = _pair(mod.padding, "padding", where)
        return Step(node, "conv", where, mod, {
            "out": mod.out_channels, "k": _pair(mod.kernel_size, "kernel_size", where),
            "stride": _pair(mod.stride, "stride", where), "pad": pad,
            "bias": mod.bias is not None})
    if isinstance(mod, nn.BatchNorm2d):
        if mod.running_mean is None or not mod.track_running_stats:
            raise InputError(f"{where}: without running statistics (track_running_stats="
                             f"False) it normalises with batch statistics even in eval mode, "
                             f"which a per-image package cannot do")
        return Step(node, "batchnorm", where, mod)
    if isinstance(mod, nn.ReLU):
        return Step(node, "relu", where, mod)
    if isinstance(mod, nn.MaxPool2d):
        return Step(node, "maxpool", where, mod, _maxpool_params(
            mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode,
            mod.return_indices, where))
    if isinstance(mod, nn.LocalResponseNorm):
        return Step(node, "lrn", where, mod, {"size": int(mod.size), "alpha": float(mod.alpha),
                                              "beta": float(mod.beta), "k": float(mod.k)})
    if isinstance(mod, nn.Linear):
        return Step(node, "linear", where, mod, {"out": mod.out_features,
                                                 "bias": mod.bias is not None})
    if isinstance(mod, nn.Flatten):
        return _flatten_step(node, where, inp, value, mod.start_dim, mod.end_dim)
    if isinstance(mod, (nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity)):
        return Step(node, "identity", where, mod)
    if isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        if tuple(inp.shape) == tuple(value.shape):
            return Step(node, "identity", where + " (output size = input size)", mod)
        raise InputError(f"{where}: pools {tuple(inp.shape[1:])} to {tuple(value.shape[1:])}; "
                         f"only an adaptive pooling to the size it already has (the identity) "
                         f"is supported")
    raise InputError(f"{where} cannot be mapped to a package layer; supported: {SUPPORTED} "
                     f"(and the same as calls in forward())")


def _flatten_step(node, where, inp, value, start=1, end=-1):
    if inp.dim() == 2 and tuple(value.shape) == tuple(inp.shape):
        return Step(node, "identity", where)
    n = int(np.prod(inp.shape[1:]))
    if inp.dim() == 4 and tuple(value.shape) == (inp.shape[0], n) and start in (1, -3) \
            and end in (-1, 3):
        return Step(node, "flatten", where)
    raise InputError(f"{where}: reshapes {tuple(inp.shape)} to {tuple(value.shape)}; only a "
                     f"flatten of [N, C, H, W] to [N, C*H*W] (before the first Linear) is "
                     f"supported")


def _function_step(node, value, inp):
    torch = _torch()
    F = torch.nn.functional
    t = node.target
    fname = getattr(t, "__name__", None) or str(t)
    mod = {"torch.nn.functional": "F", "_operator": "operator", "builtins": ""}.get(
        getattr(t, "__module__", None) or "", getattr(t, "__module__", None) or "")
    if mod == "torch._C._VariableFunctions" or (mod.startswith("torch") and mod != "F"):
        mod = "torch"
    where = f"call {mod + '.' if mod else ''}{fname}() at '{node.name}'"
    if node.op == "call_method":
        where = f"call x.{t}() at '{node.name}'"
        if t in ("relu", "relu_"):
            return Step(node, "relu", where)
        if t in ("view", "reshape", "flatten"):
            start = _arg(node, 0, "start_dim", 0) if t == "flatten" else 1
            return _flatten_step(node, where, inp, value, start if t == "flatten" else 1)
        if t in ("contiguous", "clone", "detach"):
            return Step(node, "identity", where)
        if t in ("float", "to") and value.dtype == inp.dtype:
            return Step(node, "identity", where)
        raise InputError(f"{where} cannot be mapped to a package layer")
    if t in (F.relu, torch.relu, torch.relu_, getattr(F, "relu_", None)):
        return Step(node, "relu", where)
    if t is torch.flatten:
        return _flatten_step(node, where, inp, value, _arg(node, 1, "start_dim", 0),
                             _arg(node, 2, "end_dim", -1))
    if t in (F.dropout, F.dropout2d, F.alpha_dropout):
        if _arg(node, 2, "training", True):
            raise InputError(f"{where}: dropout with training=True in eval mode; pass "
                             f"training=self.training")
        return Step(node, "identity", where)
    if t is F.max_pool2d or getattr(t, "__name__", "") in ("max_pool2d", "_max_pool2d"):
        return Step(node, "maxpool", where, None, _maxpool_params(
            _arg(node, 1, "kernel_size", None), _arg(node, 2, "stride", None),
            _arg(node, 3, "padding", 0), _arg(node, 4, "dilation", 1),
            _arg(node, 5, "ceil_mode", False), _arg(node, 6, "return_indices", False), where))
    if t is F.local_response_norm:
        return Step(node, "lrn", where, None, {
            "size": int(_arg(node, 1, "size", None)), "alpha": float(_arg(node, 2, "alpha", 1e-4)),
            "beta": float(_arg(node, 3, "beta", 0.75)), "k": float(_arg(node, 4, "k", 1.0))})
    raise InputError(f"{where} cannot be mapped to a package layer (supported calls: F.relu, "
                     f"torch.flatten, x.view/reshape as a flatten, F.max_pool2d, "
                     f"F.local_response_norm, F.dropout; layers with weights must be modules)")


def trace(model, x):
    """Traces ``model`` with torch.fx and runs the trace on ``x``. Returns ``(steps, values,
    final)``: the chain of tensor-valued steps, each step's output (cloned, so in-place ops later
    in the chain do not change it) and the traced graph's final output."""
    torch = _torch()
    import torch.fx as fx

    name = type(model).__name__
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001
        raise InputError(
            f"cannot trace {name}.forward with torch.fx ({type(e).__name__}: {e}); the package "
            f"format needs a plain chain of layers: write forward() without control flow that "
            f"depends on tensor values, or wrap the layers in nn.Sequential") from e
    modules = dict(gm.named_modules())
    values = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            values[n] = out.detach().clone() if isinstance(out, torch.Tensor) else out
            return out

    with torch.no_grad():
        final = Rec(gm).run(x.clone())
    steps, prev = [], None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if prev is not None:
                raise InputError(f"{name}.forward takes more than one input; the package "
                                 f"format has one input tensor")
            prev = n
            continue
        if n.op == "output":
            out = n.args[0]
            if out is not prev:
                raise InputError(f"{name}.forward must return one tensor, the output of its "
                                 f"last layer (it returns {out!r})")
            continue
        if n.op == "get_attr":
            raise InputError(f"{name}.forward reads the parameter or buffer '{n.target}' "
                             f"directly; layers with weights must be modules (nn.Conv2d, "
                             f"nn.Linear, nn.BatchNorm2d)")
        val = values[n]
        tensor_inputs = [a for a in n.all_input_nodes if isinstance(values.get(a), torch.Tensor)]
        if not isinstance(val, torch.Tensor):
            continue  # x.size(0), x.shape[...]: shape arithmetic for a view
        if tensor_inputs != [prev]:
            where = f"'{n.target}'" if n.op == "call_module" else f"'{n.name}'"
            raise InputError(
                f"{name} is not a chain of layers: step {where} takes "
                f"{[a.name for a in tensor_inputs]} where the package format allows only the "
                f"previous step's output ('{prev.name}') (no skip connections, no branches)")
        if n.op == "call_module":
            step = _module_step(n, modules[n.target], n.target, val, values[prev])
        elif n.op in ("call_function", "call_method"):
            step = _function_step(n, val, values[prev])
        else:
            raise InputError(f"{name}: unsupported graph node {n.op} '{n.name}'")
        steps.append(step)
        prev = n
    if not steps:
        raise InputError(f"{name} has no layers")
    return steps, values, final


# --- steps -> package layers -------------------------------------------------------------------

def _weights_of(step):
    m = step.module
    if step.op == "conv":
        d = {"weight": m.weight.detach().float().cpu().numpy()}
        if m.bias is not None:
            d["bias"] = m.bias.detach().float().cpu().numpy()
        return d
    if step.op == "linear":
        d = {"weight": m.weight.detach().float().cpu().numpy()}
        if m.bias is not None:
            d["bias"] = m.bias.detach().float().cpu().numpy()
        return d
    if step.op == "batchnorm":
        c = m.num_features
        w = (m.weight.detach().float().cpu().numpy() if m.weight is not None
             else np.ones(c, np.float32))  # affine=False
        b = (m.bias.detach().float().cpu().numpy() if m.bias is not None
             else np.zeros(c, np.float32))
        return {"weight": w, "bias": b,
                "running_mean": m.running_mean.detach().float().cpu().numpy(),
                "running_var": m.running_var.detach().float().cpu().numpy(), "eps": float(m.eps)}
    return {}


NAMES = {"conv": "conv", "batchnorm": "bn", "lrn": "lrn", "maxpool": "pool", "linear": "fc"}


def group_layers(steps):
    """Groups the chain into package layers. Returns a list of dicts: ``spec`` (layer dict),
    ``weights``, ``steps`` (the steps it is made of) and ``out`` (the fx node whose value is the
    layer's output)."""
    layers, counts, pending_flatten, pending = [], {}, None, []
    for st in steps:
        if st.op in NAMES:
            if pending_flatten is not None and st.op != "linear":
                raise InputError(f"{pending_flatten.where} flattens before {st.where}; the "
                                 f"package format allows a flatten only right before the first "
                                 f"linear layer")
            if st.op == "linear":
                prev_shape_is_flat = pending_flatten is not None or (
                    layers and layers[-1]["spec"]["kind"] == "linear")
                if not prev_shape_is_flat:
                    raise InputError(f"{st.where} gets a 4-D input without a flatten before "
                                     f"it (nn.Linear would act on the last dimension only)")
            counts[st.op] = counts.get(st.op, 0) + 1
            spec = {"kind": st.op, "name": f"{NAMES[st.op]}{counts[st.op]}", **st.params,
                    "relu": False}
            if st.op in ("batchnorm", "maxpool", "lrn"):
                if any(l["spec"]["kind"] == "linear" for l in layers):
                    raise InputError(f"{st.where} comes after a linear layer; the package "
                                     f"format has {st.op} layers only before the first linear")
            layers.append({"spec": spec, "weights": _weights_of(st), "steps": pending + [st],
                           "out": st.node})
            pending_flatten, pending = None, []
        elif st.op == "relu":
            if not layers or pending_flatten is not None:
                raise InputError(f"{st.where}: a ReLU must follow a layer (conv, batchnorm, "
                                 f"lrn, maxpool, linear)")
            layers[-1]["spec"]["relu"] = True  # a second ReLU in a row changes nothing
            layers[-1]["steps"].append(st)
            layers[-1]["out"] = st.node
        elif st.op == "flatten":
            if not layers:
                raise InputError(f"{st.where}: a flatten before any layer is not supported")
            pending_flatten = st
            pending.append(st)
        else:  # identity
            if pending_flatten is not None or not layers:
                pending.append(st)  # listed with the next layer
                continue
            layers[-1]["steps"].append(st)
            layers[-1]["out"] = st.node
    if pending_flatten is not None:
        raise InputError(f"{pending_flatten.where}: a flatten at the end is not supported")
    return layers


def _load_spec(arg):
    if arg in zoo.ZOO:
        return zoo.get(arg)[0], arg
    p = Path(arg)
    if not p.is_file():
        raise InputError(f"--spec {arg!r}: neither a zoo model ({', '.join(sorted(zoo.ZOO))}) "
                         f"nor a file")
    try:
        data = json.loads(p.read_text())
    except ValueError as e:
        raise InputError(f"--spec {p}: not JSON ({e})") from e
    if isinstance(data, dict):
        data = data.get("layers")
    if not isinstance(data, list) or not all(isinstance(l, dict) for l in data):
        raise InputError(f"--spec {p}: expected a list of layer dicts (or {{\"layers\": [...]}})")
    for i, l in enumerate(data):
        if "kind" not in l or "name" not in l:
            raise InputError(f"--spec {p}: layer {i} needs 'kind' and 'name': {l}")
    return data, str(p)


def apply_spec(derived, spec_layers, spec_src, input_shape):
    """Takes the layer list from ``spec_layers`` with the weights of ``derived`` (the model's own
    layers, same kinds in the same order). Returns ``(layers, notes)``: notes list where the spec
    says something else than the model (ReLUs, hyper-parameters)."""
    kinds_m = [l["spec"]["kind"] for l in derived]
    kinds_s = [l["kind"] for l in spec_layers]
    if kinds_m != kinds_s:
        raise InputError(
            f"--spec {spec_src} does not fit the model: the spec's layers are {kinds_s} "
            f"({len(kinds_s)}), the model's are {kinds_m} ({len(kinds_m)})")
    try:
        info = S.infer(spec_layers, input_shape)
    except (ValueError, KeyError) as e:
        raise InputError(f"--spec {spec_src}: {e}") from e
    out, notes = [], []
    for i, (d, s, inf) in enumerate(zip(derived, spec_layers, info)):
        mods = ", ".join(st.where for st in d["steps"])
        label = f"layer {i} ({s['name']}, {s['kind']}; model: {mods})"
        w = d["weights"]
        if s["kind"] in ("conv", "linear"):
            want = ([s["out"], inf["input_shape"][0], s["k"], s["k"]] if s["kind"] == "conv"
                    else [s["out"], int(np.prod(inf["input_shape"]))])
            if list(w["weight"].shape) != want:
                raise InputError(f"--spec {spec_src}: {label}: the spec needs weights of shape "
                                 f"{want}, the model's are {list(w['weight'].shape)}")
        for key in sorted((set(s) | set(d["spec"])) - {"name", "kind"}):
            sv = s.get(key, False if key == "relu" else None)
            mv = d["spec"].get(key, False if key == "relu" else None)
            if key in ("stride",) and sv is None and s["kind"] == "maxpool":
                sv = s["k"]
            if key in ("pad", "stride") and sv is None:
                sv = 0 if key == "pad" else 1
            if key == "bias" and sv is None:
                sv = True
            if sv != mv:
                notes.append(f"{label}: spec {key}={sv}, model {key}={mv}")
        out.append({**d, "spec": dict(s)})
    return out, notes


# --- the check ---------------------------------------------------------------------------------

def _rel(diff, ref):
    return diff / max(ref, 1e-12)


def check(layers, values, final, model_out, x, vdir, variant, storage, tol=None, threads=None):
    """Compares the exported files with the model. Returns a result dict; ``ok`` False names the
    first diverging layer in ``message``."""
    tol_layer, tol_final = TOLERANCES[storage] if tol is None else (tol, tol)
    folded = OB.plan_folding([l["spec"] for l in layers])
    chain = ortchain.Chain(vdir, variant, OB.INPUT, OB.OUTPUT, threads=threads)
    rows, first_bad = [], None
    ref_in = x
    cur = x
    chain_ok = True
    for i, l in enumerate(layers):
        # the package's conv with a folded BN outputs BN(conv(x)): compare with the model's BN
        node = layers[i + 1]["steps"][0].node if (i + 1) in folded else l["out"]
        ref = values[node].numpy()
        sess = chain.sessions[i]
        row = {"index": i, "name": l["spec"]["name"], "kind": l["spec"]["kind"],
               "model": ", ".join(st.where for st in l["steps"]), "shape": list(ref.shape[1:])}
        try:
            own = sess.run([OB.OUTPUT], {OB.INPUT: np.ascontiguousarray(ref_in, np.float32)})[0]
        except Exception as e:  # noqa: BLE001 - a shape the spec got wrong fails in ORT
            own, row["error"] = None, f"ONNX Runtime failed on the model's input: {e}"
        if own is not None and own.shape != ref.shape:
            row["error"] = (f"package output shape {list(own.shape[1:])}, model "
                            f"{list(ref.shape[1:])}")
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        row["max_abs_ref"] = scale
        if "error" not in row:
            d = float(np.abs(own - ref).max())
            row.update(max_abs_diff=d, rel=_rel(d, scale), own_min=float(own.min()),
                       ref_min=float(ref.min()), own_max=float(own.max()), ref_max=float(ref.max()))
        if chain_ok:
            try:
                cur = sess.run([OB.OUTPUT], {OB.INPUT: cur})[0]
                if cur.shape == ref.shape:
                    row["chained_rel"] = _rel(float(np.abs(cur - ref).max()), scale)
                else:
                    chain_ok = False
            except Exception:  # noqa: BLE001
                chain_ok = False
        bad = "error" in row or not row["rel"] <= tol_layer
        row["ok"] = not bad
        if bad and first_bad is None:
            first_bad = row
        rows.append(row)
        ref_in = ref  # what the package's next layer consumes (BN-normalised after a folded conv)
    res = {"rows": rows, "tol_layer": tol_layer, "tol_final": tol_final, "storage": storage,
           "images": int(x.shape[0])}
    model_out = model_out.numpy()
    res["trace_vs_forward"] = _rel(float(np.abs(final.numpy() - model_out).max()),
                                   float(np.abs(model_out).max()))
    if chain_ok and cur.shape == model_out.shape:
        scale = float(np.abs(model_out).max())
        d = float(np.abs(cur - model_out).max())
        agree = cur.argmax(1) == model_out.argmax(1)
        top2 = np.sort(model_out, axis=1)[:, -2:] if model_out.shape[1] > 1 else None
        decisive = (top2[:, 1] - top2[:, 0] > 2 * tol_final * scale) if top2 is not None \
            else np.ones(len(agree), bool)
        res.update(logits_max_abs_diff=d, logits_rel=_rel(d, scale), logits_max_abs=scale,
                   argmax_agreement=float(agree.mean()),
                   argmax_disagree_decisive=int((~agree & decisive).sum()),
                   package_logits=cur)
    else:
        res["chain_error"] = "the chained package files did not produce the model's output shape"
    msgs = []
    if res["trace_vs_forward"] > 1e-5:
        msgs.append(f"the traced graph differs from {'model'}.forward() by "
                    f"{res['trace_vs_forward']:.3g} (relative): forward() does something the "
                    f"trace does not see (e.g. it depends on self.training or on Python state)")
    if first_bad is not None:
        r = first_bad
        m = (f"the package diverges from your model at layer {r['index']} ({r['name']}, "
             f"{r['kind']}; your model: {r['model']}): ")
        if "error" in r:
            m += r["error"]
        else:
            m += (f"max |diff| {r['max_abs_diff']:.4g} against max |value| {r['max_abs_ref']:.4g} "
                  f"(relative {r['rel']:.3g} > {tol_layer:g} allowed for {storage} weights); "
                  f"package layer output range [{r['own_min']:.4g}, {r['own_max']:.4g}], your "
                  f"model's [{r['ref_min']:.4g}, {r['ref_max']:.4g}]")
        msgs.append(m)
    if "chain_error" in res:
        msgs.append(res["chain_error"])
    elif first_bad is None:
        if not res["logits_rel"] <= tol_final:
            msgs.append(f"final logits differ: max |diff| {res['logits_max_abs_diff']:.4g} "
                        f"(relative {res['logits_rel']:.3g} > {tol_final:g})")
        if res["argmax_disagree_decisive"]:
            msgs.append(f"argmax differs on {res['argmax_disagree_decisive']} image(s) whose "
                        f"top-2 margin exceeds the logit tolerance")
    res["ok"] = not msgs
    res["message"] = "; ".join(msgs)
    return res


def print_report(res, out=None):
    out = out or sys.stdout
    print(f"check: {res['images']} inputs, {res['storage']} weights, tolerance (max|diff| / "
          f"max|value|) {res['tol_layer']:g} per layer, {res['tol_final']:g} logits", file=out)
    print(f"  {'#':>2}  {'layer':<8} {'kind':<9} {'shape':<14} {'max|value|':>10} "
          f"{'max|diff|':>10} {'relative':>9} {'chained':>9}  model", file=out)
    for r in res["rows"]:
        shape = "x".join(str(d) for d in r["shape"])
        if "error" in r:
            print(f"  {r['index']:>2}  {r['name']:<8} {r['kind']:<9} {shape:<14} "
                  f"{r['max_abs_ref']:>10.4g} {'error':>10} {'':>9} {'':>9}  {r['model']}  <-- "
                  f"{r['error']}", file=out)
            continue
        ch = f"{r['chained_rel']:.2e}" if "chained_rel" in r else "-"
        flag = "" if r["ok"] else "  <-- diverges"
        print(f"  {r['index']:>2}  {r['name']:<8} {r['kind']:<9} {shape:<14} "
              f"{r['max_abs_ref']:>10.4g} {r['max_abs_diff']:>10.3e} {r['rel']:>9.2e} {ch:>9}  "
              f"{r['model']}{flag}", file=out)
    if "logits_rel" in res:
        print(f"  logits (chained files vs your model's forward): max |diff| "
              f"{res['logits_max_abs_diff']:.3e} (relative {res['logits_rel']:.2e}), argmax "
              f"agreement {res['argmax_agreement'] * 100:.1f} % of {res['images']}", file=out)


# --- command -----------------------------------------------------------------------------------

def _floats(s, what):
    try:
        return [float(v) for v in s.split(",")]
    except ValueError as e:
        raise InputError(f"{what} {s!r}: expected comma-separated numbers") from e


def _inputs(a, input_shape, mean, std):
    """Returns (x float32 normalised, labels or None, description)."""
    if a.inputs:
        p = Path(a.inputs)
        if not p.is_file():
            raise InputError(f"--inputs {p}: no such file")
        try:
            arr = np.load(p)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"--inputs {p}: cannot read as .npy: {e}") from e
        if arr.ndim != 4 or list(arr.shape[1:]) != input_shape:
            raise InputError(f"--inputs {p}: shape {list(arr.shape)}, expected "
                             f"[N, {', '.join(map(str, input_shape))}]")
        if arr.dtype == np.uint8:
            return cifar.normalize(arr, mean, std), None, f"{p} (uint8 pixels, normalised)"
        return arr.astype(np.float32), None, f"{p} (as given)"
    n = a.samples
    if n < 1:
        raise InputError(f"--samples {n}: at least 1")
    if a.random_inputs:
        rng = np.random.RandomState(a.seed)
        px = rng.randint(0, 256, size=(n, *input_shape)).astype(np.uint8)
        return cifar.normalize(px, mean, std), None, f"{n} random images (seed {a.seed})"
    if input_shape != [3, 32, 32]:
        raise InputError(f"the bundled samples are 3x32x32 CIFAR-10 images, the model takes "
                         f"{input_shape}: give --random-inputs or --inputs X.npy")
    if not SAMPLES.is_file():
        raise InputError(f"bundled samples not found at {SAMPLES} (install with pip install -e "
                         f"models/ so the repository's files are used, or give --random-inputs "
                         f"or --inputs)")
    if not 1 <= n <= 256:
        raise InputError(f"--samples {n}: 1 to 256 (the bundled file holds 256 images)")
    images, labels = cifar.read_bin(SAMPLES, limit=n)
    return (cifar.normalize(images, mean, std), labels,
            f"the first {n} images of samples/{SAMPLES.name}")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m jmdc_models import", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("the model (one of)")
    src.add_argument("--module", help="torch.save(model, FILE) of the whole nn.Module (runs the "
                                      "pickle's code: trusted files only)")
    src.add_argument("--code", help="path/to/file.py:NAME or package.module:NAME building your "
                                    "model without arguments")
    src.add_argument("--state-dict", help="weights for --code (torch.load(weights_only=True))")
    src.add_argument("--python-path", action="append", default=[], metavar="DIR",
                     help="folder added to sys.path before loading (repeatable)")
    p.add_argument("--out", required=True, help="package folder to write (must not exist, or "
                                                "hold a package and --force is given)")
    p.add_argument("--force", action="store_true", help="replace an existing package at --out")
    p.add_argument("--spec", help="layer list: a zoo name (" + ", ".join(sorted(zoo.ZOO)) +
                                  ") or a JSON file; default: derived from the model")
    p.add_argument("--name", help="package name (default: the --out folder's name)")
    p.add_argument("--description", default="")
    p.add_argument("--dataset", default=None,
                   help="free text (default: 'CIFAR-10 (JPEG copy)' for 3x32x32 inputs with 10 "
                        "classes, else 'unknown')")
    p.add_argument("--input-shape", default="3,32,32", help="C,H,W (default 3,32,32)")
    p.add_argument("--mean", help="per-channel mean of pixel/255 (default for 3x32x32: the "
                                  "CIFAR-10 training set's)")
    p.add_argument("--std", help="per-channel std of pixel/255 (default for 3x32x32: CIFAR-10's)")
    p.add_argument("--classes", help="comma-separated class names, or @FILE with one per line "
                                     "(default: CIFAR-10's for 10 outputs, else 0..K-1)")
    p.add_argument("--weights", default="fp32", choices=OB.STORAGES,
                   help="weight storage in the ONNX files (fp16/int8: smaller files, looser "
                        "check tolerance)")
    p.add_argument("--no-full", action="store_true", help="do not write full.onnx")
    chk = p.add_argument_group("the check")
    chk.add_argument("--samples", type=int, default=32,
                     help="number of inputs (bundled CIFAR-10 images, or random ones)")
    chk.add_argument("--random-inputs", action="store_true",
                     help="random images of the input shape instead of the bundled samples")
    chk.add_argument("--inputs", help=".npy of inputs [N, C, H, W]: uint8 pixels (normalised "
                                      "here) or float32 (used as given)")
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--tolerance", type=float,
                     help="max|diff| / max|value| allowed for every layer and the logits "
                          "(default: fp32 1e-4; fp16 2e-3 / 5e-3 logits; int8 5e-2 / 1e-1)")
    chk.add_argument("--keep-rejected", action="store_true",
                     help="on a failed check keep the files in OUT.rejected/ (manifest renamed "
                          "manifest.rejected.json, REJECTED.txt says why)")
    p.add_argument("--threads", type=int, default=0, help="PyTorch and ONNX Runtime threads "
                                                          "(default: their own)")
    return p.parse_args(argv)


def _prepare_out(out, force):
    out = Path(out)
    if out.exists():
        if not force:
            raise InputError(f"--out {out} exists; give --force to replace the package there")
        if not (out.is_dir() and ((out / "manifest.json").is_file() or not any(out.iterdir()))):
            raise InputError(f"--out {out} exists and is not a model package (no manifest.json); "
                             f"not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def run(a):
    torch = _torch()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    if bool(a.module) == bool(a.code):
        if a.state_dict and not a.code:
            raise InputError(
                "a state dict alone has no forward pass to check the package against: give "
                "--code FILE.py:NAME (your model's code) with --state-dict, or save the whole "
                "module (torch.save(model, FILE)) and give --module FILE")
        raise InputError("give exactly one of --module FILE or --code FILE.py:NAME")
    if a.module and a.state_dict:
        raise InputError("--state-dict goes with --code, not with --module")
    out = _prepare_out(a.out, a.force)
    try:
        input_shape = [int(v) for v in a.input_shape.split(",")]
    except ValueError as e:
        raise InputError(f"--input-shape {a.input_shape!r}: expected C,H,W") from e
    if len(input_shape) != 3 or min(input_shape) <= 0:
        raise InputError(f"--input-shape {a.input_shape!r}: expected three positive numbers C,H,W")
    cifar_like = input_shape == [3, 32, 32]
    mean = _floats(a.mean, "--mean") if a.mean else (CIFAR10_MEAN if cifar_like else None)
    std = _floats(a.std, "--std") if a.std else (CIFAR10_STD if cifar_like else None)
    if mean is None or std is None:
        raise InputError(f"--mean and --std are needed for an input of shape {input_shape} "
                         f"({input_shape[0]} values each: the normalisation the model expects)")
    if len(mean) != input_shape[0] or len(std) != input_shape[0] or min(std) <= 0:
        raise InputError(f"--mean/--std need {input_shape[0]} values each (std > 0)")

    if a.module:
        model = load_pickled_module(a.module, a.python_path)
        source = {"module": Path(a.module).name, "sha256": _sha256(a.module)}
        src_label = a.module
    else:
        model = load_code_module(a.code, a.state_dict, a.python_path)
        source = {"code": a.code}
        if a.state_dict:
            source.update(state_dict=Path(a.state_dict).name, sha256=_sha256(a.state_dict))
        src_label = a.code + (f" + {a.state_dict}" if a.state_dict else "")
    model = model.float().eval()
    x_np, labels, inputs_desc = _inputs(a, input_shape, mean, std)
    x = torch.from_numpy(np.ascontiguousarray(x_np))
    with torch.no_grad():
        try:
            model_out = model(x.clone())
        except Exception as e:  # noqa: BLE001
            raise InputError(f"your model's forward pass failed on inputs of shape "
                             f"{list(x.shape)}: {type(e).__name__}: {e}") from e
    if not isinstance(model_out, torch.Tensor) or model_out.dim() != 2:
        what = (f"a tensor of shape {list(model_out.shape)}"
                if isinstance(model_out, torch.Tensor) else f"a {type(model_out).__name__}")
        raise InputError(f"your model returns {what}; the package format needs logits "
                         f"[N, classes]")
    steps, values, final = trace(model, x)
    derived = group_layers(steps)
    notes = []
    if a.spec:
        spec_layers, spec_src = _load_spec(a.spec)
        layers, notes = apply_spec(derived, spec_layers, spec_src, input_shape)
    else:
        layers, spec_src = derived, "derived from the model"
    specs = [l["spec"] for l in layers]
    try:
        info = S.infer(specs, input_shape)
    except (ValueError, KeyError) as e:
        raise InputError(f"layer list: {e}") from e
    n_out = int(model_out.shape[1])
    if a.classes:
        if a.classes.startswith("@"):
            cf = Path(a.classes[1:])
            if not cf.is_file():
                raise InputError(f"--classes {a.classes}: no such file")
            classes = [c.strip() for c in cf.read_text().splitlines() if c.strip()]
        else:
            classes = [c.strip() for c in a.classes.split(",")]
    elif n_out == 10 and cifar_like:
        classes = list(zoo.CIFAR10_CLASSES)
    else:
        classes = [str(i) for i in range(n_out)]
    if len(classes) != n_out:
        raise InputError(f"--classes has {len(classes)} names, the model outputs {n_out} logits")
    if info[-1]["output_shape"] != [n_out]:
        raise InputError(f"the layer list ends with output {info[-1]['output_shape']}, the model "
                         f"outputs [{n_out}]")
    dataset = a.dataset or ("CIFAR-10 (JPEG copy)" if cifar_like and n_out == 10 else "unknown")
    name = a.name or out.name
    print(f"model: {type(model).__name__} from {src_label}; {len(layers)} package layers "
          f"({spec_src})")
    for i, (l, inf) in enumerate(zip(layers, info)):
        s = l["spec"]
        print(f"  {i:>2} {s['name']:<8} {s['kind']:<9}{' +relu' if s.get('relu') else '      '} "
              f"{'x'.join(map(str, inf['output_shape'])):<12} <- "
              f"{', '.join(st.where for st in l['steps'])}")
    for n in notes:
        print(f"  note: {n}")

    torch_version = torch.__version__
    training = {"imported": {
        "tool": "python -m jmdc_models import", "source": source, "layer_list": spec_src,
        "layer_sources": [[st.where for st in l["steps"]] for l in layers],
        "torch": torch_version, "onnxruntime": ortchain.ort_version()}}
    description = a.description or (f"{name}: imported from "
                                     f"{source.get('module') or source['code']}")
    manifest = export.manifest_skeleton(name, specs, input_shape, classes, mean, std, dataset,
                                        description, training)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        entry = export.export_variant(specs, [l["weights"] for l in layers], input_shape,
                                      work / "keep100", storage=a.weights, full=not a.no_full)
        variant = export.set_variant(manifest, 1.0, entry)
        res = check(layers, values, final, model_out, x_np, work / "keep100", variant, a.weights,
                    a.tolerance, a.threads or None)
        print_report(res)
        summary = {"inputs": inputs_desc, "images": res["images"], "weight_storage": a.weights,
                   "tolerance_per_layer": res["tol_layer"], "tolerance_logits": res["tol_final"],
                   "max_relative_diff_per_layer": [round(r["rel"], 9) if "rel" in r else None
                                                   for r in res["rows"]]}
        if "logits_rel" in res:
            summary.update(logits_max_abs_diff=res["logits_max_abs_diff"],
                           logits_relative_diff=res["logits_rel"],
                           argmax_agreement=res["argmax_agreement"])
            if labels is not None and len(classes) == 10:
                pk = float((res["package_logits"].argmax(1) == labels).mean())
                mo = float((model_out.numpy().argmax(1) == labels).mean())
                print(f"  top-1 on these {len(labels)} labelled samples: your model "
                      f"{mo * 100:.1f} %, package {pk * 100:.1f} %")
                summary.update(samples_top1_model=mo, samples_top1_package=pk)
        if res["ok"] and notes:
            # the spec says something else than the model, even if these inputs did not show it
            res["ok"] = False
            res["message"] = (
                f"--spec {spec_src} describes another model than yours ({'; '.join(notes)}); the "
                f"check stayed within tolerance on these {res['images']} inputs, but the package "
                f"would compute the spec's layers, not your model's. Fix the spec or leave it out")
        training["imported"]["check"] = summary
        training["imported"]["result"] = "accepted" if res["ok"] else "rejected"
        ortchain.write_manifest(work, manifest)
        if res["ok"]:
            # format checks of verify (hashes, ONNX names/shapes/opset, chained == full.onnx)
            print("format check (jmdc_models.verify on the new files):")
            rep = verify.Report()
            verify.verify_package(work, rep, None, verify.read_samples())
            if rep.failures:
                res["ok"] = False
                res["message"] = "the package fails jmdc_models.verify: " + "; ".join(rep.failures)
        if not res["ok"]:
            print(f"\nREFUSED: {res['message']}")
            hints = [n for n in notes if n.startswith(f"layer {first_index(res)} ")]
            for h in hints:
                print(f"  hint: --spec {spec_src} differs from your model here: {h}")
            if a.keep_rejected:
                rej = Path(str(out) + ".rejected")
                if rej.exists():
                    shutil.rmtree(rej)
                (work / "manifest.json").rename(work / "manifest.rejected.json")
                (work / "REJECTED.txt").write_text(
                    f"python -m jmdc_models import refused this package:\n{res['message']}\n")
                work.rename(rej)
                print(f"rejected files kept in {rej} (not loadable: no manifest.json)")
            else:
                print(f"nothing written to {out}")
            return 1
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    print(f"\nOK: wrote {out} (variant keep100, {len(layers)} layers, {a.weights} weights) in "
          f"{time.time() - t0:.1f}s; the package matches your model")
    if dataset.startswith("CIFAR-10") and len(classes) == 10:
        print(f"next: python -m jmdc_models finalize {out}   (top-1 on the full CIFAR-10 test "
              f"set with ONNX Runtime, into the manifest)")
    print(f"      python -m jmdc_models verify --no-test-set {out}")
    return 0


def first_index(res):
    for r in res["rows"]:
        if not r["ok"]:
            return r["index"]
    return None


def main(argv=None):
    a = parse_args(argv)
    try:
        return run(a)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
