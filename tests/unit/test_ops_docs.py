"""Operations files stay true to the code: the KubeRay manifests, the serve-deploy YAMLs, the Grafana
dashboard and the cluster/monitoring docs.

* Both KubeRay manifests are ray.io/v1 RayCluster/RayService objects with token authentication, the
  autoscaler on and sane worker-group bounds; the RayService's embedded app validates as a ServeConfig,
  has the API key on, and is the app of serve_apps/recommender_cluster.yaml.
* Every metric a dashboard panel queries is one the code defines: the serving metrics of
  lmrec.serving.metrics (a Ray-free module) and the gauges `RayTrainContext.publish` creates for the keys
  that `run_training` publishes (read from the source, no Ray, no torch).
* docs/cluster.md and docs/monitoring.md explain token authentication and the Grafana import.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmrec.config import from_dict
from lmrec.serving.config import ServeConfig

ROOT = Path(__file__).resolve().parents[2]
RAYCLUSTER = ROOT / "docs" / "kuberay" / "raycluster.yaml"
RAYSERVICE = ROOT / "docs" / "kuberay" / "rayservice.yaml"
DASHBOARD = ROOT / "docs" / "grafana" / "lmrec_dashboard.json"
SERVE_YAML = ROOT / "serve_apps" / "recommender.yaml"
SERVE_CLUSTER_YAML = ROOT / "serve_apps" / "recommender_cluster.yaml"
LOOP_PY = ROOT / "platform" / "lmrec" / "training" / "loop.py"  # run_training
STEPS_PY = ROOT / "platform" / "lmrec" / "training" / "steps.py"  # evaluate
CONTEXT_PY = ROOT / "platform" / "lmrec" / "training" / "context.py"  # RayTrainContext

# Ray's metrics agent exports application metrics (ray.util.metrics) under the "ray" namespace:
# a metric created as `lmrec_serve_batch_size` is scraped as `ray_lmrec_serve_batch_size`
# (docs.ray.io: "Adding Application-Level Metrics"). Histograms add _bucket/_sum/_count;
# counters are exported with a `_total` suffix, which ours already carry.
PROM_PREFIX = "ray_"
# Labels Ray may attach to every application metric, besides the metric's own tag keys.
RAY_DEFAULT_LABELS = {"instance", "job", "SessionName", "NodeAddress", "Component", "Version"}


# ---------------------------------------------------------------- helpers


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _serve_app(config: dict[str, Any], name: str = "recommender") -> dict[str, Any]:
    apps = [a for a in config.get("applications", []) if a.get("name") == name]
    assert len(apps) == 1, f"expected one application named {name!r}"
    return apps[0]


def _validate_serve_deploy_schema(config: dict[str, Any]) -> None:
    """Ray Serve's own schema for `serve deploy` / serveConfigV2 (skipped when Ray Serve is absent)."""
    schema = pytest.importorskip("ray.serve.schema")
    schema.ServeDeploySchema.model_validate(config)


