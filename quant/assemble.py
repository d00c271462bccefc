"""Assemble one artifact from encoded tensors: sections, aliases, the manifest, and the budget check.

`pack_tensors` takes float tensors and a manifest body (model, routing, tokenizer, source), encodes every
stored tensor it was not handed an encoding for (its plan format, the best scale method:
quant/candidates.py), stores exact duplicates once as manifest aliases (quant/tying.py), names sections by
the tensor's index (the manifest names each tensor once; on a small model repeated long names cost over 1%
of the file), and refuses to return an artifact whose counted total (file + code) exceeds the budget unless
told to (the planner's trial packs). Must not choose plans (quant/pipeline.py) or write files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from common import __version__
from common.errors import BudgetError
from packer.code_bytes import CodeCount, count_code
from packer.reader import parse_artifact
from packer.writer import build_artifact
from quant import formats
from quant.candidates import best_candidate
from quant.options import PackOptions, default_plan, is_embedding
from quant.sections import tensor_sections
from quant.tying import find_duplicates


@dataclass(frozen=True)
class PackResult:
    data: bytes
    file_bytes: int
    code: CodeCount
    total_bytes: int
    budget_bytes: int
    plan: dict[str, str]
    scales: dict[str, str] = field(default_factory=dict)       # tensor -> scale method (integer formats)
    aliases: dict[str, str] = field(default_factory=dict)      # alias -> stored tensor
    encoded: dict = field(default_factory=dict, repr=False)    # tensor -> quant.formats.Encoded
    report: dict = field(default_factory=dict)                 # calibration / planner facts, JSON-able

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes


def pack_tensors(tensors: dict[str, np.ndarray], body: dict, opts: PackOptions,
                 plan: dict[str, str] | None = None, code: CodeCount | None = None, *,
                 encoded: dict[str, formats.Encoded] | None = None, aliases: dict[str, str] | None = None,
                 hessians: dict | None = None, check_budget: bool = True) -> PackResult:
    """Pack float tensors (name -> array) with manifest fields `body` (model, routing, tokenizer...).

    `encoded` gives ready encodings (e.g. the planner's) for some tensors; the others are encoded in their
    plan format with the best scale method (GPTQ where `hessians` has the tensor's input Hessian).
    `aliases` (alias -> stored name) default to the exact duplicates when opts.dedup. check_budget=False
    returns an over-budget result instead of raising (the planner's trial packs).
    """
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    plan = {**default_plan(shapes, opts), **(plan or {})}
    if aliases is None:
        aliases = find_duplicates(tensors, is_embedding) if opts.dedup else {}
    encoded = dict(encoded or {})
    entries, specs = [], []
    for index, name in enumerate(sorted(tensors)):
        if name in aliases:
            entries.append({"name": name, "shape": list(shapes[name]), "alias_of": aliases[name]})
            plan[name] = plan[aliases[name]]
            continue
        enc = encoded.get(name)
        if enc is None or enc.format != plan[name]:
            enc = best_candidate(name, tensors[name], plan[name], (hessians or {}).get(name), opts).enc
        encoded[name] = enc
        entry, secs, _ = tensor_sections(name, enc, opts, prefix=str(index), cache=True)
        entries.append({"name": name, "shape": list(shapes[name]), **entry})
        specs.extend(secs)
    full = dict(body, tensors=entries, tool={"name": "golfpack", "version": __version__}, options=asdict(opts))
    data = build_artifact(full, specs)
    code = code or count_code()
    total = len(data) + code.compressed_bytes
    if check_budget and total > opts.budget_bytes:
        stored = {s.name: s.stored_bytes for s in parse_artifact(data).sections}
        per_tensor = {e["name"]: sum(stored[sec] for sec in e["sections"].values()) for e in entries
                      if "sections" in e}
        biggest = sorted(((b, n) for n, b in per_tensor.items()), reverse=True)[:3]
        raise BudgetError(f"artifact {len(data)} B + code {code.compressed_bytes} B = {total} B exceeds the "
                          f"budget {opts.budget_bytes} B by {total - opts.budget_bytes} B; largest tensors "
                          f"(stored bytes): {', '.join(f'{n} {b} B' for b, n in biggest)}; use lower-bit "
                          f"formats or a larger --budget-bytes")
    return PackResult(data, len(data), code, total, opts.budget_bytes, plan,
                      {n: e.scale for n, e in encoded.items() if e.scale is not None}, dict(aliases), encoded)
