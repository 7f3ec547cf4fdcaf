"""Exploration and off-policy evaluation (no Ray imports anywhere in this package).

- `policies`: greedy, epsilon-greedy, softmax, UCB and Thompson slates with propensities;
  per-item state that updates, serialises and merges.
- `logs`: the versioned Parquet feedback-log schema, its atomic writer and validation.
- `estimators`: IPS, SNIPS, DM, DR with bootstrap intervals; `reward_model`: our logistic regression.
- `open_bandit`: reward models on the Open Bandit Dataset (ours and the published configuration).
- `log_ope`: evaluate a policy on our own logs; `replay`: the MovieLens replay simulator.
- `objectives`: what the Tune search maximises; `artifacts`: policy JSON in MLflow.
- `simulate`: a synthetic slate bandit with a known click model. The OBD benchmark is `lmrec.benchmarks.ope`.
"""

from lmrec.exploration.estimators import ESTIMATORS, Estimate, OPEData, dm, dr, evaluate, ips, snips
from lmrec.exploration.logs import (
    FEEDBACK_SCHEMA,
    SCHEMA_VERSION,
    FeedbackLogError,
    FeedbackLogWriter,
    FeedbackRecord,
    PropensityError,
    join_rewards,
    read_logs,
    validate_table,
)
from lmrec.exploration.policies import (
    POLICY_TYPES,
    Policy,
    PolicyConfig,
    PolicyState,
    Slate,
    build_policy,
    merge_states,
    policy_from_dict,
    policy_from_json,
)

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "OPEData",
    "dm",
    "dr",
    "evaluate",
    "ips",
    "snips",
    "FEEDBACK_SCHEMA",
    "SCHEMA_VERSION",
    "FeedbackLogError",
    "FeedbackLogWriter",
    "FeedbackRecord",
    "PropensityError",
    "join_rewards",
    "read_logs",
    "validate_table",
    "POLICY_TYPES",
    "Policy",
    "PolicyConfig",
    "PolicyState",
    "Slate",
    "build_policy",
    "merge_states",
    "policy_from_dict",
    "policy_from_json",
]
