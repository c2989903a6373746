"""YAML text -> typed documents, with the line of every key and every problem one document shows.

The text is composed into YAML nodes (``yaml.compose_all``: every node carries its
``start_mark``) and the plain values are built from the nodes here, field by field from the
table in :mod:`cloudctl.state.fields`, so each value and each problem has its line. Nothing
here reads files: callers pass ``(name, text)`` pairs.

Hostile text ends as a problem with its line, never as an exception: collections nested more
than :data:`MAX_DEPTH` deep (checked while composing, before anything recurses that deep),
merge keys (``<<``) that would expand past :data:`MAX_MERGED` entries or refer to
themselves, numbers outside their SQL column, scalars PyYAML cannot construct.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from cloudctl.domain import validation
from cloudctl.errors import InvalidInput
from cloudctl.state import fields as F
from cloudctl.state.model import (
    API_VERSION,
    HINTS,
    KINDS,
    Document,
    Estate,
    InvalidEstate,
    Location,
    Problem,
    closest,
)

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"
#: The deepest nesting of mappings and lists a document may have (the kinds need four).
MAX_DEPTH = 64
#: The most entries merge keys (``<<``) may give one mapping, all merges followed: aliases
#: would otherwise let a few lines expand to billions of entries.
MAX_MERGED = 10_000
_MISSING = object()


class _TooDeep(yaml.YAMLError):
    """A collection nested more than :data:`MAX_DEPTH` deep, at ``line`` (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__(f"nested more than {MAX_DEPTH} levels deep")
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's pure-Python loader, which stops at :data:`MAX_DEPTH` nested collections.

    Its composer recurses once per level: unchecked, a deep document ends in RecursionError.
    """

    _depth = 0

    # (typeshed's stubs type the anchor as the anchors' dict)
    def compose_sequence_node(self, anchor: dict[Any, Node]) -> SequenceNode:
        self._enter()
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: dict[Any, Node]) -> MappingNode:
        self._enter()
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._depth -= 1

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooDeep(self.peek_event().start_mark.line + 1)  # type: ignore[no-untyped-call]


#: libyaml when available (fast: its composer stops by itself at 1000 levels, and the depth
#: of what it composed is checked without recursion); the pure-Python parser re-reads a file
#: that has a syntax error, so the messages do not depend on which one is installed.
_SAFE_LOADER: type[yaml.SafeLoader] = _BoundedLoader
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", _SAFE_LOADER)


def parse(text: str, filename: str) -> list[Document[Any]]:
    """The documents of one file; raises :class:`InvalidEstate` when it has any problem."""
    documents, problems = parse_file(text, filename)
    if problems:
        raise InvalidEstate(sorted(problems))
    return documents


def parse_file(text: str, filename: str) -> tuple[list[Document[Any]], list[Problem]]:
    """The documents of one file and the problems met (never raises on bad content).

    A document with problems in its spec is still returned (its ``broken`` paths say which
    fields); one whose kind or name cannot be read is not.
    """
    with no_cyclic_gc():
        return _parse(text, filename, _FAST_LOADER)


def _parse(
    text: str, filename: str, loader: type[yaml.SafeLoader]
) -> tuple[list[Document[Any]], list[Problem]]:
    # Documents are built as they are composed: holding every node of a large file at once
    # costs more in garbage collection than the parse itself.
    documents: list[Document[Any]] = []
    problems: list[Problem] = []
    try:
        for node in _compose(text, loader):
            builder = _Builder(filename)
            doc = builder.document(node)
            problems.extend(builder.problems)
            if doc is not None:
                documents.append(doc)
    except _TooDeep as exc:
        problems.append(Problem(Location(filename, exc.line), "", str(exc)))
    except yaml.YAMLError as exc:
        if loader is not _SAFE_LOADER:
            return _parse(text, filename, _SAFE_LOADER)
        problems.append(_yaml_problem(exc, filename, text))
    return documents, problems


def load_estate(files: Sequence[tuple[str, str]]) -> Estate:
    """The estate of ``(name, text)`` pairs, in the order given (callers sort them)."""
    documents: list[Document[Any]] = []
    problems: list[Problem] = []
    for name, text in files:
        with no_cyclic_gc():
            docs, found = _parse(text, name, _FAST_LOADER)
        documents.extend(docs)
        problems.extend(found)
    return Estate(
        files=tuple(name for name, _ in files),
        documents=tuple(documents),
        problems=tuple(sorted(problems)),
    )


# --- YAML ----------------------------------------------------------------------------------------


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Run the block with the cyclic garbage collector paused (a parse, a plan).

    Nodes, documents and locations (and a plan's servers, intents and changes) are many
    small acyclic objects, freed by reference counting; left on, the collector rescans them
    all again and again as they accumulate and doubles the time ten thousand of them take.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _compose(text: str, loader: type[yaml.SafeLoader]) -> Iterator[Node]:
    """The non-empty document nodes of ``text``; :class:`_TooDeep` for one nested too deep."""
    for node in yaml.compose_all(text, Loader=loader):
        if node is not None and not _is_null(node):
            line = _too_deep(node)
            if line is not None:
                raise _TooDeep(line)
            yield node


def _too_deep(root: Node) -> int | None:
    """The line of the first collection nested deeper than :data:`MAX_DEPTH` (no recursion).

    Aliases are followed, as anything that reads the document follows them; each node is
    entered once, where the walk first reaches it.
    """
    stack: list[tuple[Node, int]] = [(root, 1)]
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return int(node.start_mark.line) + 1
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                stack += [(n, depth + 1) for n in (key, value) if isinstance(n, CollectionNode)]
        elif isinstance(node, SequenceNode):
            stack += [(n, depth + 1) for n in node.value if isinstance(n, CollectionNode)]
    return None


def _merge_sources(node: MappingNode) -> list[MappingNode]:
    """The mappings ``node``'s merge keys name (others are PyYAML's error to report)."""
    out: list[MappingNode] = []
    for key, value in node.value:
        if key.tag == _MERGE:
            if isinstance(value, MappingNode):
                out.append(value)
            elif isinstance(value, SequenceNode):
                out += [v for v in value.value if isinstance(v, MappingNode)]
    return out


def _merge_problem(root: MappingNode) -> str | None:
    """Why flattening ``root``'s merge keys must not be tried, if it must not (no recursion).

    PyYAML's ``flatten_mapping`` recurses once per merge level and copies every merged entry:
    a merge of itself never ends, and aliases merged twice per level double at each level.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[MappingNode, bool, int]] = [(root, False, 1)]
    while stack:
        node, done, depth = stack.pop()
        if done:
            on_path.discard(id(node))
            own = sum(1 for key, _ in node.value if key.tag != _MERGE)
            size = own + sum(sizes[id(src)] for src in _merge_sources(node))
            if size > MAX_MERGED:
                return f"merge keys (<<) give more than {MAX_MERGED} entries"
            sizes[id(node)] = size
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            return "merge keys (<<) merge a mapping into itself"
        if depth > MAX_DEPTH:
            return f"merge keys (<<) nested more than {MAX_DEPTH} levels deep"
        on_path.add(id(node))
        stack.append((node, True, depth))
        stack += [(src, False, depth + 1) for src in _merge_sources(node) if id(src) not in sizes]
    return None


