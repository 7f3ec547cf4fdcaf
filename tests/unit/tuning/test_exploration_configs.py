"""Job configs of the exploration search: every YAML loads, names its command, fails early on bad keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.config import ConfigError, load_config
from lmrec.tuning.exploration import TuneExplorationConfig

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
    assert (
        first == f"# ray job submit --working-dir . -- python jobs/tune_exploration.py --config {rel}"
        or first.startswith(f"# ray job submit --working-dir . -- python jobs/tune_exploration.py --config {rel} ")
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


def _run_job(*argv: str) -> subprocess.CompletedProcess:
    """Run jobs/tune_exploration.py as a script, as `ray job submit` does; stdout ends with
    'exit <code> <whether ray was imported>'."""
    script = (
        "import sys, runpy\n"
        f"sys.argv = ['jobs/tune_exploration.py', *{list(argv)!r}]\n"
        "try:\n"
        "    runpy.run_path('jobs/tune_exploration.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'ray' in sys.modules)\n"
    )
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_job_rejects_bad_config_before_importing_ray() -> None:
    out = _run_job("--config", "jobs/configs/tune_exploration/obd_random.yaml", "search.num_samples=-1")
    assert "exit 2 False" in out.stdout, out.stdout + out.stderr
    assert "config key 'search.num_samples'" in out.stderr


def test_partial_tracking_override_keeps_the_policy_registry_name() -> None:
    cfg = load_config(TuneExplorationConfig, None, ["tracking.alias=champion"])
    assert cfg.tracking.model_name == "lmrec-exploration-policy" and cfg.tracking.experiment == "lmrec-exploration"
    assert cfg.tracking.alias == "champion"


@pytest.mark.parametrize("override", ["replay.valid_frac=0.5", "replay.valid_frac=-0.1"])
def test_validation_period_must_leave_a_test_period(override: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(TuneExplorationConfig, CONFIG_DIR / "ml100k_replay_v2.yaml", [override])
    assert err.value.key == "replay.valid_frac"


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["scenario=logs", "logs.path=/no/such/feedback_logs"], "logs.path"),
        (["scenario=obd", "obd.data_dir=/no/such/data"], "obd.data_dir"),
        (["scenario=replay", "replay.data_dir=/no/such/data"], "replay.data_dir"),
        (["scenario=replay", "replay.model_uri=/no/such/model"], "replay.model_uri"),
    ],
)
def test_missing_inputs_fail_before_ray_naming_the_key(overrides: list[str], key: str) -> None:
    from lmrec.tuning.exploration import preflight

    cfg = load_config(TuneExplorationConfig, None, overrides)  # well-formed: only the files are missing
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert err.value.key == key


def test_job_with_a_missing_log_folder_exits_before_importing_ray() -> None:
    out = _run_job("--config", "jobs/configs/tune_exploration/feedback_logs.yaml", "logs.path=/no/such/feedback_logs")
    assert "exit 2 False" in out.stdout, out.stdout + out.stderr
    assert "config key 'logs.path'" in out.stderr and "/no/such/feedback_logs" in out.stderr


def test_exploration_trial_module_imports_without_torch() -> None:
    """Every Tune trial process of the search imports this module: torch would cost it seconds."""
    code = (
        "import sys, lmrec.tuning.exploration.driver, lmrec.tuning.feedback_io\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
        "from lmrec.models import SeqRecModel, build_config\n"
        "from lmrec.evaluation import evaluate_scorer\n"
        "print('torch' in sys.modules, callable(evaluate_scorer), SeqRecModel.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["[]", "True True SeqRecModel"], out.stdout + out.stderr
