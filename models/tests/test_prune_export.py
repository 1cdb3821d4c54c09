import numpy as np
import onnx
import pytest
import torch

from jmdc_models import export, nets, ortchain, zoo
from jmdc_models import spec as S

MINI_BN = [
    {"kind": "conv", "name": "conv1", "out": 8, "k": 3, "stride": 1, "pad": 1, "relu": False},
    {"kind": "batchnorm", "name": "bn1", "relu": True},
    {"kind": "maxpool", "name": "pool1", "k": 2, "stride": 2},
    {"kind": "conv", "name": "conv2", "out": 12, "k": 3, "stride": 1, "pad": 1, "relu": False},
    {"kind": "batchnorm", "name": "bn2", "relu": True},
    {"kind": "maxpool", "name": "pool2", "k": 2, "stride": 2},
    {"kind": "linear", "name": "fc1", "out": 16, "relu": True},
    {"kind": "linear", "name": "fc2", "out": 10, "relu": False},
]


def _randomize_bn(net):
    g = torch.Generator().manual_seed(3)
    for layer in net.layers:
        if layer.kind == "batchnorm":
            c = layer.op.num_features
            layer.op.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            layer.op.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            layer.op.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            layer.op.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


def _random_keep(layers, ratio, seed=0):
    rng = np.random.RandomState(seed)
    return {i: sorted(rng.choice(layers[i]["out"], S.keep_count(layers[i]["out"], ratio),
                                 replace=False).tolist()) for i in S.conv_indices(layers)}


def test_zoo_shapes():
    layers, shape, classes = zoo.get("alexnet-cifar10")
    info = S.infer(layers, shape)
    assert len(layers) == 13
    assert [i["output_shape"][1] for i in info[:10]] == [30, 30, 14, 12, 12, 5, 5, 5, 5, 2]
    assert info[10]["input_shape"] == [128, 2, 2] and info[12]["output_shape"] == [10]
    assert info[0]["macs"] == 4320000 and info[0]["params"] == 4864
    v = zoo.get("vgg16-cifar10")[0]
    assert len(v) == 34 and sum(l["kind"] == "conv" for l in v) == 13
    assert sum(l["kind"] == "maxpool" for l in v) == 5
    assert S.infer(v, shape)[30]["output_shape"] == [512, 1, 1]


def test_keep_count_rounding():
    assert S.keep_count(64, 0.75) == 48 and S.keep_count(3, 0.25) == 1 and S.keep_count(1, 0.25) == 1


def test_prune_all_channels_is_identity():
    torch.manual_seed(0)
    layers, shape, _ = zoo.get("alexnet-cifar10")
    net = nets.build(layers, shape).eval()
    full = {i: list(range(layers[i]["out"])) for i in S.conv_indices(layers)}
    same = nets.prune(net, full).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), same(x), atol=1e-6)


@pytest.mark.parametrize("model", ["alexnet-cifar10", "mini-bn"])
def test_pruned_export_chain_equals_full_and_torch(tmp_path, model):
    torch.manual_seed(0)
    if model == "mini-bn":
        layers, shape = MINI_BN, [3, 16, 16]
    else:
        layers, shape, _ = zoo.get(model)
    net = nets.build(layers, shape).eval()
    _randomize_bn(net)
    for ratio in (0.5, 0.25):
        keep = _random_keep(layers, ratio)
        p = nets.prune(net, keep).eval()
        info = S.infer(p.layer_specs, shape)
        for ci, kept in keep.items():
            assert info[ci]["output_shape"][0] == len(kept)
        x = torch.randn(5, *shape)
        with torch.no_grad():
            ref = p(x).numpy()
        assert ref.shape == (5, 10)
        d = tmp_path / f"{model}-{ratio}"
        entry = export.export_variant(p.layer_specs, nets.numpy_weights(p), shape, d)
        v = {"layers": entry["layers"]}
        chained = ortchain.Chain(d, v).run(x.numpy())
        full = ortchain.session(d / "full.onnx").run(["y"], {"x": x.numpy()})[0]
        assert np.abs(chained - full).max() <= 1e-4
        np.testing.assert_allclose(full, ref, rtol=1e-4, atol=1e-4)
        for l in entry["layers"]:
            assert l["sha256"] == ortchain.sha256_file(d / l["file"])


