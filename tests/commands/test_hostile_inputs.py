"""Every hostile input of issue 14, through the real CLI entry point: a clear one-line error and
its exit code, never a traceback, and canaries proving nothing ran, nothing was read and nothing
was written.

``host add`` runs with the real Ansible executor: had a hostile URI got through, the host-facts
module would have opened it with libvirt, which runs ``command=`` programs, and the canary
script would have left its file (:func:`test_the_canary_is_live` shows it would).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloudctl.commands import common
from cloudctl.db import models
from cloudctl.db.models import utcnow
from cloudctl.db.session import Database
from cloudctl.domain.validation import MAX_USER_DATA
from cloudctl.executor.fake import FakeExecutor
from cloudctl.main import run
from cloudctl.services import flavors
from cloudctl.services.context import Context
from tests.conftest import add_host
from tests.services.conftest import add_image

H = "apiVersion: cloudctl.dev/v1\n"


@dataclass
class Lab:
    """A cloudctl home with a host, a flavor and an image, a canary script and the CLI."""

    ctx: Context
    tmp: Path
    fake: FakeExecutor
    capsys: pytest.CaptureFixture[str]

    @property
    def prog(self) -> Path:
        """A program that leaves ``ran`` behind if anything ever runs it."""
        return self.tmp / "prog"

    @property
    def ran(self) -> Path:
        return self.tmp / "ran"

    def cli(self, *argv: str, db: bool = True) -> tuple[int, str]:
        """Exit code and stderr of ``cloudctl [--db URL] ARGV``."""
        code = run(["--db", self.ctx.settings.db_url, *argv] if db else list(argv))
        return code, self.capsys.readouterr().err

    def images(self) -> list[Path]:
        """Every file of the image store."""
        return sorted(p for p in self.ctx.settings.images_dir.rglob("*") if p.is_file())

    def rows(self) -> dict[str, int]:
        db = Database(self.ctx.settings.db_url)
        try:
            with db.unit_of_work() as session:
                return {
                    t.name: session.scalar(select(func.count()).select_from(t)) or 0
                    for t in models.Base.metadata.sorted_tables
                }
        finally:
            db.dispose()


@pytest.fixture
def lab(
    ctx: Context,
    tmp_path: Path,
    fake: FakeExecutor,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Lab]:
    monkeypatch.setenv("CLOUDCTL_HOME", str(ctx.settings.home))
    monkeypatch.delenv("CLOUDCTL_DB", raising=False)
    add_host(ctx, "h1", last_heartbeat=utcnow())
    flavors.create_flavor(ctx, "small", vcpus=1, memory_mb=512, root_gb=1)
    add_image(ctx)
    lab = Lab(ctx, tmp_path, fake, capsys)
    lab.prog.write_text(f"#!/bin/sh\ntouch {lab.ran}\nexit 1\n")
    lab.prog.chmod(0o755)
    yield lab
    assert not lab.ran.exists(), "a hostile input ran a program"


def one_error(err: str) -> str:
    """The one ``error:`` line of ``err``, which has no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# --- host add: URIs and paths ------------------------------------------------------------------

#: (label, extra ``host add`` arguments, what the error line says).
HOST_ADD = [
    (
        "command= over ssh",
        ["--uri", "qemu+ssh://x/system?command={prog}"],
        "libvirt URI 'qemu+ssh://x/system?command={prog}' has parameter 'command'",
    ),
    (
        "qemu+ext",
        ["--uri", "qemu+ext:///system?command={prog}"],
        "libvirt URI 'qemu+ext:///system?command={prog}' uses transport 'qemu+ext'",
    ),
    (
        "netcat=",
        ["--uri", "qemu+ssh://x/system?netcat={prog}"],
        "has parameter 'netcat'",
    ),
    (
        "socket=",
        ["--uri", "qemu+unix:///system?socket=/run/libvirt/libvirt-sock"],
        "has parameter 'socket'",
    ),
    ("proxy=", ["--uri", "qemu+ssh://x/system?proxy=netcat"], "has parameter 'proxy'"),
    (
        "command= spelled ;",
        ["--uri", "qemu+ssh://x/system?no_tty=1;command={prog}"],
        "may only have letters, digits and",
    ),
    (
        "instances path with ..",
        ["--uri", "qemu:///system", "--instances-path", "/srv/x/../../etc"],
        "instances path '/srv/x/../../etc' must be an absolute, normalised path",
    ),
    (
        "ssh key with ..",
        ["--uri", "qemu:///system", "--ssh-key", "/root/../etc/shadow"],
        "ssh key '/root/../etc/shadow' must be an absolute, normalised path",
    ),
    (
        "relative python",
        ["--uri", "qemu:///system", "--python", "venv/bin/python"],
        "python interpreter 'venv/bin/python' must be an absolute, normalised path",
    ),
    (
        "keyfile with ..",
        ["--uri", "qemu+ssh://x/system?keyfile=/root/../etc/shadow"],
        "libvirt URI parameter keyfile '/root/../etc/shadow' must be an absolute",
    ),
]


