"""RadixCache: a radix tree over token ids, at page granularity, mapping prefixes to KV pages.

Contract:
- Keys are whole pages: a node's key holds a multiple of page_size tokens, one page per
  page_size tokens, and children are told apart by their first page of tokens.
- `match_prefix` is read-only: it returns the longest cached page-aligned prefix and the node
  that ends it, and changes nothing (not even recency).
- A running request `lock`s the node its prefix ends at; a locked node and all its ancestors
  are never evicted until `unlock`.
- `insert` hands pages to the tree; pages of tokens the tree already holds are handed back
  as duplicates for the caller to free.
- `evict(n)` frees unlocked least-recently-used leaves until n pages are freed or none is
  left (it may free more than asked).
- Together with the PageAllocator: every page is free, cached here, or owned by one request.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

_clock = itertools.count()


@dataclass(eq=False)
class Node:
    key: tuple[int, ...] = ()
    pages: list[int] = field(default_factory=list)
    parent: Node | None = None
    children: dict[tuple[int, ...], Node] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: int = 0


@dataclass
class Match:
    pages: list[int]
    node: Node            # the node the match ends in (the root for no match)

    @property
    def num_pages(self) -> int:
        return len(self.pages)


class RadixCache:
    def __init__(self, page_size: int):
        self.page_size = page_size
        self.root = Node()
        self.root.lock_ref = 1  # the root is never evicted
        self.num_cached_pages = 0

    def _first_page(self, tokens, start: int = 0) -> tuple[int, ...]:
        return tuple(tokens[start:start + self.page_size])

    def match_prefix(self, tokens: list[int]) -> Match:
        """Longest cached prefix of `tokens` in whole pages; read-only."""
        node, pages, i = self.root, [], 0
        S = self.page_size
        while len(tokens) - i >= S:
            child = node.children.get(self._first_page(tokens, i))
            if child is None:
                break
            n = self._common_pages(child.key, tokens, i)
            pages.extend(child.pages[:n])
            i += n * S
            if n < len(child.pages):
                return Match(pages, child)  # ends inside child: locking child covers it
            node = child
        return Match(pages, node)

    def _common_pages(self, key: tuple[int, ...], tokens: list[int], start: int) -> int:
        S, n = self.page_size, 0
        while (n + 1) * S <= len(key) and start + (n + 1) * S <= len(tokens) and \
                key[n * S:(n + 1) * S] == tuple(tokens[start + n * S:start + (n + 1) * S]):
            n += 1
        return n

    def lock(self, node: Node) -> None:
        now = next(_clock)
        while node is not None:
            node.lock_ref += 1
            node.last_access = now
            node = node.parent

    def unlock(self, node: Node) -> None:
        while node is not None:
            node.lock_ref -= 1
            assert node.lock_ref >= 0, "unlock without lock"
            node = node.parent

    def insert(self, tokens: list[int], pages: list[int]) -> tuple[Node, list[int]]:
        """Cache the first len(pages) pages of `tokens`. Returns the node that ends the
        inserted prefix and the pages that duplicate ones already cached (the caller frees
        them; the tree keeps its own)."""
        S = self.page_size
        tokens = tokens[:len(pages) * S]
        node, i, duplicates = self.root, 0, []
        now = next(_clock)
        while i < len(tokens):
            child = node.children.get(self._first_page(tokens, i))
            if child is None:
                new = Node(tuple(tokens[i:]), list(pages[i // S:]), node, last_access=now)
                node.children[new.key[:S]] = new
                self.num_cached_pages += len(new.pages)
                return new, duplicates
            n = self._common_pages(child.key, tokens, i)
            if n < len(child.pages):
                child = self._split(child, n)
            duplicates.extend(p for p, q in zip(pages[i // S:i // S + n], child.pages) if p != q)
            child.last_access = now
            node, i = child, i + n * S
        return node, duplicates

    def _split(self, node: Node, n: int) -> Node:
        """Cut node after its first n pages; returns the new upper part (same locks)."""
        S = self.page_size
        upper = Node(node.key[:n * S], node.pages[:n], node.parent, {}, node.lock_ref,
                     node.last_access)
        upper.parent.children[upper.key[:S]] = upper
        node.key, node.pages, node.parent = node.key[n * S:], node.pages[n:], upper
        upper.children[node.key[:S]] = node
        return upper

    def evict(self, num_pages: int) -> list[int]:
        """Free unlocked leaves, least recently used first, until num_pages pages are freed."""
        leaves = [(n.last_access, id(n), n) for n in self._nodes()
                  if not n.children and n.lock_ref == 0]
        heapq.heapify(leaves)
        freed: list[int] = []
        while leaves and len(freed) < num_pages:
            _, _, node = heapq.heappop(leaves)
            freed.extend(node.pages)
            parent = node.parent
            del parent.children[node.key[:self.page_size]]
            self.num_cached_pages -= len(node.pages)
            if not parent.children and parent.lock_ref == 0:
                heapq.heappush(leaves, (parent.last_access, id(parent), parent))
        return freed

    @property
    def num_evictable_pages(self) -> int:
        return sum(len(n.pages) for n in self._nodes() if n.lock_ref == 0)

    def reset(self) -> list[int]:
        """Drop every cached page (none may be locked); returns them."""
        assert self.root.lock_ref == 1, "reset while requests hold cached pages"
        pages = self.all_pages()
        self.root.children = {}
        self.num_cached_pages = 0
        return pages

    def all_pages(self) -> list[int]:
        return [p for n in self._nodes() for p in n.pages]

    def _nodes(self):
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node is not self.root:
                yield node
