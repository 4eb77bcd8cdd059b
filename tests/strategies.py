"""Hypothesis strategies for the protocol: frames drawn from its JSON Schemas, hostile client
payloads, and a validator that reads the schemas the way the server does.

``hypothesis-jsonschema`` would do the drawing, but its object strategy uses a Hypothesis
internal (``many.more()``) that Hypothesis 6.1xx no longer has. The schemas use a small
subset of JSON Schema; ``KEYWORDS`` names it, and ``tests/unit/test_parsing.py`` fails if a schema
uses a keyword outside it, so nothing here silently ignores a constraint.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from hypothesis import strategies as st

from realtime.protocol import CLIENT_TYPES

# Every keyword from_schema() understands (annotations included).
KEYWORDS = {
    "$schema", "$id", "title", "description", "type", "const", "enum", "anyOf", "not",
    "properties", "required", "additionalProperties", "propertyNames", "minLength",
    "maxLength", "pattern", "minimum", "exclusiveMinimum", "items", "minItems", "maxItems",
}  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)  # fmt: skip


# ...and what Python's json writes besides: Infinity, which is not JSON.
hostile_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Stream names a client might try, valid or not.
names = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["public:h", "public:x", "../etc", "a" * 300, "public:*", "", "public:\n"]),
    st.from_regex(r"(public|private|user):[A-Za-z0-9:./-]{0,20}", fullmatch=True),
)
# What a hostile client sends: any text or bytes, any JSON, and objects shaped like frames.
client_payloads = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    hostile_values.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from([*CLIENT_TYPES, "event", "welcome", "", "SUBSCRIBE"])},
        optional={
            "id": hostile_values,
            "stream": names | hostile_values,
            "since": st.integers(min_value=-5, max_value=2**70) | hostile_values,
            "epoch": st.text(max_size=80) | hostile_values,
            "event": st.text(max_size=120) | hostile_values,
            "data": hostile_values,
            "presence": hostile_values,
            "meta": hostile_values,
            "leave": hostile_values,
            "ephemeral": hostile_values,
            "key": st.text(max_size=70) | hostile_values,
            "count": st.integers(min_value=-5) | hostile_values,
        },
    ).map(json.dumps),
)


def _integer(checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The server reads an integer only when it is written without fraction or exponent: ``1.0``
# is a float to Python's json, and refused, while JSON Schema's "integer" would take it.
def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """``pattern`` as JSON Schema means it, an ECMA-262 regex, in which ``$`` ends the string.
    Python's ``$`` also matches before a final newline: a stream name ending in one would
    pass ``^[A-Za-z0-9]...$``, which the server (and a browser) refuses."""
    if validator.is_type(instance, "string"):
        ecma = re.sub(r"(?<!\\)\$$", r"\\Z", pattern)
        if not re.search(ecma, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


ServerValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _integer),
)


def is_valid(instance: Any, schema: dict[str, Any]) -> bool:
    return ServerValidator(schema).is_valid(instance)


def keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in ``schema`` (property names are not keywords)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key == "properties":
                for sub in value.values():
                    found |= keywords(sub)
            elif key in ("anyOf",):
                for sub in value:
                    found |= keywords(sub)
            elif isinstance(value, dict):
                found |= keywords(value)
    return found


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Instances of a resolved schema (no ``$ref``) that ``is_valid`` accepts."""
    return _draw(schema).filter(lambda value: is_valid(value, schema))


def _draw(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([_draw(sub) for sub in schema["anyOf"]])
    kind = schema.get("type")
    if kind is None:
        return json_values
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"))
    if kind == "number":
        low = schema.get("exclusiveMinimum", schema.get("minimum", 0))
        return st.integers(low + 1, 1000) | st.floats(low, 1000, exclude_min=True)
    if kind == "string":
        return _string(schema)
    if kind == "array":
        return st.lists(
            _draw(schema.get("items", {})),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 4), 4),
        )
    assert kind == "object", schema
    return _object(schema)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if "pattern" in schema:
        strategy = st.from_regex(schema["pattern"], fullmatch=True)
    else:
        strategy = st.text(min_size=low, max_size=high if high is not None else 80)
    strategy = strategy.filter(lambda s: low <= len(s) <= (high or len(s)))
    if "pattern" in schema.get("not", {}):
        forbidden = re.compile(schema["not"]["pattern"])
        strategy = strategy.filter(lambda s: not forbidden.search(s))
    return strategy


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties")
    if properties is None:
        values = schema.get("additionalProperties", {})
        value_strategy = json_values if values in ({}, True) else _draw(values)
        return st.dictionaries(st.text(min_size=1, max_size=8), value_strategy, max_size=3)
    required = set(schema.get("required", ()))
    fixed = st.fixed_dictionaries(
        {name: _draw(sub) for name, sub in properties.items() if name in required},
        optional={name: _draw(sub) for name, sub in properties.items() if name not in required},
    )
    if schema.get("additionalProperties") is False:
        return fixed
    extra = st.dictionaries(
        st.text(max_size=8).filter(lambda name: name not in properties), json_values, max_size=2
    )
    return st.tuples(fixed, extra).map(lambda pair: {**pair[1], **pair[0]})


OTHER_TYPES = [None, True, False, 0, 1, -1, 1.5, "", "s", [], [1], {}, {"a": 1}]


def _not_matching(pattern: str) -> Any:
    compiled = re.compile(pattern)
    return lambda text: not compiled.search(text)


def violations(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values just outside ``schema``: each bound, pattern and type it sets, broken in turn."""
    found: list[st.SearchStrategy[Any]] = [st.sampled_from(OTHER_TYPES)]
    for sub in schema.get("anyOf", [schema]):
        if "minimum" in sub:
            found.append(st.just(sub["minimum"] - 1) | st.integers(max_value=sub["minimum"] - 1))
        if "maxLength" in sub:
            found.append(st.text(min_size=sub["maxLength"] + 1, max_size=sub["maxLength"] + 5))
            found.append(st.just("a" * (sub["maxLength"] + 1)))  # long, but of the pattern
        if sub.get("type") == "string":
            found.append(st.just("a" * 101))  # over the event type's and the key's {0,99}
        if sub.get("minLength"):
            found.append(st.text(max_size=sub["minLength"] - 1))
        if "pattern" in sub:
            found.append(st.text(max_size=30).filter(_not_matching(sub["pattern"])))
        if "pattern" in sub.get("not", {}):
            found.append(st.from_regex(sub["not"]["pattern"], fullmatch=False))
        if "const" in sub:
            found.append(json_values)
    return st.one_of(found).filter(lambda value: not is_valid(value, schema))
