"""What both searches share (lmrec.tuning.search): range checks, the seeded TPE sampler,
trial error messages, the experiment folder and the summary file."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from lmrec.config import ConfigError
from lmrec.tuning.search import TrialRecord, check_range, error_message, experiment_path, tpe_sampler, write_summary


@pytest.mark.parametrize(
    "values, low, high, low_open, ok",
    [
        ([0.1, 0.5], 0.0, 1.0, True, True),
        ([0.5, 0.5], 0.0, None, True, True),
        ([0.0, 0.5], 0.0, 1.0, True, False),  # open at low
        ([0.0, 0.5], 0.0, 1.0, False, True),  # closed at low
        ([0.5, 0.1], 0.0, None, False, False),  # reversed
        ([0.5, 2.0], 0.0, 1.0, False, False),  # above high
        ([0.5], 0.0, 1.0, False, False),  # not a pair
    ],
)
def test_check_range(values: list[float], low: float, high: float | None, low_open: bool, ok: bool) -> None:
    if ok:
        check_range(values, "space.x", low, high, low_open=low_open)
        return
    with pytest.raises(ConfigError) as err:
        check_range(values, "space.x", low, high, low_open=low_open)
    assert err.value.key == "space.x" and str(values) in err.value.message


def test_tpe_sampler_is_seeded_for_one_objective_and_several() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def draws(seed: int, directions: list[str]) -> list[float]:
        study = optuna.create_study(directions=directions, sampler=tpe_sampler(seed))
        n = len(directions)
        study.optimize(lambda t: (t.suggest_float("x", 0.0, 1.0),) * n if n > 1 else t.suggest_float("x", 0, 1), 15)
        return [t.params["x"] for t in study.trials]

    for directions in (["maximize"], ["maximize", "minimize"]):
        assert draws(1, directions) == draws(1, directions) != draws(2, directions)


def test_error_message_is_the_root_cause_line() -> None:
    wrapped = RuntimeError(
        "ray::ImplicitFunc.train() (pid=12, ip=127.0.0.1)\n"
        '  File "trial.py", line 3, in train\n'
        "lmrec.config.ConfigError: config key 'trial': bad\n"
        "\n"
        "ValueError: head dim 33 must be even\n"
    )
    assert error_message(wrapped) == "ValueError: head dim 33 must be even"
    assert error_message(RuntimeError("no cause named here")) == "no cause named here"
    assert error_message(RuntimeError("")) == "RuntimeError"


def test_trial_record_numbers_leave_out_flags_and_text() -> None:
    rec = TrialRecord("t1", {"policy": "greedy"}, "/x", {"a": 1, "b": 0.5, "done": True, "spec": "{}"}, None)
    assert rec.numbers() == {"a": 1, "b": 0.5}


def test_experiment_path_and_summary(tmp_path: Path) -> None:
    assert experiment_path("my-search", "explore-obd", str(tmp_path)) == tmp_path / "my-search"
    auto = experiment_path(None, "explore-obd", str(tmp_path))
    assert auto.parent == tmp_path and auto.name.startswith("explore-obd-2")
    out = write_summary(tmp_path / "new" / "summary.json", {"path": tmp_path})
    assert json.loads(out.read_text()) == {"path": str(tmp_path)}


def test_trial_functions_are_top_level_and_pickle_by_reference() -> None:
    """Tune and Ray Train ship trial and worker functions to workers by module path."""
    import pickle

    from lmrec.tuning.compression.trial import compress_loop_per_worker, compression_trial
    from lmrec.tuning.exploration.driver import exploration_trial

    for fn in (exploration_trial, compression_trial, compress_loop_per_worker):
        assert "<locals>" not in fn.__qualname__
        assert pickle.loads(pickle.dumps(fn)) is fn
