"""The lmrec recommendation endpoint as a Ray Serve application.

    serve run lmrec.serving.app:build_app model_uri=models:/lmrec-seqrec@champion
    serve deploy serve_apps/recommender.yaml

Three deployments joined by DeploymentHandles:

* `Ingress`  — HTTP (FastAPI, lmrec.serving.http): validation, optional API key, latency metrics.
* `Ranker`   — the model (autoscaled; GPU or CPU): lmrec.serving.ranker.RankerCore with `@serve.batch`
  micro-batches, `ray.util.metrics` and the FeedbackLog shards' handles injected.
* `FeedbackLog` — the Parquet impression/feedback log (group commit) and the exploration statistics
  that rankers pull, as `feedback.shards` deployments of one replica each (`FeedbackLog`,
  `FeedbackLog1`, ...) running lmrec.serving.feedback_log.FeedbackLogCore. A slate belongs to the
  shard its request_id hashes to (lmrec.serving.shards): rankers ship it there and the Ingress
  sends its feedback there. N deployments, because Serve routes a handle call to any replica of a
  deployment and a restarted replica has no fixed index; a shard needs both.

This module only wires: the logic lives in those Ray-free modules, and what a replica injects
into them (Ray metrics, the handle, `@serve.batch`) in lmrec.serving.replica. Nothing runs at import:
`build_app(args)` validates `args` (a ServeConfig mapping; errors name the key) and returns the
bound application.
"""

# No `from __future__ import annotations`: in a replica, Serve's copy of the Ingress class carries
# only the globals its methods' bodies use, so FastAPI could not resolve string annotations of the
# route parameters there (the request body would turn into query parameters).
import os
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application

import lmrec
from lmrec.config import from_dict, to_dict
from lmrec.serving import http
from lmrec.serving import metrics as m
from lmrec.serving.config import ServeConfig
from lmrec.serving.fastpath import register
from lmrec.serving.feedback_log import FeedbackLogCore
from lmrec.serving.http import API
from lmrec.serving.ranker import RankerCore
from lmrec.serving.replica import RayMetrics, call_upstream, replica_parts
from lmrec.serving.schemas import (
    CatalogAddRequest,
    CatalogAddResponse,
    FeedbackRequest,
    FeedbackResponse,
    RecommendRequest,
    RecommendResponse,
    VersionResponse,
)
from lmrec.serving.shards import owner_shard, shard_name


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.25})
class FeedbackLog(FeedbackLogCore):
    """One shard of the Parquet log; acknowledges feedback only after a durable (group-committed) write."""

    def __init__(self, cfg: dict[str, Any], shard: int = 0) -> None:
        super().__init__(from_dict(ServeConfig, cfg), RayMetrics(), shard)

    def __del__(self) -> None:  # Serve's graceful shutdown calls it
        self.shutdown()


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
class Ranker(RankerCore):
    """The model deployment of the `split` topology, called by the Ingress through a handle."""

    def __init__(self, cfg: dict[str, Any], feedback_logs: list[Any]) -> None:
        super().__init__(cfg, *replica_parts(feedback_logs))

    async def __del__(self) -> None:  # Serve's graceful shutdown awaits it
        await self.shutdown()


