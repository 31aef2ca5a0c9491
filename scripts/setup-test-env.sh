#!/usr/bin/env bash
# Make this machine ready for the full test suite, then run the command given (pytest).
# Each step is idempotent and fast when already done. Needs root on Debian (apt-get, dockerd).
# Everything it exports is what the tests read: TUNER_TEST_PG_URL, TUNER_LLAMA_SERVER, TUNER_SGLANG_VENV,
# TUNER_TRANSFORMERS_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
export TUNER_CACHE="${TUNER_CACHE:-$HOME/.cache/sglang-tuner}"
step() { printf '\n== %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ ! -f /var/lib/apt/lists/.tuner-updated ]; then
  step "apt-get update"
  apt-get update -qq && touch /var/lib/apt/lists/.tuner-updated
fi

step "docker daemon";        scripts/setup-docker.sh
step "simulator image";      scripts/build-sim-image.sh
step "postgresql";           TUNER_TEST_PG_URL="$(scripts/setup-postgres.sh | tail -n 1)"; export TUNER_TEST_PG_URL
step "chromium";             scripts/setup-chromium.sh
step "llama-server";         TUNER_LLAMA_SERVER="$(scripts/build-llama-server.sh | tail -n 1)"; export TUNER_LLAMA_SERVER
step "sglang parser venv";   TUNER_SGLANG_VENV="$(scripts/setup-sglang-parser.sh | tail -n 1)"; export TUNER_SGLANG_VENV
step "transformers serve";   TUNER_TRANSFORMERS_PYTHON="$(scripts/setup-transformers-serve.sh | tail -n 1)"; export TUNER_TRANSFORMERS_PYTHON

step "tests: $*"
exec "$@"
