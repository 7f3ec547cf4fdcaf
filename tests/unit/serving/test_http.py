"""The published API contract agrees with what the app enforces: the request schema says "exactly one of
`user_id`, `history`" (checked against the pydantic model on generated bodies, with the `jsonschema`
library as the judge of the schema), the OpenAPI document carries the deployment's limits, and every
status the routes can answer is documented. No Ray cluster: the app module is only imported."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lmrec.config import from_dict
from lmrec.serving.config import ServeConfig
from lmrec.serving.schemas import FeedbackRequest, RecommendRequest

# Integers as JSON spells them: `3` and `3.0` (JSON Schema's `integer` admits both, and so do fuzzers).
INTS = st.one_of(st.integers(-3, 3), st.integers(), st.integers(-(2**53), 2**53).map(float))
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.lists(INTS, max_size=3),
    st.lists(st.one_of(st.text(max_size=2), st.booleans()), min_size=1, max_size=2),
)
KEYS = st.sampled_from(["user_id", "history", "k", "exclude_seen", "explore", "zzz"])
BODIES = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=5),
    st.fixed_dictionaries({"user_id": INTS}, optional={"history": VALUES, "k": INTS}),
    st.fixed_dictionaries({"history": st.lists(INTS, max_size=3)}, optional={"user_id": VALUES, "k": INTS}),
)


FEEDBACK = st.one_of(
    st.dictionaries(st.sampled_from(["request_id", "item_id", "reward", "zzz"]), VALUES, max_size=4),
    st.fixed_dictionaries(
        {"request_id": st.text(max_size=130), "item_id": INTS, "reward": st.one_of(INTS, st.booleans(), VALUES)}
    ),
)


def _model_accepts(body: dict[str, Any], model: type = RecommendRequest) -> bool:
    try:
        model.model_validate_json(json.dumps(body))  # as the fast path reads a body
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES)
def test_the_request_schema_accepts_exactly_what_the_model_accepts(body: dict[str, Any]) -> None:
    schema = RecommendRequest.model_json_schema()
    schema_ok = jsonschema.Draft202012Validator(schema).is_valid(body)
    assert schema_ok == _model_accepts(body), (body, schema_ok)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=FEEDBACK)
def test_the_feedback_schema_accepts_exactly_what_the_model_accepts(body: dict[str, Any]) -> None:
    schema_ok = jsonschema.Draft202012Validator(FeedbackRequest.model_json_schema()).is_valid(body)
    assert schema_ok == _model_accepts(body, FeedbackRequest), (body, schema_ok)


def test_exactly_one_of_user_id_and_history() -> None:
    validator = jsonschema.Draft202012Validator(RecommendRequest.model_json_schema())
    for body, ok in [
        ({"user_id": 196}, True),
        ({"history": [1, 2]}, True),
        ({"user_id": None, "history": [1]}, True),
        ({"user_id": 196, "history": None}, True),
        ({"user_id": 196, "history": [242, 302]}, False),  # what schemathesis found valid by the old schema
        ({}, False),
        ({"user_id": None, "history": None}, False),
        ({"history": []}, False),
        ({"user_id": 196.0, "k": 5.0}, True),  # JSON Schema's integers: 196.0 is 196
        ({"user_id": 196.5}, False),
        ({"user_id": True}, False),
    ]:
        assert validator.is_valid(body) is ok is _model_accepts(body), body


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    from lmrec.serving import app, http  # registers the Ingress routes on http.API (imports Ray Serve, starts nothing)

    assert app.Ingress is not None
    cfg = from_dict(ServeConfig, {"max_k": 25, "max_history": 60})
    return http.openapi_document(http.API, cfg, "/main")


def test_the_document_states_the_deployment_limits(document: dict[str, Any]) -> None:
    body = document["components"]["schemas"]["RecommendRequest"]
    assert body["properties"]["k"] == {**body["properties"]["k"], "minimum": 1, "maximum": 25}
    (array,) = [b for b in body["properties"]["history"]["anyOf"] if b.get("type") == "array"]
    assert array["minItems"] == 1 and array["maxItems"] == 60
    assert len(body["oneOf"]) == 2 and body["examples"]
    assert document["servers"] == [{"url": "/main"}]
    assert set(document["paths"]) == {"/recommend", "/feedback", "/catalog/items", "/healthz", "/version"}  # no docs
    assert document["components"]["schemas"]["CatalogAddRequest"]["properties"]["items"]["maxItems"] == 1000
    for path, model in (("/recommend", "RecommendRequest"), ("/feedback", "FeedbackRequest")):
        post = document["paths"][path]["post"]  # the body is the request model, nothing is a query parameter
        assert "parameters" not in post, post["parameters"]
        assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}


def test_every_status_a_route_answers_is_documented(document: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[str]:
        return set(document["paths"][path][method]["responses"])

    assert statuses("/recommend", "post") == {"200", "401", "404", "422", "503"}
    assert statuses("/feedback", "post") == {"200", "401", "404", "409", "422", "503"}
    assert statuses("/healthz", "get") == statuses("/version", "get") == {"200", "503"}
    not_shown = document["paths"]["/feedback"]["post"]["responses"]["422"]
    assert "was not shown" in not_shown["description"]
    error = document["components"]["schemas"]["ErrorResponse"]
    assert not_shown["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert error["required"] == ["error"]


def test_a_body_that_is_not_text_is_a_422_like_any_malformed_json() -> None:
    """FastAPI answers a non-UTF-8 JSON body with 400; the app's handlers make it the 422 the fast path gives."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lmrec.serving import http

    app = FastAPI(exception_handlers=http.API.exception_handlers)

    @app.post("/feedback")
    async def feedback(body: FeedbackRequest) -> dict[str, Any]:
        return body.model_dump()

    client = TestClient(app)
    headers = {"content-type": "application/json"}
    for raw in (b"\xe9{\xc3C\xa7Y f2", b"\xff\xfe garbage", b"{not json"):
        r = client.post("/feedback", content=raw, headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "invalid request", (raw, r.text)
    assert client.post("/feedback", json={"request_id": "a", "item_id": 3.0, "reward": 1}).json()["item_id"] == 3
    assert client.get("/nowhere").status_code == 404  # other HTTP errors as FastAPI answers them
