"""Re-check model packages with ONNX Runtime (numpy + onnx + onnxruntime; no PyTorch).

    cd models && python -m jmdc_models.verify [packages/<name>/ ...]     (default: packages/*/)

Checks, per package and variant:
  1. the manifest follows docs/model-package.md (format, indices, shape chain, relative paths);
  2. the SHA-256 of every listed file;
  3. every ONNX file (layers and full.onnx): opset 17, one float32 input ``x`` and one output ``y``
     whose shapes are ``[N, *shape]`` with a dynamic ``N`` and agree with the manifest;
  4. chained per-layer logits == ``full.onnx`` logits (max abs diff <= 1e-4) on the bundled
     samples (samples/cifar10-test-256.bin; for a package whose input is not 3x32x32, on 16
     random images of its input shape);
  5. if the CIFAR-10 folder exists ($JMDC_CIFAR_DIR, default ../shared/datasets/cifar-10 from the
     repository root): top-1 of the chained layers on the full test set equals the manifest's
     accuracy within 0.1 points. Without it only 1-4 run (it says so).
Exit status 1 if anything failed.
"""

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import PACKAGE_FORMAT, cifar, ortchain

MODELS_DIR = Path(__file__).resolve().parents[1]
SAMPLES = MODELS_DIR / "samples" / "cifar10-test-256.bin"
KINDS = {"conv", "lrn", "maxpool", "batchnorm", "linear"}
TOL_LOGITS = 1e-4
TOL_TOP1 = 0.001  # 0.1 percentage points


class Report:
    def __init__(self):
        self.failures = []

    def fail(self, where, msg):
        self.failures.append(f"{where}: {msg}")
        print(f"  FAIL {where}: {msg}")


def _rel_ok(p):
    return (isinstance(p, str) and p and "\\" not in p and "\0" not in p
            and not p.startswith("/") and ".." not in Path(p).parts
            and any(part not in (".", "") for part in Path(p).parts))


def check_manifest(m, rep, where):
    ok = True

    def bad(msg):
        nonlocal ok
        ok = False
        rep.fail(where, msg)

    if m.get("format") != PACKAGE_FORMAT:
        bad(f"format {m.get('format')!r} != {PACKAGE_FORMAT!r}")
    inp = m.get("input", {})
    if set(inp) != {"name", "shape", "dtype", "layout"}:
        bad(f"input has fields {sorted(inp)}")
    if inp.get("dtype") != "float32" or inp.get("layout") != "NCHW":
        bad("input must be float32 NCHW")
    shape = inp.get("shape", [])
    if len(shape) != 3 or any((not isinstance(d, int)) or d <= 0 for d in shape):
        bad(f"input.shape {shape} must be [C, H, W]")
    n = m.get("normalization", {})
    if set(n) != {"pixel_scale", "mean", "std"} or len(n.get("mean", [])) != len(shape[:1]) * shape[0] \
            or len(n.get("std", [])) != shape[0] or not all(s > 0 for s in n.get("std", [])) \
            or not n.get("pixel_scale", 0) > 0:
        bad(f"bad normalization {n}")
    classes = m.get("classes", [])
    if not classes:
        bad("no classes")
    layers = m.get("layers", [])
    if not layers:
        bad("no layers")
        return False
    for i, l in enumerate(layers):
        if l.get("index") != i:
            bad(f"layers[{i}] has index {l.get('index')}")
        if l.get("kind") not in KINDS:
            bad(f"layers[{i}] kind {l.get('kind')!r}")
        if not l.get("output_shape") or any(d <= 0 for d in l["output_shape"]):
            bad(f"layers[{i}] output_shape {l.get('output_shape')}")
    if layers[-1].get("output_shape") != [len(classes)]:
        bad(f"last layer outputs {layers[-1].get('output_shape')}, expected [{len(classes)}]")
    variants = m.get("variants", [])
    if not variants:
        bad("no variants")
    names, dirs = set(), set()
    for v in variants:
        vw = f"{where} {v.get('name')}"
        if v.get("name") in names or v.get("dir") in dirs:
            bad(f"duplicate variant name/dir {v.get('name')}/{v.get('dir')}")
        names.add(v.get("name"))
        dirs.add(v.get("dir"))
        if not _rel_ok(v.get("dir")):
            bad(f"{vw}: dir {v.get('dir')!r} is not a plain relative path")
        if not (0 < v.get("keep_ratio", 0) <= 1):
            bad(f"{vw}: keep_ratio {v.get('keep_ratio')}")
        vl = v.get("layers", [])
        if len(vl) != len(layers):
            bad(f"{vw}: {len(vl)} layers, the model has {len(layers)}")
        prev = shape
        files = set()
        fm = v.get("full_model")
        if fm is not None:
            if set(fm) != {"file", "sha256"} or not _rel_ok(fm["file"]):
                bad(f"{vw}: bad full_model {fm}")
            files.add(fm.get("file"))
        for i, l in enumerate(vl):
            if l.get("index") != i:
                bad(f"{vw}: layers[{i}] has index {l.get('index')}")
            if not _rel_ok(l.get("file")) or l.get("file") in files:
                bad(f"{vw}: layer {i} file {l.get('file')!r} bad or listed twice")
            files.add(l.get("file"))
            if not re.fullmatch(r"[0-9a-f]{64}", l.get("sha256", "")):
                bad(f"{vw}: layer {i} sha256 is not 64 lowercase hex digits")
            if l.get("input_shape") != prev:
                bad(f"{vw}: layer {i} input_shape {l.get('input_shape')} != previous output {prev}")
            if len(l.get("output_shape", [])) != len(layers[i]["output_shape"]):
                bad(f"{vw}: layer {i} output rank differs from the architecture")
            prev = l.get("output_shape")
        if prev != [len(classes)]:
            bad(f"{vw}: last layer outputs {prev}")
        acc = v.get("accuracy")
        if acc is not None and not (0 <= acc.get("top1", -1) <= 1):
            bad(f"{vw}: accuracy.top1 {acc.get('top1')}")
    return ok


