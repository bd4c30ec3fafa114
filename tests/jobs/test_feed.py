"""``chaosfm stream --data ws://... | tcp://...``: a live feed through a reconnect, nothing lost or repeated.

Local servers on 127.0.0.1 (a free port each) send ticks, drop the connection mid-way, send the
last few ticks again on the next connection, then go on; some lines are malformed. The stream's
predictions must hold each tick exactly once, the malformed lines must be reported, and every
output must be written. Back-off waits are hundredths of a second here.
"""

import itertools
import json
import socket
import socketserver
import threading

import numpy as np
import pandas as pd
import pytest

from chaosfm.jobs import stream
from chaosfm.jobs._feed import Feed, FeedConfig, FeedLost, is_feed

TICKS = 60
DROP_AFTER = 30  # ticks sent before the first connection drops
RESENT = 5  # ticks the second connection sends again
STAMPS = [str(t) for t in pd.date_range("2024-03-01 09:30", periods=TICKS, freq="min")]
VALUES = 100.0 + np.cumsum(np.random.default_rng(7).standard_normal(TICKS))
SHORT = {"feed.max_retries": 2, "feed.backoff_seconds": 0.01, "feed.backoff_cap_seconds": 0.05}
# The compiled step tests/jobs/test_stream.py uses (one compile per process): fit_steps=0, no
# persistent compilation cache.
FAST = {"stream.compilation_cache": False, "stream.predictor.dgm.fit_steps": 0, "stream.plot": False}


def _job(url, out, **extra):
    return stream.read(None, {"data": url, "out": str(out), **FAST, **SHORT, **extra})


def _json(i):
    return json.dumps({"timestamp": STAMPS[i], "close": round(float(VALUES[i]), 4)})


def _csv(i):
    return f"{STAMPS[i]},{VALUES[i]:.4f}"


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _check_each_tick_once(out, metrics):
    predictions = pd.read_csv(out / "predictions.csv")
    # The first tick only starts the predictor's state: one prediction per tick after it.
    assert predictions["timestamp"].tolist() == STAMPS[1:]
    np.testing.assert_allclose(predictions["observed"], VALUES[1:], atol=1e-4)
    assert predictions["line"].is_unique and predictions["row"].is_monotonic_increasing
    assert len(pd.read_csv(out / "telemetry.csv")) == TICKS - 1
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["resent_lines"] == RESENT and metrics["observations"] == TICKS
    assert (out / "meta.json").exists()
    return predictions


def test_a_websocket_feed_reconnects_and_streams_each_tick_once(tmp_path):
    from websockets.sync.server import serve

    connections = itertools.count()

    def handler(websocket):
        n = next(connections)
        if n == 0:
            for i in range(DROP_AFTER):
                websocket.send(_json(i))
                if i == 10:
                    websocket.send("{not json")
                if i == 20:  # a tick of its own time whose value is not a number
                    websocket.send(json.dumps({"timestamp": STAMPS[i] + ".5", "close": "n/a"}))
            websocket.close(code=1011, reason="restarting")  # an error close: reconnect
        else:
            # Two ticks in one message, as some feeds batch them.
            websocket.send("\n".join(_json(i) for i in range(DROP_AFTER - RESENT, DROP_AFTER + 2)))
            for i in range(DROP_AFTER + 2, TICKS):
                websocket.send(_json(i))
            websocket.close()  # 1000, normal closure: the feed is over

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ticks"
        out = tmp_path / "out"
        metrics = stream.run(_job(url, out))
        server.shutdown()
    _check_each_tick_once(out, metrics)
    assert [bad["line"] for bad in metrics["bad_lines"]] == [12, 23]
    assert all(url in bad["error"] for bad in metrics["bad_lines"])
    assert "readable JSON object" in metrics["bad_lines"][0]["error"]
    assert "'n/a' is not a number" in metrics["bad_lines"][1]["error"]
    assert metrics["feed"] == {"url": url, "connections": 2, "reconnections": 1, "end": "closed by the server"}


def test_a_restored_stream_skips_what_the_feed_replays_from_before_its_snapshot(tmp_path):
    from websockets.sync.server import serve

    snapshot = tmp_path / "feed.msgpack"
    parts = iter([range(DROP_AFTER), range(DROP_AFTER - RESENT, TICKS)])  # the second replays RESENT ticks

    def handler(websocket):
        for i in next(parts):
            websocket.send(_json(i))
        websocket.close()

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ticks"
        first = stream.run(_job(url, tmp_path / "a", **{"stream.snapshot": str(snapshot)}))
        second = stream.run(_job(url, tmp_path / "b", **{"stream.restore": str(snapshot)}))
        server.shutdown()
    head, tail = (pd.read_csv(tmp_path / name / "predictions.csv") for name in ("a", "b"))
    assert head["timestamp"].tolist() + tail["timestamp"].tolist() == STAMPS[1:]
    assert (first["resent_lines"], second["resent_lines"]) == (0, RESENT)


