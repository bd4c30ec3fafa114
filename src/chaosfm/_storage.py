"""Folders at any fsspec URL: telling a URL from a path, opening its filesystem, and copying a
folder between tiers with every file's sha256 checked.

A location is a local path (``runs/x``, ``/data/x``, ``file:///data/x``) or a URL whose scheme
fsspec knows (``memory://``, ``s3://``, ``gs://``, ``az://``...); the filesystems of object
stores come from packages the user installs (s3fs, gcsfs, adlfs), and a missing one is a
:class:`~chaosfm._config.ConfigError` naming it.

:func:`copy_tree` copies every file of a folder to another location and writes
:data:`MANIFEST` (relative path -> size and sha256) into the destination last:

- each file is read once, hashed while it streams, and its copy read back and hashed again: a
  copy whose bytes differ from the source's is an :class:`~chaosfm._artifacts.ArtifactError`
  naming the file;
- on a local or in-memory destination a file is written under a temporary name beside its final
  one and renamed into place, so a final name never holds half a file. Object stores have no
  atomic rename (a rename is a second copy), so there a file is written under its final name (a
  single upload appears whole or not at all) and the manifest, written last, is what says the
  copy is whole;
- a destination is *complete* when its manifest says so, and *partial* otherwise: a copy
  interrupted at any moment is resumed by running it again, which keeps the files already there
  whose size and sha256 match the source's and copies the rest;
- a complete destination is never overwritten unless ``force`` is given (then it is updated to
  match the source, files the source no longer has removed), and a folder that holds files but
  no manifest (not a copy made here) is refused the same way;
- a source that is itself a copy (it holds a manifest) is checked against its manifest as it is
  read: a damaged file in a cold tier is named, not staged.

Nothing here unpickles or runs what it reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST",
    "CopyResult",
    "copy_tree",
    "filesystem",
    "is_url",
    "read_manifest",
    "verify_tree",
]

MANIFEST = ".chaosfm-manifest.json"
"""The file a copy writes last into its destination: ``{"complete": bool, "files": {relative path:
{"size": bytes, "sha256": hex}}}``. Its name starts with a dot, so ``meta.json`` never lists it."""

PARTIAL_SUFFIX = ".chaosfm-partial"
"""A file being copied is written as ``.<name><PARTIAL_SUFFIX>`` beside its final name."""

CHUNK = 1 << 20
"""Bytes read at a time: hashing and copying stream, a large file is never whole in memory."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
_LOCAL_SCHEMES = {"file", "local"}
_RENAMES = {"file", "local", "memory"}
"""Filesystems whose rename is a cheap, all-or-nothing move (an object store's is a second copy)."""


def _config_error(message: str) -> Exception:
    # chaosfm's errors load when one is raised: the command line reads --out with is_url while it
    # parses flags, before NumPy or pydantic may load.
    from chaosfm._config import ConfigError

    return ConfigError(message)


