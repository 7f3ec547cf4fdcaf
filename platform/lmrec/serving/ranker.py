"""RankerCore: ranks with the current model version, explores, hot-swaps versions (Ray-free).

The app runs it as the `Ranker` deployment (topology `split`) or inside the `Ingress` replica
(topology `fused`), with `ray.util.metrics`, the FeedbackLog shards' handles (behind a
lmrec.serving.shards.ImpressionShipper) and `@serve.batch` injected (lmrec.serving.app).
Unit tests run it in-process with `InMemoryMetrics`, a `FeedbackLogCore` and `SingleBatch`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lmrec.config import from_dict, to_dict
from lmrec.serving import metrics as m
from lmrec.serving.batcher import ForwardBatcher, MicroBatcher, SingleBatch, Submit
from lmrec.serving.cache import TTLCache
from lmrec.serving.catalog_sync import CatalogUpdates
from lmrec.serving.config import BatchConfig, ServeConfig
from lmrec.serving.metrics import MetricsSink
from lmrec.serving.policy_source import PolicySource
from lmrec.serving.shards import FeedbackClient, ImpressionShipper

if TYPE_CHECKING:  # runtime imports torch: a split topology's Ingress replicas never load it
    from lmrec.serving.runtime import LoadedModel

log = logging.getLogger("ray.serve")  # a logger name only: in a replica, Serve writes it to the replica's log
METRICS_FLUSH_S = 1.0  # per-request counters reach the metrics sink this often
SHUTDOWN_SHIP_TIMEOUT_S = 5.0  # a stopping replica waits this long for the FeedbackLog to take its last impressions

RankItem = tuple["LoadedModel", np.ndarray, bool, int]  # (model, history in item_idx, exclude_seen, n)


class RankerCore(CatalogUpdates):
    """Ranks with the current model version; explores; hot-swaps versions in the background.

    Must be built on a running event loop: it loads the model, then starts its background tasks
    (initial-load retry, impression shipping, statistics sync, alias, catalog and policy polling,
    metric flushes) and the forward thread. Catalog updates of fused models: `CatalogUpdates`."""

    def __init__(
        self,
        cfg: dict[str, Any],
        feedback_logs: Sequence[FeedbackClient],
        metrics: MetricsSink,
        replica: str,
        micro_batcher: Callable[[Submit], MicroBatcher] = SingleBatch,
    ) -> None:
        self.cfg = from_dict(ServeConfig, cfg)
        self.shipper = ImpressionShipper(feedback_logs)  # index i: shard i of the feedback log
        self.metrics = metrics
        self.replica = replica
        self.loaded: LoadedModel | None = None  # replaced atomically on swap
        self.load_error: str | None = None
        self.model_uri = self.cfg.model_uri
        self.cache = TTLCache(self.cfg.cache.max_entries, self.cfg.cache.ttl_s)
        self.policies = PolicySource(self.cfg)
        self._swap_lock = asyncio.Lock()
        self._slates = 0
        self._explored = 0
        # Per-request counts are summed here and handed to the metrics sink once a second by
        # `_flush_metrics` (Ray exports every few seconds anyway): four metric calls fewer per request.
        self._counts: collections.Counter = collections.Counter()
        self._version_value: tuple[float, str] | None = None  # (version number, label) of the model served
        loop = asyncio.get_event_loop()
        self._forwards = ForwardBatcher(self._forward, lambda: self.cfg.batch.max_batch_size, self._on_forward, loop)
        self._batcher = micro_batcher(self._forwards.submit)
        self._batcher.configure(self.cfg.batch.max_batch_size, self.cfg.batch.batch_wait_timeout_s)
        # Load before the constructor returns: Serve routes traffic to a replica only once it is
        # RUNNING, so a new replica (scale-up, restart after a crash) never answers "not loaded".
        # If the registry is unreachable now, the replica still starts and keeps retrying.
        try:
            from lmrec.serving.runtime import load_model

            self._install(load_model(self.model_uri, self.cfg))
        except Exception as exc:  # noqa: BLE001 (start anyway and retry: /healthz reports it)
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.warning("initial model load failed (%s); retrying in the background", self.load_error)
        self._tasks = [
            loop.create_task(self._load_initial()),
            loop.create_task(self.shipper.run(self.cfg.feedback.impression_ship_s)),
            loop.create_task(self._sync_stats()),
            loop.create_task(self._poll_alias()),
            loop.create_task(self._poll_catalog()),
            loop.create_task(self.policies.poll()),
            loop.create_task(self._flush_metrics()),
        ]

    # ---- configuration and hot-swap
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """user_config: {max_batch_size, batch_wait_timeout_s, model_uri, policy, policy_uri}; applied live."""
        batch = user_config.get("batch", {}) | {
            k: user_config[k] for k in ("max_batch_size", "batch_wait_timeout_s") if k in user_config
        }
        if batch:
            bc = from_dict(BatchConfig, {**to_dict(self.cfg.batch), **batch})
            self.cfg.batch = bc
            self._batcher.configure(bc.max_batch_size, bc.batch_wait_timeout_s)
        self.policies.reconfigure(user_config)
        uri = user_config.get("model_uri")
        if uri and uri != self.model_uri:
            self.model_uri = uri
            if self.loaded is not None:  # initial load picks up the new URI by itself
                asyncio.get_event_loop().create_task(self._swap_to(uri))

    async def _load(self, uri: str) -> LoadedModel:
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

    def _install(self, loaded: LoadedModel) -> None:
        old = self.loaded
        self.loaded = loaded  # atomic: requests already holding `old` finish with it
        self.load_error = None
        self.cache.clear()  # keys carry the version anyway; free the memory
        try:
            num = float(str(loaded.info.get("version") or 0))
        except ValueError:
            num = 0.0
        if old is not None and old.version != loaded.version:  # the old series reads 0, not a stale version
            self.metrics.record(m.MODEL_VERSION, 0.0, {"replica": self.replica, "model": old.version})
        self._version_value = (num, loaded.version)
        self.metrics.record(m.MODEL_VERSION, num, {"replica": self.replica, "model": loaded.version})
        cat = loaded.catalog
        catalog = f" with catalog version {cat.version} (+{len(cat.added)} items)" if cat is not None else ""
        log.info("serving %s%s (was %s)", loaded.version, catalog, old.version if old else None)

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

    # ---- metrics, impressions, statistics
    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self._version_value is not None:
            # Re-set every flush: a gauge set only at load time vanishes from the Prometheus endpoint
            # once other apps' replicas on the cluster stop (tests/integration/test_metrics.py).
            num, version = self._version_value
            self.metrics.record(m.MODEL_VERSION, num, {"replica": self.replica, "model": version})
        counts, self._counts = self._counts, collections.Counter()
        for (name, *tags), n in counts.items():
            if name == "cache":
                self.metrics.record(m.CACHE_REQUESTS, n, {"result": tags[0]})
            else:
                self.metrics.record(m.SLATES, n, {"explored": tags[0], "policy": tags[1]})
        if counts:
            self.metrics.record(m.CACHE_HIT_RATIO, self.cache.hit_ratio, {"replica": self.replica})
            if self._slates:
                self.metrics.record(m.EXPLORATION_RATE, self._explored / self._slates, {"replica": self.replica})

    async def flush(self) -> dict[str, Any]:
        """Ship buffered impressions and hand per-request counts to the metrics now."""
        self.flush_metrics()
        shipped = await self.shipper.ship()
        return {"replica": self.replica, "shipped": shipped, "buffered_impressions": self.shipper.pending}

    async def shutdown(self) -> None:
        """Called from the replica's `__del__`, which Serve's graceful shutdown (scale-down,
        redeploy, delete) awaits once the replica's requests have drained: the last impressions
        (up to `impression_ship_s` of them) and the last second's metric counts would otherwise
        go with the process."""
        self.flush_metrics()
        if not await self.shipper.ship(SHUTDOWN_SHIP_TIMEOUT_S) and self.shipper.pending:
            log.error(
                "replica stopping: %d impressions could not reach the FeedbackLog and are lost", self.shipper.pending
            )

    def close(self) -> None:
        """Stop the background tasks and the forward thread (an in-process owner's cleanup)."""
        for task in self._tasks:
            task.cancel()
        self._forwards.close()

    async def _sync_stats(self) -> None:
        from lmrec.exploration.policies import PolicyState

        while True:
            await asyncio.sleep(self.cfg.exploration.stats_sync_s)
            try:
                state = await self.shipper.policy_state()
                self.policies.policy.set_state(PolicyState.from_dict(state), keep_delta=False)
            except Exception as exc:  # noqa: BLE001 (log replica restarting: retried next tick)
                log.warning("stats sync failed: %s", exc)

    # ---- ranking
    def _forward(self, items: list[RankItem]) -> tuple[list[Any], list[float]]:
        """On the forward thread: rank one merged batch, split by model version (a swap can
        straddle it). Returns (cand_idx, scores) or the exception per item, and each forward's ms."""
        by_model: dict[int, list[int]] = {}
        for i, (loaded, _, _, _) in enumerate(items):
            by_model.setdefault(id(loaded), []).append(i)
        results: list[Any] = [None] * len(items)
        forward_ms: list[float] = []
        for idxs in by_model.values():
            loaded = items[idxs[0]][0]
            n = max(items[i][3] for i in idxs)
            t0 = time.perf_counter()
            try:
                cand, scores = loaded.rank(
                    [items[i][1] for i in idxs],
                    n,
                    [items[i][2] for i in idxs],
                    self.cfg.batch.forward_rows(loaded.device.type),
                )
            except Exception as exc:  # noqa: BLE001 - these requests fail; others in the batch may not
                for i in idxs:
                    results[i] = exc
                continue
            forward_ms.append((time.perf_counter() - t0) * 1000)
            for j, i in enumerate(idxs):
                k = items[i][3]
                results[i] = (cand[j, :k], scores[j, :k])
        return results, forward_ms

    def _on_forward(self, rows: int, forward_ms: list[float]) -> None:
        self.metrics.record(m.BATCH_SIZE, rows)
        for ms in forward_ms:
            self.metrics.record(m.FORWARD_MS, ms, {"replica": self.replica})

    def _context(self, loaded: LoadedModel, req: dict[str, Any]) -> tuple[np.ndarray, str]:
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
        key = (ctx_key, exclude, n, loaded.version, loaded.catalog.version if loaded.catalog is not None else 0)
        hit = self.cache.get(key) if self.cfg.cache.enabled else None
        self._counts["cache", "miss" if hit is None else "hit"] += 1
        if hit is None:
            cand_idx, scores = await (await self._batcher.submit((loaded, hist, exclude, n)))
            if self.cfg.cache.enabled:
                self.cache.put(key, (cand_idx, scores))
        else:
            cand_idx, scores = hit
        cand = loaded.to_ids(cand_idx)
        request_id = uuid.uuid4().hex
        pol = self.policies.policy  # one policy for the whole request, even if a swap lands meanwhile
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
        self.shipper.add(
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
            "catalog_version": loaded.catalog.version if loaded and loaded.catalog is not None else None,
            "catalog_items": len(loaded.catalog.added) if loaded and loaded.catalog is not None else None,
            "policy": self.policies.policy.config.to_dict(),
            "policy_uri": self.policies.uri,
            "policy_version": self.policies.version,
            "policy_error": self.policies.error,
            "replica": self.replica,
            "cache_entries": len(self.cache),
            "cache_hit_ratio": self.cache.hit_ratio,
            "batch": to_dict(self.cfg.batch),
        }
