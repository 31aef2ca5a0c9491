#!/usr/bin/env bash
# Make a separate virtualenv (Python 3.11) that runs the REAL SGLang server on this CPU-only machine:
# SGLang's CPU engine (SGLANG_USE_CPU_ENGINE=1), torch 2.13.0+cpu, the runtime packages of the text path,
# and our `sgl_kernel` stand-in (scripts/sgl_kernel_cpu: one helper in plain torch, the rest raise when
# called) because no CPU build of sgl-kernel exists. See docs/sglang-cpu.md and
# shared/facts/sglang-cpu.md for why each piece is here.
#
# Idempotent: when the venv passes the probe (the stamp of this recipe matches, sglang.srt.server_args and
# sgl_kernel import, torch is 2.13.0) nothing is installed and it exits in seconds. Prints the venv's
# python on the LAST line of stdout; everything else goes to stderr.
#
#   TUNER_CACHE      cache root (default: ~/.cache/sglang-tuner)
#   SGLANG_VERSION   sglang release (default 0.5.23; the package list below was found for 0.5.23)
#   PYTHON           interpreter for the venv (default python3.11; torch 2.13.0+cpu is a cp311 wheel here)
#   FORCE=1          rebuild the venv from scratch
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="${SGLANG_VERSION:-0.5.23}"
cache="${TUNER_CACHE:-$HOME/.cache/sglang-tuner}"
venv="$cache/sglang-cpu-$version-venv"
py="$venv/bin/python"
torch_version="2.13.0"
stub_src="$here/sgl_kernel_cpu"

log() { echo "setup-sglang-cpu: $*" >&2; }

# Runtime modules SGLang imports on the CPU text path (found by iterating on ImportError with 0.5.23;
# shared/facts/sglang-cpu.md). datasets is only for SGLang's benchmark client (sglang.benchmark.serving).
packages=(
    aiohttp fastapi "uvicorn>=0.51" uvloop orjson pyzmq psutil pydantic requests numpy
    "transformers==5.19.0" "tokenizers==0.23.2" safetensors sentencepiece tiktoken setproctitle pybase64
    python-multipart msgspec xxhash zstandard prometheus-client partial_json_parser interegular einops
    packaging tqdm regex pillow scipy "openai==2.8.0" "xgrammar==0.2.7" "blobfile==3.0.0" distro watchfiles
    IPython nvidia-ml-py python-dateutil "llguidance>=1.7.6,<2" gguf "openai-harmony==0.0.4" anthropic dill
    compressed_tensors jsonschema soundfile tabulate datasets
)
# Installed with --no-deps: their declared dependencies are CUDA wheels or a torch we do not want.
nodeps=("sglang==$version" "torchvision==0.28.0" "torchaudio==2.11.0")

# The stamp names this recipe (package lists + stand-in source); a change to either rebuilds the parts.
recipe_hash() {
    {
        printf '%s\n' "$version" "$torch_version" "${packages[@]}" "${nodeps[@]}"
        find "$stub_src" -type f \( -name '*.py' -o -name '*.toml' \) -print0 | sort -z | xargs -0 cat
    } | sha256sum | cut -c1-16
}
stamp="$venv/.tuner-sglang-cpu-stamp"
want_stamp="$(recipe_hash)"

probe() {
    [[ -x "$py" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]] || return 1
    "$py" - "$version" "$torch_version" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
assert version("sglang") == sys.argv[1], version("sglang")
import torch
assert torch.__version__.split("+")[0] == sys.argv[2], torch.__version__
import sglang.srt.server_args  # noqa: F401
import sgl_kernel
import sgl_kernel.scalar_type  # noqa: F401
assert callable(sgl_kernel.assign_req_to_token_pool_cpu)
PY
}

if [[ "${FORCE:-0}" != "1" ]] && probe; then
    log "venv is usable: $venv"
    echo "$py"
    exit 0
fi

