#!/usr/bin/env bash
# System libraries the build needs, from Debian's packages: HDF5 (libhdf5-dev, found with
# pkg-config), which the NWB export links. Installs them when missing (as root, or with sudo).
set -euo pipefail
if pkg-config --exists hdf5 2>/dev/null; then
    exit 0
fi
pkgs=(libhdf5-dev pkg-config)
sudo=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
        echo "error: tessera's build needs ${pkgs[*]}: install them as root (apt-get install ${pkgs[*]})" >&2
        exit 1
    }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing ${pkgs[*]} (Debian packages the build links)"
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 || {
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}
pkg-config --exists hdf5 || { echo "error: HDF5 still not found by pkg-config" >&2; exit 1; }
