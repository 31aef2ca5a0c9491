#!/usr/bin/env bash
# Make a separate virtualenv holding SGLang's own argument parser (sglang.srt.server_args), so the
# tuner can check command lines against the real thing without a GPU or SGLang's kernels.
#
# Idempotent: when the venv imports ServerArgs already, nothing is installed. Prints the venv's python
# on the last line of stdout; everything else goes to stderr.
#
#   TUNER_CACHE      cache root (default: ~/.cache/sglang-tuner)
#   SGLANG_VERSION   sglang release whose parser to install (default 0.5.23)
#   PYTHON           interpreter for the venv (default python3; SGLang 0.5.x needs >= 3.10)
set -euo pipefail

version="${SGLANG_VERSION:-0.5.23}"
venv="${TUNER_CACHE:-$HOME/.cache/sglang-tuner}/sglang-$version-venv"
py="$venv/bin/python"

log() { echo "setup-sglang-parser: $*" >&2; }

probe() {
    "$py" - "$version" >/dev/null 2>&1 <<'PY'
import argparse, sys
from importlib.metadata import version
assert version("sglang") == sys.argv[1], version("sglang")
from sglang.srt.server_args import ServerArgs
ServerArgs.add_cli_args(argparse.ArgumentParser())
PY
}

if [[ -x "$py" ]] && probe; then
    log "parser venv is usable: $venv"
    echo "$py"
    exit 0
fi

log "creating $venv"
"${PYTHON:-python3}" -m venv "$venv"
"$py" -m pip install --quiet --upgrade pip >&2
# torch first and pinned: 2.13.0 is the CPU wheel on disk here. sglang asks for a newer torch, which is
# why sglang itself goes in with --no-deps; the parser never touches torch's kernels.
"$py" -m pip install --quiet torch==2.13.0 >&2
# What `import sglang.srt.server_args` pulls in (found by trial with 0.5.23), before sglang: pip checks the
# installed set for conflicts after every install but a --no-deps one, so sglang last keeps its ~60
# "sglang requires X, which is not installed" lines out of the output.
"$py" -m pip install --quiet \
    numpy orjson psutil pybase64 requests triton packaging pillow starlette msgspec pydantic pyzmq \
    tqdm ipython aiohttp "torch==2.13.0" >&2
"$py" -m pip install --quiet --no-deps "sglang==$version" >&2

if ! probe; then
    log "ServerArgs still does not import; the missing module is:"
    "$py" -c "from sglang.srt.server_args import ServerArgs" >&2 || true
    exit 1
fi
log "ready: $venv"
echo "$py"
