"""``chaosfm data stage`` (``chaosfm._storage.copy_tree``) beside ``shutil.copytree`` on the same
folder: a fresh copy (each file hashed as it streams and read back), a rerun that finds every file
already there (hashes only), a resume after half the files were copied, and a copy to ``memory://``.

    python bench/storage_copy.py [--mib 512] [--files 8]

Prints seconds and MiB/s per row and each row's time as a multiple of ``shutil.copytree``'s.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import fsspec

from chaosfm._storage import MANIFEST, copy_tree

parser = argparse.ArgumentParser()
parser.add_argument("--mib", type=int, default=512, help="total MiB of the folder (default: 512)")
parser.add_argument("--files", type=int, default=8, help="files it is split into (default: 8)")
args = parser.parse_args()

work = Path(tempfile.mkdtemp(prefix="chaosfm-storage-bench-"))
source = work / "source"
source.mkdir()
size = args.mib * (1 << 20) // args.files
for index in range(args.files):
    (source / f"shard-{index:03d}.bin").write_bytes(os.urandom(size))
total = size * args.files
rows = []


def timed(name, action):
    started = time.perf_counter()
    action()
    rows.append((name, time.perf_counter() - started))


timed("shutil.copytree (no hashes)", lambda: shutil.copytree(source, work / "plain"))
timed("copy_tree, fresh", lambda: copy_tree(source, work / "fresh", what="bench"))
timed("copy_tree, rerun with --force (all present)", lambda: copy_tree(source, work / "fresh", what="bench", force=True))
half = work / "half"
shutil.copytree(source, half)
for path in sorted(half.iterdir())[args.files // 2:]:
    path.unlink()
(half / MANIFEST).write_text('{"complete": false, "files": {}}')
timed("copy_tree, resume (half present)", lambda: copy_tree(source, half, what="bench"))
timed("copy_tree to memory://", lambda: copy_tree(source, "memory://chaosfm-bench/copy", what="bench"))
fsspec.filesystem("memory").rm("/chaosfm-bench", recursive=True)
shutil.rmtree(work)

base = rows[0][1]
print(f"{args.mib} MiB in {args.files} files, {os.cpu_count()} CPUs")
print(f"{'copy':<46} {'seconds':>8} {'MiB/s':>8} {'x copytree':>11}")
for name, seconds in rows:
    print(f"{name:<46} {seconds:8.2f} {total / (1 << 20) / seconds:8.0f} {seconds / base:11.2f}")