def _yaml_problem(error: yaml.YAMLError, filename: str, text: str) -> Problem:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = error.problem or "syntax error"
        if error.context:
            what = f"{what} ({error.context}"
            if error.context_mark is not None and error.context_mark.line + 1 != line:
                what += f" at line {error.context_mark.line + 1}"
            what += ")"
        return Problem(Location(filename, line), "", f"invalid YAML: {what}")
    position = getattr(error, "position", None)
    line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
    reason = getattr(error, "reason", None) or str(error).splitlines()[0]
    return Problem(Location(filename, line), "", f"invalid YAML: {reason}")


# --- values --------------------------------------------------------------------------------------


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _quote(value: str) -> str:
    return json.dumps(value if len(value) <= 60 else value[:57] + "...")


def _show(value: Any) -> str:
    """A value as a message shows it: strings quoted, YAML spellings for the rest."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dt.date | dt.datetime):
        return f"{value.isoformat()} (a date)"
    if isinstance(value, bytes):
        return "binary data"
    return str(value)


def _number(value: int) -> str:
    text = str(value)
    return text if len(text) <= 30 else f"{text[:12]}... ({len(text)} digits)"


def _choices(values: Sequence[Any]) -> str:
    shown = [_show(v).strip('"') for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _suggest(word: str, options: Sequence[str]) -> str | None:
    return closest(word, options)


_EXPECTED = {
    F.T.INT: "an integer",
    F.T.STR: "a string",
    F.T.BOOL: "true or false",
    F.T.STR_MAP: "a mapping of strings",
    F.T.STR_LIST: "a list of strings",
    F.T.HINTS: "a mapping of hint names to strings or lists",
    F.T.OBJECT: "a mapping",
}
_PLACEHOLDERS: dict[F.T, Any] = {
    F.T.INT: 0,
    F.T.STR: "",
    F.T.BOOL: False,
    F.T.STR_MAP: {},
    F.T.STR_LIST: (),
    F.T.HINTS: {},
}


def _fresh(value: Any) -> Any:
    """A default as a value of its own (field defaults are shared)."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def placeholder(shape: F.Shape) -> Any:
    """The object of ``shape`` with defaults, and zero values for its required fields."""
    values: dict[str, Any] = {}
    for field in shape.fields:
        if field.type is F.T.OBJECT and field.shape is not None:
            values[field.name] = placeholder(field.shape)
        elif field.required:
            values[field.name] = _PLACEHOLDERS[field.type]
        else:
            values[field.name] = _fresh(field.default)
    return shape.cls(**values)


