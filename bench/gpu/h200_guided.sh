#!/usr/bin/env bash
# Issue 16 on the 2-GPU H200 machine: the guided search with `transformers serve`, 12 trials per seed,
# against a wide look at the space, then the bests re-measured in interleaved rounds
# (bench/gpu/transformers_guided.py says what each step does). Run from the repo root with `.whl`
# carried (the tuner's and the serving wheels for Python 3.12). Jobs per GPU come from GPU0/GPU1:
#   GPU0="seed:0 seed:2" GPU1="seed:1 look:0/2" bench/gpu/h200_guided.sh
#   GPU0="remeasure:2" GPU1="remeasure:2" bench/gpu/h200_guided.sh      # after all seeds and look parts
#   RESTORE=bench/results/h200-guided GPU0="seed:3 seed:4" bench/gpu/h200_guided.sh  # a later session
# State lives in /tmp/gpurun (kept while the machine stays warm); a finished job is not run again, so a
# call can pick up where the last one stopped. No job starts after DEADLINE s, and a running one is
# interrupted (SIGINT: the trial is recorded) at DEADLINE + 30 s, so everything comes back in $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
DEADLINE="${DEADLINE:-500}"
RUN="${RUN:-/tmp/gpurun}"; mkdir -p "$RUN/done" "$RUN/logs"   # outside the repo: kept while the machine is
t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
exec >>"$OUT/run.log" 2>&1   # (no tee: `wait` would wait for its process substitution)
# REHEARSE=1: the same steps on a CPU machine (tiny model, float32, no GPU flags), TRIALS smaller
REHEARSE="${REHEARSE:-}"; TRIALS="${TRIALS:-12}"
if [ -n "$REHEARSE" ]; then :
elif [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY="${PY:-python3}"
SPACE="$RUN/space.yaml"
# RESTORE=DIR: the seed databases and look results of earlier sessions (committed) join this one's; a
# restored job runs again and only adds what is missing (a study counts --trials in total, the look
# skips measured points), so a part cut at an earlier call's limit is finished
for f in ${RESTORE:+"$RESTORE"/seed-*.db "$RESTORE"/look-*.json}; do
  [ -e "$RUN/$(basename "$f")" ] || cp "$f" "$RUN/"
done
if [ -n "$REHEARSE" ]; then
  [ -f "$RUN/tiny/config.json" ] || "$TF_PY" -m tuner.models.hf_random "$RUN/tiny" --preset tiny --device cpu --dtype float32 || exit 1
  "$PY" bench/gpu/transformers_guided.py space "$SPACE" --cpu-rehearsal "$RUN/tiny" "$(dirname "$TF_PY")/transformers" || exit 1
else
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv
  [ -f storage/models/hf-llama-1b/config.json ] || "$PY" -m tuner.models.hf_random storage/models/hf-llama-1b --preset 1b || exit 1
  "$PY" bench/gpu/transformers_guided.py space "$SPACE" || exit 1
fi
echo "[$(el) s] set up"

job() {  # job GPU SPEC
  local gpu=$1 spec=$2 name=${2//[:\/]/-} left gpuflag="--gpus $1"
  [ -n "$REHEARSE" ] && { gpuflag=""; gpu=-1; }
  [[ $spec == remeasure:* ]] && [ -f "$RUN/done/$name-gpu$gpu" ] && return 0
  [ -f "$RUN/done/$name" ] && { echo "[$(el) s] gpu$gpu $spec: done before"; return 0; }
  left=$(( DEADLINE + 30 - $(el) ))
  case $spec in
    seed:*)   [ "$(el)" -lt $(( DEADLINE - 120 )) ] || { echo "[$(el) s] gpu$gpu $spec: no time left"; return 1; }
              local s=${spec#seed:}
              timeout -s INT "$left" "$PY" -m tuner.study --space "$SPACE" --trials "$TRIALS" --seed "$s" $gpuflag \
                --storage "sqlite:///$RUN/seed-$s.db" --study "tf-guided-seed-$s" --out "$RUN/study-out" \
                > "$RUN/logs/$name.log" 2>&1 ;;
    look:*)   [ "$(el)" -lt $(( DEADLINE - 150 )) ] || { echo "[$(el) s] gpu$gpu $spec: no time left"; return 1; }
              local part=${spec#look:}
              timeout -s INT "$left" "$PY" bench/gpu/transformers_guided.py look --space "$SPACE" --gpu "$gpu" \
                --part "${part%/*}" --parts "${part#*/}" --output "$RUN/$name.json" > "$RUN/logs/$name.log" 2>&1 ;;
    remeasure:*) timeout -s INT "$left" "$PY" bench/gpu/transformers_guided.py remeasure --space "$SPACE" \
                --gpu "$gpu" --rounds "${spec#remeasure:}" --dbs "$RUN"/seed-*.db --looks "$RUN"/look-*.json \
                --output "$RUN/remeasure-gpu$gpu.json" > "$RUN/logs/$name-gpu$gpu.log" 2>&1 ;;
  esac
  local rc=$?
  [[ $spec == remeasure:* ]] && name="$name-gpu$gpu"
  echo "[$(el) s] gpu$gpu $spec: exit $rc"; [ $rc -eq 0 ] || tail -n 25 "$RUN/logs/$name"*.log
  [ $rc -eq 0 ] && touch "$RUN/done/$name"
  save
  return 0
}
save() {  # everything so far into $OUT, so a call cut at its limit still brings it back
  tar czf "$OUT/gpurun.tgz.part" --exclude=study-out --exclude=tiny -C "$RUN" . && mv "$OUT/gpurun.tgz.part" "$OUT/gpurun.tgz"
}
chain() { local gpu=$1; shift; for spec in "$@"; do job "$gpu" "$spec" || break; done; }
# shellcheck disable=SC2086
chain 0 ${GPU0:-} & a=$!; chain 1 ${GPU1:-} & b=$!; wait $a $b
ls "$RUN"/remeasure-gpu*.json >/dev/null 2>&1 && "$PY" bench/gpu/transformers_guided.py summary \
  "$RUN"/remeasure-gpu*.json --output "$RUN/summary.md"
[ -n "$REHEARSE" ] || nvidia-smi --query-gpu=index,memory.used --format=csv
save && echo "[$(el) s] state in \$OUT/gpurun.tgz"
tar czf "$OUT/study-logs.tgz" -C "$RUN" study-out 2>/dev/null
