#!/usr/bin/env bash
# The main job on bundled data: make keys, obfuscate real scans, measure how much of them shows, then
# run the quick privacy-utility benchmark. Re-running reuses the keys and cached results.
set -euo pipefail
out=${1:-out/demo}
medveil() { .venv/bin/medveil "$@"; }

medveil samples "$out/scans"
mkdir -p "$out/keys"
# 8-bit JPEG MRI: paper NB's setting, N = 50 output levels.
[ -f "$out/keys/mri-8bit.key" ] || medveil keygen --scheme intensity --levels 50 -o "$out/keys/mri-8bit.key"
# DICOM CT/MR and NIfTI: signed 16-bit stored values, mapped at their real depth.
[ -f "$out/keys/volumes-16bit.key" ] || medveil keygen --scheme intensity --bits 16 --signed --levels 300 -o "$out/keys/volumes-16bit.key"

# Some Br35H slices carry burned-in window/level text: mask what OCR reads rather than refuse the file.
medveil obfuscate --key "$out/keys/mri-8bit.key" --burned-in-text mask "$out/scans/br35h" "$out/obfuscated/br35h"
medveil obfuscate --key "$out/keys/volumes-16bit.key" "$out/scans/volumes" "$out/obfuscated/volumes"

medveil compare "$out/scans/br35h" "$out/obfuscated/br35h" --csv "$out/br35h-similarity.csv" --figure "$out/br35h.png"
medveil compare "$out/scans/volumes" "$out/obfuscated/volumes" --csv "$out/volumes-similarity.csv" --figure "$out/volumes.png"

# The privacy-utility benchmark, quick profile: every scheme trained on and attacked on Br35H.
medveil bench --dataset br35h --profile quick -o "$out/bench"
echo
echo "demo done: figures $out/br35h.png and $out/volumes.png; scores in $out/*-similarity.csv"
echo "benchmark report: $out/bench/report.html (also report.md)"
