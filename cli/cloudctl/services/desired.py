"""Desired-state files: read them, and check them against the names cloudctl's SQL holds.

The model, loader and checks are pure (:mod:`cloudctl.state`); this module does the I/O around
them: reading a file or a directory tree of ``*.yaml``/``*.yml`` files, and a few read-only
queries for the names a Server may refer to. Nothing here writes to the database.

What the files may reach is bounded: together they hold at most :data:`MAX_ESTATE_BYTES`, and
every file they name (an Image's ``file``, ``kernel``, ``initrd``; a YAML file found under a
directory) resolves, symlinks included, inside the tree given to ``-f``. Anything else is a
problem with its file and line, as a bad field is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import Select, select

from cloudctl.db.models import Flavor, Host, Image, KeyPair, Network, ServerGroup
from cloudctl.errors import InvalidInput
from cloudctl.services.context import Context
from cloudctl.state import Estate, Known, Location, Problem, load_estate, validate
from cloudctl.state.model import ImageSpec

SUFFIXES = (".yaml", ".yml")
#: The most bytes the files of one ``-f`` may hold together (16 MiB).
MAX_ESTATE_BYTES = 16 * 1024 * 1024
#: The fields of an Image document that name a file.
IMAGE_FILE_FIELDS = ("file", "kernel", "initrd")


class EstateFiles(list[tuple[str, str]]):
    """``(name, text)`` of the files of one ``-f``, the tree they must stay in, and what reading
    them found wrong (too large, a file outside the tree)."""

    def __init__(
        self, files: Iterable[tuple[str, str]] = (), *, root: Path, problems: Iterable[Problem] = ()
    ) -> None:
        super().__init__(files)
        #: The directory given to ``-f`` (or the directory of the file given), resolved.
        self.root = root
        self.problems = tuple(problems)


def tree_root(path: Path) -> Path:
    """The tree the files of ``-f path`` may name: the directory itself, or the file's own."""
    return Path(os.path.realpath(path if path.is_dir() else path.absolute().parent))


def inside(path: str | Path, root: Path) -> bool:
    """Whether ``path``, its symlinks resolved, lies in ``root`` (a resolved directory)."""
    return Path(os.path.realpath(path)).is_relative_to(root)


def read_files(path: Path) -> EstateFiles:
    """``(name, text)`` of one file, or of every ``*.yaml``/``*.yml`` under a directory.

    Directories are searched recursively, hidden ones (``.git``) skipped, and the files sorted
    by path, so the same tree always gives the same estate. A file found under the directory
    that resolves outside it (a symlink) is not read, nor anything past
    :data:`MAX_ESTATE_BYTES` in all: each is a problem of the result, which then holds no
    files at all.
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
    root = tree_root(path)
    outside = [
        Problem(Location(str(f), 1), "", f"resolves outside {root}, the tree given to -f")
        for f in files
        if f != path and not inside(f, root)
    ]
    if outside:
        return EstateFiles(root=root, problems=outside)
    out = []
    left = MAX_ESTATE_BYTES
    for file in files:
        try:
            with file.open("rb") as fh:
                data = fh.read(left + 1)
            if len(data) > left:
                too_big = Problem(
                    Location(str(file), 1),
                    "",
                    f"the files of -f {path} hold more than {MAX_ESTATE_BYTES} bytes (16 MiB) "
                    "together, the most cloudctl reads",
                )
                return EstateFiles(root=root, problems=[too_big])
            left -= len(data)
            out.append((str(file), data.decode("utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(reason=f"cannot read {file}: {exc}") from exc
    return EstateFiles(out, root=root)


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


def file_problems(estate: Estate, root: Path, *, check_exist: bool = True) -> list[Problem]:
    """Files the Image documents name that resolve outside ``root`` or, with ``check_exist``,
    that this machine does not have as regular files."""
    out = []
    for doc in estate.of_kind("Image"):
        spec: ImageSpec = doc.spec
        for attr in IMAGE_FILE_FIELDS:
            value = getattr(spec, attr)
            path = f"spec.{attr}"
            if value is None or path in doc.broken:
                continue
            resolved = doc.resolve_path(value)
            if not inside(resolved, root):
                out.append(
                    Problem(
                        doc.at(path),
                        path,
                        f"{value} resolves outside {root}, the tree given to -f (a file a "
                        "document names must be inside it)",
                    )
                )
            elif check_exist and not os.path.isfile(resolved):
                out.append(
                    Problem(doc.at(path), path, f"{resolved}: no such file or not a regular file")
                )
    return out


def validate_path(
    ctx: Context | None, path: Path, *, check_files: bool = True
) -> tuple[Estate, list[Problem]]:
    """The estate of the files at ``path`` and every problem with it, sorted.

    Without a context (offline) references to objects the files do not define are not
    checked; with ``check_files`` the image files named must exist here. Wherever they are
    named, they must lie inside ``path``'s tree.
    """
    return validate_files(ctx, read_files(path), check_files=check_files)


def validate_files(
    ctx: Context | None, files: Sequence[tuple[str, str]], *, check_files: bool = True
) -> tuple[Estate, list[Problem]]:
    """:func:`validate_path` of files already read (``(name, text)`` as :func:`read_files`).

    Files from :func:`read_files` know their tree; for other lists it is the deepest directory
    holding them all.
    """
    if isinstance(files, EstateFiles):
        root, read_problems = files.root, files.problems
    else:
        dirs = [os.path.dirname(os.path.abspath(name)) for name, _ in files]
        root, read_problems = Path(os.path.realpath(os.path.commonpath(dirs) if dirs else ".")), ()
    estate = load_estate(files)
    known = known_names(ctx) if ctx is not None else Known.unchecked()
    problems = validate(estate, known)
    found = file_problems(estate, root, check_exist=check_files)
    return estate, sorted({*problems, *read_problems, *found})
