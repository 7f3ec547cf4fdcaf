"""A ranking replica's side of a growing catalog: take an update, follow other replicas' (Ray-free).

`RankerCore` inherits it; the work (validation, encoding, the version files, the grown model) is
lmrec.serving.catalog's, run on an executor thread so the replica keeps answering meanwhile.
Imports torch only when a catalog is used: a split topology's Ingress imports this module too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmrec.serving.config import ServeConfig
    from lmrec.serving.runtime import LoadedModel

log = logging.getLogger("ray.serve")  # a logger name only: in a replica, Serve writes it to the replica's log


class CatalogUpdates:
    """POST /catalog/items and the catalog poll of a replica that holds `loaded` and swaps it under `_swap_lock`."""

    cfg: ServeConfig
    loaded: LoadedModel | None
    load_error: str | None
    _swap_lock: asyncio.Lock

    def _install(self, loaded: LoadedModel) -> None:
        raise NotImplementedError

    async def add_items(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /catalog/items: validate, encode, publish the next catalog version and rank with it.

        Answers once this replica ranks the new items; the others apply the version when they next
        poll the catalog folder (`catalog.poll_s`). Safe to repeat: a retried update whose first try
        was stored answers 409 (its ids are in the catalog), it is never stored twice."""
        from lmrec.serving.catalog import add_items
        from lmrec.serving.runtime import RequestError

        if self.loaded is None:
            return {"error": f"model not loaded yet{': ' + self.load_error if self.load_error else ''}", "status": 503}
        async with self._swap_lock:  # one update, catalog poll or model swap at a time
            loaded = self.loaded
            t0 = time.perf_counter()
            try:
                grown, result = await asyncio.get_event_loop().run_in_executor(
                    None, add_items, loaded, list(body["items"]), self.cfg
                )
            except RequestError as exc:
                return {"error": str(exc), "status": exc.status}
            except Exception as exc:  # noqa: BLE001 (encoder or store unavailable: the client may retry)
                log.warning("catalog update failed: %s: %s", type(exc).__name__, exc)
                return {"error": f"catalog update failed ({type(exc).__name__}: {exc}); retry later", "status": 503}
            self._install(grown)
        return {**result, "applied_s": round(time.perf_counter() - t0, 3)}

    async def _poll_catalog(self) -> None:
        """Apply catalog versions that other replicas published (every `catalog.poll_s`)."""
        if self.cfg.catalog.poll_s <= 0:
            return
        from lmrec.serving.catalog import catch_up

        loop = asyncio.get_event_loop()
        while True:
            await asyncio.sleep(self.cfg.catalog.poll_s)
            cur = self.loaded
            if cur is None or cur.catalog is None or self._swap_lock.locked():
                continue
            async with self._swap_lock:
                if self.loaded is not cur:
                    continue
                try:
                    grown = await loop.run_in_executor(None, catch_up, cur)
                except Exception as exc:  # noqa: BLE001 (a broken or unreachable store: the catalog stays as it is)
                    log.warning("catalog poll failed: %s", exc)
                    continue
                if grown is not None:
                    self._install(grown)
