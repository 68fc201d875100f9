#!/usr/bin/env bash
# run.sh REPO OUTDIR — record exact fingerprints of what the msrnn built in REPO computes.
#
# REPO must already be built (`make` there: REPO/build/msrnn and REPO/build/libmsrnn.a). Every
# file written to OUTDIR except meta.txt and stderr/ is meant to be byte-identical between two
# builds that behave identically; compare two OUTDIRs with compare.sh. See README.md.
#
# Environment: MODEL (default /work/main/models/default.gguf), SHARED (default /work/shared),
# CC (default gcc), OPENBLAS_DIR (default /usr/lib/x86_64-linux-gnu/openblas-pthread).
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 REPO OUTDIR" >&2
    exit 2
fi
REPO=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" || exit 2
OUT=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=${MODEL:-/work/main/models/default.gguf}
SHARED=${SHARED:-/work/shared}
G=$SHARED/data/gutenberg
TEXT=$G/pg55.txt
CC=${CC:-gcc}
OPENBLAS_DIR=${OPENBLAS_DIR:-/usr/lib/x86_64-linux-gnu/openblas-pthread}
M=$REPO/build/msrnn
# Idle OpenMP workers sleep instead of spinning: the same results (tested), but 6x faster when other
# jobs share the cores (spinning workers fight the busy ones). Set OMP_WAIT_POLICY=active to override.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
T0=$(date +%s.%N)

for f in "$M" "$REPO/build/libmsrnn.a" "$REPO/include/msrnn.h" "$MODEL" "$TEXT"; do
    [ -e "$f" ] || { echo "run.sh: $f is missing (build REPO with make first)" >&2; exit 1; }