def _dims(vi):
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return out


def check_onnx_file(path, in_shape, out_shape, in_name, out_name, rep, where):
    import onnx

    m = onnx.load(str(path))
    opsets = {o.domain: o.version for o in m.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != 17:
        rep.fail(where, f"opset {opsets}, expected 17")
    g = m.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if [i.name for i in inputs] != [in_name] or [o.name for o in g.output] != [out_name]:
        rep.fail(where, f"inputs {[i.name for i in inputs]} outputs {[o.name for o in g.output]}, "
                        f"expected [{in_name}] / [{out_name}]")
        return
    for vi, shape, what in ((inputs[0], in_shape, "input"), (g.output[0], out_shape, "output")):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            rep.fail(where, f"{what} is not float32")
        dims = _dims(vi)
        if not dims or isinstance(dims[0], int) or dims[1:] != list(shape):
            rep.fail(where, f"{what} shape {dims}, expected [N, *{shape}] with dynamic N")


def read_samples():
    """The bundled samples ``(images, labels)``, or None when the file is not there."""
    return cifar.read_bin(SAMPLES) if SAMPLES.is_file() else None


def _inputs_for(m, samples):
    """``(uint8 images, labels or None)`` for the chained-vs-full check: the bundled samples when
    they have the package's input shape, else 16 seeded random images of that shape."""
    shape = list(m["input"]["shape"])
    if samples is not None and list(samples[0].shape[1:]) == shape:
        return samples
    rng = np.random.RandomState(0)
    return rng.randint(0, 256, size=(16, *shape)).astype(np.uint8), None


def verify_package(pkg, rep, cifar_dir, samples):
    pkg = Path(pkg)
    name = pkg.name
    print(f"== {pkg}")
    try:
        m = ortchain.load_manifest(pkg)
    except Exception as e:  # noqa: BLE001
        rep.fail(name, f"cannot read manifest: {e}")
        return
    if not check_manifest(m, rep, name):
        return
    in_name, out_name = m["input"]["name"], m["output_name"]
    norm = m["normalization"]

    def normalize(x):
        return cifar.normalize(x, norm["mean"], norm["std"], norm["pixel_scale"])

    samples = _inputs_for(m, samples)
    if list(m["input"]["shape"]) != [3, 32, 32]:
        cifar_dir = None  # not a CIFAR-10 input: no test set to measure against
    test = None
    if cifar_dir is not None:
        test = cifar.read_bin(cifar_dir / "cifar-10-batches-bin" / "test_batch.bin")
    results = []
    for v in m["variants"]:
        where = f"{name} {v['name']}"
        vdir = pkg / v["dir"]
        n_fail = len(rep.failures)
        entries = [(l["file"], l["sha256"]) for l in v["layers"]]
        if v.get("full_model"):
            entries.append((v["full_model"]["file"], v["full_model"]["sha256"]))
        for f, h in entries:
            p = vdir / f
            if not p.is_file():
                rep.fail(where, f"missing file {f}")
            elif ortchain.sha256_file(p) != h:
                rep.fail(where, f"SHA-256 mismatch for {f}")
        if len(rep.failures) > n_fail:
            continue
        for l in v["layers"]:
            check_onnx_file(vdir / l["file"], l["input_shape"], l["output_shape"], in_name,
                            out_name, rep, f"{where} {l['file']}")
        if v.get("full_model"):
            check_onnx_file(vdir / v["full_model"]["file"], m["input"]["shape"],
                            v["layers"][-1]["output_shape"], in_name, out_name, rep,
                            f"{where} {v['full_model']['file']}")
        if len(rep.failures) > n_fail:
            continue
        chain = ortchain.Chain(vdir, v, in_name, out_name)
        x = normalize(samples[0])
        chained = chain.run(x)
        if samples[1] is not None:
            sample_top1 = float((chained.argmax(1) == samples[1]).mean())
            line = f"  {v['name']}: hashes/shapes ok; samples top-1 {sample_top1 * 100:.2f} %"
        else:
            line = f"  {v['name']}: hashes/shapes ok; {len(x)} random inputs"
        if v.get("full_model"):
            full = ortchain.session(vdir / v["full_model"]["file"])
            ref = full.run([out_name], {in_name: x})[0]
            diff = float(np.abs(ref - chained).max())
            line += f"; chained vs full max|diff| {diff:.2e}"
            if not diff <= TOL_LOGITS:
                rep.fail(where, f"chained logits differ from full.onnx by {diff:.3g} > {TOL_LOGITS}")
        if test is not None:
            t = time.time()
            acc = ortchain.top1(chain.run, test[0], test[1], normalize)
            line += f"; test top-1 {acc * 100:.2f} % ({len(test[1])} images, {time.time() - t:.1f}s)"
            man = v.get("accuracy")
            if man is None:
                rep.fail(where, "manifest has no accuracy (run jmdc_models.finalize)")
            else:
                line += f", manifest {man['top1'] * 100:.2f} %"
                if man.get("images") not in (None, len(test[1])):
                    rep.fail(where, f"manifest accuracy is over {man.get('images')} images")
                if abs(acc - man["top1"]) > TOL_TOP1 + 1e-9:
                    rep.fail(where, f"top-1 {acc:.4f} != manifest {man['top1']:.4f} (+-0.1 points)")
        elif v.get("accuracy"):
            line += f"; manifest top-1 {v['accuracy']['top1'] * 100:.2f} % (not re-measured)"
        print(line, flush=True)
        results.append(v["name"])
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("packages", nargs="*", help="package folders (default: models/packages/*/)")
    p.add_argument("--no-test-set", action="store_true",
                   help="skip the full test set even if it is present")
    args = p.parse_args(argv)
    pkgs = [Path(x) for x in args.packages] or sorted(
        d for d in (MODELS_DIR / "packages").glob("*/") if (d / "manifest.json").is_file())
    rep = Report()
    if not pkgs:
        print("no packages given or found", file=sys.stderr)
        return 1
    cdir = cifar.default_cifar_dir()
    test_bin = cdir / "cifar-10-batches-bin" / "test_batch.bin"
    if args.no_test_set:
        cdir = None
        print("full test set skipped (--no-test-set): checking hashes, shapes and "
              "chained-vs-full on the bundled samples only")
    elif not test_bin.is_file():
        print(f"CIFAR-10 not found at {cdir} (set JMDC_CIFAR_DIR): checking hashes, shapes and "
              f"chained-vs-full on the bundled samples only; accuracies are not re-measured")
        cdir = None
    samples = read_samples()
    for pkg in pkgs:
        verify_package(pkg, rep, cdir, samples)
    if rep.failures:
        print(f"\n{len(rep.failures)} failure(s)")
        return 1
    print("\nall model packages OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
