"""The analyzer: reads a workdir's records (finished or still running) and applies every rule."""

import json
import os

from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import PRIORITY, RULES, RunRecords
from visioncore_jax.diagnostics.schema import EVAL_FILE, FINDINGS_FILE, SCHEMA_VERSION, TRAIN_FILE


def _read_jsonl(path: str) -> list[dict]:
    """Records of one file; a partial last line (a run writing right now, or killed) is ignored."""
    records = []
    with open(path) as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not valid JSON; the file is corrupt. Delete it and rerun the "
                             "training command to rewrite it from the checkpoints on.") from None
        version = record.get("schema_version") if isinstance(record, dict) else None
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}:{number} has schema_version {version!r}; this version of "
                             f"visioncore_jax reads version {SCHEMA_VERSION}. Analyze it with the version that "
                             "wrote it.")
        records.append(record)
    return records


def load_records(workdir: str) -> RunRecords:
    """The train and eval records and config of `workdir`; raises FileNotFoundError saying what to run when
    the workdir holds no diagnostics."""
    directory = os.path.join(workdir, "diagnostics")
    train_path, eval_path = os.path.join(directory, TRAIN_FILE), os.path.join(directory, EVAL_FILE)
    if not os.path.exists(train_path):
        raise FileNotFoundError(
            f"{train_path} does not exist: {workdir!r} has no diagnostics records. Train into it first "
            "(python main.py --workdir=... --config=...), with --config.diagnostics.enabled=True (the default); "
            "records appear after the first evaluation.")
    config = {}
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{config_path} is not valid JSON ({e}). Rewrite it from the run's config, or delete "
                                 "it: the rules then read only the records.") from None
    eval_records = _read_jsonl(eval_path) if os.path.exists(eval_path) else []
    return RunRecords(train=_read_jsonl(train_path), eval=eval_records, config=config)


def analyze_records(run: RunRecords) -> list[Finding]:
    """Every rule's findings, most severe first (ties: root causes first, see `rules.PRIORITY`, then by step)."""
    findings = [finding for rule in RULES.values() for finding in rule(run)]
    return sorted(findings, key=lambda f: (-f.rank, PRIORITY.index(f.id), f.steps[0] if f.steps else 0))


def write_findings(workdir: str, findings: list[Finding]) -> str:
    """Writes `workdir/diagnostics/findings.json`; returns its path."""
    path = os.path.join(workdir, "diagnostics", FINDINGS_FILE)
    with open(path, "w") as f:
        json.dump({"schema_version": SCHEMA_VERSION, "findings": [x.to_json() for x in findings]}, f, indent=2)
    return path


def analyze(workdir: str, write: bool = True) -> list[Finding]:
    """Analyzes the run in `workdir` (finished or in progress); writes findings.json when `write`."""
    findings = analyze_records(load_records(workdir))
    if write:
        write_findings(workdir, findings)
    return findings


def format_findings(findings: list[Finding]) -> str:
    """Human-readable findings: severity, id, summary, evidence and the overrides to try."""
    if not any(f.severity != "info" for f in findings):
        lines = ["No problems found: no warnings or errors."]
    else:
        lines = [f"{sum(f.severity == 'error' for f in findings)} error(s), "
                 f"{sum(f.severity == 'warning' for f in findings)} warning(s):"]
    for finding in findings:
        where = f" steps {finding.steps[0]}-{finding.steps[1]}" if finding.steps else ""
        lines.append(f"\n[{finding.severity.upper()}] {finding.id}{where}: {finding.summary}")
        lines.append(f"  {finding.explanation}")
        evidence = ", ".join(f"{k}={_short(v)}" for k, v in finding.evidence.items())
        lines.append(f"  evidence: {evidence}")
        for rank, recommendation in enumerate(finding.recommendations, start=1):
            lines.append(f"  try {rank}: {recommendation}")
    return "\n".join(lines)


def _short(value) -> str:
    """A compact rendering of an evidence value."""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."
