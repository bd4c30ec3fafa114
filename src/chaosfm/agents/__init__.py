"""Strate III/IV agents: Multiverse Crossing, a confidence filter built on the JEPA's flow head."""

from chaosfm.agents._multiverse import (
    CrossingScores,
    MvxConfig,
    confidence_filter,
    crossing_scores,
    filter,
    multiverse,
    run_mvx,
    tangent_perturb,
)

__all__ = [
    "CrossingScores",
    "MvxConfig",
    "confidence_filter",
    "crossing_scores",
    "filter",
    "multiverse",
    "run_mvx",
    "tangent_perturb",
]
