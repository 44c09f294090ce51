"""PageAllocator against a naive set model (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxengine.scheduler.page_allocator import PageAllocator


@given(st.integers(2, 40), st.lists(st.tuples(st.booleans(), st.integers(0, 12)), max_size=60))
def test_allocator_matches_a_set_model(num_pages, ops):
    alloc = PageAllocator(num_pages)
    free = set(range(1, num_pages))
    owned: list[list[int]] = []
    for is_alloc, n in ops:
        if is_alloc:
            pages = alloc.alloc(n)
            if n > len(free):
                assert pages is None
            else:
                assert len(pages) == n and set(pages) <= free
                free -= set(pages)
                owned.append(pages)
        elif owned:
            pages = owned.pop(n % len(owned))
            alloc.free(pages)
            free |= set(pages)
        assert alloc.num_free == len(free)
        alloc.check_integrity(owned)


def test_page_zero_is_never_handed_out():
    alloc = PageAllocator(5)
    assert sorted(alloc.alloc(4)) == [1, 2, 3, 4]
    assert alloc.alloc(1) is None


def test_integrity_check_catches_a_double_owner():
    alloc = PageAllocator(4)
    pages = alloc.alloc(2)
    with pytest.raises(AssertionError):
        alloc.check_integrity([pages, pages[:1]])
