"""The library's layout (issue 23): no import cycles, no overlong functions, one weights folder."""
import ast
import re

from conftest import ROOT

PACKAGE = ROOT / "acvm"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _module(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(path) -> set[str]:
    """acvm modules imported at module level (imports inside functions run late and cannot cycle)."""
    name, tree = _module(path), ast.parse(path.read_text())
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found |= {f"{target}.{a.name}" for a in node.names} if node.module is None else {target}
            elif node.module and node.module.startswith("acvm"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("acvm")}
    return found


def test_no_import_cycle_among_the_modules():
    graph = {_module(p): _module_level_imports(p) for p in SOURCES}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert len(graph) > 30 and cycles == [], f"import cycles: {cycles}"


def test_no_function_is_longer_than_100_lines():
    long = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in SOURCES for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 100]
    assert long == []


def test_the_weights_folder_is_spelled_in_one_place():
    """acvm.registry.WEIGHTS_DIR; every other module derives its paths from it."""
    spelled = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if re.search(r'["\']data["\']\s*/\s*["\']weights["\']|Path\(["\'][^"\']*data/weights', line)]
    assert [s.split(":")[0] for s in spelled] == ["acvm/registry.py"], spelled


LECTURE = {"particle", "correlation", "dcf", "mdnet", "siamfc", "siamrpn", "optim", "iounet", "atom", "d3s",
           "attention", "stark"}
BLOCKS = {"boxes", "features", "backbone", "roi", "rpn", "synth", "viz", "exercise", "tracker", "registry"}


def test_imports_go_down_the_layers_of_developing_md():
    """Blocks import only blocks; lecture modules import blocks, each other and (stark) training."""
    graph = {_module(p): _module_level_imports(p) for p in SOURCES}
    short = {m: {d.removeprefix("acvm.").split(".")[0] for d in deps if d.startswith("acvm.")}
             for m, deps in graph.items() if m.startswith("acvm.")}
    layers = LECTURE | BLOCKS
    assert layers <= {m.removeprefix("acvm.") for m in short}, "a module of the picture is missing"
    for m in BLOCKS:
        assert short[f"acvm.{m}"] <= BLOCKS, f"the block {m} imports {short[f'acvm.{m}'] - BLOCKS}"
    for m in LECTURE:
        allowed = layers | ({"training"} if m == "stark" else set())
        assert short[f"acvm.{m}"] <= allowed, f"the lecture module {m} imports {short[f'acvm.{m}'] - allowed}"
