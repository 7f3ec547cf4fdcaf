"""The layout rules from DESIGN.md: platform/ is a source folder, models never import ray."""

from __future__ import annotations

import ast
import platform
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_platform_is_the_standard_library_module() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(platform.__file__).resolve().parent == stdlib
    assert callable(platform.system) and platform.system()


def test_platform_folder_has_no_init_and_does_not_shadow_from_repo_root() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()
    # Ray puts a job's working dir first on sys.path; the stdlib module must still win.
    code = "import sys, platform; sys.path.insert(0, '.'); import importlib; import platform as p; print(p.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "site-packages" not in out.stdout and str(ROOT / "platform") not in out.stdout
    assert out.stdout.strip().endswith("platform.py")


def test_lmrec_imports_from_the_platform_source_folder() -> None:
    import lmrec

    assert Path(lmrec.__file__).resolve().parent == ROOT / "platform" / "lmrec"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_model_code_never_imports_ray_or_torch_distributed() -> None:
    for folder in ("models", "exploration", "compression"):
        for path in (ROOT / "platform" / "lmrec" / folder).rglob("*.py"):
            bad = {n for n in _imports(path) if n == "ray" or n.startswith(("ray.", "torch.distributed"))}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_job_files_stay_thin() -> None:
    for path in (ROOT / "jobs").glob("*.py"):
        code_lines = [
            line for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#")
        ]
        assert len(code_lines) <= 60, f"{path.name} has {len(code_lines)} lines: move the work into the library"


NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)$")
NOQA_WITH_REASON = re.compile(r":\s*[A-Z]+[0-9]+\b(?:\s*,\s*[A-Z]+[0-9]+\b)*\s*(?:\(|-|—|:)?\s*\w")


def test_every_noqa_names_its_codes_and_a_reason() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if any(
            part in {".venv", "build", "dist", ".git"} or part.startswith(".") for part in path.relative_to(ROOT).parts
        ):
            continue
        for no, text in enumerate(path.read_text().splitlines(), 1):
            m = NOQA.search(text)
            if m and not NOQA_WITH_REASON.match(m.group("rest")):
                bad.append(f"{path.relative_to(ROOT)}:{no}: {text.strip()}")
    assert not bad, "a noqa needs its codes and a reason on the same line:\n" + "\n".join(bad)