def _artifact_error(message: str) -> Exception:
    from chaosfm._artifacts import ArtifactError

    return ArtifactError(message)


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL of a filesystem other than the local one (``memory://x``,
    ``s3://bucket/x``, ``simplecache::s3://...``); plain paths and ``file://`` URLs are local."""
    if isinstance(location, os.PathLike):
        return False
    match = _SCHEME.match(str(location))
    return match is not None and match.group(1).lower() not in _LOCAL_SCHEMES


def filesystem(location: str | os.PathLike[str]) -> tuple[Any, str]:
    """The fsspec filesystem of ``location`` and the path inside it (``fsspec.core.url_to_fs``).

    Raises:
        ConfigError: the scheme is unknown, or its filesystem's package (s3fs, gcsfs, adlfs...)
            is not installed: the message names the package to install.
    """
    import fsspec.core
    from fsspec.registry import known_implementations

    from chaosfm._config import did_you_mean

    text = str(location)
    if _SCHEME.match(text) is None:
        text = str(Path(text).expanduser())
    scheme = text.split("://", 1)[0].split("::")[-1] if is_url(text) else "file"
    try:
        return fsspec.core.url_to_fs(text)
    except ImportError as error:
        known = known_implementations.get(scheme, {})
        package = str(known.get("class", "")).split(".")[0] or "the filesystem's package"
        reason = known.get("err") or str(error)
        raise _config_error(
            f"{text}: the {scheme}:// filesystem is not installed ({reason}): pip install {package}"
        ) from None
    except ValueError as error:
        if "Protocol not known" not in str(error):
            raise
        raise _config_error(
            f"{text}: unknown URL scheme {scheme!r}{did_you_mean(scheme, known_implementations)}; "
            "give a local path or a URL fsspec knows (memory://, s3://, gs://, az://, ...)"
        ) from None


@dataclass(frozen=True)
class CopyResult:
    """What :func:`copy_tree` did.

    Attributes:
        source, destination: the two locations, as given.
        files, bytes: files copied and their bytes.
        skipped, skipped_bytes: files already in the destination with the source's size and sha256.
        removed: files deleted from the destination because the source has none of that name
            (only with ``force``).
        seconds: wall time of the copy.
    """

    source: str
    destination: str
    files: int
    bytes: int
    skipped: int
    skipped_bytes: int
    removed: int
    seconds: float


def _join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}" if relative else root


def _listing(fs: Any, root: str) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``root`` (empty when it does not exist)."""
    if not fs.exists(root):
        return {}
    base = fs._strip_protocol(root).rstrip("/")
    found = {}
    for path, info in fs.find(root, withdirs=False, detail=True).items():
        name = fs._strip_protocol(path)
        if not name.startswith(base + "/"):
            continue
        found[name[len(base) + 1:]] = int(info.get("size") or 0)
    return found


def _sha256(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_ours(relative: str) -> bool:
    """The manifest and the temporary files of a copy: never data of the folder."""
    return relative == MANIFEST or relative.endswith(PARTIAL_SUFFIX)


def read_manifest(location: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a copy at ``location``, or None when it has none.

    Raises:
        ArtifactError: the manifest is not the JSON a copy writes (naming it).
    """
    fs, root = filesystem(location)
    return _read_manifest(fs, root, str(location))


def _read_manifest(fs: Any, root: str, shown: str) -> dict[str, Any] | None:
    path = _join(root, MANIFEST)
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "rb") as stream:
            manifest = json.loads(stream.read(64 << 20))
        files = manifest["files"]
        complete = manifest["complete"]
        if not isinstance(files, dict) or not isinstance(complete, bool) or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
            for v in files.values()
        ):
            raise ValueError("'files' must map names to {size, sha256} and 'complete' must be true or false")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise _artifact_error(f"{_join(shown, MANIFEST)}: damaged ({error})") from None
    return manifest


def _write_manifest(fs: Any, root: str, files: dict[str, dict[str, Any]], complete: bool) -> None:
    body = json.dumps({"format": 1, "complete": complete, "files": dict(sorted(files.items()))}, indent=1)
    _put(fs, _join(root, MANIFEST), body.encode("utf-8"))


