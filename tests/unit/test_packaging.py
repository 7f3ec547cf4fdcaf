"""lmrec as a user gets it, and the image the cluster docs name.

* The wheel: built from exactly the files the Dockerfile's builder stage copies (after .dockerignore),
  installed into an empty folder, then imported module by module and run as `lmrec` with neither the
  source tree nor the editable install on the path. Every module of platform/lmrec must be in it.
* The image: the Dockerfile's documented tags are the ones the KubeRay manifests and docs/cluster.md name,
  its versions agree with pyproject.toml, constraints.txt and the Makefile, and everything it copies is in the
  build context.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # `build` (a dev dependency) brings tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "platform"
DOCKERFILE = ROOT / "Dockerfile"
MANIFESTS = [ROOT / "docs" / "kuberay" / "raycluster.yaml", ROOT / "docs" / "kuberay" / "rayservice.yaml"]
REGISTRY = "YOUR-REGISTRY"  # the placeholder the manifests and docs/cluster.md use


# ---------------------------------------------------------------- reading the build files


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, keyed by the stage's `AS` name (or its index)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, args in _instructions():
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages.setdefault(name, [])
        if current is not None:
            current.append((keyword, args))
    return stages


def _arg_defaults() -> dict[str, str]:
    defaults: dict[str, str] = {}
    for keyword, args in _instructions():
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            defaults.setdefault(name, value)
    return defaults


def _copy_sources(args: str) -> tuple[list[str], str]:
    """COPY arguments -> (sources, destination); flags such as --chown dropped."""
    words = [w for w in args.split() if not w.startswith("--")]
    return words[:-1], words[-1]


def _context_sources() -> list[str]:
    """Every build-context path the Dockerfile reads: COPY sources and bind mounts not taken from a stage."""
    paths: list[str] = []
    for keyword, args in _instructions():
        if keyword == "COPY" and "--from=" not in args:
            paths += _copy_sources(args)[0]
        if keyword == "RUN":
            for mount in re.findall(r"--mount=(\S+)", args):
                opts = dict(kv.split("=", 1) for kv in mount.split(",") if "=" in kv)
                if opts.get("type") == "bind" and "from" not in opts:
                    paths.append(opts["source"])
    return [p.rstrip("/") for p in paths]


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception `!`, pattern) per .dockerignore line, in Docker's glob syntax (`**` spans folders)."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern, rx, i = line.lstrip("!").strip("/"), "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(rx + r"\Z")))
    return rules


def _in_context(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            included = negate
    return included


def _context_copy(sources: list[str], dest: Path) -> None:
    """Copy `sources` as `docker build` would see them (.dockerignore applied) to `dest`."""
    rules = _dockerignore()
    for src in sources:
        path = ROOT / src
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if _in_context(rel, rules):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / rel)


def _builder_sources() -> list[str]:
    """Paths the builder stage copies, each checked to land at its repository path under the WORKDIR."""
    builder = _stages()["builder"]
    workdir = next(args for keyword, args in builder if keyword == "WORKDIR").rstrip("/")
    sources = []
    for keyword, args in builder:
        if keyword != "COPY":
            continue
        srcs, dest = _copy_sources(args)
        for src in srcs:
            src = src.rstrip("/")
            if (ROOT / src).is_dir() or not dest.endswith("/"):
                target = dest.rstrip("/")  # a folder's contents go into dest
            else:
                target = dest.rstrip("/") + "/" + Path(src).name
            assert target == f"{workdir}/{src}", f"COPY {args}: {src} lands at {target}, not {workdir}/{src}"
            sources.append(src)
    return sources


def _expected_modules() -> set[str]:
    """Dotted names of every module under platform/lmrec, from the files."""
    names = set()
    for path in (SRC / "lmrec").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _source_files() -> list[str]:
    """Package files a wheel must hold (modules and data), as wheel paths."""
    return sorted(
        p.relative_to(SRC).as_posix()
        for p in (SRC / "lmrec").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def _documented_builds() -> dict[str, str]:
    """image tag -> VARIANT, for each `docker build` command in the Dockerfile's header comment."""
    default_variant = _arg_defaults()["VARIANT"]
    builds = {}
    for cmd in re.findall(r"^#\s+(docker build\s.*?)\s*(?:#.*)?$", DOCKERFILE.read_text(), re.M):
        tag = re.search(r"-t\s+(\S+)", cmd)
        assert tag and cmd.endswith(" ."), f"expected `docker build ... -t <tag> .` in the header: {cmd}"
        variant = re.search(r"--build-arg\s+VARIANT=(\S+)", cmd)
        builds[tag.group(1)] = variant.group(1) if variant else default_variant
    return builds


