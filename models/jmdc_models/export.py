"""Writes a variant folder (per-layer ONNX + full.onnx) and the manifest entries for it."""

import hashlib
from pathlib import Path

from . import PACKAGE_FORMAT
from . import onnx_build as OB
from . import spec as S


def variant_dir_name(ratio):
    return f"keep{int(round(ratio * 100)):03d}"


def export_variant(layers, weights, input_shape, out_dir, fold_bn=True, storage="fp32",
                   full=True):
    """Writes ``layerNN.onnx`` (+ ``full.onnx`` when ``full``) into ``out_dir`` with weights in
    ``storage`` (see ``onnx_build``); returns the manifest variant entry (without
    name/keep_ratio/dir/accuracy)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = S.infer(layers, input_shape)
    entries = []
    for i in range(len(layers)):
        fname = f"layer{i:02d}.onnx"
        data = OB.save(OB.layer_model(layers, weights, input_shape, i, fold_bn, storage),
                       out / fname)
        entries.append({"index": i, "file": fname, "sha256": hashlib.sha256(data).hexdigest(),
                        "input_shape": info[i]["input_shape"],
                        "output_shape": info[i]["output_shape"],
                        "macs": info[i]["macs"], "params": info[i]["params"]})
    if not full:
        stale = out / "full.onnx"
        if stale.exists():
            stale.unlink()
        return {"layers": entries}
    data = OB.save(OB.full_model(layers, weights, input_shape, fold_bn, storage),
                   out / "full.onnx")
    return {"full_model": {"file": "full.onnx", "sha256": hashlib.sha256(data).hexdigest()},
            "layers": entries}


def manifest_skeleton(name, layers, input_shape, classes, mean, std, dataset, description,
                      training):
    info = S.infer(layers, input_shape)
    return {
        "format": PACKAGE_FORMAT,
        "name": name,
        "description": description,
        "dataset": dataset,
        "input": {"name": OB.INPUT, "shape": list(input_shape), "dtype": "float32",
                  "layout": "NCHW"},
        "output_name": OB.OUTPUT,
        "normalization": {"pixel_scale": 255.0, "mean": [round(m, 6) for m in mean],
                          "std": [round(s, 6) for s in std]},
        "classes": list(classes),
        "layers": [{"index": i, "name": l["name"], "kind": l["kind"],
                    "output_shape": inf["output_shape"], "macs": inf["macs"],
                    "params": inf["params"]} for i, (l, inf) in enumerate(zip(layers, info))],
        "variants": [],
        "training": training,
    }


def set_variant(manifest, ratio, entry):
    """Inserts or replaces a variant entry, keeping variants sorted by decreasing keep ratio."""
    name = variant_dir_name(ratio)
    v = {"name": name, "keep_ratio": float(ratio), "dir": name, **entry}
    vs = [x for x in manifest["variants"] if x["name"] != name] + [v]
    vs.sort(key=lambda x: -x["keep_ratio"])
    manifest["variants"] = vs
    return v
