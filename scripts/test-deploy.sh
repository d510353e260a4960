#!/usr/bin/env bash
# The deployment tests: the recipes in deploy/ exercised against the real other side, on this one
# machine. Needs root (network namespaces, Slurm's daemons) and Debian's apt (slurm-wlm, munge).
#   tests/deploy/netns.sh      coordinator and workers in separate network namespaces (veth + bridge)
#   tests/deploy/container.sh  the Dockerfile's promises, without a Docker engine (see the script)
#   tests/deploy/k8s.sh        the kustomize manifests against the Kubernetes schemas, and their
#                              command lines run for real
#   tests/deploy/slurm.sh      a real slurmctld + slurmd: the worker job array from
#                              deploy/slurm/workers.sbatch completes a run, part of it scancelled
# Each uses TESSERA_BIN (default target/debug/tessera, which scripts/test.sh builds).
set -euo pipefail
cd "$(dirname "$0")/.."
export TESSERA_BIN="${TESSERA_BIN:-$PWD/target/debug/tessera}"
[ -x "$TESSERA_BIN" ] || cargo build --locked -p tessera-cli
status=0
for t in netns container k8s slurm; do
    echo "== deploy test: $t"
    start=$(date +%s)
    if bash "tests/deploy/$t.sh"; then
        echo "== $t passed in $(( $(date +%s) - start )) s"
    else
        echo "== $t FAILED after $(( $(date +%s) - start )) s"
        status=1
    fi
done
exit $status
