"""Exploration policies over a model's top-N candidates: greedy, epsilon-greedy,
softmax (Boltzmann), UCB and Thompson sampling (Beta-Bernoulli, model score as prior).

A policy maps the scores of one request's N candidates to a slate of K items and
the propensity of each shown item: the marginal probability that this item is
shown at this position given the scores and the policy state (what position-wise
IPS needs, the same definition as the Open Bandit Dataset's `propensity_score`).

Marginals are exact where a closed form exists (greedy, UCB, epsilon-greedy,
softmax with K = 1). For softmax with K > 1 and Thompson, `action_dist` (what an
evaluation needs, where noise averages out) is Monte Carlo, while the propensity
logged with a served slate (which estimators divide by, where Monte Carlo noise
would bias 1/p upwards) is computed deterministically: exact over the other
candidates, quadrature over the shown item's own random key. Every computation
is vectorised over a batch of requests.

State is per-item impressions and clicks (`PolicyState`), updated from feedback,
serialised to JSON and merged across replicas by addition, which is associative.
No Ray imports here: serving replicas and unit tests run this in-process.

Modules: `config` (PolicyConfig, the JSON format), `state` (mergeable PolicyState),
`base` (the Policy class), `bandits` (the five policies, `build_policy`), `marginals`
(top-K marginals: deterministic, Monte Carlo, quadrature, exact Beta).
"""

from lmrec.exploration.policies.bandits import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    SoftmaxPolicy,
    ThompsonPolicy,
    UCBPolicy,
    build_policy,
    policy_from_dict,
    policy_from_json,
)
from lmrec.exploration.policies.base import Policy, Slate, Stats, stable_key
from lmrec.exploration.policies.config import (
    POLICY_FORMAT,
    POLICY_FORMAT_VERSION,
    POLICY_TYPES,
    PolicyConfig,
    PolicyType,
)
from lmrec.exploration.policies.marginals import beta_topk_marginals_exact
from lmrec.exploration.policies.state import MICRO, PolicyState, feedback_state, merge_states

__all__ = [
    "MICRO",
    "POLICY_FORMAT",
    "POLICY_FORMAT_VERSION",
    "POLICY_TYPES",
    "EpsilonGreedyPolicy",
    "GreedyPolicy",
    "Policy",
    "PolicyConfig",
    "PolicyState",
    "PolicyType",
    "Slate",
    "SoftmaxPolicy",
    "Stats",
    "ThompsonPolicy",
    "UCBPolicy",
    "beta_topk_marginals_exact",
    "build_policy",
    "feedback_state",
    "merge_states",
    "policy_from_dict",
    "policy_from_json",
    "stable_key",
]
