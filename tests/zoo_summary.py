"""Detection and false-alarm counts of the fault zoo, from the workdirs a pytest run left behind.

  python -m pytest -q tests/test_fault_zoo.py --basetemp=/tmp/zoo; python -m tests.zoo_summary /tmp/zoo

For each finding id: whether its own fault made it the top finding, and in how many other zoo runs (faults of
other ids and healthy runs) it fired at warning or error level.
"""

import json
import os
import sys

from visioncore_jax.diagnostics.rules import RULES


def main(basetemp: str) -> None:
    """Prints the markdown table."""
    runs = {}
    for directory, _, files in sorted(os.walk(basetemp)):  # pytest-xdist nests workdirs per worker
        if os.path.basename(directory) == "diagnostics" and "findings.json" in files:
            with open(os.path.join(directory, "findings.json")) as f:
                name = os.path.basename(os.path.dirname(directory))
                runs[name] = [x for x in json.load(f)["findings"] if x["severity"] != "info"]
    print(f"{len(runs)} zoo runs.\n\n| id | its fault: top finding | also fired in other runs (of {len(runs) - 1}) |")
    print("|---|---|---|")
    for finding_id in RULES:
        own = [n for n in runs if n.startswith("test_" + finding_id)]
        top = [n for n in own if runs[n] and runs[n][0]["id"] == finding_id]
        others = [n for n in runs if n not in own and any(x["id"] == finding_id for x in runs[n])]
        print(f"| `{finding_id}` | {len(top)}/{len(own)} | {len(others)}"
              + (f" ({', '.join(n.removeprefix('test_')[:40] for n in others)})" if others else "") + " |")
    healthy = [n for n in runs if n.startswith("test_healthy")]
    print(f"\nHealthy runs with any warning or error: {sum(bool(runs[n]) for n in healthy)} of {len(healthy)}.")


if __name__ == "__main__":
    main(sys.argv[1])
