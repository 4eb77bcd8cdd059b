"""Protocol 1 as JSON Schema (draft 2020-12): the files beside this module, and their loader.

``client/<type>.json`` is a frame the client sends, ``server/<type>.json`` one the server
sends, each named after its ``type``; ``defs.json`` holds what they share, referenced with
``$ref`` relative to each file's ``$id``. A schema describes a frame the server accepts
without ``invalid_frame``, ``invalid_stream`` or ``invalid_event`` (client frames), or every
field the server sends today (server frames, which allow nothing else).

Tools that resolve ``$ref`` across files take the files as they are; ``resolved()`` gives one
frame's schema with every ``$ref`` inlined, for those that do not.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any, Literal

Direction = Literal["client", "server"]
DEFS = "defs"


def _dir() -> Any:
    return files(__name__)


@cache
def names(direction: Direction) -> tuple[str, ...]:
    """The frame types with a schema in ``direction``, sorted: ``("ping", "presence", ...)``."""
    return tuple(
        sorted(
            entry.name.removesuffix(".json")
            for entry in _dir().joinpath(direction).iterdir()
            if entry.name.endswith(".json")
        )
    )


@cache
def _load(path: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_dir().joinpath(path).read_text(encoding="utf-8"))
    return schema


def load(name: str) -> dict[str, Any]:
    """One file as written: ``load("client/subscribe")``, ``load("defs")``. Do not mutate it."""
    return _load(f"{name}.json")


def resolved(name: str) -> dict[str, Any]:
    """``load(name)`` with every ``$ref`` replaced by what it points to (a fresh copy)."""
    inlined: dict[str, Any] = _inline(load(name), name)
    return inlined


def _inline(node: Any, name: str) -> Any:
    if isinstance(node, list):
        return [_inline(item, name) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _inline(value, name) for key, value in node.items() if key != "$ref"}
    if "$ref" in node:
        target_name, target = _target(node["$ref"], name)
        # Keywords beside a $ref (a more specific description) win over the target's.
        out = {**_inline(target, target_name), **out}
        if target_name != name:
            out.pop("$schema", None)
            out.pop("$id", None)
    return out


def _target(ref: str, name: str) -> tuple[str, Any]:
    """What ``ref``, written in file ``name``, points to: (its file's name, the node)."""
    path, _, pointer = ref.partition("#")
    if path:
        folder = name.rpartition("/")[0]
        parts = [*(folder.split("/") if folder else []), *path.removesuffix(".json").split("/")]
        stack: list[str] = []
        for part in parts:
            if part == "..":
                stack.pop()
            elif part != ".":
                stack.append(part)
        name = "/".join(stack)
    node: Any = load(name)
    for key in filter(None, pointer.split("/")):
        node = node[key.replace("~1", "/").replace("~0", "~")]
    return name, node
