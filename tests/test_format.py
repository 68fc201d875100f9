"""test_format — every C file is formatted with the checked-in .clang-format (clang-format 14)."""
import os
import subprocess
import sys

root = os.environ["MSRNN_SOURCE_DIR"]
files = subprocess.run(["git", "-C", root, "ls-files", "*.c", "*.h"], capture_output=True, text=True,
                       check=True).stdout.split()
bad = [f for f in files
       if subprocess.run(["clang-format", "--dry-run", "-Werror", os.path.join(root, f)],
                         capture_output=True).returncode != 0]
for f in bad:
    print(f"not formatted: {f} (run: make format)")
print(f"test_format: {len(files) - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad else 0)
