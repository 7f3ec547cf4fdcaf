"""Ray-free serving core: feedback store (join, dedupe, durable commit, statistics), the
LRU+TTL cache, ServeConfig validation, model runtime ranking and the request schemas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from lmrec.config import ConfigError, from_dict
from lmrec.exploration.logs import read_logs
from lmrec.models import SeqRecModel, build_config, init_weights_
from lmrec.serving.cache import TTLCache
from lmrec.serving.config import FeedbackConfig, ServeConfig
from lmrec.serving.feedback import FeedbackStore
from lmrec.serving.runtime import LoadedModel, RequestError, last_position_scoring, trace_forward
from lmrec.serving.schemas import FeedbackRequest, RecommendRequest


def _impression(rid: str, slate: list[int], props: list[float] | None = None) -> dict:
    cand = slate + [900, 901]
    return {
        "request_id": rid,
        "candidates": cand,
        "scores": [float(10 - i) for i in range(len(cand))],
        "slate": slate,
        "propensities": props or [0.9] * len(slate),
        "policy": "epsilon_greedy",
        "policy_params": {"type": "epsilon_greedy", "epsilon": 0.1},
        "user_id": "7",
        "model_version": "m/1",
    }


def test_feedback_join_dedupe_and_durable_commit(tmp_path: Path) -> None:
    store = FeedbackStore(FeedbackConfig(batch_size=100), tmp_path)
    store.add_impressions([_impression("r1", [5, 6, 7]), _impression("r2", [6, 8, 9])])
    row = store.event("r1", 6, 1)
    assert row["position"] == 1 and row["propensity"] == 0.9 and row["model_version"] == "m/1"
    with pytest.raises(RequestError) as e:
        store.event("r1", 6, 0)
    assert e.value.status == 409
    with pytest.raises(RequestError) as e:
        store.event("nope", 6, 1)
    assert e.value.status == 404
    with pytest.raises(RequestError) as e:
        store.event("r2", 5, 1)
    assert e.value.status == 422
    path = store.commit([row, store.event("r2", 8, 0)])
    assert path is not None and path.exists() and not path.name.startswith(".")
    table = pq.read_table(path)
    assert table.column("item_id").to_pylist() == [6, 8] and table.column("reward").to_pylist() == [1.0, 0.0]
    # statistics: impressions counted at display time, clicks from feedback
    st = store.state
    n, c, _ = st.stats(np.array([5, 6, 8, 9]))
    assert n.tolist() == [1, 2, 1, 1] and c.tolist() == [0, 1, 0, 0]
    assert store.stats()["ctr"] == 0.5
    store.flush_impressions(force=True)
    logged = read_logs(tmp_path / "impressions")
    assert sorted(logged.column("request_id").to_pylist()) == ["r1", "r2"]


def test_batched_impression_counting_matches_each_slate_scored_alone(tmp_path: Path) -> None:
    """add_impressions scores a batch's slates together (grouped by policy and shape); the
    expected micro-clicks must be what each slate gives alone: the shown items' own scores
    through their policy's click model. A bad record in a batch changes nothing."""
    from lmrec.exploration.policies import MICRO, PolicyConfig, build_policy

    greedy = {"type": "greedy"}
    recs = [
        _impression("a", [5, 6, 7]),
        _impression("b", [7, 5]),
        {**_impression("c", [6, 900, 8]), "policy": "greedy", "policy_params": greedy},
        _impression("d", [901, 5, 6]),
        {**_impression("e", [8, 9]), "policy_params": {}},
    ]
    # the slate is not the candidates' prefix here, and 901 is a candidate twice (the first one counts)
    recs[3].update(candidates=[6, 901, 5, 900, 901], scores=[0.5, -1.0, 2.0, 0.0, 1.5])
    store = FeedbackStore(FeedbackConfig(batch_size=100), tmp_path)
    with pytest.raises(Exception, match="not among the candidates"):
        store.add_impressions([recs[0], {**recs[1], "slate": [7, 404]}])
    assert store.stats()["impressions_logged"] == 0 and not store.has_impression("a") and store.state.ids.size == 0
    store.add_impressions(recs)
    want: dict[int, list[int]] = {}
    for r in recs:
        model = build_policy(PolicyConfig.from_dict(r["policy_params"] or greedy))  # none given: greedy, as before
        for item in r["slate"]:
            score = r["scores"][r["candidates"].index(item)]
            e = int(round(float(model.click_probability(np.array([score]))[0]) * MICRO))
            n_e = want.setdefault(item, [0, 0])
            n_e[0] += 1
            n_e[1] += e
    items = np.array(sorted(want))
    n, c, e = store.state.stats(items)
    assert n.tolist() == [want[i][0] for i in items.tolist()] and not c.any()
    assert e.tolist() == pytest.approx([want[i][1] / MICRO for i in items.tolist()], abs=1.5 / MICRO)
    assert store.event("d", 901, 1)["position"] == 0  # the join window keeps what events need