# pip prints "pip's dependency resolver does not currently take into account ..." plus one line per unmet
# requirement of a package installed with --no-deps (sglang wants torch 2.14.1, sgl-kernel, flashinfer...).
# Those are known and deliberate; drop them so CI logs stay readable. Any other conflict line stays. Also
# dropped: "WARNING: Location 'file:///opt/pypi/simple/X/' is ignored" (this machine's local mirrors in
# pip.conf lack most packages; pip then uses the registry, as intended).
quiet_pip() {
    local rc
    set +e
    "$py" -m pip "$@" 2>&1 >/dev/null |
        { grep -v -E "^ERROR: pip's dependency resolver does not currently take into account|^(sglang|torchvision|torchaudio|sgl-kernel) [^ ]+ requires |^WARNING: Location 'file://[^']*' is ignored" >&2 || true; }
    rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}

# Bytes received on all interfaces: a best-effort measure of what the set-up downloaded (pip's HTTP cache
# does not help here when the registry's responses carry no Cache-Control header, as through this
# machine's proxy; a rebuild then downloads again -- the venv itself is the cache).
rx_bytes() { awk 'NR > 2 && $1 != "lo:" { sum += $2 } END { printf "%.0f\n", sum }' /proc/net/dev 2>/dev/null || echo 0; }
rx_start=$(rx_bytes)
start=$(date +%s)
if [[ "${FORCE:-0}" == "1" ]]; then
    log "FORCE=1: removing $venv"
    rm -rf "$venv"
fi
mkdir -p "$cache"
if [[ ! -x "$py" ]]; then
    log "creating $venv"
    "${PYTHON:-python3.11}" -m venv "$venv"
    quiet_pip install --quiet --upgrade pip
fi
rm -f "$stamp"

# torch pinned by a constraints file, so no other install can replace it with a (CUDA) build from the
# registry. 2.13.0+cpu is a local wheel here (pip's find-links); sglang asks for 2.14.1 but runs on it.
constraints="$venv/tuner-constraints.txt"
echo "torch==$torch_version" >"$constraints"


log "installing torch $torch_version and ${#packages[@]} runtime packages (one pip call)"
quiet_pip install --quiet -c "$constraints" "torch==$torch_version" "${packages[@]}"

# Last, and without dependencies: pip skips its conflict check for --no-deps installs.
log "installing ${nodeps[*]} with --no-deps"
quiet_pip install --quiet --no-deps -c "$constraints" "${nodeps[@]}"

site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# --- torchvision / torchaudio import workarounds --------------------------------------------------------
# The registry's torchvision 0.28.0 and torchaudio 2.11.0 are CUDA builds: their compiled extensions do not
# load against torch 2.13.0+cpu. SGLang imports both modules (multimodal code only, never used on the text
# path), so they must import without their extensions:
#  - torchvision: `_meta_registrations` / `_autograd_registrations` register ops of the missing `_C`
#    extension and fail ("operator torchvision::nms does not exist"); import them only when `_C` loaded.
#  - torchaudio: importing it tries to load lib/*.so; with those moved aside it falls back cleanly.
# Both steps are idempotent (a marker comment / an empty lib/ means done).
log "patching torchvision/torchaudio to import without their CUDA extensions"
"$py" - "$site" <<'PY' >&2
import re
import sys
from pathlib import Path

site = Path(sys.argv[1])
init = site / "torchvision" / "__init__.py"
text = init.read_text()
marker = "# sglang-tuner: CPU torch"
guarded = ("_autograd_registrations", "_meta_registrations")
if marker not in text:
    # the `from torchvision import (...)` statement (one line or parenthesised) naming the registrations
    pattern = r"^from torchvision import (?:\(([^)]*)\)|([^\n(#]*))[^\n]*\n"
    m = next((m for m in re.finditer(pattern, text, flags=re.M) if any(g in m.group(0) for g in guarded)), None)
    if m is None:
        sys.exit(f"no `from torchvision import ... _meta_registrations` in {init}: update this patch step")
    names = [n.strip() for n in (m.group(1) or m.group(2)).split(",") if n.strip()]
    kept = [n for n in names if n not in guarded]
    skipped = [n for n in names if n in guarded]
    block = f"from torchvision import {', '.join(kept)}  # noqa: F401\n" if kept else ""
    block += (
        f"{marker}: the registrations below need the _C extension, which does not load\n"
        "from .extension import _has_ops as _sglang_tuner_has_ops\n"
        "if _sglang_tuner_has_ops():\n"
        f"    from torchvision import {', '.join(skipped)}  # noqa: F401\n"
    )
    init.write_text(text[: m.start()] + block + text[m.end() :])
    print(f"patched {init}")
