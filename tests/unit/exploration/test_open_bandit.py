"""Open Bandit Dataset: our reader, our Bernoulli-TS simulation against obp's, and the IPS check.

The reference action distribution in tests/data was produced once with obp 0.4.1
(see the note inside the file); obp is not needed to run these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmrec.exploration.estimators import ips
from lmrec.exploration.open_bandit import (
    OBDFormatError,
    bts_action_dist,
    evaluate_bts_from_random,
    load_obd,
    obd_dir,
)

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "obd_bts_action_dist_obp.json"
PUBLISHED_IPW = 0.004553  # REFERENCE_NUMBERS.md 5c (i): obp quickstart, IPW estimate of V(BTS)
PUBLISHED_IPW_REL_ERROR = 0.084019
BTS_ON_POLICY = 0.0042  # REFERENCE_NUMBERS.md 5a: 42 clicks in the 10,000-row BTS sample

pytestmark = pytest.mark.skipif(not (obd_dir() / "random" / "all" / "all.csv").exists(), reason="Open Bandit sample not found")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.asarray(json.loads(REFERENCE.read_text())["action_dist"])


@pytest.fixture(scope="module")
def random_log():  # type: ignore[no-untyped-def]
    return load_obd(None, "random", "all")


def test_reader(random_log) -> None:  # type: ignore[no-untyped-def]
    log = random_log
    assert log.n == 10_000 and log.n_actions == 80 and log.len_list == 3
    assert set(np.unique(log.positions)) == {0, 1, 2}
    np.testing.assert_allclose(log.pscore, 1 / 80)  # the Random policy
    assert log.affinity.shape == (10_000, 80) and log.item_features.shape[0] == 80
    assert load_obd(None, "bts", "all").on_policy_value == pytest.approx(BTS_ON_POLICY)


def test_reader_names_file_and_column(tmp_path: Path) -> None:
    base = tmp_path / "open_bandit" / "random" / "all"
    base.mkdir(parents=True)
    (base / "item_context.csv").write_text(",item_id,item_feature_0\n0,0,0.1\n1,1,0.2\n")
    (base / "all.csv").write_text(",timestamp,item_id,position,propensity_score,user_feature_0,user_feature_1,"
                                  "user_feature_2,user_feature_3\n0,2019-11-24 00:00:00+00:00,1,1,0.5,a,b,c,d\n")
    with pytest.raises(OBDFormatError) as err:
        load_obd(tmp_path, "random", "all")
    assert "all.csv" in str(err.value) and "'click'" in str(err.value)


def _tolerance(p: np.ndarray, n_sim: int = 100_000) -> np.ndarray:
    # obp's distribution is a Monte Carlo estimate: allow 5 standard errors per entry
    return 5 * np.sqrt(p * (1 - p) / n_sim) + 1e-4


def test_our_bts_simulation_matches_obp(reference: np.ndarray) -> None:
    ours = bts_action_dist("all", 3, n_sim=100_000, seed=0)  # a different stream from obp's: only the law agrees
    assert ours.shape == reference.shape == (80, 3)
    np.testing.assert_allclose(ours.sum(axis=0), 1.0)
    assert np.all(np.abs(ours - reference) <= _tolerance(reference))


def test_exact_bts_marginals_match_obp(reference: np.ndarray) -> None:
    exact = bts_action_dist("all", 3, method="exact")
    assert np.all(np.abs(exact - reference) <= _tolerance(reference))


def test_our_ips_reproduces_the_published_figure_with_obps_distribution(random_log, reference) -> None:  # type: ignore[no-untyped-def]
    log = random_log
    est = ips(log.rewards, log.pscore, reference[log.actions, log.positions], n_bootstrap=0)
    assert est.value == pytest.approx(PUBLISHED_IPW, abs=5e-7)
    assert est.relative_error(BTS_ON_POLICY) == pytest.approx(PUBLISHED_IPW_REL_ERROR, abs=2e-4)


def test_ips_is_at_least_as_accurate_as_published(random_log) -> None:  # type: ignore[no-untyped-def]
    """The published protocol (100,000 simulated rankings, random_state 12345) with our simulation."""
    dist = bts_action_dist("all", 3, n_sim=100_000, seed=12345)
    log = random_log
    est = ips(log.rewards, log.pscore, dist[log.actions, log.positions], n_bootstrap=1000, seed=12345)
    assert est.relative_error(BTS_ON_POLICY) <= PUBLISHED_IPW_REL_ERROR
    assert est.ci_low < BTS_ON_POLICY < est.ci_high


def test_all_estimators_on_the_sample(reference: np.ndarray) -> None:
    bench = evaluate_bts_from_random(dist=reference, n_bootstrap=300)
    rows = {r["estimator"]: r for r in bench.rows()}
    assert set(rows) == {"ips", "snips", "dm", "dr"}
    assert bench.truth == pytest.approx(BTS_ON_POLICY)
    for name, row in rows.items():
        assert row["ci_low"] <= row["value"] <= row["ci_high"], name
    for name in ("ips", "snips", "dr"):  # unbiased(ish) estimators: the truth lies inside their intervals
        assert rows[name]["ci_low"] < BTS_ON_POLICY < rows[name]["ci_high"], name
    assert rows["dm"]["std_err"] < 0.1 * rows["ips"]["std_err"]  # DM trades variance for bias
    assert bench.settings["l2"] in (1.0, 10.0, 100.0, 1000.0)


def test_fast_predictor_equals_generic_features(random_log) -> None:  # type: ignore[no-untyped-def]
    from lmrec.exploration.open_bandit import obd_features, obd_predictor
    from lmrec.exploration.reward_model import LogisticRegression, _predict_all

    log = random_log
    rows = np.arange(300)
    model = LogisticRegression(l2=10.0).fit(obd_features(log)(rows, log.actions[rows]), log.rewards[rows])
    for position in (None, 0):
        generic = _predict_all(model, obd_features(log, position), rows, log.n_actions, logits=True)
        np.testing.assert_allclose(obd_predictor(log, position)(model, rows), generic, atol=1e-10)
