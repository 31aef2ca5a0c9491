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

# Live dockerd processes (a killed daemon can linger as a zombie when nothing reaps it).
live_dockerd() { ps -C dockerd -o pid=,stat= 2>/dev/null | awk '$2 !~ /^Z/ {print $1}' | tr '\n' ' '; }

# Another start may be under way (a second caller, or a daemon still coming up): give it a moment.
if [ -n "$(live_dockerd)" ]; then
  for _ in $(seq 1 $((WAIT_S * 5))); do daemon_up && exit 0; [ -n "$(live_dockerd)" ] || break; sleep 0.2; done
  daemon_up && exit 0
  [ -z "$(live_dockerd)" ] \
    || die "dockerd runs (pid $(live_dockerd)) but does not answer 'docker info' within ${WAIT_S}s; see $LOG"
fi
[ "$(id -u)" = 0 ] || die "the Docker daemon is not running and only root can start it here"

# Stale pid files of a killed daemon: dockerd refuses to start over its own, and waits 15 s for a
# "still running" containerd that is in fact a zombie nobody reaped (PID 1 here does not reap).
rm -f /var/run/docker.pid
cpid_file=/var/run/docker/containerd/containerd.pid
if [ -f "$cpid_file" ]; then
  cstat=$(ps -o stat= -p "$(cat "$cpid_file")" 2>/dev/null || true)
  case "$cstat" in ""|Z*) rm -f "$cpid_file" ;; esac
fi

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
if ! command -v iptables >/dev/null 2>&1 && [ ! -x /usr/sbin/iptables ]; then
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
