"""Self-contained HTML reports with embedded plots, and the figures jobs write beside their runs."""

from chaosfm.report._html import chaos_bench_section, compared_heading, dataset_section, windows_differ, write_report
from chaosfm.report._markdown import evaluation_markdown
from chaosfm.report._plots import reward_curve, to_png, vpt_by_system
from chaosfm.report._tearsheet import tearsheet_section

__all__ = [
    "chaos_bench_section", "compared_heading", "dataset_section", "evaluation_markdown", "reward_curve", "to_png", "vpt_by_system",
    "windows_differ", "write_report", "tearsheet_section",
]
