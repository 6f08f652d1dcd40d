"""What a rule declares: its catalog id, its check, its family, whether its finding is a cause or a symptom, and
which findings it explains (the ranking folds an explained finding into its cause)."""

import dataclasses
from collections.abc import Callable

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.schema import RunRecords

FAMILIES = ("LR and schedule", "gradients and activations", "data and labels", "regularization and generalization",
            "numerics")
KINDS = ("cause", "symptom")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One catalog entry. `check(run)` returns its findings (none when it does not fire, never raises);
    `explains` are the ids whose findings this one accounts for when both fire."""

    id: str
    check: Callable[[RunRecords], list[Finding]]
    family: str
    kind: str
    explains: tuple[str, ...] = ()

    def __post_init__(self):
        if self.family not in FAMILIES or self.kind not in KINDS:
            raise ValueError(f"rule {self.id}: family {self.family!r} / kind {self.kind!r} not in {FAMILIES} / "
                             f"{KINDS}.")
