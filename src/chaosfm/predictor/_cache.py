"""Where the predictor's caches live, and the checks that keep other users out of them.

The cache directory holds JAX's persistent compilation cache and the predictor's exported
programs (``_warm.py``, ``_export.py``). Both are trusted when loaded: an executable or a program
someone else wrote there runs as this user. So a cache directory is used only if it is private:
owned by this user and writable by nobody else (:func:`private_directory`; one function, used by
whatever resolves or opens the cache). A directory chaosfm creates is made 0700 whatever the
umask. A directory that fails the check is not used: :func:`usable_cache_dir` falls back to the
private default and says so on stderr, or runs without a persistent cache if that fails too.

Exports are also signed: an HMAC-SHA256 under a secret that never leaves the user's private
config directory (:func:`cache_secret`: ``$CHAOSFM_CONFIG_DIR``, else ``<user config
dir>/chaosfm``, i.e. ``$XDG_CONFIG_HOME/chaosfm`` or ``~/.config/chaosfm`` on Linux; 32 random
bytes in ``cache.key``, 0600 in a 0700 directory). A file whose tag does not verify was not
written by this user's chaosfm and is never loaded. A key file or config directory that is not
private is refused like a cache directory: exports are then neither loaded nor written.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path

from chaosfm._progress import say

CACHE_DIR_ENV = "CHAOSFM_CACHE_DIR"
CONFIG_DIR_ENV = "CHAOSFM_CONFIG_DIR"
KEY_FILE = "cache.key"
KEY_BYTES = 32

_noted: set[str] = set()


class UnsafeCacheError(PermissionError):
    """A cache directory or key file another user owns or could write (or, for a key, read)."""


def note_once(message: str) -> None:
    """Say ``message`` on stderr the first time in this process (later repeats are dropped)."""
    if message not in _noted:
        _noted.add(message)
        say(message)


def default_cache_dir() -> Path:
    """``<user cache dir>/chaosfm/jax`` (platformdirs; ``~/.cache/chaosfm/jax`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("chaosfm")) / "jax"


def compilation_cache_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """``configured`` if given, else ``$CHAOSFM_CACHE_DIR``, else :func:`default_cache_dir`.

    Only names the directory; :func:`usable_cache_dir` checks it before anything is read from it.
    """
    if configured is not None:
        return Path(configured).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return default_cache_dir()


def _user() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def _check(path: Path, status: os.stat_result, what: str, forbidden: int, rule: str) -> None:
    user = _user()
    if user is not None and status.st_uid != user:
        raise UnsafeCacheError(
            f"{path}: {what} is owned by uid {status.st_uid}, not by this user (uid {user}); a {what}"
            f" must be owned by the user running chaosfm, since what is loaded from it runs as that user")
    if status.st_mode & forbidden:
        raise UnsafeCacheError(
            f"{path}: {what} has mode {stat.S_IMODE(status.st_mode):04o}; {rule}"
            f" (chmod {'700' if stat.S_ISDIR(status.st_mode) else '600'} it, or use another)")


def private_directory(path: str | os.PathLike[str], what: str = "cache directory") -> Path:
    """``path`` (resolved), created 0700 with its parents if missing, checked if it exists.

    Raises:
        UnsafeCacheError: it exists but another user owns it, or group or others may write to it.
        OSError: it cannot be created, or is not a directory.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; say exactly what we mean
    except FileExistsError:
        pass
    resolved = path.resolve()
    status = os.stat(resolved)
    if not stat.S_ISDIR(status.st_mode):
        raise NotADirectoryError(f"{path}: a {what} must be a directory")
    _check(resolved, status, what, 0o022, f"a {what} must not be writable by group or others")
    return resolved


def usable_cache_dir(directory: str | os.PathLike[str]) -> Path | None:
    """``directory`` if it is private (:func:`private_directory`), else the private default.

    A refused directory is named on stderr with the rule it breaks; if the default is refused
    too, None: run without a persistent cache (slower to start, never unsafe).
    """
    try:
        return private_directory(directory)
    except UnsafeCacheError as error:
        refused = str(error)
    fallback = default_cache_dir()
    if Path(directory).expanduser().resolve() != fallback.resolve():
        try:
            found = private_directory(fallback)
            note_once(f"{refused}; using the private default {found} instead")
            return found
        except UnsafeCacheError as error:
            refused = f"{refused}; and {error}"
    note_once(f"{refused}; running without a persistent compilation cache")
    return None


def config_dir() -> Path:
    """``$CHAOSFM_CONFIG_DIR``, else ``<user config dir>/chaosfm`` (``$XDG_CONFIG_HOME`` honoured)."""
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("chaosfm"))


def key_path() -> Path:
    return config_dir() / KEY_FILE


def cache_secret() -> bytes:
    """The 32-byte secret the exports are signed with, made on first use (0600 in a 0700 folder).

    Raises:
        UnsafeCacheError: the config directory or the key file is another user's, the folder is
            writable or the file readable or writable by group or others, or the file is not
            32 bytes (delete it: a new one is made, and the old exports are traced again).
    """
    folder = private_directory(config_dir(), "config directory")
    path = folder / KEY_FILE
    if not path.exists():
        handle, temp = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=folder)  # 0600
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(secrets.token_bytes(KEY_BYTES))
                stream.flush()
                os.fsync(stream.fileno())
            try:
                os.link(temp, path)  # never replaces a key another process made meanwhile
            except FileExistsError:
                pass
        finally:
            Path(temp).unlink(missing_ok=True)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        handle = os.open(path, flags)
    except OSError as error:
        raise UnsafeCacheError(f"{path}: the cache key cannot be opened ({error}); it must be a regular file") from None
    with os.fdopen(handle, "rb") as stream:
        status = os.fstat(stream.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise UnsafeCacheError(f"{path}: the cache key must be a regular file")
        _check(path, status, "cache key", 0o077, "a cache key must be readable and writable by its owner only")
        secret = stream.read(KEY_BYTES + 1)
    if len(secret) != KEY_BYTES:
        raise UnsafeCacheError(f"{path}: the cache key holds {len(secret)} bytes, not {KEY_BYTES}; delete it"
                               " and a new one is made")
    return secret
