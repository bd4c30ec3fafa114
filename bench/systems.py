"""The built-in chaotic systems, measured beside what is published: a markdown table.

For every system of ``chaosfm.data.SYSTEMS`` the table shows its kind, dimension and the source
of its equations; the published largest Lyapunov exponent (``lyapunov_reference``) beside the
one chaosfm measures (:func:`chaosfm.data.largest_lyapunov_exponent`, Benettin's method with the
system's default ``lyapunov_steps``, seed 0 unless ``--seeds`` asks for more: then the mean and
the range over seeds 0..N-1) and their ratio; the registry's ``period`` beside the period
re-measured by :func:`chaosfm.data.dominant_period` on one trajectory of ``--period-length``
samples at the default ``dt``; the default ``dt`` and the samples per period it gives. Maps have
no period (one sample per iteration). Timings are not printed: the machine is shared.

``docs/systems.md`` holds this script's output.

Usage: ``python bench/systems.py [--seeds 1] [--period-length 65536] [NAME ...]``.
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np


def _short(citation: str | None) -> str:
    """``Author, A. (1999). Title...`` -> ``Author, A. (1999)``."""
    if citation is None:
        return "—"
    match = re.match(r"^(.*?\(\d{4}\))", citation)
    return (match.group(1) if match else citation).replace("|", "/")


def _exponents(name: str, seeds: int) -> list[float]:
    from chaosfm.data import largest_lyapunov_exponent

    return [largest_lyapunov_exponent(name, seed=seed) for seed in range(seeds)]


def _period(name: str, length: int) -> float | None:
    from chaosfm.data import SYSTEMS, chaotic_system, dominant_period, state_columns

    system = SYSTEMS[name]
    if system.period is None:
        return None
    frame = chaotic_system(name, length=length)
    return dominant_period(frame[state_columns(frame)].to_numpy(), system.dt)


def _number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="systems to measure (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="Benettin runs per system, seeds 0..N-1")
    parser.add_argument("--period-length", type=int, default=2**16, help="samples for the period")
    args = parser.parse_args(argv)

    from chaosfm.data import SYSTEMS

    names = args.names or list(SYSTEMS)
    spread = " (range)" if args.seeds > 1 else ""
    print(
        f"| system | kind | dim | equations | published λ | source of λ | measured λ{spread} | "
        "measured / published | period | re-measured period | dt | samples per period |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        system = SYSTEMS[name]
        exponents = _exponents(name, args.seeds)
        measured = float(np.mean(exponents))
        if args.seeds > 1:
            measured_text = f"{measured:.4g} ({min(exponents):.4g}–{max(exponents):.4g})"
        else:
            measured_text = f"{measured:.4g}"
        reference = system.lyapunov_reference
        ratio = "—" if reference is None else f"{measured / reference:.3f}"
        period = _period(name, args.period_length)
        per_period = "—" if system.period is None else f"{system.period / system.dt:.0f}"
        print(
            f"| {name} | {system.kind} | {system.dimension} | {_short(system.citation)} | "
            f"{_number(reference)} | {_short(system.lyapunov_citation)} | {measured_text} | {ratio} | "
            f"{_number(system.period)} | {_number(period)} | {system.dt:g} | {per_period} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