@pytest.mark.parametrize(("args", "said"), [h[1:] for h in HOST_ADD], ids=[h[0] for h in HOST_ADD])
def test_host_add_refuses_what_would_escape(lab: Lab, args: list[str], said: str) -> None:
    before = lab.rows()
    argv = [a.format(prog=lab.prog) for a in args]
    code, err = lab.cli("host", "add", "hx", "--virt-type", "qemu", *argv)
    assert code == 2
    assert one_error(err).startswith("error: invalid input: "), err
    assert said.format(prog=lab.prog) in err
    assert lab.rows() == before  # no host row, not even for a moment's discovery
    assert not lab.ran.exists()


def test_the_canary_is_live(tmp_path: Path) -> None:
    """What host add refuses is really dangerous: libvirt runs the program of such a URI."""
    libvirt = pytest.importorskip("libvirt")
    prog, ran = tmp_path / "prog", tmp_path / "ran"
    prog.write_text(f"#!/bin/sh\ntouch {ran}\nexit 1\n")
    prog.chmod(0o755)
    libvirt.registerErrorHandler(lambda *_: None, None)
    with pytest.raises(libvirt.libvirtError):
        libvirt.open(f"qemu+ext:///system?command={prog}")
    assert ran.exists()


def test_the_hosts_cloudctl_makes_still_register(lab: Lab) -> None:
    """What the lab registers (``lab_machine.Lab._lab_host``) and the README's examples."""
    for name, argv in (
        (
            "lab-9",
            [
                "--uri",
                "qemu:///system",
                "--instances-path",
                str(lab.tmp.resolve() / "lab" / "shared" / "instances"),
                "--python",
                "/usr/bin/python3",
                "--connection",
                "ssh",
                "--address",
                "10.213.0.19",
                "--ssh-user",
                "root",
                "--ssh-key",
                str(lab.tmp.resolve() / "lab" / "id_ed25519"),
            ],
        ),
        ("cmp1", ["--uri", "qemu+ssh://root@192.0.2.10/system?keyfile=/root/.ssh/id_ed25519"]),
    ):
        code, err = lab.cli("host", "add", name, "--no-discover", *argv, "-o", "json")
        assert code == 0, err


# --- desired state ------------------------------------------------------------------------------


def _estate(lab: Lab, files: dict[str, str], links: dict[str, Path] | None = None) -> Path:
    root = lab.tmp / "estate"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for name, target in (links or {}).items():
        (root / name).symlink_to(target)
    return root


def _secret(lab: Lab) -> Path:
    """A file outside the tree given to -f (the controller's /etc/shadow, say)."""
    secret = lab.tmp / "outside" / "secret.img"
    secret.parent.mkdir(exist_ok=True)
    secret.write_bytes(b"SECRET-CANARY" * 100)
    return secret


def image_doc(**files: str) -> str:
    spec = "".join(f"  {k}: {v}\n" for k, v in files.items())
    return f"{H}kind: Image\nmetadata: {{name: stolen}}\nspec:\n{spec}"


def nested(depth: int) -> str:
    return f"{H}kind: Flavor\nmetadata: {{name: m9}}\nspec: " + "[" * depth + "]" * depth + "\n"


