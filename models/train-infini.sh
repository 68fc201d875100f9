#!/usr/bin/env bash
# An Infini-attention model (METHODS.md §2) from msrnn's default model: convert, then continual
# pre-training on 4096-token windows of the Gutenberg train split.
#
#   bash models/train-infini.sh                 # segment 512, linear rule
#   RULE=delta SEGMENT=1024 bash models/train-infini.sh
#
# Steps: the train and validation splits as token shards with models/default.gguf's tokenizer;
# `msrnn convert --to infini` (every weight copied, gates beta = 0); `msrnn train` with
# models/infini.conf. Everything goes to runs/infini-RULE-SEGMENT/ (ignored by git). Training
# checkpoints every 10 steps: running the script again after an interruption resumes from the last
# checkpoint, bit-identically.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${MSRNN_SHARED:-$here/../shared}
msrnn=${MSRNN_BIN:-$here/build/msrnn}
rule=${RULE:-linear}
segment=${SEGMENT:-512}
out=$here/runs/infini-$rule-$segment
manifest=$shared/data/gutenberg/MANIFEST.tsv
mkdir -p "$out"
[ -x "$msrnn" ] || make -C "$here" all
threads=${THREADS:-$(nproc)}

for split in train validation; do
  if [ ! -f "$out/$split.bin" ]; then
    "$msrnn" tokenize-corpus -m "$here/models/default.gguf" --manifest "$manifest" --split "$split" \
      -o "$out/$split.bin"
  fi
done
if [ ! -f "$out/converted.gguf" ]; then
  "$msrnn" convert --to infini --segment "$segment" --rule "$rule" -m "$here/models/default.gguf" \
    -o "$out/converted.gguf"
fi
args=(--config "$here/models/infini.conf" --train "$out/train.bin" --val "$out/validation.bin"
      -o "$out/infini.gguf" -t "$threads" ${EXTRA:-})
if [ -f "$out/infini.gguf.ckpt.gguf" ] && [ ! -f "$out/infini.gguf" ]; then
  "$msrnn" train "${args[@]}" --resume
elif [ ! -f "$out/infini.gguf" ]; then
  "$msrnn" train "${args[@]}" --init "$out/converted.gguf"
fi
if [ ! -f "$out/infini.gguf" ]; then
  echo "training stopped before the end; run this script again to resume from the checkpoint" >&2
  exit 1
fi
echo "$out/infini.gguf: $(du -h "$out/infini.gguf" | cut -f1)"
