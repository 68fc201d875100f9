#!/usr/bin/env bash
# A MemoryFormer (METHODS.md §4) trained from scratch by msrnn on the Gutenberg train split, with the
# tokenizer, width (256), depth (6), heads (4, MHA: MemoryFormer has no GQA), context (4096) and
# data order of models/default.gguf, so that the two compare at the same tokens.
#
#   bash models/train-memoryformer.sh                      # τ = 8, "paper" weighting, 800 steps
#   TAU=4 bash models/train-memoryformer.sh                # τ = 4 (τ₂ = τ + 2)
#   WEIGHTING=code bash models/train-memoryformer.sh       # the official code's weighting
#   STEPS=200 bash models/train-memoryformer.sh            # a shorter budget (its own folder)
#
# Everything goes to runs/mf-tTAU-WEIGHTING-STEPS/ (ignored by git): init.gguf, then mf.gguf.
# Training checkpoints every 20 steps; running the script again after an interruption resumes
# from the last checkpoint, bit-identically.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${MSRNN_SHARED:-$here/../shared}
msrnn=${MSRNN_BIN:-$here/build/msrnn}
tau=${TAU:-8}
weighting=${WEIGHTING:-paper}
steps=${STEPS:-800}
base=$here/models/default.gguf
out=$here/runs/mf-t$tau-$weighting-$steps
manifest=$shared/data/gutenberg/MANIFEST.tsv
mkdir -p "$out"
[ -x "$msrnn" ] || make -C "$here" all
threads=${THREADS:-$(nproc)}
. "$here/models/train-lib.sh"

tokenize_splits "$out" "$base" train validation
if [ ! -f "$out/init.gguf" ]; then
  "$msrnn" init-model --vocab-from "$base" --arch memoryformer --dim 256 --layers 6 --heads 4 \
    --ctx 4096 --tied --hash-bits "$tau" --weighting "$weighting" --seed 1 -o "$out/init.gguf"
fi
args=(--config "$here/models/memoryformer.conf" --steps "$steps" --train "$out/train.bin"
      --val "$out/validation.bin" -o "$out/mf.gguf" -t "$threads")
train_resumable "$out/mf.gguf" --init "$out/init.gguf" "${args[@]}"
echo "$out/mf.gguf: $(du -h "$out/mf.gguf" | cut -f1)"