class _TcpFeed(socketserver.BaseRequestHandler):
    """Connection 0: header, ticks up to the drop with two malformed rows, then half a line and an
    abrupt close. Connection 1: the header again, the last ticks again, the rest. Later ones close
    at once (the feed is gone)."""

    connections = itertools.count()

    def handle(self):
        n = next(self.connections)
        if n == 0:
            lines = ["timestamp,close"] + [_csv(i) for i in range(DROP_AFTER)]
            lines.insert(8, "oops,not,a,row")
            lines.insert(16, f"{STAMPS[14]}.5,abc")
            self.request.sendall(("\n".join(lines) + "\n" + _csv(DROP_AFTER)[:12]).encode())
        elif n == 1:
            lines = ["timestamp,close"] + [_csv(i) for i in range(DROP_AFTER - RESENT, TICKS)]
            self.request.sendall(("\n".join(lines) + "\n").encode())
        self.request.shutdown(socket.SHUT_RDWR)


def test_a_tcp_feed_reconnects_streams_each_tick_once_and_ends_when_the_retries_are_spent(tmp_path):
    _TcpFeed.connections = itertools.count()
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TcpFeed) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"tcp://127.0.0.1:{server.server_address[1]}"
        out = tmp_path / "out"
        with pytest.raises(FeedLost, match=f"{url}: lost: 2 reconnection attempt.*outputs are written"):
            stream.run(_job(url, out))
        server.shutdown()
    metrics = json.loads((out / "metrics.json").read_text())
    _check_each_tick_once(out, metrics)
    assert [bad["line"] for bad in metrics["bad_lines"]] == [9, 17]
    assert "4 fields; the header has 2" in metrics["bad_lines"][0]["error"]
    assert metrics["feed"]["end"] == "retries spent" and metrics["feed"]["connections"] == 4


def test_an_unreachable_feed_ends_with_exit_2_naming_the_url_and_writes_the_outputs(tmp_path, capsys, monkeypatch):
    from chaosfm.cli._main import main

    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)  # the reconnection notes are what is checked

    url = f"ws://127.0.0.1:{_free_port()}/ticks"  # bound then released: nothing listens there
    out = tmp_path / "out"
    code = main(["stream", "--data", url, "--out", str(out), "--no-compilation-cache", "--no-warm-up",
                 "--set", "stream.predictor.dgm.fit_steps=0", "--set", "feed.max_retries=2",
                 "--set", "feed.backoff_seconds=0.01"])
    errors = capsys.readouterr().err
    assert code == 2, errors
    assert f"chaosfm: error: {url}: lost: 2 reconnection attempt(s)" in errors and "[rule: a reachable feed]" in errors
    assert errors.count("reconnecting in") == 2  # 0.01 s, then 0.02 s
    assert pd.read_csv(out / "predictions.csv").empty
    assert json.loads((out / "metrics.json").read_text())["feed"]["end"] == "retries spent"


def test_feed_urls_are_recognised_and_a_url_without_a_port_is_refused():
    from chaosfm._config import ConfigError

    assert is_feed("ws://h:1/p") and is_feed("wss://h/p") and is_feed("tcp://h:1")
    assert not any(is_feed(d) for d in ("-", "sp500", "prices.csv", "C:/data/prices.csv", None))
    with pytest.raises(ConfigError, match="tcp://localhost: a feed URL needs a host and a port"):
        Feed("tcp://localhost")
    assert stream.read(None, {"data": "tcp://h:1", "out": "x"}).stream.on_bad_line == "skip"
    with pytest.raises(ConfigError, match="feed.max_retries"):
        stream.read(None, {"data": "tcp://h:1", "out": "x", "feed.max_retries": -1})


def test_backoff_doubles_up_to_its_cap_and_a_delivering_connection_resets_it(monkeypatch):
    waits = []
    feed = Feed("tcp://127.0.0.1:1", FeedConfig(max_retries=5, backoff_seconds=1.0, backoff_cap_seconds=3.0))
    attempts = iter([[], ["a"], [], [], [], [], [], []])

    def lines():
        for line in next(attempts):
            yield line
        raise ConnectionResetError("dropped")

    monkeypatch.setattr(feed, "_tcp_lines", lines)
    monkeypatch.setattr(feed._closed, "wait", lambda seconds: waits.append(seconds) or False)
    got = []
    with pytest.raises(FeedLost, match="lost: 5 reconnection attempt"):
        got.extend(feed)
    assert got == ["a"]
    assert waits == [1.0, 1.0, 2.0, 3.0, 3.0, 3.0]  # reset after "a"; capped at 3
