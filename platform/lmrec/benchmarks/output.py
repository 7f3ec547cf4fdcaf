"""Writing a harness's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_json(data: Any, path: str | Path) -> Path:
    """`data` as indented JSON at `path` (parents made), written to a temp file and renamed: never half-written."""
    import json

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(p)
    return p
