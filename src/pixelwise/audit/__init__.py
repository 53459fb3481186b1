"""Likely label errors: `audit_data` (K-fold, out of sample) and `audit_run` (a held-out split).

A workflow (it trains models and writes a gallery), so it sits with the commands in the top
layer; the scoring rules in `scoring` are pure numpy and OpenCV.
"""

from pixelwise.audit.workflow import AuditResult, AuditSettings, audit_data, audit_run

__all__ = ["AuditResult", "AuditSettings", "audit_data", "audit_run"]
