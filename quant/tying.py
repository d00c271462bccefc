"""Weight tying and deduplication: tensors identical in shape and every value are stored once.

`find_duplicates` groups tensors by shape, dtype and a SHA-256 of their bytes (then compares the bytes, so a
hash collision cannot merge different tensors); in each group the first name in sorted order is stored and
the others become manifest aliases (`alias_of`, 0 payload bytes). This covers a tied embedding/head that a
checkpoint carries twice, a shared block exported under several names, and any other exact copy. The
recurrent core's own checkpoints already hold one shared block and no separate head (RecurrentLM ties by
construction), so for them this finds nothing and changes nothing. Must not quantize or compare approximately.
"""

from __future__ import annotations

import hashlib

import numpy as np


def find_duplicates(tensors: dict[str, np.ndarray], prefer=None) -> dict[str, str]:
    """alias name -> stored name, for every tensor that exactly equals an earlier one in sorted name order,
    names for which prefer(name) is true first (so a tied embedding is stored as the embedding)."""
    first: dict[tuple, list[str]] = {}
    aliases: dict[str, str] = {}
    for name in sorted(tensors, key=lambda n: (not (prefer is not None and prefer(n)), n)):
        arr = np.ascontiguousarray(tensors[name])
        key = (arr.shape, arr.dtype.str, hashlib.sha256(arr.tobytes()).hexdigest())
        for target in first.get(key, []):
            if np.array_equal(np.ascontiguousarray(tensors[target]).view(np.uint8), arr.view(np.uint8)):
                aliases[name] = target
                break
        else:
            first.setdefault(key, []).append(name)
    return aliases


def alias_groups(aliases: dict[str, str]) -> dict[str, list[str]]:
    """stored name -> its aliases (sorted)."""
    out: dict[str, list[str]] = {}
    for alias, target in sorted(aliases.items()):
        out.setdefault(target, []).append(alias)
    return out
