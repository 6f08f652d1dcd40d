"""Diagnostics: statistics recorded inside the train step, rules that turn them into findings with fixes,
preflight checks, an LR range test, and a report.

    from visioncore_jax import diagnostics
    findings = diagnostics.analyze("workdirs/default")
"""

from visioncore_jax.diagnostics.analyzer import analyze, format_findings, load_records
from visioncore_jax.diagnostics.findings import CheckResult, Finding

__all__ = ["CheckResult", "Finding", "analyze", "format_findings", "load_records"]
