"""Host and image rows that name files on the controller: a second controller sharing the database
without those files gets one clear line before any Ansible run, not an ssh failure in a play."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudctl.db.models import Host, Image
from cloudctl.errors import ConfigError
from cloudctl.executor.base import RunRequest
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import hosts, images
from cloudctl.services.context import Context
from tests.conftest import NOW, add_host

FACTS = {"vcpus": 4, "memory_mb": 4096, "disk_gb": 100, "disk_free_gb": 90, "domains": []}


def row(**kw: Any) -> Host:
    values: dict[str, Any] = {
        "name": "cmp1",
        "connection": "ssh",
        "address": "192.0.2.10",
        "libvirt_uri": "qemu:///system",
        "instances_path": "/var/lib/cloudctl/instances",
    }
    values.update(kw)
    return Host(**values)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """A key, a known_hosts file and an executable interpreter that exist; a path that does not."""
    key = tmp_path / "id_ed25519"
    key.write_text("key\n")
    known = tmp_path / "known_hosts"
    known.write_text("")
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    plain = tmp_path / "not-executable"
    plain.write_text("")
    return {
        "key": str(key),
        "known": str(known),
        "python": str(python),
        "plain": str(plain),
        "missing": str(tmp_path / "missing"),
    }


# (host row fields with {placeholders} from `files`, the file named in the error or None)
CASES = [
    ("ssh key present", {"ssh_private_key": "{key}"}, None),
    ("ssh key missing", {"ssh_private_key": "{missing}"}, "ssh key {missing}"),
    (
        "known_hosts of the ssh args missing",
        {"ssh_private_key": "{key}", "ssh_common_args": "-o UserKnownHostsFile={missing} -o X=y"},
        "known_hosts file {missing}",
    ),
    (
        "known_hosts in 'Key value' form, -oKey=value and -i",
        {
            "ssh_common_args": "-oGlobalKnownHostsFile={known} -i {key} '-o UserKnownHostsFile {missing}'"
        },
        "known_hosts file {missing}",
    ),
    ("-i names a missing key", {"ssh_common_args": "-i{missing}"}, "ssh key {missing}"),
    (
        "IdentityFile option, case-insensitive",
        {"ssh_common_args": "-o identityfile={missing}"},
        "ssh key {missing}",
    ),
    (
        "known_hosts list: one present is enough",
        {"ssh_common_args": "-o 'UserKnownHostsFile={missing} {known}'"},
        None,
    ),
    (
        "what ssh expands or does not read is not checked",
        {
            "ssh_common_args": "-o UserKnownHostsFile=/dev/null -o UserKnownHostsFile=none "
            "-o IdentityFile=%d/.ssh/id_%h -o IdentityFile=relative/key -o LogLevel=ERROR"
        },
        None,
    ),
    ("unparsable ssh args are left to ssh", {"ssh_common_args": "-o 'unclosed"}, None),
    ("a remote host's interpreter is the host's", {"python_interpreter": "{missing}"}, None),
    (
        "a local host's interpreter runs here",
        {"connection": "local", "address": None, "python_interpreter": "{missing}"},
        "python interpreter {missing}, which is missing",
    ),
    (
        "and must be executable",
        {"connection": "local", "address": None, "python_interpreter": "{plain}"},
        "python interpreter {plain}, which is not executable",
    ),
    (
        "a local host's libvirt URI key file",
        {
            "connection": "local",
            "address": None,
            "python_interpreter": "{python}",
            "libvirt_uri": "qemu+ssh://root@192.0.2.10/system?keyfile={missing}&no_tty=1",
        },
        "libvirt ssh key {missing}",
    ),
    (
        "a local host's ssh fields are not used",
        {"connection": "local", "address": None, "ssh_private_key": "{missing}"},
        None,
    ),
]


@pytest.mark.parametrize(("fields", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_host_target_refuses_a_row_naming_a_file_this_controller_lacks(
    files: dict[str, str], fields: dict[str, Any], named: str | None
) -> None:
    host = row(**{k: v.format(**files) if isinstance(v, str) else v for k, v in fields.items()})
    if named is None:
        assert hosts.missing_controller_file(host) is None
        hosts.host_target(host)
        return
    with pytest.raises(ConfigError) as err:
        hosts.host_target(host)
    msg = str(err.value)
    assert msg.startswith(f"configuration error: host 'cmp1' needs the {named.format(**files)}")
    assert "\n" not in msg and "every controller sharing the database" in msg
    assert err.value.exit_code == 2
    # Listing hosts (the Ansible inventory) does not need the files.
    assert hosts.host_target(host, check_files=False).name == "cmp1"


def test_discovery_fails_before_any_run_and_names_the_file(
    ctx: Context, fake: FakeExecutor, files: dict[str, str]
) -> None:
    add_host(ctx, "cmp1", connection="ssh", address="192.0.2.10", ssh_private_key=files["missing"])
    with pytest.raises(ConfigError, match=f"'cmp1' needs the ssh key {files['missing']}"):
        hosts.discover_hosts(ctx, ["cmp1"])
    assert fake.requests == []


def test_host_add_with_a_missing_key_registers_nothing(
    ctx: Context, fake: FakeExecutor, files: dict[str, str]
) -> None:
    spec = hosts.HostSpec(
        name="cmp1",
        libvirt_uri="qemu:///system",
        connection="ssh",
        address="192.0.2.10",
        ssh_private_key=files["missing"],
    )
    with pytest.raises(ConfigError, match="needs the ssh key"):
        hosts.add_host(ctx, spec)
    with ctx.db.unit_of_work() as s:
        assert s.scalars(select(Host)).all() == []
    assert fake.requests == []


def test_refreshing_heartbeats_skips_a_host_this_controller_cannot_reach(
    ctx: Context, fake: FakeExecutor, files: dict[str, str]
) -> None:
    said: list[str] = []

    class Say:
        def info(self, message: str) -> None:
            said.append(message)

        def run_event(self, event: Any) -> None:
            pass

    ctx.progress = Say()
    add_host(ctx, "a", last_heartbeat=None)
    add_host(
        ctx,
        "b",
        connection="ssh",
        address="192.0.2.10",
        ssh_private_key=files["missing"],
        last_heartbeat=None,
    )

    def respond(req: RunRequest) -> dict[str, Any]:
        return {t.name: {"host facts": {"host_facts": FACTS}} for t in req.hosts}

    fake.on("discover.yml", respond)

    assert hosts.refresh_stale(ctx) == ["a"]

    assert [[t.name for t in r.hosts] for r in fake.requests] == [["a"]]
    assert any(m.startswith("not asking: configuration error: host 'b' needs") for m in said)
    with ctx.db.unit_of_work() as s:
        beats = {h.name: h.last_heartbeat for h in s.scalars(select(Host))}
    assert beats == {"a": NOW, "b": None}


def test_image_files_must_be_on_this_controller(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.write_bytes(b"qcow")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    image = Image(name="tiny", path=str(disk), kernel_path=str(kernel), initrd_path=None)
    images.require_image_files(image)

    kernel.unlink()
    with pytest.raises(ConfigError) as err:
        images.require_image_files(image)
    assert str(err.value).startswith(
        f"configuration error: image 'tiny' needs its kernel file {kernel}, which is missing on "
        "this controller"
    )
    details = err.value.to_dict()["details"]
    assert (details["image"], details["path"]) == ("tiny", str(kernel))

    kernel.mkdir()  # not a file
    with pytest.raises(ConfigError, match="kernel file"):
        images.require_image_files(image)
    os.rmdir(kernel)
