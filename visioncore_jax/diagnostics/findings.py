"""Findings (from the analyzer) and check results (from preflight): what the diagnostics engine reports."""

import dataclasses
from typing import Any

SEVERITIES = ("info", "warning", "error")
STATUSES = ("PASS", "WARN", "FAIL")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis of a run.

    `id` is a catalog id (docs/diagnostics.md); `evidence` holds the numbers that triggered it (JSON-able);
    `recommendations` are config overrides a user can paste (`--config.optimizer.learning_rate=3e-3`), best
    first, each checked against the run's config; `steps` is the (first, last) step range where it was seen;
    `module` the parameter / block path when the finding is about one; `kind` whether it is a cause or a symptom;
    `explained_by` the finding it was folded into (its severity is then info).
    """

    id: str
    severity: str
    summary: str
    explanation: str
    evidence: dict[str, Any]
    recommendations: tuple[str, ...]
    steps: tuple[int, int] | None = None
    epochs: tuple[float, float] | None = None
    module: str | None = None
    kind: str = "cause"              # 'cause' (LR, schedule, init, data, regularization, clipping) or 'symptom'
    explained_by: str | None = None  # the id of the finding that explains this one (then severity is info)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity={self.severity!r} is not one of {SEVERITIES}.")

    @property
    def rank(self) -> int:
        """Higher is more severe."""
        return SEVERITIES.index(self.severity)

    def to_json(self) -> dict:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one preflight check: PASS / WARN / FAIL with the numbers behind it."""

    id: str
    status: str
    message: str
    evidence: dict[str, Any]
    recommendations: tuple[str, ...] = ()

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not one of {STATUSES}.")

    def to_json(self) -> dict:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)
