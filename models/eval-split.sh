#!/usr/bin/env bash
# Whole-split perplexity and bits per byte of a model on the Gutenberg validation and test splits:
# every book of the split in MANIFEST.tsv, 4096-token chunks (BOS + 4095 scored tokens), full cache,
# one JSON line per split. This is how README's default-model results were measured.
# usage: models/eval-split.sh MODEL.gguf [SHARED_DIR]     (about 10 minutes per split for the default model)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
model=$1
shared=${2:-$here/../shared}
for split in validation test; do
    r=$("$here/build/msrnn" perplexity -m "$model" --manifest "$shared/data/gutenberg/MANIFEST.tsv" \
        --split "$split" --ctx 4096 -t "${THREADS:-$(nproc)}" --json)
    printf '{"model": "%s", "split": "%s", "result": %s}\n' "$(basename "$model")" "$split" "$r"
done
