"""The package layers import only downwards: data / models / optim / diagnostics at the bottom, train above
them, tools above train, main.py on top. Read from the source with `ast`, so a deferred import inside a function
counts as much as one at the top of a file."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "visioncore_jax"
LEVEL = {"data": 0, "models": 0, "optim": 0, "diagnostics": 0, "train": 1, "tools": 2}


def _imported_packages(path: pathlib.Path) -> set[str]:
    """The visioncore_jax sub-packages a file imports, anywhere in it."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "visioncore_jax" and len(parts) > 1 and parts[1] in LEVEL:
                packages.add(parts[1])
    return packages


@pytest.mark.parametrize("package", sorted(LEVEL))
def test_a_package_imports_only_its_own_level_or_below(package):
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        above = {p for p in _imported_packages(path) if LEVEL[p] > LEVEL[package]}
        if above:
            wrong[str(path.relative_to(ROOT))] = sorted(above)
    assert not wrong, f"imports pointing up: {wrong}"


def test_the_bottom_packages_do_not_form_a_cycle():
    edges = {p: set() for p in LEVEL if LEVEL[p] == 0}
    for package in edges:
        for path in (ROOT / package).rglob("*.py"):
            edges[package] |= {p for p in _imported_packages(path) if p in edges and p != package}
    for package, targets in edges.items():
        for target in targets:
            assert package not in edges[target], f"{package} <-> {target}"
