"""The layout rules from DESIGN.md: platform/ is a source folder, models never import ray."""

from __future__ import annotations

import os
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


def _lint_imports(cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_linter_contracts_are_kept() -> None:
    """The layering contracts of pyproject.toml (transitive, lazy imports included) hold."""
    out = _lint_imports(ROOT, [ROOT / "platform", ROOT / "tests"])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_the_submodule_contract_catches_an_indirect_torch_distributed_import(tmp_path: Path) -> None:
    """The custom contract type sees `torch.distributed` reached through another module of the package."""
    pkg = tmp_path / "src" / "toypkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "training").mkdir()
    for init in (pkg / "__init__.py", pkg / "models" / "__init__.py", pkg / "training" / "__init__.py"):
        init.write_text("")
    (pkg / "models" / "net.py").write_text("import torch\n\n\ndef f():\n    from toypkg.training import shard\n")
    (pkg / "training" / "shard.py").write_text("import torch.distributed as dist\n")
    (tmp_path / "pyproject.toml").write_text(
        "[tool.importlinter]\n"
        'root_packages = ["toypkg"]\n'
        "include_external_packages = true\n"
        'contract_types = ["forbidden_submodules: lmrec_contracts.ForbiddenSubmoduleContract"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "models never import torch.distributed"\n'
        'type = "forbidden_submodules"\n'
        'source_modules = ["toypkg.models"]\n'
        'forbidden_submodules = ["torch.distributed"]\n'
    )
    out = _lint_imports(tmp_path, [tmp_path / "src", ROOT / "tests"])
    assert out.returncode == 1, out.stdout + out.stderr
    assert "toypkg.models.net -> toypkg.training.shard" in out.stdout.replace("\n", " ").replace("  ", " ")
    (pkg / "training" / "shard.py").write_text("import torch\n")
    assert _lint_imports(tmp_path, [tmp_path / "src", ROOT / "tests"]).returncode == 0


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


def test_test_module_basenames_are_unique() -> None:
    """pytest imports test files by basename (no __init__.py under tests/): two alike stop collection."""
    seen: dict[str, Path] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "conftest.py":
            continue
        assert path.name not in seen, f"{path.relative_to(ROOT)} and {seen[path.name].relative_to(ROOT)} share a name"
        seen[path.name] = path
