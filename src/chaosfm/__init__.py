"""chaosfm: forecast chaotic and financial time series, and tell the truth about how well it did."""

__version__ = "0.1.0"

__all__ = ["__version__"]
