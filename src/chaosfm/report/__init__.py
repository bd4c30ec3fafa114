"""Self-contained HTML reports with embedded plots, and the figures jobs write beside their runs."""

from chaosfm.report._html import dataset_section, write_report
from chaosfm.report._plots import reward_curve, to_png

__all__ = ["dataset_section", "reward_curve", "to_png", "write_report"]
