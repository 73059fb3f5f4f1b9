"""`make proto-breaking`: the imagery.v1 contract may grow, never break. Run against a
scratch repository holding this Makefile, protos/ and the vendored googleapis, so each case
has the history it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
IMAGE_PROTO = "protos/imagery/v1/image.proto"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "third_party", tmp_path / "third_party")
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "v1")
    return tmp_path


def _proto_breaking(repo: Path) -> subprocess.CompletedProcess[str]:
    stamp = VENV / ".synced"  # the installed tools are used as they are, never re-synced here
    return subprocess.run(
        ["make", "-s", "-o", str(stamp), "proto-breaking", f"VENV={VENV}", "RUN="],
        cwd=repo,
        env={**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )


def _edit(repo: Path, old: str, new: str) -> None:
    path = repo / IMAGE_PROTO
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_committed_contract_is_compatible_with_itself(repo: Path) -> None:
    result = _proto_breaking(repo)
    assert result.returncode == 0, result.stderr
    assert "compatible with all 1 committed version" in result.stdout


def test_an_added_enum_value_is_allowed(repo: Path) -> None:
    added = "IMAGE_STATUS_FAILED = 4;\n  IMAGE_STATUS_ARCHIVED = 6;"
    _edit(repo, "IMAGE_STATUS_FAILED = 4;", added)
    result = _proto_breaking(repo)
    assert result.returncode == 0, result.stderr


def test_a_renumbered_value_fails_and_says_what_to_do(repo: Path) -> None:
    _edit(repo, "IMAGE_STATUS_FAILED = 4;", "IMAGE_STATUS_FAILED = 6;")
    result = _proto_breaking(repo)
    assert result.returncode != 0
    assert 'enum value "4" on enum "ImageStatus" was deleted' in result.stdout + result.stderr
    assert "never rename, renumber or remove" in result.stderr


def test_go_package_is_set_by_managed_mode_not_in_the_published_protos() -> None:
    import yaml

    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    assert template["managed"]["enabled"] is True
    overrides = {o["file_option"]: o["value"] for o in template["managed"]["override"]}
    assert overrides["go_package_prefix"].startswith("github.com/")
    plugins = {Path(p["local"]).name: p for p in template["plugins"]}
    assert {"protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-es"} <= set(plugins)
    assert "target=ts" in plugins["protoc-gen-es"]["opt"]
    for proto in (ROOT / "protos").rglob("*.proto"):
        assert "go_package" not in proto.read_text(), f"{proto.name}: a file option would break"
