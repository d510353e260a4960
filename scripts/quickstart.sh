#!/usr/bin/env bash
# Quick start: builds tessera, simulates a two-photon recording with ground truth, ingests the real
# neurofinder clip from ../shared/data, and inspects both. Outputs go to out/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p tessera-cli
bin=target/release/tessera
mkdir -p out/quickstart
echo "== simulate: base preset, 1500 frames of 512x512 at 30 Hz"
"$bin" simulate --preset base --frames 1500 --seed 1 --out out/quickstart/sim.zarr --overwrite
"$bin" inspect out/quickstart/sim.zarr
nf=../shared/data/neurofinder.01.01/images
if [ -d "$nf" ]; then
  echo "== ingest: neurofinder.01.01 (101 real frames, one TIFF each)"
  "$bin" ingest "$nf" --out out/quickstart/neurofinder.zarr --overwrite
  "$bin" inspect out/quickstart/neurofinder.zarr
fi
echo "== done: outputs in out/quickstart/ (ground truth in out/quickstart/sim.zarr/ground_truth)"
