#!/usr/bin/env bash
# Build the edgefl client image for this Jetson: the base image (NVIDIA's CUDA-enabled
# PyTorch with a Python >= 3.11) is chosen for the board's L4T release.
#
#   packaging/jetson/build_jetson_edgefl_client.sh [--tag NAME] [--base IMAGE] [--no-cache] [--dry-run]
#   packaging/jetson/build_jetson_edgefl_client.sh --l4t 36.4.0 --print-base    # which base, no build
#
# Flower 1.42 needs Python >= 3.11. JetPack 4 and 5 (L4T 32, 35: Python 3.6, 3.8) cannot run
# it; JetPack 6 (L4T 36: Ubuntu 22.04, Python 3.10) runs it in an Ubuntu 24.04 container
# (Python 3.12) from jetson-containers; JetPack 7 (L4T 38 Thor, 39) has Python 3.12.
# Exit codes: 0 built, 64 usage, 69 no suitable base image for this L4T (pass --base).
set -euo pipefail

# Base images per L4T major release. Unverified on hardware: see packaging/README.md.
BASE_L4T36=dustynv/pytorch:2.6-r36.4.0-cu128-24.04
BASE_L4T38=nvcr.io/nvidia/pytorch:25.12-py3
BASE_L4T39=nvcr.io/nvidia/pytorch:25.12-py3

# Where L4T writes its release line (a variable for the tests, which use captured files).
L4T_RELEASE_FILE=${L4T_RELEASE_FILE:-/etc/nv_tegra_release}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TAG=edgefl-client:latest
BASE_IMAGE=""
L4T=""
EXTRA=()
DRY_RUN=0
PRINT_BASE=0

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 64
}

while [[ $# -gt 0 ]]; do
    case $1 in
        -t|--tag) [[ $# -ge 2 ]] || usage; TAG=$2; shift 2 ;;
        -b|--base) [[ $# -ge 2 ]] || usage; BASE_IMAGE=$2; shift 2 ;;
        --l4t) [[ $# -ge 2 ]] || usage; L4T=$2; shift 2 ;;
        -r|--no-cache) EXTRA+=(--no-cache); shift ;;
        -n|--dry-run) DRY_RUN=1; shift ;;
        --print-base) PRINT_BASE=1; shift ;;
        -h|--help) usage ;;
        *) echo "build_jetson_edgefl_client: unknown option $1" >&2; usage ;;
    esac
done

# The L4T release, e.g. 36.4.0: /etc/nv_tegra_release ("# R36 (release), REVISION: 4.0, ..."),
# else the nvidia-l4t-core package's version ("36.4.0-20240912212859").
detect_l4t() {
    local line major revision version
    if [[ -r $L4T_RELEASE_FILE ]]; then
        line=$(head -n 1 "$L4T_RELEASE_FILE")
        if [[ $line =~ R([0-9]+)\ \(release\),\ REVISION:\ ([0-9.]+) ]]; then
            major=${BASH_REMATCH[1]}
            revision=${BASH_REMATCH[2]}
            echo "${major}.${revision}"
            return 0
        fi
    fi
    if version=$(dpkg-query --showformat='${Version}' --show nvidia-l4t-core 2>/dev/null); then
        echo "${version%%-*}"
        return 0
    fi
    return 1
}

if [[ -z $BASE_IMAGE ]]; then
    if [[ -z $L4T ]] && ! L4T=$(detect_l4t); then
        echo "build_jetson_edgefl_client: not a Jetson (no /etc/nv_tegra_release, no nvidia-l4t-core):" \
             "pass --l4t VERSION or --base IMAGE" >&2
        exit 69
    fi
    case ${L4T%%.*} in
        36) BASE_IMAGE=$BASE_L4T36 ;;
        38) BASE_IMAGE=$BASE_L4T38 ;;
        39) BASE_IMAGE=$BASE_L4T39 ;;
        32|34|35)
            echo "build_jetson_edgefl_client: L4T $L4T (JetPack 4/5) has Python 3.6/3.8 and no image with a" \
                 "CUDA PyTorch for Python >= 3.11, which Flower 1.42 needs. Upgrade to JetPack 6 (L4T 36)," \
                 "or pass --base IMAGE with both." >&2
            exit 69 ;;
        *)
            echo "build_jetson_edgefl_client: no known base image for L4T '$L4T': pass --base IMAGE" \
                 "(Python >= 3.11 with NVIDIA's CUDA-enabled torch for this L4T)" >&2
            exit 69 ;;
    esac
fi

if [[ $PRINT_BASE == 1 ]]; then
    echo "$BASE_IMAGE"
    exit 0
fi

cmd=(docker build "${EXTRA[@]}" --file "$ROOT/packaging/jetson/Dockerfile"
     --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$TAG" "$ROOT")
echo "L4T ${L4T:-(not detected)}, base image $BASE_IMAGE" >&2
echo "+ DOCKER_BUILDKIT=1 ${cmd[*]}" >&2
if [[ $DRY_RUN == 1 ]]; then
    exit 0
fi
# BuildKit: it reads packaging/jetson/Dockerfile.dockerignore (the context is the repository).
DOCKER_BUILDKIT=1 "${cmd[@]}"

cat >&2 <<RUN
Built $TAG. Run it (GPU through the NVIDIA runtime; --init reaps Flower's child processes):
  docker run -d --name edgefl-client --restart unless-stopped --init --runtime nvidia --network host \\
      -v edgefl-state:/var/lib/edgefl -v /etc/edgefl.toml:/etc/edgefl.toml:ro $TAG
or with flags instead of a config file: ... $TAG --cid 0 --server 192.168.1.10:9092
RUN
