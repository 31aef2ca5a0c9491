#!/usr/bin/env bash
# Build the simulated-SGLang image (default sglang-tuner/sim:dev) from docker-images/sim-shim, locally
# (no registry): `docker import` of a tarball holding only the shim package and an empty /tmp.
# Inside it `python3 -m sglang.launch_server …` runs `python -m tuner.sim …` with the host's Python
# through read-only bind mounts (see docker-images/README.md). Rebuilds only when the shim changed.
#
#   scripts/build-sim-image.sh [IMAGE]    # prints the search-space `target:` block for the image
#   SIM_SGLANG_VERSION=0.4.10 scripts/build-sim-image.sh sglang-tuner/sim:0.4.10   # an "old SGLang" image
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${1:-${TUNER_SIM_IMAGE:-sglang-tuner/sim:dev}}
SHIM="$REPO/docker-images/sim-shim"
VERSION=${SIM_SGLANG_VERSION:-}  # empty: the simulator's default SGLang version

die() { echo "build-sim-image: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || "$REPO/scripts/setup-docker.sh" || die "no Docker daemon (scripts/setup-docker.sh failed)"
[ -f "$SHIM/sglang/launch_server.py" ] || die "missing $SHIM/sglang/launch_server.py"

# Content hash of the inputs: the image carries it as a label, so an unchanged shim is a no-op.
HASH=$( (cd "$REPO" && cat scripts/build-sim-image.sh $(find docker-images/sim-shim -type f -name '*.py' | sort) ; echo "$VERSION") | sha256sum | cut -c1-16)
have=$(docker image inspect -f '{{ index .Config.Labels "tuner.sim.inputs" }}' "$IMAGE" 2>/dev/null || true)
if [ "$have" != "$HASH" ]; then
  ROOT=$(mktemp -d)
  trap 'rm -rf "$ROOT"' EXIT
  mkdir -p "$ROOT/opt/sim-shim" "$ROOT/tmp"
  chmod 1777 "$ROOT/tmp"
  cp -r "$SHIM/sglang" "$ROOT/opt/sim-shim/"
  find "$ROOT" -name __pycache__ -prune -exec rm -rf {} +
  tar -C "$ROOT" --owner=0 --group=0 --numeric-owner -cf "$ROOT.tar" .
  # PYTHONDONTWRITEBYTECODE: every code path is mounted read-only.
  docker import \
    -c 'ENV PATH=/opt/sim-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PYTHONPATH=/opt/sim-shim:/opt/tuner-src' \
    -c 'ENV PYTHONDONTWRITEBYTECODE=1' \
    -c 'ENV PYTHONUNBUFFERED=1' \
    -c 'ENV HOME=/tmp' \
    -c 'WORKDIR /tmp' \
    -c "LABEL tuner.sim.inputs=$HASH" \
    ${VERSION:+-c "ENV TUNER_SIM_SGLANG_VERSION=$VERSION"} \
    -c 'LABEL org.opencontainers.image.title="simulated SGLang (sglang-tuner)"' \
    -m "sglang-tuner simulated SGLang, inputs $HASH" \
    "$ROOT.tar" "$IMAGE" >/dev/null || { rm -f "$ROOT.tar"; die "docker import failed"; }
  rm -f "$ROOT.tar"
  docker image prune -f --filter label=tuner.sim.inputs >/dev/null  # the previous build, now untagged
  echo "build-sim-image: built $IMAGE (inputs $HASH)" >&2
fi

# The target block for a search-space file, with this machine's paths.
cd "$REPO" && PYTHONPATH="$REPO" "$REPO/.venv/bin/python" -m tuner.launch.docker sim-target --image "$IMAGE"
