#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU only) from the llama-cpp-python source package and cache it
# outside the repository, so that tests, CI and studies reuse one binary.
#
# Idempotent: when the cached binary exists and runs, nothing is rebuilt. Prints the binary's path on
# the last line of stdout. Everything else goes to stderr.
#
#   TUNER_CACHE            cache root (default: ~/.cache/sglang-tuner)
#   LLAMA_CPP_PY_VERSION   llama-cpp-python source release holding vendor/llama.cpp (default 0.3.36)
#   LLAMA_BUILD_JOBS       parallel compile jobs (default: number of cores)
#   FORCE_REBUILD=1        rebuild even when a cached binary exists
# apt quiet: no dialogs, no needrestart "which services should be restarted" chatter
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=a
set -euo pipefail

version="${LLAMA_CPP_PY_VERSION:-0.3.36}"
cache="${TUNER_CACHE:-$HOME/.cache/sglang-tuner}/llama-server"
bin_dir="$cache/bin"
binary="$bin_dir/llama-server"
jobs="${LLAMA_BUILD_JOBS:-$(nproc)}"

log() { echo "build-llama-server: $*" >&2; }

# A cached binary counts only if it starts: a half-copied file or a missing shared library must rebuild.
if [[ -x "$binary" && "${FORCE_REBUILD:-0}" != "1" ]] && "$binary" --version >/dev/null 2>&1; then
    log "cached binary is usable: $binary"
    echo "$binary"
    exit 0
fi

need_tools=()
command -v cmake >/dev/null 2>&1 || need_tools+=(cmake)
command -v ninja >/dev/null 2>&1 || need_tools+=(ninja-build)
command -v c++ >/dev/null 2>&1 || need_tools+=(g++)
if ((${#need_tools[@]})); then
    log "installing build tools: ${need_tools[*]}"
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        apt-get update -qq >&2 && apt-get install -y -qq "${need_tools[@]}" >&2
    else
        # cmake and ninja exist as PyPI wheels; a compiler does not.
        python3 -m pip install --quiet cmake ninja >&2
    fi
fi

src_root="$cache/src"
mkdir -p "$src_root"
src_dir="$src_root/llama_cpp_python-$version"
if [[ ! -f "$src_dir/vendor/llama.cpp/CMakeLists.txt" ]]; then
    log "downloading llama-cpp-python==$version source"
    dl_dir=$(mktemp -d "$src_root/dl.XXXXXX")
    python3 -m pip download --quiet --no-deps --no-binary=:all: --dest "$dl_dir" \
        "llama-cpp-python==$version" >&2
    tarball=$(ls "$dl_dir"/llama_cpp_python-*.tar.gz)
    tar -xzf "$tarball" -C "$src_root"
    rm -rf "$dl_dir"
fi
llama_dir="$src_dir/vendor/llama.cpp"
[[ -f "$llama_dir/CMakeLists.txt" ]] || { log "no vendor/llama.cpp in $src_dir"; exit 1; }

# LLAMA_CURL exists only in some llama.cpp versions; passing an unknown option just warns, but we only
# pass it when the tree declares it, so the configure log stays clean.
extra=()
if grep -rqs 'LLAMA_CURL' "$llama_dir/CMakeLists.txt"; then
    extra+=(-DLLAMA_CURL=OFF)
fi

build_dir="$cache/build"
log "configuring in $build_dir"
start=$(date +%s)
cmake -S "$llama_dir" -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=OFF \
    "${extra[@]}" >&2
log "building llama-server with $jobs jobs"
ninja -C "$build_dir" -j "$jobs" llama-server >&2

built="$build_dir/bin/llama-server"
[[ -x "$built" ]] || { log "ninja finished but $built is missing"; exit 1; }

# Copy via a temporary name so a concurrent reader never sees a half-written binary.
mkdir -p "$bin_dir"
cp "$built" "$binary.tmp"
# Any shared library built in the tree (should be none with BUILD_SHARED_LIBS=OFF) goes beside the binary.
find "$build_dir/bin" -maxdepth 1 -name '*.so*' -exec cp -P {} "$bin_dir/" \;
mv "$binary.tmp" "$binary"
if ldd "$binary" | grep -q 'not found'; then
    log "the binary misses shared libraries:"; ldd "$binary" >&2; exit 1
fi
log "built in $(( $(date +%s) - start )) s"
echo "$binary"
