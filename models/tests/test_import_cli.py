"""``python -m jmdc_models import``: bring-your-own-model export, checked against the model."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: `python -m jmdc_models import` runs the user's "
                    "PyTorch model (models/requirements.txt)")
import torch.nn as nn  # noqa: E402

from jmdc_models import import_cli, ortchain, verify  # noqa: E402
from jmdc_models import onnx_build as OB  # noqa: E402

MODELS = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _example():
    spec = importlib.util.spec_from_file_location("byom_alexnet",
                                                  MODELS / "examples" / "byom_alexnet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(capsys, *args):
    rc = import_cli.main([*map(str, args), "--threads", "1"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _tiny_seq():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.LocalResponseNorm(2),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(12 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        bn = m[5]
        bn.running_mean.normal_(0, 0.3)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.2)
    return m


def test_pickled_sequential_is_exported_and_matches(tmp_path, capsys):
    model = _tiny_seq()
    torch.save(model, tmp_path / "seq.pt")
    out = tmp_path / "pkg"
    rc, text, err = _run(capsys, "--module", tmp_path / "seq.pt", "--out", out, "--samples", 8)
    assert rc == 0, text + err
    assert "OK: wrote" in text and "argmax agreement 100.0 %" in text
    m = json.loads((out / "manifest.json").read_text())
    assert [(l["name"], l["kind"]) for l in m["layers"]] == [
        ("conv1", "conv"), ("lrn1", "lrn"), ("pool1", "maxpool"), ("conv2", "conv"),
        ("bn1", "batchnorm"), ("pool2", "maxpool"), ("fc1", "linear"), ("fc2", "linear")]
    imp = m["training"]["imported"]
    assert imp["result"] == "accepted" and imp["source"]["module"] == "seq.pt"
    assert max(imp["check"]["max_relative_diff_per_layer"]) <= 1e-4
    assert imp["layer_sources"][6] == ["module '8' (Flatten)", "module '9' (Dropout)",
                                       "module '10' (Linear)", "module '11' (ReLU)"]
    assert [d.name for d in tmp_path.iterdir() if d.name.startswith(".")] == []  # no leftovers
    assert verify.main(["--no-test-set", str(out)]) == 0
    # the package's chain is the model, also on inputs the check did not use
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    got = ortchain.Chain(out / "keep100", m["variants"][0]).run(x.numpy())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


NET_PY = '''
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 40)
        self.fc2 = nn.Linear(40, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))   # ReLU after the pooling
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = F.dropout(x, 0.5, training=self.training)
        return self.fc2(F.relu(self.fc1(x)))
'''


def test_code_and_state_dict_with_functional_forward(tmp_path, capsys):
    (tmp_path / "lenet_user.py").write_text(NET_PY)
    sys.path.insert(0, str(tmp_path))
    try:
        import lenet_user
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lenet_user", None)
    torch.manual_seed(1)
    torch.save(lenet_user.Net().state_dict(), tmp_path / "w.pt")
    out = tmp_path / "lenet"
    rc, text, err = _run(capsys, "--code", f"{tmp_path / 'lenet_user.py'}:Net", "--state-dict",
                         tmp_path / "w.pt", "--out", out, "--samples", 8)
    assert rc == 0, text + err
    m = json.loads((out / "manifest.json").read_text())
    assert [l["kind"] for l in m["layers"]] == ["conv", "maxpool", "conv", "maxpool", "linear",
                                                "linear"]
    assert m["training"]["imported"]["source"]["state_dict"] == "w.pt"
    assert "call F.relu() at 'relu'" in text and "call x.view() at 'view'" in text


def test_relu_after_pool_and_lrn_is_exported():
    # the exporter used to drop a ReLU on maxpool/LRN layers silently
    for kind, extra in (("maxpool", {"k": 2, "stride": 2}),
                        ("lrn", {"size": 3, "alpha": 1e-3, "beta": 0.75, "k": 2.0})):
        layers = [{"kind": kind, "name": "l", "relu": True, **extra}]
        m = OB.layer_model(layers, [{}], [4, 6, 6], 0)
        assert m.graph.node[-1].op_type == "Relu", kind


def test_trap_builtin_alexnet_spec_on_a_model_without_relu_is_refused(tmp_path, capsys):
    ex = _example()
    torch.manual_seed(0)
    torch.save(ex.alexnet(relu=False), tmp_path / "norelu.pt")
    out = tmp_path / "trap"
    rc, text, err = _run(capsys, "--module", tmp_path / "norelu.pt", "--spec", "alexnet-cifar10",
                         "--out", out, "--samples", 4)
    assert rc == 1, text + err
    assert "REFUSED: the package diverges from your model at layer 0 (conv1, conv; your model: " \
           "module 'features.0' (Conv2d))" in text
    assert "spec relu=True, model relu=False" in text
    assert not out.exists() and not Path(str(out) + ".rejected").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["norelu.pt"]
    # --keep-rejected: the files stay, clearly marked and not loadable
    rc, text, _ = _run(capsys, "--module", tmp_path / "norelu.pt", "--spec", "alexnet-cifar10",
                       "--out", out, "--samples", 4, "--keep-rejected")
    rej = Path(str(out) + ".rejected")
    assert rc == 1 and not out.exists() and not (rej / "manifest.json").exists()
    assert "layer 0 (conv1" in (rej / "REJECTED.txt").read_text()
    assert json.loads((rej / "manifest.rejected.json").read_text())["training"]["imported"][
        "result"] == "rejected"
    # the same model without the spec: the package describes the model as it is, and matches
    rc, text, err = _run(capsys, "--module", tmp_path / "norelu.pt", "--out", tmp_path / "ok",
                         "--samples", 4)
    assert rc == 0, text + err
    m = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert len(m["layers"]) == 13 and "relu" not in json.dumps(m["layers"])


def test_builtin_spec_accepted_when_it_describes_the_model(tmp_path, capsys):
    ex = _example()
    torch.manual_seed(0)
    torch.save(ex.AlexNetF().state_dict(), tmp_path / "f.pt")
    rc, text, err = _run(capsys, "--code", f"{MODELS / 'examples' / 'byom_alexnet.py'}:AlexNetF",
                         "--state-dict", tmp_path / "f.pt", "--spec", "alexnet-cifar10",
                         "--out", tmp_path / "alex", "--samples", 4, "--weights", "fp16")
    assert rc == 0, text + err
    assert "note:" not in text
    m = json.loads((tmp_path / "alex" / "manifest.json").read_text())
    assert m["training"]["imported"]["layer_list"] == "alexnet-cifar10"


def test_int8_weights_and_random_inputs_for_another_input_shape(tmp_path, capsys):
    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(4 * 5 * 5, 3, bias=False))
    torch.save(m, tmp_path / "m.pt")
    rc, text, err = _run(capsys, "--module", tmp_path / "m.pt", "--out", tmp_path / "p",
                         "--input-shape", "1,12,12", "--mean", "0.5", "--std", "0.25",
                         "--random-inputs", "--samples", 16, "--weights", "int8", "--no-full")
    assert rc == 0, text + err
    man = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert man["classes"] == ["0", "1", "2"] and man["dataset"] == "unknown"
    assert man["input"]["shape"] == [1, 12, 12] and man["layers"][-1]["params"] == 300
    assert "16 random images" in man["training"]["imported"]["check"]["inputs"]
    assert verify.main(["--no-test-set", str(tmp_path / "p")]) == 0
    # the user's own inputs: float32 as given, uint8 pixels normalised
    x = np.random.RandomState(3).randn(6, 1, 12, 12).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "px.npy", (np.abs(x) * 60).astype(np.uint8))
    for f in ("x.npy", "px.npy"):
        rc, text, err = _run(capsys, "--module", tmp_path / "m.pt", "--out", tmp_path / "p",
                             "--force", "--input-shape", "1,12,12", "--mean", "0.5", "--std",
                             "0.25", "--inputs", tmp_path / f)
        assert rc == 0 and "check: 6 inputs" in text, text + err
    np.save(tmp_path / "bad.npy", x[:, :, :10])
    rc, _, err = _run(capsys, "--module", tmp_path / "m.pt", "--out", tmp_path / "q",
                      "--input-shape", "1,12,12", "--mean", "0.5", "--std", "0.25",
                      "--inputs", tmp_path / "bad.npy")
    assert rc == 2 and "shape [6, 1, 10, 12], expected [N, 1, 12, 12]" in err
    # CIFAR samples do not fit this input
    rc, _, err = _run(capsys, "--module", tmp_path / "m.pt", "--out", tmp_path / "q",
                      "--input-shape", "1,12,12", "--mean", "0.5", "--std", "0.25")
    assert rc == 2 and "--random-inputs" in err


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x + self.conv(x), 1))


@pytest.mark.parametrize("model,message", [
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(900, 10)),
     "module '1' (AvgPool2d) cannot be mapped to a package layer"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, (3, 1)), nn.Flatten(), nn.Linear(3840, 10)),
     "module '0' (Conv2d): kernel_size (3, 1) is not square"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.Sigmoid(), nn.Flatten(),
                           nn.Linear(3600, 10)),
     "module '1' (Sigmoid) cannot be mapped"),
    (Residual, "is not a chain of layers: step 'add' takes ['x', 'conv']"),
])
def test_unmappable_models_are_refused_naming_the_module(tmp_path, capsys, model, message):
    torch.save(model(), tmp_path / "m.pt")
    rc, out, err = _run(capsys, "--module", tmp_path / "m.pt", "--out", tmp_path / "p",
                        "--samples", 2)
    assert rc == 2 and message in err, err
    assert not (tmp_path / "p").exists()


def test_bad_inputs_get_clear_errors(tmp_path, capsys):
    torch.save(_tiny_seq().state_dict(), tmp_path / "sd.pt")
    rc, _, err = _run(capsys, "--state-dict", tmp_path / "sd.pt", "--spec", "alexnet-cifar10",
                      "--out", tmp_path / "p")
    assert rc == 2 and "a state dict alone has no forward pass" in err
    rc, _, err = _run(capsys, "--module", tmp_path / "sd.pt", "--out", tmp_path / "p")
    assert rc == 2 and "holds a dict" in err and "--state-dict" in err
    rc, _, err = _run(capsys, "--module", tmp_path / "missing.pt", "--out", tmp_path / "p")
    assert rc == 2 and "missing.pt: no such file" in err
    torch.save(_tiny_seq(), tmp_path / "seq.pt")
    rc, _, err = _run(capsys, "--module", tmp_path / "seq.pt", "--spec", "alexnet-cifar10",
                      "--out", tmp_path / "p")
    assert rc == 2 and "does not fit the model" in err
    (tmp_path / "notapkg").mkdir()
    (tmp_path / "notapkg" / "keep.txt").write_text("x")
    rc, _, err = _run(capsys, "--module", tmp_path / "seq.pt", "--out", tmp_path / "notapkg",
                      "--force")
    assert rc == 2 and "not a model package" in err and (tmp_path / "notapkg" / "keep.txt").exists()


def test_pickle_of_a_class_that_cannot_be_imported(tmp_path, capsys):
    d = tmp_path / "src"
    d.mkdir()
    (d / "mynet_unimportable.py").write_text(
        "import torch.nn as nn\n\nclass MyNet(nn.Sequential):\n    pass\n")
    sys.path.insert(0, str(d))
    try:
        import mynet_unimportable
        torch.save(mynet_unimportable.MyNet(nn.Conv2d(3, 2, 3), nn.Flatten(),
                                            nn.Linear(1800, 10)), tmp_path / "m.pt")
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("mynet_unimportable", None)
    rc, _, err = _run(capsys, "--module", tmp_path / "m.pt", "--out", tmp_path / "p")
    assert rc == 2 and "cannot be imported here" in err and "--python-path" in err
    rc, text, err = _run(capsys, "--module", tmp_path / "m.pt", "--out", tmp_path / "p",
                         "--python-path", d, "--samples", 2)
    sys.path.remove(str(d.resolve()))
    sys.modules.pop("mynet_unimportable", None)
    assert rc == 0, text + err


def test_module_entry_point_dispatches():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "jmdc_models", *args], cwd=MODELS,
                              capture_output=True, text=True, timeout=120)

    r = run()
    assert r.returncode == 0 and "import" in r.stdout and "verify" in r.stdout
    r = run("import", "--help")
    assert r.returncode == 0 and "--module" in r.stdout and "--state-dict" in r.stdout
    r = run("nonsense")
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_json_spec_with_a_wrong_hyper_parameter_is_refused_at_that_layer(tmp_path, capsys):
    torch.save(_tiny_seq(), tmp_path / "seq.pt")
    spec = [
        {"kind": "conv", "name": "stem", "out": 8, "k": 3, "stride": 1, "pad": 1, "relu": True},
        {"kind": "lrn", "name": "norm", "size": 3, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
        {"kind": "maxpool", "name": "p1", "k": 2, "stride": 2},
        {"kind": "conv", "name": "c2", "out": 12, "k": 3, "stride": 2, "pad": 1, "relu": False,
         "bias": False},
        {"kind": "batchnorm", "name": "b2", "relu": True},
        {"kind": "maxpool", "name": "p2", "k": 2},
        {"kind": "linear", "name": "hidden", "out": 32, "relu": True},
        {"kind": "linear", "name": "logits", "out": 10},
    ]
    (tmp_path / "spec.json").write_text(json.dumps({"layers": spec}))
    rc, text, err = _run(capsys, "--module", tmp_path / "seq.pt", "--spec", tmp_path / "spec.json",
                         "--out", tmp_path / "p", "--samples", 4)
    # alpha 1e-4: LRN is close to the identity on these inputs, so the numbers stay within
    # tolerance; the spec still describes another model, and that refuses it
    assert rc == 1, text + err
    assert "REFUSED: --spec " in text and "describes another model than yours (layer 1 (norm, " \
           "lrn; model: module '2' (LocalResponseNorm)): spec size=3, model size=2)" in text
    assert not (tmp_path / "p").exists()
    spec[1]["alpha"] = 50.0  # now it shows in the numbers too
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    rc, text, err = _run(capsys, "--module", tmp_path / "seq.pt", "--spec", tmp_path / "spec.json",
                         "--out", tmp_path / "p", "--samples", 4)
    assert rc == 1 and "diverges from your model at layer 1 (norm, lrn; your model: module " \
                       "'2' (LocalResponseNorm))" in text
    assert "hint: --spec" in text and "spec alpha=50.0, model alpha=0.0001" in text
    spec[1]["alpha"] = 1e-4
    spec[1]["size"] = 2
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    rc, text, err = _run(capsys, "--module", tmp_path / "seq.pt", "--spec", tmp_path / "spec.json",
                         "--out", tmp_path / "p", "--samples", 4)
    assert rc == 0, text + err
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert [l["name"] for l in m["layers"]][:2] == ["stem", "norm"]
