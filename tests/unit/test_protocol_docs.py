"""docs/protocol.md's field tables are the ones ``python -m realtime.protocol.docs`` writes."""

from __future__ import annotations

import re
from pathlib import Path

from realtime.protocol import ERROR_CODES, schemas
from realtime.protocol.docs import MARKED, main, rewrite, table

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_field_tables_are_written_from_the_schemas():
    text = DOC.read_text()
    assert rewrite(text) == text, (
        "docs/protocol.md's field tables differ from realtime/protocol/schemas: "
        "run python -m realtime.protocol.docs"
    )


def test_every_frame_type_has_one_table():
    marked = [m[2] for m in MARKED.finditer(DOC.read_text())]
    expected = [f"client/{n}" for n in schemas.names("client")]
    expected += [f"server/{n}" for n in schemas.names("server")]
    assert sorted(marked) == sorted(expected)


def test_no_schema_is_embedded_in_the_docs():
    assert "```json schema" not in DOC.read_text()


def test_the_error_code_table_has_every_code():
    section = DOC.read_text().split("## Error codes", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
    assert sorted(codes) == sorted(ERROR_CODES)


def test_the_close_code_table_has_every_named_close_code():
    from realtime.protocol import codes

    section = DOC.read_text().split("## Close codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, flags=re.M)}
    named = {value for name, value in vars(codes).items() if name.startswith("CLOSE_")}
    assert named <= rows, f"close codes without a row in docs/protocol.md: {named - rows}"


def test_the_browser_client_names_close_codes_as_the_protocol_does():
    from realtime.protocol import codes

    source = (DOC.parents[1] / "realtime/static/realtime/client/codes.js").read_text()
    client = {m[1]: int(m[2]) for m in re.finditer(r"export const (CLOSE_\w+) = (\d+);", source)}
    shared = {name: getattr(codes, name) for name in client if hasattr(codes, name)}
    assert shared == {name: client[name] for name in shared}
    assert client["CLOSE_SERVICE_RESTART"] == codes.CLOSE_SERVICE_RESTART


def test_the_generator_checks_and_rewrites(tmp_path, capsys):
    path = tmp_path / "protocol.md"
    stale = "Intro.\n\n<!-- fields: client/ping -->\n| old |\n<!-- /fields -->\n\nOutro.\n"
    path.write_text(stale)
    assert main([str(path), "--check"]) == 1
    assert path.read_text() == stale
    assert "differ" in capsys.readouterr().out
    assert main([str(path)]) == 0
    assert path.read_text() == stale.replace("| old |\n", table("client/ping"))
    assert main([str(path), "--check"]) == 0


def test_a_table_reads_types_bounds_and_optionality():
    rows = table("client/publish").splitlines()
    assert rows[0] == "| Field | Type | Required | Meaning |"
    event = next(row for row in rows if row.startswith("| `event` |"))
    assert "not matching `^(realtime\\|presence)\\.`" in event and "| yes |" in event
    assert any(row.startswith("| `ephemeral` | boolean | no |") for row in rows)
    welcome = table("server/welcome")
    assert "| `window.messages` | integer ≥ 1 | yes |" in welcome
