"""PageAllocator: the host free list of KV pages. Page 0 is reserved as the dummy page."""

from __future__ import annotations


class PageAllocator:
    """Hands out pages 1..num_pages-1. Every page is free or owned by exactly one holder."""

    def __init__(self, num_pages: int):
        if num_pages < 2:
            raise ValueError("the KV pool needs at least 2 pages (page 0 is reserved)")
        self.num_pages = num_pages
        self._free = list(range(num_pages - 1, 0, -1))  # pop() hands out low pages first

    @property
    def num_free(self) -> int:
        return len(self._free)

    def alloc(self, n: int) -> list[int] | None:
        """n pages, or None (and nothing taken) when fewer than n are free."""
        if n > len(self._free):
            return None
        taken = self._free[len(self._free) - n:]
        del self._free[len(self._free) - n:]
        return taken[::-1]

    def free(self, pages: list[int]) -> None:
        self._free.extend(pages)

    def check_integrity(self, owned: list[list[int]]) -> None:
        """Raise AssertionError unless free + owned pages are exactly 1..num_pages-1, once each."""
        everything = list(self._free) + [p for pages in owned for p in pages]
        assert sorted(everything) == list(range(1, self.num_pages)), "page leak or double owner"
