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

# The llama.cpp compile (~5 min, CPU) overlaps the downloads below (network). Its build tools come
# first, so the background build never runs apt-get beside the installs below (dpkg's lock).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v ninja >/dev/null; then
  step "build tools";        apt-get install -y -qq ninja-build cmake g++ >/dev/null
fi
llama_out="$(mktemp)"; llama_log="$(mktemp)"
scripts/build-llama-server.sh >"$llama_out" 2>"$llama_log" &
llama_pid=$!

step "docker daemon";        scripts/setup-docker.sh
step "simulator image";      scripts/build-sim-image.sh
step "postgresql";           TUNER_TEST_PG_URL="$(scripts/setup-postgres.sh | tail -n 1)"; export TUNER_TEST_PG_URL
step "chromium";             scripts/setup-chromium.sh
step "sglang parser venv";   TUNER_SGLANG_VENV="$(scripts/setup-sglang-parser.sh | tail -n 1)"; export TUNER_SGLANG_VENV
step "transformers serve";   TUNER_TRANSFORMERS_PYTHON="$(scripts/setup-transformers-serve.sh | tail -n 1)"; export TUNER_TRANSFORMERS_PYTHON

step "llama-server (built in the background)"
if ! wait "$llama_pid"; then cat "$llama_log" >&2; echo "llama-server build failed" >&2; exit 1; fi
tail -n 2 "$llama_log" >&2
TUNER_LLAMA_SERVER="$(tail -n 1 "$llama_out")"; export TUNER_LLAMA_SERVER
rm -f "$llama_out" "$llama_log"

step "tests: $*"
exec "$@"
