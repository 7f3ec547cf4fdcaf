"""Scenarios of the exploration search, prepared on the driver: what every trial shares.

`obd`: Open Bandit logs with cross-fitted reward models; `logs`: our own feedback logs read
with Ray Data (a serving log folder is joined here); `replay`: MovieLens replay events over a
model trained on the train period only, cached under LMREC_HOME/exploration/replay.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.config import config_hash, to_dict
from lmrec.exploration.objectives import LoggedScenario, ReplayScenario, Scenario, obd_logged
from lmrec.tracking.config import TrackingConfig
from lmrec.tuning.exploration.config import (
    LogsScenarioConfig,
    ObdScenarioConfig,
    ReplayScenarioConfig,
    TuneExplorationConfig,
)


def prepare_scenario(cfg: TuneExplorationConfig) -> Scenario:
    """Load data, fit reward models or build replay events: everything trials share."""
    if cfg.scenario == "obd":
        return prepare_obd(cfg.obd)
    if cfg.scenario == "logs":
        return prepare_logs(cfg.logs)
    return prepare_replay(cfg.replay)


def prepare_obd(oc: ObdScenarioConfig) -> LoggedScenario:
    from lmrec.data.open_bandit import load_obd
    from lmrec.exploration.open_bandit import fit_obd_rewards

    log = load_obd(oc.data_dir, oc.behavior, oc.campaign)
    if oc.max_rows is not None and oc.max_rows < log.n:
        log = _head(log, oc.max_rows)
    rewards = fit_obd_rewards(
        log, oc.n_folds, "auto" if oc.l2 is None else oc.l2, oc.seed, reward_model=oc.reward_model
    )
    scenario = LoggedScenario(
        obd_logged(log, rewards),
        rewards.fit,
        log.len_list,
        oc.estimator,
        oc.n_bootstrap,
        base_policy={"slate_size": log.len_list, "n_sim": oc.n_sim, "seed": oc.seed},
        info={
            "source": str(log.path),
            "samples": log.n,
            "behavior_value": log.on_policy_value,
            "reward_model": oc.reward_model,
            "reward_model_l2": rewards.fit.l2,
            "reward_model_oof_log_loss": rewards.fit.oof_log_loss,
        },
    )
    return with_warm_start(scenario, oc.warm_start_frac)


def with_warm_start(scenario: LoggedScenario, frac: float) -> LoggedScenario:
    """Split the logs in time: the first `frac` of requests warm up stateful policies, the rest
    is what every policy is scored on (the cross-fitted reward model is kept for those samples)."""
    if frac <= 0:
        return scenario
    from lmrec.exploration.log_ope import subset_rewards

    warm, rest, samples = scenario.logged.split(frac)
    info = {
        **scenario.info,
        "warm_start_requests": int(len(warm.slate_len)),
        "warm_start_samples": warm.n,
        "scored_requests": int(len(rest.slate_len)),
        "scored_samples": rest.n,
        "scored_behavior_value": float(rest.reward.mean()),
    }
    return dataclasses.replace(
        scenario, logged=rest, rewards=subset_rewards(scenario.rewards, samples), warm=warm, info=info
    )


def _head(log: Any, n: int) -> Any:
    sl = slice(0, n)
    return dataclasses.replace(
        log,
        actions=log.actions[sl],
        positions=log.positions[sl],
        rewards=log.rewards[sl],
        pscore=log.pscore[sl],
        timestamps=log.timestamps[sl],
        user_codes=log.user_codes[sl],
        affinity=log.affinity[sl],
    )


def prepare_logs(lc: LogsScenarioConfig) -> LoggedScenario:
    from lmrec.exploration.log_ope import LoggedSlates, fit_log_rewards
    from lmrec.training.trainer import ensure_ray
    from lmrec.tuning.feedback_io import is_served_log_dir, read_feedback_table, read_served_logs

    ensure_ray()
    join_info: dict[str, Any] = {}
    if is_served_log_dir(lc.path):  # the serving app's folder: join clicks to slates here
        table, join_info = read_served_logs(lc.path, lc.attribution_window_s)
    else:
        table = read_feedback_table(lc.path)  # Ray Data, validated per file
        table = table.sort_by(
            [("timestamp", "ascending"), ("request_id", "ascending")]
        )  # time order for warm_start_frac
    logged = LoggedSlates.from_table(table, lc.path, lc.drop_unrewarded)
    rewards = fit_log_rewards(logged, lc.n_folds, "auto" if lc.l2 is None else lc.l2, lc.seed)
    k = int(np.bincount(logged.slate_len).argmax())
    scenario = LoggedScenario(
        logged,
        rewards,
        k,
        lc.estimator,
        lc.n_bootstrap,
        base_policy={"slate_size": k, "n_sim": lc.n_sim, "seed": lc.seed},
        info={
            "source": lc.path,
            "requests": int(len(logged.slate_len)),
            "samples": logged.n,
            "behavior_value": float(logged.reward.mean()),
            "reward_model_l2": rewards.l2,
            **join_info,
        },
        cluster_by_request=lc.cluster_by_request,
    )
    return with_warm_start(scenario, lc.warm_start_frac)


def _replay_cache_dir(rc: ReplayScenarioConfig, source_fingerprint: str) -> Path:
    from lmrec.paths import lmrec_home

    rd = to_dict(rc)
    if not rd.get("valid_frac"):  # configs from before the validation period keep their caches
        rd.pop("valid_frac", None)
    if rc.model_uri and rc.model_uri.startswith("models:/"):  # an alias moves: key on the version it names now
        from lmrec.tracking.mlflow_utils import resolve_model_version

        mv = resolve_model_version(rc.model_uri)
        rd["model_uri"] = f"models:/{mv['name']}/{mv['version']}"
    key = config_hash({"replay": rd, "source": source_fingerprint, "version": 1})[:16]
    return lmrec_home() / "exploration" / "replay" / f"{rc.dataset}-{key}"


def load_interactions(dataset: str, data_dir: str | None) -> tuple[Any, str]:
    """The raw interaction table of a MovieLens/SASRec dataset and its file fingerprint.

    `synthetic` (for machines without MovieLens, e.g. tests) generates 600 users over 300
    items with the hidden cluster chain; every interaction is rated 5 (a click).
    """
    if dataset == "synthetic":
        import pyarrow as pa

        from lmrec.data.config import SyntheticConfig
        from lmrec.data.synthetic import generate

        scfg = SyntheticConfig(num_users=600, num_items=300, num_clusters=12, mean_seq_len=30)
        table = generate(scfg)
        i = table.schema.get_field_index("rating")  # by name, not position
        table = table.set_column(i, "rating", pa.array(np.full(table.num_rows, 5.0, dtype=np.float32)))
        return table, f"synthetic:{scfg.num_users}x{scfg.num_items}x{scfg.num_clusters}x{scfg.mean_seq_len}:{scfg.seed}"
    from lmrec.data.download import locate_dataset
    from lmrec.data.prepare import _file_fingerprint
    from lmrec.data.readers import dataset_spec, read_interactions
    from lmrec.paths import data_dir as resolve

    spec = dataset_spec(dataset)
    path = locate_dataset(spec, resolve(data_dir), download=False)
    return read_interactions(path, spec.fmt), _file_fingerprint([str(path)])


def train_replay_model(interactions: Any, before_ts: int, rc: ReplayScenarioConfig, out_dir: Path) -> Path:
    """Train a SeqRec model on interactions before `before_ts` only (no look-ahead); returns its folder."""
    import pyarrow.compute as pc

    from lmrec.data.config import DataConfig
    from lmrec.data.prepare import prepare_dataset
    from lmrec.evaluation.config import EvalConfig
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.context import LocalContext
    from lmrec.training.loop import run_training
    from lmrec.training.steps import EXPORT_DIR

    pre = interactions.filter(pc.less(interactions["ts"], before_ts)).sort_by(
        [("ts", "ascending"), ("user", "ascending"), ("item", "ascending")]
    )
    data_root = out_dir / "data"
    (data_root / "sasrec").mkdir(parents=True, exist_ok=True)
    lines = [f"{u} {i}" for u, i in zip(pre["user"].to_pylist(), pre["item"].to_pylist())]
    (data_root / "sasrec" / "replay_train.txt").write_text("\n".join(lines) + "\n")  # line order = time order
    dcfg = DataConfig(
        dataset="sasrec:replay_train",
        data_dir=str(data_root),
        download=False,
        min_user_interactions=rc.min_user_interactions,
        min_item_interactions=rc.min_item_interactions,
    )
    prepared = prepare_dataset(dcfg, cache_root=out_dir / "prepared")
    job = TrainJobConfig(
        data=dcfg,
        model=rc.model,
        train=rc.train,
        eval=EvalConfig(ks=[10], protocols=["full"], every_epochs=0, max_users=500),
        tracking=TrackingConfig(register=False),
        prepared_path=str(prepared.path),
    )
    ctx = LocalContext(root=out_dir / "train")
    metrics = run_training(job, ctx)
    model_dir = out_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(ctx.checkpoints[-1] / EXPORT_DIR, model_dir)
    shutil.rmtree(out_dir / "train", ignore_errors=True)  # checkpoints are not needed once exported
    (out_dir / "model_metrics.json").write_text(
        json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=1)
    )
    return model_dir


def prepare_replay(rc: ReplayScenarioConfig) -> ReplayScenario:
    """Events for the tune, validation (if any) and held-out periods (cached under LMREC_HOME/exploration/replay)."""
    from lmrec.exploration.replay import (
        PopularityScorer,
        ReplayEvents,
        SeqRecScorer,
        build_replay_events,
        fit_calibration,
    )

    interactions, fingerprint = load_interactions(rc.dataset, rc.data_dir)
    cache = _replay_cache_dir(rc, fingerprint)
    meta_path = cache / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        valid = ReplayEvents.load(cache / "valid.npz") if rc.valid_frac > 0 else None
        return ReplayScenario(
            ReplayEvents.load(cache / "tune.npz"),
            ReplayEvents.load(cache / "heldout.npz"),
            rc.slate_size,
            rc.report_every,
            meta["base_policy"],
            meta["info"],
            valid=valid,
        )
    t0 = time.time()
    cache.mkdir(parents=True, exist_ok=True)
    ts = interactions["ts"].to_numpy()
    fracs = [rc.train_frac, rc.train_frac + rc.tune_frac, rc.train_frac + rc.tune_frac + rc.valid_frac]
    t1, t2, t3 = (int(v) for v in np.quantile(ts, fracs))
    scorer: Any
    model_info: dict[str, Any] = {}
    if rc.scorer == "popularity":
        scorer = PopularityScorer(interactions, t1)
    else:
        from lmrec.models.artifacts import load_model_dir

        if rc.model_uri:
            from lmrec.tracking.mlflow_utils import download_model

            model_dir = download_model(rc.model_uri)
            model_info["model_uri"] = rc.model_uri
            model_info["warning"] = "a model trained on all data has seen the replay periods"
        else:
            model_dir = train_replay_model(interactions, t1, rc, cache)
            model_info["trained_before_ts"] = t1
            if (cache / "model_metrics.json").exists():
                model_info["metrics"] = json.loads((cache / "model_metrics.json").read_text())
        model, vocab, _ = load_model_dir(model_dir)
        scorer = SeqRecScorer(model, vocab, model.config.max_seq_len)
    common = dict(
        num_candidates=rc.num_candidates,
        stride=rc.stride,
        horizon=rc.horizon,
        click_threshold=rc.click_threshold,
        min_history=rc.min_history,
        seed=rc.seed,
    )
    calib = build_replay_events(interactions, scorer, int(ts.min()), t1, max_events=rc.calibration_events, **common)
    scale, shift = fit_calibration(calib)
    tune_ev = build_replay_events(interactions, scorer, t1, t2, max_events=rc.max_events, **common)
    valid_ev = (
        build_replay_events(interactions, scorer, t2, t3, max_events=rc.max_events, **common)
        if rc.valid_frac > 0
        else None
    )
    held_ev = build_replay_events(interactions, scorer, t3, int(ts.max()) + 1, max_events=rc.max_events, **common)
    if len(tune_ev) == 0 or len(held_ev) == 0 or (valid_ev is not None and len(valid_ev) == 0):
        raise ValueError(
            f"replay: no decision points in the tune ({len(tune_ev)}), validation "
            f"({None if valid_ev is None else len(valid_ev)}) or held-out ({len(held_ev)}) period"
        )
    base = {"slate_size": rc.slate_size, "score_scale": scale, "score_shift": shift, "seed": rc.seed}
    info = {
        "dataset": rc.dataset,
        "scorer": rc.scorer,
        "split_ts": [t1, t2, t3] if valid_ev is not None else [t1, t2],
        "tune_events": len(tune_ev),
        "heldout_events": len(held_ev),
        "calibration": {"scale": scale, "shift": shift, "events": len(calib)},
        "tune_oracle_per_event": float(tune_ev.oracle(rc.slate_size).mean()),
        "heldout_oracle_per_event": float(held_ev.oracle(rc.slate_size).mean()),
        "build_seconds": round(time.time() - t0, 1),
        **model_info,
    }
    if valid_ev is not None:
        info.update(valid_events=len(valid_ev), valid_oracle_per_event=float(valid_ev.oracle(rc.slate_size).mean()))
        valid_ev.save(cache / "valid.npz")
    tune_ev.save(cache / "tune.npz")
    held_ev.save(cache / "heldout.npz")
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"base_policy": base, "info": info}, indent=1))
    tmp.replace(meta_path)
    return ReplayScenario(tune_ev, held_ev, rc.slate_size, rc.report_every, base, info, valid=valid_ev)
