"""Training windows as ArrayRecord shards, read back through Grain in the window sampler's order.

A shard folder (written by ``chaosfm shard``) holds every window a :class:`WindowSampler` can
draw, one record each, spread over ``N`` ArrayRecord files ``windows-00000-of-0000N.array_record``
in the sampler's window order (file ``i`` holds a contiguous block of windows), the held-out
windows in ``heldout.array_record``, and ``index.json``: records per file, the record layout, the
sha256 of every file, and whatever the writer adds (vocabulary, tokenizer, seed,
``trained_through``). A record is the raw little-endian bytes of each array of one window, one
after the other, in the order and with the dtypes and shapes ``index.json`` lists: reading one
is ``numpy.frombuffer``, never pickle.

:class:`ShardStream` reads them with Grain (``ArrayRecordDataSource``, a ``DataLoader`` with read
threads and a prefetch buffer, sharded per process with ``ShardOptions``). Its record order is
the in-memory sampler's draw order: record position ``step * batch + row`` is the window
:func:`~chaosfm.train.draw_windows` draws for that row at that step, so a run from shards sees the
batches of the in-memory run of the same seed, bit for bit, and its loss curve is the same. The
Grain iterator's state goes into every checkpoint (:class:`~chaosfm.train.AbstractBatchStream`).

Dimension letters: ``B`` windows per batch, ``W`` positions per window.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chaosfm._artifacts import ArtifactError, sha256, write_json
from chaosfm.train._loop import AbstractBatchStream
from chaosfm.train._windows import WindowSampler, draw_windows

__all__ = ["HELDOUT_FILE", "INDEX_FILE", "ShardSet", "ShardStream", "decode_window", "encode_window",
           "record_layout", "write_shards"]

INDEX_FILE = "index.json"
HELDOUT_FILE = "heldout.array_record"
SHARD_FORMAT = 1
_WRITER_OPTIONS = "group_size:1"  # one record per chunk: Grain's random access needs it
_CHUNK = 4096  # windows gathered per write, so memory stays that of a few thousand windows


def shard_file(index: int, count: int) -> str:
    return f"windows-{index:05d}-of-{count:05d}.array_record"


def record_layout(batch: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """The record layout of the windows of ``batch`` (``{name: (B, W, ...)}``): name, little-endian
    dtype and shape of each array of one window, in order."""
    return [{"name": name, "dtype": np.dtype(array.dtype).newbyteorder("<").str, "shape": list(array.shape[1:])}
            for name, array in batch.items()]


def encode_window(window: Mapping[str, np.ndarray], layout: Sequence[Mapping[str, Any]]) -> bytes:
    """One window as a record: each array's little-endian bytes, in ``layout`` order."""
    return b"".join(np.ascontiguousarray(window[part["name"]], dtype=part["dtype"]).tobytes() for part in layout)


