"""The last step of `lmrec demo`: promote the new model, serve it, send a few requests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from lmrec.data.sequences import SequenceData


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def serve_demo(result: Any, port: int = 8000) -> None:
    """champion <- the demo's version; deploy lmrec.serving.app; recommend + feedback."""
    from lmrec.serving import launch
    from lmrec.tracking.mlflow_utils import set_alias

    set_alias("lmrec-seqrec", "champion", result.model_version)
    print(f"\n[lmrec demo] promoted lmrec-seqrec/{result.model_version} to @champion; deploying the Serve app ...")
    url = launch.start({"model_uri": "models:/lmrec-seqrec@champion", "alias_poll_s": 5}, port=port)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                if r.status == 200:
                    break
        except Exception:  # noqa: BLE001 (still loading)
            time.sleep(1)
    data = SequenceData.load(result.prepared.path, with_meta=False)
    for u in range(3):
        user = int(data.user_ids[u])
        status, body = _post(f"{url}/recommend", {"user_id": user, "k": 5})
        print(
            f"POST /recommend user_id={user}: {status} items={body.get('items')} "
            f"propensities={[round(p, 3) for p in body.get('propensities', [])]} policy={body.get('policy')}"
        )
        if status == 200:
            s2, fb = _post(
                f"{url}/feedback", {"request_id": body["request_id"], "item_id": body["items"][0], "reward": 1}
            )
            print(f"POST /feedback (click on item {body['items'][0]}): {s2} {fb.get('status', fb.get('error'))}")
    status, body = _post(f"{url}/recommend", {"user_id": -1, "k": 5})
    print(f"POST /recommend unknown user: {status} {body.get('error')}")
    print(
        f"\nrecommender: {url}  (OpenAPI docs at {url}/docs; the app stops when this process ends — "
        f"use `ray start --head` + `lmrec serve` for a lasting one)"
    )
