"""The no-Ray GPU benchmark run as a script on CPU: its FSDP2, crash/resume and forward checks over gloo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.data.config import DataConfig, SyntheticConfig
from lmrec.data.prepare import prepare_local
from lmrec.data.synthetic import generate


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    syn = SyntheticConfig(num_users=400, num_items=150, num_clusters=10, mean_seq_len=15, zipf_alpha=0.5, seed=1)
    cfg = DataConfig(dataset="synthetic", synthetic=syn)
    return prepare_local(cfg, generate(syn), tmp_path_factory.mktemp("prep") / "p").path


@pytest.mark.slow
@pytest.mark.timeout(900)  # the script subprocess alone may take up to 600 s
def test_gpu_benchmark_script_runs_its_checks_on_cpu(prepared: Path, tmp_path: Path) -> None:
    # The no-Ray GPU script (FSDP2 gradients vs one process, crash/resume, serving forward)
    # on gloo here; on a GPU it runs the same code over NCCL (docs/benchmarks.md).
    out = tmp_path / "gpu.json"
    cmd = [
        sys.executable,
        "-m",
        "lmrec.benchmarks.gpu",
        "--prepared",
        str(prepared),
        "--device",
        "cpu",
        "--parts",
        "fsdp,forward",
        "--check-size",
        "tiny",
        "--resume-steps",
        "4",
        "--forward-sizes",
        "tiny",
        "--batches",
        "1,4",
        "--repeats",
        "2",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["backend"] == "gloo"
    assert res["grad_check"]["fsdp_fp32"]["grad_rel_error"] < 1e-5
    assert res["grad_check"]["fsdp_bf16"]["grad_rel_error"] < 5e-2
    c = res["crash_resume"]
    assert c["ok"] and c["global_step"] == 12 and c["epochs_completed"] == [0, 1, 2] and c["resumed_restarts"] == 1
    assert [r["batch"] for r in res["forward"]] == [1, 4] and all(r["req_per_s"] > 0 for r in res["forward"])
