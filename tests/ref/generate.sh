#!/usr/bin/env bash
# Regenerate every reference file the tests compare against, into $MSRNN_REF_DIR.
# Each tests/ref/gen_*.py is independent of msrnn's C code (PyTorch, numpy, SentencePiece).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$MSRNN_REF_DIR"
for g in "$here"/gen_*.py; do
  [ -e "$g" ] || continue
  echo "== $(basename "$g")"
  /usr/bin/python3 "$g" "$MSRNN_REF_DIR"
done
