"""The model zoo: name -> (layer list, input shape, classes)."""

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def alexnet_cifar10():
    """AlexNet for CIFAR-10 as in the original JMDC code (13 layers, ReLU inside conv/FC)."""
    lrn = {"size": 2, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
    return [
        {"kind": "conv", "name": "conv1", "out": 64, "k": 5, "stride": 1, "pad": 1, "relu": True},
        {"kind": "lrn", "name": "lrn1", **lrn},
        {"kind": "maxpool", "name": "pool1", "k": 3, "stride": 2},
        {"kind": "conv", "name": "conv2", "out": 64, "k": 5, "stride": 1, "pad": 1, "relu": True},
        {"kind": "lrn", "name": "lrn2", **lrn},
        {"kind": "maxpool", "name": "pool2", "k": 3, "stride": 2},
        {"kind": "conv", "name": "conv3", "out": 128, "k": 3, "stride": 1, "pad": 1, "relu": True},
        {"kind": "conv", "name": "conv4", "out": 128, "k": 3, "stride": 1, "pad": 1, "relu": True},
        {"kind": "conv", "name": "conv5", "out": 128, "k": 3, "stride": 1, "pad": 1, "relu": True},
        {"kind": "maxpool", "name": "pool3", "k": 3, "stride": 2},
        {"kind": "linear", "name": "fc1", "out": 384, "relu": True},
        {"kind": "linear", "name": "fc2", "out": 192, "relu": True},
        {"kind": "linear", "name": "fc3", "out": 10, "relu": False},
    ]


def vgg16_cifar10():
    """VGG16-BN for CIFAR-10: 13 x (conv3x3 pad1, BN+ReLU) + 5 maxpools = 31 feature layers,
    then 512-512-10 classifier = 34 layers."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, n_conv, n_pool = [], 0, 0
    for v in cfg:
        if v == "M":
            n_pool += 1
            layers.append({"kind": "maxpool", "name": f"pool{n_pool}", "k": 2, "stride": 2})
        else:
            n_conv += 1
            layers.append({"kind": "conv", "name": f"conv{n_conv}", "out": v, "k": 3, "stride": 1,
                           "pad": 1, "relu": False})
            layers.append({"kind": "batchnorm", "name": f"bn{n_conv}", "relu": True})
    layers += [
        {"kind": "linear", "name": "fc1", "out": 512, "relu": True},
        {"kind": "linear", "name": "fc2", "out": 512, "relu": True},
        {"kind": "linear", "name": "fc3", "out": 10, "relu": False},
    ]
    return layers


ZOO = {
    "alexnet-cifar10": {"layers": alexnet_cifar10, "input_shape": [3, 32, 32],
                        "classes": CIFAR10_CLASSES, "dataset": "CIFAR-10 (JPEG copy)"},
    "vgg16-cifar10": {"layers": vgg16_cifar10, "input_shape": [3, 32, 32],
                      "classes": CIFAR10_CLASSES, "dataset": "CIFAR-10 (JPEG copy)"},
}


def get(name):
    if name not in ZOO:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(ZOO))}")
    z = ZOO[name]
    return z["layers"](), list(z["input_shape"]), list(z["classes"])