def _renames(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return bool(_RENAMES & set(protocols))


def _partial_name(path: str) -> str:
    folder, _, name = path.rpartition("/")
    return f"{folder}/.{name}{PARTIAL_SUFFIX}"


def _put(fs: Any, path: str, data: bytes) -> None:
    """Write a small file: under a temporary name and renamed where renames are atomic."""
    fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    target = _partial_name(path) if _renames(fs) else path
    with fs.open(target, "wb") as stream:
        stream.write(data)
    if target != path:
        fs.mv(target, path)


def _copy_file(src_fs: Any, src: str, dst_fs: Any, dst: str, advance: Callable[[int], None]) -> str:
    """Copy one file, streaming; return the sha256 of the bytes read from ``src``.

    Raises:
        ArtifactError: the copy read back does not hash to the source's sha256 (the copy is removed).
    """
    dst_fs.makedirs(dst.rpartition("/")[0], exist_ok=True)
    target = _partial_name(dst) if _renames(dst_fs) else dst
    digest = hashlib.sha256()
    with src_fs.open(src, "rb") as reading, dst_fs.open(target, "wb") as writing:
        for block in iter(lambda: reading.read(CHUNK), b""):
            digest.update(block)
            writing.write(block)
            advance(len(block))
    expected = digest.hexdigest()
    if _sha256(dst_fs, target) != expected:
        dst_fs.rm(target)
        raise _artifact_error(f"{dst}: the copy's sha256 differs from its source {src}'s; the copy was removed")
    if target != dst:
        dst_fs.mv(target, dst)
    return expected


def _order(relative: str) -> tuple[bool, int, str]:
    # meta.json last in its folder, the deepest first: a checkpoint folder of a partial copy
    # counts as written only once its meta.json is there, and the run's own meta.json comes last.
    return relative.rsplit("/", 1)[-1] == "meta.json", -relative.count("/"), relative


def copy_tree(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    what: str,
    force: bool = False,
    partial_source: bool = False,
) -> CopyResult:
    """Copy every file under ``source`` to ``destination`` (local paths or fsspec URLs), verify
    each copy's sha256 and write :data:`MANIFEST` last.

    Run again after an interruption, it keeps the files already copied (same size and sha256 as
    the source's) and copies the rest. A progress bar over bytes appears once a copy has taken
    two seconds.

    Args:
        source: the folder to copy.
        destination: where to copy it: a new or empty folder, or a partial copy of ``source``.
        what: how errors name the operation (``"data stage"``, ``"train --out"``).
        force: update a complete destination (or a folder that is not a copy) to match the
            source: changed files replaced, files the source has not removed.
        partial_source: accept a source that is itself an unfinished copy (its manifest not
            complete); otherwise that is an error.

    Raises:
        ConfigError: no such source folder, a destination that must not be overwritten (named),
            a destination inside the source, a filesystem that is not installed.
        ArtifactError: a source file does not match the source's manifest, or a copy does not
            match its source (the file is named).
    """
    from chaosfm._progress import byte_progress

    started = time.perf_counter()
    src_fs, src_root = filesystem(source)
    dst_fs, dst_root = filesystem(destination)
    if not src_fs.isdir(src_root):
        kind = "a file, not a folder" if src_fs.exists(src_root) else "no such folder"
        raise _config_error(f"{what}: source {source}: {kind}")
    if type(src_fs) is type(dst_fs) and (dst_root + "/").startswith(src_root.rstrip("/") + "/"):
        raise _config_error(f"{what}: destination {destination} is inside the source {source}; choose another")
    if dst_fs.exists(dst_root) and not dst_fs.isdir(dst_root):
        raise _config_error(f"{what}: destination {destination} is a file; give a folder")

    files = {name: size for name, size in _listing(src_fs, src_root).items() if not _is_ours(name)}
    if not files:
        raise _config_error(f"{what}: source {source} holds no files")
    vouched = _source_manifest(src_fs, src_root, source, files, what, partial_source)

    present = _listing(dst_fs, dst_root)
    manifest = _read_manifest(dst_fs, dst_root, str(destination))
    others = sorted(name for name in present if not _is_ours(name) and name not in files)
    if not force:
        if manifest is not None and manifest["complete"]:
            raise _config_error(
                f"{what}: destination {destination} already holds a complete copy ({len(manifest['files'])} "
                f"files, {MANIFEST}); choose another destination or pass --force to update it"
            )
        if manifest is None and any(not _is_ours(name) for name in present):
            raise _config_error(
                f"{what}: destination {destination} holds files but no {MANIFEST}, so it is not a copy "
                "made by chaosfm; choose a new or empty destination, or pass --force to replace its files"
            )
        if others:
            raise _config_error(
                f"{what}: destination {destination} is a partial copy of another folder: it holds "
                f"{others[0]!r}, which {source} has not; choose another destination or pass --force"
            )
    known = dict(manifest["files"]) if manifest is not None else {}
    _write_manifest(dst_fs, dst_root, known, complete=False)  # partial until the last line

    copied = copied_bytes = skipped = skipped_bytes = 0
    entries: dict[str, dict[str, Any]] = {}
    with byte_progress(sum(files.values()), f"{what}: {source} -> {destination}") as advance:
        for name in sorted(files, key=_order):
            size, src_path, dst_path = files[name], _join(src_root, name), _join(dst_root, name)
            expected = vouched.get(name)
            if present.get(name) == size:
                source_sha = expected or _sha256(src_fs, src_path)
                entry = known.get(name)
                # A manifest entry vouches for a file it wrote; otherwise read the file back.
                if (entry is not None and entry["size"] == size and entry["sha256"] == source_sha) or (
                    _sha256(dst_fs, dst_path) == source_sha
                ):
                    entries[name] = {"size": size, "sha256": source_sha}
                    skipped, skipped_bytes = skipped + 1, skipped_bytes + size
                    advance(size)
                    continue
            sha = _copy_file(src_fs, src_path, dst_fs, dst_path, advance)
            if expected is not None and sha != expected:
                dst_fs.rm(dst_path)
                raise _artifact_error(
                    f"{_join(str(source), name)}: damaged (sha256 does not match {_join(str(source), MANIFEST)})"
                )
            entries[name] = {"size": size, "sha256": sha}
            copied, copied_bytes = copied + 1, copied_bytes + size
    for name in others:
        dst_fs.rm(_join(dst_root, name))
    for name in present:  # temporary files an interrupted copy left (a resumed copy renamed some)
        if name.endswith(PARTIAL_SUFFIX) and dst_fs.exists(_join(dst_root, name)):
            dst_fs.rm(_join(dst_root, name))
    _write_manifest(dst_fs, dst_root, entries, complete=True)
    return CopyResult(
        source=str(source), destination=str(destination), files=copied, bytes=copied_bytes, skipped=skipped,
        skipped_bytes=skipped_bytes, removed=len(others), seconds=time.perf_counter() - started,
    )


def _source_manifest(
    fs: Any, root: str, shown: str | os.PathLike[str], files: dict[str, int], what: str, partial: bool
) -> dict[str, str]:
    """``{relative path: sha256}`` a source that is itself a complete copy vouches for (empty for
    a folder that is not a copy); its file list must be the manifest's."""
    manifest = _read_manifest(fs, root, str(shown))
    if manifest is None:
        return {}
    if not manifest["complete"]:
        if partial:
            return {}
        raise _config_error(
            f"{what}: source {shown} is an unfinished copy ({MANIFEST} is not complete); rerun the copy that "
            "made it first"
        )
    listed = manifest["files"]
    for name in sorted(set(listed) | set(files)):
        if name not in files:
            raise _artifact_error(f"{_join(str(shown), name)}: listed in {MANIFEST} but missing")
        if name not in listed:
            raise _artifact_error(f"{_join(str(shown), name)}: not listed in {MANIFEST}; the copy was changed after it was made")
        if listed[name]["size"] != files[name]:
            raise _artifact_error(
                f"{_join(str(shown), name)}: damaged ({files[name]} bytes, {MANIFEST} records {listed[name]['size']})"
            )
    return {name: entry["sha256"] for name, entry in listed.items()}


def verify_tree(location: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file of a complete copy against its manifest; return the manifest.

    Raises:
        ArtifactError: no manifest, an unfinished copy, or a missing, extra or damaged file (named).
    """
    fs, root = filesystem(location)
    manifest = _read_manifest(fs, root, str(location))
    if manifest is None:
        raise _artifact_error(f"{_join(str(location), MANIFEST)}: missing; {location} is not a copy made by chaosfm")
    if not manifest["complete"]:
        raise _artifact_error(f"{location}: an unfinished copy ({MANIFEST} is not complete)")
    files = {name: size for name, size in _listing(fs, root).items() if not _is_ours(name)}
    _source_manifest(fs, root, location, files, "verify", partial=False)
    for name, entry in sorted(manifest["files"].items()):
        if _sha256(fs, _join(root, name)) != entry["sha256"]:
            raise _artifact_error(f"{_join(str(location), name)}: damaged (sha256 does not match {MANIFEST})")
    return manifest