lib = site / "torchaudio" / "lib"
aside = site / "torchaudio" / "lib.cuda-disabled"
sos = sorted(lib.glob("*.so")) if lib.is_dir() else []
if sos:
    aside.mkdir(exist_ok=True)
    for so in sos:
        so.rename(aside / so.name)
    print(f"moved {len(sos)} torchaudio extension(s) to {aside}")
PY

# --- sgl_kernel: our stand-in + scalar_type.py from the real wheel --------------------------------------
# The real wheel is 373 MB of CUDA code; only its pure-Python sgl_kernel/scalar_type.py is needed. Extract
# that one file once and cache it; the wheel itself is not kept (and not put in pip's cache).
kernel_req="$("$py" - <<'PY'
import re
from importlib.metadata import requires
for r in requires("sglang") or []:
    name = re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower().replace("_", "-")
    if name in ("sgl-kernel", "sglang-kernel") and "extra ==" not in r:
        print(r.split(";")[0].replace(" ", ""))
        break
PY
)"
[[ -n "$kernel_req" ]] || { log "sglang $version declares no sgl-kernel requirement"; exit 1; }
scalar_dir="$cache/sgl-kernel-files/$(echo "$kernel_req" | tr -c 'A-Za-z0-9.=_-' '_')"
scalar_file="$scalar_dir/scalar_type.py"
if [[ ! -s "$scalar_file" ]]; then
    log "downloading $kernel_req (large CUDA wheel) to extract sgl_kernel/scalar_type.py"
    dl=$(mktemp -d "$cache/sgl-kernel-dl.XXXXXX")
    trap 'rm -rf "$dl"' EXIT
    quiet_pip download --quiet --no-deps --no-cache-dir --only-binary=:all: --dest "$dl" "$kernel_req"
    wheel=$(ls "$dl"/*.whl)
    log "downloaded $(du -h "$wheel" | cut -f1) $(basename "$wheel")"
    mkdir -p "$scalar_dir"
    "$py" - "$wheel" "$scalar_file" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("sgl_kernel/scalar_type.py")
with open(sys.argv[2] + ".tmp", "wb") as f:
    f.write(data)
PY
    mv "$scalar_file.tmp" "$scalar_file"
    basename "$wheel" >"$scalar_dir/SOURCE"
    rm -rf "$dl"
    trap - EXIT
fi

# Install the stand-in as a normal package (pip records every file, so uninstall/upgrade is clean): stage
# a copy of scripts/sgl_kernel_cpu with the extracted scalar_type.py added, then pip install it.
log "installing the sgl_kernel stand-in from $stub_src"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$stub_src/." "$stage/"
cp "$scalar_file" "$stage/src/sgl_kernel/scalar_type.py"
quiet_pip install --quiet --no-deps --no-build-isolation --force-reinstall "$stage"
rm -rf "$stage"
trap - EXIT

echo "$want_stamp" >"$stamp"
if ! probe; then
    log "the venv does not pass the probe; what fails:"
    "$py" -c "import torch, sglang.srt.server_args, sgl_kernel, sgl_kernel.scalar_type; print(torch.__version__)" >&2 || true
    rm -f "$stamp"
    exit 1
fi
log "ready in $(($(date +%s) - start)) s: $venv ($(du -sh "$venv" | cut -f1)); about $((($(rx_bytes) - rx_start) / 1000000)) MB received over the network"
echo "$py"
