"""The cache directory and the export key are used only when private; refused ones are named."""

import os
import stat

import pytest

from chaosfm.predictor import _cache
from chaosfm.predictor._cache import (
    CONFIG_DIR_ENV,
    KEY_BYTES,
    UnsafeCacheError,
    cache_secret,
    key_path,
    private_directory,
    usable_cache_dir,
)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loud(monkeypatch):
    """Notes on stderr are shown (the test session sets CHAOSFM_QUIET)."""
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)


@pytest.fixture
def default_cache(monkeypatch, tmp_path):
    """The private default cache directory, under a temporary XDG_CACHE_HOME (never the user's)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "chaosfm" / "jax"


def test_a_created_cache_dir_is_0700_whatever_the_umask(tmp_path):
    previous = os.umask(0o277)  # mkdir(mode=0o700) alone would make it 0500 (unusable)
    try:
        made = private_directory(tmp_path / "cache")
    finally:
        os.umask(previous)
    assert made == (tmp_path / "cache").resolve()
    assert _mode(made) == 0o700


def test_a_world_writable_cache_dir_falls_back_to_the_private_default(tmp_path, default_cache, loud, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # what another user could plant programs in
    with pytest.raises(UnsafeCacheError, match="mode 0777.*must not be writable by group or others"):
        private_directory(shared)
    used = usable_cache_dir(shared)
    assert used == default_cache.resolve()
    assert _mode(used) == 0o700
    assert _mode(shared) == 0o777  # refused, not silently "fixed" for its owner
    said = capsys.readouterr().err
    assert str(shared) in said and "using the private default" in said and str(default_cache) in said


def test_a_group_writable_cache_dir_is_refused(tmp_path, default_cache):
    shared = tmp_path / "group"
    shared.mkdir()
    os.chmod(shared, 0o770)
    assert usable_cache_dir(shared) == default_cache.resolve()
    os.chmod(shared, 0o755)  # readable is fine: nobody else can write
    assert usable_cache_dir(shared) == shared.resolve()


def test_a_cache_dir_owned_by_another_user_is_refused(tmp_path, default_cache, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    assert private_directory(mine) == mine.resolve()
    owner = os.stat(mine).st_uid
    # Changing a folder's owner needs root; pretend to be someone else instead.
    monkeypatch.setattr(_cache.os, "geteuid", lambda: owner + 1)
    with pytest.raises(UnsafeCacheError, match=f"owned by uid {owner}, not by this user"):
        private_directory(mine)
    # The default is "another user's" too now: no cache at all rather than an unsafe one.
    assert usable_cache_dir(mine) is None


def test_the_cache_key_is_32_random_bytes_0600_in_a_0700_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))
    secret = cache_secret()
    assert key_path() == tmp_path / "config" / "cache.key"
    assert len(secret) == KEY_BYTES and key_path().read_bytes() == secret
    assert _mode(key_path()) == 0o600 and _mode(tmp_path / "config") == 0o700
    assert cache_secret() == secret  # made once, then read
    assert sorted(os.listdir(tmp_path / "config")) == ["cache.key"]  # no temp file left behind
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "other"))
    assert cache_secret() != secret


def test_the_config_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert key_path() == tmp_path / "xdg" / "chaosfm" / "cache.key"


@pytest.mark.parametrize("damage", ["group-readable", "world-writable", "short", "folder-writable", "symlink",
                                    "another-owner"])
def test_a_key_file_that_is_not_private_is_refused(tmp_path, monkeypatch, damage):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))
    cache_secret()
    path = key_path()
    expected = {"group-readable": "mode 0640", "world-writable": "mode 0602", "short": "holds 5 bytes",
                "folder-writable": "config directory has mode 0777", "symlink": "cannot be opened",
                "another-owner": "not by this user"}[damage]
    if damage == "group-readable":
        os.chmod(path, 0o640)
    elif damage == "world-writable":
        os.chmod(path, 0o602)
    elif damage == "short":
        path.write_bytes(b"short")
    elif damage == "folder-writable":
        os.chmod(path.parent, 0o777)
    elif damage == "symlink":  # someone else's file behind a link: not followed
        target = tmp_path / "elsewhere"
        target.write_bytes(os.urandom(KEY_BYTES))
        os.chmod(target, 0o600)
        path.unlink()
        path.symlink_to(target)
    else:
        owner = os.stat(path).st_uid
        monkeypatch.setattr(_cache.os, "geteuid", lambda: owner + 1)
    with pytest.raises(UnsafeCacheError, match=expected):
        cache_secret()
