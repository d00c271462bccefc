"""The dependency rules of ../shared/DESIGN.md, checked over every module's import statements (function-level ones
included): no import cycle anywhere, packages depend only in the allowed directions, packer never imports torch,
and cli.py imports everything at module level (it has no logic to defer)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "core", "quant", "packer", "verify")
ALLOWED = {"common": set(), "core": {"common"}, "packer": {"common"}, "quant": {"common", "core", "packer"},
           "verify": {"common", "core", "packer", "quant"}}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file; `from a import b` also yields a.b."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []

    def visit(node, top: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend((a.name, top) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, top))
            out.extend((f"{node.module}.{a.name}", top) for a in node.names)
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {m: {d for d, _ in imports(p) if d in files and d != m} for m, p in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def strong(v: str) -> None:
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles_in_any_package():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_packages_depend_only_in_the_allowed_directions():
    bad = sorted((m, d) for m, deps in graph().items() for d in deps
                 if d.split(".")[0] != m.split(".")[0] and d.split(".")[0] not in ALLOWED[m.split(".")[0]])
    assert bad == []


def test_packer_and_common_never_import_torch():
    for pkg in ("packer", "common"):
        for path in (ROOT / pkg).rglob("*.py"):
            assert not [d for d, _ in imports(path) if d.split(".")[0] == "torch"], path


def test_cli_imports_at_module_level_only_and_stays_thin():
    for name in ("cli.py", "cli_options.py"):
        lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
        assert [d for d, top in imports(ROOT / name) if not top] == [], name
        assert len(lines) < 350, name
        tree = ast.parse("\n".join(lines))
        bodies = {f.name: f.end_lineno - f.body[0].lineno + 1 for f in tree.body if isinstance(f, ast.FunctionDef)}
        assert max(bodies.values()) <= 25, (name, bodies)
