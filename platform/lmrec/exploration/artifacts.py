"""Policy artifacts: the JSON a search saves in MLflow and serving loads.

A policy document is `Policy.to_dict()` (format, version, config, state) plus
free-form `metadata` (objective, scenario, search run). It is stored as
`policy/policy.json` in the search's parent MLflow run and, when registered, as
a version of a registered model (default `lmrec-exploration-policy`) so that
serving can resolve `models:/lmrec-exploration-policy@champion`. It is plain
JSON: loading it never runs code.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmrec.exploration.policies import Policy, PolicyConfig, build_policy, policy_from_dict

POLICY_ARTIFACT_DIR = "policy"
POLICY_FILE = "policy.json"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def policy_document(
    policy: Policy | PolicyConfig | Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON document for a policy (state included when given a Policy)."""
    if isinstance(policy, Policy):
        doc = policy.to_dict()
    else:
        doc = build_policy(policy).to_dict()
        doc["state"] = None  # a config alone carries no learned statistics
    doc["metadata"] = dict(metadata or {})
    return doc


def save_policy_artifact(
    run_id: str,
    policy: Policy | PolicyConfig | Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    uri: str | None = None,
) -> str:
    """Log `policy/policy.json` into MLflow run `run_id`; returns the artifact path."""
    from lmrec.tracking.mlflow_utils import RunLogger

    with tempfile.TemporaryDirectory(prefix="lmrec-policy-") as tmp:
        path = Path(tmp) / POLICY_FILE
        path.write_text(json.dumps(policy_document(policy, metadata), indent=1, sort_keys=True))
        RunLogger(run_id, uri).artifact(path, POLICY_ARTIFACT_DIR)
    return f"{POLICY_ARTIFACT_DIR}/{POLICY_FILE}"


def read_policy_document(ref: str | Path, uri: str | None = None) -> dict[str, Any]:
    """The policy JSON behind `ref`.

    `ref` is a local `.json` file or a folder holding `policy.json`, a bare MLflow
    run id, `runs:/<run_id>[/policy]`, or `models:/<name>@<alias>` / `models:/<name>/<version>`.
    """
    ref = str(ref)
    local = Path(ref)
    if local.is_file():
        return json.loads(local.read_text())
    if local.is_dir():
        return json.loads((local / POLICY_FILE).read_text())
    if _RUN_ID.match(ref):
        ref = f"runs:/{ref}/{POLICY_ARTIFACT_DIR}"
    if not ref.startswith(("runs:/", "models:/")):
        raise FileNotFoundError(f"policy reference {ref!r} is not a file, folder, run id, runs:/ or models:/ URI")
    from lmrec.tracking.mlflow_utils import download_model

    with tempfile.TemporaryDirectory(prefix="lmrec-policy-") as tmp:
        got = download_model(ref, tmp, uri)
        path = got if got.is_file() else got / POLICY_FILE
        if not path.is_file():
            found = list(Path(got).rglob(POLICY_FILE))
            if not found:
                raise FileNotFoundError(f"{ref}: no {POLICY_FILE} in the downloaded artifact")
            path = found[0]
        return json.loads(path.read_text())


def load_policy(ref: str | Path, uri: str | None = None) -> Policy:
    """A ready policy (config + saved state) from any reference `read_policy_document` accepts."""
    return policy_from_dict(read_policy_document(ref, uri))


def load_policy_config(ref: str | Path, uri: str | None = None) -> PolicyConfig:
    return load_policy(ref, uri).config