def decode_window(record: bytes, layout: Sequence[Mapping[str, Any]],
                  names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of one record (only ``names``, if given).

    Raises:
        ArtifactError: the record's length does not match the layout.
    """
    out, offset = {}, 0
    for part in layout:
        dtype, shape = np.dtype(part["dtype"]), tuple(part["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if names is None or part["name"] in names:
            out[part["name"]] = np.frombuffer(record, dtype, count, offset).reshape(shape)
        offset += count * dtype.itemsize
    if offset != len(record):
        raise ArtifactError(f"a record of {len(record)} bytes does not fit the layout of {offset} bytes in index.json")
    return out


def _write_records(path: Path, batches: Any, layout: Sequence[Mapping[str, Any]]) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), _WRITER_OPTIONS)
    count = 0
    try:
        for batch in batches:
            rows = len(next(iter(batch.values())))
            for row in range(rows):
                writer.write(encode_window({name: array[row] for name, array in batch.items()}, layout))
            count += rows
    finally:
        writer.close()
    return count


def write_shards(folder: str | os.PathLike[str], sampler: WindowSampler, heldout: Mapping[str, np.ndarray] | None,
                 *, num_shards: int, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write every window of ``sampler`` (in its window order) into ``num_shards`` ArrayRecord
    files of ``folder``, the ``heldout`` batch into ``heldout.array_record``, then ``index.json``
    with ``fields`` added; return the index.

    Raises:
        ValueError: more shards than windows.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    if num_shards > sampler.windows:
        raise ValueError(f"num_shards: {num_shards} shards for {sampler.windows} windows; at most one per window")
    layout = record_layout(sampler.windows_at(np.arange(1)))
    bounds = np.linspace(0, sampler.windows, num_shards + 1).round().astype(np.int64)
    files, counts = [], []
    for i in range(num_shards):
        name = shard_file(i, num_shards)
        first, stop = int(bounds[i]), int(bounds[i + 1])
        chunks = (sampler.windows_at(np.arange(a, min(a + _CHUNK, stop))) for a in range(first, stop, _CHUNK))
        counts.append(_write_records(root / name, chunks, layout))
        files.append(name)
    heldout_records = 0
    if heldout is not None:
        heldout_records = _write_records(root / HELDOUT_FILE, [dict(heldout)], record_layout(heldout))
    index = {
        "format": SHARD_FORMAT,
        "windows": int(sampler.windows),
        "window": int(sampler.window),
        "layout": layout,
        "shards": [{"file": name, "records": count, "sha256": sha256(root / name)} for name, count in zip(files, counts)],
        "heldout": None if heldout is None else {"file": HELDOUT_FILE, "records": heldout_records,
                                                 "layout": record_layout(heldout),
                                                 "sha256": sha256(root / HELDOUT_FILE)},
        **dict(fields or {}),
    }
    write_json(root / INDEX_FILE, index)
    return index


class ShardSet:
    """An opened shard folder, every file checked against ``index.json``.

    Attributes:
        folder: the shard folder.
        index: ``index.json``.
        read_threads: Grain's read threads per process of the streams it opens.
        prefetch: windows those threads read ahead (0: none).
    """

    def __init__(self, folder: str | os.PathLike[str], *, read_threads: int = 2, prefetch: int = 64):
        """Open ``folder``.

        Raises:
            ArtifactError: ``index.json`` is missing or damaged, or a file is missing or does not
                match its sha256 (the message names the file).
        """
        self.folder = Path(folder)
        path = self.folder / INDEX_FILE
        if not path.is_file():
            raise ArtifactError(f"{path}: missing; {self.folder} is not a shard folder of chaosfm shard")
        try:
            index = json.loads(path.read_text())
            files = [(part["file"], part["sha256"]) for part in index["shards"]]
            if index["heldout"] is not None:
                files.append((index["heldout"]["file"], index["heldout"]["sha256"]))
            int(index["windows"]), int(index["window"]), list(index["layout"])
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"{path}: damaged ({type(error).__name__}: {error})") from None
        if index.get("format") != SHARD_FORMAT:
            raise ArtifactError(f"{path}: shard format {index.get('format')!r}, this chaosfm reads {SHARD_FORMAT}")
        inside = self.folder.resolve()
        for name, expected in files:
            file = self.folder / name
            if not file.resolve().is_relative_to(inside):
                raise ArtifactError(f"{path}: file {str(name)[:200]!r} points outside the shard folder {self.folder}")
            if not file.is_file():
                raise ArtifactError(f"{file}: listed in index.json but missing")
            if sha256(file) != expected:
                raise ArtifactError(f"{file}: damaged (sha256 does not match index.json)")
        self.index = index
        self.read_threads, self.prefetch = int(read_threads), int(prefetch)

    @property
    def windows(self) -> int:
        return int(self.index["windows"])

    @property
    def paths(self) -> list[str]:
        return [str(self.folder / part["file"]) for part in self.index["shards"]]

    @property
    def fingerprint(self) -> str:
        """One sha256 over the shard files' hashes: what a stream's state is tied to."""
        digest = hashlib.sha256()
        for part in self.index["shards"]:
            digest.update(f"{part['file']}:{part['sha256']}\n".encode())
        return digest.hexdigest()

    def source(self) -> Any:
        """The windows as a Grain ``ArrayRecordDataSource``: record ``k`` is window ``k``."""
        import grain

        return grain.sources.ArrayRecordDataSource(self.paths)

    def heldout(self, names: Sequence[str]) -> dict[str, np.ndarray] | None:
        """The held-out batch (``{name: (rows, W)}`` of ``names``), or None when none was written."""
        part = self.index["heldout"]
        if part is None:
            return None
        from array_record.python.array_record_module import ArrayRecordReader

        reader = ArrayRecordReader(str(self.folder / part["file"]))
        try:
            records = reader.read_all()
        finally:
            reader.close()
        windows = [decode_window(record, part["layout"], names) for record in records]
        return {name: np.stack([w[name] for w in windows]) for name in names}

    def stream(self, *, batch_size: int, seed: int, names: Sequence[str], process_index: int = 0,
               process_count: int = 1) -> "ShardStream":
        """A :class:`ShardStream` over these shards (see there for the arguments), reading with
        :attr:`read_threads` and :attr:`prefetch`."""
        return ShardStream(self, batch_size=batch_size, seed=seed, names=names, process_index=process_index,
                           process_count=process_count, read_threads=self.read_threads, prefetch=self.prefetch)


class _StepOrder:
    """A Grain sampler: position ``i`` (every process's positions interleaved, as Grain's
    ``ShardOptions`` deals them: process ``p`` of ``P`` reads ``i = k * P + p``) is row
    ``p * B / P + k mod (B / P)`` of the batch of step ``k // (B / P)``, and its record is the
    window :func:`draw_windows` draws for that row: the in-memory sampler's order, split so that
    each process reads its own block of rows of every batch."""

    def __init__(self, windows: int, batch_size: int, seed: int, processes: int):
        self.windows, self.batch_size, self.seed, self.processes = windows, batch_size, seed, processes
        self.share = batch_size // processes
        self._drawn: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))  # read threads share it

    def __len__(self) -> int:
        # Endless (the loop stops it): a length that does not depend on train.steps keeps the
        # iterator state valid when a resumed run trains longer.
        return sys.maxsize - sys.maxsize % self.batch_size

    def __getitem__(self, position: int) -> Any:
        from grain import RecordMetadata

        if position < 0 or position >= len(self):
            raise IndexError(f"position {position} is out of range")
        k, process = divmod(position, self.processes)
        step, row = divmod(k, self.share)
        drawn_step, drawn = self._drawn  # one tuple read: a thread never sees a half-updated pair
        if drawn_step != step:
            drawn = draw_windows(self.windows, self.batch_size, self.seed, step)
            self._drawn = (step, drawn)
        return RecordMetadata(index=position, record_key=int(drawn[process * self.share + row]))

    def __repr__(self) -> str:  # Grain checks a restored state against it
        return (f"StepOrder(windows={self.windows}, batch_size={self.batch_size}, seed={self.seed}, "
                f"processes={self.processes})")


class ShardStream(AbstractBatchStream):
    """This process's rows of each step's batch, read from the shards by a Grain ``DataLoader``
    in the in-memory sampler's order; its state is Grain's iterator state.

    ``worker_count=0``: records are read by ``read_threads`` threads of this process into a
    ``prefetch`` buffer. Grain's worker processes would send the decode transform and the sampler
    to child processes by pickling them; threads keep everything in one process (and reading and
    decoding raw bytes is I/O and NumPy work that releases the GIL).

    Args:
        shards: the opened shard folder.
        batch_size: windows per (global) batch.
        seed: the run's seed (the draw order).
        names: the arrays a batch holds (e.g. ``codes``, and ``exo`` for an exo-clocked model).
        process_index: this process (``jax.process_index()``).
        process_count: processes in the run (``jax.process_count()``); must divide ``batch_size``.
        read_threads: Grain's ``ReadOptions.num_threads``.
        prefetch: Grain's ``ReadOptions.prefetch_buffer_size`` (records read ahead; 0: none).
    """

    def __init__(self, shards: ShardSet, *, batch_size: int, seed: int, names: Sequence[str], process_index: int = 0,
                 process_count: int = 1, read_threads: int = 2, prefetch: int = 64):
        import grain

        if batch_size % process_count:
            raise ValueError(f"train.batch_size: {batch_size} windows do not split over {process_count} processes")
        layout = shards.index["layout"]
        missing = [name for name in names if name not in [part["name"] for part in layout]]
        if missing:
            raise ArtifactError(f"{shards.folder / INDEX_FILE}: the shards hold no {missing} arrays "
                                f"(they hold {[part['name'] for part in layout]})")
        self.shards, self.process_index, self.process_count = shards, process_index, process_count
        self.sampler = _StepOrder(shards.windows, batch_size, seed, process_count)
        wanted = tuple(names)

        class Decode(grain.transforms.Map):
            def map(self, record: bytes) -> dict[str, np.ndarray]:
                return decode_window(record, layout, wanted)

        self._loader = grain.DataLoader(
            data_source=shards.source(), sampler=self.sampler,
            operations=[Decode(), grain.transforms.Batch(batch_size // process_count, drop_remainder=True)],
            worker_count=0,
            shard_options=grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True),
            read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch),
        )
        self._iterator = iter(self._loader)
        self.next_step = 0

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        if step != self.next_step:
            raise ValueError(f"the shard stream is at step {self.next_step}; step {step} was asked for")
        batch = next(self._iterator)
        self.next_step += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"next_step": self.next_step, "shards": self.shards.fingerprint, "process": self.process_index,
                "processes": self.process_count, "grain": json.loads(self._iterator.get_state())}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``.

        Raises:
            ArtifactError: the state belongs to other shards, another process, or another order
                (seed, batch size).
        """
        if state.get("shards") != self.shards.fingerprint:
            raise ArtifactError(f"the checkpoint's batch stream read other shards than {self.shards.folder}")
        if (state.get("process"), state.get("processes")) != (self.process_index, self.process_count):
            raise ArtifactError(
                f"the checkpoint's batch stream was process {state.get('process')} of {state.get('processes')}, "
                f"this is process {self.process_index} of {self.process_count}")
        grain_state = dict(state["grain"])
        if grain_state.get("sampler") != repr(self.sampler):
            raise ArtifactError(f"the checkpoint's batch stream read in the order {grain_state.get('sampler')}, "
                                f"this run in {self.sampler!r} (train.seed or train.batch_size differ)")
        # Grain ties its state to repr(data source), a hash of the file paths; the shard hashes
        # checked above tie it to the content instead, so a moved shard folder still resumes.
        grain_state["data_source"] = json.loads(self._iterator.get_state())["data_source"]
        self._iterator.set_state(json.dumps(grain_state).encode())
        self.next_step = int(state["next_step"])
