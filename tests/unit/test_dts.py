"""The wire-frame types of ``realtime.d.ts`` agree with ``realtime/protocol/schemas``.

Every schema has an interface named after its type (``presence.state`` ->
``PresenceStateFrame``) with the same fields, the same optionality, the literal ``type`` and
values of the same JSON types. A small reader of the file's interface and type-alias blocks
stands in for ``tsc``, which is not installed here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from realtime.protocol import CLIENT_TYPES, ERROR_CODES, SERVER_TYPES, schemas

DTS = Path(__file__).resolve().parents[2] / "realtime" / "static" / "realtime" / "realtime.d.ts"
OPEN, CLOSE = "{<([", "}>)]"


def _source() -> str:
    text = re.sub(r"/\*.*?\*/", "", DTS.read_text(), flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _until_closed(text: str, start: int) -> int:
    """The index just past the bracket that closes the one at ``start``."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] in OPEN:
            depth += 1
        elif text[index] in CLOSE:
            depth -= 1
            if depth == 0:
                return index + 1
    raise ValueError(f"unclosed bracket at {start}")


def _split(text: str, separators: str) -> list[str]:
    """``text`` split at ``separators`` outside brackets, parts stripped, empty ones dropped."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char in OPEN) - (char in CLOSE)
        if depth == 0 and char in separators:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part.strip() for part in [*parts, current] if part.strip()]


def members(body: str) -> dict[str, tuple[bool, str]]:
    """``{field: (optional, type text)}`` of an interface's or object type's body."""
    fields = {}
    for member in _split(body, ";\n"):
        name, optional, kind = re.fullmatch(r"(\w+)(\??):\s*(.+)", member, re.S).groups()
        fields[name] = (bool(optional), " ".join(kind.split()))
    return fields


def interfaces() -> dict[str, dict[str, tuple[bool, str]]]:
    """``{name: {field: (optional, type text)}}`` of every ``export interface`` block."""
    source, found = _source(), {}
    for match in re.finditer(r"export interface (\w+)(?:<[^>]*>)?\s*(?:extends [^{]*)?\{", source):
        found[match[1]] = members(
            source[match.end() - 1 : _until_closed(source, match.end() - 1)][1:-1]
        )
    return found


def aliases() -> dict[str, str]:
    source = _source()
    return {
        m[1]: " ".join(m[2].split())
        for m in re.finditer(r"export type (\w+)(?:<[^>]*>)?\s*=\s*([^;]+);", source)
    }


def ts_kinds(kind: str, seen: frozenset[str] = frozenset()) -> set[Any]:
    """The JSON types a TypeScript type admits: "string", "number", ..., or a literal."""
    kinds: set[Any] = set()
    for part in _split(kind, "|"):
        if part in ("string", "number", "boolean", "null"):
            kinds.add(part)
        elif part in ("true", "false"):
            kinds.add(("literal", part == "true"))
        elif re.fullmatch(r'"[^"]*"', part):
            kinds.add(("literal", part[1:-1]))
        elif re.fullmatch(r"-?\d+", part):
            kinds.add(("literal", int(part)))
        elif part == "unknown" or len(part) == 1:  # a type parameter: T
            kinds.add("any")
        elif part.endswith("[]") or part.startswith("Array<"):
            kinds.add("array")
        elif part.startswith(("{", "Record<")):
            kinds.add("object")
        elif part in aliases() and part not in seen:
            kinds |= ts_kinds(aliases()[part], seen | {part})
        else:
            kinds.add("object")  # another interface
    return kinds


def schema_kinds(schema: dict[str, Any]) -> set[Any]:
    if "const" in schema:
        return {("literal", schema["const"])}
    if "enum" in schema:
        return {("literal", value) for value in schema["enum"]}
    if "anyOf" in schema:
        return set().union(*(schema_kinds(alternative) for alternative in schema["anyOf"]))
    kind = schema.get("type")
    if kind is None:
        return {"any"}
    return {"number" if kind == "integer" else kind}


def interface_name(kind: str) -> str:
    return "".join(part.title() for part in kind.split(".")) + "Frame"


NAMES = [f"client/{n}" for n in CLIENT_TYPES] + [f"server/{n}" for n in SERVER_TYPES]


def test_the_frame_interfaces_are_the_schemas():
    frames = {name for name in interfaces() if name.endswith("Frame")}
    assert frames == {interface_name(name.split("/")[1]) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_each_frame_interface_has_its_schemas_fields(name):
    agree(interfaces()[interface_name(name.split("/")[1])], schemas.resolved(name))


def agree(fields: dict[str, tuple[bool, str]], schema: dict[str, Any]) -> None:
    assert set(fields) == set(schema["properties"])
    for field, (optional, kind) in fields.items():
        assert optional == (field not in schema["required"]), field
        assert ts_kinds(kind) == schema_kinds(schema["properties"][field]), (field, kind)
        if kind.startswith("{"):  # an object type written inline: its fields too
            agree(members(kind[1:-1]), schema["properties"][field])


def test_the_unions_name_every_frame_of_their_direction():
    assert set(_split(aliases()["ClientFrame"], "|")) == {interface_name(n) for n in CLIENT_TYPES}
    assert set(_split(aliases()["ServerFrame"], "|")) == {interface_name(n) for n in SERVER_TYPES}


def test_the_error_codes_are_the_servers():
    assert ts_kinds("ErrorCode") == {("literal", code) for code in ERROR_CODES}
