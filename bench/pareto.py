#!/usr/bin/env python3
"""Bytes per frame against top-1 for every split of a package: the Pareto fronts before and after
the entropy stage (issue 14, part 5), against JPEG and PNG of the input image.

    python3 bench/pareto.py [--model alexnet-cifar10] [--out docs/figures]

Reads the package's `calibration.json` (every number is a measured one: top-1 on the table's images,
bytes = the codec's exact size for `intN`/`f16`/`f32`, the measured mean for `intNac` and JPEG). PNG
sizes are measured here on the same images (Pillow, `optimize=True`), read from the CIFAR-10 test
batch in `../shared` (or the 256 bundled samples when it is absent; the output says which).

Writes `<out>/pareto-<model>.svg` and prints a Markdown table per split: the smallest request
within 1 point of the unsplit model with fixed-width codes ("before") and with the entropy stage
("after"), in bytes (codec header included, protocol header not) and bits per transmitted value.
Needs Pillow only for the PNG column (`pip install pillow`).
"""
import io
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST_BATCH = REPO.parent / "shared/datasets/cifar-10/cifar-10-batches-bin/test_batch.bin"
SAMPLES = REPO / "models/samples/cifar10-test-256.bin"
RECORD = 1 + 3072


def kept_values(shape, keep):
    """Values the codec sends (docs/codec.md §1): C·k for rank 3, every element otherwise."""
    if len(shape) == 3:
        c, h, w = shape
        hw = h * w
        k = 1 if keep <= 0 else min(hw, max(1, math.ceil(keep * hw * (1 - 2**-23))))
        return c * k, (k < hw) * math.ceil(hw / 8)
    n = 1
    for d in shape:
        n *= d
    return n, 0