class _Builder:
    """Builds one document from its node, collecting locations, problems and broken paths."""

    def __init__(self, filename: str) -> None:
        self.file = filename
        self.problems: list[Problem] = []
        self.locations: dict[str, Location] = {}
        self.broken: set[str] = set()
        self._constructor = SafeConstructor()
        self._merged: dict[int, int] = {}

    def loc(self, node: Node) -> Location:
        return Location(self.file, node.start_mark.line + 1)

    def fail(self, where: Node | Location, path: str, message: str) -> None:
        location = where if isinstance(where, Location) else self.loc(where)
        self.problems.append(Problem(location, path, message))
        self.broken.add(path)

    def at(self, path: str, node: Node) -> Location:
        """Where ``path``'s key was written, else ``node``'s own line."""
        return self.locations.get(path) or self.loc(node)

    # -- nodes -> plain values

    def scalar(self, node: Node) -> Any:
        """The plain value of a scalar node; ``_MISSING`` for lists, mappings, bad tags."""
        if not isinstance(node, ScalarNode):
            return _MISSING
        if node.tag == _STR:
            return node.value
        try:
            return self._constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError, OverflowError):
            # ValueError: a date like 2026-13-45, an integer of more than 4300 digits
            return _MISSING

    def got(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        value = self.scalar(node)
        if value is _MISSING:
            return f"a value tagged {node.tag}"
        return _show(value)

    def entries(self, node: MappingNode, path: str) -> dict[str, tuple[Node, Node]]:
        """The entries of a mapping by key (merge keys applied), each key's line recorded."""
        # Flattening rewrites the node in place: an alias visits it again already flattened.
        merged = self._merged.get(id(node), 0)
        if any(k.tag == _MERGE for k, _ in node.value):
            own_count = sum(1 for k, _ in node.value if k.tag != _MERGE)
            problem = _merge_problem(node)
            if problem is not None:
                self.fail(node, path, problem)
                return {}
            try:
                self._constructor.flatten_mapping(node)
            except ConstructorError as exc:
                self.fail(node, path, f"invalid merge key: {exc.problem}")
                return {}
            merged = self._merged[id(node)] = len(node.value) - own_count
        out: dict[str, tuple[Node, Node]] = {}
        own: set[str] = set()
        for position, (key_node, value_node) in enumerate(node.value):
            key = self.scalar(key_node)
            if not isinstance(key, str):
                self.fail(key_node, path, f"keys must be strings, got {self.got(key_node)}")
                continue
            sub = _join(path, key)
            if position >= merged:  # written here, not merged in (an explicit key wins)
                if key in own:
                    first = out[key][0].start_mark.line + 1
                    self.fail(key_node, sub, f"duplicate key (first at line {first})")
                    continue
                own.add(key)
            out[key] = (key_node, value_node)
            self.locations[sub] = self.loc(key_node)
        return out

    def value(self, field: F.Field, node: Node, path: str) -> tuple[bool, Any]:
        """(ok, value) of ``field`` written as ``node``: (True, ``_MISSING``) for an optional
        null, (False, None) on a problem (the caller then uses the default)."""
        if _is_null(node):
            if field.required:
                self.fail(self.at(path, node), path, f"expected {_EXPECTED[field.type]}, got null")
                return False, None
            return True, _MISSING
        kind = field.type
        if kind is F.T.OBJECT and field.shape is not None:
            return self.shape(field.shape, node, path)
        if kind is F.T.STR_MAP:
            return self.str_map(node, path, field.max_length)
        if kind is F.T.STR_LIST:
            return self.str_list(field, node, path)
        if kind is F.T.HINTS:
            return self.hints(node, path)
        value = self.scalar(node)
        if kind is F.T.INT and value is _MISSING and node.tag == _INT:
            # an integer PyYAML cannot build: more digits than Python converts
            too_big = (
                f"must be between {field.minimum} and {field.maximum}, "
                f"got {_quote(str(node.value))}"
            )
            self.fail(self.at(path, node), path, too_big)
            return False, None
        good = (
            isinstance(value, int) and not isinstance(value, bool)
            if kind is F.T.INT
            else isinstance(value, bool)
            if kind is F.T.BOOL
            else isinstance(value, str)
        )
        if not good:
            hint = "; quote it" if kind is F.T.STR and value is not _MISSING else ""
            self.fail(
                self.at(path, node), path, f"expected {_EXPECTED[kind]}, got {self.got(node)}{hint}"
            )
            return False, None
        message = self.check(field, value)
        if message is not None:
            self.fail(self.at(path, node), path, message)
            return False, None
        return True, value

    def check(self, field: F.Field, value: Any) -> str | None:
        """Range, choices, pattern and the field's own check of a well-typed value."""
        if field.minimum is not None and value < field.minimum:
            return f"must be >= {field.minimum}, got {_number(value)}"
        if field.maximum is not None and value > field.maximum:
            return f"must be <= {field.maximum}, got {_number(value)}"
        if field.choices and value not in field.choices:
            message = f"must be one of {_choices(field.choices)}, got {_show(value)}"
            close = _suggest(value, field.choices) if isinstance(value, str) else None
            return message + (f' (did you mean "{close}"?)' if close else "")
        if field.max_length is not None and len(value) > field.max_length:
            return f"must be at most {field.max_length} characters, got {len(value)}"
        if field.pattern is not None and not re.fullmatch(field.pattern, value):
            return f"{_show(value)} must match {field.pattern}"
        if field.check is not None:
            return field.check(value)
        return None

    def str_map(self, node: Node, path: str, max_length: int | None = None) -> tuple[bool, Any]:
        if not isinstance(node, MappingNode):
            self.fail(self.at(path, node), path, f"expected a mapping, got {self.got(node)}")
            return False, None
        ok, out = True, {}
        for key, (key_node, value_node) in self.entries(node, path).items():
            sub = _join(path, key)
            value = self.scalar(value_node)
            if not isinstance(value, str):
                self.fail(key_node, sub, f"expected a string, got {self.got(value_node)}; quote it")
                ok = False
                continue
            try:
                validation.properties([f"{key}={value}"])
            except InvalidInput as exc:
                self.fail(key_node, sub, str(exc.kwargs.get("reason", exc.message)))
                ok = False
                continue
            if max_length is not None and len(value) > max_length:
                self.fail(
                    key_node, sub, f"must be at most {max_length} characters, got {len(value)}"
                )
                ok = False
                continue
            out[key] = value
        return ok, out

    def str_list(self, field: F.Field, node: Node, path: str) -> tuple[bool, Any]:
        if not isinstance(node, SequenceNode):
            self.fail(self.at(path, node), path, f"expected a list, got {self.got(node)}")
            return False, None
        ok, out = True, []
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            self.locations[sub] = self.loc(item)
            value = self.scalar(item)
            message = (
                f"expected a string, got {self.got(item)}"
                if not isinstance(value, str)
                else self.check(field, value)
            )
            if message is not None:
                self.fail(item, sub, message)
                ok = False
            else:
                out.append(value)
        return ok, tuple(out)

    def hints(self, node: Node, path: str) -> tuple[bool, Any]:
        if not isinstance(node, MappingNode):
            self.fail(self.at(path, node), path, f"expected a mapping, got {self.got(node)}")
            return False, None
        ok, out = True, {}
        for key, (key_node, value_node) in self.entries(node, path).items():
            sub = _join(path, key)
            if key not in HINTS:
                close = _suggest(key, HINTS)
                more = f'; did you mean "{close}"?' if close else f"; known: {_choices(HINTS)}"
                self.fail(key_node, sub, f"unknown scheduler hint {_quote(key)}{more}")
                ok = False
                continue
            if isinstance(value_node, SequenceNode):
                items = [self.scalar(n) for n in value_node.value]
            else:
                text = self.scalar(value_node)
                items = [p.strip() for p in text.split(",")] if isinstance(text, str) else [text]
            names = [v for v in items if isinstance(v, str) and v]
            if len(names) != len(items) or not names:
                self.fail(
                    key_node, sub, "expected a server name, a comma-separated string or a list"
                )
                ok = False
                continue
            out[key] = tuple(names)
        return ok, out

    def shape(self, shape: F.Shape, node: Node | None, path: str) -> tuple[bool, Any]:
        """Build the object of ``shape`` from a mapping node (None: nothing was written)."""
        if node is not None and not isinstance(node, MappingNode):
            self.fail(self.at(path, node), path, f"expected a mapping, got {self.got(node)}")
            return False, placeholder(shape)
        entries = self.entries(node, path) if node is not None else {}
        values: dict[str, Any] = {}
        written = {k for k, (_, v) in entries.items() if not _is_null(v) and shape.field(k)}
        ok = True
        for key, (key_node, value_node) in entries.items():
            field = shape.field(key)
            sub = _join(path, key)
            if field is None:
                close = _suggest(key, shape.names)
                more = (
                    f'; did you mean "{close}"?' if close else f" (known: {', '.join(shape.names)})"
                )
                self.fail(key_node, sub, f"unknown field {_quote(key)}{more}")
                ok = False
                continue
            good, value = self.value(field, value_node, sub)
            ok = ok and good
            if good and value is not _MISSING:
                values[key] = value
        where = self.locations.get(path) or (self.loc(node) if node is not None else None)
        for field in shape.fields:
            if field.name in values:
                continue
            sub = _join(path, field.name)
            if field.required and field.name not in entries and where is not None:
                self.fail(where, sub, "required field missing")
                ok = False
            if field.type is F.T.OBJECT and field.shape is not None:
                values[field.name] = placeholder(field.shape)
            elif field.required:
                values[field.name] = _PLACEHOLDERS[field.type]
            else:
                values[field.name] = _fresh(field.default)
        if where is not None:
            ok = self.rules(shape, values, written, path, where) and ok
        return ok, shape.cls(**values)

    def rules(
        self, shape: F.Shape, values: dict[str, Any], given: set[str], path: str, where: Location
    ) -> bool:
        ok = True

        def p(name: str) -> str:
            return _join(path, name)

        def bad(name: str, location: Location, message: str) -> None:
            nonlocal ok
            self.fail(location, p(name), message)
            ok = False

        for rule in shape.rules:
            if isinstance(rule, F.Needs):
                if rule.field in given and rule.other not in given:
                    bad(rule.field, self.locations[p(rule.field)], f"needs {p(rule.other)}")
            elif isinstance(rule, F.Conflicts):
                if rule.field in given:
                    for other in rule.others:
                        if other in given:
                            bad(
                                other, self.locations[p(other)], f"not allowed with {p(rule.field)}"
                            )
            elif isinstance(rule, F.AtLeastOne):
                if not given & set(rule.fields):
                    names = _choices([p(f) for f in rule.fields])
                    self.fail(where, path, f"needs one of {names}")
                    ok = False
            elif isinstance(rule, F.OnlyWhen):
                if p(rule.other) in self.broken:
                    continue
                if rule.field in given and values[rule.other] not in rule.values:
                    bad(
                        rule.field,
                        self.locations[p(rule.field)],
                        f"only allowed when {p(rule.other)} is {_choices(rule.values)}",
                    )
            elif isinstance(rule, F.RequiredWhen):
                if p(rule.other) in self.broken or p(rule.field) in self.broken:
                    continue
                if values[rule.other] in rule.values and rule.field not in given:
                    bad(
                        rule.field,
                        self.locations.get(p(rule.other), where),
                        f"required when {p(rule.other)} is {_choices([values[rule.other]])}",
                    )
        return ok

    # -- documents

    def document(self, node: Node) -> Document[Any] | None:
        """The document of ``node``, or None when its kind or name cannot be read."""
        if not isinstance(node, MappingNode):
            self.fail(node, "", f"a document must be a mapping, got {self.got(node)}")
            return None
        entries = self.entries(node, "")
        for key, (key_node, _) in entries.items():
            if key not in F.TOP_LEVEL:
                close = _suggest(key, F.TOP_LEVEL)
                more = (
                    f'; did you mean "{close}"?' if close else f" (known: {', '.join(F.TOP_LEVEL)})"
                )
                self.fail(key_node, key, f"unknown field {_quote(key)}{more}")
        self.api_version(node, entries)
        info = self.kind(node, entries)
        name, labels = self.metadata(node, entries, info)
        if info is None:
            return None
        spec_node = entries.get("spec", (None, None))[1]
        if spec_node is None or _is_null(spec_node):
            needs_spec = any(f.required for f in info.shape.fields) or any(
                isinstance(r, F.AtLeastOne) for r in info.shape.rules
            )
            if needs_spec:
                self.fail(self.at("spec", node), "spec", "required field missing")
                spec = placeholder(info.shape)
            else:
                _, spec = self.shape(info.shape, None, "spec")
        else:
            _, spec = self.shape(info.shape, spec_node, "spec")
        if name is None:
            return None
        return Document(
            kind=info.kind,
            name=name,
            spec=spec,
            location=self.loc(node),
            labels=labels,
            locations=self.locations,
            broken=frozenset(self.broken),
        )

    def api_version(self, node: MappingNode, entries: dict[str, tuple[Node, Node]]) -> None:
        if "apiVersion" not in entries:
            self.fail(node, "apiVersion", f'required field missing (use "{API_VERSION}")')
            return
        value_node = entries["apiVersion"][1]
        value = self.scalar(value_node)
        if value != API_VERSION:
            self.fail(
                self.at("apiVersion", value_node),
                "apiVersion",
                f'unknown apiVersion {self.got(value_node)}; expected "{API_VERSION}"',
            )

    def kind(self, node: MappingNode, entries: dict[str, tuple[Node, Node]]) -> F.KindInfo | None:
        if "kind" not in entries:
            self.fail(node, "kind", f"required field missing (one of {', '.join(KINDS)})")
            return None
        value_node = entries["kind"][1]
        value = self.scalar(value_node)
        info = F.KINDS.get(value) if isinstance(value, str) else None
        if info is None:
            close = _suggest(value, KINDS) if isinstance(value, str) else None
            more = f'; did you mean "{close}"?' if close else f" (known: {', '.join(KINDS)})"
            self.fail(
                self.at("kind", value_node), "kind", f"unknown kind {self.got(value_node)}{more}"
            )
        return info

    def metadata(
        self,
        node: MappingNode,
        entries: dict[str, tuple[Node, Node]],
        info: F.KindInfo | None,
    ) -> tuple[str | None, dict[str, str]]:
        if "metadata" not in entries:
            self.fail(node, "metadata.name", "required field missing")
            return None, {}
        meta_node = entries["metadata"][1]
        if not isinstance(meta_node, MappingNode):
            self.fail(
                self.at("metadata", meta_node),
                "metadata",
                f"expected a mapping, got {self.got(meta_node)}",
            )
            return None, {}
        meta = self.entries(meta_node, "metadata")
        for key, (key_node, _) in meta.items():
            if F.METADATA.field(key) is None:
                close = _suggest(key, F.METADATA.names)
                more = f'; did you mean "{close}"?' if close else " (known: name, labels)"
                self.fail(key_node, f"metadata.{key}", f"unknown field {_quote(key)}{more}")
        labels: dict[str, str] = {}
        if "labels" in meta:
            good, value = self.str_map(meta["labels"][1], "metadata.labels")
            labels = value if good else {}
        if "name" not in meta:
            self.fail(self.at("metadata", meta_node), "metadata.name", "required field missing")
            return None, labels
        name_node = meta["name"][1]
        name = self.scalar(name_node)
        if not isinstance(name, str):
            self.fail(
                self.at("metadata.name", name_node),
                "metadata.name",
                f"expected a string, got {self.got(name_node)}",
            )
            return None, labels
        if info is not None:
            try:
                info.check_name(name)
            except InvalidInput as exc:
                self.fail(
                    self.at("metadata.name", name_node),
                    "metadata.name",
                    str(exc.kwargs.get("reason", exc.message)),
                )
        return name, labels
