"""Theory of operation: which live nodes have gone silent, without looking at every node.

A node is lost when ``now - max(last heartbeat, grace end, its last change) > interval *
missed`` (``CoordinatorCore`` owns the rule and the interval). Every live node has one
deadline in a heap, computed when it was scheduled; a heartbeat only records the time,
so it costs a dict store. A round pops the deadlines that have passed and checks each
against the rule with today's values: a node heard from since goes back with its new
deadline, a silent one is reported. Each entry's deadline is never later than the rule's
(every input only grows), except when the cluster-wide interval floor shrinks: then the
heap is rebuilt, once per change.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from coordinator.state import ClusterState, NodeView

Deadline = Callable[[NodeView, float], float]


class Liveness:
    def __init__(self, last_seen: dict[str, float]) -> None:
        self.last_seen = last_seen
        self.heap: list[tuple[float, str]] = []
        self.due: dict[str, float] = {}  # the deadline of each node's live heap entry
        self.touched: set[str] = set()  # nodes whose registration or state changed
        self.built_for = 0.0  # the highest interval floor any entry's deadline was computed with
        self.synced = False

    def touch(self, node_id: str) -> None:
        self.touched.add(node_id)

    def invalidate(self) -> None:
        self.synced = False

    def silent(
        self, state: ClusterState, now: float, floor: float, deadline: Deadline, lost: Callable[[NodeView], bool]
    ) -> list[str]:
        """Live nodes ``lost`` says are lost now; ``deadline(node, at_least)`` is when they
        would be, at the earliest, under today's interval ``floor``. A node stays reported
        (and scheduled) until the log shows it lost, so a decision whose publish went
        missing is made again."""
        if not self.synced or floor < self.built_for:
            self._rebuild(state, deadline, floor)
        elif self.touched:
            for node_id in self.touched:
                node = state.nodes.get(node_id)
                if node is None or node_id not in state.live:
                    self.due.pop(node_id, None)
                else:
                    self._schedule(node, deadline(node, 0.0))
        self.touched.clear()
        out: list[str] = []
        later: list[NodeView] = []
        while self.heap and self.heap[0][0] <= now:
            when, node_id = heapq.heappop(self.heap)
            if self.due.get(node_id) != when:
                continue  # superseded by a later entry
            del self.due[node_id]
            node = state.nodes.get(node_id)
            if node is None or node_id not in state.live:
                continue
            if lost(node):
                out.append(node_id)
            later.append(node)
        for node in later:
            self._schedule(node, deadline(node, now))
        self.built_for = max(self.built_for, floor)
        return out

    def _schedule(self, node: NodeView, when: float) -> None:
        self.due[node.node_id] = when
        heapq.heappush(self.heap, (when, node.node_id))

    def _rebuild(self, state: ClusterState, deadline: Deadline, floor: float) -> None:
        self.due = {}
        for node_id in state.live:
            node = state.nodes.get(node_id)
            if node is not None:
                self.due[node_id] = deadline(node, 0.0)
        self.heap = [(when, node_id) for node_id, when in self.due.items()]
        heapq.heapify(self.heap)
        self.built_for = floor
        self.synced = True
