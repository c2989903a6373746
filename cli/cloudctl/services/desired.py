"""Desired-state files: read them, and check them against the names cloudctl's SQL holds.

The model, loader and checks are pure (:mod:`cloudctl.state`); this module does the I/O around
them: reading a file or a directory tree of ``*.yaml``/``*.yml`` files, and a few read-only
queries for the names a Server may refer to. Nothing here writes to the database.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Select, select

from cloudctl.db.models import Flavor, Host, Image, KeyPair, Network, ServerGroup
from cloudctl.errors import InvalidInput
from cloudctl.services.context import Context
from cloudctl.state import Estate, Known, Problem, load_estate, validate
from cloudctl.state.model import ImageSpec

SUFFIXES = (".yaml", ".yml")


def read_files(path: Path) -> list[tuple[str, str]]:
    """``(name, text)`` of one file, or of every ``*.yaml``/``*.yml`` under a directory.

    Directories are searched recursively, hidden ones (``.git``) skipped, and the files sorted
    by path, so the same tree always gives the same estate.
    """
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix in SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise InvalidInput(reason=f"no *.yaml or *.yml files under {path}")
    else:
        raise InvalidInput(reason=f"{path}: no such file or directory")
    out = []
    for file in files:
        try:
            out.append((str(file), file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(reason=f"cannot read {file}: {exc}") from exc
    return out


def known_names(ctx: Context) -> Known:
    """The flavors, images, key pairs, groups, networks and hosts cloudctl has (read-only)."""
    s = ctx.settings
    with ctx.db.unit_of_work() as session:

        def names(stmt: Select[str]) -> frozenset[str]:
            return frozenset(session.scalars(stmt))

        hosts = session.execute(
            select(Host.name, Host.availability_zone).where(Host.deleted == 0)
        ).all()
        return Known(
            flavors=names(select(Flavor.name).where(Flavor.deleted == 0)),
            images=names(select(Image.name).where(Image.deleted == 0)),
            keypairs=names(
                select(KeyPair.name).where(KeyPair.deleted == 0, KeyPair.user_id == s.user_id)
            ),
            server_groups=names(
                select(ServerGroup.name).where(
                    ServerGroup.deleted == 0, ServerGroup.project_id == s.project_id
                )
            ),
            networks=names(select(Network.name).where(Network.deleted == 0)),
            hosts={name: az for name, az in hosts},
        )


def file_problems(estate: Estate) -> list[Problem]:
    """Image files the documents name that this machine cannot read."""
    out = []
    for doc in estate.of_kind("Image"):
        spec: ImageSpec = doc.spec
        for attr in ("file", "kernel", "initrd"):
            value = getattr(spec, attr)
            path = f"spec.{attr}"
            if value is None or path in doc.broken:
                continue
            resolved = doc.resolve_path(value)
            if not os.path.isfile(resolved):
                out.append(
                    Problem(doc.at(path), path, f"{resolved}: no such file or not a regular file")
                )
    return out


def validate_path(
    ctx: Context | None, path: Path, *, check_files: bool = True
) -> tuple[Estate, list[Problem]]:
    """The estate of the files at ``path`` and every problem with it, sorted.

    Without a context (offline) references to objects the files do not define are not
    checked; with ``check_files`` the image files named must exist here.
    """
    return validate_files(ctx, read_files(path), check_files=check_files)


def validate_files(
    ctx: Context | None, files: Sequence[tuple[str, str]], *, check_files: bool = True
) -> tuple[Estate, list[Problem]]:
    """:func:`validate_path` of files already read (``(name, text)`` as :func:`read_files`)."""
    estate = load_estate(files)
    known = known_names(ctx) if ctx is not None else Known.unchecked()
    problems = validate(estate, known)
    if check_files:
        problems = sorted({*problems, *file_problems(estate)})
    return estate, problems
