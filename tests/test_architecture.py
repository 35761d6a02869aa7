"""The layering holds by machine: import-linter's contracts (pyproject.toml), and what it cannot name."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "clipforge"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_import_linter_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([lint], cwd=SRC.parents[1], capture_output=True, text=True)
    assert result.returncode == 0 and "BROKEN" not in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
    assert "KEPT" in result.stdout  # the contracts were found and checked


def test_only_train_touches_torch_distributed():
    offenders = [
        str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
        if "train" not in path.relative_to(SRC).parts[:1]
        and any(name == "torch.distributed" or name.startswith("torch.distributed.") for name in _imports(path))
    ]
    assert offenders == []
    # ... and train really does (the check would be empty otherwise)
    assert any("torch.distributed" in _imports(p) for p in (SRC / "train").rglob("*.py"))


def test_no_cli_module_imports_another_command():
    shared = {"clipforge.cli.common"}
    for path in (SRC / "cli").glob("*.py"):
        others = {n for n in _imports(path) if n.startswith("clipforge.cli.") and n.rsplit(".", 1)[0] not in shared
                  and n not in shared and not n.startswith("clipforge.cli.common")}
        if path.name == "main.py":  # main registers the commands: it names them, importlib loads them
            continue
        assert not others, f"{path.name} imports {sorted(others)}: shared pieces belong in cli/common.py"
