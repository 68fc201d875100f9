#!/usr/bin/env bash
# A DiJiang model (METHODS.md §3) from msrnn's default model: convert, then fine-tune on 1/16, 1/8
# and 1/4 of the teacher's training tokens (50, 100 and 200 steps of models/dijiang.conf).
#
#   bash models/train-dijiang.sh                   # plain next-token loss (the paper's recipe)
#   LOSS=distil bash models/train-dijiang.sh       # KL to the teacher's logits (train --teacher)
#   SAMPLER=random bash models/train-dijiang.sh    # the official code's random P (ablation)
#
# Everything goes to runs/dijiang-LOSS-SAMPLER/ (ignored by git): converted.gguf, then
# step-50.gguf, step-100.gguf and step-200.gguf (checkpoints: they open as models). Training
# checkpoints every 10 steps; running the script again after an interruption resumes from the last
# checkpoint, bit-identically.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${MSRNN_SHARED:-$here/../shared}
msrnn=${MSRNN_BIN:-$here/build/msrnn}
loss=${LOSS:-plain}
sampler=${SAMPLER:-halton}
teacher=$here/models/default.gguf
out=$here/runs/dijiang-$loss-$sampler
manifest=$shared/data/gutenberg/MANIFEST.tsv
mkdir -p "$out"
[ -x "$msrnn" ] || make -C "$here" all
threads=${THREADS:-$(nproc)}
case $loss in plain) extra=() ;; distil) extra=(--teacher "$teacher") ;;
  *) echo "LOSS must be plain or distil" >&2; exit 2 ;; esac

for split in train validation; do
  if [ ! -f "$out/$split.bin" ]; then
    "$msrnn" tokenize-corpus -m "$teacher" --manifest "$manifest" --split "$split" \
      -o "$out/$split.bin"
  fi
done
if [ ! -f "$out/converted.gguf" ]; then
  "$msrnn" convert --to dijiang --sampler "$sampler" -m "$teacher" -o "$out/converted.gguf"
fi
ckpt=$out/dijiang.gguf.ckpt.gguf
args=(--config "$here/models/dijiang.conf" --train "$out/train.bin" --val "$out/validation.bin"
      -o "$out/dijiang.gguf" -t "$threads" "${extra[@]}")
for n in 50 100 200; do
  [ -f "$out/step-$n.gguf" ] && continue
  done_steps=0
  if [ -f "$ckpt" ]; then
    done_steps=$("$msrnn" info "$ckpt" | awk '$1 == "msrnn.train.step" {print $3}')
  fi
  if [ "$done_steps" -lt "$n" ]; then
    if [ -f "$ckpt" ]; then
      "$msrnn" train "${args[@]}" --resume --stop-after $((n - done_steps))
    else
      "$msrnn" train "${args[@]}" --init "$out/converted.gguf" --stop-after "$n"
    fi
  fi
  cp "$ckpt" "$out/step-$n.gguf.tmp" && mv "$out/step-$n.gguf.tmp" "$out/step-$n.gguf"
done
echo "$out: step-50.gguf (1/16), step-100.gguf (1/8), step-200.gguf (1/4)"