#: (label, the estate (files, symlinks), the error line's text after "error: <file>:").
ESTATES: list[tuple[str, Callable[[Lab], tuple[dict[str, str], dict[str, Path]]], str]] = [
    (
        "image file ../../../../etc/shadow",
        lambda lab: ({"i.yaml": image_doc(file="../../../../etc/shadow")}, {}),
        "i.yaml:5: spec.file: ../../../../etc/shadow resolves outside {root}, the tree given to -f",
    ),
    (
        "image file out of the tree",
        lambda lab: ({"i.yaml": image_doc(file=str(_secret(lab)))}, {}),
        "i.yaml:5: spec.file: {secret} resolves outside {root}",
    ),
    (
        "symlink out of the tree",
        lambda lab: ({"i.yaml": image_doc(file="disk.img")}, {"disk.img": _secret(lab)}),
        "i.yaml:5: spec.file: disk.img resolves outside {root}",
    ),
    (
        "kernel through a linked directory",
        lambda lab: ({"i.yaml": image_doc(kernel="up/secret.img")}, {"up": _secret(lab).parent}),
        "i.yaml:5: spec.kernel: up/secret.img resolves outside {root}",
    ),
    (
        "user data over 64 KiB",
        lambda lab: (
            {
                "s.yaml": f"{H}kind: Server\nmetadata: {{name: web}}\nspec:\n  flavor: small\n"
                f"  image: tiny\n  user_data: {'x' * (MAX_USER_DATA + 1)}\n"
            },
            {},
        ),
        "s.yaml:7: spec.user_data: user data is larger than 65536 bytes",
    ),
    (
        "100000 levels deep",
        lambda lab: ({"f.yaml": nested(100_000)}, {}),
        "f.yaml:4: nested more than 64 levels deep",
    ),
    (
        "a number past the SQL column",
        lambda lab: (
            {
                "f.yaml": f"{H}kind: Flavor\nmetadata: {{name: m9}}\n"
                "spec: {vcpus: 2147483648, ram_mb: 64, disk_gb: 1}\n"
            },
            {},
        ),
        "f.yaml:4: spec.vcpus: must be <= 2147483647, got 2147483648",
    ),
    (
        "a number of 20 digits",
        lambda lab: (
            {
                "q.yaml": f"{H}kind: Quota\nmetadata: {{name: default}}\n"
                "spec: {ram_mb: 99999999999999999999}\n"
            },
            {},
        ),
        "q.yaml:4: spec.ram_mb: must be <= 2147483647, got 99999999999999999999",
    ),
    (
        "more than 16 MiB",
        lambda lab: ({"a.yaml": "#" + "x" * (16 * 1024 * 1024) + "\n"}, {}),
        "a.yaml:1: the files of -f {root} hold more than 16777216 bytes (16 MiB) together",
    ),
    (
        "a YAML file linked from outside",
        lambda lab: ({}, {"x.yaml": _secret(lab)}),
        "x.yaml:1: resolves outside {root}, the tree given to -f",
    ),
]

COMMANDS = [
    ["validate", "-f"],
    ["validate", "--offline", "-f"],
    ["plan", "--no-refresh", "-f"],
    ["apply", "--auto-approve", "-f"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:-1]) for c in COMMANDS])
@pytest.mark.parametrize(("make", "said"), [e[1:] for e in ESTATES], ids=[e[0] for e in ESTATES])
def test_desired_state_that_would_escape_is_a_validation_error(
    lab: Lab,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    make: Callable[[Lab], tuple[dict[str, str], dict[str, Path]]],
    said: str,
) -> None:
    monkeypatch.setattr(common, "AnsibleExecutor", lambda **_: lab.fake)
    files, links = make(lab)
    root = _estate(lab, files, links)
    before, images_before = lab.rows(), lab.images()
    started = time.monotonic()
    code, err = lab.cli(*command, str(root))
    assert time.monotonic() - started < 30
    assert code == 2, err
    secret = lab.tmp / "outside" / "secret.img"
    line = one_error(err)
    assert line.startswith(f"error: {root}/" + said.format(root=root, secret=secret)), line
    assert "SECRET-CANARY" not in err
    assert lab.rows() == before  # nothing written
    assert lab.fake.requests == []  # no play ran
    assert lab.images() == images_before  # nothing imported


# --- boot, keypair, image add -------------------------------------------------------------------


def test_boot_refuses_user_data_over_64_kib(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "AnsibleExecutor", lambda **_: lab.fake)
    big = lab.tmp / "user-data"
    big.write_bytes(b"x" * (MAX_USER_DATA + 1))
    before = lab.rows()
    for source in (big, Path("/dev/zero")):  # /dev/zero: the read itself is bounded
        code, err = lab.cli(
            "boot", "web", "--flavor", "small", "--image", "tiny", "--user-data", str(source)
        )
        assert code == 2
        assert one_error(err) == "error: invalid input: user data is larger than 65536 bytes"
    assert lab.rows() == before and lab.fake.requests == []
    big.write_bytes(b"x" * MAX_USER_DATA)  # the limit itself is fine
    lab.fake.on("spawn.yml", lambda req: None)
    code, err = lab.cli(
        "boot", "web", "--flavor", "small", "--image", "tiny", "--user-data", str(big)
    )
    assert "user data" not in err


