"""test_train_memory — the peak memory `msrnn train` prints before the first step is what it uses.

A 16.8M-parameter model (dim 512, 4 layers, FFN 1376, vocabulary 4096) trains 3 steps on 64-token
windows with a checkpoint after every step, so that writing checkpoints (parameters + two moments,
12 bytes per parameter) happens three times. The test samples the process's anonymous resident
memory (RssAnon in /proc/PID/status; the mmapped model file and shards are file-backed and not
counted) every 2 ms and checks:

  * the largest sample ≤ the printed peak + 16 MiB (the runtime's own: OpenMP stacks, OpenBLAS
    buffers, the tokenizer) — a checkpoint writer that copies its tensors exceeds it by ~190 MiB;
  * the largest sample ≥ 80% of the printed peak (the print is not a gross overestimate).

Skipped under the sanitizers (their shadow memory is anonymous too)."""
import os
import re
import subprocess
import sys
import tempfile
import time

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
SHARED = os.environ["MSRNN_SHARED"]
VOCAB = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")

if os.environ.get("MSRNN_SANITIZED") == "1":
    print("test_train_memory: RSS is not measurable under the sanitizers; nothing to check")
    print("test_train_memory: 0 passed, 0 failed")
    sys.exit(0)


def run_sampled(args):
    """Run args; return (rc, output, largest RssAnon in bytes)."""
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                m = re.search(r"RssAnon:\s+(\d+) kB", f.read())
            if m:
                peak = max(peak, int(m.group(1)) * 1024)
        except OSError:
            pass
        time.sleep(0.002)
    return p.returncode, p.stdout.read(), peak


with tempfile.TemporaryDirectory() as tmp:
    shard = os.path.join(tmp, "train.bin")
    r = subprocess.run([BIN, "tokenize-corpus", "-m", VOCAB, "-o", shard, BOOK],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"tokenize-corpus: {r.stderr}")
    rc, out, rss = run_sampled([BIN, "train", "--tokenizer", VOCAB, "--dim", "512", "--layers", "4",
                                "--heads", "8", "--ffn", "1376", "--train", shard, "-o",
                                os.path.join(tmp, "out.gguf"), "-c", "64", "--batch", "1",
                                "--steps", "3", "--ckpt-every", "1", "--eval-every", "100",
                                "-t", "2"])
    check(rc == 0, f"train exits 0 (rc {rc}): {out[-2000:]}")
    m = re.search(r"peak memory ([0-9.]+) MB", out)
    check(m is not None, f"train prints its peak memory: {out[-2000:]}")
    if m:
        printed = float(m.group(1)) * 1e6
        print(f"printed peak {printed / 2**20:.1f} MiB, largest RssAnon {rss / 2**20:.1f} MiB")
        check(rss <= printed + 16 * 2**20,
              f"RssAnon {rss / 2**20:.1f} MiB exceeds the printed {printed / 2**20:.1f} MiB + 16")
        check(rss >= 0.8 * printed,
              f"RssAnon {rss / 2**20:.1f} MiB is under 80% of the printed {printed / 2**20:.1f} MiB")
    check(os.path.exists(os.path.join(tmp, "out.gguf.ckpt.gguf")), "the checkpoints were written")

finish("test_train_memory")
