"""ListImages' `filter`: the AIP-160 grammar (https://google.aip.dev/160), parsed by lark, then
checked against the fields imagery can filter on. Anything it cannot answer is refused with the
fields and operators it can: a filter is never silently ignored."""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, VisitError

from imagery.common.domain import ImageStatus
from imagery.common.errors import InvalidArgument
from imagery.common.listing import (
    AllOf,
    AnyOf,
    CreatedAt,
    Filter,
    HasLabel,
    LabelIs,
    Not,
    StatusIs,
)

MAX_LENGTH = 2000
MAX_TERMS = 50
MAX_DEPTH = 32
HOW = (
    "filter on status (= or !=, e.g. status = READY), labels.<key> (= or !=, e.g. "
    'labels.team = "feed"), labels:<key>, or create_time (<, <=, >, >=, =, != with an RFC 3339 '
    'timestamp, e.g. create_time > "2026-12-01T00:00:00Z"), joined by AND, OR, NOT and '
    "parentheses"
)

# AIP-160's EBNF (filter, expression, sequence, factor, term, restriction, member, composite)
# without functions and bare global restrictions, which imagery has no use for. Precedence as
# the AIP says: OR binds tighter than a whitespace sequence, which binds tighter than AND.
_GRAMMAR = r"""
start: expression?
expression: sequence (_AND sequence)*
sequence: factor+
factor: term (_OR term)*
term: NEGATION? simple
?simple: restriction | "(" expression ")"
restriction: member COMPARATOR value
member: name ("." name)*
?name: TEXT | STRING
?value: TEXT | STRING
NEGATION.2: "NOT" | "-"
_AND.2: "AND"
_OR.2: "OR"
COMPARATOR: "<=" | ">=" | "!=" | "<" | ">" | "=" | ":"
STRING: /"(?:[^"\\]|\\.)*"/ | /'(?:[^'\\]|\\.)*'/
TEXT: /[^\s.:()<>=!"'\-][^\s.:()<>=!"']*/
%ignore /[ \t\r\n]+/
"""


@cache
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)


# Python's escapes; any other backslash (as in "\q") is kept as written.
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_ESCAPABLE = frozenset(b"\n\\'\"abfnrtv01234567xuUN")


def _text(token: Token) -> str:
    raw = str(token)
    if token.type == "STRING":
        body = raw[1:-1].encode("latin-1", "backslashreplace")
        kept = _ESCAPE.sub(lambda m: m[0] if m[1][0] in _ESCAPABLE else b"\\" + m[0], body)
        try:
            return kept.decode("unicode_escape")
        except UnicodeDecodeError:
            raise _refuse(f"has the string {raw}, whose escapes are not valid") from None
    return raw


def _depth(text: str) -> int:
    """How deeply `text` nests parentheses outside its quoted strings."""
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _refuse(problem: str) -> InvalidArgument:
    return InvalidArgument("filter", problem, HOW)


@v_args(inline=True)
class _ToFilter(Transformer[Token, Filter | None]):
    def __init__(self) -> None:
        super().__init__()
        self.terms = 0

    def start(self, expression: Filter | None = None) -> Filter | None:
        return expression

    def expression(self, *parts: Filter) -> Filter:
        return parts[0] if len(parts) == 1 else AllOf(parts)

    def sequence(self, *parts: Filter) -> Filter:
        return parts[0] if len(parts) == 1 else AllOf(parts)

    def factor(self, *parts: Filter) -> Filter:
        return parts[0] if len(parts) == 1 else AnyOf(parts)

    def term(self, *parts: Any) -> Filter:
        return Not(parts[1]) if len(parts) == 2 else parts[0]

    def member(self, *names: Token) -> tuple[str, ...]:
        return tuple(_text(n) for n in names)

    def restriction(self, member: tuple[str, ...], comparator: Token, value: Token) -> Filter:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _refuse(f"has more than {MAX_TERMS} comparisons")
        op, arg = str(comparator), _text(value)
        field = ".".join(member)
        if member == ("status",):
            return _status(op, arg)
        if member == ("create_time",):
            return _created(op, arg)
        if member[0] == "labels" and len(member) == 2:
            if op not in ("=", "!="):
                raise _refuse(f"compares {field} with {op!r}; labels take = or !=")
            return LabelIs(op, member[1], arg)  # type: ignore[arg-type]
        if member == ("labels",) and op == ":":
            return HasLabel(arg)
        raise _refuse(f"names {field!r} (with {op!r}), which imagery cannot filter on")


def _status(op: str, arg: str) -> Filter:
    if op not in ("=", "!="):
        raise _refuse(f"compares status with {op!r}; status takes = or !=")
    name = arg.removeprefix("IMAGE_STATUS_")
    try:
        status = ImageStatus[name]
    except KeyError:
        names = ", ".join(s.name for s in ImageStatus)
        raise _refuse(f"compares status with {arg!r}, which is not one of {names}") from None
    return StatusIs(op, status)  # type: ignore[arg-type]


def _created(op: str, arg: str) -> Filter:
    if op == ":":
        raise _refuse("compares create_time with ':'; use <, <=, >, >=, = or !=")
    try:
        at = datetime.fromisoformat(arg)
    except ValueError:
        raise _refuse(f"compares create_time with {arg!r}, which is not a timestamp") from None
    if at.tzinfo is None:
        raise _refuse(f"compares create_time with {arg!r}, which has no time zone (add Z)")
    return CreatedAt(op, at)  # type: ignore[arg-type]


def parse_filter(text: str) -> Filter | None:
    """The filter tree for `text`, None for an empty filter; InvalidArgument otherwise."""
    if not text.strip():
        return None
    if len(text) > MAX_LENGTH:
        raise _refuse(f"is {len(text)} characters long, more than {MAX_LENGTH}")
    if _depth(text) > MAX_DEPTH:
        raise _refuse(f"nests parentheses more than {MAX_DEPTH} deep")
    try:
        tree = _parser().parse(text)
    except LarkError as exc:
        where = getattr(exc, "column", None)
        at = f" at column {where}" if isinstance(where, int) and where > 0 else ""
        raise _refuse(f"is not valid AIP-160{at}") from None
    try:
        return _ToFilter().transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, InvalidArgument):
            raise exc.orig_exc from None
        raise
