import numpy as np
import torch

from jmdc_models import onnx_build as OB
from jmdc_models import ortchain
from jmdc_models.nets import lrn_primitive


def _ref(x, size, alpha, beta, k):
    return torch.nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)(x)


def test_torch_primitive_matches_local_response_norm():
    torch.manual_seed(0)
    for size in (1, 2, 3, 4, 5):
        for beta in (0.75, 0.5):
            x = torch.randn(3, 7, 5, 4) * 20  # large values so the normaliser matters
            ref = _ref(x, size, 1e-3, beta, 2.0)
            got = lrn_primitive(x, size, 1e-3, beta, 2.0)
            assert torch.allclose(ref, got, rtol=1e-5, atol=1e-6), (size, beta)


def test_onnx_lrn_matches_local_response_norm(tmp_path):
    torch.manual_seed(1)
    for size in (2, 3, 5):
        layers = [{"kind": "lrn", "name": "lrn", "size": size, "alpha": 1e-2, "beta": 0.75,
                   "k": 2.0}]
        m = OB.layer_model(layers, [{}], [6, 4, 4], 0)
        ops = {n.op_type for n in m.graph.node}
        assert "LRN" not in ops and "Pow" not in ops
        p = tmp_path / f"lrn{size}.onnx"
        OB.save(m, p)
        x = (torch.randn(5, 6, 4, 4) * 10).float()
        ref = _ref(x, size, 1e-2, 0.75, 2.0).numpy()
        got = ortchain.session(p).run(["y"], {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_alexnet_lrn_layer_matches_torch(tmp_path):
    from jmdc_models import zoo

    layers, _, _ = zoo.get("alexnet-cifar10")
    m = OB.layer_model(layers, [{} for _ in layers], [3, 32, 32], 1)
    OB.save(m, tmp_path / "l1.onnx")
    x = torch.relu(torch.randn(4, 64, 30, 30) * 30)
    ref = torch.nn.LocalResponseNorm(2, alpha=1e-4, beta=0.75, k=2.0)(x).numpy()
    got = ortchain.session(tmp_path / "l1.onnx").run(["y"], {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
