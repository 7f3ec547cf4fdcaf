"""HTTP request/response models of the recommender API (pydantic, strict, with examples).

Strict types: `"k": "5"` is a 422, not a silent coercion; unknown fields are a 422. An integer
is what JSON Schema calls one (`type: integer`, the published schema): `5` or `5.0`, never `5.5`,
`"5"` or `true`. Bounds that depend on the deployed model (catalog size, history length) are
checked by the app and answered with 422 as well.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, model_validator


def _whole_number(value: Any) -> Any:
    """JSON's `31.0` is the integer 31 to JSON Schema (and to schema-driven clients and fuzzers)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[StrictInt, BeforeValidator(_whole_number)]


def _reward(value: Any) -> Any:
    """0 or 1 as JSON Schema reads `enum: [0, 1]`: `1.0` is 1, `true` is not a number."""
    if isinstance(value, bool):
        raise ValueError("Input should be 0 or 1")
    return _whole_number(value)


def _one_context_schema(schema: dict[str, Any]) -> None:
    """What `_one_context` enforces, in JSON Schema: exactly one of `user_id` (an integer) and
    `history` (a non-empty array); the other absent or null. Fuzzers generate from this."""
    schema["examples"] = [
        {"user_id": 196, "k": 10},
        {"history": [242, 302, 377, 51], "k": 5, "exclude_seen": True, "explore": False},
    ]
    for branch in schema["properties"]["history"]["anyOf"]:
        if branch.get("type") == "array":
            branch["minItems"] = 1
    schema["oneOf"] = [
        {"required": ["user_id"], "properties": {"user_id": {"type": "integer"}, "history": {"type": "null"}}},
        {"required": ["history"], "properties": {"history": {"type": "array"}, "user_id": {"type": "null"}}},
    ]


class RecommendRequest(BaseModel):
    """Recommend for a known user (history from the prepared dataset) or an explicit history."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_context_schema)

    user_id: JsonInt | None = Field(None, description="a user of the model's training data")
    history: list[JsonInt] | None = Field(None, description="item ids, oldest first (instead of user_id)")
    k: JsonInt = Field(10, ge=1, description="slate size")
    exclude_seen: StrictBool = Field(True, description="never recommend items already in the history")
    explore: StrictBool = Field(True, description="let the exploration policy pick the slate (else greedy top-k)")

    @model_validator(mode="after")
    def _one_context(self) -> RecommendRequest:
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of 'user_id' or 'history'")
        if self.history is not None and len(self.history) == 0:
            raise ValueError("'history' must not be empty")
        return self


class RecommendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f1c2a9e0b6d4e7f",
                    "items": [50, 181, 100],
                    "scores": [7.1, 6.8, 6.5],
                    "propensities": [0.94, 0.93, 0.93],
                    "model_version": "lmrec-seqrec/3",
                    "policy": "epsilon_greedy",
                    "explored": False,
                    "cached": False,
                }
            ]
        }
    )

    request_id: str
    items: list[int]
    scores: list[float]
    propensities: list[float] = Field(description="P(item at its position) under the serving policy")
    model_version: str
    policy: str
    explored: bool = Field(description="the slate differs from the greedy top-k")
    cached: bool = Field(description="ranked candidates came from the replica's cache")


class FeedbackRequest(BaseModel):
    """Reward for one shown item of an earlier /recommend response."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"request_id": "3f1c2a9e0b6d4e7f", "item_id": 181, "reward": 1}]},
    )

    request_id: str = Field(min_length=1, max_length=128)
    item_id: JsonInt
    reward: Annotated[Literal[0, 1], BeforeValidator(_reward)] = Field(
        description="1 = click, 0 = shown but not clicked"
    )


class FeedbackResponse(BaseModel):
    status: Literal["recorded"]
    request_id: str
    item_id: int
    position: int
    propensity: float


class CatalogItemIn(BaseModel):
    """A new item, known by its content: text (for a model with a text encoder) and/or attributes."""

    model_config = ConfigDict(extra="forbid")

    item_id: JsonInt = Field(description="a 64-bit id not in the catalog yet")
    text: str | None = Field(None, max_length=10_000, description="encoded as training encoded item text")
    attributes: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=list, max_length=256, description="strings from the model's attribute vocabulary"
    )


class CatalogAddRequest(BaseModel):
    """Items to add to a fused model's catalog (rankable on every replica within seconds)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"items": [{"item_id": 90001, "text": "red guitar number 7", "attributes": ["cluster:3"]}]}]
        },
    )

    items: list[CatalogItemIn] = Field(min_length=1, description="at most `catalog.max_items_per_request`")


class CatalogAddResponse(BaseModel):
    catalog_version: int = Field(description="the catalog version this replica now ranks with")
    added: int = Field(description="items this request added")
    catalog_items: int = Field(description="items added to the model's own catalog so far")
    num_items: int = Field(description="rankable items now")
    model_version: str
    applied_s: float = Field(description="seconds from the request to ranking with the new items on this replica")


class ErrorResponse(BaseModel):
    error: str
    detail: object = None


class VersionResponse(BaseModel):
    model_uri: str
    model_version: str | None
    run_id: str | None
    dataset: str | None
    num_items: int | None
    policy: dict
    policy_uri: str | None = None  # where the policy came from (exploration.policy_uri), if not inline
    policy_version: str | None = None  # registry version behind a models:/ policy_uri
    policy_error: str | None = None  # why policy_uri is not (yet) what serves
    precision: str | None
    device: str | None
    forward: str | None = None  # "torchscript" (traced, checked at load) or "eager"
    last_position_only: bool | None = None  # the last block computes only the scored position (checked at load)
    loaded_at: float | None
    catalog_version: int | None = None  # fused models: the last catalog version applied (0: none added)
    catalog_items: int | None = None  # fused models: items added to the model's catalog while serving
    lmrec_version: str
