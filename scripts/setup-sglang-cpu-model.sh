#!/usr/bin/env bash
# Write the tiny random Llama that the real SGLang CPU server loads (tuner/models/sglang_tiny.py: 4 layers,
# hidden 256, 4 heads / 2 KV heads, vocab 8192, float32, a byte-level BPE tokenizer trained locally,
# ChatML template, no end-of-sequence token) into the cache, using the venv of setup-sglang-cpu.sh.
#
# Idempotent: when the cached directory was written by the current model format, nothing is done. Prints
# the model directory on the LAST line of stdout; everything else goes to stderr.
#
#   TUNER_CACHE      cache root (default: ~/.cache/sglang-tuner)
#   FORCE=1          rewrite the model (the venv is not rebuilt; use FORCE=1 on setup-sglang-cpu.sh for that)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${TUNER_CACHE:-$HOME/.cache/sglang-tuner}"
model="$cache/models/sglang-tiny-llama"

log() { echo "setup-sglang-cpu-model: $*" >&2; }

py="$(FORCE=0 "$repo/scripts/setup-sglang-cpu.sh" | tail -n 1)"
want="$(cd "$repo" && "$py" -c 'from tuner.models.sglang_tiny import FORMAT; print(FORMAT)')"

if [[ "${FORCE:-0}" != "1" && -s "$model/model.safetensors" && -s "$model/tokenizer.json" ]] &&
    "$py" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["format"] != sys.argv[2])' \
        "$model/tuner-model.json" "$want" 2>/dev/null; then
    log "model is up to date: $model"
    echo "$model"
    exit 0
fi

# Write beside the target and swap it in, so a reader never sees a half-written model.
mkdir -p "$cache/models"
tmp="$(mktemp -d "$cache/models/.sglang-tiny-llama.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "writing the model with $py"
(cd "$repo" && HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$py" -m tuner.models.sglang_tiny "$tmp" 2>/dev/null) >&2
rm -rf "$model"
mv "$tmp" "$model"
trap - EXIT
chmod 755 "$model"
log "wrote $model"
echo "$model"
