"""The recommender's HTTP surface (Ray-free): the FastAPI app, error bodies, the API key, the
responses each route documents, and the OpenAPI document with the deployed limits.

The routes themselves are methods of the `Ingress` deployment (lmrec.serving.app), registered on
`API` there; POST /recommend may be answered by `lmrec.serving.fastpath` in front of FastAPI.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import lmrec
from lmrec.serving.config import ServeConfig
from lmrec.serving.fastpath import RecommendFastPath, invalid_body
from lmrec.serving.schemas import ErrorResponse

# /openapi.json, /docs and /redoc are Ingress routes (`openapi_document`, `docs_page`): the document
# states the deployment's own limits (max_k, max_history), which FastAPI's built-in routes cannot
# know. `docs_url` stays set so that Serve reports where the docs are.
API = FastAPI(
    title="lmrec recommender",
    version=lmrec.__version__,
    description="Sequential recommendations with exploration, feedback logging and zero-downtime model swaps.",
    openapi_url=None,
    docs_url="/docs",
    redoc_url=None,
)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


UNAUTHORIZED = _error("missing or invalid API key header (only when the deployment has `api_key_env`/`api_key_file`)")
UNAVAILABLE = "a replica it depends on is restarting, or the model is not loaded yet; retry later"
RECOMMEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    404: _error("unknown `user_id`, or the model has no user histories (send `history` instead)"),
    422: _error(
        "invalid body (types, unknown fields, not exactly one of `user_id`/`history`), `history` longer than "
        "`max_history`, `k` above `max_k` or the catalog, item ids not in the model's catalog, or fewer unseen "
        "items than `k`"
    ),
    503: _error(UNAVAILABLE),
}
FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    404: _error("unknown `request_id`: no impression logged for it, or it left the join window"),
    409: _error("feedback for this item of this request was already recorded"),
    422: _error("invalid body, or `item_id` was not shown in that request's slate"),
    503: _error("the feedback log could not write the event (not recorded), or is restarting; retry later"),
}
CATALOG_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: UNAUTHORIZED,
    409: _error("an item id is in the catalog already, or the model is ID-only (it has no content to add items by)"),
    422: _error(
        "invalid body, duplicate ids in it, more items than `catalog.max_items_per_request`, attributes not in the "
        "model's vocabulary or more than it takes, or an item with no content the model uses"
    ),
    503: _error(UNAVAILABLE + " (or the catalog store or text encoder is unavailable: nothing was added)"),
}
STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {503: _error(UNAVAILABLE)}


def error_body(error: str, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "detail": detail}


def error(status: int, error: str, detail: Any = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(error, detail))


@API.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Malformed JSON, wrong types, unknown fields: 422 with the offending locations."""
    return JSONResponse(status_code=422, content=invalid_body(exc.errors()))


@API.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A body that is not even text (FastAPI's 400 "error parsing the body") is malformed JSON like any
    other: 422, as the /recommend fast path answers it. Everything else as FastAPI answers it."""
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeError):
        return JSONResponse(
            status_code=422, content=invalid_body([{"loc": ("body",), "msg": "Invalid JSON: not UTF-8"}])
        )
    return await http_exception_handler(request, exc)


# POST /recommend skips FastAPI's layers when the replica registers its handler (http_fast_path).
API.add_middleware(RecommendFastPath)


class ApiKey:
    """The optional API key, read from an env var or a file (never from the config itself)."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.header = cfg.api_key_header
        self.value = read_api_key(cfg)

    def ok(self, got: str | None) -> bool:
        """Constant-time comparison; True when no key is configured."""
        return self.value is None or hmac.compare_digest((got or "").encode(), self.value.encode())

    def denied(self) -> dict[str, Any]:
        return error_body(f"missing or invalid {self.header} header")


def read_api_key(cfg: ServeConfig) -> str | None:
    if cfg.api_key_env:
        value = os.environ.get(cfg.api_key_env)
        if not value:
            raise RuntimeError(f"api_key_env={cfg.api_key_env!r} is set but that environment variable is empty")
        return value
    if cfg.api_key_file:
        value = Path(cfg.api_key_file).expanduser().read_text().strip()
        if not value:
            raise RuntimeError(f"api_key_file {cfg.api_key_file} is empty")
        return value
    return None


def openapi_document(app: FastAPI, cfg: ServeConfig, root_path: str = "") -> dict[str, Any]:
    """`app`'s OpenAPI document, with this deployment's `max_k` and `max_history` on /recommend's body
    and `catalog.max_items_per_request` on /catalog/items'.

    Bounds that depend on the loaded model (its catalog, its users) are not expressible here; the
    422 and 404 descriptions name them."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        servers=[{"url": root_path}] if root_path else None,
    )
    body = doc["components"]["schemas"]["RecommendRequest"]
    body["properties"]["k"]["maximum"] = cfg.max_k
    for branch in body["properties"]["history"]["anyOf"]:
        if branch.get("type") == "array":
            branch["maxItems"] = cfg.max_history
    doc["components"]["schemas"]["CatalogAddRequest"]["properties"]["items"]["maxItems"] = (
        cfg.catalog.max_items_per_request
    )
    return doc


def docs_page(kind: str, root_path: str = "") -> HTMLResponse:
    """Swagger UI (`kind` "docs") or ReDoc ("redoc") over the deployment's /openapi.json."""
    url, title = f"{root_path}/openapi.json", f"{API.title} - {'ReDoc' if kind == 'redoc' else 'Swagger UI'}"
    return (
        get_redoc_html(openapi_url=url, title=title)
        if kind == "redoc"
        else get_swagger_ui_html(openapi_url=url, title=title)
    )
