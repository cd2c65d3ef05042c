"""Render ``docs/events.md`` from the registry, so the catalogue cannot drift from the code."""

from __future__ import annotations

import json
from typing import Any

from shared.events.registry import all_events
from shared.events.topics import Topic

HEADER = """# Event catalogue

Generated from the event registry by `make docs` (`threadline events-doc`); a test fails when
this file and the code disagree. Do not edit by hand.

Every event is a [CloudEvents 1.0](https://github.com/cloudevents/spec) event in Kafka **binary
content mode**: attributes travel as `ce_*` headers, the data (JSON) is the record value, and the
record key is the aggregate id (also the CloudEvents `subject`), so one aggregate's events stay in
order on one partition.

| attribute | meaning |
| --- | --- |
| `ce_id` | UUID of the event; the same on every redelivery (consumers de-duplicate on it) |
| `ce_type` | the event type below |
| `ce_source` | `/threadline/<service>` that emitted it |
| `ce_subject` | the aggregate id (also the Kafka key) |
| `ce_time` | when it happened (UTC, RFC 3339) |
| `ce_correlationid` | the id of the request (or timer) that started this chain of work |
| `ce_causationid` | the id of the event (or `timer:<id>`) that directly caused this one |
| `ce_traceparent` | W3C trace context |
| `content-type` | `application/json` |

A record a consumer cannot apply after its retries is copied to `<topic>.dlq` with the headers
`dlq_error`, `dlq_consumer`, `dlq_source_topic`, `dlq_source_partition` and `dlq_source_offset`.
"""


def _type_of(schema: dict[str, Any], definitions: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).split("/")[-1]
    if "anyOf" in schema:
        return " or ".join(_type_of(option, definitions) for option in schema["anyOf"])
    kind = schema.get("type", "object")
    if kind == "array":
        return f"list of {_type_of(schema.get('items', {}), definitions)}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind)


def _fields(schema: dict[str, Any], definitions: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    lines = ["| field | type | required |", "| --- | --- | --- |"]
    for name, prop in schema.get("properties", {}).items():
        lines.append(
            f"| `{name}` | {_type_of(prop, definitions)} | {'yes' if name in required else 'no'} |"
        )
    return lines


def render_catalogue() -> str:
    from services.catalogue import SERVICES, load_events

    load_events()
    out = [HEADER, "## Topics", "", "| topic | dead-letter topic | events |", "| --- | --- | --- |"]
    specs = [spec for spec in all_events() if spec.producer in SERVICES]
    for topic in Topic:
        types = ", ".join(f"`{s.type}`" for s in specs if s.topic == topic.value) or "(none yet)"
        out.append(f"| `{topic.value}` | `{topic.dlq}` | {types} |")
    out.append("")
    for spec in specs:
        schema = spec.schema.model_json_schema()
        definitions = schema.get("$defs", {})
        out += [
            f"## `{spec.type}`",
            "",
            spec.summary,
            "",
            f"- topic: `{spec.topic}`; key and subject: `{spec.schema.key_field}`",
            f"- emitted by: `services/{spec.producer}`",
            "",
            *_fields(schema, definitions),
            "",
        ]
        for name, definition in definitions.items():
            out += [f"`{name}`:", "", *_fields(definition, definitions), ""]
        out += [
            "<details><summary>JSON schema</summary>",
            "",
            "```json",
            json.dumps(schema, indent=2),
            "```",
            "",
            "</details>",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"
