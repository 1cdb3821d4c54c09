#!/usr/bin/env bash
# Unpack what models/gpu_job.sh left in OUT (flat files) into DEST:
#   bash models/unpack_gpu_out.sh FILES_DIR DEST
# gives DEST/<model>/ (draft package: manifest.json + keepNNN/) and DEST/<model>-run/
# (training.json, gate_scores.json, weights/keepNNN.pt) for every model found.
set -euo pipefail
SRC=$1; DEST=$2
mkdir -p "$DEST"
shopt -s nullglob
for t in "$SRC"/*-package.tar; do
    tar xf "$t" -C "$DEST"; echo "unpacked $(basename "$t")"
done
for first in "$SRC"/*-run.tar "$SRC"/*-run.tar.00; do
    base=${first%.00}
    if [ "$first" = "$base" ]; then tar xf "$first" -C "$DEST"
    else cat "$base".[0-9][0-9] | tar xf - -C "$DEST"; fi
    echo "unpacked $(basename "$base")"
done
ls -la "$DEST"
