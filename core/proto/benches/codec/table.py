#!/usr/bin/env python3
"""Old → new throughput tables (GB/s = 1e9 bytes of f32 per second) from the last
`cargo bench -p jmdc-proto --bench codec` run, read from criterion's sample files.

    python3 core/proto/benches/codec/table.py [target/criterion]

Prints two Markdown tables: the median and the fastest of the samples of each case (criterion
prints GiB/s and a mean; on a shared machine the fastest sample is the steadier figure).
"""
import json
import os
import statistics
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
rows = {}
for dirpath, _dirs, files in os.walk(root):
    if not (dirpath.endswith("/new") and "sample.json" in files and "benchmark.json" in files):
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        bench = json.load(f)
    group = bench["group_id"]
    if not group.startswith(("encode/", "decode/")):
        continue
    with open(os.path.join(dirpath, "sample.json")) as f:
        sample = json.load(f)
    per_iter_ns = [t / i for t, i in zip(sample["times"], sample["iters"])]
    n = bench["throughput"]["Bytes"]
    rows.setdefault(group, {}).setdefault(bench["value_str"], {})[bench["function_id"]] = (
        n / statistics.median(per_iter_ns),
        n / min(per_iter_ns),
    )

shapes = ["64x8x8", "192x7x7", "64x14x14", "256x28x28"]
for idx, title in [(0, "median"), (1, "fastest sample")]:
    print(f"{title}, old → new, GB/s of f32\n")
    print("| | " + " | ".join(s.replace("x", "×") for s in shapes) + " |")
    print("| --- |" + " ---: |" * len(shapes))
    for op in ["encode", "decode"]:
        for mode in ["q4", "q6", "q8", "f16"]:
            for keep in ["keep1", "keep0.5"]:
                group = rows.get(f"{op}/{mode}/{keep}", {})
                cells = []
                for s in shapes:
                    r = group.get(s, {})
                    if "old" in r and "new" in r:
                        cells.append(f"{r['old'][idx]:.2f} → **{r['new'][idx]:.2f}**")
                    else:
                        cells.append("–")
                print(f"| {op} {mode} ρ={keep[4:]} | " + " | ".join(cells) + " |")
    print()
