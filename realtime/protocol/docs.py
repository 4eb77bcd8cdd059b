"""Writes the field tables of ``docs/protocol.md`` from the schema files.

Each table sits between ``<!-- fields: client/subscribe -->`` and ``<!-- /fields -->``; the
prose around it is the docs' own. ``python -m realtime.protocol.docs`` rewrites the tables in
place, ``--check`` only says whether they are current (``tests/unit/test_protocol_docs.py`` fails
when they are not).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from realtime.protocol import schemas

MARKED = re.compile(r"(<!-- fields: ([a-z]+/[a-z.]+) -->\n)(.*?)(<!-- /fields -->)", re.S)


def table(name: str) -> str:
    """The Markdown table of one frame's fields (its ``type`` aside)."""
    schema = schemas.resolved(name)
    lines = ["| Field | Type | Required | Meaning |", "|---|---|---|---|"]
    for field, sub, required in _rows(schema):
        cells = [f"`{field}`", type_of(sub), "yes" if required else "no", _meaning(sub)]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _rows(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any], bool]]:
    rows = []
    for field, sub in schema.get("properties", {}).items():
        if not prefix and field == "type":
            continue
        rows.append((prefix + field, sub, field in schema.get("required", ())))
        if "properties" in sub:
            rows.extend(_rows(sub, f"{prefix}{field}."))
    return rows


def type_of(schema: dict[str, Any]) -> str:
    """A short reading of a value's schema: ``integer ≥ 0``, ``string ≤ 64 or null``..."""
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "anyOf" in schema:
        alternatives = [type_of(alternative) for alternative in schema["anyOf"]]
        return " or ".join(f"({text})" if ", " in text else text for text in alternatives)
    kind = schema.get("type")
    if kind is None:
        return "any JSON value"
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        if "exclusiveMinimum" in schema:
            return f"{kind} > {schema['exclusiveMinimum']}"
        return f"{kind} ≥ {schema['minimum']}" if "minimum" in schema else kind
    if kind == "array":
        items = schema.get("items", {})
        if "anyOf" in items and all("title" in frame for frame in items["anyOf"]):
            what = "frames: " + ", ".join(f"`{frame['title']}`" for frame in items["anyOf"])
        else:
            what = type_of(items)
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        bounds = f", {low} to {high}" if high is not None else f", at least {low}" if low else ""
        return f"array of {what}{bounds}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "object of string → " + type_of(schema["additionalProperties"])
    if kind == "object" and "properties" in schema:
        return "object {" + ", ".join(schema["properties"]) + "}"
    return str(kind)


def _string(schema: dict[str, Any]) -> str:
    text = "string"
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if high is not None:
        text += f", {low} to {high} characters" if low else f", at most {high} characters"
    elif low:
        text += ", not empty" if low == 1 else f", at least {low} characters"
    if "pattern" in schema:
        text += f", matching `{schema['pattern']}`"
    if "pattern" in schema.get("not", {}):
        text += f", not matching `{schema['not']['pattern']}`"
    return text


def _meaning(schema: dict[str, Any]) -> str:
    return " ".join(str(schema.get("description", "")).split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def rewrite(text: str) -> str:
    """``text`` with every marked table written afresh from the schemas."""
    return MARKED.sub(lambda m: m[1] + table(m[2]) + m[4], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m realtime.protocol.docs", description=__doc__)
    parser.add_argument("path", nargs="?", default="docs/protocol.md", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    fresh = rewrite(text)
    if fresh == text:
        return 0
    if args.check:
        print(f"{args.path}: the field tables differ from the schemas; run {parser.prog}.")
        return 1
    args.path.write_text(fresh, encoding="utf-8")
    print(f"{args.path}: field tables rewritten.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
