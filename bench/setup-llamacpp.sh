#!/usr/bin/env bash
# setup-llamacpp.sh — fetch and build the llama.cpp peer that bench/vs-llamacpp measures msrnn against.
#
# Idempotent: each step is skipped when its output already exists.
#   1. npm installs node-llama-cpp@3.21.1 and its prebuilt linux-x64 binaries into ./node_modules (the
#      versions are pinned in ./package.json; --ignore-scripts so nothing is downloaded or compiled by npm).
#   2. The llama.cpp source that node-llama-cpp ships as a git bundle is cloned into bench/llama.cpp.
#   3. llama-bench.cpp gets a one-line patch so that -ctk/-ctv accept f32, then it and llama-server
#      (bench/serve-throughput's peer) are built natively
#      (Release, GGML_NATIVE=ON, CPU only, no curl/openssl) into bench/llama.cpp/build: llama-bench, libllama.
#   4. bench/llamacpp_greedy.c is compiled against that libllama into bench/llama.cpp/build/llamacpp-greedy.
# Prints the llama.cpp commit (git describe) at the end. JOBS (default 2) sets the build parallelism.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LC="$ROOT/bench/llama.cpp"
BUILD="$LC/build"
JOBS="${JOBS:-2}"
cd "$ROOT"

if [ ! -f node_modules/node-llama-cpp/package.json ] || [ ! -d node_modules/@node-llama-cpp/linux-x64/bins ] ||
   ! grep -q '"version": "3.21.1"' node_modules/node-llama-cpp/package.json; then
  echo "setup-llamacpp: npm install node-llama-cpp@3.21.1" >&2
  npm i -E --ignore-scripts --omit=optional --no-audit --no-fund node-llama-cpp@3.21.1 @node-llama-cpp/linux-x64@3.21.1 >&2
fi
BUNDLE="$ROOT/node_modules/node-llama-cpp/llama/gitRelease.bundle"

if [ ! -d "$LC/.git" ]; then
  echo "setup-llamacpp: cloning $BUNDLE" >&2
  git clone -q "$BUNDLE" "$LC"
fi

# llama-bench at this commit accepts f16/bf16/q* for -ctk/-ctv but not f32; msrnn's KV cache is f32, so
# teach its type parser the name "f32" (one line, marked; `git -C bench/llama.cpp diff` shows it).
BENCH_SRC="$LC/tools/llama-bench/llama-bench.cpp"
if ! grep -q 'msrnn: f32 KV cache' "$BENCH_SRC"; then
  sed -i 's|^static ggml_type ggml_type_from_name(const std::string & s) {$|&\n    if (s == "f32") { return GGML_TYPE_F32; }  // msrnn: f32 KV cache|' "$BENCH_SRC"
  grep -q 'msrnn: f32 KV cache' "$BENCH_SRC" || { echo "setup-llamacpp: could not patch $BENCH_SRC" >&2; exit 1; }
fi

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$LC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENMP=ON -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$BUILD/bin" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$BUILD/bin" >&2
fi
# Incremental: a no-op once built; the first build takes ~25 minutes on 2 cores.
echo "setup-llamacpp: building llama-bench, llama-server and libllama (Release, GGML_NATIVE=ON, -j$JOBS)" >&2
cmake --build "$BUILD" -j "$JOBS" --target llama-bench llama llama-server >&2

GREEDY="$BUILD/llamacpp-greedy"
if [ ! -x "$GREEDY" ] || [ "$ROOT/bench/llamacpp_greedy.c" -nt "$GREEDY" ]; then
  echo "setup-llamacpp: compiling bench/llamacpp_greedy.c" >&2
  gcc -O2 -std=c11 -Wall -Wextra -Werror -o "$GREEDY" "$ROOT/bench/llamacpp_greedy.c" \
    -I"$LC/include" -I"$LC/ggml/include" -L"$BUILD/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$BUILD/bin"
fi

echo "llama.cpp $(git -C "$LC" describe --tags --always 2>/dev/null) ($(git -C "$LC" rev-parse HEAD), llama-bench patched to accept -ctk/-ctv f32)"
