#!/usr/bin/env bash
# Reproduce models/default.gguf: msrnn's default model, trained by msrnn on the train split of
# ../shared/data/gutenberg (PG-19-style split by book, MANIFEST.tsv).
#
#   bash models/train-default.sh            # run (or continue) the whole recipe
#
# Steps: a 4096-piece SentencePiece-style BPE vocabulary on the train books; the train and
# validation splits as token shards; then `msrnn train` with models/default.conf. Everything goes
# to runs/default/ (ignored by git). Training checkpoints every 20 steps: if the script is
# interrupted (Ctrl-C, a lost session), running it again resumes bit-identically from the last
# checkpoint. The result is copied to models/default.gguf.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${MSRNN_SHARED:-$here/../shared}
msrnn=${MSRNN_BIN:-$here/build/msrnn}
out=$here/runs/default
manifest=$shared/data/gutenberg/MANIFEST.tsv
mkdir -p "$out"
[ -x "$msrnn" ] || make -C "$here" all
threads=${THREADS:-$(nproc)}

if [ ! -f "$out/tokenizer.gguf" ]; then
  "$msrnn" tokenizer-train --vocab 4096 --manifest "$manifest" --split train -o "$out/tokenizer.gguf"
fi
for split in train validation test; do
  if [ ! -f "$out/$split.bin" ]; then
    "$msrnn" tokenize-corpus -m "$out/tokenizer.gguf" --manifest "$manifest" --split "$split" \
      -o "$out/$split.bin"
  fi
done
args=(--config "$here/models/default.conf" --train "$out/train.bin" --val "$out/validation.bin"
      -o "$out/default.gguf" -t "$threads")
if [ -f "$out/default.gguf.ckpt.gguf" ] && [ ! -f "$out/default.gguf" ]; then
  "$msrnn" train "${args[@]}" --resume
elif [ ! -f "$out/default.gguf" ]; then
  "$msrnn" train "${args[@]}" --tokenizer "$out/tokenizer.gguf"
fi
if [ ! -f "$out/default.gguf" ]; then
  echo "training stopped before the end; run this script again to resume from the checkpoint" >&2
  exit 1
fi
cp "$out/default.gguf" "$here/models/default.gguf"
cp "$out/default.gguf.log.csv" "$here/models/default.train-log.csv"
cp "$out/default.gguf.loss.svg" "$here/models/default.loss.svg"
echo "models/default.gguf: $(du -h "$here/models/default.gguf" | cut -f1)"
