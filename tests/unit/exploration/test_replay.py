"""Replay simulator: event construction, no look-ahead, regret bookkeeping, learning from feedback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from lmrec.data.readers import INTERACTIONS
from lmrec.exploration.policies import build_policy
from lmrec.exploration.replay import (
    PopularityScorer,
    ReplayEvents,
    build_replay_events,
    fit_calibration,
    plot_curves,
    run_replay,
)


def interactions(rows: list[tuple[int, int, int, float]]) -> pa.Table:
    u, i, t, r = zip(*rows)
    return pa.table([list(u), list(i), list(t), list(r)], schema=INTERACTIONS)


def test_events_follow_time_and_label_only_future_positives() -> None:
    # user 1 rates items 1..8 at t = 10..80; item 5 rated 5 (click), item 6 rated 2 (no click)
    rows = [(1, it, 10 * it, 5.0 if it != 6 else 2.0) for it in range(1, 9)]
    rows += [(2, it, 5 + 10 * k, 4.0) for k, it in enumerate([1, 2, 3, 9, 10])]  # a second user
    rows += [(3, it, 1000 + it, 3.0) for it in range(11, 31)]  # a later user who widens the catalog
    table = interactions(rows)
    scorer = PopularityScorer(table)  # scores every item the same for everyone
    ev = build_replay_events(
        table, scorer, start_ts=0, end_ts=1000, num_candidates=6, stride=3, horizon=3, min_history=2
    )
    assert list(ev.ts) == sorted(ev.ts)  # replayed in time order
    assert len(ev) == 3  # user 1 (8 interactions) at j = 2 and 5; user 2 (5 interactions) at j = 2
    for e in range(len(ev)):
        u, t = int(ev.users[e]), int(ev.ts[e])
        history = {it for (uu, it, tt, _) in rows if uu == u and tt < t}
        assert not history & set(ev.candidates[e].tolist())  # nothing the user already rated
        future = [(it, r) for (uu, it, tt, r) in rows if uu == u and tt >= t]
        window = {it for it, r in future[:3] if r >= 4}
        clicked = {int(c) for c, k in zip(ev.candidates[e], ev.clicks[e]) if k}
        assert clicked == window & set(ev.candidates[e].tolist())
    assert ev.oracle(2).max() <= 2
    few = build_replay_events(
        table, scorer, start_ts=0, end_ts=1000, num_candidates=26, stride=3, horizon=3, min_history=2
    )
    # 30 items: at j = 2 a user has 28 unseen (kept); user 1 at j = 5 has 25 < 26 (skipped)
    assert sorted(few.ts.tolist()) == [25, 30]


def test_time_window_selects_decision_points() -> None:
    rows = [(1, it, 100 * it, 5.0) for it in range(1, 30)]
    table = interactions(rows)
    ev = build_replay_events(
        table, PopularityScorer(table), start_ts=1000, end_ts=2000, num_candidates=5, stride=1, min_history=1
    )
    assert np.all((ev.ts >= 1000) & (ev.ts < 2000)) and len(ev) == 10


def _misleading_world(n_events: int = 1500, seed: int = 0) -> ReplayEvents:
    """The model ranks 20 candidates in a fixed order, but the true click rates are reversed."""
    rng = np.random.default_rng(seed)
    n = 20
    cands = np.tile(np.arange(n), (n_events, 1))
    scores = np.tile(np.linspace(1.0, 0.0, n), (n_events, 1))
    ctr = np.linspace(0.02, 0.4, n)
    clicks = rng.random((n_events, n)) < ctr
    return ReplayEvents(np.arange(n_events), np.zeros(n_events, dtype=np.int64), cands, scores, clicks)


def test_regret_bookkeeping() -> None:
    ev = _misleading_world(300)
    res = run_replay(ev, build_policy({"type": "greedy", "slate_size": 3}), 3)
    assert np.all(res.rewards <= res.oracle) and np.all(np.diff(res.cum_regret) >= 0)
    np.testing.assert_array_equal(res.rewards, ev.clicks[:, :3].sum(axis=1))  # greedy shows the top 3 every time
    s = res.summary()
    assert s["cum_reward"] + s["cum_regret"] == ev.oracle(3).sum()


def test_learning_from_feedback_beats_a_misleading_model() -> None:
    ev = _misleading_world()
    greedy = run_replay(ev, build_policy({"type": "greedy", "slate_size": 3}), 3).summary()["cum_reward"]
    learned = {}
    for name, cfg in {
        "thompson": {"type": "thompson", "prior_strength": 2.0},
        "ucb": {"type": "ucb", "ucb_c": 0.3, "prior_strength": 2.0},
        "thompson_lift": {"type": "thompson", "prior_strength": 2.0, "feedback": "lift"},
        "ucb_lift": {"type": "ucb", "ucb_c": 0.05, "prior_strength": 2.0, "feedback": "lift"},
    }.items():
        learned[name] = run_replay(ev, build_policy({**cfg, "slate_size": 3, "seed": 1}), 3).summary()["cum_reward"]
    assert all(v > 1.5 * greedy for v in learned.values()), (greedy, learned)
    frozen = run_replay(
        ev, build_policy({"type": "thompson", "prior_strength": 2.0, "slate_size": 3, "seed": 1}), 3, learn=False
    )
    assert frozen.summary()["cum_reward"] < learned["thompson"]  # the gain comes from the updates


def test_intermediate_reports_and_calibration(tmp_path: Path) -> None:
    ev = _misleading_world(400)
    seen: list[tuple[int, float]] = []
    run_replay(
        ev,
        build_policy({"type": "softmax", "slate_size": 2}),
        2,
        report_every=100,
        callback=lambda step, s: seen.append((step, s["events"])),
    )
    assert seen == [(100, 100.0), (200, 200.0), (300, 300.0), (400, 400.0)]
    scale, shift = fit_calibration(ev)
    assert scale > 0  # ranking kept even though the scores are anti-correlated with clicks here
    assert (
        plot_curves({"greedy": run_replay(ev, build_policy({"type": "greedy"}), 2)}, tmp_path / "c.png").stat().st_size
        > 1000
    )
    ev.save(tmp_path / "ev.npz")
    back = ReplayEvents.load(tmp_path / "ev.npz")
    np.testing.assert_array_equal(back.clicks, ev.clicks)


def test_seqrec_scorer_ranks_candidates_by_the_models_own_scores() -> None:
    """The replay path the shipped configs use: a SeqRec model (random weights here) scores each
    decision point's history; candidates are its top-N unseen items, in the model's order."""
    import torch

    from lmrec.data.sequences import left_pad
    from lmrec.exploration.replay import SeqRecScorer
    from lmrec.models import SeqRecModel, build_config, init_weights_

    vocab = [10 * (i + 1) for i in range(40)]  # original item ids 10, 20, ..., 400 <-> model indices 1..40
    model = SeqRecModel(build_config("tiny", len(vocab), dropout=0.0, max_seq_len=16))
    init_weights_(model, seed=3)
    model.eval()
    scorer = SeqRecScorer(model, vocab, max_len=16)

    history = np.array([30, 999, 70, 10])  # 999 is unknown to the model: dropped from its input
    got = scorer([history])
    with torch.no_grad():
        want = model(torch.from_numpy(left_pad([np.array([3, 7, 1])], 16))).float().numpy()[:, 1:]  # untrimmed padding
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (1, len(vocab)) and not np.allclose(
        got, scorer([np.array([400, 390])])
    )  # personal, not popularity

    rng = np.random.default_rng(0)
    rows = [
        (u, int(it), 100 * u + k, float(rng.integers(1, 6)))
        for u in range(1, 6)
        for k, it in enumerate(rng.permutation(vocab)[:12])
    ]
    table = interactions(rows)
    ev = build_replay_events(
        table, scorer, start_ts=0, end_ts=10**6, num_candidates=8, stride=4, horizon=4, min_history=3
    )
    assert len(ev) > 0
    for e in range(len(ev)):
        u, t = int(ev.users[e]), int(ev.ts[e])
        seen = np.array([it for (uu, it, tt, _) in rows if uu == u and tt < t])
        scores = scorer([seen])[0]
        unseen = [i for i in np.argsort(-scores, kind="stable") if vocab[i] not in set(seen.tolist())]
        assert ev.candidates[e].tolist() == [vocab[i] for i in unseen[:8]]
        np.testing.assert_allclose(ev.scores[e], scores[unseen[:8]], rtol=1e-5)