def _images(node: Any) -> list[str]:
    """Every `image:` value in a parsed YAML document."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + [
            i for v in node.values() for i in _images(v)
        ]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not pinned with =="
            pins[req.name.lower()] = spec.version
    return pins


# ---------------------------------------------------------------- the image (fast)


def test_documented_image_is_the_one_the_manifests_and_docs_name() -> None:
    version = _project()["version"]
    builds = _documented_builds()
    assert builds == {f"lmrec:{version}": builds.get(f"lmrec:{version}"), f"lmrec:{version}-cpu": "cpu"}, builds
    # one image for every pod: the head, CPU and GPU workers and the MLflow server, so the default is CUDA
    assert builds[f"lmrec:{version}"] != "cpu"
    assert f'org.opencontainers.image.version="{version}"' in DOCKERFILE.read_text()
    for manifest in MANIFESTS:
        images = [i for doc in yaml.safe_load_all(manifest.read_text()) if doc for i in _images(doc)]
        assert images and set(images) == {f"{REGISTRY}/lmrec:{version}"}, f"{manifest.name}: {sorted(set(images))}"
    cluster_md = (ROOT / "docs" / "cluster.md").read_text()
    for needle in (f"docker build -t lmrec:{version} .", f"docker push {REGISTRY}/lmrec:{version}", "VARIANT=cpu"):
        assert needle in cluster_md, f"docs/cluster.md: {needle}"


def test_image_versions_are_pinned_and_agree() -> None:
    args = _arg_defaults()
    pins = _pins(ROOT / "constraints.txt")
    assert args["RAY_VERSION"] == pins["ray"], "pip must keep the base image's Ray"
    makefile_torch = re.search(r"pip install torch==(\S+)", (ROOT / "Makefile").read_text())
    assert makefile_torch and args["TORCH_VERSION"] == pins["torch"] == makefile_torch.group(1)
    for dep in _project()["dependencies"]:
        req = Requirement(dep)
        name = req.name.lower()
        assert name in pins, f"constraints.txt does not pin {name}"
        assert req.specifier.contains(pins[name]), f"constraints.txt: {name}=={pins[name]} is outside {dep}"
    assert args["PYTHON_TAG"] == "py311", "the image's Python (rayproject/ray:...-py311-...)"


def test_build_context_holds_what_the_dockerfile_reads_and_no_junk() -> None:
    rules = _dockerignore()
    for src in _context_sources():
        assert (ROOT / src).exists(), f"the Dockerfile reads {src}, which does not exist"
        assert _in_context(src, rules), f".dockerignore leaves out {src}, which the Dockerfile reads"
    for junk in (
        ".git/HEAD",
        ".venv/bin/python",
        "build/lib/lmrec/cli.py",
        "dist/lmrec-0.1.0-py3-none-any.whl",
        "platform/lmrec.egg-info/PKG-INFO",
        "platform/lmrec/__pycache__/cli.cpython-311.pyc",
        "tests/unit/test_packaging.py",
        "out/run.json",
    ):
        assert not _in_context(junk, rules), f"{junk} would be sent to the Docker daemon"
    assert _in_context("platform/lmrec/cli.py", rules) and _in_context("serve_apps/recommender.yaml", rules)


# ---------------------------------------------------------------- the wheel (slow: a build and an install)

# Imports every module found by walking the installed package; prints what it saw as JSON.
_IMPORT_ALL = r"""
import importlib, json, pkgutil, sys, traceback
import lmrec
errors = {}
names = []
for info in pkgutil.walk_packages(lmrec.__path__, "lmrec.", onerror=lambda n: errors.setdefault(n, traceback.format_exc())):
    names.append(info.name)
    try:
        importlib.import_module(info.name)
    except Exception:
        errors[info.name] = traceback.format_exc()
