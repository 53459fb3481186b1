"""Workflows that chain the lower layers: train -> test -> report, and the quickstart.

This is the top library layer (docs/architecture.md, "Layers"): it may use training,
evaluation and the report, and nothing below it imports it. Keeping the chain here is what
lets training stay free of the report and the report free of training.
"""

from pixelwise.workflows.pipeline import train_test_report, write_report_if_available

__all__ = ["train_test_report", "write_report_if_available"]
