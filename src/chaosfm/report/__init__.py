"""Self-contained HTML reports with embedded plots."""

from chaosfm.report._html import dataset_section, write_report

__all__ = ["dataset_section", "write_report"]
