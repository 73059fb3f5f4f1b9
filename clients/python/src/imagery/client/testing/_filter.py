"""ListImages' `filter` in the fake: the AIP-160 subset imagery's DeliveryService accepts (it
parses with lark, which the client does not depend on; here a small recursive-descent parser
with the same grammar, tokens, limits and refusals), answered as imagery's SQL answers it:
a label comparison on an image without that label is unknown, and its NOT is true (NOT is
two-valued, as `!=` is)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imagery.client.testing import _rules
from imagery.v1 import image_pb2

MAX_LENGTH = 2000
MAX_TERMS = 50
MAX_DEPTH = 32
HOW = (
    "filter on status (= or !=, e.g. status = READY), labels.<key> (= or !=, e.g. "
    'labels.team = "feed"), labels:<key>, or create_time (<, <=, >, >=, =, != with an RFC 3339 '
    'timestamp, e.g. create_time > "2026-12-01T00:00:00Z"), joined by AND, OR, NOT and '
    "parentheses"
)
_STATUSES = ("PENDING", "PROCESSING", "READY", "FAILED", "BLOCKED")

# imagery's terminals, tried in its lexer's order: the keywords (priority 2) before names, so
# that where a keyword may come, "NOTE" is NOT then E, as imagery reads it.
_TOKENS = {
    kind: re.compile(pattern)
    for kind, pattern in (
        ("NOT", r"NOT|-"),
        ("AND", r"AND"),
        ("OR", r"OR"),
        ("CMP", r"<=|>=|!=|<|>|=|:"),
        ("(", r"\("),
        (")", r"\)"),
        (".", r"\."),
        ("STRING", r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'"),
        ("TEXT", r"[^\s.:()<>=!\"'\-][^\s.:()<>=!\"']*"),
    )
}
_SPACE = re.compile(r"[ \t\r\n]+")
_TERM_START = frozenset({"NOT", "(", "STRING", "TEXT"})
_AFTER_TERM = _TERM_START | {"AND", "OR", ")"}
_NAME = frozenset({"STRING", "TEXT"})
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_ESCAPABLE = frozenset(b"\n\\'\"abfnrtv01234567xuUN")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

# A node answers True, False, or None (unknown, as SQL's NULL): only True is listed.
Match = Callable[[image_pb2.Image], bool | None]
Node = tuple[Any, ...]  # ("and" | "or", [nodes]), ("not", node), ("cmp", [names], op, value)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def refuse(problem: str) -> _rules.Refusal:
    return _rules.invalid("filter", problem, HOW)


class _Parser:
    """expression: sequence (AND sequence)*; sequence: factor+; factor: term (OR term)*;
    term: NOT? (restriction | "(" expression ")"); restriction: name ("." name)* CMP value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def peek(self, kinds: frozenset[str]) -> _Token | None:
        """The next token of one of `kinds` (None at the end); a syntax error otherwise."""
        space = _SPACE.match(self.text, self.at)
        start = space.end() if space else self.at
        if start == len(self.text):
            return None
        for kind, pattern in _TOKENS.items():
            found = pattern.match(self.text, start) if kind in kinds else None
            if found:
                return _Token(kind, found[0])
        raise self.error(start)

    def take(self, kinds: frozenset[str]) -> _Token:
        token = self.peek(kinds)
        if token is None:
            raise self.error(len(self.text))
        space = _SPACE.match(self.text, self.at)
        self.at = (space.end() if space else self.at) + len(token.text)
        return token

    def error(self, where: int) -> _rules.Refusal:
        return refuse(f"is not valid AIP-160 at column {where + 1}")

    def whole(self) -> Node:
        tree = self.expression()
        if self.peek(_AFTER_TERM) is not None:
            raise self.error(self.at)
        return tree

    def expression(self) -> Node:
        parts = [self.sequence()]
        while (token := self.peek(_AFTER_TERM)) is not None and token.kind == "AND":
            self.take(_AFTER_TERM)
            parts.append(self.sequence())
        return ("and", parts)

    def sequence(self) -> Node:
        parts = [self.factor()]
        while (token := self.peek(_AFTER_TERM)) is not None and token.kind in _TERM_START:
            parts.append(self.factor())
        return ("and", parts)

    def factor(self) -> Node:
        parts = [self.term()]
        while (token := self.peek(_AFTER_TERM)) is not None and token.kind == "OR":
            self.take(_AFTER_TERM)
            parts.append(self.term())
        return ("or", parts)

    def term(self) -> Node:
        token = self.take(_TERM_START)
        negated = token.kind == "NOT"
        if negated:
            token = self.take(frozenset({"(", "STRING", "TEXT"}))
        if token.kind == "(":
            inner = self.expression()
            if self.take(_AFTER_TERM).kind != ")":
                raise self.error(self.at)
        else:
            names = [token]
            while (following := self.take(frozenset({".", "CMP"}))).kind == ".":
                names.append(self.take(_NAME))
            inner = ("cmp", names, following.text, self.take(_NAME))
        return ("not", inner) if negated else inner


