"""The household as a family tree (SVG), in the usual genogram notation.

Squares are male, circles female, diamonds sex not known; the child whose chronology it is has
a double outline; adults sit on the upper row, children below. A solid line is a relationship
an agency reported (a referral's family section); a dashed line is one the linking service
inferred (siblings from shared parents, co-residence from a shared address). Every line carries
its kind, and the legend says where relationships came from.
"""

from __future__ import annotations

import uuid
from html import escape
from typing import Any

from services.timeline.reads import Scope

WIDTH_PER_PERSON = 170
ROW_Y = {"adult": 70, "child": 230}
SIZE = 36


def _shape(x: float, y: float, sex: str, me: bool) -> str:
    half = SIZE / 2
    stroke = 'stroke="#0b0c0c" stroke-width="2" fill="#ffffff"'
    if sex == "male":
        shape = f'<rect x="{x - half}" y="{y - half}" width="{SIZE}" height="{SIZE}" {stroke}/>'
        outer = (
            f'<rect x="{x - half - 5}" y="{y - half - 5}" width="{SIZE + 10}" '
            f'height="{SIZE + 10}" fill="none" stroke="#1d70b8" stroke-width="3"/>'
        )
    elif sex == "female":
        shape = f'<circle cx="{x}" cy="{y}" r="{half}" {stroke}/>'
        outer = (
            f'<circle cx="{x}" cy="{y}" r="{half + 5}" fill="none" stroke="#1d70b8" '
            'stroke-width="3"/>'
        )
    else:
        points = f"{x},{y - half} {x + half},{y} {x},{y + half} {x - half},{y}"
        shape = f'<polygon points="{points}" {stroke}/>'
        big = half + 7
        outer = (
            f'<polygon points="{x},{y - big} {x + big},{y} {x},{y + big} {x - big},{y}" '
            'fill="none" stroke="#1d70b8" stroke-width="3"/>'
        )
    return shape + (outer if me else "")


def render(scope: Scope) -> str:
    me = scope.person
    people = [(me, me.role or "child")] + [(m.person, m.role) for m in scope.members]
    rows: dict[str, list[Any]] = {"adult": [], "child": []}
    for person, role in people:
        rows["adult" if role == "adult" else "child"].append(person)
    columns = max(len(rows["adult"]), len(rows["child"]), 1)
    width = columns * WIDTH_PER_PERSON + 40
    height = 380
    at: dict[uuid.UUID, tuple[float, float]] = {}
    for role, persons in rows.items():
        offset = (width - len(persons) * WIDTH_PER_PERSON) / 2
        for index, person in enumerate(persons):
            at[person.person_id] = (
                offset + index * WIDTH_PER_PERSON + WIDTH_PER_PERSON / 2,
                ROW_Y[role],
            )

    def canon(value: str) -> uuid.UUID:
        pid = uuid.UUID(value)
        return scope.owner.get(pid, pid)

    lines: list[str] = []
    drawn: set[tuple[uuid.UUID, uuid.UUID, str]] = set()
    for r in scope.relationships:
        a, b = canon(r["person_id"]), canon(r["related_person_id"])
        if a not in at or b not in at or a == b:
            continue
        kind = str(r["kind"])
        key = (min(a, b), max(a, b), kind) if kind in {"sibling", "half_sibling"} else (a, b, kind)
        if key in drawn:
            continue
        drawn.add(key)
        (x1, y1), (x2, y2) = at[a], at[b]
        dash = ' stroke-dasharray="6 4"' if r.get("inferred") else ""
        colour = "#505a5f" if r.get("inferred") else "#0b0c0c"
        if y1 == y2:  # same generation: a bracket above (siblings) or below (partners)
            lift = -34 if y1 == ROW_Y["child"] else 34
            path = f"M{x1},{y1 + lift / 2} V{y1 + lift} H{x2} V{y2 + lift / 2}"
        else:
            middle = (y1 + y2) / 2
            path = f"M{x1},{y1 + SIZE / 2} V{middle} H{x2} V{y2 - SIZE / 2}"
        label = kind.replace("_", " ")
        source = "inferred by linking" if r.get("inferred") else "reported by an agency"
        lines.append(
            f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}>'
            f"<title>{escape(label)} ({source})</title></path>"
        )
    shapes: list[str] = []
    for person, _role in people:
        x, y = at[person.person_id]
        is_me = person.person_id == me.person_id
        born = (
            f"born {person.date_of_birth.strftime('%-d %b %Y')}"
            if person.date_of_birth
            else (
                f"due {person.unborn_expected_date.strftime('%-d %b %Y')}"
                if person.unborn_expected_date
                else "date of birth not known"
            )
        )
        shapes.append(
            f'<g class="person" data-person-id="{person.person_id}">'
            + _shape(x, y, person.sex, is_me)
            + f'<text x="{x}" y="{y + SIZE / 2 + 20}" text-anchor="middle" font-size="14" '
            f'font-weight="{"bold" if is_me else "normal"}">{escape(person.display_name)}</text>'
            f'<text x="{x}" y="{y + SIZE / 2 + 38}" text-anchor="middle" font-size="12" '
            f'fill="#505a5f">{escape(born)}</text></g>'
        )
    legend = (
        f'<g class="legend" font-size="12" fill="#0b0c0c">'
        f'<line x1="20" y1="{height - 40}" x2="60" y2="{height - 40}" stroke="#0b0c0c" '
        'stroke-width="2"/>'
        f'<text x="68" y="{height - 36}">'
        "reported by an agency (a referral's family section)</text>"
        f'<line x1="20" y1="{height - 18}" x2="60" y2="{height - 18}" stroke="#505a5f" '
        'stroke-width="2" stroke-dasharray="6 4"/>'
        f'<text x="68" y="{height - 14}">inferred by linking (shared parents or address)</text>'
        "</g>"
    )
    title = f"Family tree of {me.display_name}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="genogram-title" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Arial, sans-serif">'
        f'<title id="genogram-title">{escape(title)}</title>'
        + "".join(lines)
        + "".join(shapes)
        + legend
        + "</svg>"
    )
