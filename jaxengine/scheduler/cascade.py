"""When a step's sequences share enough of a radix prefix for cascade attention to pay: the
kernels then read the prefix once for all of them (pallas_kernels/cascade_attention.py)."""

from __future__ import annotations

from dataclasses import dataclass

MIN_PREFIX_TOKENS = 256
MIN_SHARING_SEQS = 8


@dataclass(frozen=True)
class SharedPrefixPlan:
    """Radix pages that several sequences of the step start with."""

    pages: list[int]
    length: int            # tokens: whole pages
    members: list[int]     # indices into the step's sequences


def shared_prefix(entries, page_size: int) -> SharedPrefixPlan | None:
    """The largest group of the batch's sequences whose KV starts with the same radix pages,
    and how many pages they share, if big enough; else None. Equal page ids mean equal KV:
    only the radix cache hands one page to several requests. Every member's queries lie past
    the prefix."""
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        if e.req.num_cached_pages and e.start >= page_size:
            groups.setdefault(e.req.pages[0], []).append(i)
    members = max(groups.values(), key=len, default=[])
    if len(members) < MIN_SHARING_SEQS:
        return None
    first = entries[members[0]].req.pages
    n = min(entries[i].start // page_size for i in members)
    for i in members:
        pages = entries[i].req.pages
        n = min(n, len(pages))
        n = next((j for j in range(n) if pages[j] != first[j]), n)
    if n * page_size < MIN_PREFIX_TOKENS:
        return None
    return SharedPrefixPlan(pages=list(first[:n]), length=n * page_size, members=members)
