"""Label and field selectors, parsed once per request and matched against every candidate.

Grammar follows apimachinery's ``labels.Parse``: comma-separated terms, each ``k=v``, ``k==v``,
``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists) or ``!k`` (does not exist). Field
selectors allow only the equality forms, on dotted paths into the object (``spec.nodeName``,
``involvedObject.name``; a missing field compares as the empty string, as upstream).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from localcluster.apiclient import JsonObject

_SET_TERM = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


class SelectorError(ValueError):
    """A selector the server cannot parse; answered as 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a ``(...)`` value set."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    if not text:
        return ()
    requirements = []
    for term in _split_terms(text):
        if m := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EQ_TERM.match(term):
            op = "!=" if m.group(2) == "!=" else "="
            requirements.append(Requirement(m.group(1), op, frozenset([m.group(3)])))
        elif m := _EXISTS_TERM.match(term):
            requirements.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return tuple(requirements)


def parse_field_selector(text: str | None) -> tuple[tuple[str, str, str], ...]:
    """``(path, op, value)`` triples, op being ``=`` or ``!=``."""
    if not text:
        return ()
    terms = []
    for term in _split_terms(text):
        m = _EQ_TERM.match(term)
        if not m:
            raise SelectorError(f"invalid field selector term: {term!r}")
        terms.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return tuple(terms)


def field_value(obj: JsonObject, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return "" if node is None else str(node)


Matcher = Callable[[JsonObject], bool]


def compile_selectors(label_selector: str | None, field_selector: str | None) -> Matcher:
    """One predicate for both selectors; raises SelectorError on syntax errors."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)

    def matches(obj: JsonObject) -> bool:
        if labels:
            obj_labels = obj.get("metadata", {}).get("labels") or {}
            if not all(r.matches(obj_labels) for r in labels):
                return False
        return all((field_value(obj, path) == value) == (op == "=") for path, op, value in fields)

    return matches
