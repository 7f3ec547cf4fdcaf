"""Benchmark harnesses: each measures one part of lmrec against a baseline or a published figure.

No library package imports this one; `jobs/benchmark_*.py` are thin entry points into it
(`main` of each module). Harnesses that compare with scikit-learn or obp need the `[bench]`
extra (`pip install 'lmrec[bench]'`).

- `train`: bare PyTorch loop vs Ray Train, 1 and 2 workers (FSDP2).
- `gpu`, `gpu_train`: training and ranking checks on a GPU without Ray (FSDP2 over NCCL).
- `serve`, `serve_model`, `serve_report`: raw forward vs Ray Serve variants vs `serve_peer`,
  a plain FastAPI peer; `loadgen` drives them over HTTP.
- `feedback_log`: a FeedbackLog shard's CPU and memory per served slate, and ingest at 1, 2, 4 shards.
- `compression`, `compression_report`: teacher vs compressed variants (quality, size, latency).
- `ope`, `ope_solvers`, `ope_report`: off-policy estimators on the Open Bandit Dataset beside the
  published figures; `obd_bts` and `obd_prior` hold the evaluation policy, `sklearn_refit` the
  child script of the scikit-learn re-runs.
"""
