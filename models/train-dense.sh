#!/usr/bin/env bash
# The dense baselines of the MemoryFormer comparison (issue 12): a Llama of models/default.conf's
# recipe (data order, windows, schedule, 4/2 heads, tied head) at another width or budget, on the
# Gutenberg train split with models/default.gguf's tokenizer.
#
#   STEPS=200 bash models/train-dense.sh                    # the default shape at 200 steps
#   DIM=448 FFN=1120 STEPS=200 bash models/train-dense.sh   # 14.48M parameters: as many as the
#                                                           # MemoryFormer of τ = 4 (14.43M)
#
# Everything goes to runs/dense-dDIM-fFFN-STEPS/ (ignored by git): dense.gguf, its log and plot.
# Checkpoints every 20 steps; running the script again after an interruption resumes bit-identically.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${MSRNN_SHARED:-$here/../shared}
msrnn=${MSRNN_BIN:-$here/build/msrnn}
dim=${DIM:-256}
ffn=${FFN:-704}
steps=${STEPS:-800}
base=$here/models/default.gguf
out=$here/runs/dense-d$dim-f$ffn-$steps
manifest=$shared/data/gutenberg/MANIFEST.tsv
mkdir -p "$out"
[ -x "$msrnn" ] || make -C "$here" all
threads=${THREADS:-$(nproc)}
. "$here/models/train-lib.sh"

tokenize_splits "$out" "$base" train validation
args=(--config "$here/models/default.conf" --dim "$dim" --ffn "$ffn" --steps "$steps"
      --train "$out/train.bin" --val "$out/validation.bin" -o "$out/dense.gguf" -t "$threads")
train_resumable "$out/dense.gguf" --tokenizer "$base" "${args[@]}"
echo "$out/dense.gguf: $(du -h "$out/dense.gguf" | cut -f1)"
