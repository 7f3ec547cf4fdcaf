"""`lmrec submit` checks everything it can on the laptop, before anything is uploaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmrec.cluster.jobs import _is_loopback, check_job_args
from lmrec.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_entrypoint_for_a_valid_job() -> None:
    cmd = check_job_args("pipeline", "jobs/configs/pipeline/tiny.yaml", ["name=x", "train.train.epochs=1"], ROOT)
    assert cmd == "python jobs/pipeline.py --config jobs/configs/pipeline/tiny.yaml name=x train.train.epochs=1"


@pytest.mark.parametrize(
    "job, overrides, key",
    [
        ("nope", [], "job"),
        ("pipeline", ["train.train.epochz=1"], "train.train.epochz"),
        ("train", ["tracking.api_key=abc"], "tracking.api_key"),
        ("train", ["db_password=hunter2"], "db_password"),
    ],
)
def test_bad_submissions_fail_locally_naming_the_key(job: str, overrides: list[str], key: str) -> None:
    config = {"pipeline": "jobs/configs/pipeline/tiny.yaml", "train": "jobs/configs/train/ml100k_tiny.yaml"}.get(job)
    with pytest.raises(ConfigError) as err:
        check_job_args(job, config, overrides, ROOT)
    assert key in str(err.value)


def test_loopback_detection() -> None:
    assert (
        _is_loopback("http://127.0.0.1:5000")
        and _is_loopback("http://localhost:8265")
        and _is_loopback("127.0.0.1:6379")
    )
    assert not _is_loopback("http://10.0.3.7:5000") and not _is_loopback("http://head.internal:8265")


def test_a_fresh_machine_gets_a_ray_token_before_ray_start(tmp_path: Path) -> None:
    """`ray start --head` with RAY_AUTH_MODE=token fails until ~/.ray/auth_token exists; a fresh
    machine (here: a fresh HOME) gets one, created once, and the token is never printed."""
    import os

    from lmrec.cluster.local import ensure_auth_token

    env = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token"}
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    ensure_auth_token(env)
    token_file = tmp_path / ".ray" / "auth_token"
    token = token_file.read_text().strip()
    assert len(token) >= 32
    ensure_auth_token(env)  # an existing token is kept
    assert token_file.read_text().strip() == token
    ensure_auth_token({"HOME": str(tmp_path / "other"), "RAY_AUTH_MODE": "disabled"})  # no auth: nothing made
    assert not (tmp_path / "other").exists()
