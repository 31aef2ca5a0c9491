#!/usr/bin/env bash
# A virtualenv with `transformers serve` on the CPU (torch 2.13.0 CPU build + transformers[serving] 5.17.0),
# for the real-engine tests. Idempotent; prints the venv's python on the last line.
set -euo pipefail
cache="${TUNER_CACHE:-$HOME/.cache/sglang-tuner}"
venv="$cache/transformers-5.17.0-venv"
log() { echo "setup-transformers-serve: $*" >&2; }
if [ -x "$venv/bin/transformers" ] && "$venv/bin/python" -c "import transformers, fastapi, torch" 2>/dev/null; then
  echo "$venv/bin/python"; exit 0
fi
log "creating $venv"
mkdir -p "$cache"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >&2
# torch==2.13.0 resolves to the CPU wheel these machines carry; a bare `torch` would pull GBs of CUDA wheels.
"$venv/bin/pip" install -q "torch==2.13.0" >&2
"$venv/bin/pip" install -q "transformers[serving]==5.17.0" requests aiohttp pyyaml pydantic >&2
"$venv/bin/python" -c "import transformers, fastapi, torch" >&2
echo "$venv/bin/python"