def test_keypair_add_reads_a_bounded_file(lab: Lab) -> None:
    code, err = lab.cli("keypair", "add", "k", "--public-key", "/dev/zero")
    assert code == 2
    assert (
        one_error(err)
        == "error: invalid input: /dev/zero is larger than 16384 bytes: not one public key"
    )


def test_image_add_keeps_a_0640_file_0640(lab: Lab) -> None:
    kernel = lab.tmp / "vmlinuz"
    kernel.write_bytes(b"\0" * 1024)
    kernel.chmod(0o640)
    code, err = lab.cli("image", "add", "k", "--kernel", str(kernel), "-o", "json")
    assert code == 0, err
    [stored] = (lab.ctx.settings.images_dir).glob("*/kernel")
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o640


# --- the state database -------------------------------------------------------------------------

#: (label, how to make the state, the --db URL, exit code, the error line).
STATES = [
    (
        "an empty state file",
        lambda p: p.write_bytes(b""),
        "sqlite:///{path}",
        1,
        "error: state database sqlite:///{path}: the file is empty (0 bytes), not a cloudctl "
        "state; only a missing file starts a new one (restore it from a backup, or remove it)",
    ),
    (
        "a state file that is no database",
        lambda p: p.write_text("not a database\n"),
        "sqlite:///{path}",
        1,
        "error: state database sqlite:///{path}: the file is not a SQLite database, so not a "
        "cloudctl state",
    ),
    (
        "a password in a URL nothing answers",
        lambda p: None,
        "postgresql+psycopg://cloudctl:s3cret@127.0.0.1:1/cloudctl",
        1,
        "error: state database postgresql+psycopg://cloudctl:***@127.0.0.1:1/cloudctl: ",
    ),
    (
        "a password in a URL of no database",
        lambda p: None,
        "postgres://cloudctl:s3cret@db.example.org/cloudctl",
        2,
        "error: configuration error: postgres://cloudctl:***@db.example.org/cloudctl is not a "
        "database URL cloudctl can use",
    ),
]


@pytest.mark.parametrize(
    ("make", "url", "exit_code", "said"), [s[1:] for s in STATES], ids=[s[0] for s in STATES]
)
def test_unusable_state_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], object],
    url: str,
    exit_code: int,
    said: str,
) -> None:
    path = tmp_path / "state.db"
    make(path)
    content = path.read_bytes() if path.exists() else None
    for argv in (["host", "list"], ["boot", "web", "--flavor", "f", "--image", "i"]):
        code = run(["--db", url.format(path=path), *argv])
        err = capsys.readouterr().err
        assert code == exit_code
        assert one_error(err).startswith(said.format(path=path)), err
        assert "s3cret" not in err
    assert (path.read_bytes() if path.exists() else None) == content


#: Catalog commands whose numbers or strings would otherwise reach the database driver.
CATALOG = [
    (
        ["flavor", "create", "big", "--vcpus", "2147483648", "--ram", "64", "--disk", "1"],
        "error: invalid input: vcpus must be <= 2147483647, got 2147483648",
    ),
    (
        [
            "flavor",
            "create",
            "big",
            "--vcpus",
            "1",
            "--ram",
            "64",
            "--disk",
            "1",
            "--property",
            "hw:x=" + "v" * 256,
        ],
        "error: invalid input: extra spec 'hw:x' is longer than 255 characters",
    ),
    (
        ["quota", "set", "--ram", "99999999999"],
        "error: invalid input: quota ram must be <= 2147483647, got 99999999999",
    ),
]


@pytest.mark.parametrize(("argv", "said"), CATALOG, ids=[" ".join(a[:3]) for a, _ in CATALOG])
def test_catalog_values_fit_their_sql_columns(lab: Lab, argv: list[str], said: str) -> None:
    before = lab.rows()
    code, err = lab.cli(*argv)
    assert (code, one_error(err)) == (2, said)
    assert lab.rows() == before