def _load_source_module(name: str, path: Path) -> Any:
    """Import one file without its package's __init__ (lmrec.evaluation's pulls in torch)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _function(tree: ast.AST, name: str) -> ast.FunctionDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"function {name} not found")


def _const_keys(node: ast.Dict) -> set[str]:
    keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    assert len(keys) == len(node.keys), f"non-literal keys in {ast.unparse(node)}"
    return keys


# ---------------------------------------------------------------- metrics defined in the code


def serve_metrics() -> dict[str, tuple[str, set[str]]]:
    """name -> (kind, tag keys) of every serving metric (lmrec.serving.metrics, what the app records)."""
    from lmrec.serving.metrics import SERVE_METRICS

    out = {metric.name: (metric.kind, set(metric.tag_keys)) for metric in SERVE_METRICS}
    assert len(out) == len(SERVE_METRICS), "two serving metrics share a name"
    return out


def _evaluation_keys(split: str) -> set[str]:
    """Keys `evaluate(..., split, ...)` returns with the default EvalConfig (protocols x metric names)."""
    steps = ast.parse(STEPS_PY.read_text())
    fstrings = {ast.unparse(n) for n in ast.walk(_function(steps, "evaluate")) if isinstance(n, ast.JoinedStr)}
    assert "f'{split}/{protocol}/{name}'" in fstrings, "evaluate() changed its key format; update this test"
    metrics = _load_source_module("_lmrec_eval_metrics", ROOT / "platform/lmrec/evaluation/metrics.py")
    config = _load_source_module("_lmrec_eval_config", ROOT / "platform/lmrec/evaluation/config.py")
    ec = config.EvalConfig()
    return {f"{split}/{p}/{n}" for p in ec.protocols for n in metrics.metric_names(ec.ks)}


def train_published_keys() -> set[str]:
    """Every key `run_training` passes to `ctx.publish`, read from loop.py's syntax tree."""
    fn = _function(ast.parse(LOOP_PY.read_text()), "run_training")
    dict_keys: dict[str, set[str]] = {}  # local dict variables -> the keys they can hold
    for node in ast.walk(fn):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                dict_keys.setdefault(target.id, set()).update(_const_keys(node.value))
    for node in ast.walk(fn):  # x.update(evaluate(..., "valid", ...)) / x.update({...})
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in dict_keys
        ):
            arg = node.args[0]
            if isinstance(arg, ast.Dict):
                dict_keys[node.func.value.id] |= _const_keys(arg)
            elif isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id == "evaluate":
                split = next(a.value for a in arg.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
                dict_keys[node.func.value.id] |= _evaluation_keys(split)
    published: set[str] = set()
    calls = [
        n
        for n in ast.walk(fn)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "publish"
    ]
    assert calls, "run_training no longer calls ctx.publish; update the dashboard and this test"
    for call in calls:
        arg = call.args[0]
        if isinstance(arg, ast.Dict):
            published |= _const_keys(arg)
            continue
        assert isinstance(arg, ast.DictComp), f"unhandled publish argument: {ast.unparse(arg)}"
        gen = arg.generators[0]
        source = gen.iter.func.value.id  # <dict>.items()
        keys = set(dict_keys[source])
        for cond in gen.ifs:
            text = ast.unparse(cond)
            if text == "'/' in k":
                keys = {k for k in keys if "/" in k}
            else:
                assert text.startswith("isinstance(v"), f"unhandled publish filter: {text}"
        key_expr = ast.unparse(arg.key)
        if key_expr == "k":
            published |= keys
        else:
            prefix = re.fullmatch(r"f'([^{}]*)\{k\}'", key_expr)
            assert prefix, f"unhandled publish key: {key_expr}"
            published |= {prefix.group(1) + k for k in keys}
    return published


def train_metrics() -> dict[str, tuple[str, set[str]]]:
    """Gauge name -> ("Gauge", tag keys) as RayTrainContext.publish creates them."""
    cls = next(
        n
        for n in ast.walk(ast.parse(CONTEXT_PY.read_text()))
        if isinstance(n, ast.ClassDef) and n.name == "RayTrainContext"
    )
    publish = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "publish")
    naming = [
        ast.unparse(n.value)
        for n in ast.walk(publish)
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and n.targets[0].id == "key"
    ]
    assert naming == ["'lmrec_train_' + ''.join((c if c.isalnum() else '_' for c in name))"], (
        f"RayTrainContext.publish names its gauges differently now ({naming}); update this test and the dashboard"
    )
    fn = _function(ast.parse(LOOP_PY.read_text()), "run_training")
    tags = next(
        _const_keys(n.value)
        for n in ast.walk(fn)
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and n.targets[0].id == "gauge_tags"
    )
    return {
        "lmrec_train_" + "".join(c if c.isalnum() else "_" for c in k): ("Gauge", tags) for k in train_published_keys()
    }


