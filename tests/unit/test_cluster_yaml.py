"""cluster.yaml passes Ray's own cluster-launcher validation and keeps the platform's promises:
a head with the MLflow server (database store, object-storage artifacts), CPU and GPU worker
types for the autoscaler, the project installed on every node, the dashboard bound to the head,
token authentication and the serve API key on every node, and no secret in the file."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1].parent
CONFIG = yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_validates_with_rays_schema_and_validator() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(CONFIG))  # fills the provider's defaults the way `ray up` does
    validate_config(prepared)  # ray/autoscaler/ray-schema.json (jsonschema) + version checks, as `ray up` runs them
    assert prepared["provider"]["type"] == "aws"
    bad = copy.deepcopy(CONFIG)
    bad["available_node_types"]["cpu_worker"]["max_workerz"] = 3  # a typo: the schema refuses unknown keys
    with pytest.raises(Exception, match="max_workerz"):
        validate_config(prepare_config(bad))


def test_node_types_head_mlflow_and_setup() -> None:
    types = CONFIG["available_node_types"]
    assert CONFIG["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != CONFIG["head_node_type"]}
    assert len(workers) >= 2
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
    assert any(
        "g6" in t["node_config"]["InstanceType"] or "p" == t["node_config"]["InstanceType"][0] for t in workers.values()
    )
    head = " ".join(CONFIG["head_start_ray_commands"])
    assert "mlflow server" in head and "postgresql://" in head and "--artifacts-destination s3://" in head
    assert "--dashboard-host=127.0.0.1" in head  # reached through `ray dashboard cluster.yaml` only
    setup = " ".join(CONFIG["setup_commands"])
    assert setup.index("torch==") < setup.index("pip install -e ~/lmrec")  # torch first, then the project


def test_token_auth_and_api_key_on_every_node_and_no_secret_in_the_file() -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cmds = " ".join(CONFIG[key])
        start = cmds.index("ray start --")
        assert "export RAY_AUTH_MODE=token;" in cmds[:start], key
        assert "export LMREC_SERVE_API_KEY=" in cmds[:start], key
    setup = " ".join(CONFIG["setup_commands"])
    assert "~/.ray/auth_token" in setup and "chmod 600 ~/.ray/auth_token" in setup
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"(password|token|secret|api_key)\s*[:=]\s*['\"]?[A-Za-z0-9]{16,}", text, re.I)
    assert "RAY_AUTH_MODE=disabled" not in text
