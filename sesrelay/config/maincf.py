"""main.cf syntax: logical lines, ``name = value`` assignments and ``$name`` expansion.

This follows postconf(5): empty lines and lines whose first non-blank character is ``#``
are ignored; a line that starts with whitespace continues the previous logical line; a
later assignment of the same name wins; ``$name``, ``${name}`` and ``$(name)`` expand to
the value of another parameter, ``${name?text}`` to text when name is non-empty and
``${name:text}`` to text when it is empty; ``$$`` is a literal dollar sign.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_ASSIGNMENT_RE = re.compile(r"^([^=\s]+)\s*=\s*(.*)$", re.DOTALL)


class ConfigError(ValueError):
    """A configuration problem, with the place it comes from in front of the message."""

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        self.detail = message
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class ConfigWarning:
    """A configuration warning: something that works, but not as a reader may expect."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Assignment:
    """One ``name = value`` setting, with where it was made (``file:line`` or ``$VAR``)."""

    name: str
    value: str
    where: str


def parse_main_cf(text: str, source: str,
                  errors: list[ConfigError] | None = None) -> list[Assignment]:
    """Split main.cf text into assignments, in file order.

    A line with bad syntax raises ConfigError, or, when errors is a list, is recorded
    there and skipped, so that one run can report every bad line.
    """
    assignments: list[Assignment] = []
    pending: tuple[int, list[str]] | None = None

    def report(error: ConfigError) -> None:
        if errors is None:
            raise error
        errors.append(error)

    def finish() -> None:
        if pending is None:
            return
        lineno, parts = pending
        try:
            assignments.append(_assignment(" ".join(parts), f"{source}:{lineno}"))
        except ConfigError as exc:
            report(exc)

    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0].isspace():
            if pending is None:
                report(ConfigError(
                    "continuation line (it starts with whitespace) with no parameter before it",
                    f"{source}:{lineno}",
                ))
                continue
            pending[1].append(stripped)
            continue
        finish()
        pending = (lineno, [stripped])
    finish()
    return assignments


def _assignment(logical_line: str, where: str) -> Assignment:
    match = _ASSIGNMENT_RE.match(logical_line)
    if not match:
        raise ConfigError(
            f"expected 'name = value', got {logical_line[:60]!r}", where
        )
    name, value = match.group(1), match.group(2).strip()
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{name!r} is not a valid parameter name", where)
    return Assignment(name, value, where)


def expand(value: str, lookup: Callable[[str], str | None], where: str,
           _seen: Iterable[str] = ()) -> str:
    """Expand ``$name`` references in value, resolving each name with lookup.

    lookup returns None for a name that no parameter has; that is an error, as is a
    reference loop (``a = $b``, ``b = $a``).
    """
    seen = tuple(_seen)
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        name, conditional, text, i = _reference(value, i, where)
        if name in seen:
            raise ConfigError(f"${name} refers to itself (through {' -> '.join(seen)})", where)
        resolved = lookup(name)
        if resolved is None:
            raise ConfigError(f"${name}: no such parameter", where)
        resolved = expand(resolved, lookup, where, (*seen, name))
        if conditional == "?":
            out.append(expand(text, lookup, where, seen) if resolved else "")
        elif conditional == ":":
            out.append("" if resolved else expand(text, lookup, where, seen))
        else:
            out.append(resolved)
    return "".join(out)


_CLOSERS = {"{": "}", "(": ")"}


def _reference(value: str, start: int, where: str) -> tuple[str, str, str, int]:
    """Parse the reference at value[start] (a '$'); return name, conditional, text, end."""
    i = start + 1
    if i < len(value) and value[i] in _CLOSERS:
        closer = _CLOSERS[value[i]]
        depth, j = 1, i + 1
        while j < len(value) and depth:
            if value[j] == value[i]:
                depth += 1
            elif value[j] == closer:
                depth -= 1
            j += 1
        if depth:
            raise ConfigError(f"unbalanced {value[i]!r} in {value[start:start + 40]!r}", where)
        inner = value[i + 1 : j - 1]
        match = NAME_RE.match(inner)
        if not match:
            raise ConfigError(f"bad parameter reference {value[start:j]!r}", where)
        name, rest = match.group(0), inner[match.end():]
        if rest and rest[0] in "?:":
            text = rest[1:]
            if text.startswith("{") and text.endswith("}"):
                text = text[1:-1]
            return name, rest[0], text, j
        if rest:
            raise ConfigError(f"bad parameter reference {value[start:j]!r}", where)
        return name, "", "", j
    match = NAME_RE.match(value, i)
    if not match:
        raise ConfigError(f"'$' not followed by a parameter name in {value!r} (use $$ for $)",
                          where)
    return match.group(0), "", "", match.end()


def split_list(value: str) -> list[str]:
    """Split a Postfix list value on commas and whitespace, keeping ``{ ... }`` groups whole."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
        if depth == 0 and (ch == "," or ch.isspace()):
            if current:
                items.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        items.append("".join(current))
    return items