def test_a_restarted_store_recovers_the_join_window_from_disk(tmp_path: Path) -> None:
    """What a restarted FeedbackLog replica does: earlier slates joinable, written feedback seen."""
    first = FeedbackStore(FeedbackConfig(batch_size=100), tmp_path)
    first.add_impressions([_impression("r1", [5, 6, 7]), _impression("r2", [6, 8, 9])])
    first.commit([first.event("r1", 6, 1)])
    first.flush_impressions(force=True)
    first.add_impressions([_impression("r3", [1, 2])])  # buffered only: dies with the process
    before = first.state.stats(np.array([5, 6, 7, 8, 9]))

    second = FeedbackStore(FeedbackConfig(batch_size=100), tmp_path)
    assert second.recover() == {"impressions": 2, "feedback_events": 1}
    assert second.has_impression("r1") and second.has_impression("r2") and not second.has_impression("r3")
    with pytest.raises(RequestError) as e:
        second.event("r1", 6, 1)  # the acknowledged feedback, retried by a client
    assert e.value.status == 409
    assert second.event("r2", 8, 1)["position"] == 1  # still joinable
    after = second.state.stats(np.array([5, 6, 7, 8, 9]))
    assert [a.tolist() for a in after[:2]] == [b.tolist() for b in before[:2]]  # impressions and clicks restored
    assert second.stats()["feedback_events"] == 1 and second.stats()["clicks"] == 1


def test_failed_commit_is_not_acknowledged_and_can_be_retried(tmp_path: Path) -> None:
    store = FeedbackStore(FeedbackConfig(), tmp_path)
    store.add_impressions([_impression("r1", [5, 6])])
    row = store.event("r1", 5, 1)
    (tmp_path / "feedback").write_text("a file where the folder should be")  # the write must fail
    with pytest.raises(OSError):
        store.commit([row])
    assert store.events_written == 0
    store.release([row])
    (tmp_path / "feedback").unlink()
    store.commit([store.event("r1", 5, 1)])  # the same feedback is accepted again and written
    assert store.events_written == 1


def test_ttl_lru_cache() -> None:
    now = [0.0]
    c = TTLCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1
    c.put("c", 3)  # evicts b (least recently used)
    assert c.get("b") is None and c.get("c") == 3
    now[0] = 11.0
    assert c.get("a") is None  # expired
    assert c.hits == 2 and c.misses == 2 and c.hit_ratio == 0.5


