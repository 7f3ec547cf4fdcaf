"""Job configs of the exploration search: every YAML loads, names its command, fails early on bad keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.config import ConfigError, load_config
from lmrec.tuning.exploration import TuneExplorationConfig, baseline_points, define_space

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / "jobs" / "configs" / "tune_exploration"
YAMLS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_required_scenarios_exist() -> None:
    assert {"obd_random.yaml", "ml100k_replay.yaml"} <= {p.name for p in YAMLS}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_yaml_loads_and_starts_with_its_command(path: Path) -> None:
    cfg = load_config(TuneExplorationConfig, path)
    assert cfg.scenario in ("obd", "logs", "replay")
    first = path.read_text().splitlines()[0]
    rel = path.relative_to(REPO).as_posix()
    assert first == f"# ray job submit --working-dir . -- python jobs/tune_exploration.py --config {rel}" or first.startswith(
        f"# ray job submit --working-dir . -- python jobs/tune_exploration.py --config {rel} "
    )


@pytest.mark.parametrize(
    "override, key",
    [
        ("search.num_samples=0", "search.num_samples"),
        ("space.policies=[greedy, bandit]", "space.policies[1]"),
        ("space.epsilon=[0.5, 2.0]", "space.epsilon"),
        ("replay.tune_frac=0.9", "replay.tune_frac"),
        ("obd.estimatr=dr", "obd.estimatr"),
        ("scenario=online", "scenario"),
    ],
)
def test_bad_overrides_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(TuneExplorationConfig, CONFIG_DIR / "ml100k_replay.yaml", [override])
    assert err.value.key == key


def test_logs_scenario_needs_a_path() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(TuneExplorationConfig, None, ["scenario=logs"])
    assert err.value.key == "logs.path"


def test_job_rejects_bad_config_before_importing_ray() -> None:
    script = (  # run the job file as a script, as `ray job submit` does

        "import sys, runpy\n"
        "sys.argv = ['jobs/tune_exploration.py', '--config', 'jobs/configs/tune_exploration/obd_random.yaml', 'search.num_samples=-1']\n"
        "try:\n"
        "    runpy.run_path('jobs/tune_exploration.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "exit 2 False" in out.stdout, out.stdout + out.stderr
    assert "config key 'search.num_samples'" in out.stderr


class _FakeTrial:
    """Records what an Optuna trial is asked for (define-by-run spaces are plain functions of a trial)."""

    def __init__(self, choice: str) -> None:
        self.choice, self.asked = choice, {}

    def suggest_categorical(self, name: str, choices: list[str]) -> str:
        assert self.choice in choices
        self.asked[name] = choices
        return self.choice

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.asked[name] = (low, high, log)
        return low


def test_search_space_is_conditional_on_the_policy() -> None:
    cfg = load_config(TuneExplorationConfig, CONFIG_DIR / "obd_random.yaml")
    space = define_space(cfg.space)
    expected = {"greedy": set(), "epsilon_greedy": {"epsilon"}, "softmax": {"temperature"},
                "ucb": {"ucb_c", "prior_strength"}, "thompson": {"prior_strength"}}
    for policy, params in expected.items():
        trial = _FakeTrial(policy)
        space(trial)
        assert set(trial.asked) - {"policy"} == params
        assert all(v[2] for k, v in trial.asked.items() if k != "policy")  # log-uniform
    import pickle

    pickle.loads(pickle.dumps(space))  # Tune checkpoints the searcher by pickling it
    assert baseline_points(cfg.space) == [{"policy": "greedy"}, {"policy": "epsilon_greedy", "epsilon": 0.1}]
