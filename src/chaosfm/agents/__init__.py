"""Strate III/IV agents: Multiverse Crossing, a confidence filter built on the JEPA's flow head."""

from chaosfm.agents._multiverse import (
    CrossingScores,
    confidence_filter,
    crossing_scores,
    filter,
    multiverse,
    tangent_perturb,
)

__all__ = [
    "CrossingScores",
    "confidence_filter",
    "crossing_scores",
    "filter",
    "multiverse",
    "tangent_perturb",
]
