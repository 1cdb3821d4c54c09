import json

import torch

from jmdc_models import export, nets, verify, zoo
from jmdc_models import spec as S


def _package(tmp_path):
    torch.manual_seed(0)
    layers, shape, classes = zoo.get("alexnet-cifar10")
    net = nets.build(layers, shape).eval()
    m = export.manifest_skeleton("alexnet-cifar10", layers, shape, classes, [0.49, 0.48, 0.45],
                                 [0.25, 0.24, 0.26], "CIFAR-10 (JPEG copy)", "test", {"seed": 0})
    pkg = tmp_path / "alexnet-cifar10"
    for r in (1.0, 0.5):
        keep = {i: list(range(S.keep_count(layers[i]["out"], r))) for i in S.conv_indices(layers)}
        p = nets.prune(net, keep)
        e = export.export_variant(p.layer_specs, nets.numpy_weights(p), shape,
                                  pkg / export.variant_dir_name(r))
        export.set_variant(m, r, e)
    (pkg / "manifest.json").write_text(json.dumps(m))
    return pkg


def test_verify_accepts_good_and_rejects_corrupt_package(tmp_path, capsys):
    pkg = _package(tmp_path)
    assert verify.main(["--no-test-set", str(pkg)]) == 0
    f = pkg / "keep050" / "layer03.onnx"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    assert verify.main(["--no-test-set", str(pkg)]) == 1
    assert "SHA-256 mismatch" in capsys.readouterr().out


def test_verify_rejects_broken_shape_chain(tmp_path):
    pkg = _package(tmp_path)
    m = json.loads((pkg / "manifest.json").read_text())
    m["variants"][1]["layers"][4]["input_shape"] = [31, 12, 12]
    (pkg / "manifest.json").write_text(json.dumps(m))
    assert verify.main(["--no-test-set", str(pkg)]) == 1
