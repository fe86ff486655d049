#!/bin/sh
# Installs saeforge's build and test dependencies (Debian) when any is missing.
set -e
pkgs="libhdf5-dev libcriterion-dev libopenblas-dev libcyaml-dev pkg-config openmpi-bin libopenmpi-dev"
if command -v pkg-config >/dev/null 2>&1 &&
   pkg-config --exists hdf5-serial libcyaml criterion openblas ompi-c 2>/dev/null; then
    exit 0
fi
echo "saeforge: installing build dependencies: $pkgs"
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $pkgs
