"""Example models for ``python -m jmdc_models import`` ("Bring your own model" in models/README.md).

Plain PyTorch, written as a user would, with the trained weights of the bundled
``packages/alexnet-cifar10`` (variant keep100) copied in so that the example runs are meaningful:

    python examples/byom_alexnet.py OUT_DIR

writes
  OUT_DIR/alexnet.pt          torch.save of ``alexnet()``: an nn.Sequential (loads anywhere)
  OUT_DIR/alexnet-norelu.pt   the same weights in ``alexnet(relu=False)``: a model without ReLU
  OUT_DIR/alexnet-f.pt        state dict of ``AlexNetF`` (its forward() uses F.relu, F.max_pool2d
                              and x.view), to import with --code examples/byom_alexnet.py:AlexNetF
"""

import json
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS_DIR = Path(__file__).resolve().parents[1]


def alexnet(relu=True):
    """AlexNet for CIFAR-10 (the layer list of jmdc_models.zoo.alexnet_cifar10) as nn.Sequential."""
    def act():
        return nn.ReLU(inplace=True) if relu else None

    def seq(*mods):
        return nn.Sequential(*(m for m in mods if m is not None))

    features = seq(
        nn.Conv2d(3, 64, 5, padding=1), act(), nn.LocalResponseNorm(2, 1e-4, 0.75, 2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 64, 5, padding=1), act(), nn.LocalResponseNorm(2, 1e-4, 0.75, 2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 128, 3, padding=1), act(),
        nn.Conv2d(128, 128, 3, padding=1), act(),
        nn.Conv2d(128, 128, 3, padding=1), act(),
        nn.MaxPool2d(3, 2))
    classifier = seq(
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(512, 384), act(), nn.Linear(384, 192), act(),
        nn.Linear(192, 10))
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


class AlexNetF(nn.Module):
    """The same network with the activations, pooling and flatten written in forward()."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 5, padding=1)
        self.conv2 = nn.Conv2d(64, 64, 5, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.conv4 = nn.Conv2d(128, 128, 3, padding=1)
        self.conv5 = nn.Conv2d(128, 128, 3, padding=1)
        self.lrn = nn.LocalResponseNorm(2, 1e-4, 0.75, 2.0)
        self.fc1 = nn.Linear(512, 384)
        self.fc2 = nn.Linear(384, 192)
        self.fc3 = nn.Linear(192, 10)

    def forward(self, x):
        x = F.max_pool2d(self.lrn(F.relu(self.conv1(x))), 3, 2)
        x = F.max_pool2d(self.lrn(F.relu(self.conv2(x))), 3, 2)
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.max_pool2d(F.relu(self.conv5(x)), 3, 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def shipped_weights(variant="keep100"):
    """[(weight, bias)] of the conv and linear layers of the bundled package, in order."""
    import onnx
    from onnx import numpy_helper

    pkg = MODELS_DIR / "packages" / "alexnet-cifar10"
    man = json.loads((pkg / "manifest.json").read_text())
    v = next(x for x in man["variants"] if x["name"] == variant)
    out = []
    for layer, arch in zip(v["layers"], man["layers"]):
        if arch["kind"] not in ("conv", "linear"):
            continue
        m = onnx.load(str(pkg / v["dir"] / layer["file"]))
        arrays = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        w = next(a for n, a in arrays.items() if "_W_" in n)
        b = next(a for n, a in arrays.items() if "_B_" in n)
        out.append((np.array(w, np.float32), np.array(b, np.float32)))
    return out


def load_into(model, weights):
    mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(mods) == len(weights), (len(mods), len(weights))
    with torch.no_grad():
        for m, (w, b) in zip(mods, weights):
            m.weight.copy_(torch.from_numpy(w))
            m.bias.copy_(torch.from_numpy(b))
    return model


def main(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = shipped_weights()
    torch.save(load_into(alexnet(), w), out / "alexnet.pt")
    torch.save(load_into(alexnet(relu=False), w), out / "alexnet-norelu.pt")
    torch.save(load_into(AlexNetF(), w).state_dict(), out / "alexnet-f.pt")
    for n in ("alexnet.pt", "alexnet-norelu.pt", "alexnet-f.pt"):
        print(f"wrote {out / n} ({(out / n).stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
