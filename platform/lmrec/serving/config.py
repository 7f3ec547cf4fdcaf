"""Typed config of the recommendation endpoint (the `args` of `build_app`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lmrec.config import ConfigModel, check, from_dict


class BatchConfig(ConfigModel):
    """`@serve.batch` settings of the ranker; changeable at run time through user_config."""

    max_batch_size: int = 64
    batch_wait_timeout_s: float = 0.005
    # A batch is sorted by history length and run in forwards of at most this many rows, so
    # short histories are not padded to the batch's longest. None: 16 on CPU (where compute
    # grows with padded tokens), the whole batch on GPU; 0: always the whole batch.
    rows_per_forward: int | None = None

    def validate_config(self) -> None:
        check(1 <= self.max_batch_size <= 4096, "max_batch_size", f"must be in [1, 4096], got {self.max_batch_size}")
        check(0 <= self.batch_wait_timeout_s <= 5, "batch_wait_timeout_s", "must be in [0, 5] seconds")
        check(
            self.rows_per_forward is None or self.rows_per_forward >= 0,
            "rows_per_forward",
            "must be >= 0 (0: the whole batch in one forward), or null for the device's default",
        )

    def forward_rows(self, device_type: str) -> int:
        """`rows_per_forward` resolved for a device ("cpu" or "cuda")."""
        if self.rows_per_forward is None:
            return 16 if device_type == "cpu" else 0
        return self.rows_per_forward


class CacheConfig(ConfigModel):
    """Per-replica LRU + TTL cache of ranked candidates, keyed by (user/history, model version)."""

    enabled: bool = True
    max_entries: int = 50_000
    ttl_s: float = 300.0

    def validate_config(self) -> None:
        check(self.max_entries >= 1, "max_entries", "must be >= 1")
        check(self.ttl_s > 0, "ttl_s", "must be > 0")


class ExplorationConfig(ConfigModel):
    """Which policy explores over the model's candidates; JSON-compatible with the Tune search output.

    `policy` is a PolicyConfig mapping (type, epsilon, temperature, ucb_c, ...). `policy_uri`
    loads the best policy a search saved and wins over `policy`: `models:/lmrec-exploration-policy@<alias>`
    (followed: replicas swap when the alias moves, every `alias_poll_s`), `models:/<name>/<version>`,
    `runs:/<search run id>/policy`, a bare run id, or a local `policy.json` / folder. Until it
    loads (registry down), replicas serve `policy` and report `policy_error` on /version.
    """

    policy: dict[str, Any] = Field(default_factory=lambda: {"type": "epsilon_greedy", "epsilon": 0.1})
    policy_uri: str | None = None
    num_candidates: int = 100  # top-N the policy chooses from
    stats_sync_s: float = 1.0  # how often replicas pull merged feedback statistics

    def validate_config(self) -> None:
        check(self.num_candidates >= 1, "num_candidates", "must be >= 1")
        check(self.stats_sync_s > 0, "stats_sync_s", "must be > 0")
        from lmrec.exploration.policies import PolicyConfig

        from_dict(PolicyConfig, self.policy, "policy")  # a ConfigError names the policy key


class FeedbackConfig(ConfigModel):
    """The Parquet impression/feedback log the FeedbackLog deployment owns."""

    log_dir: str | None = None  # None: LMREC_HOME/feedback_logs
    batch_size: int = 512  # impressions per file (a file is written once this many are pending)
    max_delay_s: float = 2.0  # impressions are flushed at least this often
    commit_interval_s: float = 0.02  # feedback group commit: acknowledged after a durable write
    max_impressions: int = 200_000  # impressions kept in memory to join feedback with
    impression_wait_s: float = 0.5  # feedback may race its impression; wait this long before 404
    # Each ranking replica ships its impressions to the FeedbackLog in batches this often (and
    # ships what is left when it stops: scale-down, redeploy). Feedback waits for its impression
    # up to impression_wait_s, so keep this well below that.
    impression_ship_s: float = 0.1
    # The log runs as this many FeedbackLog deployments of one replica each (FeedbackLog,
    # FeedbackLog1, ...); a slate belongs to the shard its request_id hashes to, which logs it,
    # joins its feedback and counts its statistics. More shards: more slates/s, more writers.
    shards: int = 1

    def validate_config(self) -> None:
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.shards >= 1, "shards", "must be >= 1")
        check(self.max_delay_s > 0, "max_delay_s", "must be > 0")
        check(0 < self.commit_interval_s <= 1, "commit_interval_s", "must be in (0, 1] seconds")
        check(self.max_impressions >= 100, "max_impressions", "must be >= 100")
        check(self.impression_wait_s >= 0, "impression_wait_s", "must be >= 0")
        check(self.impression_ship_s > 0, "impression_ship_s", "must be > 0")


class CatalogConfig(ConfigModel):
    """Items added to a fused model's catalog at run time (POST /catalog/items), without retraining.

    Each update is an immutable version file under `dir`/<registered model name>/; every ranking
    replica polls that folder and applies new versions, so on a multi-node cluster `dir` must be
    on storage all nodes share (NFS, a mounted bucket with hard-link support).
    """

    dir: str | None = None  # None: LMREC_HOME/catalogs
    poll_s: float = 2.0  # replicas look for versions other replicas wrote this often; 0 = never
    max_items_per_request: int = 1000

    def validate_config(self) -> None:
        check(self.poll_s >= 0, "poll_s", "must be >= 0 (0: never poll)")
        check(self.max_items_per_request >= 1, "max_items_per_request", "must be >= 1")


class ServeConfig(ConfigModel):
    """Everything the recommender app needs, validated before anything is deployed."""

    model_uri: str = "models:/lmrec-seqrec@champion"
    # split: Ingress (HTTP) -> Ranker (model) -> FeedbackLog, each scaled on its own (GPU rankers,
    # CPU ingress). fused: the Ingress replicas hold the model and rank in-process, one hop fewer
    # per request: faster when the model shares a few CPU cores with HTTP (docs/benchmarks.md).
    topology: Literal["split", "fused"] = "split"
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else SQLite under LMREC_HOME
    alias_poll_s: float = 10.0  # re-resolve `models:/name@alias` this often; 0 = never
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    torch_threads: int = 0  # 0: the replica's CPU allotment
    # The scoring forward: a TorchScript trace (checked against eager at load; releases the GIL
    # for the whole forward) or the eager model. auto: the trace on CPU, falling back to eager if
    # it fails its check; eager on GPU (the trace is untested there).
    forward: Literal["auto", "eager", "torchscript"] = "auto"
    # The last block computes only the last position (the one that is scored), not every
    # position's query, attention output and MLP. Checked against the full forward at load and
    # kept only where it matches (never for int8, whose activation ranges are per tensor).
    last_position_only: bool = True
    # POST /recommend through a plain-ASGI route in front of FastAPI's middleware, routing,
    # dependency and response-model layers (same validation, same responses; docs/serving.md).
    # false: every request goes through the FastAPI route.
    http_fast_path: bool = True
    max_history: int = 200  # longest history accepted in a request (items)
    max_k: int = 100
    data_dir: str | None = None  # where to find the model's dataset for user histories
    batch: BatchConfig = Field(default_factory=BatchConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    api_key_env: str | None = None  # name of an env var holding the API key
    api_key_file: str | None = None  # or a file holding it; either turns the key check on
    api_key_header: str = "X-API-Key"
    # A ranker or feedback-log replica that dies mid-request (node loss, OOM kill) is retried on
    # another (or its restarted) replica for up to this long before the client gets a 503.
    upstream_retry_s: float = 30.0
    # Per-deployment Serve options (num_replicas, autoscaling_config, ray_actor_options,
    # max_ongoing_requests) for Ingress / Ranker / FeedbackLog when deploying from Python;
    # a serve-deploy YAML sets the same under `deployments:`. FeedbackLog's apply to every shard.
    deployments: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def validate_config(self) -> None:
        check(bool(self.model_uri), "model_uri", "must not be empty")
        check(self.alias_poll_s >= 0, "alias_poll_s", "must be >= 0")
        check(self.torch_threads >= 0, "torch_threads", "must be >= 0")
        check(self.max_history >= 1, "max_history", "must be >= 1")
        check(self.max_k >= 1, "max_k", "must be >= 1")
        check(self.exploration.num_candidates >= 1, "exploration.num_candidates", "must be >= 1")
        check(bool(self.api_key_header), "api_key_header", "must not be empty")
        check(self.upstream_retry_s >= 0, "upstream_retry_s", "must be >= 0")
        allowed = {
            "num_replicas",
            "autoscaling_config",
            "ray_actor_options",
            "max_ongoing_requests",
            "graceful_shutdown_timeout_s",
            "health_check_period_s",
        }
        for name, opts in self.deployments.items():
            check(
                name in ("Ingress", "Ranker", "FeedbackLog"),
                f"deployments.{name}",
                "unknown deployment; choose Ingress, Ranker or FeedbackLog",
            )
            check(
                not (name == "Ranker" and self.topology == "fused"),
                f"deployments.{name}",
                "topology 'fused' has no Ranker deployment: the Ingress holds the model, so set its "
                "options (num_gpus, autoscaling_config, ...) under deployments.Ingress",
            )
            bad = sorted(set(opts) - allowed)
            check(not bad, f"deployments.{name}.{bad[0] if bad else ''}", f"unknown option; allowed: {sorted(allowed)}")
            check(
                name != "FeedbackLog" or opts.get("num_replicas", 1) == 1 and "autoscaling_config" not in opts,
                f"deployments.{name}",
                "each feedback-log shard has exactly one replica (it owns its Parquet files); "
                "scale the log with feedback.shards",
            )
