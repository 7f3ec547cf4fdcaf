"""The feedback log: a versioned Parquet schema for served slates and their rewards.

One row per served slate (request). Position k of the slate is index k of the
list columns `slate`, `positions`, `propensities` and `rewards`; `positions`
holds the display slot of each entry (0-based and distinct within a row, usually
0..K-1). `rewards` is null when the impression is written and is filled by
`join_rewards` once feedback (clicks) arrives; once filled, every entry must be a
finite number (graded rewards such as ratings or revenue are fine). `propensities[k]` is P(slate[k] shown at position k)
under the policy that served it, which the off-policy estimators divide by.

Files live under `<root>/date=YYYY-MM-DD/part-<utc>-<pid>-<uuid>.parquet` (Hive
partitions by the record's UTC date; `log_file_path`). The serving app's log folder
holds this log of served slates under `impressions/` and its feedback events
(`FEEDBACK_EVENT_SCHEMA`) under `feedback/`; this module is where that layout is defined. `FeedbackLogWriter` buffers records and
writes each batch as one file per UTC date: each goes to a hidden temporary
file, is fsynced, renamed into place, and the directory is fsynced (and the
parent of every folder the write had to create): readers never see a partial
file, and a record is acknowledged (durable) once `flush()` returns. If a write
fails, the files already written stay and count as written, and only the rows
not yet written go back to the buffer (ahead of newer records) for the next
flush: nothing is dropped or written twice by the writer itself.

Validation is pure pyarrow/numpy and raises `FeedbackLogError` naming the file
and column; bad propensities (<= 0, > 1, NaN or null) raise `PropensityError`
and bad rewards (NaN, inf or null inside a filled list) `RewardError`, both with
the number of offending rows. No Ray here: `lmrec.tuning.feedback_io` reads the
same files with Ray Data.
"""

from lmrec.exploration.logs.read import (
    check_columns,
    join_rewards,
    list_log_files,
    read_log_file,
    read_logs,
    slate_candidate_index,
    validate_schema,
    validate_table,
)
from lmrec.exploration.logs.schema import (
    COLUMNS,
    EVENT_JOIN_SCHEMA,
    FEEDBACK_DIR,
    FEEDBACK_EVENT_SCHEMA,
    FEEDBACK_SCHEMA,
    FILE_PREFIX,
    IMPRESSIONS_DIR,
    PARTITION_KEY,
    SCHEMA_VERSION,
    TMP_PREFIX,
    VERSION_KEY,
    FeedbackLogError,
    FeedbackRecord,
    PropensityError,
    RewardError,
    log_file_path,
    records_to_table,
)
from lmrec.exploration.logs.writer import FeedbackLogWriter, write_table_atomic

__all__ = [
    "COLUMNS",
    "EVENT_JOIN_SCHEMA",
    "FEEDBACK_DIR",
    "FEEDBACK_EVENT_SCHEMA",
    "FEEDBACK_SCHEMA",
    "FILE_PREFIX",
    "IMPRESSIONS_DIR",
    "PARTITION_KEY",
    "SCHEMA_VERSION",
    "TMP_PREFIX",
    "VERSION_KEY",
    "FeedbackLogError",
    "FeedbackLogWriter",
    "FeedbackRecord",
    "PropensityError",
    "RewardError",
    "check_columns",
    "join_rewards",
    "list_log_files",
    "log_file_path",
    "read_log_file",
    "read_logs",
    "records_to_table",
    "slate_candidate_index",
    "validate_schema",
    "validate_table",
    "write_table_atomic",
]
