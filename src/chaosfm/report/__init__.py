"""Self-contained HTML reports with embedded plots, and the figures jobs write beside their runs."""

from chaosfm._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "chaosfm.report._chaos_bench": ("chaos_bench_section",),
    "chaosfm.report._html": ("compared_heading", "dataset_section", "windows_differ", "write_report"),
    "chaosfm.report._glossary": ("METRICS", "WINDOW_CLASSES", "glossary_section", "term"),
    "chaosfm.report._markdown": ("evaluation_markdown",),
    "chaosfm.report._loss_plot": ("loss_curve", "smoothed"),
    "chaosfm.report._plots": ("reward_curve", "to_png", "vpt_by_system"),
    "chaosfm.report._stream_plot": ("stream_telemetry", "stream_times"),
    "chaosfm.report._tearsheet": ("tearsheet_section",),
})
