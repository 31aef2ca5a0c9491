#!/usr/bin/env bash
# Make this machine ready for the full test suite, then run the command given (pytest).
# Each step is idempotent and fast when already done. Needs root on Debian (apt-get, dockerd).
# Everything it exports is what the tests read: TUNER_TEST_PG_URL, TUNER_LLAMA_SERVER, TUNER_SGLANG_VENV,
# TUNER_TRANSFORMERS_PYTHON, TUNER_SGLANG_CPU_PYTHON, TUNER_SGLANG_CPU_MODEL.
#
# Independent steps run side by side: the Python environments (network, then unpacking) start at once;
# the Debian packages go in with ONE apt-get call (dpkg takes one lock; one transaction is also faster
# than four); then the llama.cpp compile (CPU), the Docker daemon and image, and PostgreSQL start while
# the downloads still run. Each step's log is kept and shown only when the step fails; the time of
# every step is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export TUNER_CACHE="${TUNER_CACHE:-$HOME/.cache/sglang-tuner}"
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a NEEDRESTART_SUSPEND=1
step() { printf '\n== %s\n' "$*" >&2; }
t_all=$(date +%s)

jobs_dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$jobs_dir"' EXIT
declare -A job_pid job_t0

# start NAME CMD...: run CMD in the background; its stdout and stderr go to files under $jobs_dir.
start() {
  local name=$1; shift
  job_t0[$name]=$(date +%s)
  ( "$@" >"$jobs_dir/$name.out" 2>"$jobs_dir/$name.log"; echo $? >"$jobs_dir/$name.rc" ) &
  job_pid[$name]=$!
}
# finish NAME: wait for it (in this shell: it is this shell's child); on failure show its log and stop.
finish() {
  local name=$1
  wait "${job_pid[$name]}" || true
  local rc; rc=$(cat "$jobs_dir/$name.rc" 2>/dev/null || echo 1)
  printf '%-22s %4d s\n' "$name" $(( $(date +%s) - job_t0[$name] )) >>"$jobs_dir/times"
  if [ "$rc" != 0 ]; then
    echo "set-up step '$name' failed (exit $rc); its log:" >&2
    tail -n 60 "$jobs_dir/$name.log" >&2
    exit 1
  fi
}
# result NAME: the last line a finished step printed (a path or URL).
result() { tail -n 1 "$jobs_dir/$1.out"; }

# 1. Python environments: no Debian package needed, so they start first.
start sglang-parser-venv scripts/setup-sglang-parser.sh
start transformers-venv  scripts/setup-transformers-serve.sh
start sglang-cpu        scripts/setup-sglang-cpu-model.sh   # the real SGLang venv, then its tiny model

# 2. Debian packages, in one transaction.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  want=()
  command -v ninja >/dev/null || want+=(ninja-build)
  command -v cmake >/dev/null || want+=(cmake)
  command -v c++ >/dev/null || want+=(g++)
  command -v dockerd >/dev/null || want+=(docker.io)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want+=(postgresql)
  command -v chromium >/dev/null || want+=(chromium fonts-dejavu-core)
  command -v chromedriver >/dev/null || want+=(chromium-driver)
  if ((${#want[@]})); then
    step "apt-get install ${want[*]}"
    t0=$(date +%s)
    [ -f /var/lib/apt/lists/.tuner-updated ] || { apt-get update -qq && touch /var/lib/apt/lists/.tuner-updated; }
    apt-get install -y -qq --no-install-recommends "${want[@]}" >"$jobs_dir/apt.log" 2>&1 \
      || { tail -n 40 "$jobs_dir/apt.log" >&2; echo "apt-get install failed" >&2; exit 1; }
    printf '%-22s %4d s\n' apt-packages $(( $(date +%s) - t0 )) >>"$jobs_dir/times"
  fi
fi

# 3. The compile and the daemons, beside the downloads still running.
start llama-server scripts/build-llama-server.sh
start docker-and-image sh -c 'scripts/setup-docker.sh && scripts/build-sim-image.sh >/dev/null'
start postgresql scripts/setup-postgres.sh
start chromium scripts/setup-chromium.sh

step "waiting for the set-up steps (running side by side)"
for name in docker-and-image postgresql chromium sglang-parser-venv transformers-venv sglang-cpu llama-server; do
  finish "$name"
done
TUNER_TEST_PG_URL=$(result postgresql)
TUNER_SGLANG_VENV=$(result sglang-parser-venv)
TUNER_TRANSFORMERS_PYTHON=$(result transformers-venv)
TUNER_SGLANG_CPU_MODEL=$(result sglang-cpu)
TUNER_SGLANG_CPU_PYTHON=$(scripts/setup-sglang-cpu.sh 2>/dev/null | tail -n 1)  # built above: a probe only
TUNER_LLAMA_SERVER=$(result llama-server)
export TUNER_TEST_PG_URL TUNER_SGLANG_VENV TUNER_TRANSFORMERS_PYTHON TUNER_SGLANG_CPU_PYTHON \
  TUNER_SGLANG_CPU_MODEL TUNER_LLAMA_SERVER

step "set-up done in $(( $(date +%s) - t_all )) s"
cat "$jobs_dir/times" >&2

step "tests: $*"
trap - EXIT
rm -rf "$jobs_dir"
exec "$@"
