#!/usr/bin/env bash
# Debian packages tessera needs, installed when missing (as root, or with sudo):
#   always:          libhdf5-dev and pkg-config (the NWB export links HDF5)
#   `deps.sh test`:  also chromium (the report test loads the page in headless Chromium)
set -euo pipefail
pkgs=()
pkg-config --exists hdf5 2>/dev/null || pkgs+=(libhdf5-dev pkg-config)
if [ "${1:-}" = test ] && ! command -v chromium >/dev/null 2>&1; then
    pkgs+=(chromium)
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0
sudo=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
        echo "error: tessera needs the Debian packages ${pkgs[*]}: install them as root (apt-get install ${pkgs[*]})" >&2
        exit 1
    }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing ${pkgs[*]} (Debian packages)"
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 || {
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}
pkg-config --exists hdf5 || { echo "error: HDF5 still not found by pkg-config" >&2; exit 1; }