def test_pruning_slices_first_linear_by_channel():
    # a pruned conv channel removes exactly its H*W input features of the first linear layer
    torch.manual_seed(0)
    layers, shape = MINI_BN, [3, 16, 16]
    net = nets.build(layers, shape).eval()
    keep = {0: [1, 2, 5], 3: [0, 4, 7, 11]}
    p = nets.prune(net, keep)
    w_old = net.layers[6].op.weight.detach()
    w_new = p.layers[6].op.weight.detach()
    assert w_new.shape == (16, 4 * 16)
    for j, c in enumerate(keep[3]):
        assert torch.equal(w_new[:, j * 16:(j + 1) * 16], w_old[:, c * 16:(c + 1) * 16])
    assert torch.equal(p.layers[3].op.weight.detach(), net.layers[3].op.weight.detach()[keep[3]][:, keep[0]])
    assert torch.equal(p.layers[4].op.running_mean, net.layers[4].op.running_mean[keep[3]])


def test_exporter_names_shapes_opset(tmp_path):
    layers, shape, _ = zoo.get("alexnet-cifar10")
    net = nets.build(layers, shape)
    entry = export.export_variant(layers, nets.numpy_weights(net), shape, tmp_path)
    assert [l["file"] for l in entry["layers"]] == [f"layer{i:02d}.onnx" for i in range(13)]
    for l in entry["layers"] + [{"file": "full.onnx", "input_shape": shape, "output_shape": [10]}]:
        m = onnx.load(str(tmp_path / l["file"]))
        assert m.opset_import[0].version == 17
        assert [i.name for i in m.graph.input] == ["x"] and [o.name for o in m.graph.output] == ["y"]
        ops = {n.op_type for n in m.graph.node}
        assert not ops & {"Dropout", "BatchNormalization", "LRN", "Pow"}
        for vi, want in ((m.graph.input[0], l["input_shape"]), (m.graph.output[0], l["output_shape"])):
            dims = vi.type.tensor_type.shape.dim
            assert dims[0].dim_param == "N"
            assert [d.dim_value for d in dims[1:]] == want
        s = ortchain.session(tmp_path / l["file"])
        for n in (1, 3):
            y = s.run(["y"], {"x": np.zeros((n, *l["input_shape"]), np.float32)})[0]
            assert list(y.shape) == [n, *l["output_shape"]]


def test_gates_attach_after_activation():
    layers = zoo.get("vgg16-cifar10")[0]
    net = nets.build(layers, [3, 32, 32])
    gates = nets.attach_gates(net)
    assert len(gates) == 13 and all(layers[p]["kind"] == "batchnorm" for p in gates.values())
    a = nets.build(*zoo.get("alexnet-cifar10")[:2])
    g2 = nets.attach_gates(a)
    assert sorted(g2.values()) == [0, 3, 6, 7, 8]


def test_quantize_int8_per_output_channel():
    from jmdc_models import onnx_build as OB
    w = np.random.RandomState(0).randn(6, 4, 3, 3).astype(np.float32)
    w[2] *= 100.0  # one channel with a far larger range must not coarsen the others
    w[4] = 0.0  # an all-zero channel gets scale 1 and stays zero
    q, scale = OB.quantize_int8(w)
    assert q.dtype == np.int8 and scale.shape == (6, 1, 1, 1) and np.abs(q).max() <= 127
    err = np.abs(q * scale - w)
    assert (err <= scale / 2 + 1e-6).all()
    assert scale[4, 0, 0, 0] == 1.0 and not q[4].any()
    assert scale[0, 0, 0, 0] < scale[2, 0, 0, 0] / 50


@pytest.mark.parametrize("storage", ["fp16", "int8"])
def test_compact_weight_storage_runs_like_float32(tmp_path, storage):
    torch.manual_seed(0)
    layers, shape = MINI_BN, [3, 16, 16]
    net = nets.build(layers, shape).eval()
    _randomize_bn(net)
    weights = nets.numpy_weights(net)
    ref_dir, dir_ = tmp_path / "fp32", tmp_path / storage
    ref = export.export_variant(layers, weights, shape, ref_dir)
    entry = export.export_variant(layers, weights, shape, dir_, storage=storage, full=False)
    assert "full_model" not in entry and not (dir_ / "full.onnx").exists()
    size = lambda d: sum((d / l["file"]).stat().st_size for l in ref["layers"])  # noqa: E731
    assert size(dir_) < size(ref_dir) * (0.6 if storage == "fp16" else 0.4)
    for l in entry["layers"]:
        m = onnx.load(str(dir_ / l["file"]))
        kinds = {t.data_type for t in m.graph.initializer}
        if layers[l["index"]]["kind"] in ("conv", "linear"):
            want = onnx.TensorProto.FLOAT16 if storage == "fp16" else onnx.TensorProto.INT8
            assert want in kinds
    x = np.random.RandomState(1).randn(4, *shape).astype(np.float32)
    a = ortchain.Chain(ref_dir, {"layers": ref["layers"]}).run(x)
    b = ortchain.Chain(dir_, {"layers": entry["layers"]}).run(x)
    tol = 0.01 if storage == "fp16" else 0.05
    assert np.abs(a - b).max() <= tol * np.abs(a).max()
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.75
