"""Re-export a package from the checkpoints of a pipeline run (fallback when the ONNX export on
the training machine failed, or to rebuild the ONNX files with this machine's onnx):

    python -m jmdc_models.export_cli RUN_DIR packages/<name>
    python -m jmdc_models.finalize packages/<name>

RUN_DIR is a pipeline ``--out`` folder (``weights/keepNNN.pt`` + ``training.json``).
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from . import export, nets, zoo
from . import onnx_build as OB


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("package")
    p.add_argument("--description", default="")
    p.add_argument("--weights", default="fp32", choices=OB.STORAGES,
                   help="weight storage in the ONNX files (see jmdc_models.onnx_build); fp16 and "
                        "int8 are converted to float32 by ONNX Runtime when a session is created")
    p.add_argument("--no-full", action="store_true",
                   help="write only the per-layer files (no full.onnx; halves the package)")
    a = p.parse_args(argv)
    run = Path(a.run_dir)
    ckpts = sorted((run / "weights").glob("keep*.pt"), reverse=True)
    if not ckpts:
        print(f"no checkpoints in {run / 'weights'}", file=sys.stderr)
        return 1
    training = json.loads((run / "training.json").read_text()) if (run / "training.json").is_file() else {}
    training["export"] = {
        "weight_storage": {"fp32": "float32",
                           "fp16": "float16 + Cast (folded to float32 by ONNX Runtime at load)",
                           "int8": "int8 per output channel, symmetric, + Cast and Mul by a "
                                   "float32 scale (folded to float32 by ONNX Runtime at load)"
                           }[a.weights],
        "applies_to": "conv and linear weights (biases, folded BN shifts stay float32)",
        "full_model": not a.no_full,
    }
    pkg = Path(a.package)
    manifest = None
    for c in ckpts:
        ck = torch.load(c, map_location="cpu")
        layers, input_shape, classes = zoo.get(ck["model"])
        if manifest is None:
            old = pkg / "manifest.json"
            desc = a.description
            if not desc and old.is_file():
                desc = json.loads(old.read_text()).get("description", "")
            manifest = export.manifest_skeleton(
                ck["model"], layers, input_shape, ck["classes"], ck["mean"], ck["std"],
                zoo.ZOO[ck["model"]]["dataset"], desc or f"{ck['model']} (re-exported)", training)
            if pkg.is_dir():
                for d in pkg.glob("keep*"):
                    shutil.rmtree(d)
            pkg.mkdir(parents=True, exist_ok=True)
        net = nets.build(ck["layers"], ck["input_shape"])
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in ck["state_dict"].items()})
        name = export.variant_dir_name(ck["keep_ratio"])
        entry = export.export_variant(net.layer_specs, nets.numpy_weights(net), input_shape,
                                      pkg / name, storage=a.weights, full=not a.no_full)
        export.set_variant(manifest, ck["keep_ratio"], entry)
        print(f"exported {name} from {c}")
    (pkg / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {pkg / 'manifest.json'} (draft: run jmdc_models.finalize next)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
