"""Images: a tiny Glance on the controller; files are copied to hosts' ``_base/`` on demand."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudctl.db.models import Image, ImageProperty, Instance
from cloudctl.domain import validation
from cloudctl.errors import AlreadyExists, InUse, InvalidInput, NotFound
from cloudctl.services.context import Context
from cloudctl.services.tiny_image import build_tiny_image

DISK_FORMATS = ("qcow2", "raw")
CHUNK = 1 << 20
#: The widest mode a stored image file gets (narrower when its source was).
STORED_MODE = 0o644


def get_image(session: Session, name: str) -> Image:
    """A live image by name."""
    image = session.scalars(select(Image).where(Image.name == name, Image.deleted == 0)).first()
    if image is None:
        raise NotFound(kind="image", name=name)
    return image


def _copy_with_sha256(src: Path, dest: Path) -> str:
    """Copy ``src`` to a new file ``dest``, never readable by more than ``src`` is; its sha256.

    ``dest`` gets the source's permission bits, at most 0644 (never executable, never writable
    but by its owner): a 0640 file stays 0640. The mode is read from the open file, not the path.
    """
    digest = hashlib.sha256()
    with src.open("rb") as fin:
        mode = stat.S_IMODE(os.fstat(fin.fileno()).st_mode) & STORED_MODE
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                fout.write(chunk)
    return digest.hexdigest()


def disk_info(path: Path) -> tuple[str, int]:
    """(format, virtual size in bytes) of a disk image, as qemu-img reads it."""
    try:
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise InvalidInput(reason=f"{path} is not a readable disk image: {exc}") from exc
    info = json.loads(out)
    fmt = str(info.get("format"))
    if fmt not in DISK_FORMATS:
        raise InvalidInput(
            reason=f"{path}: disk format {fmt!r} is not one of {', '.join(DISK_FORMATS)}"
        )
    if info.get("backing-filename"):
        raise InvalidInput(reason=f"{path}: images with a backing file are not supported")
    return fmt, int(info.get("virtual-size", 0))


def add_image(
    ctx: Context,
    name: str,
    *,
    file: Path | None = None,
    kernel: Path | None = None,
    initrd: Path | None = None,
    cmdline: str | None = None,
    properties: Mapping[str, str] | None = None,
    min_ram_mb: int = 0,
    min_disk_gb: int = 0,
) -> dict[str, Any]:
    """Register an image from a disk file and/or a kernel (+ initrd) for direct boot."""
    validation.object_name("image", name)
    validation.non_negative("min ram", min_ram_mb)
    validation.non_negative("min disk", min_disk_gb)
    if file is None and kernel is None:
        raise InvalidInput(reason="an image needs --file or --kernel")
    if initrd is not None and kernel is None:
        raise InvalidInput(reason="--initrd needs --kernel")
    if cmdline is not None and ("\n" in cmdline or "\x00" in cmdline or len(cmdline) > 1024):
        raise InvalidInput(reason="kernel command line must be one line of at most 1024 characters")
    for label, path in (("file", file), ("kernel", kernel), ("initrd", initrd)):
        if path is not None and not path.is_file():
            raise InvalidInput(reason=f"{label} {str(path)!r} does not exist or is not a file")
    fmt, vsize = disk_info(file) if file is not None else (None, 0)
    with ctx.db.unit_of_work() as session:
        if session.scalars(select(Image.id).where(Image.name == name, Image.deleted == 0)).first():
            raise AlreadyExists(kind="image", name=name)
    image_uuid = str(uuid.uuid4())
    store = ctx.settings.images_dir / image_uuid
    staging = ctx.settings.images_dir / f".{image_uuid}.partial"
    staging.mkdir(parents=True, exist_ok=False)
    try:
        sums: dict[str, str] = {}
        for label, path in (("disk", file), ("kernel", kernel), ("initrd", initrd)):
            if path is not None:
                ctx.progress.info(f"copying {label} {path}")
                sums[label] = _copy_with_sha256(path, staging / label)
        staging.rename(store)
        with ctx.db.unit_of_work() as session:
            image = Image(
                uuid=image_uuid,
                name=name,
                disk_format=fmt,
                path=str(store / "disk") if file else None,
                checksum=sums.get("disk"),
                size_bytes=(store / "disk").stat().st_size if file else 0,
                virtual_size_bytes=vsize,
                kernel_path=str(store / "kernel") if kernel else None,
                kernel_checksum=sums.get("kernel"),
                initrd_path=str(store / "initrd") if initrd else None,
                initrd_checksum=sums.get("initrd"),
                cmdline=cmdline,
                min_ram_mb=min_ram_mb,
                min_disk_gb=min_disk_gb,
                created_at=ctx.clock(),
                properties=[ImageProperty(key=k, value=v) for k, v in (properties or {}).items()],
            )
            session.add(image)
            session.flush()
            return image_view(image)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        raise


def create_tiny(ctx: Context, name: str, *, force: bool = False) -> dict[str, Any]:
    """Build (or reuse) the tiny kernel + busybox test image and register it as ``name``."""
    validation.object_name("image", name)
    with ctx.db.unit_of_work() as session:
        existing = session.scalars(
            select(Image).where(Image.name == name, Image.deleted == 0)
        ).first()
        if existing is not None and not force:
            return image_view(existing)
    tiny = build_tiny_image(
        ctx.settings.cache_dir / "tiny", force=force, progress=ctx.progress.info
    )
    if existing is not None:
        delete_image(ctx, name)
    return add_image(
        ctx,
        name,
        file=tiny.disk,
        kernel=tiny.kernel,
        initrd=tiny.initrd,
        cmdline=tiny.cmdline,
        properties={
            "os_type": "linux",
            "hw_architecture": "x86_64",
            "kernel_version": tiny.kernel_version,
        },
    )


@dataclass(frozen=True)
class DirectBoot:
    """An image's kernel, initrd and command line (direct kernel boot), to carry over."""

    kernel_path: str | None = None
    kernel_checksum: str | None = None
    initrd_path: str | None = None
    initrd_checksum: str | None = None
    cmdline: str | None = None

    @classmethod
    def of(cls, image: Image | None) -> DirectBoot:
        """The direct-boot files of ``image`` (none without an image)."""
        if image is None:
            return cls()
        return cls(
            image.kernel_path,
            image.kernel_checksum,
            image.initrd_path,
            image.initrd_checksum,
            image.cmdline,
        )


