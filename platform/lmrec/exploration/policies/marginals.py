"""Marginals P(candidate j shown at position k) of top-K slates: deterministic, Monte Carlo
over random keys, exact rank probabilities by quadrature, and exact Beta top-K marginals."""

from __future__ import annotations

from typing import Any

import numpy as np

_MC_CHUNK_ELEMENTS = 4_000_000  # random draws held in memory at once (32 MB of float64)


def topk_order(keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest keys per row, in descending order; ties -> lower index first."""
    n = keys.shape[-1]
    if k >= n:
        return np.argsort(-keys, axis=-1, kind="stable")[..., :k]
    part = np.argpartition(-keys, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(keys, part, axis=-1)
    # Sort the k winners by (value desc, index asc) so ties break deterministically.
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def one_hot_marginals(order: np.ndarray, n: int) -> np.ndarray:
    """(B, K) deterministic slates -> (B, K, N) marginals of 0/1."""
    b, k = order.shape
    out = np.zeros((b, k, n))
    np.put_along_axis(out, order[:, :, None], 1.0, axis=2)
    return out


def mc_marginals(
    draw: Any, inputs: list[np.ndarray], valid: np.ndarray, k: int, n_sim: int, rng: np.random.Generator
) -> np.ndarray:
    """Monte Carlo (B, K, N) marginals of 'top K of one random draw per candidate'.

    `inputs` are (B, N) parameter arrays; `draw(inputs sliced to (rows, 1, N), rng, size)`
    returns keys of shape `size` = (rows, S, N). Rows with identical inputs are
    simulated once (contexts repeat in logged data).
    """
    b, nc = valid.shape
    stacked = np.concatenate([*inputs, valid], axis=1)
    uniq, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    ins, vu = [a[first] for a in inputs], valid[first]
    counts = np.zeros((len(uniq), k, nc))
    rows_per_chunk = max(1, _MC_CHUNK_ELEMENTS // max(1, n_sim * nc))
    for lo in range(0, len(uniq), rows_per_chunk):
        hi = min(len(uniq), lo + rows_per_chunk)
        sims_per_chunk = max(1, _MC_CHUNK_ELEMENTS // ((hi - lo) * nc))
        done = 0
        while done < n_sim:
            s = min(sims_per_chunk, n_sim - done)
            keys = draw([a[lo:hi, None, :] for a in ins], rng, (hi - lo, s, nc))
            keys = np.where(vu[lo:hi, None, :], keys, -np.inf)
            top = topk_order(keys, k)  # (rows, s, k)
            rows = np.arange(hi - lo)[:, None]
            for pos in range(k):
                flat = (rows * nc + top[:, :, pos]).ravel()
                counts[lo:hi, pos, :] += np.bincount(flat, minlength=(hi - lo) * nc).reshape(hi - lo, nc)
            done += s
    return (counts / n_sim)[inverse.ravel()]


def quantile_points(q: int) -> np.ndarray:
    """Midpoints of q equal-probability bins: a quadrature rule for E[f(X)] = mean f(F^-1(u))."""
    return (np.arange(q) + 0.5) / q


def rank_probabilities(idx: np.ndarray, x: np.ndarray, sf: Any) -> np.ndarray:
    """P(item idx[k] is ranked k-th) when every candidate's key is an independent draw.

    x (K, Q): quantile points of each shown item's key distribution; sf(x) (K, Q, N):
    P(key_l > x) for every candidate l. P(rank k) = E_x[P(exactly k others exceed x)],
    a Poisson-binomial term computed by dynamic programming: exact in the other
    items, quadrature in the item's own key. Used for logged propensities, where
    Monte Carlo noise would bias 1 / propensity upwards.
    """
    k = len(idx)
    s = sf(x)  # (K, Q, N)
    s[np.arange(k), :, idx] = 0.0  # an item does not compete with itself
    dp = np.zeros(x.shape + (k,))
    dp[..., 0] = 1.0
    for j in range(s.shape[2]):
        sl = s[:, :, j : j + 1]
        shifted = np.concatenate([np.zeros(x.shape + (1,)), dp[..., :-1]], axis=-1)
        dp = dp * (1 - sl) + shifted * sl
    probs = dp.mean(axis=1)  # (K, K): row = shown item, column = number of items above it
    return np.clip(probs[np.arange(k), np.arange(k)], 1e-12, 1.0)


def beta_topk_marginals_exact(alpha: np.ndarray, beta: np.ndarray, k: int, points_per_item: int = 400) -> np.ndarray:
    """(N, K) exact P(item j ranks k-th) when item j's key is an independent Beta(alpha_j, beta_j) draw.

    P(j at rank k) = integral of f_j(x) * P(exactly k - 1 other keys exceed x) dx; the
    inner probability is a Poisson-binomial term computed from prefix and suffix
    dynamic programmes (O(G * N * K^2) for G grid points). The grid is the union
    of each item's quantiles, so peaked posteriors are resolved. Used to check
    the Monte Carlo marginals and to evaluate Bernoulli-TS without simulation noise.
    """
    from scipy import special, stats

    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    nc = len(alpha)
    q = np.linspace(0.0, 1.0, points_per_item + 2)[1:-1]
    q = np.concatenate([[1e-12, 1e-9, 1e-6], q, [1 - 1e-6, 1 - 1e-9, 1 - 1e-12]])
    grid = np.unique(np.clip(stats.beta.ppf(q[None, :], alpha[:, None], beta[:, None]).ravel(), 0.0, 1.0))
    grid = np.unique(np.concatenate([[0.0, 1.0], grid]))
    # Densities via log-space (stable for large alpha, beta); survival via the regularised incomplete beta.
    with np.errstate(divide="ignore", invalid="ignore"):
        logpdf = (
            (alpha - 1) * np.log(grid[:, None]) + (beta - 1) * np.log1p(-grid[:, None]) - special.betaln(alpha, beta)
        )
    pdf = np.nan_to_num(np.exp(logpdf), nan=0.0, posinf=0.0)
    sf = special.betainc(beta, alpha, 1.0 - grid[:, None])  # (G, N) P(key_j > x) by I_{1-x}(b, a) = 1 - I_x(a, b)
    g = len(grid)
    # prefix[j]: distribution of #exceeders among items < j (truncated to K terms); suffix likewise.
    prefix = np.zeros((nc + 1, g, k))
    prefix[0, :, 0] = 1.0
    for j in range(nc):
        s = sf[:, j : j + 1]
        prefix[j + 1] = prefix[j] * (1 - s)
        prefix[j + 1, :, 1:] += prefix[j, :, :-1] * s
    suffix = np.zeros((nc + 1, g, k))
    suffix[nc, :, 0] = 1.0
    for j in range(nc - 1, -1, -1):
        s = sf[:, j : j + 1]
        suffix[j] = suffix[j + 1] * (1 - s)
        suffix[j, :, 1:] += suffix[j + 1, :, :-1] * s
    out = np.zeros((nc, k))
    for j in range(nc):
        # P(exactly m others exceed x) = sum_a prefix_a * suffix_{m-a}
        others = np.zeros((g, k))
        for m in range(k):
            others[:, m] = (prefix[j, :, : m + 1] * suffix[j + 1, :, m::-1]).sum(axis=1)
        out[j] = np.trapezoid(pdf[:, j : j + 1] * others, grid, axis=0)
    return out / out.sum(axis=0, keepdims=True)  # remove quadrature error (columns are distributions)
