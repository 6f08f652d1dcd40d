"""The rules by family (docs/diagnostics.md): pure functions of a run's typed records → findings with evidence and
config overrides. Thresholds are named constants in each family's module, each saying why it sits where it does;
rules never raise on missing or non-finite fields: they just do not fire.

Ranking (`rank`): a finding that another fired finding explains (declared by the explaining rule, see
`Rule.explains`) is folded into it: its severity drops to info and the explaining finding's evidence lists it
under `explains`. Then: most severe first, causes before symptoms, catalog priority, earliest step."""

from collections.abc import Callable

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import data, gradients, lr, numerics, regularization
from visioncore_jax.diagnostics.rules.rule import FAMILIES, Rule
from visioncore_jax.diagnostics.schema import RunRecords

# Catalog order (docs/diagnostics.md's table), which is also the priority among equally severe findings of the
# same kind: initialization and LR causes first, the symptoms they produce last.
CATALOG: tuple[Rule, ...] = (
    gradients.RULES[0], gradients.RULES[1], lr.RULES[0], lr.RULES[1], lr.RULES[2], lr.RULES[3], lr.RULES[4],
    regularization.RULES[0], gradients.RULES[2], gradients.RULES[3], gradients.RULES[4], gradients.RULES[5],
    numerics.RULES[1], regularization.RULES[1], numerics.RULES[0], gradients.RULES[6], gradients.RULES[7],
    data.RULES[0], data.RULES[1],
)
SPECS: dict[str, Rule] = {rule.id: rule for rule in CATALOG}
RULES: dict[str, Callable[[RunRecords], list[Finding]]] = {rule.id: rule.check for rule in CATALOG}
PRIORITY: tuple[str, ...] = tuple(SPECS)


def _explainers(findings: list[Finding]) -> dict[int, list[Finding]]:
    """For each finding (by index), the fired warnings/errors that explain it (mutual explanations cancel)."""
    problems = [f for f in findings if f.severity != "info"]
    explained = {}
    for index, finding in enumerate(findings):
        by = [other for other in problems if other is not finding and finding.id in SPECS[other.id].explains
              and other.id not in SPECS[finding.id].explains]
        if by:
            explained[index] = by
    return explained


def rank(findings: list[Finding]) -> list[Finding]:
    """Folds explained findings into their causes and orders the rest (see the module docstring)."""
    explained = _explainers(findings)
    folded = {}
    for index, by in explained.items():
        for other in by:
            folded.setdefault(id(other), []).append(findings[index].id)
    result = []
    for index, finding in enumerate(findings):
        kind = SPECS[finding.id].kind
        if index in explained:
            cause = explained[index][0].id
            finding = Finding(finding.id, "info", f"Explained by {cause}: {finding.summary}", finding.explanation,
                              finding.evidence, finding.recommendations, finding.steps, finding.epochs,
                              finding.module, kind=kind, explained_by=cause)
        else:
            evidence = finding.evidence
            if id(findings[index]) in folded:
                evidence = {**evidence, "explains": sorted(set(folded[id(findings[index])]))}
            finding = Finding(finding.id, finding.severity, finding.summary, finding.explanation, evidence,
                              finding.recommendations, finding.steps, finding.epochs, finding.module, kind=kind)
        result.append(finding)
    return sorted(result, key=lambda f: (-f.rank, f.explained_by is not None, f.kind != "cause",
                                         PRIORITY.index(f.id), f.steps[0] if f.steps else 0))


__all__ = ["CATALOG", "FAMILIES", "PRIORITY", "RULES", "SPECS", "Rule", "rank"]
