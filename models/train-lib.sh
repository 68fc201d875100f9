# Shared by the models/train-*.sh recipes (sourced, not run): tokenizing the splits once and a
# training run that resumes from its checkpoint when run again. Expects $msrnn and $manifest.

# tokenize_splits OUT_DIR TOKENIZER.gguf SPLIT...: OUT_DIR/SPLIT.bin for each split not yet there
tokenize_splits() {
  local dir=$1 tok=$2 split
  shift 2
  for split in "$@"; do
    if [ ! -f "$dir/$split.bin" ]; then
      "$msrnn" tokenize-corpus -m "$tok" --manifest "$manifest" --split "$split" -o "$dir/$split.bin"
    fi
  done
}

# train_resumable OUT.gguf FLAG VALUE TRAIN-ARGS...: `msrnn train TRAIN-ARGS FLAG VALUE` the first
# time (--init MODEL or --tokenizer TOK), `msrnn train ARGS --resume` after an interruption, nothing once OUT.gguf exists;
# exits 1 if OUT.gguf is still missing afterwards.
train_resumable() {
  local out=$1 flag=$2 value=$3
  shift 3
  if [ -f "$out.ckpt.gguf" ] && [ ! -f "$out" ]; then
    "$msrnn" train "$@" --resume
  elif [ ! -f "$out" ]; then
    "$msrnn" train "$@" "$flag" "$value"
  fi
  if [ ! -f "$out" ]; then
    echo "training stopped before the end; run this script again to resume from the checkpoint" >&2
    exit 1
  fi
}
