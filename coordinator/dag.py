"""Submission checks for dependencies: every ``after`` must name a known task, and a
batch of submissions must not form a cycle. Pure; the API answers with its verdict."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence


def check_dependencies(known: Container[str], batch: Sequence[tuple[str, Sequence[str]]]) -> str | None:
    """``batch`` is (task_id, after) pairs about to be submitted. Returns an error or None."""
    new = {}
    for task_id, after in batch:
        if task_id in known or task_id in new:
            return f"task id {task_id} already exists"
        new[task_id] = list(after)
    for task_id, after in new.items():
        for dep in after:
            if dep == task_id:
                return f"task {task_id} cannot depend on itself"
            if dep not in known and dep not in new:
                return f"unknown dependency {dep} (of task {task_id})"
    cycle = _find_cycle(new)
    if cycle:
        return "dependency cycle: " + " -> ".join(cycle)
    return None


def _find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    for root in graph:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path = [root]
        color[root] = grey
        while stack:
            node, i = stack[-1]
            deps = [d for d in graph[node] if d in graph]
            if i < len(deps):
                stack[-1] = (node, i + 1)
                nxt = deps[i]
                if color[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if color[nxt] == white:
                    color[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return None
