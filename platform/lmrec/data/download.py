"""Locate dataset files; fetch missing MovieLens zips from GroupLens and verify them.

Offline, or for a dataset with no official URL, `locate_dataset` fails with a
message that says where to put the files. The checksum is the MD5 that GroupLens
publishes beside each zip (`<zip>.md5`); a mismatch deletes the download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from lmrec.data.readers import DatasetSpec
from lmrec.paths import lmrec_home


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are absent and could not be downloaded."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _candidates(spec: DatasetSpec, data_dir: Path) -> list[Path]:
    rel = Path(spec.relative_path)
    # Accept both <data_dir>/movielens/ml-1m/ratings.dat and <data_dir>/ml-1m/ratings.dat,
    # and the download cache under LMREC_HOME.
    paths = [data_dir / rel, data_dir / Path(*rel.parts[1:]), lmrec_home() / "data" / rel]
    return list(dict.fromkeys(paths))


def _fetch(url: str, dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out)


def download_zip(spec: DatasetSpec, target_root: Path, timeout: float = 60.0) -> Path:
    """Download `spec.url`, check its MD5, extract `spec.member`; return the file's path."""
    if not spec.url or not spec.md5 or not spec.member:
        raise DatasetNotFound(f"{spec.name} has no official download URL")
    out_file = target_root / spec.relative_path
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_file.parent) as tmp:
        zpath = Path(tmp) / Path(spec.url).name
        _fetch(spec.url, zpath, timeout)
        got = md5sum(zpath)
        if got != spec.md5:
            raise DatasetNotFound(
                f"checksum mismatch for {spec.url}: got md5 {got}, expected {spec.md5}; the download was discarded"
            )
        with zipfile.ZipFile(zpath) as zf:
            try:
                info = zf.getinfo(spec.member)
            except KeyError as exc:
                raise DatasetNotFound(f"{spec.url} does not contain {spec.member}") from exc
            tmp_out = Path(tmp) / "member"
            with zf.open(info) as src, open(tmp_out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            # Keep the small side files (titles, users) that sit next to the ratings.
            prefix = spec.member.rsplit("/", 1)[0] + "/"
            for name in zf.namelist():
                if name.startswith(prefix) and name != spec.member and not name.endswith("/"):
                    side = out_file.parent / name[len(prefix) :]
                    if "/" not in name[len(prefix) :] and not side.exists():
                        with zf.open(name) as src, open(side, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        os.replace(tmp_out, out_file)  # atomic: a half-written file is never visible
    return out_file


def locate_dataset(spec: DatasetSpec, data_dir: Path, download: bool = True) -> Path:
    """Path of the dataset's interaction file, downloading it if allowed and possible."""
    for cand in _candidates(spec, data_dir):
        if cand.is_file():
            return cand
    where = data_dir / spec.relative_path
    if download and spec.url:
        target = (
            data_dir
            if os.access(data_dir if data_dir.exists() else data_dir.parent, os.W_OK)
            else lmrec_home() / "data"
        )
        try:
            return download_zip(spec, target)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            if isinstance(exc, DatasetNotFound):
                raise
            raise DatasetNotFound(
                f"{spec.name}: {where} is missing and {spec.url} could not be downloaded ({exc}). "
                f"Download it on a machine with internet access, check md5 {spec.md5}, and unzip it so that "
                f"{where} exists (or set LMREC_DATA_DIR / --data-dir to the folder holding movielens/)."
            ) from exc
    hint = f" or download {spec.url} (md5 {spec.md5})" if spec.url else ""
    raise DatasetNotFound(
        f"{spec.name}: {where} not found. Put the file there{hint}, or point LMREC_DATA_DIR / --data-dir "
        f"at the folder that holds it."
    )


def optional_locate(spec: DatasetSpec, data_dir: Path) -> Path | None:
    """Path if the file is already present, else None (never downloads)."""
    for cand in _candidates(spec, data_dir):
        if cand.is_file():
            return cand
    return None