def exported_names() -> dict[str, tuple[str, set[str]]]:
    """Prometheus series name -> (metric name in the code, labels it may carry)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for name, (kind, tags) in {**serve_metrics(), **train_metrics()}.items():
        base = PROM_PREFIX + name
        if kind == "Histogram":
            out[base + "_bucket"] = (name, tags | {"le"})
            out[base + "_sum"] = (name, tags)
            out[base + "_count"] = (name, tags)
        elif kind == "Counter":
            out[base if base.endswith("_total") else base + "_total"] = (name, tags)
        else:
            out[base] = (name, tags)
    return out


# ---------------------------------------------------------------- serve-deploy YAMLs


@pytest.mark.parametrize("path", [SERVE_YAML, SERVE_CLUSTER_YAML], ids=lambda p: p.name)
def test_serve_deploy_yaml_args_validate_as_serve_config(path: Path) -> None:
    app = _serve_app(yaml.safe_load(path.read_text()))
    assert app["import_path"] == "lmrec.serving.app:build_app"  # the installed package, any working directory
    from_dict(ServeConfig, app["args"])  # raises ConfigError naming the key


def test_cluster_serve_yaml_is_the_same_app_with_the_api_key_on() -> None:
    base = _serve_app(yaml.safe_load(SERVE_YAML.read_text()))
    cluster_config = yaml.safe_load(SERVE_CLUSTER_YAML.read_text())
    cluster = _serve_app(cluster_config)
    cfg = from_dict(ServeConfig, cluster["args"])
    assert cfg.api_key_env == "LMREC_SERVE_API_KEY" and not cfg.api_key_file
    assert not from_dict(ServeConfig, base["args"]).api_key_env
    extra = {k: v for k, v in cluster["args"].items() if k not in base["args"]}
    assert set(extra) <= {"api_key_env", "api_key_file", "api_key_header"}, extra
    assert {k: v for k, v in cluster["args"].items() if k in base["args"]} == base["args"]
    assert [d["name"] for d in cluster["deployments"]] == [d["name"] for d in base["deployments"]]
    # cluster.yaml exports the variable before `ray start` on every node
    assert "LMREC_SERVE_API_KEY" in (ROOT / "cluster.yaml").read_text()
    assert "working_dir" not in cluster["runtime_env"]  # the nodes' lmrec install has the app: no checkout
    _validate_serve_deploy_schema(cluster_config)
    _validate_serve_deploy_schema(yaml.safe_load(SERVE_YAML.read_text()))  # the local one too


# ---------------------------------------------------------------- KubeRay


def _ray_containers(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _check_cluster_spec(spec: dict[str, Any]) -> None:
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"  # KubeRay sets RAY_AUTH_MODE/RAY_AUTH_TOKEN everywhere
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    groups = spec["workerGroupSpecs"]
    assert {g["groupName"] for g in groups} == {"cpu", "gpu"}
    for g in groups:
        assert 0 <= g["minReplicas"] <= g["maxReplicas"], g["groupName"]
        assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]
    gpu = next(g for g in groups if g["groupName"] == "gpu")
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    for container in _ray_containers(spec):
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://lmrec-mlflow:5000", container["name"]
        key = env["LMREC_SERVE_API_KEY"]
        assert "value" not in key and key["valueFrom"]["secretKeyRef"]["name"], "the API key must come from a Secret"
        for e in env.values():  # no literal token or key in the manifest
            assert not (e["name"].startswith("RAY_AUTH_TOKEN") and "value" in e)


def test_raycluster_manifest() -> None:
    docs = _load_yaml_docs(RAYCLUSTER)
    rc = _one(docs, "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    _check_cluster_spec(rc["spec"])
    mlflow = _one(docs, "Deployment")
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["mlflow", "server"] and "--serve-artifacts" in container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]  # DB URI (with password) from a Secret
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert "lmrec-mlflow" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"]
    service = _one(docs, "Service")
    assert service["metadata"]["name"] == "lmrec-mlflow" and service["spec"]["ports"][0]["port"] == 5000


def test_rayservice_manifest_embeds_the_cluster_app_with_the_api_key_on() -> None:
    rs = _one(_load_yaml_docs(RAYSERVICE), "RayService")
    assert rs["apiVersion"] == "ray.io/v1"
    _check_cluster_spec(rs["spec"]["rayClusterConfig"])
    serve_config = yaml.safe_load(rs["spec"]["serveConfigV2"])  # a YAML document in a string
    app = _serve_app(serve_config)
    cfg = from_dict(ServeConfig, app["args"])
    assert cfg.api_key_env or cfg.api_key_file, "the API key must be on in the cluster's serve config"
    for container in _ray_containers(rs["spec"]["rayClusterConfig"]):
        assert cfg.api_key_env in {e["name"] for e in container["env"]}, container["name"]
    cluster_app = _serve_app(yaml.safe_load(SERVE_CLUSTER_YAML.read_text()))
    assert app["args"] == cluster_app["args"]
    assert app["deployments"] == cluster_app["deployments"]
    assert app["import_path"] == cluster_app["import_path"] and app["runtime_env"] == cluster_app["runtime_env"]
    _validate_serve_deploy_schema(serve_config)


# ---------------------------------------------------------------- Grafana


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert m, f"variable {var['name']}: unexpected query {query}"
            out.append((f"variable {var['name']}", f'{m.group(1)}{{{m.group(2)}!=""}}'))
    return out


def test_dashboard_structure() -> None:
    dash = _dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for wanted in (
        "samples/s",
        "loss",
        "ndcg@10",
        "latency p50 / p95 / p99",
        "batch size",
        "cache hit",
        "exploration",
        "click-through",
        "feedback rate",
        "model version per replica",
    ):
        assert wanted in titles, wanted


def test_every_dashboard_metric_exists_in_the_code() -> None:
    exported = exported_names()
    used: set[str] = set()
    for where, expr in _expressions(_dashboard()):
        assert not re.search(r"(?<![A-Za-z0-9_])lmrec_\w+", expr), (
            f"{where}: metric without Ray's '{PROM_PREFIX}' prefix in {expr}"
        )
        names = re.findall(r"(?<![A-Za-z0-9_])(ray_lmrec_\w+)", expr)
        assert names, f"{where}: no lmrec metric in {expr}"
        unknown = sorted(set(names) - set(exported))
        assert not unknown, f"{where}: {unknown} are not defined in lmrec.serving.metrics or published by loop.py"
        used |= {exported[n][0] for n in names}
        # labels in selectors and `by (...)` must be tags of the metrics queried
        labels = set(RAY_DEFAULT_LABELS)
        for n in names:
            labels |= exported[n][1]
        for selector in re.findall(r"ray_lmrec_\w+\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                assert label in labels, f"{where}: label {label!r} is not a tag of {names}"
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in (s.strip() for s in group.split(",") if s.strip()):
                assert label in labels, f"{where}: label {label!r} is not a tag of {names}"
    missing = sorted(set(serve_metrics()) - used)
    assert not missing, f"serving metrics without a dashboard panel: {missing}"


def test_training_keys_read_from_the_source() -> None:
    keys = train_published_keys()
    # per-step, per-epoch, validation and final metrics, as the dashboard expects them
    assert {"loss", "samples_per_s", "train_loss", "epoch", "global_step", "lr"} <= keys
    assert {"valid/full/ndcg@10", "valid/full/hr@10", "final/test/full/ndcg@10", "final/test/sampled/ndcg@10"} <= keys
    names = train_metrics()
    assert names["lmrec_train_valid_full_ndcg_10"] == ("Gauge", {"run", "dataset"})


# ---------------------------------------------------------------- docs


def test_cluster_and_monitoring_docs_cover_token_auth_and_grafana_import() -> None:
    for name in ("cluster.md", "monitoring.md"):
        text = (ROOT / "docs" / name).read_text()
        assert "RAY_AUTH_MODE=token" in text and "RAY_AUTH_TOKEN" in text, f"{name}: token authentication"
        assert "docs/grafana/lmrec_dashboard.json" in text and "Import" in text, f"{name}: Grafana import"
    cluster = (ROOT / "docs" / "cluster.md").read_text()
    for needle in (
        "ray up cluster.yaml",
        "ray down cluster.yaml",
        "ray dashboard cluster.yaml",
        "lmrec submit pipeline --config jobs/configs/pipeline/ml100k.yaml",
        "ray job submit --working-dir . -- python jobs/pipeline.py",
        "MLFLOW_TRACKING_URI",
        "serve_apps/recommender_cluster.yaml",
        "docs/kuberay/raycluster.yaml",
        "docs/kuberay/rayservice.yaml",
        "safetensors",
    ):
        assert needle in cluster, needle
    monitoring = (ROOT / "docs" / "monitoring.md").read_text()
    for name in exported_names():
        if name.startswith("ray_lmrec_serve_") and not name.endswith(("_sum", "_count")):
            assert name in monitoring, f"monitoring.md does not list {name}"
    assert "lmrec.pipeline_run_id" in monitoring and "ray metrics launch-prometheus" in monitoring
