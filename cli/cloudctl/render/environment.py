"""The one Jinja environment over the repository's ``templates/`` directory.

Every template is XML-autoescaped (the domain templates are ``*.xml.j2``; other names default to
escaping too, so a macro file can never be imported unescaped), undefined names fail
(``StrictUndefined``), and a ``None`` reaching the output fails too instead of printing ``None``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.exceptions import UndefinedError

from cloudctl.domain.paths import TEMPLATES_DIR


def _refuse_none(value: Any) -> Any:
    if value is None:
        raise UndefinedError("a template printed None; guard optional values with 'is not none'")
    return value


def make_environment(templates_dir: Path | str = TEMPLATES_DIR) -> Environment:
    """A fresh environment over ``templates_dir`` (tests may point it elsewhere)."""
    return Environment(
        loader=FileSystemLoader(str(templates_dir)),
        autoescape=select_autoescape(
            enabled_extensions=("xml", "xml.j2"),
            default_for_string=True,
            default=True,
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_refuse_none,
        auto_reload=False,
    )


@cache
def get_environment() -> Environment:
    """The shared environment over :data:`cloudctl.domain.paths.TEMPLATES_DIR`."""
    return make_environment(TEMPLATES_DIR)
