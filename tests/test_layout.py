"""The layout's rules, checked over the source with `ast` so that they hold as the code grows."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WINGS = {"samples": "pipelines.samples", "training": "pipelines.training"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (`from a import b` gives a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _reaches(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


@pytest.mark.parametrize("wing,other", [("samples", "training"), ("training", "samples")])
def test_neither_wing_imports_the_other(wing, other):
    files = sorted((ROOT / "pipelines" / wing).rglob("*.py"))
    assert files
    crossing = {str(f.relative_to(ROOT)): _reaches(imported_modules(f), WINGS[other]) for f in files}
    assert {f: m for f, m in crossing.items() if m} == {}


def test_the_shared_modules_import_no_wing():
    for path in (ROOT / "pipelines").glob("*.py"):
        modules = imported_modules(path)
        assert not _reaches(modules, WINGS["samples"]) + _reaches(modules, WINGS["training"]), path.name


def test_the_rule_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from pipelines.training import dataset\n")
    assert _reaches(imported_modules(source), "pipelines.training") == [
        "pipelines.training",
        "pipelines.training.dataset",
    ]


def test_the_contract_package_is_imported_without_an_alias():
    aliased = []
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "data" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                aliased += [str(path) for a in node.names if a.name == "feature_spec" and a.asname]
    assert aliased == []
