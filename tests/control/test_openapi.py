"""The control plane's OpenAPI document (issue 17): served behind the admin token, it lists
every route the app serves, with its request body schema and its answers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from tests.control.process import control_process

from edgeloop.control.app import create_app
from edgeloop.control.plane import ControlPlane

ADMIN = "openapi-admin-token-0123456789abcdef"


def _served(tmp_path: Path) -> set[tuple[str, str]]:
    plane, _ = ControlPlane.open(tmp_path / "app-home")
    try:
        app = create_app(plane, tick_s=None)
        return {
            (method.lower(), re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
            for route in app.router.routes
            for method in getattr(route, "methods", None) or ()
            if method != "HEAD"
        }
    finally:
        plane.close()


def test_the_document_lists_every_route_with_its_body_and_answers(tmp_path: Path) -> None:
    served = _served(tmp_path)
    with control_process(tmp_path / "home", None, admin_token=ADMIN) as proc:
        url = f"{proc.url}/api/v1/openapi.json"
        assert httpx.get(url).status_code == 401
        response = httpx.get(url, headers={"Authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 200, response.text
        doc = response.json()
    assert doc["openapi"].startswith("3.1")
    listed = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert listed == served
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and "400" in op["responses"] and "401" in op["responses"]
            assert any(code.startswith("2") for code in op["responses"]), (method, path)
            for param in (p[1:-1] for p in path.split("/") if p.startswith("{")):
                assert param in {p["name"] for p in op.get("parameters", [])}, (method, path)
            if method in ("post", "patch") and not path.endswith(
                ("/pause", "/resume", "/stop", "/cancel")
            ):
                assert "requestBody" in op, (method, path)
    for ref_holder in ("EnrollBody", "ReportBody", "DeploymentBody", "EnrollmentTokenBody"):
        assert ref_holder in schemas
    tier = schemas["EnrollmentTokenBody"]["properties"]["tier"]
    assert {"maximum": 1000, "minimum": 0, "type": "integer"}.items() <= tier["anyOf"][0].items()
    _all_refs_resolve(doc, schemas)


def _all_refs_resolve(node: object, schemas: dict[str, object]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.removeprefix("#/components/schemas/") in schemas, ref
        for value in node.values():
            _all_refs_resolve(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _all_refs_resolve(value, schemas)
