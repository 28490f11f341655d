"""The OpenAPI document: a valid 3.1 shape, every route the app serves, every $ref resolvable."""

from __future__ import annotations

import json
from typing import Any

from hive.web.openapi import document


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_document_shape() -> None:
    doc = document()
    json.dumps(doc)  # plain JSON
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert method in ("get", "post"), (path, method)
            assert "200" in op["responses"] and "401" in op["responses"], (path, method)
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path
            if method == "post":
                assert "403" in op["responses"], path  # every action may be refused by role


def test_every_api_route_is_documented() -> None:
    from aiohttp import web

    from hive.web import api

    app = web.Application()
    api.add_routes(app)
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    doc = document()["paths"]
    undocumented = {(m, p) for m, p in served if p not in doc or m not in doc[p]}
    assert undocumented == {("get", "/api/tasks/{task_id}/files/{name}")}  # a file, not JSON
