"""Which waiting request to admit first: fcfs, lpm, dfs-weight or random."""

from __future__ import annotations

import random
from collections import defaultdict

from jaxengine.scheduler.radix_cache import Node, RadixCache
from jaxengine.scheduler.req import Req

POLICIES = ("fcfs", "lpm", "dfs-weight", "random")
# Matching every waiting request against the tree costs host time; past this queue length
# the prefix-aware policies fall back to fcfs.
PREFIX_POLICY_MAX_QUEUE = 128


def order_waiting(waiting: list[Req], policy: str, cache: RadixCache | None,
                  rng: random.Random) -> list[Req]:
    """The waiting requests in the order they should be admitted."""
    fcfs = sorted(waiting, key=lambda r: r.arrival_time)
    if policy == "random":
        rng.shuffle(fcfs)
        return fcfs
    if policy == "fcfs" or cache is None or len(waiting) > PREFIX_POLICY_MAX_QUEUE:
        return fcfs
    matches = {id(r): cache.match_prefix(r.all_ids) for r in fcfs}
    if policy == "lpm":
        # sorted() is stable: equal matches keep their arrival order.
        return sorted(fcfs, key=lambda r: -matches[id(r)].num_pages)
    return _dfs_weight(fcfs, {id(r): matches[id(r)].node for r in fcfs}, cache.root)


def _dfs_weight(reqs: list[Req], node_of: dict[int, Node], root: Node) -> list[Req]:
    """Walk the tree depth first, heaviest subtree (most waiting requests) first, so that
    requests sharing a prefix are admitted together."""
    at: dict[int, list[Req]] = defaultdict(list)
    weight: dict[int, int] = defaultdict(int)
    for r in reqs:
        node = node_of[id(r)]
        at[id(node)].append(r)
        while node is not None:
            weight[id(node)] += 1
            node = node.parent
    order: list[Req] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.extend(at[id(node)])
        children = [c for c in node.children.values() if weight[id(c)]]
        stack.extend(sorted(children, key=lambda c: weight[id(c)]))  # heaviest popped first
    return order
