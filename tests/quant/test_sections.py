"""Section sizing: the smallest codec wins, raw on ties, and the whole-artifact cache returns exactly what sizing
from scratch returns (so the planner's repeated packs stay byte-identical) and misses when anything differs."""

from __future__ import annotations

import numpy as np

from quant import sections
from quant.options import PackOptions


def test_cached_sizing_equals_fresh_sizing_and_misses_on_any_difference():
    rng = np.random.default_rng(0)
    raw = rng.integers(-7, 8, size=200_000).astype(np.int8).tobytes()
    params = {"dtype": "int8", "shape": [400, 500], "bits": 4}
    opts = PackOptions()
    fresh, n = sections.sized_section("a/codes", raw, params, opts)
    first, n1 = sections.sized_section("a/codes", raw, params, opts, cache=True)
    hits_before = len(sections._SIZED.items)
    again, n2 = sections.sized_section("b/codes", raw, params, opts, cache=True)
    assert n == n1 == n2 and fresh.stored == first.stored == again.stored and again.name == "b/codes"
    assert fresh.codec == again.codec and fresh.params == again.params
    assert len(sections._SIZED.items) == hits_before                    # the second call was a hit
    other = dict(params, bits=5)                                        # other params: sized anew
    sections.sized_section("a/codes", raw, other, opts, cache=True)
    assert len(sections._SIZED.items) == hits_before + 1


def test_cache_evicts_oldest_beyond_its_byte_limit(monkeypatch):
    cache = sections._SizedCache()
    monkeypatch.setattr(sections._SizedCache, "LIMIT", 10)
    cache.put(b"a", ("raw", {}, b"123456"))
    cache.put(b"b", ("raw", {}, b"123456"))
    assert list(cache.items) == [b"b"] and cache.size == 6
