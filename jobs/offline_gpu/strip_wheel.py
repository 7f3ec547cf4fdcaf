"""Copy a wheel without some of its folders, every entry stored uncompressed and RECORD rewritten.

    python strip_wheel.py SRC.whl DEST_DIR [FOLDER ...]

Ray's wheel holds parts the serving benchmark never runs (Java jars, RLlib, Ray LLM). Dropping
them makes the bundle smaller, and storing the rest uncompressed lets the bundle's single xz pass
compress it far better than the wheel's own per-file deflate. The copy stays a valid wheel: RECORD
lists every remaining file with its sha256 and size, and each entry keeps its permission bits, so
pip installs it as usual (executables included).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import sys
import zipfile
from pathlib import Path


def strip_wheel(src: Path, dest_dir: Path, drop: list[str]) -> Path:
    """Write `dest_dir/<src name>`: `src` without the files under the folders in `drop`; return its path."""
    prefixes = tuple(d.strip("/") + "/" for d in drop)
    dest = Path(dest_dir) / Path(src).name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        records = [n for n in zin.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise ValueError(f"{src}: expected one top-level .dist-info/RECORD, found {records}")
        rows = []
        for info in zin.infolist():
            if info.is_dir() or info.filename == records[0] or info.filename.startswith(prefixes):
                continue
            data = zin.read(info)
            entry = zipfile.ZipInfo(info.filename, info.date_time)
            entry.external_attr = info.external_attr  # unix mode bits: pip keeps executables executable
            zout.writestr(entry, data, zipfile.ZIP_STORED)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append((info.filename, f"sha256={digest}", str(len(data))))
        rows.append((records[0], "", ""))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        zout.writestr(zipfile.ZipInfo(records[0], (1980, 1, 1, 0, 0, 0)), buf.getvalue(), zipfile.ZIP_STORED)
    return dest


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: strip_wheel.py SRC.whl DEST_DIR [FOLDER ...]")
    print(strip_wheel(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
