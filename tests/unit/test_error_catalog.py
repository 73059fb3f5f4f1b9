"""The error catalog has one source of truth: every reason the code can raise or record is an
`imagery.v1.ErrorReason` value, has a status, and is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grpc

from imagery.common import errors
from imagery.common.grpc.errors import STATUS_TABLE
from imagery.v1 import errors_pb2

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "ERROR_REASON_"
ENUM = {
    name.removeprefix(PREFIX)
    for name in errors_pb2.ErrorReason.keys()  # noqa: SIM118 - an enum wrapper, not a dict
    if name != f"{PREFIX}UNSPECIFIED"
}


def _conditions() -> list[type[errors.ImageryError]]:
    found, todo = [], [errors.ImageryError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


def _recorded_failure_reasons() -> set[str]:
    """String reasons the processor records: `Rejected("X", ...)`, `_fail(record, key, "X")`,
    `failure_reason="X"` and what `_death_reason` returns."""
    reasons: set[str] = set()
    for path in (ROOT / "services/processor/src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                args = {"Rejected": node.args[:1], "_fail": node.args[2:3]}.get(name, [])
                args += [k.value for k in node.keywords if k.arg == "failure_reason"]
                reasons |= {str(a.value) for a in args if isinstance(a, ast.Constant)}
            if isinstance(node, ast.FunctionDef) and node.name == "_death_reason":
                reasons |= {
                    str(c.value)
                    for c in ast.walk(node)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
    return reasons


def test_every_condition_has_a_reason_in_the_enum_and_a_status() -> None:
    for condition in _conditions():
        assert condition.reason in ENUM, f"{condition.__name__}.reason {condition.reason}"
        if condition is not errors.ImageryError:
            assert condition in STATUS_TABLE, f"{condition.__name__} has no status"


def test_each_condition_names_its_own_reason() -> None:
    reasons = [c.reason for c in _conditions()]
    assert len(reasons) == len(set(reasons))


def test_every_failure_reason_the_processor_records_is_in_the_enum() -> None:
    recorded = _recorded_failure_reasons()
    assert {"CORRUPT", "MEMORY_LIMIT", "CPU_LIMIT", "NOT_UPLOADED"} <= recorded
    assert recorded <= set(errors.FAILURE_REASONS)
    assert set(errors.FAILURE_REASONS) <= ENUM


def test_every_value_is_used_and_nothing_else_is_in_the_enum() -> None:
    used = {c.reason for c in _conditions()} | set(errors.FAILURE_REASONS)
    assert used | set(errors.RETIRED_REASONS) == ENUM
    assert not used & set(errors.RETIRED_REASONS)


def test_every_value_is_documented_in_the_proto_and_the_readme() -> None:
    proto = (ROOT / "protos/imagery/v1/errors.proto").read_text().splitlines()
    for number, line in enumerate(proto):
        if re.match(rf"\s*{PREFIX}\w+ = \d+;", line):
            assert proto[number - 1].strip().startswith("//"), f"undocumented: {line.strip()}"
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Errors") :]
    section = section[: section.index("\n## ", 3)]
    missing = [reason for reason in sorted(ENUM) if f"`{reason}`" not in section]
    assert missing == [], f"README's Errors section does not mention {missing}"


def test_the_status_table_uses_canonical_codes_only() -> None:
    assert set(STATUS_TABLE.values()) <= set(grpc.StatusCode)
