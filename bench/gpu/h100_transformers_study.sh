#!/usr/bin/env bash
# The H100 run of issue 5: a real study with `transformers serve` on a random-weight 0.94 B Llama,
# plus the GPU-marked tests. Run on the device machine from the repo root with the .whl folder
# carried (see bench/gpu/README.md). Everything it prints goes to $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
TRIALS="${TRIALS:-14}"
exec > >(tee "$OUT/run.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
command -v transformers || { echo "no transformers CLI on PATH"; exit 1; }
t0=$(date +%s)
python3 -m tuner.models.hf_random storage/models/hf-llama-1b --preset 1b || exit 1
echo "model written in $(( $(date +%s) - t0 )) s"
python3 -m tuner.study --space search_spaces/transformers-h100-tiny.yaml --trials "$TRIALS" --seed 0 \
  --storage "sqlite:///$OUT/h100-study.db" --study transformers-h100 --out /tmp/study-out
echo "study exit code $? after $(( $(date +%s) - t0 )) s"
tar czf "$OUT/study-logs.tgz" -C /tmp/study-out . 2>/dev/null
python3 -m pytest -q -rs -m gpu -p no:cacheprovider tests/test_telemetry.py tests/test_engines_real.py 2>&1 | tail -25 | tee "$OUT/gpu-tests.txt"
nvidia-smi --query-gpu=memory.used --format=csv
