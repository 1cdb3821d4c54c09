"""jmdc model tooling: train, prune (attention-based channel selection), export and verify
per-layer ONNX model packages (see models/README.md and docs/model-package.md).

Modules that need only numpy/onnx/onnxruntime (no PyTorch): ``cifar``, ``spec``, ``onnx_build``,
``ortchain``, ``finalize``, ``verify``, ``zoo``. ``python -m jmdc_models COMMAND`` (``__main__``)
dispatches to the commands; ``import`` (``import_cli``) loads PyTorch only when it runs.
"""

PACKAGE_FORMAT = "jmdc-model-package/1"
