#!/usr/bin/env bash
# Run a command while one busy process competes for a core, as on a shared CI machine:
#
#   scripts/with-busy-core.sh make test        # = make test-loaded
#
# The competitor is a plain shell loop at nice 0 (the same priority as the tests), so the scheduler
# splits a core between it and whatever the suite runs. It stops when the command ends, however it
# ends. The suite's speed and capacity comparisons must hold under it (README: "Tests").
set -euo pipefail
[[ $# -gt 0 ]] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
nice -n 0 sh -c 'while :; do :; done' &
busy=$!
trap 'kill "$busy" 2>/dev/null || true' EXIT INT TERM
echo "with-busy-core: busy loop pid $busy competes for a core" >&2
"$@"
