"""Build the tiny test guest from Debian packages: a kernel plus a busybox initramfs.

No cloud image is downloaded. ``apt-get download`` fetches the Debian cloud kernel and
``busybox-static``; the initramfs (cpio newc + gzip, written here in Python) holds busybox, the
kernel modules needed to read a virtio config-drive ISO, and ``templates/tiny_image/init``. Booted
with direct kernel boot, the guest prints exactly one line to its serial console::

    CLOUDCTL-GUEST-UP uuid=<SMBIOS system uuid> hostname=<local-hostname from meta-data>

and then stays up. A blank qcow2 disk gives the image a disk file for the base-image and overlay
path. Everything lives in one cache directory; a finished build is recorded in a manifest and a
second call returns it without touching apt. Every output is written to a temporary name and
renamed into place, and the manifest is written last, so a killed build leaves no half file that
a later call would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudctl.domain.paths import TEMPLATES_DIR
from cloudctl.errors import ImageBuildError

#: The Debian metapackage whose dependency names the current versioned cloud kernel.
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
#: Works with direct kernel boot; panic=-1 reboots at once instead of hanging on a panic.
DEFAULT_CMDLINE = "console=ttyS0 panic=-1 quiet"
#: The first word of the line the guest prints when it is up.
MARKER = "CLOUDCTL-GUEST-UP"
#: Modules the guest needs to read a config-drive ISO on a virtio disk (dependencies are added).
REQUIRED_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_blk", "isofs")
#: Modules loaded when the kernel has them: a virtio NIC, raw sockets, the ACPI power button.
OPTIONAL_MODULES: tuple[str, ...] = ("virtio_net", "af_packet", "button", "evdev")
#: Loaded by /init only when no virtio disk holds the config drive: an IDE (pc machine) or
#: virtio-scsi CD-ROM, as Nova attaches config drives. The cloud kernel has no AHCI (q35 SATA).
CDROM_MODULES: tuple[str, ...] = ("ata_piix", "virtio_scsi", "sr_mod")
INIT_TEMPLATE = TEMPLATES_DIR / "tiny_image" / "init"
DISK_SIZE = "64M"

#: Bumped whenever the layout of the outputs changes, so older caches are rebuilt.
_FORMAT = 2
_MANIFEST = "tiny-image.json"
_KERNEL_FILE = "vmlinuz"
_INITRD_FILE = "initrd.img"
_DISK_FILE = "disk.qcow2"
_DEBS_DIR = "debs"
_TMP_PREFIX = ".tmp-"
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TinyImage:
    """The files of a built tiny image and how to boot it."""

    kernel: Path
    initrd: Path
    disk: Path
    cmdline: str
    kernel_version: str


@dataclass(frozen=True)
class KernelModule:
    """A loadable kernel module as found in the kernel package."""

    name: str
    path: Path
    depends: tuple[str, ...]


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc archive; ``data`` is a file's bytes or a symlink's target."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def build_tiny_image(
    cache_dir: Path, *, force: bool = False, progress: Progress | None = None
) -> TinyImage:
    """Build (or return the cached) tiny image in ``cache_dir``.

    The first build downloads the kernel and busybox packages with ``apt-get download`` (running
    ``apt-get update`` only if the package lists are missing or stale). Later calls return the
    recorded image at once unless ``force`` is set or the ``/init`` template changed; a rebuild
    reuses downloaded packages unless ``force`` is set. Concurrent callers are serialised by a
    lock file in ``cache_dir``.

    Raises:
        ImageBuildError: a tool is missing, apt cannot provide the packages, or the kernel
            package lacks a required module.
    """
    say = progress or (lambda _msg: None)
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageBuildError(reason=f"cannot create cache directory {cache_dir}: {exc}") from exc
    init_script = _read_init_template()
    init_sha = hashlib.sha256(init_script).hexdigest()

    with _locked(cache_dir / ".lock"):
        if not force:
            cached = _cached_image(cache_dir, init_sha)
            if cached is not None:
                return cached
        _remove_stale_temporaries(cache_dir)
        kernel_deb, busybox_deb = _obtain_debs(cache_dir / _DEBS_DIR, force=force, say=say)
        return _build(cache_dir, kernel_deb, busybox_deb, init_script, init_sha, say)


def _build(
    cache_dir: Path,
    kernel_deb: Path,
    busybox_deb: Path,
    init_script: bytes,
    init_sha: str,
    say: Progress,
) -> TinyImage:
    for tool in ("dpkg-deb", "qemu-img"):
        _require_tool(tool)
    with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX, dir=cache_dir) as tmp:
        root = Path(tmp)
        say(f"extracting {kernel_deb.name} and {busybox_deb.name}")
        _run(["dpkg-deb", "-x", str(kernel_deb), str(root / "kernel")])
        _run(["dpkg-deb", "-x", str(busybox_deb), str(root / "busybox")])
        vmlinuz, version, modules_dir = _find_kernel(root / "kernel")
        busybox = root / "busybox" / "bin" / "busybox"
        if not busybox.is_file():
            raise ImageBuildError(reason=f"{busybox_deb.name} has no bin/busybox")

        modules = resolve_modules(modules_dir, REQUIRED_MODULES, OPTIONAL_MODULES)
        loaded = {m.name for m in modules}
        cdrom = [m for m in resolve_modules(modules_dir, (), CDROM_MODULES) if m.name not in loaded]
        say(
            f"building initramfs for {version} with modules: {' '.join(m.name for m in modules)}"
            f" (for a CD-ROM config drive: {' '.join(m.name for m in cdrom)})"
        )
        entries = initramfs_entries(busybox.read_bytes(), init_script, modules, cdrom)
        initrd = gzip.compress(pack_newc(entries), compresslevel=9, mtime=0)

        kernel_path = cache_dir / _KERNEL_FILE
        initrd_path = cache_dir / _INITRD_FILE
        disk_path = cache_dir / _DISK_FILE
        # Until the new manifest is written, a kernel and initramfs from two builds may sit side
        # by side; without a manifest no later call trusts them.
        (cache_dir / _MANIFEST).unlink(missing_ok=True)
        _atomic_write(kernel_path, vmlinuz.read_bytes())
        _atomic_write(initrd_path, initrd)
        if not disk_path.is_file():
            say(f"creating blank {DISK_SIZE} qcow2 disk")
            _create_disk(disk_path)

    manifest = {
        "format": _FORMAT,
        "kernel_version": version,
        "cmdline": DEFAULT_CMDLINE,
        "init_sha256": init_sha,
        "kernel_deb": kernel_deb.name,
        "busybox_deb": busybox_deb.name,
        "modules": [m.name for m in modules],
        "cdrom_modules": [m.name for m in cdrom],
        "kernel_sha256": _sha256_file(kernel_path),
        "initrd_sha256": hashlib.sha256(initrd).hexdigest(),
    }
    _atomic_write(
        cache_dir / _MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    )
    say(f"tiny image ready in {cache_dir} (kernel {version})")
    return TinyImage(kernel_path, initrd_path, disk_path, DEFAULT_CMDLINE, version)


# --- cache -----------------------------------------------------------------------------------


def _cached_image(cache_dir: Path, init_sha: str) -> TinyImage | None:
    """The recorded image if the manifest is current and every output file exists."""
    try:
        manifest = json.loads((cache_dir / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        return None
    if manifest.get("init_sha256") != init_sha or manifest.get("cmdline") != DEFAULT_CMDLINE:
        return None
    image = TinyImage(
        kernel=cache_dir / _KERNEL_FILE,
        initrd=cache_dir / _INITRD_FILE,
        disk=cache_dir / _DISK_FILE,
        cmdline=DEFAULT_CMDLINE,
        kernel_version=str(manifest.get("kernel_version", "")),
    )
    if not image.kernel_version:
        return None
    if not all(p.is_file() for p in (image.kernel, image.initrd, image.disk)):
        return None
    return image


def _remove_stale_temporaries(cache_dir: Path) -> None:
    """Drop what a killed build left behind (only ever under a ``.tmp-`` name)."""
    for directory in (cache_dir, cache_dir / _DEBS_DIR):
        if not directory.is_dir():
            continue
        for leftover in directory.glob(f"{_TMP_PREFIX}*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_disk(path: Path) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}")
    tmp.unlink(missing_ok=True)
    try:
        _run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), DISK_SIZE])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_init_template() -> bytes:
    try:
        return INIT_TEMPLATE.read_bytes()
    except OSError as exc:
        raise ImageBuildError(reason=f"cannot read {INIT_TEMPLATE}: {exc}") from exc


# --- packages --------------------------------------------------------------------------------


def _obtain_debs(debs_dir: Path, *, force: bool, say: Progress) -> tuple[Path, Path]:
    """The kernel and busybox .debs: from the cache, or downloaded with apt."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    if not force:
        kernel = _newest(debs_dir.glob("linux-image-*_*.deb"))
        busybox = _newest(debs_dir.glob(f"{BUSYBOX_PACKAGE}_*.deb"))
        if kernel is not None and busybox is not None:
            say(f"using cached {kernel.name} and {busybox.name}")
            return kernel, busybox
    for tool in ("apt-cache", "apt-get"):
        _require_tool(tool)

    updated = False
    while True:
        try:
            kernel_package = resolve_kernel_package()
            say(f"downloading {kernel_package} and {BUSYBOX_PACKAGE}")
            downloaded = _apt_download(debs_dir, [kernel_package, BUSYBOX_PACKAGE])
            break
        except ImageBuildError as exc:
            # Missing lists ("no installation candidate") and stale lists (the mirror dropped
            # the version they name: 404) are both cured by one update.
            if updated:
                raise
            say(f"{exc.message}; running apt-get update")
            _run(["apt-get", "update", "-q"])
            updated = True

    kernel = next(p for p in downloaded if p.name.startswith(f"{kernel_package}_"))
    busybox = next(p for p in downloaded if p.name.startswith(f"{BUSYBOX_PACKAGE}_"))
    for old in [*debs_dir.glob("linux-image-*_*.deb"), *debs_dir.glob(f"{BUSYBOX_PACKAGE}_*.deb")]:
        if old not in (kernel, busybox):
            old.unlink(missing_ok=True)
    return kernel, busybox


