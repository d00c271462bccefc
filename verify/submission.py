"""Export a self-contained submission: one self-extracting Python script plus the artifact, in one folder.

The script is `import base64,lzma;exec(lzma.decompress(base64.b85decode("…")))` around a small program that
serves golfpack's modules from memory (a meta-path finder that refuses any module of our packages it does
not hold, so nothing leaks in from an installed golfpack) and runs verify/submission_runtime.py. The bundle
is packer/code_bytes.py's RUNTIME_MODULES plus the import closure of the runtime entry point, found by
reading the sources' import statements. The code bytes Parameter Golf counts are the script's size.
Must not modify the artifact (it is copied byte for byte) nor evaluate anything.
"""

from __future__ import annotations

import ast
import base64
import lzma
import sys
from dataclasses import dataclass
from pathlib import Path

from common.atomic import check_output, ensure_folder, head_bytes, write_bytes_atomic
from common.errors import OutputError, UsageError
from packer.code_bytes import CODE_ROOT, RUNTIME_MODULES, CodeCount, count_code
from packer.reader import looks_like_artifact, read_artifact

OUR_PACKAGES = ("core", "packer", "quant", "verify")
ENTRY_MODULE = "verify/submission_runtime.py"
SCRIPT_NAME = "submission.py"
_HEADER = "# golfpack submission: python submission.py --data FOLDER_OF_VAL_SHARDS --tokenizer SP_MODEL\n"
_STUB = 'import base64,lzma;exec(lzma.decompress(base64.b85decode("{payload}")))\n'
_PROGRAM = '''import importlib.abc as A,importlib.util as U,sys
from pathlib import Path
M={modules!r}
class F(A.MetaPathFinder,A.Loader):
 def find_spec(s,n,p=None,t=None):
  if n in M:return U.spec_from_loader(n,s,is_package=M[n][0])
  if n.split(".")[0] in {packages!r}:raise ModuleNotFoundError(n+" is not bundled in this submission")
 def create_module(s,spec):return None
 def exec_module(s,m):
  m.__file__=M[m.__name__][1]
  exec(compile(M[m.__name__][2],m.__file__,"exec"),m.__dict__)
sys.meta_path.insert(0,F())
from verify.submission_runtime import main
raise SystemExit(main(sys.argv[1:],Path(__file__).resolve().parent/{artifact!r}))
'''


@dataclass(frozen=True)
class SubmissionExport:
    folder: Path
    script: Path
    artifact: Path
    script_bytes: int
    artifact_bytes: int
    modules: tuple[str, ...]
    requires: tuple[str, ...]       # third-party modules the bundled code imports at module level
    optional: tuple[str, ...]       # imported only inside functions (needed only on those paths)
    code: CodeCount                 # what `golfpack audit --code <script>` counts

    @property
    def total_bytes(self) -> int:
        return self.script_bytes + self.artifact_bytes


def _module_file(name: str, root: Path) -> str | None:
    rel = name.replace(".", "/")
    for cand in (f"{rel}.py", f"{rel}/__init__.py"):
        if (root / cand).is_file():
            return cand
    return None


def _imports(rel: str, root: Path) -> dict[str, bool]:
    """Dotted names a module imports -> whether at module level (False: only inside a function, lazily)."""
    try:
        tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=rel)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read bundled module {root / rel}: {exc}") from None
    names: dict[str, bool] = {}

    def visit(node: ast.AST, top: bool) -> None:
        found = []
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in found:
            names[name] = names.get(name, False) or top
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return names


def bundle_modules(root: Path = CODE_ROOT) -> tuple[list[str], list[str], list[str]]:
    """(module files to bundle; third-party names imported at module level; those imported only lazily,
    inside functions, e.g. bitsandbytes for NF4 encoding), each sorted."""
    todo = list(dict.fromkeys([*RUNTIME_MODULES, ENTRY_MODULE]))
    seen: set[str] = set()
    eager: set[str] = set()
    lazy: set[str] = set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        if not (root / rel).is_file():
            raise UsageError(f"runtime module {rel} is missing under {root}")
        seen.add(rel)
        parts = rel[:-3].split("/")
        todo.extend(f"{'/'.join(parts[:i])}/__init__.py" for i in range(1, len(parts)))
        for name, top_level in _imports(rel, root).items():
            top = name.split(".")[0]
            if top in OUR_PACKAGES:
                found = _module_file(name, root)
                if found is not None:
                    todo.append(found)
            elif top not in sys.stdlib_module_names and top != "__future__":
                (eager if top_level else lazy).add(top)
    return sorted(seen), sorted(eager), sorted(lazy - eager)