@serve.deployment(max_ongoing_requests=512, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(API)
class Ingress:
    """HTTP front: validation, API key, error mapping (4xx for client errors), latency metrics.

    `ranker` is the Ranker deployment's handle (topology `split`), or None (topology
    `fused`): then this replica holds the model itself and ranks in-process. `feedback_logs`
    are the log shards' handles, index i for shard i.
    """

    def __init__(self, cfg: dict[str, Any], ranker: Any, feedback_logs: list[Any]) -> None:
        self.cfg = from_dict(ServeConfig, cfg)
        self.ranker = ranker
        self.core = RankerCore(cfg, *replica_parts(feedback_logs)) if ranker is None else None
        self.feedback_logs = feedback_logs
        self.key = http.ApiKey(self.cfg)
        self.api_key_header = self.cfg.api_key_header.lower().encode("latin-1")
        self.metrics = RayMetrics()
        self._openapi: dict[str, dict[str, Any]] = {}  # per route prefix
        register(self if self.cfg.http_fast_path else None)  # one replica per process

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Fused topology: batch settings, policy and model_uri applied live, as on a Ranker."""
        if self.core is None:
            raise ValueError("user_config on the Ingress applies only to topology 'fused'; set it on the Ranker")
        await self.core.reconfigure(user_config)

    async def __del__(self) -> None:  # Serve's graceful shutdown awaits it
        if self.core is not None:
            await self.core.shutdown()

    async def flush(self) -> dict[str, Any]:
        """Fused topology: ship this replica's buffered impressions now (see RankerCore.flush)."""
        if self.core is None:
            raise ValueError("flush on the Ingress applies only to topology 'fused'; call it on the Ranker")
        return await self.core.flush()

    async def _ranker_call(self, method: str, retry_s: float, *args: Any) -> dict[str, Any]:
        if self.core is not None:  # fused: same process, no hop
            return await getattr(self.core, method)(*args)
        return await call_upstream(getattr(self.ranker, method), retry_s, *args)

    def observe(self, endpoint: str, status: int, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1000
        self.metrics.record(m.REQUEST_LATENCY_MS, ms, {"endpoint": endpoint, "status": str(status)})

    @API.post("/recommend", response_model=RecommendResponse, responses=http.RECOMMEND_RESPONSES)
    async def recommend(self, body: RecommendRequest, request: Request) -> Any:
        status, content = await self.recommend_handler(
            request.headers.get(self.cfg.api_key_header), body, time.perf_counter()
        )
        return content if status == 200 else JSONResponse(status_code=status, content=content)

    async def recommend_handler(
        self, api_key: str | None, body: RecommendRequest, t0: float
    ) -> tuple[int, dict[str, Any]]:
        """/recommend for the FastAPI route and the fast path alike: (status, JSON body)."""
        if not self.key.ok(api_key):
            self.observe("recommend", 401, t0)
            return 401, self.key.denied()
        if body.history is not None and len(body.history) > self.cfg.max_history:
            self.observe("recommend", 422, t0)
            return 422, http.error_body(f"history has {len(body.history)} items; the limit is {self.cfg.max_history}")
        result = await self._ranker_call("recommend", self.cfg.upstream_retry_s, body.model_dump())
        status = int(result.pop("status", 200)) if "error" in result else 200
        self.observe("recommend", status, t0)
        return (200, result) if status == 200 else (status, http.error_body(result["error"]))

    @API.post("/feedback", response_model=FeedbackResponse, responses=http.FEEDBACK_RESPONSES)
    async def feedback(self, body: FeedbackRequest, request: Request) -> Any:
        t0 = time.perf_counter()
        if not self.key.ok(request.headers.get(self.cfg.api_key_header)):
            self.observe("feedback", 401, t0)
            return JSONResponse(status_code=401, content=self.key.denied())
        owner = self.feedback_logs[owner_shard(body.request_id, len(self.feedback_logs))]
        result = await call_upstream(
            owner.feedback, self.cfg.upstream_retry_s, body.request_id, body.item_id, body.reward
        )
        status = int(result.pop("status", 200)) if "error" in result else 200
        self.observe("feedback", status, t0)
        return http.error(status, result["error"]) if status != 200 else result

    @API.post("/catalog/items", response_model=CatalogAddResponse, responses=http.CATALOG_RESPONSES)
    async def add_catalog_items(self, body: CatalogAddRequest, request: Request) -> Any:
        """Add items to a fused model's catalog by their content (lmrec.serving.catalog); API key as /recommend."""
        t0 = time.perf_counter()
        if not self.key.ok(request.headers.get(self.cfg.api_key_header)):
            self.observe("catalog", 401, t0)
            return JSONResponse(status_code=401, content=self.key.denied())
        result = await self._ranker_call("add_items", self.cfg.upstream_retry_s, body.model_dump())
        status = int(result.pop("status", 200)) if "error" in result else 200
        self.observe("catalog", status, t0)
        return http.error(status, result["error"]) if status != 200 else result

    @API.get("/healthz", responses=http.STATUS_RESPONSES)
    async def healthz(self) -> Any:
        st = await self._ranker_call("status", 0.0)
        if "error" in st:
            return http.error(503, st["error"])
        if not st["ready"]:
            return http.error(503, "model not loaded", st.get("load_error"))
        return {"status": "ok", "model_version": st["model_version"]}

    @API.get("/version", response_model=VersionResponse, responses=http.STATUS_RESPONSES)
    async def version(self) -> Any:
        st = await self._ranker_call("status", self.cfg.upstream_retry_s)
        if "error" in st:
            return http.error(503, st["error"])
        return {**{k: st.get(k) for k in VersionResponse.model_fields if k in st}, "lmrec_version": lmrec.__version__}

    @API.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> Any:
        root = request.scope.get("root_path", "").rstrip("/")
        if root not in self._openapi:  # request.app: the FastAPI app serving this replica
            self._openapi[root] = http.openapi_document(request.app, self.cfg, root)
        return self._openapi[root]

    @API.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> Any:
        return http.docs_page("docs", request.scope.get("root_path", "").rstrip("/"))

    @API.get("/redoc", include_in_schema=False)
    async def redoc(self, request: Request) -> Any:
        return http.docs_page("redoc", request.scope.get("root_path", "").rstrip("/"))


def build_app(args: dict[str, Any]) -> Application:
    """Validate `args` (ServeConfig keys; errors name the key) and bind the deployments.

    Topology `split`: Ingress -> Ranker -> FeedbackLog shards. Topology `fused`: the Ingress
    ranks in-process (Ingress -> FeedbackLog shards), one hop fewer per request; its replicas
    take the Ranker's defaults (1 CPU, user_config for batching and hot-swap). Options under
    `deployments.FeedbackLog` apply to every shard.
    """
    cfg = from_dict(ServeConfig, dict(args or {}))
    if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
        # Fail at build time, before anything is deployed, when the secret is missing.
        raise ValueError(f"api_key_env: environment variable {cfg.api_key_env!r} is not set")
    plain = to_dict(cfg)
    opts = cfg.deployments
    feedback_logs = [
        FeedbackLog.options(name=shard_name(i), **opts.get("FeedbackLog", {})).bind(plain, i)
        for i in range(cfg.feedback.shards)
    ]
    user_config = {"max_batch_size": cfg.batch.max_batch_size, "batch_wait_timeout_s": cfg.batch.batch_wait_timeout_s}
    if cfg.topology == "fused":
        fused = {"max_ongoing_requests": 256, "ray_actor_options": {"num_cpus": 1}, **opts.get("Ingress", {})}
        return Ingress.options(user_config=user_config, **fused).bind(plain, None, feedback_logs)
    ranker = Ranker.options(user_config=user_config, **opts.get("Ranker", {})).bind(plain, feedback_logs)
    return Ingress.options(**opts.get("Ingress", {})).bind(plain, ranker, feedback_logs)
