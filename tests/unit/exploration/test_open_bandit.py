"""Open Bandit Dataset: our reader, the reward models, and the IPS check with obp's distribution.

The reference action distribution in tests/data was produced once with obp 0.4.1
(see the note inside the file); obp is not needed to run these tests. Our Bernoulli-TS
simulation and the published DM/DR are the OPE benchmark's (tests/unit/benchmarks/test_obd_bts.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmrec.data.open_bandit import OBDFormatError, load_obd, obd_dir
from lmrec.exploration.estimators import ips

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "obd_bts_action_dist_obp.json"
PUBLISHED_IPW = 0.004553  # REFERENCE_NUMBERS.md 5c (i): obp quickstart, IPW estimate of V(BTS)
PUBLISHED_IPW_REL_ERROR = 0.084019
BTS_ON_POLICY = 0.0042  # REFERENCE_NUMBERS.md 5a: 42 clicks in the 10,000-row BTS sample

pytestmark = pytest.mark.skipif(
    not (obd_dir() / "random" / "all" / "all.csv").exists(), reason="Open Bandit sample not found"
)


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
    (base / "all.csv").write_text(
        ",timestamp,item_id,position,propensity_score,user_feature_0,user_feature_1,"
        "user_feature_2,user_feature_3\n0,2019-11-24 00:00:00+00:00,1,1,0.5,a,b,c,d\n"
    )
    with pytest.raises(OBDFormatError) as err:
        load_obd(tmp_path, "random", "all")
    assert "all.csv" in str(err.value) and "'click'" in str(err.value)


def test_our_ips_reproduces_the_published_figure_with_obps_distribution(random_log, reference) -> None:  # type: ignore[no-untyped-def]
    log = random_log
    est = ips(log.rewards, log.pscore, reference[log.actions, log.positions], n_bootstrap=0)
    assert est.value == pytest.approx(PUBLISHED_IPW, abs=5e-7)
    assert est.relative_error(BTS_ON_POLICY) == pytest.approx(PUBLISHED_IPW_REL_ERROR, abs=2e-4)


def test_fast_predictor_equals_generic_features(random_log) -> None:  # type: ignore[no-untyped-def]
    from lmrec.exploration.open_bandit import obd_features, obd_predictor
    from lmrec.exploration.reward_model import LogisticRegression, _predict_all

    log = random_log
    rows = np.arange(300)
    model = LogisticRegression(l2=10.0).fit(obd_features(log)(rows, log.actions[rows]), log.rewards[rows])
    for position in (None, 0):
        generic = _predict_all(model, obd_features(log, position), rows, log.n_actions, logits=True)
        np.testing.assert_allclose(obd_predictor(log, position)(model, rows), generic, atol=1e-10)


def test_kfold_shuffled_is_scikit_learns_assignment() -> None:
    from lmrec.exploration.open_bandit import kfold_shuffled

    model_selection = pytest.importorskip("sklearn.model_selection")
    for n, k, seed in [(10_000, 3, 12345), (17, 4, 0)]:
        folds = kfold_shuffled(n, k, seed)
        for f, (_, test) in enumerate(
            model_selection.KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n))
        ):
            assert set(np.flatnonzero(folds == f)) == set(test)


def test_obp_quickstart_features(random_log) -> None:  # type: ignore[no-untyped-def]
    from lmrec.exploration.open_bandit import obp_quickstart_features

    ctx, act = obp_quickstart_features(random_log)
    assert ctx.shape == (10_000, 20)  # obp's quickstart notebook: "context vector with 20 dimensions"
    assert act.shape == (80, 4)  # three label-encoded categorical item features + item_feature_0, no item id
    assert set(np.unique(ctx)) == {0.0, 1.0} and ctx.sum(axis=1).max() <= 4
    assert np.all(act[:, :3] == np.round(act[:, :3])) and act[:, :3].min() == 0


def test_unknown_reward_model_is_rejected(random_log) -> None:  # type: ignore[no-untyped-def]
    from lmrec.exploration.open_bandit import fit_obd_rewards

    with pytest.raises(ValueError, match="reward_model"):
        fit_obd_rewards(random_log, reward_model="lightgbm")  # type: ignore[arg-type]
