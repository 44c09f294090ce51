"""RadixCache against a naive dict-of-prefixes model (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jaxengine.scheduler.radix_cache import RadixCache

S = 2  # page size: small, so random token lists share and split pages often
ALPHABET = st.integers(0, 2)  # few distinct tokens: many shared prefixes

ops = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.lists(ALPHABET, min_size=0, max_size=9)),
    st.tuples(st.just("lock"), st.lists(ALPHABET, min_size=0, max_size=9)),
    st.tuples(st.just("unlock"), st.integers(0, 10)),
    st.tuples(st.just("evict"), st.integers(0, 6)),
), max_size=40)


class Model:
    """Cached prefixes as a dict: page-aligned token prefix -> the page of its last page."""

    def __init__(self):
        self.page_of: dict[tuple[int, ...], int] = {}

    def match(self, tokens) -> list[int]:
        pages = []
        for k in range(1, len(tokens) // S + 1):
            page = self.page_of.get(tuple(tokens[:k * S]))
            if page is None:
                break
            pages.append(page)
        return pages


@settings(max_examples=300, deadline=None)
@given(ops)
def test_radix_cache_matches_the_naive_model(operations):
    cache, model = RadixCache(S), Model()
    next_page = iter(range(1, 10_000))
    free: set[int] = set()
    locks: list[tuple[object, list[int]]] = []
    for op, arg in operations:
        if op == "insert":
            want_match = model.match(arg)
            pages = want_match + [next(next_page) for _ in range(len(arg) // S - len(want_match))]
            # A fresh page for an already-cached page of tokens must come back as a duplicate.
            fresh_dup = next(next_page)
            if want_match:
                pages[0] = fresh_dup
            _, duplicates = cache.insert(arg, pages)
            assert duplicates == ([fresh_dup] if want_match else [])
            free.update(duplicates)
            for k in range(len(pages)):
                model.page_of.setdefault(tuple(arg[:(k + 1) * S]), pages[k])
        elif op == "lock":
            match = cache.match_prefix(arg)
            assert match.pages == model.match(arg)
            cache.lock(match.node)
            locks.append((match.node, match.pages))
        elif op == "unlock" and locks:
            node, _ = locks.pop(arg % len(locks))
            cache.unlock(node)
        elif op == "evict":
            before = cache.num_cached_pages
            freed = cache.evict(arg)
            locked = {p for _, pages in locks for p in pages}
            assert not locked & set(freed), "evicted a locked page"
            assert len(freed) >= arg or cache.num_evictable_pages == 0
            assert cache.num_cached_pages == before - len(freed)
            free.update(freed)
            model.page_of = {k: p for k, p in model.page_of.items() if p not in set(freed)}
        cached = cache.all_pages()
        assert len(cached) == len(set(cached)) == cache.num_cached_pages
        assert sorted(cached) == sorted(model.page_of.values())
        assert not free & set(cached)
    for key in model.page_of:
        assert cache.match_prefix(list(key)).pages == model.match(list(key))


def test_match_is_page_aligned_and_ends_mid_node():
    cache = RadixCache(4)
    cache.insert(list(range(12)), [7, 8, 9])
    assert cache.match_prefix(list(range(11))).pages == [7, 8]
    assert cache.match_prefix(list(range(8)) + [99, 100, 101, 102]).pages == [7, 8]
    assert cache.match_prefix([5, 6, 7, 8]).pages == []


def test_locked_prefix_survives_eviction_and_lru_goes_first():
    cache = RadixCache(1)
    cache.insert([1, 2], [10, 11])
    cache.insert([3], [12])
    cache.insert([4], [13])
    held = cache.match_prefix([1, 2])
    cache.lock(held.node)
    cache.lock(cache.match_prefix([4]).node)   # touch [4]: [3] is now the LRU leaf
    cache.unlock(cache.match_prefix([4]).node)
    assert cache.evict(1) == [12]
    assert cache.evict(10) == [13]
    assert cache.match_prefix([1, 2]).pages == [10, 11]
    cache.unlock(held.node)
    assert sorted(cache.evict(10)) == [10, 11]
