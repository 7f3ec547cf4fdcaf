"""The peer users would otherwise pick: one FastAPI + uvicorn process, same model, same batching.

Used by the serving benchmark as the baseline the Serve endpoint must match. It runs the
same `LoadedModel.rank` behind an asyncio micro-batcher with the same batch size and
wait timeout as `@serve.batch`, and the forward in a worker thread. No exploration,
cache or logging: a lower bound on work, which makes the comparison strict for Serve.

    python -m lmrec.benchmarks.serve_peer --model-uri <folder> --port 8100 --max-batch-size 64
"""

import argparse
import asyncio
import uuid
from typing import Any

import numpy as np


class MicroBatcher:
    """Collect up to `max_batch_size` requests or `timeout_s`, then run one forward."""

    def __init__(self, fn: Any, max_batch_size: int, timeout_s: float) -> None:
        self.fn, self.max_batch_size, self.timeout_s = fn, max_batch_size, timeout_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def submit(self, item: Any) -> Any:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.timeout_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            try:
                results = await loop.run_in_executor(None, self.fn, [b[0] for b in batch])
                for (_, fut), res in zip(batch, results):
                    fut.set_result(res)
            except Exception as exc:  # noqa: BLE001 (the batch's requests get the error)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)


def make_app(
    model_uri: str,
    max_batch_size: int,
    timeout_s: float,
    threads: int,
    forward: str = "auto",
    rows_per_forward: int | None = None,
    device: str = "auto",
) -> Any:
    from fastapi import FastAPI

    from lmrec.config import from_dict
    from lmrec.serving.config import ServeConfig
    from lmrec.serving.runtime import RequestError, load_model
    from lmrec.serving.schemas import RecommendRequest

    cfg = from_dict(
        ServeConfig,
        {
            "model_uri": model_uri,
            "torch_threads": threads,
            "forward": forward,
            "device": device,
            "batch": {"rows_per_forward": rows_per_forward},
        },
    )
    loaded = load_model(model_uri, cfg)
    app = FastAPI(title="plain FastAPI peer")
    rows = cfg.batch.forward_rows(loaded.device.type)  # the same length-sorted forwards as the Serve app

    def rank_batch(items: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        n = max(k for _, k in items)
        cand, scores = loaded.rank([h for h, _ in items], n, [True] * len(items), rows)
        return [(cand[i, :k], scores[i, :k]) for i, (_, k) in enumerate(items)]

    batcher = MicroBatcher(rank_batch, max_batch_size, timeout_s)

    @app.post("/recommend")
    async def recommend(body: RecommendRequest) -> Any:
        try:
            hist = loaded.to_idx(body.history or [])
        except RequestError as exc:
            from fastapi.responses import JSONResponse

            return JSONResponse(status_code=exc.status, content={"error": str(exc)})
        cand, scores = await batcher.submit((hist, body.k))
        return {
            "request_id": uuid.uuid4().hex,
            "items": loaded.to_ids(cand).tolist(),
            "scores": scores.astype(float).tolist(),
            "model_version": loaded.version,
        }

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    return app


def app_from_env() -> Any:
    """uvicorn factory for `--workers N`: each worker process loads the model and batches on its own."""
    import os

    return make_app(
        os.environ["LMREC_PEER_MODEL_URI"],
        int(os.environ["LMREC_PEER_MAX_BATCH_SIZE"]),
        float(os.environ["LMREC_PEER_BATCH_WAIT_S"]),
        int(os.environ["LMREC_PEER_THREADS"]),
        os.environ.get("LMREC_PEER_FORWARD", "auto"),
        int(os.environ["LMREC_PEER_ROWS"]) if os.environ.get("LMREC_PEER_ROWS") else None,
        os.environ.get("LMREC_PEER_DEVICE", "auto"),
    )


def main(argv: list[str] | None = None) -> int:
    import os

    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--model-uri", required=True)
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--batch-wait-timeout-s", type=float, default=0.005)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--forward", default="auto", choices=["auto", "eager", "torchscript"], help="as ServeConfig.forward")
    p.add_argument("--rows-per-forward", type=int, default=None, help="as BatchConfig.rows_per_forward")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="as ServeConfig.device")
    p.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (each with its own model and batcher)"
    )
    args = p.parse_args(argv)
    # Every worker process (one by default) builds its app from these through the factory.
    os.environ.update(
        {
            "LMREC_PEER_MODEL_URI": args.model_uri,
            "LMREC_PEER_MAX_BATCH_SIZE": str(args.max_batch_size),
            "LMREC_PEER_BATCH_WAIT_S": str(args.batch_wait_timeout_s),
            "LMREC_PEER_THREADS": str(args.threads),
            "LMREC_PEER_FORWARD": args.forward,
            "LMREC_PEER_DEVICE": args.device,
            "LMREC_PEER_ROWS": "" if args.rows_per_forward is None else str(args.rows_per_forward),
        }
    )
    uvicorn.run(
        "lmrec.benchmarks.serve_peer:app_from_env",
        factory=True,
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