def build_script(sources: dict[str, str], artifact_name: str) -> str:
    """The self-extracting script for module sources (rel path -> text) and the artifact's file name."""
    modules = {}
    for rel in sorted(sources):
        is_pkg = rel.endswith("/__init__.py")
        name = (rel[:-len("/__init__.py")] if is_pkg else rel[:-3]).replace("/", ".")
        modules[name] = (is_pkg, rel, sources[rel])
    program = _PROGRAM.format(modules=modules, packages=OUR_PACKAGES, artifact=artifact_name)
    packed = lzma.compress(program.encode("utf-8"), format=lzma.FORMAT_ALONE, preset=9 | lzma.PRESET_EXTREME)
    return _HEADER + _STUB.format(payload=base64.b85encode(packed).decode("ascii"))


def is_submission_script(path: Path) -> bool:
    """A script export-submission wrote (what it may replace without --force)."""
    return head_bytes(path, len(_HEADER)) == _HEADER.encode("ascii")


def export_submission(artifact: Path, out_dir: Path, force: bool = False) -> SubmissionExport:
    """Write `<out_dir>/submission.py` and a byte-identical copy of the artifact beside it."""
    artifact, out_dir = Path(artifact), Path(out_dir)
    art = read_artifact(artifact)                    # validated before anything is written
    if artifact.name == SCRIPT_NAME:
        raise UsageError(f"artifact {artifact} is named like the script {SCRIPT_NAME}; rename it")
    script, copy = out_dir / SCRIPT_NAME, out_dir / artifact.name
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output folder {out_dir} is a file; give a folder path")
    if out_dir.is_dir():                             # checked before anything is written
        check_output(script, [artifact], force, is_submission_script, "a golfpack submission script")
        if copy.resolve() != artifact.resolve():
            check_output(copy, [], force, looks_like_artifact, "a golfpack artifact")
    ensure_folder(out_dir)
    rels, requires, optional = bundle_modules()
    sources = {rel: (CODE_ROOT / rel).read_text(encoding="utf-8") for rel in rels}
    text = build_script(sources, artifact.name)
    write_bytes_atomic(script, text.encode("ascii"))
    data = artifact.read_bytes()
    if copy.resolve() != artifact.resolve():
        write_bytes_atomic(copy, data)
    return SubmissionExport(out_dir, script, copy, len(text), art.layout.file_bytes, tuple(rels),
                            tuple(requires), tuple(optional), count_code([script]))


def export_job(artifact: Path, out_dir: Path, budget_bytes: int, force: bool = False) -> dict:
    """The `export-submission` command: the script and the artifact copy, counted against the budget."""
    res = export_submission(artifact, out_dir, force)
    total = res.code.compressed_bytes + res.artifact_bytes
    tok = read_artifact(res.artifact).manifest["tokenizer"].get("sha256")
    return {"script": str(res.script), "artifact": str(res.artifact), "code_bytes": res.code.compressed_bytes,
            "code_method": res.code.method, "artifact_bytes": res.artifact_bytes, "total_bytes": total,
            "budget_bytes": budget_bytes, "headroom_bytes": budget_bytes - total, "fits": total <= budget_bytes,
            "modules": list(res.modules), "requires": list(res.requires), "optional": list(res.optional),
            "tokenizer_sha256": tok}


def format_export(rep: dict) -> str:
    tok = f"the tokenizer with sha256 {rep['tokenizer_sha256'][:12]}…" if rep.get("tokenizer_sha256") else \
        "the artifact's tokenizer"
    lines = [(f"wrote {rep['script']} ({rep['code_bytes']:,} B of code, {len(rep['modules'])} modules bundled) + "
             f"{rep['artifact']} ({rep['artifact_bytes']:,} B) = {rep['total_bytes']:,} B of {rep['budget_bytes']:,} B"),
             f"requires: {', '.join(rep['requires'])} (only on some paths: {', '.join(rep['optional']) or 'none'})",
             f"run: python {rep['script']} --data FOLDER_OF_VAL_SHARDS --tokenizer TOKENIZER.model ({tok})"]
    if not rep["fits"]:
        lines.append(f"over budget by {rep['total_bytes'] - rep['budget_bytes']:,} B")
    return "\n".join(lines)