@pytest.mark.parametrize(
    "args,key",
    [
        ({"batch": {"max_batch_size": 0}}, "batch.max_batch_size"),
        ({"bogus": 1}, "bogus"),
        ({"exploration": {"policy": {"type": "magic"}}}, "exploration.policy.type"),
        ({"exploration": {"policy": {"type": "epsilon_greedy", "epsilon": 2}}}, "exploration.policy.epsilon"),
        ({"deployments": {"Nope": {}}}, "deployments.Nope"),
        ({"deployments": {"Ranker": {"replicas": 3}}}, "deployments.Ranker.replicas"),
        ({"deployments": {"FeedbackLog": {"num_replicas": 2}}}, "deployments.FeedbackLog"),
        ({"precision": "int4"}, "precision"),
        ({"topology": "merged"}, "topology"),
        ({"forward": "compiled"}, "forward"),
        ({"batch": {"rows_per_forward": -1}}, "batch.rows_per_forward"),
        ({"http_fast_path": "yes"}, "http_fast_path"),
        ({"feedback": {"impression_ship_s": 0}}, "feedback.impression_ship_s"),
        ({"feedback": {"shards": 0}}, "feedback.shards"),
        ({"topology": "fused", "deployments": {"Ranker": {"num_replicas": 2}}}, "deployments.Ranker"),
    ],
)
def test_serve_config_errors_name_the_key(args: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(ServeConfig, args)
    assert info.value.key.startswith(key), info.value.key


def test_loaded_model_ranks_and_masks_seen_items() -> None:
    torch.manual_seed(0)
    model = SeqRecModel(build_config("tiny", 30, dropout=0.0))
    init_weights_(model, 0)
    loaded = LoadedModel(model.eval(), np.arange(101, 131), "m/1", {}, 50, torch.device("cpu"), "fp32")
    hist = loaded.to_idx([105, 106, 107])
    assert hist.tolist() == [5, 6, 7]
    cand, scores = loaded.rank([hist, hist], 10, [True, False])
    assert cand.shape == (2, 10) and np.all(np.diff(scores, axis=1) <= 0)
    assert not set(cand[0]) & {5, 6, 7}
    assert 0 not in cand  # padding is never recommended
    full = model(torch.tensor([[5, 6, 7]]))[0]
    assert cand[1].tolist() == torch.topk(full, 10).indices.tolist()
    # Rows of different lengths, longer than the model's window: the whole history is masked.
    long = np.arange(1, 26)
    cand, _ = loaded.rank([long, hist, np.array([9])], 5, [True, True, True])
    assert not set(cand[0]) & set(long.tolist()) and set(cand[0]) <= set(range(26, 31))
    assert not set(cand[1]) & {5, 6, 7} and 9 not in cand[2]
    with pytest.raises(RequestError) as e:
        loaded.to_idx([105, 999])
    assert e.value.status == 422 and "999" in str(e.value)
    assert loaded.to_ids(np.array([1, 30])).tolist() == [101, 130]


def _scoring_model(size: str, precision: str) -> torch.nn.Module:
    """A seeded eval-mode model over 40 items, dynamic-int8 quantized when `precision` is "int8"."""
    torch.manual_seed(0)
    model = SeqRecModel(build_config(size, 40, dropout=0.0))
    init_weights_(model, 1)
    model.eval()
    if precision == "int8":
        from lmrec.compression.quantize import quantize_int8

        model = quantize_int8(model)
    return model


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_compiled_forward_ranks_like_eager_at_any_batch_length_and_padding(precision: str) -> None:
    model = _scoring_model("tiny", precision)
    traced, kind = trace_forward(model, "auto", 40, 50, torch.device("cpu"))
    assert kind == "torchscript" and isinstance(traced, torch.jit.ScriptModule)
    assert trace_forward(model, "eager", 40, 50, torch.device("cpu")) == (model, "eager")
    eager = LoadedModel(model, np.arange(1, 41), "m/1", {}, 50, torch.device("cpu"), precision)
    fast = LoadedModel(traced, np.arange(1, 41), "m/1", {}, 50, torch.device("cpu"), precision, forward=kind)
    rng = np.random.default_rng(0)
    for lengths in ([1], [3, 17, 50], [60, 2, 9, 33, 5, 1, 12]):  # ragged rows are left-padded per batch
        hists = [rng.integers(1, 41, n) for n in lengths]
        exclude = [bool(i % 2) for i in range(len(hists))]
        (c1, s1), (c2, s2) = eager.rank(hists, 8, exclude), fast.rank(hists, 8, exclude)
        np.testing.assert_allclose(s2, s1, rtol=1e-5, atol=1e-5)
        assert (c1 == c2).mean() > 0.95  # equal up to ties
        # Length-sorted forwards of at most 2 rows: the same answers, back in request order.
        # (Dynamic int8 quantizes activations with one scale per forward, so its scores move a
        # little with the batch's makeup, chunked or not.)
        c3, s3 = fast.rank(hists, 8, exclude, rows_per_forward=2)
        tol = 1e-5 if precision == "fp32" else 2e-2
        np.testing.assert_allclose(s3, s1, rtol=tol, atol=tol)
        assert (c3 == c1).mean() > (0.95 if precision == "fp32" else 0.8)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_last_position_scoring_is_kept_only_where_it_gives_the_full_scores(
    precision: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from lmrec.models.seqrec import LastPositionLayer

    model = _scoring_model("small", precision)
    reference = LoadedModel(model, np.arange(1, 41), "m/1", {}, 50, torch.device("cpu"), precision)
    rng = np.random.default_rng(0)
    hists = [rng.integers(1, 41, n) for n in (60, 2, 9, 33, 5, 1, 12)]
    exclude = [bool(i % 2) for i in range(len(hists))]
    c1, s1 = reference.rank(hists, 8, exclude)
    out, applied = last_position_scoring(model, precision, 40, 50, torch.device("cpu"))
    assert out is model
    if precision == "int8":  # one range per activation tensor: one position gives other scores
        assert not applied and not isinstance(model.backbone.layers[-1], LastPositionLayer)
        return
    assert applied and isinstance(model.backbone.layers[-1], LastPositionLayer)
    traced, kind = trace_forward(model, "auto", 40, 50, torch.device("cpu"))  # and it compiles
    for m, forward in ((model, "eager"), (traced, kind)):
        c2, s2 = LoadedModel(m, np.arange(1, 41), "m/1", {}, 50, torch.device("cpu"), precision, forward=forward).rank(
            hists, 8, exclude, rows_per_forward=3
        )
        np.testing.assert_allclose(s2, s1, rtol=1e-5, atol=1e-5)
        assert (c2 == c1).mean() > 0.95  # equal up to ties
    # A last-position block that gets the scores wrong is dropped at load, with a warning.
    from lmrec.models.seqrec import score_full_sequence

    score_full_sequence(model)
    monkeypatch.setattr(LastPositionLayer, "forward", lambda self, h, *a, **k: h[:, -1:] * 2)
    with caplog.at_level("WARNING"):
        assert last_position_scoring(model, precision, 40, 50, torch.device("cpu")) == (model, False)
    assert not isinstance(model.backbone.layers[-1], LastPositionLayer)
    assert "scoring with the full last block" in caplog.text


class _ShapeBranch(torch.nn.Module):
    """A forward that a trace cannot follow: it branches on the input's length in Python."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # scores over 10 items (+ the pad column)
        scores = x.float().sum(1, keepdim=True) * torch.arange(11.0)
        return scores * 2 if x.shape[1] > 4 else scores


def test_a_forward_the_trace_gets_wrong_is_served_eagerly_or_refused(caplog: pytest.LogCaptureFixture) -> None:
    model = _ShapeBranch()
    with caplog.at_level("WARNING"):
        assert trace_forward(model, "auto", 10, 50, torch.device("cpu")) == (model, "eager")
    assert "compiled top-10 differs from eager at (1, 1)" in caplog.text
    with pytest.raises(RuntimeError, match="forward='torchscript' was requested, but compiling the model failed"):
        trace_forward(model, "torchscript", 10, 50, torch.device("cpu"))


def test_request_schemas_are_strict() -> None:
    assert RecommendRequest(user_id=3).k == 10
    for bad in (
        {},
        {"user_id": 1, "history": [1]},
        {"history": []},
        {"user_id": "3"},
        {"user_id": 3, "k": 0},
        {"user_id": 3, "extra": 1},
        {"user_id": 3, "explore": "yes"},
    ):
        with pytest.raises(ValidationError):
            RecommendRequest(**bad)
    with pytest.raises(ValidationError):
        FeedbackRequest(request_id="a", item_id=1, reward=2)


def test_replica_histories_are_prepared_in_process(tmp_path) -> None:
    # A replica whose model's dataset is not prepared in its LMREC_HOME prepares it itself,
    # in-process: Ray Data tasks started from a replica's constructor could wait forever for
    # CPUs held by the app's own replicas (seen on a 2-CPU cluster).
    import sys

    from lmrec.config import to_dict
    from lmrec.data.config import DataConfig, SyntheticConfig
    from lmrec.serving.runtime import load_histories

    syn = SyntheticConfig(num_users=60, num_items=40, num_clusters=4, mean_seq_len=8, seed=987)
    data_cfg = DataConfig(dataset="synthetic", synthetic=syn, min_user_interactions=3, min_item_interactions=1)
    ray_was_running = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    hist = load_histories({"data_config": to_dict(data_cfg)}, None)
    assert ray_was_running or not ("ray" in sys.modules and sys.modules["ray"].is_initialized())
    assert hist is not None and len(hist) > 0
    uid = int(hist.user_ids[0])
    got = hist.get(uid)
    assert got is not None and len(got) >= 3 and got.min() >= 1
