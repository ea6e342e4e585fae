"""The inference server's OpenAPI document (issue 17): it lists every route the app serves, with
its body and answers, and sits behind the admin token where the server has one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from tests.serving.harness import serving

from edgeloop.core.errors import ConfigError
from edgeloop.serving import openapi, schemas
from edgeloop.serving.admin import AdminGate
from edgeloop.serving.oip import DATATYPES

TOKEN = "serve-openapi-admin-token-0123456789"


def _route_table(harness: Any) -> set[tuple[str, str]]:
    app = harness.client._transport.app
    return {(m.lower(), p) for m, p in openapi.served_routes(app.router.routes)}


def _listed(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in doc["paths"].items() for method in ops}


def test_every_route_of_the_app_is_documented_with_its_body_and_answers(linear: Path) -> None:
    with serving([linear]) as harness:
        response = harness.get(openapi.PATH)
        table = _route_table(harness)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert _listed(doc) == table  # nothing served undocumented, nothing documented unserved
    assert len(table) == 24
    agent = {("get", "/agent/status"), ("get", "/tier/targets/{path}")}  # the agent adds them
    assert {(m.lower(), p) for m, p in openapi.ROUTES} == table | agent  # no stale entry
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and "200" in op["responses"], (method, path)
            assert {"404", "405"} <= op["responses"].keys(), (method, path)
            for param in (p[1:-1] for p in path.split("/") if p.startswith("{")):
                assert param in {p["name"] for p in op["parameters"]}, (method, path)
            if method in ("post", "put") and "repository" not in path:
                assert "requestBody" in op, (method, path)
    infer = doc["paths"]["/v2/models/{model}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferRequest"
    }
    tensor = schemas["InputTensor"]["properties"]
    assert tensor["datatype"]["enum"] == list(DATATYPES)
    assert {"400", "413", "422", "429", "503"} <= infer["responses"].keys()
    assert "401" not in infer["responses"] and "security" not in infer  # open: no credential
    assert {"OneLabel", "LabelBatch", "PredictRequest", "ModelMetadata"} <= schemas.keys()
    _all_refs_resolve(doc, schemas)


def test_behind_the_admin_token_when_the_server_has_one(linear: Path) -> None:
    with serving([linear], admin=AdminGate(token=TOKEN)) as harness:
        assert harness.get(openapi.PATH).status_code == 401
        wrong = harness.get(openapi.PATH, headers={"Authorization": "Bearer " + "x" * 20})
        assert wrong.status_code == 403
        response = harness.get(openapi.PATH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    load = response.json()["paths"]["/v2/repository/models/{model}/load"]["post"]
    assert load["security"] == [{"bearer": []}] and {"401", "403"} <= load["responses"].keys()


def test_a_closed_gate_documents_its_changing_routes_as_refused(linear: Path) -> None:
    with serving([linear], admin=AdminGate.closed("the edge agent")) as harness:
        response = harness.get(openapi.PATH)  # the agent's server has no credential: open
    assert response.status_code == 200
    unload = response.json()["paths"]["/v2/repository/models/{model}/unload"]["post"]
    assert set(unload["responses"]) == {"403", "404", "405"}  # never served: no 200


def test_a_route_without_an_entry_is_refused_not_left_out() -> None:
    with pytest.raises(ConfigError, match="GET /v2/new has no OpenAPI entry"):
        openapi.document([("GET", "/v2/new")], "open")


def test_the_datatype_enum_is_the_codec_s() -> None:
    assert list(get_args(schemas.Datatype)) == list(DATATYPES)


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
