"""``chaosfm greeks``: Malliavin Greeks of a basket digital under Black–Scholes."""

from __future__ import annotations

import argparse
import time
from typing import Any

from chaosfm.cli._output import say, show
from chaosfm.cli._parser import common, overrides

_FLAGS = ("spot", "strike", "vol", "rate", "maturity", "weights", "correlation", "paths", "batch_size", "seed", "out", "x64")


def cmd_greeks(args: argparse.Namespace) -> None:
    import pandas as pd

    from chaosfm.jobs import greeks

    config = greeks.read(args.config, overrides(args, greeks.FLAGS, _FLAGS))
    started = time.perf_counter()
    metrics = greeks.run(config)
    frame = pd.read_csv(config.out / "greeks.csv", keep_default_na=False)
    show(f"basket digital under Black–Scholes, {metrics['assets']} asset(s), {metrics['paths']:,} paths", frame)
    say(f"wrote {config.out}/greeks.csv and metrics.json in {time.perf_counter() - started:.1f} s")


def add(commands: Any) -> None:
    p = commands.add_parser("greeks", help="price, delta, gamma and vega of a basket digital by Malliavin weights",
                            parents=common("seed", "out", "config", "set", "x64"))
    p.add_argument("--spot", help="S_i(0) of each asset, comma-separated (D values; default: the config's)")
    p.add_argument("--strike", type=float, help="K: the digital pays 1 when sum_i w_i S_i(T) > K (default: the config's)")
    p.add_argument("--vol", help="sigma_i per year, comma-separated (one value: every asset; default: the config's)")
    p.add_argument("--rate", type=float, help="r per year, continuously compounded (default 0)")
    p.add_argument("--maturity", type=float, help="T in years (default 1)")
    p.add_argument("--weights", help="basket weights w_i, comma-separated (default 1/D each)")
    p.add_argument("--correlation", help="one number for every pair, or D*D numbers row by row, comma-separated "
                                          "(default: 0)")
    p.add_argument("--paths", type=int, help="Monte Carlo paths (default 1048576)")
    p.add_argument("--batch-size", type=int, help="paths drawn at once (default 262144)")
    p.set_defaults(run=cmd_greeks)
