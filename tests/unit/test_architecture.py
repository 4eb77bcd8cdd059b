"""The layers of ``realtime`` and the rule no import may break (``docs/architecture.md``).

    endpoints  (endpoints/, api/, admin/, templatetags/, routing, urls)
    core       (core/)
    bus | storage   (bus/ | storage/, models, migrations)
    protocol and settings  (protocol/, conf, exceptions, streams, signals, deploy)

A module imports from its own layer or the layers below it; bus and storage do not import
each other (storage builds layer messages with ``realtime.bus.messages``, the one exception).
The public paths kept for projects (``realtime.policy``, ``realtime.auth``...), the facade
(``realtime``) and the add-ons (``live``, ``management``, ``testing``, ``client``, ``checks``,
``apps``) sit above every layer: nothing in a layer imports them. ``realtime.client``, which
runs in other programs (a service, a load tool), imports nothing of the app but the protocol.
Lazy imports and ``TYPE_CHECKING`` imports count. Pure: reads the source, imports nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "realtime"

LAYERS: list[tuple[str, int, tuple[str, ...]]] = [
    (
        "protocol",
        0,
        (
            "realtime.protocol",
            "realtime.conf",
            "realtime.exceptions",
            "realtime.streams",
            "realtime.signals",
            "realtime.deploy",
        ),
    ),
    ("bus", 1, ("realtime.bus",)),
    ("storage", 1, ("realtime.storage", "realtime.models", "realtime.migrations")),
    ("core", 2, ("realtime.core",)),
    (
        "endpoints",
        3,
        (
            "realtime.endpoints",
            "realtime.api",
            "realtime.admin",
            "realtime.templatetags",
            "realtime.routing",
            "realtime.urls",
        ),
    ),
]
ALLOWED = {("storage", "realtime.bus.messages")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> tuple[str, int] | None:
    """The layer of ``module``; None above the layers (facade, public paths, add-ons)."""
    for name, rank, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name, rank
    return None


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of a realtime module in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:  # "from realtime import store": the name is a module
                name = f"{base}.{alias.name}"
                found.append((node.lineno, name if known(name) else base))
    return [(line, name) for line, name in found if name.split(".")[0] == "realtime"]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def known(name: str) -> bool:
    """Whether ``name`` is a module or package of realtime (not a name inside one)."""
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").exists() or (
        PACKAGE / relative / "__init__.py"
    ).exists()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_import_goes_up_a_layer(path: Path) -> None:
    here = layer_of(module_name(path))
    if here is None:
        return
    wrong = []
    for line, target in imports(path):
        if not known(target) or target == "realtime":
            if target == "realtime":
                wrong.append(f"line {line}: the facade `realtime`")
            continue
        there = layer_of(target)
        if there is None:
            wrong.append(f"line {line}: {target} (a public path or add-on, above every layer)")
        elif (there[1] > here[1] or (there[1] == here[1] and there[0] != here[0])) and (
            here[0],
            target,
        ) not in ALLOWED:
            wrong.append(f"line {line}: {target} ({there[0]}, from {here[0]})")
    assert not wrong, "\n".join(wrong)


def test_every_module_is_placed_or_known_to_be_above_the_layers() -> None:
    above = {
        "realtime",
        "realtime.apps",
        "realtime.checks",
        "realtime.policy",
        "realtime.auth",
        "realtime.serve",
        "realtime.tickets",
        "realtime.snapshots",
        "realtime.metrics",
    }
    loose = [
        module_name(path)
        for path in SOURCES
        if layer_of(module_name(path)) is None
        and module_name(path) not in above
        and not module_name(path).startswith(
            ("realtime.live", "realtime.management", "realtime.testing", "realtime.client")
        )
    ]
    assert not loose, f"place these in a layer (tests/unit/test_architecture.py): {loose}"


CLIENT_MAY_IMPORT = ("realtime.client", "realtime.protocol", "realtime.exceptions")


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "client").rglob("*.py")), ids=lambda p: module_name(p)
)
def test_the_python_client_imports_only_the_protocol(path: Path) -> None:
    wrong = [
        f"line {line}: {target}"
        for line, target in imports(path)
        if not any(target == p or target.startswith(p + ".") for p in CLIENT_MAY_IMPORT)
    ]
    assert not wrong, "\n".join(wrong)