done
# OUTDIR must be empty or an earlier run.sh output (never wipe anything else)
if [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/meta.txt" ]; then
    echo "run.sh: $OUT is not empty and not an earlier run.sh output; refusing to overwrite it" >&2
    exit 2
fi
rm -rf "${OUT:?}"/*
mkdir -p "$OUT/stderr"
WORK=$(mktemp -d /tmp/identity-work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# Everything below runs inside WORK with relative file names, so no output names a random path.
cd "$WORK" || exit 1

{
    echo "repo $REPO"
    echo "commit $(git -C "$REPO" rev-parse HEAD 2>/dev/null) $(git -C "$REPO" status --porcelain 2>/dev/null | grep -v '^??' | wc -l) modified tracked files"
    echo "date $(date -u +%FT%TZ)"
    echo "host $(uname -n) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), OMP_WAIT_POLICY=$OMP_WAIT_POLICY"
} >"$OUT/meta.txt"

# -------- the dump program, linked against REPO's library ---------------------------------------
if ! $CC -O2 -std=c11 -Wall -I"$REPO/include" "$HERE/dump.c" "$REPO/build/libmsrnn.a" \
    -L"$OPENBLAS_DIR" -Wl,-rpath,"$OPENBLAS_DIR" -lopenblas -fopenmp -lm -o dump 2>"$OUT/stderr/dump-build.txt"; then
    echo "run.sh: dump.c does not build against $REPO (see $OUT/stderr/dump-build.txt)" >&2
    exit 1
fi

sha256sum "$MODEL" "$TEXT" | sed "s#  .*/#  #" >"$OUT/inputs.sha256"

# -------- random-weight models of every weight type, plus the default model ----------------------
: >"$OUT/init-models.txt"
for ty in f32 f16 bf16 q8_0 q4_0; do
    "$M" init-model --vocab-from "$MODEL" -o "rand-$ty.gguf" --dim 128 --layers 2 --heads 4 \
        --kv-heads 2 --ffn 320 --type "$ty" --seed 5 >>"$OUT/init-models.txt" 2>>"$OUT/stderr/init-model.txt"
    echo "init-model $ty rc $?" >>"$OUT/init-models.txt"
done
sha256sum rand-*.gguf >>"$OUT/init-models.txt"

for ty in f32 f16 bf16 q8_0 q4_0; do
    ./dump "rand-$ty.gguf" "$TEXT" >"$OUT/dump-rand-$ty.txt" 2>"$OUT/stderr/dump-rand-$ty.txt"
    echo "rc $?" >>"$OUT/dump-rand-$ty.txt"
done
./dump "$MODEL" "$TEXT" >"$OUT/dump-default.txt" 2>"$OUT/stderr/dump-default.txt"
echo "rc $?" >>"$OUT/dump-default.txt"

# -------- the CLI: perplexity, generate, tokenize, info --------------------------------------------
no_tps() { sed -E 's/, "(tps|prompt_tps|gen_tps)": [0-9.eE+-]+//g'; }

PPL=$OUT/cli-perplexity.txt
: >"$PPL"
ppl() { # label, then flags
    local label=$1
    shift
    echo "== $label: perplexity $*" >>"$PPL"
    "$M" perplexity -m "$MODEL" -f "$TEXT" --ctx 512 --max-chunks 2 --json "$@" 2>>"$OUT/stderr/perplexity.txt" | no_tps >>"$PPL"
    echo " rc ${PIPESTATUS[0]}" >>"$PPL"
}
ppl full -t 2 --kv full
ppl full-t1 -t 1 --kv full
for kv in window sink h2o tova tova-head; do ppl "$kv" -t 2 --kv "$kv" --kv-size 64; done
ppl tova-f16 -t 2 --kv tova --kv-size 64 --kv-type f16
ppl tova-t1 -t 1 --kv tova --kv-size 64
echo "== sweep: --ctx 256 --max-chunks 1 --sweep 32,64 --policies window,sink,h2o,tova,tova-head" >>"$PPL"
"$M" perplexity -m "$MODEL" -f "$TEXT" --ctx 256 --max-chunks 1 --sweep 32,64 \
    --policies window,sink,h2o,tova,tova-head -t 2 --out sweep.json --plot sweep.svg \
    >sweep.table 2>>"$OUT/stderr/perplexity.txt"
echo " rc $?" >>"$PPL"
no_tps <sweep.json >>"$PPL"
echo >>"$PPL"
cat sweep.table >>"$PPL"

GEN=$OUT/cli-generate.txt
: >"$GEN"
gen() { # model, then flags
    local model=$1
    shift
    echo "== generate $(basename "$model") $*" >>"$GEN"
    "$M" generate -m "$model" -p "It was a dark and stormy night" -n 48 -t 2 --json "$@" 2>>"$OUT/stderr/generate.txt" | no_tps >>"$GEN"
    echo " rc ${PIPESTATUS[0]}" >>"$GEN"
}
gen "$MODEL" --temp 0
gen "$MODEL" --temp 0.8 --top-k 40 --top-p 0.9 --seed 7 --repeat-penalty 1.1
gen "$MODEL" --temp 0 --kv tova --kv-size 16
gen "$MODEL" --temp 0.8 --top-k 40 --top-p 0.9 --seed 7 --repeat-penalty 1.1 --kv tova --kv-size 16
gen "$MODEL" --temp 0.7 --top-k 40 --top-p 0.9 --min-p 0.05 --seed 7 --repeat-penalty 1.1 --kv-type f16
gen rand-q4_0.gguf --temp 0
gen rand-q8_0.gguf --temp 0

{
    "$M" tokenize -m "$MODEL" -p "Hello world, ünïcödé 😀 test" --ids
    echo " rc $?"
    "$M" tokenize -m "$MODEL" -p "  two  spaces" --no-bos --json
    echo " rc $?"
    "$M" info "$MODEL"
    echo " rc $?"
    "$M" info rand-q4_0.gguf
    echo " rc $?"
} >"$OUT/cli-tokenize-info.txt" 2>"$OUT/stderr/tokenize-info.txt"

# -------- training ------------------------------------------------------------------------------
TR=$OUT/train.txt
: >"$TR"
csv_cols() { cut -d, -f1-5 "$1"; } # step,loss,lr,grad_norm,val_loss (not tokens_per_s, elapsed_s)
train_json() { sed -E 's/, "(tokens_per_s|seconds)": [0-9.eE+-]+//g'; }

"$M" tokenize-corpus -m "$MODEL" -o train.bin "$G/pg219.txt" "$G/pg16.txt" -t 2 2>>"$OUT/stderr/train.txt"
echo "tokenize-corpus train rc $?" >>"$TR"
"$M" tokenize-corpus -m "$MODEL" -o val.bin "$G/pg1254.txt" -t 2 2>>"$OUT/stderr/train.txt"
echo "tokenize-corpus val rc $?" >>"$TR"
"$M" init-model --vocab-from "$MODEL" -o init.gguf --dim 64 --layers 2 --heads 2 --ffn 128 \
    --ctx 128 --type f32 --seed 3 >/dev/null 2>>"$OUT/stderr/train.txt"
echo "init-model rc $?" >>"$TR"
TRAIN_FLAGS=(-c 128 --batch 4 --steps 20 --warmup 5 --eval-every 5 --eval-batches 4 --ckpt-every 10 -t 2)

# A: 20 steps uninterrupted (checkpoints at steps 10 and 20; the file holds step 20 at the end)
mkdir a
"$M" train --init init.gguf --train train.bin --val val.bin -o a/out.gguf "${TRAIN_FLAGS[@]}" --json \
    2>>"$OUT/stderr/train.txt" | train_json >>"$TR"
echo "train A (20 steps) rc ${PIPESTATUS[0]}" >>"$TR"
echo "== A log (step,loss,lr,grad_norm,val_loss)" >>"$TR"
csv_cols a/out.gguf.log.csv >>"$TR"

# B: stop after 10 steps (checkpoint at step 10), then --resume to 20
mkdir b
"$M" train --init init.gguf --train train.bin --val val.bin -o b/out.gguf "${TRAIN_FLAGS[@]}" --stop-after 10 --json \
    2>>"$OUT/stderr/train.txt" | train_json >>"$TR"
echo "train B (stop after 10) rc ${PIPESTATUS[0]}" >>"$TR"
cp b/out.gguf.ckpt.gguf b/ckpt-step10.gguf
"$M" train --resume --ckpt b/out.gguf.ckpt.gguf --train train.bin --val val.bin -o b/out.gguf -t 2 --json \
    2>>"$OUT/stderr/train.txt" | train_json >>"$TR"
echo "train B (resume to 20) rc ${PIPESTATUS[0]}" >>"$TR"
echo "== B log after resume (step,loss,lr,grad_norm,val_loss)" >>"$TR"
csv_cols b/out.gguf.log.csv >>"$TR"
if cmp -s a/out.gguf b/out.gguf; then echo "B final model equals A: yes" >>"$TR"; else echo "B final model equals A: NO" >>"$TR"; fi

# C: a new model from --tokenizer and a shape (tied, GQA), accumulation 2, f16 output, 1 thread
mkdir c
"$M" train --tokenizer "$MODEL" --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 160 --tied --init-seed 9 \
    --train train.bin --val val.bin -o c/out.gguf -c 64 --batch 2 --accum 2 --steps 12 --warmup 3 \
    --lr 2e-3 --eval-every 4 --eval-batches 2 --ckpt-every 6 --seed 4 --f16 -t 1 --json \
    2>>"$OUT/stderr/train.txt" | train_json >>"$TR"
echo "train C rc ${PIPESTATUS[0]}" >>"$TR"
echo "== C log (step,loss,lr,grad_norm,val_loss)" >>"$TR"
csv_cols c/out.gguf.log.csv >>"$TR"

echo "== sha256" >>"$TR"
sha256sum train.bin val.bin init.gguf a/out.gguf a/out.gguf.ckpt.gguf a/out.gguf.loss.svg \
    b/ckpt-step10.gguf b/out.gguf b/out.gguf.ckpt.gguf c/out.gguf c/out.gguf.ckpt.gguf \
    c/out.gguf.ckpt.gguf.init.gguf >>"$TR" 2>&1

# the trained model A through the inference path too
./dump a/out.gguf "$TEXT" 100 >"$OUT/dump-trained.txt" 2>"$OUT/stderr/dump-trained.txt"
echo "rc $?" >>"$OUT/dump-trained.txt"

SECS=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "seconds $SECS" >>"$OUT/meta.txt"
bad=$(grep -l -E '^ERROR|rc [1-9]|equals A: NO' "$OUT"/*.txt | grep -v meta.txt)
if [ -n "$bad" ]; then
    echo "run.sh: failures recorded in: $bad" >&2
    exit 1
fi
echo "run.sh: wrote $OUT ($(ls "$OUT" | wc -l) entries, $SECS s)"
