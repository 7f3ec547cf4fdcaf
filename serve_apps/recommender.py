"""The lmrec recommendation endpoint as a Ray Serve application.

    serve run serve_apps.recommender:build_app model_uri=models:/lmrec-seqrec@champion
    serve deploy serve_apps/recommender.yaml

Three deployments joined by DeploymentHandles:

* `Ingress`  — HTTP (FastAPI): validation, optional API key, latency metrics.
* `Ranker`   — the model (autoscaled; GPU or CPU): `@serve.batch` micro-batches merged into forwards, LRU+TTL cache
  of ranked candidates, exploration policy, background hot-swap of model versions.
* `FeedbackLog` — one replica owning the Parquet impression/feedback log and the
  merged exploration statistics that rankers pull.

Nothing runs at import: `build_app(args)` validates `args` (a ServeConfig mapping;
errors name the key) and returns the bound application.
"""

import asyncio
import collections
import hmac
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application

import lmrec
from lmrec.config import from_dict, to_dict
from lmrec.serving.config import ServeConfig
from lmrec.serving.fastpath import RecommendFastPath, invalid_body, register
from lmrec.serving.schemas import (
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    RecommendRequest,
    RecommendResponse,
    VersionResponse,
)

log = logging.getLogger("ray.serve")
METRICS_FLUSH_S = 1.0  # per-request counters reach ray.util.metrics this often
SHUTDOWN_SHIP_TIMEOUT_S = 5.0  # a stopping replica waits this long for the FeedbackLog to take its last impressions

API = FastAPI(
    title="lmrec recommender",
    version=lmrec.__version__,
    description="Sequential recommendations with exploration, feedback logging and zero-downtime model swaps.",
)


def _error_body(error: str, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "detail": detail}


def _error(status: int, error: str, detail: Any = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=_error_body(error, detail))


@API.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Malformed JSON, wrong types, unknown fields: 422 with the offending locations."""
    return JSONResponse(status_code=422, content=invalid_body(exc.errors()))


# POST /recommend skips FastAPI's layers when the replica registers its handler (http_fast_path).
API.add_middleware(RecommendFastPath)


def _read_api_key(cfg: ServeConfig) -> str | None:
    """The API key from an env var or a file (never from the config itself)."""
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


async def _call_upstream(method: Any, retry_s: float, *args: Any) -> dict[str, Any]:
    """Call a deployment method; retry while its replica is dead or restarting, else a 503 body.

    Both calls are safe to repeat: ranking is read-only, and the feedback log refuses a
    duplicate (request_id, item_id) only after it was durably written, so a retried
    acknowledged feedback answers 409 instead of writing twice.
    """
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            return await method.remote(*args)
        except RayActorError as exc:  # ActorDiedError / ActorUnavailableError: the replica is gone
            if time.monotonic() + delay > deadline:
                log.warning("upstream unavailable after %.0fs of retries: %s", retry_s, type(exc).__name__)
                return {"error": f"service temporarily unavailable ({type(exc).__name__}); retry later", "status": 503}
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


# ---------------------------------------------------------------- FeedbackLog


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.25})
class FeedbackLog:
    """Owns the Parquet log; acknowledges feedback only after a durable (group-committed) write."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from lmrec.paths import lmrec_home
        from lmrec.serving.feedback import FeedbackStore

        self.cfg = from_dict(ServeConfig, cfg)
        root = Path(self.cfg.feedback.log_dir or (lmrec_home() / "feedback_logs"))
        self.store = FeedbackStore(self.cfg.feedback, root)
        if root.exists():  # a restarted replica: make earlier slates joinable again
            recovered = self.store.recover()
            log.info("feedback log recovered from %s: %s", root, recovered)
        self._pending: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._tasks = [
            asyncio.get_event_loop().create_task(self._committer()),
            asyncio.get_event_loop().create_task(self._impression_flusher()),
        ]
        from ray.util import metrics

        self._ctr = metrics.Gauge("lmrec_serve_click_through_rate", description="clicks / feedback events")
        self._fb = metrics.Counter(
            "lmrec_serve_feedback_total", description="feedback events recorded", tag_keys=("reward",)
        )

    async def add_impressions(self, records: list[dict[str, Any]]) -> int:
        return self.store.add_impressions(records)

    async def feedback(self, request_id: str, item_id: int, reward: int) -> dict[str, Any]:
        from lmrec.serving.runtime import RequestError

        deadline = time.monotonic() + self.cfg.feedback.impression_wait_s
        while not self.store.has_impression(request_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the ranker ships impressions in micro-batches
        try:
            row = self.store.event(request_id, item_id, reward)
        except RequestError as exc:
            return {"error": str(exc), "status": exc.status}
        fut: asyncio.Future = asyncio.get_event_loop().create_future()
        self._pending.append((row, fut))
        self._wakeup.set()
        try:
            await fut  # resolved once the batch holding this row is durable
        except Exception as exc:  # noqa: BLE001 (write failed: not acknowledged)
            return {"error": f"feedback log unavailable: {exc}", "status": 503}
        return {
            "status": "recorded",
            "request_id": request_id,
            "item_id": item_id,
            "position": row["position"],
            "propensity": row["propensity"],
        }

    async def _committer(self) -> None:
        loop = asyncio.get_event_loop()
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self.cfg.feedback.commit_interval_s)  # group commit window
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            rows = [r for r, _ in batch]
            try:
                await loop.run_in_executor(None, self.store.commit, rows)
            except Exception as exc:  # noqa: BLE001 (write failed: the batch is not acknowledged)
                self.store.release(rows)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(True)
            stats = self.store.stats()
            self._ctr.set(stats["ctr"])
            for r in rows:
                self._fb.inc(1, tags={"reward": str(int(r["reward"]))})

    async def _impression_flusher(self) -> None:
        loop = asyncio.get_event_loop()
        while True:
            await asyncio.sleep(min(1.0, self.cfg.feedback.max_delay_s / 2))
            try:
                await loop.run_in_executor(None, self.store.flush_impressions)
            except Exception as exc:  # noqa: BLE001 (kept buffered; retried next tick)
                log.warning("impression flush failed: %s", exc)

    async def policy_state(self) -> dict[str, Any]:
        return self.store.state.to_dict()

    async def stats(self) -> dict[str, Any]:
        return self.store.stats()

    async def flush(self) -> dict[str, Any]:
        await asyncio.get_event_loop().run_in_executor(None, self.store.flush_impressions, True)
        return self.store.stats()

    def __del__(self) -> None:
        try:
            self.store.flush_impressions(force=True)
        except Exception:  # noqa: BLE001 (best effort at shutdown)
            pass


