"""Prometheus endpoint for a running stream: the telemetry of the latest step, and step latency.

:class:`MetricsServer` owns its own ``CollectorRegistry`` (never the process-global one, so two
streams or a test do not collide) and serves it over HTTP on the loopback interface only. Series:

- ``chaosfm_step_latency_seconds`` (histogram): wall time of each predictor step, host copy included;
- ``chaosfm_flag{flag=...}`` (gauge, 0/1): ``sinkhorn_fallback`` (weights fell back to uniform),
  ``degraded_inference`` (no fresh observation for ``degraded_ttl`` steps, weights frozen),
  ``emergency`` (circuit breaker), ``regime_change`` (CUSUM alarm), ``mode_collapse``,
  ``dgm_suspended`` (kernel B out of the mixture), ``high_volatility``, ``crisis`` and
  ``residual_invalid`` (kurtosis tiers), and ``warm``, as of the latest step (every name in
  ``FLAGS``);
- ``chaosfm_kernel_weight{kernel="A".."D", name=...}`` (gauge): the orchestrator's mixing weights;
- ``chaosfm_hoelder_exponent`` (gauge, NaN until defined), ``chaosfm_cusum_distance_to_alarm``,
  ``chaosfm_cusum_statistic``, ``chaosfm_cusum_threshold``, ``chaosfm_kurtosis``,
  ``chaosfm_prediction``, ``chaosfm_observed`` (gauges);
- ``chaosfm_steps_total`` (counter) and ``chaosfm_flag_raised_total{flag=...}`` (counter of steps
  with the flag up).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from chaosfm._config import ConfigError
from chaosfm.predictor._draws import KERNELS
from chaosfm.predictor._telemetry import FLAGS

# Step latency buckets, seconds: the step is ~1 ms; a compile or a refit shows up in the tail.
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0)
KERNEL_LABELS = ("A", "B", "C", "D")  # the names of KERNELS, in order
_GAUGES = {
    "hoelder": ("chaosfm_hoelder_exponent", "WTMM Hölder exponent of the level buffer (NaN until defined)"),
    "distance_to_alarm": ("chaosfm_cusum_distance_to_alarm", "CUSUM threshold minus statistic, error units"),
    "cusum_statistic": ("chaosfm_cusum_statistic", "one-sided CUSUM statistic, error units"),
    "cusum_threshold": ("chaosfm_cusum_threshold", "kurtosis-adaptive CUSUM threshold, error units"),
    "kurtosis": ("chaosfm_kurtosis", "empirical kurtosis of standardised errors"),
    "prediction": ("chaosfm_prediction", "point prediction of the next observation"),
    "observed": ("chaosfm_observed", "the latest observation"),
}


class MetricsServer:
    """Serve a stream's telemetry on ``http://127.0.0.1:PORT/metrics``.

    Args:
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        host: interface to bind; loopback by default, the metrics are not for the network.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.registry = CollectorRegistry(auto_describe=True)
        self._latency = Histogram(
            "chaosfm_step_latency_seconds", "wall time of one predictor step", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._flags = Gauge("chaosfm_flag", "flag of the latest step (0/1)", ["flag"], registry=self.registry)
        self._raised = Counter(
            "chaosfm_flag_raised", "steps with the flag raised", ["flag"], registry=self.registry
        )
        self._weights = Gauge(
            "chaosfm_kernel_weight", "orchestrator mixing weight of a kernel", ["kernel", "name"],
            registry=self.registry,
        )
        self._gauges = {field: Gauge(name, text, registry=self.registry) for field, (name, text) in _GAUGES.items()}
        self._steps = Counter("chaosfm_steps", "predictor steps taken", registry=self.registry)
        for flag in (*FLAGS, "warm"):
            self._flags.labels(flag=flag).set(0)
            if flag != "warm":
                self._raised.labels(flag=flag)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:  # in use, privileged, or not an address of this machine
            raise ConfigError(
                f"metrics_port: cannot serve metrics on {host}:{port} ({error.strerror or error}); choose another"
                " port (--metrics-port), or 0 for a free one"
            ) from None
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def observe(self, row: dict[str, Any]) -> None:
        """Record one telemetry row (``telemetry_record``)."""
        self._latency.observe(row["step_seconds"])
        self._steps.inc()
        for flag in FLAGS:
            self._flags.labels(flag=flag).set(float(row[flag]))
            if row[flag]:
                self._raised.labels(flag=flag).inc()
        self._flags.labels(flag="warm").set(float(row["warm"]))
        for letter, name in zip(KERNEL_LABELS, KERNELS):
            self._weights.labels(kernel=letter, name=name).set(row[f"weight_{name}"])
        for field, gauge in self._gauges.items():
            gauge.set(row[field])

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
