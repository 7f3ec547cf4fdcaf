"""The config loader: unknown keys and wrong types name the key; overrides; every job YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmrec.config import ConfigError, from_dict, json_schema, load_config, parse_overrides, replace, to_dict
from lmrec.jobs_registry import CONFIG_CLASSES, OTHER_SCHEMAS, config_class, schema_file
from lmrec.training.config import TrainJobConfig

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_validate() -> None:
    cfg = load_config(TrainJobConfig)
    assert cfg.train.strategy == "fsdp" and cfg.model.size == "tiny"


def test_overrides_are_typed() -> None:
    cfg = load_config(TrainJobConfig, None, ["train.lr=3e-4", "train.epochs=7", "model.size=small", "eval.ks=[1,10]"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 7 and cfg.model.size == "small" and cfg.eval.ks == [1, 10]


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.lrr=1", "train.lrr"),
        ("trian.lr=1", "trian"),
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=1.5", "train.epochs"),
        ("train.use_gpu=maybe", "train.use_gpu"),
        ("train.strategy=zero3", "train.strategy"),
        ("train.epochs=0", "train.epochs"),
        ("model.size=huge", "model.size"),
        ("model.num_heads=3", "model.num_heads"),
        ("data.dataset=ml-7m", "data.dataset"),
        ("data.synthetic.num_users=0", "data.synthetic.num_users"),
        ("eval.ks=[0]", "eval.ks"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, None, [override])
    assert info.value.key == key, str(info.value)
    assert key in str(info.value)


def test_strategy_none_needs_one_worker() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, None, ["train.strategy=none", "train.num_workers=2"])
    assert info.value.key == "train.strategy"


def test_override_syntax_errors() -> None:
    with pytest.raises(ConfigError):
        parse_overrides(["train.lr"])
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_yaml_errors_name_the_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 2\n  bogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, p)
    assert info.value.key == "train.bogus"
    with pytest.raises(ConfigError):
        load_config(TrainJobConfig, tmp_path / "missing.yaml")


def test_round_trip_and_replace() -> None:
    cfg = load_config(TrainJobConfig, None, ["train.epochs=3"])
    again = from_dict(TrainJobConfig, to_dict(cfg))
    assert again == cfg
    assert replace(cfg, ["train.epochs=5"]).train.epochs == 5 and cfg.train.epochs == 3


def _job_yamls() -> list[Path]:
    return sorted((ROOT / "jobs" / "configs").rglob("*.yaml"))


def test_every_job_config_folder_has_a_config_class() -> None:
    folders = {p.parent.name for p in _job_yamls()}
    assert "train" in folders
    assert folders <= set(CONFIG_CLASSES), f"unregistered config folders: {folders - set(CONFIG_CLASSES)}"


@pytest.mark.parametrize("path", _job_yamls(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_job_yaml_validates_and_documents_its_submit_command(path: Path) -> None:
    cls = config_class(path.parent.name)
    load_config(cls, path)
    first = path.read_text().splitlines()[0]
    rel = path.relative_to(ROOT).as_posix()
    m = re.match(r"# ray job submit --working-dir \. (?:.* )?-- python (jobs/\w+\.py) --config (\S+)", first)
    assert m, f"{rel}: first line must be the exact `ray job submit` command, got {first!r}"
    assert (ROOT / m.group(1)).exists(), f"{rel}: {m.group(1)} does not exist"
    assert m.group(2) == rel, f"{rel}: the command points at {m.group(2)}"


SCHEMA_LINE = re.compile(r"# yaml-language-server: \$schema=(\S+)$")


@pytest.mark.parametrize("job", sorted(CONFIG_CLASSES) + sorted(OTHER_SCHEMAS))
def test_committed_json_schemas_are_current(job: str) -> None:
    """`lmrec schema all --write .` regenerates them; a config change without it fails here."""
    committed = ROOT / schema_file(job)
    assert committed.is_file(), f"{committed} is missing: run `lmrec schema all --write .`"
    current = json.dumps(json_schema(config_class(job)), indent=2, sort_keys=True) + "\n"
    assert committed.read_text() == current, f"{committed} is stale: run `lmrec schema all --write .`"


@pytest.mark.parametrize("path", _job_yamls(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_job_yaml_names_its_schema_and_the_schema_accepts_it(path: Path) -> None:
    import jsonschema
    import yaml

    m = SCHEMA_LINE.match(path.read_text().splitlines()[1])
    assert m, f"{path.name}: the second line must be the yaml-language-server modeline"
    schema_path = (path.parent / m.group(1)).resolve()
    assert schema_path == (ROOT / schema_file(path.parent.name)).resolve()
    schema = json.loads(schema_path.read_text())
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()) or {})


def test_schema_and_loader_agree_on_unknown_keys_and_types() -> None:
    """The JSON Schema rejects what the loader rejects for keys and types (ranges are the loader's)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema(TrainJobConfig))
    for bad in ({"train": {"lrr": 1}}, {"train": {"epochs": "3"}}, {"train": {"use_gpu": 1}}, {"model": {"size": 3}}):
        assert list(validator.iter_errors(bad)), bad
        with pytest.raises(ConfigError):
            from_dict(TrainJobConfig, bad)


def test_error_messages_say_what_was_wrong() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, None, ["train.lrr=1"])
    assert "unknown key" in info.value.message and "'lr'" in info.value.message  # lists the valid keys
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, None, ["train.epochs=abc"])
    assert info.value.message == "expected an integer, got 'abc'"
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, None, ["train.strategy=zero3"])
    assert "'fsdp'" in info.value.message and "'zero3'" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, None, ["eval.ks=[5, x]"])
    assert info.value.key == "eval.ks[1]"
    with pytest.raises(ConfigError) as info:  # a nested section given as a scalar
        load_config(TrainJobConfig, None, ["train=3"])
    assert info.value.key == "train" and "mapping" in info.value.message


def test_direct_construction_raises_config_errors_too() -> None:
    from lmrec.training.config import TrainConfig

    with pytest.raises(ConfigError) as info:
        TrainConfig(epochs=0)
    assert info.value.key == "epochs"
    with pytest.raises(ConfigError) as info:
        TrainConfig(bogus=1)
    assert info.value.key == "bogus"


def test_serve_config_errors_name_nested_keys() -> None:
    from lmrec.serving.config import ServeConfig

    with pytest.raises(ConfigError) as info:
        from_dict(ServeConfig, {"exploration": {"policy": {"type": "epsilon_greedy", "epsilon": 2}}})
    assert info.value.key == "exploration.policy.epsilon"
    with pytest.raises(ConfigError) as info:
        from_dict(ServeConfig, {"deployments": {"Ranker": {"num_replica": 2}}})
    assert info.value.key == "deployments.Ranker.num_replica"


def test_schema_command_prints_and_refuses_unknown_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    from lmrec.cli import main

    assert main(["schema", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "TrainJobConfig"
    assert main(["schema", "nope"]) == 2