# ---------------------------------------------------------------- Ranker


class RankerCore:
    """Ranks with the current model version; explores; hot-swaps versions in the background.

    A plain class so that it can run in either process: as the `Ranker` deployment
    (topology `split`, the default) or inside the `Ingress` replica (topology `fused`).
    """

    def __init__(self, cfg: dict[str, Any], feedback_log: Any) -> None:
        from ray.util import metrics

        from lmrec.serving.cache import TTLCache

        self.cfg = from_dict(ServeConfig, cfg)
        self.feedback_log = feedback_log
        self.loaded = None  # LoadedModel; replaced atomically on swap
        self.load_error: str | None = None
        self.model_uri = self.cfg.model_uri
        self.cache = TTLCache(self.cfg.cache.max_entries, self.cfg.cache.ttl_s)
        self.policy_uri = self.cfg.exploration.policy_uri
        self.policy_version: str | None = None  # registry version behind a models:/ policy_uri
        self.policy_error: str | None = None
        self.policy = self._build_policy()
        self._impressions: list[dict[str, Any]] = []
        self._swap_lock = asyncio.Lock()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._m_batch = metrics.Histogram(
            "lmrec_serve_batch_size",
            description="requests per model forward",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256],
        )
        # Wall time of one batched forward, seen from the replica: the model's own cost plus any
        # CPU or GIL contention inside the replica (docs/benchmarks.md, Serving).
        self._m_forward = metrics.Histogram(
            "lmrec_serve_forward_ms",
            description="wall time of one batched model forward",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
            tag_keys=("replica",),
        )
        self._m_cache = metrics.Counter(
            "lmrec_serve_cache_requests_total", description="ranked-candidate cache lookups", tag_keys=("result",)
        )
        self._m_hit_ratio = metrics.Gauge(
            "lmrec_serve_cache_hit_ratio", description="cache hit ratio of this replica", tag_keys=("replica",)
        )
        self._m_explore = metrics.Counter(
            "lmrec_serve_slates_total", description="slates served", tag_keys=("explored", "policy")
        )
        self._m_explore_rate = metrics.Gauge(
            "lmrec_serve_exploration_rate", description="fraction of slates that explored", tag_keys=("replica",)
        )
        self._m_version = metrics.Gauge(
            "lmrec_serve_model_version",
            description="model version served by each replica",
            tag_keys=("replica", "model"),
        )
        self._slates = 0
        self._explored = 0
        # Per-request counts are summed here and handed to ray.util.metrics once a second by
        # `_flush_metrics` (Ray exports every few seconds anyway): four metric calls fewer per request.
        self._counts: collections.Counter = collections.Counter()
        self._version_value: tuple[float, str] | None = None  # (version number, label) of the model served
        # Micro-batched requests waiting for the forward thread, and its wake-up.
        self._waiting: list[tuple[tuple[Any, np.ndarray, bool, int], asyncio.Future]] = []
        self._waiting_cv = threading.Condition()
        self._apply_batch_config(self.cfg.batch.max_batch_size, self.cfg.batch.batch_wait_timeout_s)
        # Load before the constructor returns: Serve routes traffic to a replica only once it is
        # RUNNING, so a new replica (scale-up, restart after a crash) never answers "not loaded".
        # If the registry is unreachable now, the replica still starts and keeps retrying.
        try:
            from lmrec.serving.runtime import load_model

            self._install(load_model(self.model_uri, self.cfg))
        except Exception as exc:  # noqa: BLE001 (start anyway and retry: /healthz reports it)
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.warning("initial model load failed (%s); retrying in the background", self.load_error)
        loop = asyncio.get_event_loop()
        self._tasks = [
            loop.create_task(self._load_initial()),
            loop.create_task(self._ship_impressions()),
            loop.create_task(self._sync_stats()),
            loop.create_task(self._poll_alias()),
            loop.create_task(self._poll_policy()),
            loop.create_task(self._flush_metrics()),
        ]
        threading.Thread(target=self._forward_thread, args=(loop,), name="lmrec-forward", daemon=True).start()

    # ---- configuration and hot-swap
    def _build_policy(self) -> Any:
        """The policy at start-up: from `policy_uri` when set, else the inline `policy`.

        If the policy cannot be loaded now (registry unreachable, alias not set yet), the
        replica starts with the inline policy, reports `policy_error` on /version and keeps
        retrying in `_poll_policy`, as it does for the model."""
        from lmrec.exploration.policies import PolicyConfig, build_policy

        ec = self.cfg.exploration
        if self.policy_uri:
            try:
                policy, self.policy_version = self._load_policy(self.policy_uri)
                return policy
            except Exception as exc:  # noqa: BLE001 (serve the inline policy and retry)
                self.policy_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "policy load from %s failed (%s); serving the inline policy meanwhile",
                    self.policy_uri,
                    self.policy_error,
                )
        return build_policy(PolicyConfig.from_dict(ec.policy))

    def _load_policy(self, uri: str, state: Any = None) -> tuple[Any, str | None]:
        """(policy, registry version) for `uri`; an alias is resolved first, so that the version
        reported is the one loaded even if the alias moves meanwhile. Plain JSON: never runs code."""
        from lmrec.exploration.artifacts import load_policy_config
        from lmrec.exploration.policies import build_policy

        version = None
        if uri.startswith("models:/"):
            from lmrec.tracking.mlflow_utils import resolve_model_version

            info = resolve_model_version(uri, self.cfg.tracking_uri)
            version = str(info["version"])
            uri = f"models:/{info['name']}/{version}"
        return build_policy(load_policy_config(uri, self.cfg.tracking_uri), state), version

    async def _poll_policy(self) -> None:
        """Follow `policy_uri`: retry a failed load, and when a `models:/name@alias` policy alias
        moves, load the version it points at and swap it in (the item statistics are kept)."""
        if self.cfg.alias_poll_s <= 0:
            return
        while True:
            await asyncio.sleep(self.cfg.alias_poll_s)
            await self._refresh_policy()

    async def _refresh_policy(self, force: bool = False) -> None:
        """Load `policy_uri` if it failed before, its alias moved, or `force`; else do nothing."""
        from lmrec.tracking.mlflow_utils import resolve_model_version

        uri = self.policy_uri
        if not uri or (not force and self.policy_error is None and "@" not in uri):
            return  # nothing to follow: a fixed reference that is loaded
        loop = asyncio.get_event_loop()
        try:
            if not force and self.policy_error is None:
                info = await loop.run_in_executor(None, resolve_model_version, uri, self.cfg.tracking_uri)
                if str(info.get("version")) == str(self.policy_version):
                    return
            policy, version = await loop.run_in_executor(None, self._load_policy, uri, self.policy.state)
        except Exception as exc:  # noqa: BLE001 (registry briefly unreachable: keep the current policy)
            self.policy_error = f"{type(exc).__name__}: {exc}"
            log.warning("policy refresh from %s failed: %s", uri, self.policy_error)
            return
        if uri == self.policy_uri:
            old = self.policy.config.type
            self.policy, self.policy_version, self.policy_error = policy, version, None  # atomic swap
            log.info("policy %s (version %s) now serving, was %s", policy.config.type, version, old)

    def _apply_batch_config(self, size: int, wait: float) -> None:
        self._rank_batch.set_max_batch_size(size)
        self._rank_batch.set_batch_wait_timeout_s(wait)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """user_config: {max_batch_size, batch_wait_timeout_s, model_uri, policy, policy_uri}; applied live."""
        batch = user_config.get("batch", {}) | {
            k: user_config[k] for k in ("max_batch_size", "batch_wait_timeout_s") if k in user_config
        }
        if batch:
            from lmrec.serving.config import BatchConfig

            bc = from_dict(BatchConfig, {**to_dict(self.cfg.batch), **batch})
            self.cfg.batch = bc
            self._apply_batch_config(bc.max_batch_size, bc.batch_wait_timeout_s)
        if "policy" in user_config:
            from lmrec.exploration.policies import PolicyConfig, build_policy

            state = self.policy.state
            self.policy = build_policy(PolicyConfig.from_dict(user_config["policy"]), state)
            self.policy_uri, self.policy_version, self.policy_error = None, None, None  # an inline policy wins
        if user_config.get("policy_uri") and user_config["policy_uri"] != self.policy_uri:
            self.policy_uri = str(user_config["policy_uri"])
            asyncio.get_event_loop().create_task(self._refresh_policy(force=True))
        uri = user_config.get("model_uri")
        if uri and uri != self.model_uri:
            self.model_uri = uri
            if self.loaded is not None:  # initial load picks up the new URI by itself
                asyncio.get_event_loop().create_task(self._swap_to(uri))

    async def _load(self, uri: str) -> Any:
        from lmrec.serving.runtime import load_model

        return await asyncio.get_event_loop().run_in_executor(None, load_model, uri, self.cfg)

    async def _load_initial(self) -> None:
        delay = 1.0
        while self.loaded is None:
            uri = self.model_uri
            try:
                loaded = await self._load(uri)
                if uri == self.model_uri:
                    self._install(loaded)
                    return
            except Exception as exc:  # noqa: BLE001 (keep retrying; /healthz reports it)
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.warning("model load failed (%s); retrying in %.0fs", self.load_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _install(self, loaded: Any) -> None:
        old = self.loaded
        self.loaded = loaded  # atomic: requests already holding `old` finish with it
        self.load_error = None
        self.cache.clear()  # keys carry the version anyway; free the memory
        try:
            num = float(str(loaded.info.get("version") or 0))
        except ValueError:
            num = 0.0
        if old is not None and old.version != loaded.version:  # the old series reads 0, not a stale version
            self._m_version.set(0.0, tags={"replica": self.replica, "model": old.version})
        self._version_value = (num, loaded.version)
        self._m_version.set(num, tags={"replica": self.replica, "model": loaded.version})
        log.info("serving %s (was %s)", loaded.version, old.version if old else None)

    async def _swap_to(self, uri: str) -> None:
        async with self._swap_lock:
            try:
                loaded = await self._load(uri)  # old version keeps serving meanwhile
            except Exception as exc:  # noqa: BLE001 (the old version keeps serving)
                self.load_error = f"hot-swap to {uri} failed: {exc}"
                log.warning(self.load_error)
                return
            if uri == self.model_uri:
                self._install(loaded)

    async def _poll_alias(self) -> None:
        """Follow `models:/name@alias`: when the alias moves, load the new version and swap."""
        if self.cfg.alias_poll_s <= 0:
            return
        from lmrec.tracking.mlflow_utils import resolve_model_version

        loop = asyncio.get_event_loop()
        while True:
            await asyncio.sleep(self.cfg.alias_poll_s)
            uri, cur = self.model_uri, self.loaded
            if cur is None or "@" not in uri or self._swap_lock.locked():
                continue
            try:
                info = await loop.run_in_executor(None, resolve_model_version, uri, self.cfg.tracking_uri)
            except Exception as exc:  # noqa: BLE001 (registry briefly unreachable)
                log.warning("alias poll failed: %s", exc)
                continue
            if str(info.get("version")) != str(cur.info.get("version")):
                await self._swap_to(uri)

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self._version_value is not None:
            # Re-set every flush: a gauge set only at load time was seen to vanish from the Prometheus
            # endpoint after other apps' replicas on the cluster had stopped (tests/integration/test_metrics.py).
            num, version = self._version_value
            self._m_version.set(num, tags={"replica": self.replica, "model": version})
        counts, self._counts = self._counts, collections.Counter()
        for (name, *tags), n in counts.items():
            if name == "cache":
                self._m_cache.inc(n, tags={"result": tags[0]})
            else:
                self._m_explore.inc(n, tags={"explored": tags[0], "policy": tags[1]})
        if counts:
            self._m_hit_ratio.set(self.cache.hit_ratio, tags={"replica": self.replica})
            if self._slates:
                self._m_explore_rate.set(self._explored / self._slates, tags={"replica": self.replica})

    async def _ship_impressions(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.feedback.impression_ship_s)
            if not await self.ship_impressions():
                await asyncio.sleep(0.5)  # the log replica may be restarting

    async def ship_impressions(self, timeout_s: float | None = None) -> bool:
        """Send the buffered impressions to the FeedbackLog; on failure they stay buffered."""
        if not self._impressions:
            return True
        batch, self._impressions = self._impressions, []
        try:
            await asyncio.wait_for(self.feedback_log.add_impressions.remote(batch), timeout_s)
            return True
        except Exception as exc:  # noqa: BLE001 (re-queue, keeping the order)
            self._impressions = batch + self._impressions
            log.warning("impression shipping failed (%d buffered): %s", len(self._impressions), exc)
            return False

    async def flush(self) -> dict[str, Any]:
        """Ship buffered impressions and hand per-request counts to the metrics now."""
        self.flush_metrics()
        shipped = await self.ship_impressions()
        return {"replica": self.replica, "shipped": shipped, "buffered_impressions": len(self._impressions)}

    async def shutdown(self) -> None:
        """Called from the replica's `__del__`, which Serve's graceful shutdown (scale-down,
        redeploy, delete) awaits once the replica's requests have drained: the last impressions
        (up to `impression_ship_s` of them) and the last second's metric counts would otherwise
        go with the process."""
        self.flush_metrics()
        if not await self.ship_impressions(SHUTDOWN_SHIP_TIMEOUT_S) and self._impressions:
            log.error(
                "replica stopping: %d impressions could not reach the FeedbackLog and are lost", len(self._impressions)
            )

    async def _sync_stats(self) -> None:
        from lmrec.exploration.policies import PolicyState

        while True:
            await asyncio.sleep(self.cfg.exploration.stats_sync_s)
            try:
                state = await self.feedback_log.policy_state.remote()
                self.policy.set_state(PolicyState.from_dict(state), keep_delta=False)
            except Exception as exc:  # noqa: BLE001 (log replica restarting: retried next tick)
                log.warning("stats sync failed: %s", exc)

    # ---- ranking
    # Two stages. `@serve.batch` groups requests that arrive within `batch_wait_timeout_s` into
    # micro-batches and returns at once a future per request. One forward thread runs the model:
    # each forward takes every micro-batch waiting (up to `max_batch_size` rows), so that while
    # one forward runs the next one grows, and forwards follow each other without waiting for
    # the event loop. Why not the forward inside the batch handler: Serve cuts the next batch
    # while the last one runs (the handler's concurrency semaphore is taken after the cut), so
    # under load batches were cut by the wait timeout: 6 rows per forward at 64 clients on 2 CPU
    # cores. Why a thread and not an asyncio task around run_in_executor: the task's next turn
    # waits behind every request callback queued on the loop (docs/benchmarks.md, Serving).
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _rank_batch(self, items: list[tuple[Any, np.ndarray, bool, int]]) -> list[asyncio.Future]:
        loop = asyncio.get_event_loop()
        futures = [loop.create_future() for _ in items]
        with self._waiting_cv:
            self._waiting.extend(zip(items, futures))
            self._waiting_cv.notify()
        return futures

    def _forward_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        while not loop.is_closed():
            with self._waiting_cv:
                while not self._waiting:
                    self._waiting_cv.wait()
                take = min(len(self._waiting), self.cfg.batch.max_batch_size)
                batch, self._waiting = self._waiting[:take], self._waiting[take:]
            try:
                done, forward_ms = self._forward(batch)
            except Exception as exc:  # noqa: BLE001 - fail these requests, keep the thread alive
                done, forward_ms = [(fut, None, exc) for _, fut in batch], []
            try:
                loop.call_soon_threadsafe(self._deliver, len(batch), done, forward_ms)
            except RuntimeError:  # the loop closed: the replica is shutting down
                return

    def _forward(
        self, batch: list[tuple[tuple[Any, np.ndarray, bool, int], asyncio.Future]]
    ) -> tuple[list[tuple], list[float]]:
        """Rank one merged batch (split by model version: a swap can straddle it).

        Returns (future, result, error) per request and the wall time (ms) of each forward."""
        by_model: dict[int, list[int]] = {}
        for i, ((loaded, _, _, _), _) in enumerate(batch):
            by_model.setdefault(id(loaded), []).append(i)
        done: list[tuple] = []
        forward_ms: list[float] = []
        for idxs in by_model.values():
            loaded = batch[idxs[0]][0][0]
            n = max(batch[i][0][3] for i in idxs)
            t0 = time.perf_counter()
            try:
                cand, scores = loaded.rank(
                    [batch[i][0][1] for i in idxs],
                    n,
                    [batch[i][0][2] for i in idxs],
                    self.cfg.batch.forward_rows(loaded.device.type),
                )
            except Exception as exc:  # noqa: BLE001 - these requests fail; others in the batch may not
                done.extend((batch[i][1], None, exc) for i in idxs)
                continue
            forward_ms.append((time.perf_counter() - t0) * 1000)
            for j, i in enumerate(idxs):
                k = batch[i][0][3]
                done.append((batch[i][1], (cand[j, :k], scores[j, :k]), None))
        return done, forward_ms

    def _deliver(self, rows: int, done: list[tuple], forward_ms: list[float]) -> None:
        """On the event loop: metrics, then the results to the waiting requests."""
        self._m_batch.observe(rows)
        for ms in forward_ms:
            self._m_forward.observe(ms, tags={"replica": self.replica})
        for fut, result, error in done:
            if fut.done():  # its client may have gone
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    def _context(self, loaded: Any, req: dict[str, Any]) -> tuple[np.ndarray, str]:
        from lmrec.serving.runtime import RequestError, history_key

        if req.get("history") is not None:
            hist = req["history"]
            if len(hist) > self.cfg.max_history:
                raise RequestError(422, f"history has {len(hist)} items; the limit is {self.cfg.max_history}")
            return loaded.to_idx(hist), history_key(None, hist)
        if loaded.histories is None:
            raise RequestError(404, "user histories are not available for this model; send 'history' instead")
        h = loaded.histories.get(int(req["user_id"]))
        if h is None:
            raise RequestError(404, f"unknown user_id {req['user_id']}")
        return h, history_key(int(req["user_id"]), None)

    async def recommend(self, req: dict[str, Any]) -> dict[str, Any]:
        from lmrec.serving.runtime import RequestError

        loaded = self.loaded
        if loaded is None:
            return {"error": f"model not loaded yet{': ' + self.load_error if self.load_error else ''}", "status": 503}
        k = int(req["k"])
        try:
            limit = min(self.cfg.max_k, loaded.num_items)
            if k > limit:
                raise RequestError(
                    422, f"k={k} is above the limit {limit} (max_k {self.cfg.max_k}, catalog {loaded.num_items})"
                )
            hist, ctx_key = self._context(loaded, req)
            n = max(k, min(self.cfg.exploration.num_candidates, limit))
            exclude = bool(req.get("exclude_seen", True))
            if exclude and loaded.num_items - len(np.unique(hist)) < k:
                raise RequestError(
                    422, f"only {loaded.num_items - len(np.unique(hist))} unseen items; k={k} is too large"
                )
        except RequestError as exc:
            return {"error": str(exc), "status": exc.status}
        key = (ctx_key, exclude, n, loaded.version)
        hit = self.cache.get(key) if self.cfg.cache.enabled else None
        self._counts["cache", "miss" if hit is None else "hit"] += 1
        if hit is None:
            cand_idx, scores = await (await self._rank_batch((loaded, hist, exclude, n)))
            if self.cfg.cache.enabled:
                self.cache.put(key, (cand_idx, scores))
        else:
            cand_idx, scores = hit
        cand = loaded.to_ids(cand_idx)
        request_id = uuid.uuid4().hex
        pol = self.policy  # one policy for the whole request, even if a swap lands meanwhile
        if req.get("explore", True):
            slate = pol.choose(cand, scores, k, key=request_id)
            items, props, idx, policy = slate.items, slate.propensities, slate.indices, pol.config.type
        else:
            idx = np.arange(min(k, len(cand)))
            items, props, policy = cand[idx], np.ones(len(idx)), "greedy"
        explored = not np.array_equal(np.sort(idx), np.arange(len(idx)))
        self._slates += 1
        self._explored += int(explored)
        self._counts["slates", "true" if explored else "false", policy] += 1
        self._impressions.append(
            {
                "request_id": request_id,
                "candidates": cand.tolist(),
                "scores": scores.tolist(),
                "slate": items.tolist(),
                "propensities": [float(p) for p in props],
                "policy": policy,
                "policy_params": pol.config.to_dict() if policy != "greedy" else {"type": "greedy"},
                "user_id": None if req.get("user_id") is None else str(req["user_id"]),
                "model_version": loaded.version,
            }
        )
        return {
            "request_id": request_id,
            "items": items.tolist(),
            "scores": scores[idx].astype(float).tolist(),
            "propensities": [float(p) for p in props],
            "model_version": loaded.version,
            "policy": policy,
            "explored": explored,
            "cached": hit is not None,
        }

    async def status(self) -> dict[str, Any]:
        loaded = self.loaded
        return {
            "ready": loaded is not None,
            "load_error": self.load_error,
            "model_uri": self.model_uri,
            "model_version": loaded.version if loaded else None,
            "run_id": loaded.info.get("run_id") if loaded else None,
            "dataset": loaded.info.get("dataset") if loaded else None,
            "num_items": loaded.num_items if loaded else None,
            "precision": loaded.dtype if loaded else None,
            "device": str(loaded.device) if loaded else None,
            "forward": loaded.forward if loaded else None,
            "last_position_only": loaded.last_position_only if loaded else None,
            "loaded_at": loaded.loaded_at if loaded else None,
            "policy": self.policy.config.to_dict(),
            "policy_uri": self.policy_uri,
            "policy_version": self.policy_version,
            "policy_error": self.policy_error,
            "replica": self.replica,
            "cache_entries": len(self.cache),
            "cache_hit_ratio": self.cache.hit_ratio,
            "batch": to_dict(self.cfg.batch),
        }


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
class Ranker(RankerCore):
    """The model deployment of the `split` topology, called by the Ingress through a handle."""

    async def __del__(self) -> None:  # Serve's graceful shutdown awaits it
        await self.shutdown()


# ---------------------------------------------------------------- Ingress


@serve.deployment(max_ongoing_requests=512, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(API)
class Ingress:
    """HTTP front: validation, API key, error mapping (4xx for client errors), latency metrics.

    `ranker` is the Ranker deployment's handle (topology `split`), or None (topology
    `fused`): then this replica holds the model itself and ranks in-process.
    """

    def __init__(self, cfg: dict[str, Any], ranker: Any, feedback_log: Any) -> None:
        from ray.util import metrics

        self.cfg = from_dict(ServeConfig, cfg)
        self.ranker = ranker
        self.core = RankerCore(cfg, feedback_log) if ranker is None else None
        self.feedback_log = feedback_log
        self.api_key = _read_api_key(self.cfg)
        self.api_key_header = self.cfg.api_key_header.lower().encode("latin-1")
        self._latency = metrics.Histogram(
            "lmrec_serve_request_latency_ms",
            description="end-to-end handler latency",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
            tag_keys=("endpoint", "status"),
        )
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
        return await _call_upstream(getattr(self.ranker, method), retry_s, *args)

    def _key_ok(self, got: str | None) -> bool:
        return self.api_key is None or hmac.compare_digest((got or "").encode(), self.api_key.encode())

    def _check_key(self, request: Request) -> JSONResponse | None:
        if self._key_ok(request.headers.get(self.cfg.api_key_header)):
            return None
        return _error(401, f"missing or invalid {self.cfg.api_key_header} header")

    def observe(self, endpoint: str, status: int, t0: float) -> None:
        self._latency.observe((time.perf_counter() - t0) * 1000, tags={"endpoint": endpoint, "status": str(status)})

    @API.post(
        "/recommend",
        response_model=RecommendResponse,
        responses={
            401: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
    )
    async def recommend(self, body: RecommendRequest, request: Request) -> Any:
        status, content = await self.recommend_handler(
            request.headers.get(self.cfg.api_key_header), body, time.perf_counter()
        )
        return content if status == 200 else JSONResponse(status_code=status, content=content)

    async def recommend_handler(
        self, api_key: str | None, body: RecommendRequest, t0: float
    ) -> tuple[int, dict[str, Any]]:
        """/recommend for the FastAPI route and the fast path alike: (status, JSON body)."""
        if not self._key_ok(api_key):
            self.observe("recommend", 401, t0)
            return 401, _error_body(f"missing or invalid {self.cfg.api_key_header} header")
        if body.history is not None and len(body.history) > self.cfg.max_history:
            self.observe("recommend", 422, t0)
            return 422, _error_body(f"history has {len(body.history)} items; the limit is {self.cfg.max_history}")
        result = await self._ranker_call("recommend", self.cfg.upstream_retry_s, body.model_dump())
        status = int(result.pop("status", 200)) if "error" in result else 200
        self.observe("recommend", status, t0)
        return (200, result) if status == 200 else (status, _error_body(result["error"]))

    @API.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={
            401: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            409: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
    )
    async def feedback(self, body: FeedbackRequest, request: Request) -> Any:
        t0 = time.perf_counter()
        denied = self._check_key(request)
        if denied is not None:
            self.observe("feedback", 401, t0)
            return denied
        result = await _call_upstream(
            self.feedback_log.feedback, self.cfg.upstream_retry_s, body.request_id, body.item_id, body.reward
        )
        status = int(result.pop("status", 200)) if "error" in result else 200
        self.observe("feedback", status, t0)
        return _error(status, result["error"]) if status != 200 else result

    @API.get("/healthz")
    async def healthz(self) -> Any:
        st = await self._ranker_call("status", 0.0)
        if "error" in st:
            return _error(503, st["error"])
        if not st["ready"]:
            return _error(503, "model not loaded", st.get("load_error"))
        return {"status": "ok", "model_version": st["model_version"]}

    @API.get("/version", response_model=VersionResponse)
    async def version(self) -> Any:
        st = await self._ranker_call("status", self.cfg.upstream_retry_s)
        if "error" in st:
            return _error(503, st["error"])
        return {**{k: st.get(k) for k in VersionResponse.model_fields if k in st}, "lmrec_version": lmrec.__version__}


def build_app(args: dict[str, Any]) -> Application:
    """Validate `args` (ServeConfig keys; errors name the key) and bind the deployments.

    Topology `split`: Ingress -> Ranker -> FeedbackLog. Topology `fused`: the Ingress
    ranks in-process (Ingress -> FeedbackLog), one hop fewer per request; its replicas
    take the Ranker's defaults (1 CPU, user_config for batching and hot-swap).
    """
    cfg = from_dict(ServeConfig, dict(args or {}))
    if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
        # Fail at build time, before anything is deployed, when the secret is missing.
        raise ValueError(f"api_key_env: environment variable {cfg.api_key_env!r} is not set")
    plain = to_dict(cfg)
    opts = cfg.deployments
    feedback_log = FeedbackLog.options(**opts.get("FeedbackLog", {})).bind(plain)
    user_config = {"max_batch_size": cfg.batch.max_batch_size, "batch_wait_timeout_s": cfg.batch.batch_wait_timeout_s}
    if cfg.topology == "fused":
        fused = {"max_ongoing_requests": 256, "ray_actor_options": {"num_cpus": 1}, **opts.get("Ingress", {})}
        return Ingress.options(user_config=user_config, **fused).bind(plain, None, feedback_log)
    ranker = Ranker.options(user_config=user_config, **opts.get("Ranker", {})).bind(plain, feedback_log)
    return Ingress.options(**opts.get("Ingress", {})).bind(plain, ranker, feedback_log)
