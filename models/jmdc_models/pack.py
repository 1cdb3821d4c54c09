"""Pack a pipeline run into a few flat files (the GPU machine returns at most 8 files of
<= 16 MiB each, 64 MiB in all, from flat names):

  <model>-package.tar            the exported package folder (<model>/manifest.json, keepNNN/*.onnx)
  <model>-run.tar[.NN]           <model>-run/training.json, gate_scores.json, weights/keepNNN.pt
                                 (checkpoints in priority order keep100, keep050, keep025, keep075
                                 while they fit ``budget``; split into parts of ``part`` bytes)

Unpack with ``models/unpack_gpu_out.sh FILES_DIR DEST``.
"""

import io
import os
import tarfile
from pathlib import Path

MiB = 1 << 20
PRIORITY = ["keep100", "keep050", "keep025", "keep075"]


def _tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for path, arc in entries:
            tf.add(str(path), arcname=arc)
    return buf.getvalue()


def _write_atomic(path, data):
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def pack(run_dir, model, pack_dir, budget=64 * MiB, part=15 * MiB):
    run, out = Path(run_dir), Path(pack_dir)
    out.mkdir(parents=True, exist_ok=True)
    used = 0
    written = []
    pkg = run / "package" / model
    if (pkg / "manifest.json").is_file():
        entries = [(p, f"{model}/{p.relative_to(pkg)}") for p in sorted(pkg.rglob("*"))
                   if p.is_file()]
        data = _tar_bytes(entries)
        _write_atomic(out / f"{model}-package.tar", data)
        used += len(data)
        written.append(f"{model}-package.tar")
    entries = [(run / n, f"{model}-run/{n}") for n in ("training.json", "gate_scores.json")
               if (run / n).is_file()]
    size = sum(p.stat().st_size + 1024 for p, _ in entries) + 10240
    skipped = []
    ckpts = {p.stem: p for p in (run / "weights").glob("keep*.pt")}
    order = [k for k in PRIORITY if k in ckpts] + sorted(k for k in ckpts if k not in PRIORITY)
    for k in order:
        s = ckpts[k].stat().st_size + 1024
        if used + size + s <= budget:
            entries.append((ckpts[k], f"{model}-run/weights/{k}.pt"))
            size += s
        else:
            skipped.append(k)
    data = _tar_bytes(entries)
    for old in out.glob(f"{model}-run.tar*"):
        old.unlink()
    if len(data) <= part:
        _write_atomic(out / f"{model}-run.tar", data)
        names = [f"{model}-run.tar"]
    else:
        names = []
        for i in range(0, len(data), part):
            name = f"{model}-run.tar.{i // part:02d}"
            _write_atomic(out / name, data[i:i + part])
            names.append(name)
    return {"files": written + names, "bytes": used + len(data), "skipped_checkpoints": skipped}
