"""Multi-node training on one machine with Ray's own test utilities (`ray.cluster_utils.Cluster`).

Run as a separate process by test_multinode.py (a driver can join only one Ray cluster, and
the test session already has one):

    python tests/integration/multinode_scenario.py OUT.json

A head with no CPUs (the driver and Train controller live there) and two 1-CPU worker nodes
join; a 2-worker STRICT_SPREAD training run puts one worker on each; once checkpoints exist,
the node of one worker is removed without grace (a lost machine) and a replacement node is
added (what the autoscaler does). The run must resume from its checkpoint and finish every
epoch exactly once. What happened is written to OUT.json for the test to check.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path


def _train_workers() -> list[dict]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [{"pid": a.pid, "node_id": a.node_id} for a in actors]


def main(out_path: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from lmrec.config import load_config
    from lmrec.data.config import DataConfig, SyntheticConfig
    from lmrec.training.checkpoint import read_state
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.trainer import run_train_job

    work = Path(tempfile.mkdtemp(prefix="lmrec-mn-"))
    report: dict = {"events": []}
    from lmrec.cluster.local import free_port

    # Its own dashboard port: another Ray on this machine (a user's, the test session's) may hold 8265.
    # The GCS declares a silent node dead after `health_check_failure_threshold` missed checks, one every
    # `health_check_period_ms` (3 s x 5 by default): checked every second, the lost node is noticed in
    # about 3 s; a check still waits up to its own timeout, so a busy but live raylet is not declared dead.
    # Its processes name this cluster when Ray code in them auto-detects "the" cluster (Train's placement
    # group cleaner does): other Ray instances run on this machine, and auto-detection fails among several.
    gcs_port = free_port()
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{gcs_port}"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "gcs_server_port": gcs_port,
            "num_cpus": 0,
            "dashboard_port": free_port(),
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        report["events"].append(f"nodes up at {time.time():.0f}")
        report["nodes_alive_at_start"] = sum(1 for n in ray.nodes() if n["Alive"])

        # The integration session's dataset (a cache hit under its LMREC_HOME; else Ray Data prepares it here).
        # Every node reads the same local folder on this machine (object storage on a real cluster).
        data = DataConfig(
            dataset="synthetic",
            synthetic=SyntheticConfig(num_users=600, num_items=300, num_clusters=12, mean_seq_len=20),
        )
        job = load_config(
            TrainJobConfig,
            None,
            [
                "train.epochs=4",
                "train.num_workers=2",
                "train.strategy=ddp",
                "train.placement_strategy=STRICT_SPREAD",
                "train.batch_size=16",
                "train.max_steps_per_epoch=8",
                "train.checkpoint_every_steps=4",
                "train.max_failures=3",
                f"train.storage_path={work / 'storage'}",
                "train.run_name=mn-run",
                "eval.protocols=[full]",
                "eval.every_epochs=0",
                "eval.max_users=100",
                "tracking.experiment=it-multinode",
                "tracking.register=false",
            ],
        )
        job.data = data
        outcome: dict = {}

        def fit() -> None:
            try:
                outcome["result"] = run_train_job(job)
            except BaseException as exc:  # noqa: BLE001 (reported to the test, which asserts on it)
                outcome["error"] = repr(exc)

        thread = threading.Thread(target=fit, daemon=True)
        thread.start()
        report["events"].append(f"training started at {time.time():.0f}")
        run_dir = work / "storage" / "mn-run"
        deadline = time.time() + 300
        removed = None
        while time.time() < deadline and thread.is_alive():
            ckpts = list(run_dir.glob("checkpoint_*")) if run_dir.exists() else []
            # The state API only once checkpoints exist: each call costs the dashboard and this driver CPU.
            if len(ckpts) >= 2 and len(_train_workers()) == 2:
                time.sleep(2.0)  # let the controller register the newest checkpoint
                workers = _train_workers()
                report["worker_nodes_before"] = sorted({w["node_id"] for w in workers})
                victim_id = workers[-1]["node_id"]
                victim = next(n for n in nodes if n.node_id == victim_id)
                cluster.remove_node(victim, allow_graceful=False)  # the machine is gone
                removed = victim_id
                report["events"].append(f"removed node {victim_id[:8]} at {time.time():.0f}")
                nodes.append(cluster.add_node(num_cpus=1))  # its replacement joins
                report["events"].append(f"added node {nodes[-1].node_id[:8]} at {time.time():.0f}")
                break
            time.sleep(0.5)
        report["removed_node"] = removed
        after: set = set()
        while thread.is_alive():
            now = {w["node_id"] for w in _train_workers()}
            if now - after - set(report.get("worker_nodes_before", [])):
                report["events"].append(f"workers on the new node at {time.time():.0f}")
            after |= now
            thread.join(timeout=1.0)
        report["events"].append(f"training returned at {time.time():.0f}")
        report["worker_nodes_after"] = sorted(after)
        if "error" in outcome:
            report["error"] = outcome["error"]
        else:
            result = outcome["result"]
            state = read_state(result.checkpoint_path)
            report.update(
                {
                    "restarts": result.metrics.get("restarts"),
                    "global_step": result.metrics.get("global_step"),
                    "epochs_completed": state.epochs_completed if state else None,
                    "history_steps": [h["global_step"] for h in state.history] if state else None,
                    "test_ndcg_at_10": result.metrics.get("test/full/ndcg@10"),
                }
            )
    finally:
        Path(out_path).write_text(json.dumps(report, indent=1))
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    os.environ.pop("RAY_ADDRESS", None)
    main(sys.argv[1])
