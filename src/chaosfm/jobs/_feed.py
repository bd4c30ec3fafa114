"""A live feed for ``chaosfm stream --data URL``: text lines from a websocket or a TCP socket.

``ws://HOST:PORT/PATH`` (``wss://`` with TLS) reads websocket messages, each one line or several
separated by newlines; ``tcp://HOST:PORT`` reads newline-ended lines from a plain socket. The
lines are what ``--data -`` reads on stdin (CSV, or JSON objects): :func:`chaosfm.predictor.run_stream`
parses them.

Reconnection: a connection that fails to open, or drops, is opened again after a wait that
doubles each time, ``backoff_seconds`` * 2**k capped at ``backoff_cap_seconds``, up to
``max_retries`` attempts in a row; a connection that delivered a line resets the count. No jitter:
jitter keeps many clients of one server from reconnecting in step, and a stream is one client.
When the retries are spent, the feed raises :class:`FeedLost` (naming the URL and the last
error); the job then ends the stream as the input's end would and writes every output before it
raises. A websocket closed by the server with code 1000 (normal closure) is the end of the
feed, not a drop. TCP has no such signal: a closed connection is a drop, and the stream ends
when the retries are spent or on Ctrl-C. A line whose newline never arrived before a drop is
discarded (a tick is whole only once its newline is read; the server sends it again).

What was sent again after a reconnect is the parser's business, by timestamp (``resends`` of
:func:`~chaosfm.predictor.run_stream`): this module only moves lines.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from chaosfm._config import ConfigError
from chaosfm._progress import say
from chaosfm.data import DataError

__all__ = ["FEED_SCHEMES", "Feed", "FeedConfig", "FeedLost", "is_feed"]

FEED_SCHEMES = ("ws", "wss", "tcp")
"""URL schemes ``--data`` reads as a live feed."""

_LONGEST_LINE = 1 << 20
"""Bytes a TCP line may reach without its newline before it is handed on as it is (the parser
then reports it); a websocket message has the same limit (websockets' ``max_size``)."""


class FeedConfig(BaseModel):
    """How a live feed reconnects (``--set feed.max_retries=20``)."""

    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(10, ge=0, description="reconnection attempts in a row before the stream ends"
                                                   " (a connection that delivers a line resets the count)")
    backoff_seconds: float = Field(0.5, gt=0, description="wait before the first reconnection; doubles each time")
    backoff_cap_seconds: float = Field(30.0, gt=0, description="longest wait between reconnections")
    connect_timeout_seconds: float = Field(10.0, gt=0, description="time a connection may take to open")


class FeedLost(DataError):
    """The feed could not be reached again after ``max_retries`` attempts (the stream's outputs
    are written before it is raised)."""

    rule_name = "a reachable feed"


class _Dropped(Exception):  # noqa: N818 - the connection's end, retried: never leaves this module
    """A connection that ended without the server saying the feed is over."""


def is_feed(data: Any) -> bool:
    """Whether ``--data`` names a live feed (a ``ws://``, ``wss://`` or ``tcp://`` URL)."""
    return isinstance(data, str) and urlsplit(data).scheme.lower() in FEED_SCHEMES and "://" in data


class Feed:
    """The lines of the feed at ``url``, across reconnections; iterate it once (in a reader thread:
    :func:`chaosfm.jobs.stream.live_lines`), :meth:`close` it from any thread.

    Attributes:
        connections: connections opened.
        end: why the lines ended: ``"closed by the server"``, ``"retries spent"``, ``"closed"``
            (:meth:`close`), or None while they go on.

    Raises:
        ConfigError: (on creation) ``url`` has no host or, for ``tcp://``, no port.
    """

    def __init__(self, url: str, config: FeedConfig | None = None, *, poll_seconds: float = 0.5):
        parts = urlsplit(url)
        self.scheme = parts.scheme.lower()
        if self.scheme not in FEED_SCHEMES:
            raise ConfigError(f"data (--data) {url}: not a feed URL (schemes: {', '.join(FEED_SCHEMES)})")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or (self.scheme == "tcp" and port is None):
            raise ConfigError(f"data (--data) {url}: a feed URL needs a host and a port"
                              " (ws://HOST:PORT/PATH or tcp://HOST:PORT)")
        if self.scheme != "tcp":
            from websockets.exceptions import InvalidURI
            from websockets.uri import parse_uri

            try:
                parse_uri(url)
            except InvalidURI as error:
                raise ConfigError(f"data (--data) {url}: not a websocket URL ({error})") from None
        self.url, self.host, self.port = url, parts.hostname, port
        self.config = config or FeedConfig()
        self.poll_seconds = poll_seconds  # how soon a blocked read notices close()
        self.connections = 0
        self.end: str | None = None
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop reading: the iteration ends within ``poll_seconds``, its connection closed."""
        self._closed.set()

    def summary(self) -> dict[str, Any]:
        """``metrics["feed"]``: the URL, connections opened, reconnections, and why it ended."""
        return {"url": self.url, "connections": self.connections, "reconnections": max(self.connections - 1, 0),
                "end": self.end}

    def __iter__(self) -> Iterator[str]:
        # websockets' own sync ``reconnect`` (not in 13, the oldest release allowed) retries a failed
        # open forever and only for websockets; one loop here serves both transports, with a limit.
        config, failures = self.config, 0
        while True:
            delivered = False
            try:
                for line in self._tcp_lines() if self.scheme == "tcp" else self._websocket_lines():
                    delivered = True
                    yield line
                self.end = "closed" if self._closed.is_set() else "closed by the server"
                return
            except (OSError, _Dropped, *_websocket_errors()) as error:
                if self._closed.is_set():
                    self.end = "closed"
                    return
                failures = 0 if delivered else failures
                if failures >= config.max_retries:
                    self.end = "retries spent"
                    raise FeedLost(
                        f"lost: {failures} reconnection attempt(s) in a row failed or delivered nothing"
                        f" (feed.max_retries {config.max_retries}, waits from {config.backoff_seconds:g} s doubling"
                        f" to at most {config.backoff_cap_seconds:g} s); last: {_describe(error)}; the stream"
                        " ended and its outputs are written", source=self.url) from None
                wait = min(config.backoff_cap_seconds, config.backoff_seconds * 2**failures)
                failures += 1
                say(f"chaosfm: {self.url}: {_describe(error)}; reconnecting in {wait:g} s"
                    f" (retry {failures} of {config.max_retries})")
                if self._closed.wait(wait):
                    self.end = "closed"
                    return

    def _websocket_lines(self) -> Iterator[str]:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        timeout = self.config.connect_timeout_seconds
        with connect(self.url, open_timeout=timeout, close_timeout=timeout, max_size=_LONGEST_LINE) as websocket:
            self.connections += 1
            while not self._closed.is_set():
                try:
                    message = websocket.recv(timeout=self.poll_seconds)
                except TimeoutError:
                    continue
                except ConnectionClosed as closed:
                    if closed.rcvd is not None and closed.rcvd.code == 1000:
                        return  # normal closure: the server says the feed is over
                    raise _Dropped(str(closed)) from None
                text = message.decode("utf-8", errors="replace") if isinstance(message, bytes) else message
                yield from text.splitlines()

    def _tcp_lines(self) -> Iterator[str]:
        with socket.create_connection((self.host, self.port), timeout=self.config.connect_timeout_seconds) as sock:
            self.connections += 1
            sock.settimeout(self.poll_seconds)
            pending = b""
            while not self._closed.is_set():
                try:
                    chunk = sock.recv(65_536)
                except TimeoutError:
                    continue
                if not chunk:
                    cut = f" ({len(pending)} bytes of a line without its newline discarded)" if pending else ""
                    raise _Dropped(f"the server closed the connection{cut}")
                *complete, pending = (pending + chunk).split(b"\n")
                if len(pending) > _LONGEST_LINE:  # handed on whole: the parser reports it, memory stays bounded
                    complete.append(pending)
                    pending = b""
                for raw in complete:
                    # A byte that is not UTF-8 costs its line (the parser reports it), not the feed.
                    yield raw.decode("utf-8", errors="replace")


def _websocket_errors() -> tuple[type[Exception], ...]:
    """What a websocket connection raises when it fails to open or breaks: all retried (a bad URI
    is refused before the first connection, by :class:`Feed`)."""
    from websockets.exceptions import WebSocketException

    return (WebSocketException,)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if isinstance(error, OSError) else text
