"""The browser client as staticfiles serves it: ES modules with relative imports, no build.

Under ``ManifestStaticFilesStorage`` every import must still reach a file that exists: with
``support_js_module_import_aggregation`` the storage rewrites the imports to hashed names
(by regular expressions, which the modules are written to suit: see realtime.js); without
it, the hashed entry imports the unhashed modules, which the storage keeps beside the
hashed ones. The import graph must have no cycle, or the storage's passes never settle.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from pathlib import Path

import pytest
from django.contrib.staticfiles.storage import ManifestStaticFilesStorage
from django.template import Context, Template
from django.test import override_settings

import realtime
from realtime.templatetags.realtime import CLIENT_MODULES

STATIC = Path(realtime.__file__).parent / "static"
ENTRY = "realtime/realtime.js"
# A static import (or re-export) statement, not an `@import` in a comment.
IMPORT = re.compile(
    r"""^(?:import|export)\s[^;]*?\sfrom\s+["'](\.{1,2}/[^"']+)["'];""", re.MULTILINE
)


class AggregatingStorage(ManifestStaticFilesStorage):
    support_js_module_import_aggregation = True


def imports(text: str) -> list[str]:
    return IMPORT.findall(text)


def module_graph(root: Path, entry: str) -> dict[str, list[str]]:
    """Every module reachable from ``entry`` (paths relative to ``root``) -> its imports."""
    graph: dict[str, list[str]] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in graph:
            continue
        targets = [
            posixpath.normpath(posixpath.join(posixpath.dirname(name), url))
            for url in imports((root / name).read_text())
        ]
        graph[name] = targets
        todo.extend(targets)
    return graph


def test_the_client_modules_form_an_acyclic_graph_from_realtime_js() -> None:
    graph = module_graph(STATIC, ENTRY)
    assert len(graph) > 10, graph
    assert all((STATIC / name).is_file() for name in graph)
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for target in graph[name]:
                visit(target, (*path, name))
            done.add(name)

    visit(ENTRY, ())
    # Every module but the types-only one is loaded by the browser.
    modules = {
        f"realtime/{p.relative_to(STATIC / 'realtime')}"
        for p in STATIC.glob("realtime/client/*.js")
    }
    assert modules - set(graph) == {"realtime/client/transport.js"}
    # The tag preloads exactly the modules realtime.js imports.
    assert {f"realtime/{module}" for module in CLIENT_MODULES} == set(graph) - {ENTRY}


@pytest.mark.parametrize("storage_class", [ManifestStaticFilesStorage, AggregatingStorage])
def test_hashed_static_files_import_modules_that_exist(
    tmp_path: Path, storage_class: type[ManifestStaticFilesStorage]
) -> None:
    shutil.copytree(
        STATIC / "realtime", tmp_path / "realtime", ignore=shutil.ignore_patterns("admin")
    )
    storage = storage_class(location=tmp_path, base_url="/static/")
    names = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()]
    for _name, _hashed, processed in storage.post_process({n: (storage, n) for n in names}):
        assert not isinstance(processed, Exception), processed
    entry = storage.stored_name(ENTRY)
    assert entry != ENTRY  # hashed
    graph = module_graph(tmp_path, entry)
    assert len(graph) == len(module_graph(STATIC, ENTRY))
    hashed = set(storage.hashed_files.values())
    for name, targets in graph.items():
        for target in targets:
            assert (tmp_path / target).is_file(), f"{name} imports {target}, which is missing"
            if storage_class is AggregatingStorage:
                assert target in hashed, f"{name} imports {target}, not a hashed name"
            else:
                assert target not in hashed, f"{name} imports {target}: hashed without aggregation"

    # {% realtime_client %} preloads exactly the URLs the browser will import.
    backend = f"{storage_class.__module__}.{storage_class.__qualname__}"
    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": backend},
    }
    with override_settings(STORAGES=storages, STATIC_ROOT=tmp_path, STATIC_URL="/static/"):
        html = Template("{% load realtime %}{% realtime_client %}").render(Context())
    preloaded = re.findall(r'<link rel="modulepreload" href="/static/([^"]+)">', html)
    assert preloaded[0] == entry
    assert sorted(preloaded[1:]) == sorted(set(graph) - {entry})
