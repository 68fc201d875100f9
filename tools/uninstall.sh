#!/bin/bash
# uninstall.sh MANIFEST PREFIX — remove what `cmake --install` recorded in MANIFEST (one installed
# path a line, DESTDIR honoured as at install), then each directory that removing them left empty,
# walking up towards PREFIX but never removing PREFIX itself or anything outside it. What was not
# installed from this build is never touched: a directory that still holds anything stays.
set -euo pipefail
manifest=${1:?usage: uninstall.sh MANIFEST PREFIX}
prefix=${2:?usage: uninstall.sh MANIFEST PREFIX}
if [ ! -f "$manifest" ]; then
    echo "uninstall: $manifest is missing: nothing was installed from this build" >&2
    exit 1
fi
prefix=$(realpath -m "${DESTDIR:-}$prefix")
dirs=()
while IFS= read -r f || [ -n "$f" ]; do
    [ -n "$f" ] || continue
    path="${DESTDIR:-}$f"
    if [ -e "$path" ] || [ -L "$path" ]; then
        rm -f -- "$path"
        echo "-- Removed: $path"
    fi
    dirs+=("$(dirname -- "$path")")
done <"$manifest"
for d in "${dirs[@]}"; do
    d=$(realpath -m "$d")
    while [ "$d" != "$prefix" ] && [[ "$d" == "$prefix"/* ]] && [ -d "$d" ] &&
        rmdir -- "$d" 2>/dev/null; do
        echo "-- Removed empty directory: $d"
        d=$(dirname -- "$d")
    done
done
