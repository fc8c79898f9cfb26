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


# ---------------------------------------------------------------- the import graph of the source
SOURCE_PACKAGES = ("feature_spec", "features", "models", "pipelines", "jobs", "sources")
TENSORFLOW = ("tensorflow", "keras", "tensorflow_io")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in SOURCE_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def import_edges(path: Path, modules: set[str]) -> set[str]:
    """The source modules `path` imports, at the top or inside a function. `from a import b` is an
    import of `a.b` when that is a module, else of `a` (a package's parents are not counted)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                found.add(target if target in modules else node.module)
    return found & modules


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and modules importing themselves."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_module_of_the_source_imports_itself_back():
    modules = source_modules()
    graph = {name: import_edges(path, set(modules)) for name, path in modules.items()}
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_through_an_import_inside_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"], ["e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def _stack_imports(folder: str, stacks: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else [ROOT / folder]:
        modules = imported_modules(path)
        reached = sorted({m for stack in stacks for m in _reaches(modules, stack)})
        if reached:
            found[str(path.relative_to(ROOT))] = reached
    return found


def test_the_spark_feature_steps_import_neither_tensorflow_nor_the_models():
    assert _stack_imports("features", TENSORFLOW + ("models", "pipelines.training")) == {}


def test_the_models_import_neither_spark_nor_the_feature_steps():
    assert _stack_imports("models", ("pyspark", "features", "pipelines.samples")) == {}


@pytest.mark.parametrize(
    "module",
    [
        "pipelines/config.py",
        "pipelines/config_schema.py",
        "pipelines/config_types.py",
        "pipelines/errors.py",
        "pipelines/timings.py",
    ],
)
def test_the_shared_config_modules_import_neither_stack(module):
    if not (ROOT / module).exists():
        pytest.skip(f"{module} does not exist")
    assert _stack_imports(module, TENSORFLOW + ("pyspark", "models", "features")) == {}


# ---------------------------------------------------------------- sizes a reader can hold
MAX_FILE_LINES, MAX_FUNCTION_LINES = 600, 80


def _sized_files() -> list[Path]:
    return [
        path
        for folder in (*SOURCE_PACKAGES, "tests", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "__pycache__" not in path.parts
    ]


def test_no_file_is_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n for p in _sized_files() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_no_function_is_over_80_lines_outside_the_benchmarks_and_the_sources():
    long = {}
    for path in _sized_files():
        if path.relative_to(ROOT).parts[0] in ("benchmarks", "sources"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert long == {}
