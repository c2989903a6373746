"""Desired-state files: YAML documents -> a typed, located model -> problems (pure).

``load_estate([(name, text), ...])`` parses files into an :class:`Estate`;
``validate(estate, known)`` returns every :class:`Problem` (``file:line: path: message``);
``json_schema()`` is the JSON Schema of a document. Nothing here reads files or the database:
``cloudctl.services.desired`` does, and builds :class:`Known` from cloudctl's SQL.
"""

from __future__ import annotations

from cloudctl.state.loader import load_estate, parse, parse_file
from cloudctl.state.model import (
    API_VERSION,
    KINDS,
    DesiredServer,
    Document,
    Estate,
    FlavorSpec,
    HostSpec,
    ImageSpec,
    InvalidEstate,
    KeyPairSpec,
    Location,
    NetworkSpec,
    Placement,
    Problem,
    QuotaSpec,
    ServerGroupSpec,
    ServerSpec,
    Spec,
    expand,
    expand_names,
)
from cloudctl.state.schema import json_schema
from cloudctl.state.validate import Known, require_valid, validate

__all__ = [
    "API_VERSION",
    "KINDS",
    "DesiredServer",
    "Document",
    "Estate",
    "FlavorSpec",
    "HostSpec",
    "ImageSpec",
    "InvalidEstate",
    "KeyPairSpec",
    "Known",
    "Location",
    "NetworkSpec",
    "Placement",
    "Problem",
    "QuotaSpec",
    "ServerGroupSpec",
    "ServerSpec",
    "Spec",
    "expand",
    "expand_names",
    "json_schema",
    "load_estate",
    "parse",
    "parse_file",
    "require_valid",
    "validate",
]
