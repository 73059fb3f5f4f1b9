"""imagery-client as a user gets it: its wheel, built from clients/python, installed into a
clean virtualenv (CI's Python) with nothing else but the oldest grpcio, protobuf and
googleapis-common-protos it declares, as binary wheels. The tests build both once per
session."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients/python"
UV = ROOT / ".tools/bin/uv"
EXAMPLE = re.compile(
    r"<!-- client-example -->\s*```python\n(.*?)```\s*<!-- /client-example -->", re.S
)


def _uv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def _uv(*args: str, cwd: Path = ROOT) -> str:
    if not UV.exists():
        raise RuntimeError("uv is not installed in .tools/: run `make setup`")
    done = subprocess.run(
        [str(UV), *args], cwd=cwd, env=_uv_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"uv {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def declared_floors() -> dict[str, str]:
    """Each dependency clients/python/pyproject.toml declares, and its lowest version."""
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,\s]*)(,.*)?", requirement)
        if found is None:
            raise AssertionError(f"{requirement!r} declares no floor (>=)")
        floors[found[1].lower()] = found[2]
    return floors


def build_wheel(out: Path) -> Path:
    _uv("build", "--wheel", "--quiet", "--out-dir", str(out), str(CLIENT))
    (wheel,) = out.glob("imagery_client-*.whl")
    return wheel


def floor_venv(wheel: Path, where: Path) -> Path:
    """A virtualenv with the wheel and exactly the declared floors; its python."""
    _uv("venv", "--quiet", "--python", sys.executable, str(where))
    python = where / "bin/python"
    pins = [f"{name}=={version}" for name, version in declared_floors().items()]
    _uv(
        "pip",
        "install",
        "--quiet",
        "--python",
        str(python),
        "--only-binary",
        ":all:",
        str(wheel),
        *pins,
    )
    return python


def installed(python: Path) -> dict[str, str]:
    listing = json.loads(_uv("pip", "list", "--python", str(python), "--format", "json"))
    return {row["name"].lower(): row["version"] for row in listing}


def readme_example() -> tuple[Path, str]:
    """The client example, from the main README once it has one, else from the client's."""
    for readme in (ROOT / "README.md", CLIENT / "README.md"):
        found = EXAMPLE.search(readme.read_text())
        if found is not None:
            return readme, found[1]
    raise AssertionError("no <!-- client-example --> python block in README.md or clients/python")