def resolve_kernel_package(metapackage: str = KERNEL_METAPACKAGE) -> str:
    """The versioned kernel package a metapackage depends on (linux-image-6.1.0-N-cloud-amd64).

    Raises:
        ImageBuildError: apt does not know the metapackage or it names no kernel package.
    """
    out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", metapackage])
    name = parse_kernel_dependency(out, metapackage)
    if name is None:
        raise ImageBuildError(reason=f"apt-cache depends {metapackage} names no kernel package")
    return name


def parse_kernel_dependency(apt_cache_depends: str, metapackage: str) -> str | None:
    """Pick the versioned ``linux-image-*`` dependency out of ``apt-cache depends`` output."""
    flavour = metapackage.removeprefix("linux-image-")
    pattern = re.compile(rf"^\s*\|?Depends:\s*(linux-image-\d[\w.+-]*-{re.escape(flavour)})\s*$")
    for line in apt_cache_depends.splitlines():
        match = pattern.match(line)
        if match:
            return match.group(1)
    return None


def _apt_download(debs_dir: Path, packages: Sequence[str]) -> list[Path]:
    """Download into a temporary directory, then move the .debs into ``debs_dir``."""
    with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX, dir=debs_dir) as tmp:
        _run(["apt-get", "download", "-q", *packages], cwd=Path(tmp))
        fetched = sorted(Path(tmp).glob("*.deb"))
        if len(fetched) != len(packages):
            raise ImageBuildError(
                reason=f"apt-get download {' '.join(packages)} produced {len(fetched)} files"
            )
        result = []
        for deb in fetched:
            target = debs_dir / deb.name
            deb.replace(target)
            result.append(target)
        return result


