#!/usr/bin/env bash
# Issue 9: two tuner workers, one GPU each, sharing ONE study through PostgreSQL; one worker is
# SIGKILLed mid-trial and the other must retry its trial. Run on the 2-GPU device machine from the
# repo root with `.whl` (serving wheels + optuna, sqlalchemy, psycopg, psycopg-binary) and `.pgcarry`
# (Debian 12's PostgreSQL 15 server and its libraries, see bench/results/h200x2/README.md) carried.
# Everything it prints goes to $OUT (at most 8 files come back).
#
# Building .pgcarry/pg15.tar.xz on a Debian 12 machine with postgresql-15 installed (21 MiB):
#   apt-get download postgresql-15 && dpkg -x postgresql-15_*.deb root
#   rm -rf root/usr/lib/postgresql/15/lib/{bitcode,llvmjit*} root/usr/share/{doc,man}   # jit=off
#   mkdir root/lib; B=root/usr/lib/postgresql/15/bin
#   ldd $B/postgres $B/initdb $B/pg_ctl | awk '/=>/{print $3}' | sort -u \
#     | grep -Ev '/lib(c|m|resolv|gcc_s|stdc\+\+|pthread|dl|rt)\.so' | xargs -I{} cp -L {} root/lib/
#   tar cJf .pgcarry/pg15.tar.xz -C root .      # and: echo /.pgcarry/ >> .git/info/exclude
#
# The same script runs on a CPU machine against the simulator (the rehearsal and the CPU record):
#   SPACE=/tmp/sim-space.yaml GPU_A= GPU_B= NO_WHEELS=1 NO_MODEL=1 OUT=/tmp/o bench/gpu/h200x2_two_workers.sh
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
TRIALS="${TRIALS:-10}"            # the study's total of finished trials, both workers together
HEARTBEAT="${HEARTBEAT:-5}"       # s; a silent worker's trial is failed after 2 x this and retried
GPU_A="${GPU_A-0}"; GPU_B="${GPU_B-1}"
KILL_AT="${KILL_AT:-2}"           # SIGKILL worker a when its KILL_AT-th trial starts measuring
STUDY_LIMIT_S="${STUDY_LIMIT_S:-390}"  # hard stop for the workers (SIGINT: the trial is recorded)
SPACE="${SPACE:-search_spaces/transformers-h100-tiny.yaml}"
WORKLOAD="${WORKLOAD:-}"; [ -n "$WORKLOAD" ] || WORKLOAD='{"num_requests": 24, "stall_timeout_s": 20}'
STUDY="${STUDY_NAME:-two-workers}"
PG="${PG_DIR:-/tmp/pg}"; PGDATA="$PG/data"; PGPORT="${PGPORT:-55432}"
LOGS=/tmp/mw-logs; rm -rf "$LOGS"; mkdir -p "$LOGS"
exec > >(tee "$OUT/run.log") 2>&1
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s]"; }