def _text(token: _Token) -> str:
    """A name or value: a quoted string unescaped as imagery does (an unknown escape such as
    \\q is kept as it is), anything else as written."""
    if token.kind != "STRING":
        return token.text
    raw = token.text[1:-1].encode("latin-1", "backslashreplace")
    kept = _ESCAPE.sub(lambda m: m[0] if m[1][0] in _ESCAPABLE else b"\\" + m[0], raw)
    try:
        return kept.decode("unicode_escape")
    except UnicodeDecodeError:
        raise refuse(f"has the string {token.text}, whose escapes are not valid") from None


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


class _Compiler:
    def __init__(self) -> None:
        self.terms = 0

    def node(self, tree: Node) -> Match:
        kind = tree[0]
        if kind == "not":
            inner = self.node(tree[1])
            return lambda image: inner(image) is not True
        if kind == "cmp":
            return self.restriction(tree[1], tree[2], tree[3])
        parts = [self.node(part) for part in tree[1]]
        return _all(parts) if kind == "and" else _any(parts)

    def restriction(self, names: list[_Token], op: str, value: _Token) -> Match:
        member = tuple(_text(n) for n in names)
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise refuse(f"has more than {MAX_TERMS} comparisons")
        arg, field = _text(value), ".".join(member)
        if member == ("status",):
            return _status(op, arg)
        if member == ("create_time",):
            return _created(op, arg)
        if member[0] == "labels" and len(member) == 2:
            if op not in ("=", "!="):
                raise refuse(f"compares {field} with {op!r}; labels take = or !=")
            key = member[1]
            if op == "!=":  # IS DISTINCT FROM: an image without the label matches
                return lambda image: image.labels.get(key) != arg
            return lambda image: None if key not in image.labels else image.labels[key] == arg
        if member == ("labels",) and op == ":":
            return lambda image: arg in image.labels
        raise refuse(f"names {field!r} (with {op!r}), which imagery cannot filter on")


def _all(parts: list[Match]) -> Match:
    def match(image: image_pb2.Image) -> bool | None:
        answers = [part(image) for part in parts]
        return False if False in answers else None if None in answers else True

    return parts[0] if len(parts) == 1 else match


def _any(parts: list[Match]) -> Match:
    def match(image: image_pb2.Image) -> bool | None:
        answers = [part(image) for part in parts]
        return True if True in answers else None if None in answers else False

    return parts[0] if len(parts) == 1 else match


def _status(op: str, arg: str) -> Match:
    if op not in ("=", "!="):
        raise refuse(f"compares status with {op!r}; status takes = or !=")
    name = arg.removeprefix("IMAGE_STATUS_")
    if name not in _STATUSES:
        names = ", ".join(_STATUSES)
        raise refuse(f"compares status with {arg!r}, which is not one of {names}")
    status = image_pb2.ImageStatus.Value(f"IMAGE_STATUS_{name}")
    return lambda image: _COMPARE[op](image.status, status)


def _created(op: str, arg: str) -> Match:
    if op == ":":
        raise refuse("compares create_time with ':'; use <, <=, >, >=, = or !=")
    try:
        at = datetime.fromisoformat(arg)
    except ValueError:
        raise refuse(f"compares create_time with {arg!r}, which is not a timestamp") from None
    if at.tzinfo is None:
        raise refuse(f"compares create_time with {arg!r}, which has no time zone (add Z)")
    return lambda image: _COMPARE[op](image.create_time.ToDatetime(UTC), at)


def parse_filter(text: str) -> Callable[[image_pb2.Image], bool]:
    """Whether an image is listed under `text`; a Refusal (INVALID_ARGUMENT on `filter`) for
    a filter imagery would refuse."""
    if not text.strip():
        return lambda image: True
    if len(text) > MAX_LENGTH:
        raise refuse(f"is {len(text)} characters long, more than {MAX_LENGTH}")
    if _depth(text) > MAX_DEPTH:
        raise refuse(f"nests parentheses more than {MAX_DEPTH} deep")
    match = _Compiler().node(_Parser(text).whole())
    return lambda image: match(image) is True