def image_staging(ctx: Context, image_uuid: str) -> Path:
    """A fresh staging directory for an image's files; it becomes the store once registered."""
    staging = ctx.settings.images_dir / f".{image_uuid}.partial"
    staging.mkdir(parents=True, exist_ok=False)
    return staging


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)  # images never change once stored: sharing the inode is safe
    except OSError:
        _copy_with_sha256(src, dest)


def register_disk_image(
    ctx: Context,
    name: str,
    image_uuid: str,
    staging: Path,
    *,
    boot: DirectBoot,
    properties: Mapping[str, str],
    min_ram_mb: int = 0,
    min_disk_gb: int = 0,
) -> dict[str, Any]:
    """Register ``staging/disk`` (e.g. an exported snapshot) as image ``name``.

    The staging directory (from :func:`image_staging`) becomes the image's store; the kernel
    and initrd of ``boot`` are linked in beside the disk, so the new image boots as its source
    did. On any failure the staging directory is removed.
    """
    store = ctx.settings.images_dir / image_uuid
    try:
        validation.object_name("image", name)
        disk = staging / "disk"
        fmt, vsize = disk_info(disk)
        digest = hashlib.sha256()
        with disk.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        files = {}
        for label, path in (("kernel", boot.kernel_path), ("initrd", boot.initrd_path)):
            if path:
                _link_or_copy(Path(path), staging / label)
                files[label] = str(store / label)
        staging.rename(store)
        with ctx.db.unit_of_work() as session:
            if session.scalars(
                select(Image.id).where(Image.name == name, Image.deleted == 0)
            ).first():
                raise AlreadyExists(kind="image", name=name)
            image = Image(
                uuid=image_uuid,
                name=name,
                disk_format=fmt,
                path=str(store / "disk"),
                checksum=digest.hexdigest(),
                size_bytes=(store / "disk").stat().st_size,
                virtual_size_bytes=vsize,
                kernel_path=files.get("kernel"),
                kernel_checksum=boot.kernel_checksum if "kernel" in files else None,
                initrd_path=files.get("initrd"),
                initrd_checksum=boot.initrd_checksum if "initrd" in files else None,
                cmdline=boot.cmdline if "kernel" in files else None,
                min_ram_mb=min_ram_mb,
                min_disk_gb=min_disk_gb,
                created_at=ctx.clock(),
                properties=[ImageProperty(key=k, value=v) for k, v in properties.items()],
            )
            session.add(image)
            session.flush()
            return image_view(image)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        raise


def list_images(ctx: Context) -> list[dict[str, Any]]:
    """Every live image."""
    with ctx.db.unit_of_work() as session:
        rows = session.scalars(select(Image).where(Image.deleted == 0).order_by(Image.name))
        return [image_view(i) for i in rows]


def show_image(ctx: Context, name: str) -> dict[str, Any]:
    """One image."""
    with ctx.db.unit_of_work() as session:
        return image_view(get_image(session, name))


def delete_image(ctx: Context, name: str) -> None:
    """Soft-delete an image that no live instance uses, and drop its files."""
    with ctx.db.unit_of_work() as session:
        image = get_image(session, name)
        users = session.scalars(
            select(Instance.name).where(Instance.image_id == image.id, Instance.deleted == 0)
        ).all()
        if users:
            raise InUse(kind="image", name=name, reason=f"used by {', '.join(users)}")
        image.deleted = image.id
        image.deleted_at = ctx.clock()
        image.status = "deleted"
        store = ctx.settings.images_dir / image.uuid
    shutil.rmtree(store, ignore_errors=True)


def image_view(image: Image) -> dict[str, Any]:
    """An image as the CLI shows it."""
    return {
        "name": image.name,
        "id": image.uuid,
        "status": image.status,
        "disk_format": image.disk_format,
        "size": image.size_bytes,
        "virtual_size": image.virtual_size_bytes,
        "checksum": image.checksum,
        "kernel": bool(image.kernel_path),
        "initrd": bool(image.initrd_path),
        "cmdline": image.cmdline,
        "min_ram": image.min_ram_mb,
        "min_disk": image.min_disk_gb,
        "properties": image.props(),
    }


def require_image_files(image: Image) -> None:
    """Raise ConfigError when this controller lacks a file of ``image`` (disk, kernel, initrd).

    The files live in the image store of the controller that registered the image
    (``$CLOUDCTL_HOME/images/<uuid>/``) and are copied from there to a host's ``_base``; another
    controller sharing the database needs them at the same paths.
    """
    from cloudctl.errors import ConfigError

    for what, path in (
        ("disk", image.path),
        ("kernel", image.kernel_path),
        ("initrd", image.initrd_path),
    ):
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise ConfigError(
                reason=f"image {image.name!r} needs its {what} file {path}, which is missing on "
                "this controller: every controller sharing the database reads the same image "
                "row, so copy the image store to that path here (or run the command from the "
                "controller that registered the image)",
                image=image.name,
                path=path,
            )