def _newest(paths: Iterable[Path]) -> Path | None:
    candidates = [p for p in paths if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


# --- kernel and modules ----------------------------------------------------------------------


def _find_kernel(root: Path) -> tuple[Path, str, Path]:
    """The vmlinuz, its version and its modules directory inside an extracted kernel package."""
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise ImageBuildError(reason=f"expected one boot/vmlinuz-* in the kernel package: {images}")
    version = images[0].name.removeprefix("vmlinuz-")
    for base in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        if (base / version).is_dir():
            return images[0], version, base / version
    raise ImageBuildError(reason=f"the kernel package has no lib/modules/{version}")


def module_name(path: Path) -> str:
    """The name the kernel knows a module file by (``virtio-net.ko.xz`` -> ``virtio_net``)."""
    name = path.name
    for suffix in _MODULE_SUFFIXES:
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    return name.replace("-", "_")


def resolve_modules(
    modules_dir: Path, required: Sequence[str], optional: Sequence[str] = ()
) -> list[KernelModule]:
    """The modules to load, dependencies first, each once; built-in ones are left out.

    Dependencies come from each module's ``.modinfo`` section, as the kernel package does not
    ship ``modules.dep`` (depmod writes it at install time).

    Raises:
        ImageBuildError: a required module (or a dependency) is neither a file nor built in.
    """
    available: dict[str, Path] = {}
    for path in sorted((modules_dir / "kernel").rglob("*.ko*")):
        if path.name.endswith(_MODULE_SUFFIXES):
            available.setdefault(module_name(path), path)
    builtin = _builtin_modules(modules_dir)

    ordered: list[KernelModule] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        if name in chain:
            raise ImageBuildError(reason=f"module dependency cycle: {' -> '.join((*chain, name))}")
        path = available.get(name)
        if path is None:
            via = f" (needed by {chain[-1]})" if chain else ""
            raise ImageBuildError(reason=f"kernel module {name}{via} not found in {modules_dir}")
        depends = module_depends(read_module(path))
        for dep in depends:
            visit(dep, (*chain, name))
        seen.add(name)
        ordered.append(KernelModule(name, path, depends))

    for name in required:
        visit(name, ())
    for name in optional:
        if name.replace("-", "_") in available:
            visit(name, ())
    return ordered


def _builtin_modules(modules_dir: Path) -> set[str]:
    try:
        lines = (modules_dir / "modules.builtin").read_text().splitlines()
    except OSError:
        return set()
    return {module_name(Path(line.strip())) for line in lines if line.strip()}


def read_module(path: Path) -> bytes:
    """A module's ELF bytes, decompressed (busybox insmod cannot read .ko.xz)."""
    data = path.read_bytes()
    name = path.name
    try:
        if name.endswith(".ko.xz"):
            return lzma.decompress(data)
        if name.endswith(".ko.gz"):
            return gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise ImageBuildError(reason=f"cannot decompress {path}: {exc}") from exc
    if name.endswith(".ko.zst"):
        _require_tool("zstd")
        return _run_bytes(["zstd", "-q", "-d", "-c", str(path)])
    return data


def module_depends(elf: bytes) -> tuple[str, ...]:
    """The ``depends=`` list of a module's ``.modinfo`` section (64-bit little-endian ELF).

    Raises:
        ImageBuildError: the bytes are not such an ELF file.
    """
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ImageBuildError(reason="a kernel module is not a 64-bit little-endian ELF file")
    try:
        (shoff,) = struct.unpack_from("<Q", elf, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

        def section(index: int) -> tuple[int, int, int]:
            base = shoff + index * shentsize
            (name_off,) = struct.unpack_from("<I", elf, base)
            offset, size = struct.unpack_from("<QQ", elf, base + 0x18)
            return name_off, offset, size

        _, strtab_off, strtab_size = section(shstrndx)
        strtab = elf[strtab_off : strtab_off + strtab_size]
        for index in range(shnum):
            name_off, offset, size = section(index)
            name = strtab[name_off : strtab.index(b"\0", name_off)]
            if name != b".modinfo":
                continue
            for field in elf[offset : offset + size].split(b"\0"):
                if field.startswith(b"depends="):
                    value = field.removeprefix(b"depends=").decode()
                    return tuple(dep for dep in value.split(",") if dep)
            return ()
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ImageBuildError(reason=f"cannot read a kernel module's ELF headers: {exc}") from exc
    return ()


# --- initramfs -------------------------------------------------------------------------------

_DIR = 0o040000
_FILE = 0o100000
_SYMLINK = 0o120000
_CHARDEV = 0o020000

_INITRAMFS_DIRS = (
    "bin",
    "dev",
    "etc",
    "etc/cloudctl",
    "lib",
    "lib/modules",
    "mnt",
    "mnt/config",
    "proc",
    "root",
    "run",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "usr/bin",
    "usr/sbin",
    "var",
    "var/log",
)


def initramfs_entries(
    busybox: bytes,
    init_script: bytes,
    modules: Sequence[KernelModule],
    cdrom_modules: Sequence[KernelModule] = (),
) -> list[CpioEntry]:
    """The members of the tiny initramfs, parents before children.

    ``/lib/modules/<name>.ko`` holds each module decompressed. ``/etc/cloudctl/modules`` lists
    the names ``/init`` always loads, in load order; ``/etc/cloudctl/modules.cdrom`` those it
    loads (after the first list) only to look for a CD-ROM config drive. ``/dev/console`` is
    included because the kernel opens it for PID 1 before ``/init`` can mount devtmpfs.
    """
    entries = [CpioEntry(d, _DIR | (0o1777 if d == "tmp" else 0o755)) for d in _INITRAMFS_DIRS]
    entries += [
        CpioEntry("dev/console", _CHARDEV | 0o600, rdev=(5, 1)),
        CpioEntry("init", _FILE | 0o755, init_script),
        CpioEntry("bin/busybox", _FILE | 0o755, busybox),
        CpioEntry("bin/sh", _SYMLINK | 0o777, b"busybox"),
    ]
    for module in (*modules, *cdrom_modules):
        entries.append(
            CpioEntry(f"lib/modules/{module.name}.ko", _FILE | 0o644, read_module(module.path))
        )
    for list_name, group in (("modules", modules), ("modules.cdrom", cdrom_modules)):
        load_order = "".join(f"{m.name}\n" for m in group).encode()
        entries.append(CpioEntry(f"etc/cloudctl/{list_name}", _FILE | 0o644, load_order))
    return entries


def pack_newc(entries: Iterable[CpioEntry], *, mtime: int = 0) -> bytes:
    """An uncompressed cpio archive in the "newc" format the kernel unpacks.

    Owner root, one fixed ``mtime`` and inode numbers in entry order keep the bytes reproducible.
    """
    out = bytearray()
    ino = 0
    for ino, entry in enumerate(entries, start=1):
        nlink = 2 if entry.mode & 0o170000 == _DIR else 1
        _append_newc(
            out, entry.path.lstrip("/"), ino, entry.mode, nlink, mtime, entry.data, entry.rdev
        )
    _append_newc(out, "TRAILER!!!", ino + 1, 0, 1, 0, b"", (0, 0))
    return bytes(out)


def _append_newc(
    out: bytearray,
    name: str,
    ino: int,
    mode: int,
    nlink: int,
    mtime: int,
    data: bytes,
    rdev: tuple[int, int],
) -> None:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    out += b"070701" + "".join(f"{value:08X}" for value in fields).encode()
    out += encoded
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)


# --- processes -------------------------------------------------------------------------------


def _require_tool(name: str) -> None:
    if shutil.which(name) is None:
        raise ImageBuildError(reason=f"{name} is not installed (needed to build the tiny image)")


def _run(argv: Sequence[str], *, cwd: Path | None = None) -> str:
    return _run_bytes(argv, cwd=cwd).decode(errors="replace")


def _run_bytes(argv: Sequence[str], *, cwd: Path | None = None) -> bytes:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        # argv is a fixed list built above, never a shell string.
        proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, check=False)
    except OSError as exc:
        raise ImageBuildError(reason=f"cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise ImageBuildError(
            reason=f"{' '.join(argv[:3])} exited {proc.returncode}: {' | '.join(detail)}"
        )
    return proc.stdout
