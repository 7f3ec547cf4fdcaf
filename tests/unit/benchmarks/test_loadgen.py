"""The load generators against a tiny HTTP server on loopback: an open-loop client keeps its schedule
through a server stall and counts the stall against every request scheduled during it; a closed-loop
client does not (coordinated omission)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from lmrec.benchmarks.loadgen import arrival_offsets, run_load, run_open_loop

STALL_S = 0.4


class _Handler(BaseHTTPRequestHandler):
    """Answers at once, except a body with "stall" holds the (single-threaded) server for STALL_S."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("stall"):
            time.sleep(STALL_S)
        payload = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class _Server(HTTPServer):
    request_queue_size = 256  # connections that arrive during a stall wait in the backlog, not refused


@pytest.fixture()
def url() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _bodies(n: int, stall_at: int) -> list[dict]:
    return [{"i": i, **({"stall": True} if i == stall_at else {})} for i in range(n)]


def test_open_loop_counts_a_stall_against_every_request_scheduled_during_it(url: str) -> None:
    bodies = _bodies(60, stall_at=10)
    open_ = run_open_loop(url, bodies, rate=100, total=60, arrivals="fixed", warmup=0)
    closed = run_load(url, bodies, concurrency=1, total=60, warmup=0)
    assert open_.load.errors == 0 and closed.errors == 0
    # 100/s for a 0.4 s stall: about 40 requests were due while the server was held; the first of them
    # waited most of it. The closed-loop client sent nothing meanwhile, so only the stalled one is slow.
    assert int((open_.load.latencies_ms >= 150).sum()) >= 15
    assert int((closed.latencies_ms >= 150).sum()) <= 3
    s = open_.summary()
    assert s["offered_req_per_s"] == 100 and s["max_in_flight"] >= 15 and s["requests"] == 60


def test_open_loop_keeps_its_schedule_when_the_server_keeps_up(url: str) -> None:
    res = run_open_loop(url, _bodies(40, stall_at=-1), rate=100, total=40, arrivals="fixed", warmup=2)
    s = res.summary()
    assert s["errors"] == 0 and s["statuses"] == {"200": 40}
    assert 0.39 <= s["seconds"] < 1.5  # 40 sends 10 ms apart: the last at 0.39 s
    assert s["send_lag_p50_ms"] < 20 and s["p50_ms"] < 50


def test_arrival_offsets() -> None:
    fixed = arrival_offsets(50, 5, "fixed")
    assert np.allclose(fixed, [0, 0.02, 0.04, 0.06, 0.08])
    poisson = arrival_offsets(200, 20_000, "poisson", seed=1)
    assert poisson[0] == 0 and np.all(np.diff(poisson) >= 0)
    assert abs(np.diff(poisson).mean() - 1 / 200) < 0.0002  # exponential gaps of mean 1/rate
    assert not np.array_equal(poisson, arrival_offsets(200, 20_000, "poisson", seed=2))
    for bad in ((0, 5, "fixed"), (10, 0, "fixed"), (10, 5, "burst")):
        with pytest.raises(ValueError):
            arrival_offsets(*bad)
    with pytest.raises(ValueError, match="loopback"):
        run_open_loop("http://example.com/", [{}], 10, 5)
