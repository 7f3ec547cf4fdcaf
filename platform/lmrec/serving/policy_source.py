"""Which exploration policy a ranker serves, and following it in the registry (Ray-free).

The policy is the inline `exploration.policy`, or the one `exploration.policy_uri` names (a search
registered it): a `models:/name@alias` is followed, so replicas swap policies when the alias
moves, keeping the item statistics. Until `policy_uri` loads (registry down, alias not set yet),
the inline policy serves and `error` says why (/version reports it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lmrec.serving.config import ServeConfig

log = logging.getLogger("ray.serve")  # a logger name only: in a replica, Serve writes it to the replica's log


class PolicySource:
    """The current policy (`policy`), where it came from (`uri`, `version`) and the last load error."""

    def __init__(self, cfg: ServeConfig) -> None:
        from lmrec.exploration.policies import PolicyConfig, build_policy

        self.cfg = cfg
        self.uri = cfg.exploration.policy_uri
        self.version: str | None = None  # registry version behind a models:/ policy_uri
        self.error: str | None = None
        self.policy: Any = None
        if self.uri:
            try:
                self.policy, self.version = self._load(self.uri)
            except Exception as exc:  # noqa: BLE001 (serve the inline policy and retry)
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "policy load from %s failed (%s); serving the inline policy meanwhile", self.uri, self.error
                )
        if self.policy is None:
            self.policy = build_policy(PolicyConfig.from_dict(cfg.exploration.policy))

    def _load(self, uri: str, state: Any = None) -> tuple[Any, str | None]:
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

    async def poll(self) -> None:
        """Follow `uri`: retry a failed load, and when a `models:/name@alias` policy alias moves,
        load the version it points at and swap it in (the item statistics are kept)."""
        if self.cfg.alias_poll_s <= 0:
            return
        while True:
            await asyncio.sleep(self.cfg.alias_poll_s)
            await self.refresh()

    async def refresh(self, force: bool = False) -> None:
        """Load `uri` if it failed before, its alias moved, or `force`; else do nothing."""
        from lmrec.tracking.mlflow_utils import resolve_model_version

        uri = self.uri
        if not uri or (not force and self.error is None and "@" not in uri):
            return  # nothing to follow: a fixed reference that is loaded
        loop = asyncio.get_event_loop()
        try:
            if not force and self.error is None:
                info = await loop.run_in_executor(None, resolve_model_version, uri, self.cfg.tracking_uri)
                if str(info.get("version")) == str(self.version):
                    return
            policy, version = await loop.run_in_executor(None, self._load, uri, self.policy.state)
        except Exception as exc:  # noqa: BLE001 (registry briefly unreachable: keep the current policy)
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("policy refresh from %s failed: %s", uri, self.error)
            return
        if uri == self.uri:
            old = self.policy.config.type
            self.policy, self.version, self.error = policy, version, None  # atomic swap
            log.info("policy %s (version %s) now serving, was %s", policy.config.type, version, old)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """user_config's `policy` (inline; wins over a URI) and `policy_uri` (loaded in the background)."""
        if "policy" in user_config:
            from lmrec.exploration.policies import PolicyConfig, build_policy

            state = self.policy.state
            self.policy = build_policy(PolicyConfig.from_dict(user_config["policy"]), state)
            self.uri, self.version, self.error = None, None, None  # an inline policy wins
        if user_config.get("policy_uri") and user_config["policy_uri"] != self.uri:
            self.uri = str(user_config["policy_uri"])
            asyncio.get_event_loop().create_task(self.refresh(force=True))
