#!/usr/bin/env bash
# Idempotent: install Debian's chromium and chromium-driver (for the headless dashboard test).
# Fast when already installed. Prints the chromium path.
# apt quiet: no dialogs, no needrestart "which services should be restarted" chatter
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=a
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "setup-chromium: installing chromium and chromium-driver from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >&2
fi
command -v chromium
