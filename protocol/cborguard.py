"""A guard for what ``cbor2.loads`` made of hostile bytes, before anything walks or
re-encodes it.

The signed catalog formats (sync messages, batches, membership ops) are parsed with cbor2
and checked for canonical form by encoding the result again; invite tokens, trees and
snapshot records are parsed with cbor2 and walked. cbor2 decodes more than those formats
use, and two of its extras make that second step explode on a few hundred bytes:

- maps used as map keys (decoded as frozen dicts): canonical encoding sorts a map's keys
  by their encodings, encoding each nested key again at every level — about twice the
  work per level, so 60 nested ``0xA1`` bytes never finish;
- shared references (tags 28/29): one decoded object referenced many times, expanded on
  every visit — a 2 KB input can stand for 10^16 items.

:func:`problem` walks the decoded value once, with a budget of one item per input byte
(what a plain CBOR value of that many bytes can hold at most), a depth limit, and no
container as a map key; it answers in words or None. Pure; no recursion.
"""

from __future__ import annotations

import cbor2

MAX_DEPTH = 16  # the formats nest 4 levels at most

_SEQUENCES = (list, tuple, set, frozenset)
# What cbor2 makes of a map used as a map key (not a dict subclass, and not a Mapping).
_FROZEN_MAP = type(cbor2.loads(b"\xa1\xa1\x00\x00\x00").popitem()[0])


def problem(obj: object, size: int, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``obj`` (decoded from ``size`` bytes) cannot be walked or re-encoded safely, or
    None. Leaves of any other type (a float, a date) pass: the formats' own checks refuse
    them with a better reason, and they cost nothing to encode."""
    budget = size  # items still allowed: each one counted when it is reached
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, cbor2.CBORTag):
            value = [value.value]  # an unknown tag: its content is walked like an item
        if isinstance(value, _SEQUENCES):
            items: list[object] = list(value)
        elif isinstance(value, (dict, _FROZEN_MAP)):
            items = []
            for k, v in value.items():
                if isinstance(k, (*_SEQUENCES, dict, _FROZEN_MAP, cbor2.CBORTag)):
                    return f"a map key of type {type(k).__name__}"
                items.append(v)
            budget -= len(items)  # the keys
        else:
            continue
        if depth >= max_depth:
            return f"nested deeper than {max_depth} levels"
        budget -= len(items)
        if budget < 0:
            return "more items than its bytes can hold (shared references)"
        stack.extend((v, depth + 1) for v in items)
    return None
