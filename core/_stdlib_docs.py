"""Worker script: collect the docstrings of the standard library, print them as JSON on stdout.

Run only by core/corpus.py, as `python -I -S core/_stdlib_docs.py`, in its own process, so that importing
hundreds of modules never touches the caller's process (imported modules, warning filters, atexit hooks).
Imports nothing of ours. Anything an imported module prints goes to stderr; stdout carries only the JSON:
a list of [module_name, text] pairs sorted by module name.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import sys
import warnings

# Modules with import-time side effects (printing, opening a browser, touching the terminal, writing
# files), GUI toolkits, deprecated trees whose availability varies between installs, and test packages.
SKIP_TOP = frozenset(
    {
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "test",
        "lib2to3",
        "distutils",
        "readline",
        "rlcompleter",
        "ensurepip",
    }
)
SKIP_PARTS = frozenset({"test", "tests", "idle_test", "__main__"})


def _skipped(name: str) -> bool:
    parts = name.split(".")
    if parts[0] in SKIP_TOP:
        return True
    return any(p.startswith("_") or p in SKIP_PARTS for p in parts)


def _clean(doc: object) -> str:
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _public_objects(module: object) -> list[tuple[str, object]]:
    """(name, object) for the public classes and functions a module exposes, sorted by name."""
    out = []
    for attr in sorted(vars(module)):
        obj = vars(module)[attr]
        if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            out.append((attr, obj))
    return out


def _canonical(owner: str) -> str:
    """The public module a private accelerator module stands for: `_io` -> `io`, `_collections_abc` ->
    `collections.abc`."""
    return ".".join(part.lstrip("_").replace("_", ".") for part in owner.split("."))


def _homes(modules: dict[str, object]) -> dict[int, str]:
    """For each object whose __module__ is private (a C accelerator re-exported by public modules), the one
    module whose document carries its docstring: the canonical public module if it exposes the object,
    otherwise the first exposing module by name. One home each, so no docstring appears twice."""
    exposed: dict[int, list[str]] = {}
    owners: dict[int, str] = {}
    for name in sorted(modules):
        for _attr, obj in _public_objects(modules[name]):
            owner = getattr(obj, "__module__", None)
            if isinstance(owner, str) and owner not in modules and owner.split(".")[-1].startswith("_"):
                exposed.setdefault(id(obj), []).append(name)
                owners[id(obj)] = owner
    homes = {}
    for key, names in exposed.items():
        canonical = _canonical(owners[key])
        homes[key] = canonical if canonical in names else names[0]
    return homes


def module_text(module: object, homes: dict[int, str], seen: set[str]) -> str:
    """The module docstring, then `module.name` + docstring for each public class/function it owns (and
    each class's own public methods). A docstring already used by an earlier document is left out."""
    name = module.__name__
    chunks = [_clean(module.__doc__)]
    for attr, obj in _public_objects(module):
        if getattr(obj, "__module__", None) != name and homes.get(id(obj)) != name:
            continue  # defined elsewhere: documented in its own module's document
        doc = _clean(obj.__doc__)  # not inspect.getdoc: inherited docstrings would repeat everywhere
        if doc and doc not in seen:
            seen.add(doc)
            chunks.append(f"{name}.{attr}\n{doc}")
        if inspect.isclass(obj):
            chunks.extend(_member_docs(obj, f"{name}.{attr}", seen))
    return "\n\n".join(c for c in chunks if c)


def _member_docs(cls: type, prefix: str, seen: set[str]) -> list[str]:
    """Docstrings of the public methods and properties a class defines itself (not inherited ones)."""
    out = []
    own = vars(cls)
    for attr in sorted(own):
        if attr.startswith("_"):
            continue
        raw = own[attr]
        if not (inspect.isroutine(raw) or isinstance(raw, (property, classmethod, staticmethod))):
            continue
        doc = _clean(getattr(raw, "__doc__", None))
        if doc and doc not in seen:
            seen.add(doc)
            out.append(f"{prefix}.{attr}\n{doc}")
    return out


def _import(name: str) -> object | None:
    try:
        return importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - any failure (ImportError, OSError, SystemExit) means skip
        return None


def collect() -> list[list[str]]:
    names = sorted(n for n in sys.stdlib_module_names if not _skipped(n))
    modules: dict[str, object] = {}
    queue = list(names)
    while queue:
        name = queue.pop(0)
        if name in modules:
            continue
        module = _import(name)
        if module is None:
            continue
        modules[name] = module
        path = getattr(module, "__path__", None)
        if path is not None:
            subs = sorted(f"{name}.{info.name}" for info in pkgutil.iter_modules(list(path)))
            queue.extend(s for s in subs if not _skipped(s))
    homes = _homes(modules)
    seen: set[str] = set()
    return [[name, module_text(modules[name], homes, seen)] for name in sorted(modules)]


def main() -> None:
    with open(os.dup(1), "w", encoding="utf-8") as out:
        os.dup2(2, 1)  # whatever a module prints lands on stderr, never in the JSON
        sys.stdout = sys.stderr
        warnings.simplefilter("ignore")  # deprecation notices while reading attributes are not our concern
        json.dump(collect(), out, ensure_ascii=False)


if __name__ == "__main__":
    main()
