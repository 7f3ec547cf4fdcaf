"""The bandit policies (greedy, UCB, epsilon-greedy, softmax, Thompson) and how one is built from JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmrec.exploration.policies.base import Policy, Stats
from lmrec.exploration.policies.config import POLICY_FORMAT, POLICY_FORMAT_VERSION, PolicyConfig
from lmrec.exploration.policies.marginals import (
    mc_marginals,
    one_hot_marginals,
    quantile_points,
    rank_probabilities,
    topk_order,
)
from lmrec.exploration.policies.state import PolicyState


class _DeterministicPolicy(Policy):
    """Shows the top K of a ranking key; every propensity is 1."""

    def _keys(self, z: np.ndarray, st: Stats) -> np.ndarray:
        raise NotImplementedError

    def _dist(self, z, st, valid, k, rng):
        keys = np.where(valid, self._keys(z, st), -np.inf)
        return one_hot_marginals(topk_order(keys, k), z.shape[1])

    def _sample(self, z, st, k, rng, with_prop):
        idx = topk_order(self._keys(z[None], st.row()), k)[0]
        return idx, (np.ones(k) if with_prop else None)


class GreedyPolicy(_DeterministicPolicy):
    """Pure exploitation: the K highest model scores."""

    type = "greedy"

    def _keys(self, z, st):
        return z


class UCBPolicy(_DeterministicPolicy):
    """Optimism: mean + c * sqrt(log(t + 1) / n); items never shown rank first when c > 0.

    feedback "counts": mean = (w * p + clicks) / (w + n), the model's click
    probability p worth w impressions, pooled with the item's observed clicks.
    feedback "lift": mean = p * (w + clicks) / (w + expected clicks), the user's own
    p scaled by the item's learned lift; c = 0 is greedy with learning.
    """

    type = "ucb"

    def _keys(self, z, st):
        p = self.prior_mean(z)
        if self.config.feedback == "lift":
            shape, rate = self.lift_posterior(st)
            mean = p * shape / rate
        else:
            w = self.config.prior_strength
            mean = (w * p + st.c) / (w + st.n)
        if self.config.ucb_c == 0:
            return mean
        t = max(self.state.total, 1)
        with np.errstate(divide="ignore"):
            bonus = np.where(st.n > 0, self.config.ucb_c * np.sqrt(np.log(t + 1.0) / np.maximum(st.n, 1)), np.inf)
        # Unseen items (bonus inf) are ordered among themselves by their mean.
        return np.where(np.isinf(bonus), 1e6 + mean, mean + bonus)


class EpsilonGreedyPolicy(Policy):
    """With probability epsilon a uniformly random slate, else the greedy one.

    Slate-level mixing gives exact marginals: (1 - eps) * 1[greedy] + eps / N_valid.
    """

    type = "epsilon_greedy"

    def _dist(self, z, st, valid, k, rng):
        eps = self.config.epsilon
        greedy = one_hot_marginals(topk_order(np.where(valid, z, -np.inf), k), z.shape[1])
        uniform = valid[:, None, :] / valid.sum(axis=1)[:, None, None]
        return (1 - eps) * greedy + eps * np.broadcast_to(uniform, greedy.shape)

    def _sample(self, z, st, k, rng, with_prop):
        eps, nc = self.config.epsilon, len(z)
        greedy = topk_order(z[None], k)[0]
        explore = eps > 0 and rng.random() < eps
        idx = rng.permutation(nc)[:k] if explore else greedy
        if not with_prop:
            return idx, None
        return idx, (1 - eps) * (idx == greedy) + eps / nc


class SoftmaxPolicy(Policy):
    """Boltzmann exploration: a Plackett-Luce slate with weights exp(z / temperature).

    Sampled with the Gumbel top-k trick; K = 1 marginals are the softmax itself,
    K > 1 marginals are Monte Carlo (n_sim draws).
    """

    type = "softmax"

    def _dist(self, z, st, valid, k, rng):
        zt = np.where(valid, z / self.config.temperature, -np.inf)
        if k == 1:
            e = np.exp(zt - zt.max(axis=1, keepdims=True))
            return (e / e.sum(axis=1, keepdims=True))[:, None, :]
        return mc_marginals(
            lambda ins, g, size: ins[0] + g.gumbel(size=size),
            [z / self.config.temperature],
            valid,
            k,
            self.config.n_sim,
            rng,
        )

    def _sample(self, z, st, k, rng, with_prop):
        zt = z / self.config.temperature
        idx = topk_order((zt + rng.gumbel(size=z.shape))[None], k)[0]
        if not with_prop:
            return idx, None
        if k == 1:
            e = np.exp(zt - zt.max())
            return idx, (e / e.sum())[idx]
        u = quantile_points(self.config.quad_points)
        x = zt[idx][:, None] - np.log(-np.log(u))[None, :]  # Gumbel quantiles of each shown item's key

        def sf(xx: np.ndarray) -> np.ndarray:  # P(key_l > x) for every candidate l
            return -np.expm1(-np.exp(-(xx[..., None] - zt)))

        return idx, rank_probabilities(idx, x, sf)


class ThompsonPolicy(Policy):
    """Thompson sampling; the model's click probability p is the prior mean.

    feedback "counts" (Beta-Bernoulli): item j's key is a draw from
    Beta(w * p_j + clicks_j, w * (1 - p_j) + impressions_j - clicks_j), w = prior_strength.
    feedback "lift": the key is p_j * lift_j with lift_j ~ Gamma(w + clicks_j, rate w +
    expected_j), so the user's own p is kept and the item's feedback rescales it.
    A slate is the top K of one draw per item; marginals are Monte Carlo over n_sim draws.
    """

    type = "thompson"

    def posterior(self, z: np.ndarray, n: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta) of each candidate's Beta posterior (feedback "counts")."""
        w = self.config.prior_strength
        p = self.prior_mean(z)
        return w * p + c, w * (1 - p) + (n - c)

    def _params(self, z: np.ndarray, st: Stats) -> list[np.ndarray]:
        if self.config.feedback == "lift":
            shape, rate = self.lift_posterior(st)
            return [self.prior_mean(z) / rate, shape]  # key = p * Gamma(shape, 1) / rate
        return list(self.posterior(z, st.n, st.c))

    def _draw(self, params: list[np.ndarray], g: np.random.Generator, size: Any) -> np.ndarray:
        if self.config.feedback == "lift":
            return params[0] * g.standard_gamma(params[1], size=size)
        return g.beta(params[0], params[1], size=size)

    def _dist(self, z, st, valid, k, rng):
        return mc_marginals(self._draw, self._params(z, st), valid, k, self.config.n_sim, rng)

    def _sample(self, z, st, k, rng, with_prop):
        params = self._params(z, st)
        idx = topk_order(self._draw(params, rng, z.shape)[None], k)[0]
        if not with_prop:
            return idx, None
        from scipy import special

        u = quantile_points(self.config.quad_points)
        a, b = params
        if self.config.feedback == "lift":  # key_l = a_l * Gamma(b_l): quantile a * P^-1(b, u), tail Q(b, x / a)
            x = a[idx][:, None] * special.gammaincinv(b[idx][:, None], u[None, :])

            def sf(xx: np.ndarray) -> np.ndarray:
                return special.gammaincc(b, xx[..., None] / a)
        else:
            x = special.betaincinv(a[idx][:, None], b[idx][:, None], u[None, :])  # quantiles of each shown item's draw

            def sf(xx: np.ndarray) -> np.ndarray:
                return special.betainc(b, a, 1.0 - xx[..., None])  # = P(Beta(a, b) > x); faster than betaincc

        return idx, rank_probabilities(idx, x, sf)


