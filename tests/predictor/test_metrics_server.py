"""The Prometheus endpoint: scraped on loopback during a run, it serves the telemetry series."""

import math
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chaosfm.predictor import MetricsServer, run_stream

from .test_stream import STREAM, _walk

FLAGS = {"sinkhorn_fallback", "degraded_inference", "emergency", "regime_change", "mode_collapse", "dgm_suspended",
         "high_volatility", "crisis", "residual_invalid", "warm"}


def _scrape(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _row(**changes):
    row = {"step_seconds": 0.0015, "warm": True, "hoelder": 0.48, "distance_to_alarm": 3.5, "cusum_statistic": 1.5,
           "cusum_threshold": 5.0, "kurtosis": 3.2, "prediction": 101.0, "observed": 100.5,
           "sinkhorn_fallback": False, "degraded_inference": False, "emergency": True, "regime_change": False,
           "mode_collapse": False, "dgm_suspended": False, "high_volatility": True, "crisis": False,
           "residual_invalid": False,
           "weight_stable": 0.1, "weight_dgm": 0.2, "weight_imex": 0.3, "weight_signature": 0.4}
    return {**row, **changes}


def test_server_exposes_what_it_observed():
    with MetricsServer(port=0) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        server.observe(_row())
        server.observe(_row(step_seconds=0.02, emergency=False, hoelder=0.52))
        got = _scrape(server.url)
    assert got[("chaosfm_step_latency_seconds_count", ())] == 2
    assert got[("chaosfm_step_latency_seconds_sum", ())] == pytest.approx(0.0215)
    assert got[("chaosfm_step_latency_seconds_bucket", (("le", "0.002"),))] == 1  # 1.5 ms only
    assert got[("chaosfm_step_latency_seconds_bucket", (("le", "0.025"),))] == 2
    assert got[("chaosfm_flag", (("flag", "emergency"),))] == 0  # the latest step's value
    assert got[("chaosfm_flag_raised_total", (("flag", "emergency"),))] == 1
    assert got[("chaosfm_flag_raised_total", (("flag", "high_volatility"),))] == 2
    assert got[("chaosfm_flag", (("flag", "sinkhorn_fallback"),))] == 0
    assert got[("chaosfm_kernel_weight", (("kernel", "D"), ("name", "signature")))] == 0.4
    assert got[("chaosfm_hoelder_exponent", ())] == 0.52
    assert got[("chaosfm_cusum_distance_to_alarm", ())] == 3.5
    assert got[("chaosfm_steps_total", ())] == 2
    # Closed: the port is free again.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


def test_scrape_during_a_run(tmp_path):
    ready, scrapes, rows = [], [], []

    def on_prediction(row):
        rows.append(row)
        if len(rows) == 45:  # past warm-up (32): weights, Hölder and CUSUM are live
            scrapes.append(_scrape(ready[0]["metrics_url"]))

    config = STREAM.model_copy(update={"metrics_port": 0})
    result = run_stream(config, series=_walk(60, seed=4), on_ready=ready.append, on_prediction=on_prediction)
    metrics = result.metrics
    url = ready[0]["metrics_url"]
    assert url.startswith("http://127.0.0.1:") and metrics["metrics_url"] == url
    (got,) = scrapes
    names = {name for name, _ in got}
    assert {"chaosfm_step_latency_seconds_bucket", "chaosfm_step_latency_seconds_count", "chaosfm_flag",
            "chaosfm_kernel_weight", "chaosfm_hoelder_exponent", "chaosfm_cusum_distance_to_alarm"} <= names
    assert got[("chaosfm_step_latency_seconds_count", ())] == 45
    assert {dict(labels)["flag"] for name, labels in got if name == "chaosfm_flag"} == FLAGS
    assert got[("chaosfm_flag", (("flag", "warm"),))] == 1
    weights = [v for (name, _), v in got.items() if name == "chaosfm_kernel_weight"]
    assert len(weights) == 4 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    # The gauges hold the 45th step's telemetry.
    import pandas as pd

    step = pd.DataFrame(result.telemetry).iloc[44]
    assert got[("chaosfm_hoelder_exponent", ())] == pytest.approx(step["hoelder"], rel=1e-6)
    assert math.isfinite(got[("chaosfm_hoelder_exponent", ())])
    assert got[("chaosfm_cusum_distance_to_alarm", ())] == pytest.approx(step["distance_to_alarm"], rel=1e-6)
    assert got[("chaosfm_cusum_distance_to_alarm", ())] == pytest.approx(
        step["cusum_threshold"] - step["cusum_statistic"], rel=1e-5)
    with pytest.raises(urllib.error.URLError):  # the run's own server is shut down at the end
        urllib.request.urlopen(url, timeout=2)


def test_a_port_in_use_is_bad_input_naming_the_port(tmp_path):
    from chaosfm._config import ConfigError
    from chaosfm.cli._main import main

    with MetricsServer(port=0) as taken:
        with pytest.raises(ConfigError, match=rf"metrics_port: cannot serve metrics on 127\.0\.0\.1:{taken.port}"):
            MetricsServer(port=taken.port)
        data = tmp_path / "walk.csv"
        data.write_text("close\n" + "\n".join(str(100 + i % 7) for i in range(40)) + "\n")
        code = main(["stream", "--data", str(data), "--out", str(tmp_path / "out"), "--metrics-port", str(taken.port)])
    assert code == 2
