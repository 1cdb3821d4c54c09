#!/usr/bin/env python3
"""Does quantization-aware fine-tuning at pool2 bring 2- or 3-bit features within 1 point? (issue 14)

Measured, not shipped. Loads a variant of the bundled AlexNet-CIFAR package from its per-layer ONNX
files into the PyTorch model of ``models/jmdc_models`` (the loader reproduces the manifest's top-1),
then fine-tunes it on the 50,000 CIFAR-10 (JPEG copy) training images (crop + flip) with the codec's
quantizer applied to the split tensor in the forward pass: per-frame min and max, ``bits``-bit
uniform codes, round to nearest, straight-through gradient (region selection rho = 1, as in the
plans the Pareto tables pick at pool2). Loss: label-smoothed cross-entropy mixed with distillation
from the unquantized keep100 (``--kd``). ``--freeze-head`` trains only the layers after the split
(the edge's head, and so every other plan's head, stays bit-identical). Prints top-1 on all 10,000
test images with ``bits``-bit and 3-bit features and unquantized, before and after each epoch.

Needs the training environment (PyTorch, onnx: models/requirements.txt; the CPU build from PyPI
works, about 2-4.5 minutes per epoch on the 2-core development VM) and ../shared/datasets/cifar-10.

    python3 bench/qat_pool2.py --variant keep100 --bits 2 --epochs 4 --lr 0.002 --kd 0.9 --freeze-head
"""
import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models"))
import numpy as np, torch, torch.nn.functional as F, onnx
from onnx import numpy_helper
from jmdc_models import zoo, spec as S, nets, cifar
from jmdc_models.train import DeviceData, lr_at

ap = argparse.ArgumentParser()
ap.add_argument("--variant", default="keep050")
ap.add_argument("--bits", type=int, default=2)
ap.add_argument("--split", type=int, default=6)
ap.add_argument("--epochs", type=int, default=4)
ap.add_argument("--lr", type=float, default=0.004)
ap.add_argument("--freeze-head", action="store_true")
ap.add_argument("--kd", type=float, default=0.7)
ap.add_argument("--limit", type=int, default=0)
ap.add_argument("--save", default="")
a = ap.parse_args()
torch.manual_seed(0)
pkg = REPO / "models/packages/alexnet-cifar10"
man = json.load(open(f"{pkg}/manifest.json"))
layers, inshape, _ = zoo.get("alexnet-cifar10")

def load(variant):
    v = next(x for x in man["variants"] if x["name"] == variant)
    counts = {i: v["layers"][i]["output_shape"][0] for i in S.conv_indices(layers)}
    net = nets.build(S.pruned_spec(layers, counts), inshape)
    with torch.no_grad():
        for i, l in enumerate(net.layers):
            if l.op is None: continue
            m = onnx.load(f"{pkg}/{v['dir']}/{v['layers'][i]['file']}")
            ws = [numpy_helper.to_array(t) for t in m.graph.initializer]
            W = next(w for w in ws if w.ndim >= 2); B = next(w for w in ws if w.ndim == 1)
            l.op.weight.copy_(torch.from_numpy(W.astype(np.float32)).reshape(l.op.weight.shape))
            l.op.bias.copy_(torch.from_numpy(B.astype(np.float32)))
    return net

class FQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits):
        b = x.shape[0]; f = x.reshape(b, -1)
        mn = f.min(1, keepdim=True).values; mx = f.max(1, keepdim=True).values
        sc = (mx - mn) / (2 ** bits - 1); sc = torch.where(sc > 0, sc, torch.ones_like(sc))
        q = torch.round((f - mn) / sc) * sc + mn
        return q.reshape(x.shape)
    @staticmethod
    def backward(ctx, g): return g, None

def fwd(net, x, bits):
    for i, l in enumerate(net.layers):
        if i == a.split and bits: x = FQ.apply(x, bits)
        x = l(x)
    return x

mm = man["normalization"]
tr = cifar.read_bin_dir(cifar.default_cifar_dir() / "cifar-10-batches-bin", "train")
te = cifar.read_bin_dir(cifar.default_cifar_dir() / "cifar-10-batches-bin", "test")
if a.limit: tr = (tr[0][:a.limit], tr[1][:a.limit])
dtr = DeviceData(tr[0], tr[1], mm["mean"], mm["std"], "cpu"); dte = DeviceData(te[0], te[1], mm["mean"], mm["std"], "cpu")

def evaluate(net, bits):
    net.eval(); c = 0
    with torch.no_grad():
        for i in range(0, len(dte), 1000):
            c += int((fwd(net, dte.norm(dte.x[i:i+1000]), bits).argmax(1) == dte.y[i:i+1000]).sum())
    return c / len(dte)

net = load(a.variant); teacher = load("keep100"); teacher.eval()
print("before", a.variant, "f32", evaluate(net, 0), f"int{a.bits}", evaluate(net, a.bits), "int3", evaluate(net, 3), flush=True)
params = [p for i, l in enumerate(net.layers) if not (a.freeze_head and i < a.split) for p in l.parameters()]
opt = torch.optim.SGD([{"params": [p for p in params if p.ndim > 1], "weight_decay": 5e-4},
                       {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0}], lr=a.lr, momentum=0.9, nesterov=True)
gen = torch.Generator(); gen.manual_seed(0)
bs = 256; spe = len(dtr) // bs; T = 4.0
for ep in range(a.epochs):
    net.train(); t = time.time(); perm = torch.randperm(len(dtr), generator=gen); ls = 0
    for s in range(spe):
        for g in opt.param_groups: g["lr"] = lr_at((ep * spe + s) / (a.epochs * spe), a.lr, "cosine")
        xb, yb = dtr.augmented(perm[s*bs:(s+1)*bs], gen)
        lo = fwd(net, xb, a.bits)
        loss = F.cross_entropy(lo, yb, label_smoothing=0.1)
        if a.kd:
            with torch.no_grad(): tl = teacher(xb)
            kd = F.kl_div(F.log_softmax(lo / T, 1), F.softmax(tl / T, 1), reduction="batchmean")
            loss = (1 - a.kd) * loss + a.kd * T * T * kd
        opt.zero_grad(); loss.backward(); opt.step(); ls += float(loss.detach())
    print(f"ep {ep+1} loss {ls/spe:.4f} {time.time()-t:.0f}s int{a.bits} {evaluate(net, a.bits):.4f} int3 {evaluate(net,3):.4f} f32 {evaluate(net,0):.4f}", flush=True)
if a.save: torch.save(net.state_dict(), a.save)
