"""Self-contained HTML reports with embedded plots, and the figures jobs write beside their runs."""

from typing import TYPE_CHECKING

from chaosfm._lazy import attach

if TYPE_CHECKING:  # what each name is, for readers and type checkers; at run time `attach` imports on first use
    from chaosfm.report._chaos_bench import chaos_bench_section
    from chaosfm.report._html import compared_heading, dataset_section, windows_differ, write_report
    from chaosfm.report._glossary import METRICS, WINDOW_CLASSES, glossary_section, term
    from chaosfm.report._markdown import evaluation_markdown
    from chaosfm.report._loss_plot import loss_curve, smoothed
    from chaosfm.report._plots import reward_curve, to_png, vpt_by_system
    from chaosfm.report._stream_plot import stream_telemetry, stream_times
    from chaosfm.report._tearsheet import tearsheet_section

__getattr__, __dir__ = attach(__name__, {
    "chaosfm.report._chaos_bench": ("chaos_bench_section",),
    "chaosfm.report._html": ("compared_heading", "dataset_section", "windows_differ", "write_report"),
    "chaosfm.report._glossary": ("METRICS", "WINDOW_CLASSES", "glossary_section", "term"),
    "chaosfm.report._markdown": ("evaluation_markdown",),
    "chaosfm.report._loss_plot": ("loss_curve", "smoothed"),
    "chaosfm.report._plots": ("reward_curve", "to_png", "vpt_by_system"),
    "chaosfm.report._stream_plot": ("stream_telemetry", "stream_times"),
    "chaosfm.report._tearsheet": ("tearsheet_section",),
})

__all__ = [
    "chaos_bench_section", "compared_heading", "dataset_section", "evaluation_markdown", "reward_curve", "to_png", "vpt_by_system",
    "windows_differ", "write_report", "tearsheet_section", "loss_curve", "smoothed",
    "METRICS", "WINDOW_CLASSES", "glossary_section", "term", "stream_telemetry", "stream_times",
]
