"""The backtest tearsheet: its HTML, its figures, the rolling Sharpe ratio and monthly returns
against empyrical, and the fresh rows shaded on the time plots."""

import base64
import re

import empyrical
import matplotlib
import numpy as np
import pandas as pd
import pytest

from chaosfm.evaluate import PORTFOLIO, backtest_statistics
from chaosfm.report import tearsheet_section
from chaosfm.report._plots import plt
from chaosfm.report._tearsheet import _shade, class_spans, monthly_table, rolling_sharpe


def pnl_of(names, n=140, seed=0):
    """Portfolio rows of strategies over ``n`` business days: the first 100 in_sample, the rest fresh."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2019-11-01", periods=n)
    classes = np.where(np.arange(n) < 100, "in_sample", "fresh")
    parts = []
    for name in names:
        net = 0.0005 + 0.01 * rng.standard_normal(n)
        model, rule = name.split("/")
        parts.append(pd.DataFrame({"strategy": name, "model": model, "rule": rule, "asset": PORTFOLIO,
                                   "timestamp": days, "position": 1.0, "gross": net + 1e-4, "turnover": 0.2,
                                   "cost": 1e-4, "net": net, "window_class": classes}))
    return pd.concat(parts, ignore_index=True)


def test_the_section_has_the_table_every_figure_and_the_pbo():
    pnl = pnl_of(["garch/sign_median", "ar/kelly"])
    stats = backtest_statistics(pnl)
    section = tearsheet_section(pnl, stats, description="two strategies & costs", rolling_window=20)
    assert "<h2>Backtest</h2>" in section and "two strategies &amp; costs" in section
    assert section.count("<h3>") == 2 and "<h3>garch/sign_median</h3>" in section
    assert f"PBO {stats['pbo']['value']:.3f}" in section and "2 strategies tried" in section
    # One overview, then two figures per strategy; each a PNG.
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', section)
    assert len(images) == 5
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    sharpe = stats["strategies"]["ar/kelly"]["sharpe"]
    assert f"{sharpe:.4g}" in section  # the table shows the statistics it was given


def test_rolling_sharpe_and_its_band_against_empyrical_and_lo():
    rng = np.random.default_rng(1)
    net = 0.001 + 0.01 * rng.standard_normal(80)
    sharpe, band = rolling_sharpe(net, 20, 252)
    reference = empyrical.roll_sharpe_ratio(net, window=20)
    np.testing.assert_allclose(sharpe, reference, rtol=1e-10)
    # The band is 1.96 SE, close to Lo's Gaussian sqrt((1 + SR^2 / 2) / n) for normal returns.
    window = net[-20:]
    per_period = window.mean() / window.std(ddof=1)
    lo = 1.96 * np.sqrt((1 + per_period**2 / 2) / 20) * np.sqrt(252)
    assert band[-1] == pytest.approx(lo, rel=0.25)
    with pytest.raises(ValueError, match="needs window >= 3 and at least 20 rows"):
        rolling_sharpe(net[:10], 20, 252)


def test_monthly_returns_compound_like_empyrical():
    pnl = pnl_of(["m/r"])
    table = monthly_table(pnl)
    series = pd.Series(pnl["net"].to_numpy(), index=pd.DatetimeIndex(pnl["timestamp"]))
    reference = empyrical.aggregate_returns(series, "monthly") * 100
    for (year, month), value in reference.items():
        assert table.loc[year, month] == pytest.approx(value, rel=1e-12)
    assert np.isnan(table.loc[2019, 1])  # a month the strategy did not trade


def test_fresh_rows_are_shaded_as_one_span_per_run():
    stamps = pd.Series(pd.bdate_range("2021-01-01", periods=6))
    classes = pd.Series(["in_sample", "fresh", "fresh", "in_sample", "fresh", "within_pretrain"])
    assert class_spans(stamps, classes, "fresh") == [(stamps[1].to_datetime64(), stamps[2].to_datetime64()),
                                                     (stamps[4].to_datetime64(), stamps[4].to_datetime64())]
    figure, axis = plt.subplots()
    _shade(axis, pd.DataFrame({"timestamp": stamps, "window_class": classes}))
    colours = [matplotlib.colors.to_hex(patch.get_facecolor()) for patch in axis.patches]
    assert colours.count("#0072b2") == 2 and colours.count("#e69f00") == 1  # fresh twice, within_pretrain once
    plt.close(figure)