def png_mean_bytes(n):
    try:
        from PIL import Image
    except ImportError:
        return None, "Pillow not installed"
    path = TEST_BATCH if TEST_BATCH.exists() else SAMPLES
    data = path.read_bytes()
    n = min(n, len(data) // RECORD)
    total = 0
    for i in range(n):
        px = data[i * RECORD + 1:(i + 1) * RECORD]
        img = Image.frombytes("RGB", (32, 32), bytes(px[j // 3 + (j % 3) * 1024] for j in range(3072)))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        total += len(buf.getvalue())
    return total / n, f"{n} images of {path.name}"


def front(points):
    """Pareto front (min bytes, max top-1) of (bytes, top1, label) points, by bytes ascending."""
    out = []
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or p[1] > out[-1][1]:
            out.append(p)
    return out


def svg(path, model, series, refs, unsplit):
    w, h, ml, mr, mt, mb = 760, 440, 60, 20, 30, 50
    xs = [p[0] for s in series.values() for p in s] + [r[1] for r in refs]
    lo, hi = math.log10(max(16, min(xs))), math.log10(max(xs) * 1.1)
    ys = [p[1] for s in series.values() for p in s]
    ylo, yhi = max(0.0, min(ys) - 0.01), max(ys) + 0.01

    def x(b):
        return ml + (math.log10(b) - lo) / (hi - lo) * (w - ml - mr)

    def y(t):
        return mt + (yhi - t) / (yhi - ylo) * (h - mt - mb)

    colours = {"fixed-width codes (before)": "#888888", "entropy-coded (after)": "#1f77b4"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{ml}" y="18" font-size="14">{model}: bytes per frame vs top-1, Pareto fronts over every split, ρ, variant</text>']
    for e in range(int(lo), int(hi) + 1):
        for m in (1, 2, 5):
            b = m * 10**e
            if lo <= math.log10(b) <= hi:
                out.append(f'<line x1="{x(b):.1f}" y1="{mt}" x2="{x(b):.1f}" y2="{h - mb}" stroke="#eee"/>')
                out.append(f'<text x="{x(b):.1f}" y="{h - mb + 15}" text-anchor="middle">{b}</text>')
    t = math.floor(ylo * 100)
    while t <= yhi * 100:
        out.append(f'<line x1="{ml}" y1="{y(t / 100):.1f}" x2="{w - mr}" y2="{y(t / 100):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{ml - 5}" y="{y(t / 100) + 4:.1f}" text-anchor="end">{t} %</text>')
        t += 2
    out.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 12}" text-anchor="middle">bytes per frame (log scale; codec header included)</text>')
    out.append(f'<line x1="{ml}" y1="{y(unsplit - 0.01):.1f}" x2="{w - mr}" y2="{y(unsplit - 0.01):.1f}" stroke="#d62728" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{w - mr - 4}" y="{y(unsplit - 0.01) - 4:.1f}" text-anchor="end" fill="#d62728">unsplit − 1 point</text>')
    for i, (name, pts) in enumerate(series.items()):
        c = colours.get(name, "#2ca02c")
        path_d = " ".join(f"{'M' if j == 0 else 'L'}{x(b):.1f},{y(t1):.1f}" for j, (b, t1, _) in enumerate(pts))
        out.append(f'<path d="{path_d}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        for b, t1, _ in pts:
            out.append(f'<circle cx="{x(b):.1f}" cy="{y(t1):.1f}" r="2.5" fill="{c}"/>')
        out.append(f'<text x="{ml + 10}" y="{mt + 16 + 16 * i}" fill="{c}">● {name}</text>')
    for name, b, t1 in refs:
        out.append(f'<rect x="{x(b) - 3:.1f}" y="{y(t1) - 3:.1f}" width="6" height="6" fill="#ff7f0e"/>')
        out.append(f'<text x="{x(b) + 5:.1f}" y="{y(t1) - 5:.1f}" fill="#ff7f0e">{name}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main():
    args = sys.argv[1:]
    model, out_dir = "alexnet-cifar10", REPO / "docs/figures"
    while args:
        if len(args) >= 2 and args[0] == "--model":
            model = args[1]
        elif len(args) >= 2 and args[0] == "--out":
            out_dir = Path(args[1])
        else:
            print(f"usage: {sys.argv[0]} [--model NAME] [--out DIR]", file=sys.stderr)
            return 2
        args = args[2:]
    pkg = REPO / "models/packages" / model
    table = json.loads((pkg / "calibration.json").read_text())
    manifest = json.loads((pkg / "manifest.json").read_text())
    shapes = {v["name"]: [l["output_shape"] for l in v["layers"]] for v in manifest["variants"]}
    n_images = table["dataset"]["images"]
    unsplit = max(e["top1"] for e in table["entries"] if e["variant"] == "keep100" and e["codec"] == "none")
    inner = [e for e in table["entries"] if e["codec"].startswith("int") or e["codec"] in ("f16", "f32")]
    coded = [e for e in inner if e["codec"].endswith("ac")]
    fixed = [e for e in inner if not e["codec"].endswith("ac")]
    if not coded:
        print(f"{pkg / 'calibration.json'} has no entropy-coded (intNac) entries", file=sys.stderr)
        return 1

    def label(e):
        return f"{e['variant']} split {e['split']} ρ {e['keep_ratio']:g} {e['codec']}"

    def bits_per_value(e):
        shape = shapes[e["variant"]][e["split"] - 1]
        n, mask = kept_values(shape, e["keep_ratio"])
        header = 24 + 4 * len(shape)
        return 8 * (e["bytes"] - header - mask) / n

    print(f"Model `{model}`, table of {n_images} images (CIFAR-10 (JPEG copy)); unsplit keep100 top-1 "
          f"{unsplit * 100:.2f} %. Per split, the smallest request within 1 point of it "
          f"(≥ {(unsplit - 0.01) * 100:.2f} %), bytes with the 24 + 4·rank B codec header, bits per "
          "transmitted value without header and mask:\n")
    print("| split | tensor (keep100) | before: plan | bytes | bit/value | after: plan | bytes | bit/value | after ÷ before |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    splits = sorted({e["split"] for e in inner})
    for s in splits:
        def best(entries):
            ok = [e for e in entries if e["split"] == s and e["top1"] >= unsplit - 0.01 - 1e-12]
            return min(ok, key=lambda e: (e["bytes"], -e["top1"])) if ok else None
        b, a = best(fixed), best(fixed + coded)
        shape = "×".join(map(str, shapes["keep100"][s - 1]))
        cells = []
        for e in (b, a):
            cells += ["–", "–", "–"] if e is None else [
                f"{e['variant']} ρ {e['keep_ratio']:g} {e['codec']} ({e['top1'] * 100:.1f} %)",
                str(e["bytes"]), f"{bits_per_value(e):.2f}"]
        ratio = f"{a['bytes'] / b['bytes']:.2f}" if a and b else "–"
        print(f"| {s} | {shape} | " + " | ".join(cells) + f" | {ratio} |")

    refs = []
    for e in table["entries"]:
        if e["variant"] == "keep100" and e["split"] == 0 and e["codec"].startswith("jpeg"):
            refs.append((e["codec"].replace("jpeg", "JPEG q"), e["bytes"], e["top1"]))
    png, source = png_mean_bytes(n_images)
    if png is not None:
        refs.append(("PNG", png, unsplit))
    print(f"\nInput image for comparison (cloud-only): "
          + ", ".join(f"{n} {b:.0f} B ({t * 100:.1f} %)" for n, b, t in refs)
          + f"; raw 3,072 B. PNG measured on {source}.")
    series = {
        "fixed-width codes (before)": front([(e["bytes"], e["top1"], label(e)) for e in fixed]),
        "entropy-coded (after)": front([(e["bytes"], e["top1"], label(e)) for e in fixed + coded]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"pareto-{model}.svg"
    svg(path, model, series, refs, unsplit)
    print(f"\nFigure: `{path.relative_to(REPO) if path.is_relative_to(REPO) else path}`. Fronts over every split, ρ and variant:\n")
    print("| front | points | smallest within 1 point | bytes |")
    print("| --- | --- | --- | --- |")
    for name, pts in series.items():
        ok = [p for p in pts if p[1] >= unsplit - 0.01 - 1e-12]
        first = ok[0] if ok else None
        print(f"| {name} | {len(pts)} | {first[2] if first else '–'} ({first[1] * 100:.1f} %) | {first[0] if first else '–'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
