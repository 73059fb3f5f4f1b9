"""The layering contracts in pyproject.toml hold today, and break when code breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    ROOT / "clients/python/src/imagery",
    ROOT / "libs/common/src/imagery",
    *sorted(ROOT.glob("services/*/src/imagery")),
    ROOT / "deploy/local/src/imagery",
    ROOT / "tools/admin/src/imagery",
]


# lint-imports over `tree` alone: the workspace's own source directories (editable installs)
# leave sys.path, or the namespace package would resolve to both copies.
_RUN = """
import sys
sys.path[:] = [sys.argv[1]] + [
    p for p in sys.path[1:] if not (p.startswith(sys.argv[2]) and p.endswith("/src"))
]
from importlinter.cli import lint_imports_command
sys.argv = ["lint-imports", "--no-cache", sys.argv[3]]
sys.exit(lint_imports_command())
"""


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, str(tree), str(ROOT), str(ROOT / "pyproject.toml")],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The imagery namespace package, every part merged into one directory."""
    for source in SOURCES:
        shutil.copytree(source, tmp_path / "imagery", dirs_exist_ok=True)
    return tmp_path


def test_the_code_keeps_every_contract(tree: Path) -> None:
    result = _lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("upload/use_cases.py", "import asyncpg", "import no driver"),
        ("delivery/use_cases.py", "import grpc", "import no driver"),
        ("processor/use_cases/process_upload.py", "import PIL.Image", "import no driver"),
        (
            "processor/ports.py",
            "from imagery.processor.adapters import isolation",
            "import no driver",
        ),
        ("delivery/use_cases.py", "from imagery.upload import use_cases", "No service imports"),
        ("common/domain.py", "from imagery.delivery import variants", "imports no service"),
        ("admin/rpc.py", "from imagery.upload import projects", "imagery-admin imports no"),
        ("upload/use_cases.py", "from imagery.admin import output", "imagery-admin imports no"),
        ("client/sync.py", "from imagery.common import errors", "nothing of the server side"),
        ("client/testing/_store.py", "import imagery.upload", "nothing of the server side"),
    ],
)
def test_a_violation_fails_the_check(tree: Path, module: str, line: str, contract: str) -> None:
    path = tree / "imagery" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(contract in row for row in broken) or contract in result.stdout, result.stdout