if [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv

# --- PostgreSQL 15 from the carried Debian files, run as an unprivileged user (initdb refuses root).
rm -rf "$PG"; mkdir -p "$PG"; tar xJf .pgcarry/pg15.tar.xz -C "$PG" || exit 1
PGBIN="$PG/usr/lib/postgresql/15/bin"
RUNAS=(setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups)
[ "$(id -u)" = 0 ] || RUNAS=()
mkdir -p "$PGDATA" "$PG/log"; chown nobody "$PGDATA" "$PG/log" 2>/dev/null; chmod 700 "$PGDATA"
pg() { env LD_LIBRARY_PATH="$PG/lib" "${RUNAS[@]}" "$@"; }
pg "$PGBIN/initdb" -D "$PGDATA" -U tuner --auth=trust -E UTF8 --locale=C --no-sync >"$PG/log/initdb.log" 2>&1 \
  || { cat "$PG/log/initdb.log"; exit 1; }
pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PG/log/postgres.log" -w start -o "-c listen_addresses=127.0.0.1 \
  -p $PGPORT -c unix_socket_directories=/tmp -c jit=off -c max_connections=100 -c fsync=off" \
  || { cat "$PG/log/postgres.log"; exit 1; }
URL="postgresql+psycopg://tuner@127.0.0.1:$PGPORT/tuner"
"$PY" - "$PGPORT" <<'EOF' || exit 1
import sys, psycopg
with psycopg.connect(f"host=127.0.0.1 port={sys.argv[1]} user=tuner dbname=postgres", autocommit=True) as c:
    c.execute("CREATE DATABASE tuner")
    print("postgres:", c.execute("SELECT version()").fetchone()[0])
EOF
echo "$(el) database ready: $URL"

# --- the model (both workers serve the same directory) and the space with a shorter workload.
if [ -z "${NO_MODEL:-}" ]; then
  "$PY" -m tuner.models.hf_random storage/models/hf-llama-1b --preset 1b || exit 1
  echo "$(el) model written"
fi
"$PY" - "$SPACE" "$WORKLOAD" <<'EOF' || exit 1
import json, sys, yaml
data = yaml.safe_load(open(sys.argv[1]))
data["workload"].update(json.loads(sys.argv[2]))
yaml.safe_dump(data, open("/tmp/mw-space.yaml", "w"), sort_keys=False)
print("workload:", json.dumps(data["workload"]))
EOF

# --- two workers, started together; worker a is killed when its KILL_AT-th trial starts measuring.
common=(--space /tmp/mw-space.yaml --storage "$URL" --study "$STUDY" --trials "$TRIALS" --workers 2
        --heartbeat "$HEARTBEAT" --timeout-min 6)
"$PY" -m tuner.study "${common[@]}" --worker a --seed 1 \
  ${GPU_A:+--gpus "$GPU_A"} --out "$LOGS/out-a" >"$LOGS/worker-a.log" 2>&1 &
PA=$!
"$PY" -m tuner.study "${common[@]}" --worker b --seed 2 \
  ${GPU_B:+--gpus "$GPU_B"} --out "$LOGS/out-b" >"$LOGS/worker-b.log" 2>&1 &
PB=$!
echo "$(el) workers started: a pid $PA, b pid $PB"
# Hard stop: SIGINT makes a worker record its running trial as interrupted and stop its server.
# (its own output to /dev/null: a stray `sleep` must not hold this script's log pipe open)
( trap 'kill "$s"; exit' TERM; sleep "$STUDY_LIMIT_S" & s=$!; wait "$s"; kill -INT "$PA" "$PB" ) >/dev/null 2>&1 &
WATCHDOG=$!
measured() { grep measuring "$LOGS/worker-a.log" | sed -E 's/.*trial ([0-9]+) .*/\1/' | sort -u | wc -l; }
while kill -0 "$PA" 2>/dev/null && [ "$(measured)" -lt "$KILL_AT" ]; do sleep 0.5; done
if kill -0 "$PA" 2>/dev/null; then
  KILLED_TRIAL=$(grep measuring "$LOGS/worker-a.log" | tail -1 | sed -E 's/.*trial ([0-9]+).*/\1/')
  kill -9 "$PA"
  echo "$(el) SIGKILLed worker a (pid $PA) while it was measuring trial $KILLED_TRIAL"
  sleep 3
  left=$(grep -l "TUNER_WORKER=a" /proc/[0-9]*/environ 2>/dev/null | wc -l)
  echo "$(el) processes of worker a's servers still alive 3 s after the kill: $left"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,memory.used --format=csv,noheader
else
  echo "$(el) worker a ended before its trial $KILL_AT: nothing killed"
fi
wait "$PB"; echo "$(el) worker b exit code $?"
wait "$PA" 2>/dev/null
kill "$WATCHDOG" 2>/dev/null

# --- verification and records.
"$PY" bench/gpu/multiworker_check.py --storage "$URL" --study "$STUDY" --trials "$TRIALS" \
  --worker "a${GPU_A:+=$GPU_A}" --worker "b${GPU_B:+=$GPU_B}" --killed a | tee "$OUT/check.txt"
"$PY" - "$URL" "$STUDY" "$OUT" <<'EOF'
import sys, optuna
from tuner.store.store import TunerStore
url, name, out = sys.argv[1:]
study = optuna.load_study(study_name=name, storage=url)
df = study.trials_dataframe(attrs=("number", "state", "params", "values", "user_attrs", "system_attrs",
                                   "datetime_start", "datetime_complete"))
keep = [c for c in df.columns if not c.startswith("user_attrs_") or c in (
    "user_attrs_failure_kind", "user_attrs_seed_name", "user_attrs_interrupted")]
df[keep].to_csv(f"{out}/trials.csv", index=False)
with TunerStore(url) as store, open(f"{out}/provenance.txt", "w") as f:
    for t in study.trials:
        p = store.read_provenance(name, t.number)
        g = store.read_gpu_samples(name, t.number)
        f.write(f"trial {t.number} {t.state.name}: worker={p and p.extra.get('worker')} "
                f"gpu_indices={p and p.extra.get('gpu_indices')} gpu_name={p and p.gpu_name} "
                f"host={p and p.host} samples={len(g)} sample_gpus={sorted({s.gpu_index for s in g})} "
                f"peak_mib={max((s.memory_used_mib for s in g), default=None)}\n")
EOF
pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null
cp "$PG"/log/*.log "$LOGS"/ 2>/dev/null
tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null
echo "$(el) done"
