#!/usr/bin/env bash
# Make a Docker daemon reachable on this machine: install Debian's docker.io if dockerd is missing,
# start dockerd in the background if `docker info` fails, wait until it answers.
# Idempotent and fast when the daemon already runs (one `docker info`). Needs root to install/start.
#
#   scripts/setup-docker.sh            # exit 0 when the daemon answers, non-zero with a reason otherwise
#   DOCKERD_LOG=/tmp/d.log scripts/setup-docker.sh
set -euo pipefail

LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
WAIT_S=${DOCKERD_WAIT_S:-30}

die() { echo "setup-docker: $*" >&2; exit 1; }

daemon_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && daemon_up; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "dockerd is not installed and we are not root: install docker.io (apt-get install -y docker.io)"
  echo "setup-docker: installing docker.io (dockerd, containerd, runc)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q docker.io >/tmp/setup-docker-apt.log 2>&1 \
    || { apt-get update -q >>/tmp/setup-docker-apt.log 2>&1 && apt-get install -y -q docker.io >>/tmp/setup-docker-apt.log 2>&1; } \
    || die "apt-get install docker.io failed; see /tmp/setup-docker-apt.log"
fi
command -v docker >/dev/null 2>&1 || die "the docker CLI is missing after installing docker.io"

# Another start may be under way (a second caller, or a daemon still coming up): give it a moment.
if pgrep -x dockerd >/dev/null 2>&1; then
  for _ in $(seq 1 $((WAIT_S * 5))); do daemon_up && exit 0; sleep 0.2; done
  die "dockerd runs (pid $(pgrep -x dockerd | tr '\n' ' ')) but does not answer 'docker info' within ${WAIT_S}s; see $LOG"
fi
[ "$(id -u)" = 0 ] || die "the Docker daemon is not running and only root can start it here"

# A stale pid file from a killed daemon makes dockerd refuse to start.
rm -f /var/run/docker.pid

start_dockerd() {  # $@: extra dockerd options
  echo "=== $(date -u +%FT%TZ) dockerd $*" >>"$LOG"
  nohup dockerd "$@" >>"$LOG" 2>&1 </dev/null &
  local pid=$!
  for _ in $(seq 1 $((WAIT_S * 5))); do
    if daemon_up; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1  # it gave up: try the next set of options
    sleep 0.2
  done
  kill "$pid" 2>/dev/null || true
  return 1
}

# Plain start first; on machines without iptables (this VM has none) or without overlayfs, fall back
# to the options that avoid them. Each failure is kept in the log.
if ! command -v iptables >/dev/null 2>&1; then
  base_opts=(--iptables=false --ip6tables=false)
else
  base_opts=()
fi
start_dockerd "${base_opts[@]}" \
  || start_dockerd --iptables=false --ip6tables=false \
  || start_dockerd --iptables=false --ip6tables=false --storage-driver=vfs \
  || die "dockerd did not start with any option set; last lines of $LOG:
$(tail -n 15 "$LOG")"
echo "setup-docker: dockerd is up (log: $LOG)" >&2