_POLICIES: dict[str, type[Policy]] = {
    "greedy": GreedyPolicy,
    "epsilon_greedy": EpsilonGreedyPolicy,
    "softmax": SoftmaxPolicy,
    "ucb": UCBPolicy,
    "thompson": ThompsonPolicy,
}


def build_policy(config: PolicyConfig | Mapping[str, Any], state: PolicyState | None = None) -> Policy:
    """A policy from a config object or a plain dict (validated: bad keys raise ConfigError)."""
    cfg = config if isinstance(config, PolicyConfig) else PolicyConfig.from_dict(config)
    return _POLICIES[cfg.type](cfg, state)


def policy_from_dict(data: Mapping[str, Any]) -> Policy:
    """Inverse of `Policy.to_dict`; also accepts a bare config mapping (no state)."""
    if "config" not in data:
        return build_policy(data)
    if data.get("format", POLICY_FORMAT) != POLICY_FORMAT:
        raise ValueError(f"not an lmrec exploration policy: format {data.get('format')!r}")
    version = int(data.get("format_version", POLICY_FORMAT_VERSION))
    if version > POLICY_FORMAT_VERSION:
        raise ValueError(f"policy format version {version} is newer than this code ({POLICY_FORMAT_VERSION})")
    state = PolicyState.from_dict(data["state"]) if data.get("state") else None
    return build_policy(data["config"], state)


def policy_from_json(text: str) -> Policy:
    return policy_from_dict(json.loads(text))
