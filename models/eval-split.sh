#!/usr/bin/env bash
# Whole-split perplexity and bits per byte of a model on the Gutenberg validation and test splits
# (every book of the split in MANIFEST.tsv, 4096-token chunks, full cache), one JSON line per split.
# usage: models/eval-split.sh MODEL.gguf [SHARED_DIR]
set -euo pipefail
model=$1
shared=${2:-$(dirname "$0")/../../shared}
man=$shared/data/gutenberg/MANIFEST.tsv
bin=$(dirname "$0")/../build/msrnn
for split in validation test; do
    files=()
    while IFS=$'\t' read -r file _ _ _ _ _ s _; do
        [ "$s" = "$split" ] && files+=(-f "$shared/data/gutenberg/$file")
    done < "$man"
    printf '{"split":"%s","model":"%s","result":' "$split" "$(basename "$model")"
    "$bin" perplexity -m "$model" "${files[@]}" --ctx 4096 -t 2 --json
    printf '}\n'
done
