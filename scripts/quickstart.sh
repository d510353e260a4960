#!/usr/bin/env bash
# Quick start: builds tessera, then runs the analysis on a simulated recording with ground truth
# (simulate -> register -> extract -> evaluate, then the same as a workflow with tessera run) and on
# the real neurofinder clip from ../shared/data
# (ingest -> extract -> evaluate against the lab's labels). Outputs go to out/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh   # Debian's libhdf5-dev (the NWB export links it)
cargo build --release --locked -p tessera-cli
bin=target/release/tessera
out=out/quickstart
mkdir -p "$out"
echo "== simulate: two-photon GCaMP6s, 256x256 px, 1500 frames at 30 Hz, with motion"
"$bin" simulate --preset base --frames 1500 --height 256 --width 256 --seed 1 --out "$out/sim.zarr" --overwrite
"$bin" inspect "$out/sim.zarr"
echo "== register (rigid phase correlation)"
"$bin" register "$out/sim.zarr" --out "$out/registered.zarr" --overwrite
echo "== extract (detection, CNMF demixing, QC, OASIS deconvolution)"
"$bin" extract "$out/registered.zarr" --out "$out/rois.zarr" --overwrite
echo "== evaluate against the simulation's ground truth"
"$bin" evaluate --truth "$out/sim.zarr" --estimate "$out/rois.zarr"
echo "== verify: re-hash the output and its input against the provenance record"
"$bin" verify "$out/rois.zarr"
echo "== the same pipeline as a workflow: validate it, print its tile plan, run it in 128-px tiles on 2 workers"
"$bin" validate workflows/two-photon.yaml
"$bin" plan workflows/two-photon.yaml --input "$out/sim.zarr" --tile-size 128
"$bin" run workflows/two-photon.yaml --input "$out/sim.zarr" --output "$out/run" --tile-size 128 --workers 2 --overwrite
"$bin" evaluate --truth "$out/sim.zarr" --estimate "$out/run"
"$bin" verify "$out/run"
echo "== export the run as NWB (for pynwb and DANDI)"
"$bin" export nwb "$out/run" -o "$out/run.nwb" --overwrite --session-start-time 2026-01-01T09:00:00+00:00 \
  --subject-id simulated-1 --species "Mus musculus" --age P90D --location VISp --indicator GCaMP6s
nf=../shared/data/neurofinder.01.01
if [ -d "$nf/images" ]; then
  echo "== real data: neurofinder.01.01 (101 frames, labelled by the Hausser lab)"
  "$bin" ingest "$nf/images" --out "$out/neurofinder.zarr" --overwrite
  "$bin" extract "$out/neurofinder.zarr" --out "$out/neurofinder-rois.zarr" --overwrite
  "$bin" evaluate --truth "$nf/regions/regions.json" --estimate "$out/neurofinder-rois.zarr/rois/regions.json"
fi
echo "== done: outputs in $out/ (ROIs, traces and spikes under */rois/; see docs/FORMATS.md)"
