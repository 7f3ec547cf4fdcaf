"""Feedback logs: schema, partitions, atomic writes, no lost records, clear errors."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrec.exploration.logs import (
    FEEDBACK_SCHEMA,
    VERSION_KEY,
    FeedbackLogError,
    FeedbackLogWriter,
    FeedbackRecord,
    PropensityError,
    join_rewards,
    list_log_files,
    read_log_file,
    read_logs,
    records_to_table,
    validate_table,
)
from lmrec.exploration.logs import writer as logs_mod  # the writer module: tests patch its file writes
from lmrec.exploration.policies import build_policy

DAY1 = dt.datetime(2024, 3, 1, 23, 59, tzinfo=dt.timezone.utc)
DAY2 = dt.datetime(2024, 3, 2, 0, 1, tzinfo=dt.timezone.utc)


def record(i: int, ts: dt.datetime = DAY1, **over: object) -> FeedbackRecord:
    pol = build_policy({"type": "epsilon_greedy", "epsilon": 0.2, "slate_size": 2})
    cands = [10 + i, 20 + i, 30 + i, 40 + i]
    slate = pol.choose(cands, [0.4, 0.3, 0.2, 0.1], key=i)
    fields = dict(
        request_id=f"req-{i}",
        candidates=cands,
        scores=[0.4, 0.3, 0.2, 0.1],
        slate=slate.items.tolist(),
        propensities=slate.propensities.tolist(),
        policy=pol.type,
        policy_params=pol.config.to_dict(),
        timestamp=ts,
        user_id=f"u{i}",
        model_version="models:/lmrec-seqrec/1",
    )
    fields.update(over)
    return FeedbackRecord(**fields)  # type: ignore[arg-type]


def test_round_trip_with_date_partitions(tmp_path: Path) -> None:
    with FeedbackLogWriter(tmp_path, batch_size=100) as w:
        for i in range(5):
            w.append(record(i, DAY1 if i < 3 else DAY2))
        assert w.pending == 5
    files = list_log_files(tmp_path)
    assert sorted(f.parent.name for f in files) == ["date=2024-03-01", "date=2024-03-02"]
    table = read_logs(tmp_path)
    assert table.schema.equals(FEEDBACK_SCHEMA)
    assert sorted(table["request_id"].to_pylist()) == [f"req-{i}" for i in range(5)]
    assert table["rewards"].null_count == 5  # rewards are joined later
    assert pq.read_schema(files[0]).metadata[VERSION_KEY] == b"1"
    row = table.filter(pa.compute.equal(table["request_id"], "req-0")).to_pylist()[0]
    assert row["positions"] == [0, 1] and len(row["propensities"]) == 2


def test_batch_size_triggers_flush(tmp_path: Path) -> None:
    w = FeedbackLogWriter(tmp_path, batch_size=3)
    for i in range(7):
        w.append(record(i))
    assert w.records_written == 6 and w.pending == 1
    assert read_logs(tmp_path).num_rows == 6  # only acknowledged (flushed) records are visible
    w.close()
    assert read_logs(tmp_path).num_rows == 7


def test_failed_write_leaves_no_file_and_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = FeedbackLogWriter(tmp_path, batch_size=1000)
    for i in range(4):
        w.append(record(i))
    real_write = pq.write_table

    def crash_midway(table: pa.Table, where: object, **kw: object) -> None:
        where.write(b"PAR1 partial bytes")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(logs_mod.pq, "write_table", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        w.flush()
    assert list(tmp_path.rglob("*")) == [] or all(p.is_dir() for p in tmp_path.rglob("*"))  # no partial or temp file
    assert w.pending == 4 and w.records_written == 0
    w.append(record(4))
    monkeypatch.setattr(logs_mod.pq, "write_table", real_write)
    written = w.flush()
    assert len(written) == 1 and written[0].exists()
    assert sorted(read_logs(tmp_path)["request_id"].to_pylist()) == [f"req-{i}" for i in range(5)]


def test_readers_skip_in_flight_temp_files(tmp_path: Path) -> None:
    FeedbackLogWriter(tmp_path).write([record(0)])
    part = tmp_path / "date=2024-03-01"
    (part / ".part-crashed.parquet.abcd.tmp").write_bytes(b"half a file")
    (part / "_SUCCESS").write_text("")
    assert len(list_log_files(tmp_path)) == 1
    assert read_logs(tmp_path).num_rows == 1


def test_concurrent_appends_are_all_written_once(tmp_path: Path) -> None:
    w = FeedbackLogWriter(tmp_path, batch_size=7)

    def work(start: int) -> None:
        for i in range(start, start + 50):
            w.append(record(i))

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    ids = read_logs(tmp_path)["request_id"].to_pylist()
    assert len(ids) == 200 and len(set(ids)) == 200


def test_bad_propensities_are_rejected_with_a_count(tmp_path: Path) -> None:
    rows = [record(i).to_row() for i in range(6)]
    table = records_to_table(rows)
    props = [[0.5, 0.5], [0.0, 0.5], [0.5, 1.5], [float("nan"), 0.2], [0.5, 0.5], [-0.1, 0.3]]
    bad = table.set_column(
        table.schema.get_field_index("propensities"),
        FEEDBACK_SCHEMA.field("propensities"),
        pa.array(props, pa.list_(pa.float64())),
    )
    path = tmp_path / "bad.parquet"
    pq.write_table(bad, path)
    with pytest.raises(PropensityError) as err:
        read_log_file(path)
    assert err.value.bad_rows == 4
    assert str(path) in str(err.value) and "'propensities'" in str(err.value) and "4 of 6" in str(err.value)
    with pytest.raises(PropensityError):
        FeedbackLogWriter(tmp_path / "w").append(record(0, propensities=[0.0, 0.5]))


def test_schema_mismatch_names_file_and_column(tmp_path: Path) -> None:
    table = records_to_table([record(0).to_row()])
    wrong_type = table.set_column(
        table.schema.get_field_index("scores"),
        "scores",
        pa.array([["0.4", "0.3", "0.2", "0.1"]], pa.list_(pa.string())),
    )
    wrong_type = wrong_type.replace_schema_metadata(FEEDBACK_SCHEMA.metadata)
    p1 = tmp_path / "wrong_type.parquet"
    pq.write_table(wrong_type, p1)
    with pytest.raises(FeedbackLogError) as err:
        read_log_file(p1)
    assert (
        err.value.column == "scores"
        and str(p1) in str(err.value)
        and "string" in str(err.value)
        and "expected list" in str(err.value)
    )

    p2 = tmp_path / "missing.parquet"
    pq.write_table(table.drop_columns(["propensities"]), p2)
    with pytest.raises(FeedbackLogError) as err:
        read_log_file(p2)
    assert err.value.column == "propensities" and "missing" in str(err.value)

    p3 = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), p3)
    with pytest.raises(FeedbackLogError, match="not an lmrec feedback log"):
        read_log_file(p3)

    p4 = tmp_path / "garbage.parquet"
    p4.write_bytes(b"not parquet at all")
    with pytest.raises(FeedbackLogError, match="not a readable Parquet file"):
        read_log_file(p4)


def test_row_level_errors(tmp_path: Path) -> None:
    with pytest.raises(FeedbackLogError, match="not among the candidates"):
        record(0, slate=[999, 10]).to_row()
    with pytest.raises(FeedbackLogError) as err:
        record(0, propensities=[0.5]).to_row()
    assert err.value.column == "propensities"
    rows = [record(i).to_row() for i in range(3)]
    rows[2]["slate"] = [12, 999]
    rows[2]["candidates"][0] = 12
    table = pa.Table.from_pylist(rows, schema=FEEDBACK_SCHEMA)
    with pytest.raises(FeedbackLogError, match="1 row\\(s\\) show items that are not among their candidates"):
        validate_table(table, "x.parquet")


def test_join_rewards() -> None:
    table = records_to_table([record(i).to_row() for i in range(3)])
    slates = table["slate"].to_pylist()
    feedback = pa.table(
        {
            "request_id": ["req-0", "req-2", "req-2", "req-9"],
            "item_id": [slates[0][1], slates[2][0], slates[2][0], 5],
            "reward": [1.0, 0.0, 1.0, 1.0],  # duplicate feedback keeps the click; unknown request ignored
        }
    )
    joined = join_rewards(table, feedback)
    assert joined["rewards"].to_pylist() == [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    validate_table(joined)
    assert np.array_equal(
        joined["request_id"].to_numpy(zero_copy_only=False), table["request_id"].to_numpy(zero_copy_only=False)
    )


def test_failed_second_date_is_retried_without_duplicating_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = FeedbackLogWriter(tmp_path, batch_size=1000)
    w.append(record(0, DAY1))
    w.append(record(1, DAY2))
    w.append(record(2, DAY1))
    real = logs_mod.write_table_atomic
    calls = {"n": 0}

    def fail_second_call(table: pa.Table, path: Path) -> Path:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(table, path)

    monkeypatch.setattr(logs_mod, "write_table_atomic", fail_second_call)
    with pytest.raises(OSError, match="disk full"):
        w.flush()
    # DAY1's file (req-0, req-2) is durable and counted; only DAY2's row is still pending
    assert w.records_written == 2 and len(w.files_written) == 1 and w.files_written[0].parent.name == "date=2024-03-01"
    assert w.pending == 1
    w.append(record(3, DAY1))  # appended after the failure: queued behind the retried row
    assert [r["request_id"] for r in w._pending] == ["req-1", "req-3"]
    written = w.flush()
    assert sorted(p.parent.name for p in written) == ["date=2024-03-01", "date=2024-03-02"]
    assert w.records_written == 4 and w.pending == 0
    ids = read_logs(tmp_path)["request_id"].to_pylist()
    assert sorted(ids) == ["req-0", "req-1", "req-2", "req-3"]  # each exactly once


def test_new_partition_folders_are_fsynced_in_their_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(logs_mod, "_fsync_dir", lambda path: synced.append(Path(path)))
    root = tmp_path / "logs" / "feedback"  # neither exists yet
    FeedbackLogWriter(root).write([record(0, DAY1)])
    day = root / "date=2024-03-01"
    assert set(synced) == {tmp_path, tmp_path / "logs", root, day}  # every created folder's parent, and the file's
    synced.clear()
    FeedbackLogWriter(root).write([record(1, DAY1), record(2, DAY2)])
    assert synced == [day, root, root / "date=2024-03-02"]  # only the new date folder's parent is added


def _with_column(table: pa.Table, name: str, values: list) -> pa.Table:
    field = FEEDBACK_SCHEMA.field(name)
    return table.set_column(table.schema.get_field_index(name), field, pa.array(values, field.type))


def test_non_finite_and_null_rewards_are_rejected_with_a_count() -> None:
    table = records_to_table([record(i).to_row() for i in range(6)])
    nan, inf = float("nan"), float("inf")
    rewards = [[0.0, 1.0], None, [nan, 0.0], [1.0, None], [-2.5, 7.0], [inf, -inf]]  # graded / negative are fine
    with pytest.raises(FeedbackLogError) as err:
        validate_table(_with_column(table, "rewards", rewards), "r.parquet")
    assert err.value.column == "rewards" and "r.parquet" in str(err.value)
    assert "3 of 6 row(s)" in str(err.value) and "first at row 2" in str(err.value)
    validate_table(_with_column(table, "rewards", [[0.0, 1.0], None, [3.0, 0.0], [1.0, 0.5], [-2.5, 7.0], None]))
    for bad in ([nan, 1.0], [1.0, None], [0.0, inf]):
        with pytest.raises(FeedbackLogError) as err:
            record(0, rewards=bad).to_row()
        assert err.value.column == "rewards" and "1 of 1 row(s)" in str(err.value)
    assert record(0, rewards=[-1.0, 4.5]).to_row()["rewards"] == [-1.0, 4.5]


def test_null_propensity_elements_are_counted_as_bad() -> None:
    table = records_to_table([record(i).to_row() for i in range(4)])
    with pytest.raises(PropensityError) as err:
        validate_table(
            _with_column(table, "propensities", [[0.5, None], [0.5, 0.5], [None, None], [0.5, 0.5]]), "p.parquet"
        )
    assert err.value.bad_rows == 2 and "2 of 4" in str(err.value) and "first at row 0" in str(err.value)
    with pytest.raises(PropensityError):
        record(0, propensities=[0.5, None]).to_row()


def test_negative_and_repeated_positions_are_rejected_with_a_count() -> None:
    table = records_to_table([record(i).to_row() for i in range(5)])
    positions = [[0, 1], [1, 1], [-1, 0], [1, 0], [3, 3]]  # [1, 0] is fine: distinct, non-negative
    with pytest.raises(FeedbackLogError) as err:
        validate_table(_with_column(table, "positions", positions), "pos.parquet")
    assert err.value.column == "positions" and "pos.parquet" in str(err.value)
    assert "3 of 5 row(s)" in str(err.value) and "first at row 1" in str(err.value)
    validate_table(_with_column(table, "positions", [[0, 1], [2, 5], [1, 0], [0, 1], [4, 3]]))
    with pytest.raises(FeedbackLogError, match="'positions'.*1 of 1 row"):
        record(0, positions=[0, -1]).to_row()
    with pytest.raises(FeedbackLogError, match="'positions'.*repeated"):
        record(0, positions=[2, 2]).to_row()
    assert record(0, positions=[1, 0]).to_row()["positions"] == [1, 0]
