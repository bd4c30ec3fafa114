"""Self-contained HTML reports with embedded plots, and the figures jobs write beside their runs."""

from chaosfm.report._chaos_bench import chaos_bench_section
from chaosfm.report._html import compared_heading, dataset_section, windows_differ, write_report
from chaosfm.report._glossary import METRICS, WINDOW_CLASSES, glossary_section, term
from chaosfm.report._markdown import evaluation_markdown
from chaosfm.report._loss_plot import loss_curve, smoothed
from chaosfm.report._plots import reward_curve, to_png, vpt_by_system
from chaosfm.report._stream_plot import stream_telemetry, stream_times
from chaosfm.report._tearsheet import tearsheet_section

__all__ = [
    "chaos_bench_section", "compared_heading", "dataset_section", "evaluation_markdown", "reward_curve", "to_png", "vpt_by_system",
    "windows_differ", "write_report", "tearsheet_section", "loss_curve", "smoothed",
    "METRICS", "WINDOW_CLASSES", "glossary_section", "term", "stream_telemetry", "stream_times",
]
