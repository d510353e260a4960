#!/usr/bin/env bash
# Checks deploy/k8s offline: renders the kustomization (base, and with components/shared-fs),
# validates every object and examples/*.yaml against the Kubernetes JSON schemas bundled in the
# PyPI package kubernetes-validate (strict: unknown fields are errors), checks what matters
# (non-root, resources, selectors, ports, probes, the state PVC, the drain grace period, the
# downward-API env the worker records, no committed token), then runs the manifests' own
# command lines with the local binary as uid 10001 (coordinator, worker, the submit Job's script)
# through a small run. Details: tests/deploy/k8s_check.py.
#
# Rendering uses `kubectl kustomize` where kubectl is installed, else (or with
# TESSERA_KUSTOMIZE=python) the small renderer in k8s_check.py, which understands just what this
# kustomization uses; where both are there, their outputs must agree.
# Needs: python3 with pip (installs kubernetes-validate quietly), setpriv, TESSERA_BIN (default
# target/debug/tessera) for the run. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    'kubernetes-validate==1.37.0' 'PyYAML>=6'
exec python3 tests/deploy/k8s_check.py "$@"
