#!/usr/bin/env bash
# compare.sh A B — compare two run.sh output folders. Prints IDENTICAL (exit 0) or, per file that
# differs, the differing lines (exit 1). meta.txt (commit, date, duration) and stderr/ (progress
# lines with tokens/s) are not compared. MAX_LINES (default 80) caps the diff shown per file.
set -u
if [ $# -ne 2 ] || [ ! -d "$1" ] || [ ! -d "$2" ]; then
    echo "usage: $0 OUTDIR_A OUTDIR_B" >&2
    exit 2
fi
A=$1
B=$2
MAX=${MAX_LINES:-80}
list() { (cd "$1" && find . -type f ! -path './stderr/*' ! -name meta.txt | sort); }
names=$( (list "$A"; list "$B") | sort -u)
[ -n "$names" ] || { echo "compare.sh: no output files in $A or $B" >&2; exit 2; }
differ=0
for f in $names; do
    f=${f#./}
    if [ ! -f "$A/$f" ]; then
        echo "ONLY IN $B: $f"; differ=1; continue
    fi
    if [ ! -f "$B/$f" ]; then
        echo "ONLY IN $A: $f"; differ=1; continue
    fi
    if ! cmp -s "$A/$f" "$B/$f"; then
        differ=1
        n=$(diff "$A/$f" "$B/$f" | grep -c '^[<>]')
        echo "DIFFERS: $f ($n lines; < $A, > $B)"
        diff "$A/$f" "$B/$f" | head -n "$MAX" | cut -c1-300
        [ "$(diff "$A/$f" "$B/$f" | wc -l)" -gt "$MAX" ] && echo "  ... (MAX_LINES=$MAX; diff $A/$f $B/$f for all)"
    fi
done
for m in "$A" "$B"; do
    [ -f "$m/meta.txt" ] && sed "s#^#  $m: #" "$m/meta.txt" | grep -E 'commit|seconds'
done
if [ $differ = 0 ]; then
    echo "IDENTICAL ($(echo "$names" | wc -w) files)"
    exit 0
fi
echo "DIFFERENT"
exit 1
