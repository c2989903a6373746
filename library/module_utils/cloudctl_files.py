"""Survey of the files in a compute host's instances directory (cloudctl modules).

Shared by ``cloudctl_host_facts`` (``files: true``) and ``cloudctl_host_cleanup``, so the
"is this base file in use" answer is the same for the survey and for the removal. Standard
library only; never descends below the directories directly under the instances path.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any

from ansible.module_utils.cloudctl_common import BASE_DIR_NAME, UUID_RE

RESIZE_SUFFIX = "_resize"
QCOW2_MAGIC = b"QFI\xfb"
# qcow2 header: magic (4), version (4), backing_file_offset (u64 BE), backing_file_size (u32 BE)
_QCOW2_HEADER = struct.Struct(">4sIQI")
# The qcow2 spec caps the backing file name at 1023 bytes; anything longer is not a sane header.
MAX_BACKING_NAME = 1023


def qcow2_backing_file(path: str) -> str | None:
    """The backing file name stored in the qcow2 header of ``path``, as written there.

    None if ``path`` is not a readable qcow2 file or names no backing file. The name may be
    relative (to the overlay's directory); see :func:`resolve_backing`.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(_QCOW2_HEADER.size)
            if len(header) < _QCOW2_HEADER.size:
                return None
            magic, _version, offset, size = _QCOW2_HEADER.unpack(header)
            if magic != QCOW2_MAGIC or offset == 0 or not 0 < size <= MAX_BACKING_NAME:
                return None
            handle.seek(offset)
            name = handle.read(size)
    except OSError:
        return None
    if len(name) != size:
        return None
    return name.decode("utf-8", errors="surrogateescape")


def resolve_backing(overlay: str, backing: str) -> str:
    """An absolute form of ``backing`` (relative names are relative to the overlay's dir)."""
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(overlay)), backing))


def entry_kind(name: str) -> tuple[str | None, str]:
    """(uuid, kind) of an entry directly under the instances path.

    ``<uuid>`` is an ``instance``, ``<uuid>_resize`` a ``resize`` stash; anything else is
    ``other`` with no uuid.
    """
    if UUID_RE.fullmatch(name):
        return name, "instance"
    if name.endswith(RESIZE_SUFFIX) and UUID_RE.fullmatch(name[: -len(RESIZE_SUFFIX)]):
        return name[: -len(RESIZE_SUFFIX)], "resize"
    return None, "other"


def _scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _lstat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:  # removed while we looked
        return None


def overlay_backings(instances_path: str, skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(overlay path, absolute backing path) of every qcow2 overlay in the instance dirs.

    Looks at the regular files directly inside every directory directly under
    ``instances_path`` except ``_base`` (guest dirs, ``_resize`` stashes and any other
    directory alike) and nothing deeper. Directories named in ``skip`` (full paths) are left
    out, which is how a cleanup predicts the state after removing them.
    """
    skipped = {os.path.abspath(p) for p in skip}
    found: list[tuple[str, str]] = []
    for entry in _scandir(instances_path):
        if entry.name == BASE_DIR_NAME or not entry.is_dir(follow_symlinks=False):
            continue
        if os.path.abspath(entry.path) in skipped:
            continue
        for child in _scandir(entry.path):
            # is_file() follows symlinks but is false for FIFOs/sockets, which must not be opened
            if not child.is_file():
                continue
            backing = qcow2_backing_file(child.path)
            if backing:
                found.append((child.path, resolve_backing(child.path, backing)))
    return found


def base_user(base_path: str, backings: list[tuple[str, str]]) -> str | None:
    """The first overlay whose backing file is ``base_path``, or None.

    Matches by real path, and also by base name alone: a disk copied from a host with another
    instances path names that host's ``_base/<checksum>``, which is this host's file too.
    """
    real = os.path.realpath(base_path)
    name = os.path.basename(base_path)
    for overlay, backing in backings:
        if os.path.basename(backing) == name or os.path.realpath(backing) == real:
            return overlay
    return None


def _instance_dir_facts(entry: os.DirEntry[str]) -> dict[str, Any] | None:
    stat = _lstat(entry)
    if stat is None:
        return None
    mtime, size = stat.st_mtime, 0
    if entry.is_dir(follow_symlinks=False):
        for child in _scandir(entry.path):
            child_stat = _lstat(child)
            if child_stat is not None:
                mtime = max(mtime, child_stat.st_mtime)
                size += child_stat.st_size
    else:
        size = stat.st_size
    uuid, kind = entry_kind(entry.name)
    return {
        "name": entry.name,
        "uuid": uuid,
        "kind": kind,
        "mtime": mtime,
        "size_bytes": size,
        # The same directory seen from two hosts (shared storage: NFS, a bind mount) has the
        # same inode and change time; a copy made elsewhere does not.
        "identity": f"{stat.st_ino}:{stat.st_ctime_ns}",
    }


def survey(instances_path: str) -> dict[str, list[dict[str, Any]]]:
    """The instance directories and cached base files of one host (read-only).

    ``instance_dirs``: every entry directly under ``instances_path`` whose name starts with
    neither ``_`` nor ``.``; ``base_files``: every file in ``_base/`` with whether an overlay
    uses it. Both are sorted by name and empty if ``instances_path`` does not exist.
    """
    instance_dirs = []
    for entry in _scandir(instances_path):
        if entry.name.startswith(("_", ".")):
            continue
        facts = _instance_dir_facts(entry)
        if facts is not None:
            instance_dirs.append(facts)

    backings = overlay_backings(instances_path)
    base_files = []
    for entry in _scandir(os.path.join(instances_path, BASE_DIR_NAME)):
        if not entry.is_file(follow_symlinks=False):
            continue
        stat = _lstat(entry)
        if stat is None:
            continue
        base_files.append(
            {
                "name": entry.name,
                "size_bytes": stat.st_size,
                "mtime": stat.st_mtime,
                "atime": stat.st_atime,
                "in_use": base_user(entry.path, backings) is not None,
                "identity": f"{stat.st_ino}:{stat.st_ctime_ns}",
            }
        )
    return {"instance_dirs": instance_dirs, "base_files": base_files}