loaded = {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n == "lmrec" or n.startswith("lmrec.")}
print(json.dumps({"file": lmrec.__file__, "path": sys.path, "modules": names, "errors": errors, "loaded": loaded}))
"""


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_and_runs_without_the_source_tree(tmp_path: Path) -> None:
    version = _project()["version"]
    # 1. The builder stage's files, as the Docker daemon would get them; the checkout stays untouched.
    src = tmp_path / "src"
    _context_copy(_builder_sources(), src)
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name == f"lmrec-{version}-py3-none-any.whl"

    # 2. Its contents: lmrec and its metadata only; every module and data file of platform/lmrec.
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"lmrec-{version}.dist-info/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {"lmrec", f"lmrec-{version}.dist-info"}
    missing = [f for f in _source_files() if f not in names]
    assert not missing, f"missing from the wheel (a folder without __init__.py, or package-data): {missing}"
    assert {"lmrec/demo.yaml", "lmrec/py.typed"} <= names
    assert re.search(r"^lmrec = lmrec\.cli:main$", entry_points, re.M), entry_points

    # 3. Installed into an empty folder, no index, no dependencies (they come from this environment).
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-index", "--no-deps"]
    _run([*pip, "--no-compile", "--no-warn-script-location", "--target", str(target), str(wheel)])

    # 4. A Python without site (-S): no .pth file runs, so the editable install cannot put platform/ on the
    #    path; the target first, then this environment's site-packages for the dependencies; cwd elsewhere.
    site_dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(target), *site_dirs]),
        PYTHONNOUSERSITE="1",
        LMREC_HOME=str(tmp_path / "home"),
        MPLBACKEND="Agg",
    )
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    seen = json.loads(
        _run([sys.executable, "-S", "-c", _IMPORT_ALL], cwd=run_dir, env=env).stdout.strip().splitlines()[-1]
    )
    assert Path(seen["file"]).is_relative_to(target), seen["file"]
    # The source tree, that is: a virtualenv inside the checkout (`make` puts .venv there) is not source.
    venv = Path(sys.prefix).resolve()
    leaks = [
        p
        for p in seen["path"]
        if p and Path(p).resolve().is_relative_to(ROOT) and not Path(p).resolve().is_relative_to(venv)
    ]
    assert not leaks, f"the source tree is on the path: {leaks}"
    outside = {n: f for n, f in seen["loaded"].items() if f and not Path(f).is_relative_to(target)}
    assert not outside, f"imported from outside the installed copy: {outside}"
    assert not seen["errors"], "\n".join(f"{n}:\n{tb}" for n, tb in seen["errors"].items())
    found, expected = set(seen["modules"]) | {"lmrec"}, _expected_modules()
    assert found == expected, (
        f"in platform/lmrec but not found in the installed package: {sorted(expected - found)} (a folder "
        f"without __init__.py is skipped by the package walk, or left out of the wheel); "
        f"in the wheel only: {sorted(found - expected)}"
    )

    # 5. The console script pip wrote, run by this interpreter on the same path.
    script = target / "bin" / "lmrec"
    usage = _run([sys.executable, "-S", str(script), "--help"], cwd=run_dir, env=env).stdout
    assert usage.startswith("usage: lmrec") and "models" in usage
    sizes = _run([sys.executable, "-S", str(script), "models"], cwd=run_dir, env=env).stdout
    assert "model sizes" in sizes and all(s in sizes for s in ("tiny", "small", "base", "large", "xl"))
