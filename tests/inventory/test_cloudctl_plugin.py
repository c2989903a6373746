"""The ``cloudctl`` inventory plugin, through the real ``ansible-inventory`` and ``ansible``."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import update

from cloudctl.db.models import Instance
from cloudctl.executor.fake import FakeExecutor
from cloudctl.services import compute, flavors
from cloudctl.services.compute import BootRequest
from cloudctl.services.context import Context
from tests.conftest import add_host
from tests.inventory.conftest import INVENTORY, inventory_list, now, run_ansible
from tests.services.conftest import add_image, running


def members(inv: dict[str, Any], group: str) -> list[str]:
    return sorted(inv.get(group, {}).get("hosts", []))


def plain(value: Any) -> Any:
    """``value`` without the ``__ansible_unsafe`` wrappers: the plugin's strings are data, and
    ``ansible-inventory --list`` marks every untrusted string that way."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def hostvars(inv: dict[str, Any], name: str) -> dict[str, Any]:
    hv: dict[str, Any] = plain(inv["_meta"]["hostvars"][name])
    return hv


def small_cloud(ctx: Context, fake: FakeExecutor) -> dict[str, str]:
    """Three hosts (one up, one disabled over ssh, one down) and two guests (one soft-deleted)."""
    add_host(
        ctx,
        "h1",
        availability_zone="az1",
        labels={"rack": "r-1", "gpu": "yes"},
        python_interpreter="/usr/bin/python3",
        last_heartbeat=now(),
    )
    add_host(
        ctx,
        "cmp-2",
        connection="ssh",
        address="192.0.2.10",
        ssh_user="root",
        ssh_port=2222,
        ssh_private_key="/root/.ssh/id_ed25519",
        ssh_common_args="-o StrictHostKeyChecking=no",
        availability_zone="az-2",
        enabled=False,
        disabled_reason="disk replacement",
        last_heartbeat=now(),
    )
    add_host(ctx, "h3", availability_zone="az1", last_heartbeat=None)
    flavors.create_flavor(ctx, "small", vcpus=1, memory_mb=512, root_gb=1)
    add_image(ctx)
    fake.on("spawn.yml", running)
    [web] = compute.boot(
        ctx,
        BootRequest(name="web", flavor="small", image="tiny", metadata={"role": "{{ web }}"}),
    )
    [gone] = compute.boot(ctx, BootRequest(name="gone", flavor="small", image="tiny"))
    with ctx.db.unit_of_work() as s:
        s.execute(
            update(Instance).where(Instance.uuid == gone["uuid"]).values(vm_state="soft-delete")
        )
    ctx.db.dispose()
    return {"web": web["uuid"], "web_ip": web["addresses"][0]["address"]}


def test_groups_and_hostvars(state: Context, fake: FakeExecutor, tmp_path: Path) -> None:
    ids = small_cloud(state, fake)
    inv = inventory_list(INVENTORY, tmp_path)

    assert members(inv, "cloudctl_hosts") == ["cmp-2", "h1", "h3"]
    assert members(inv, "az_az1") == ["h1", "h3"]
    assert members(inv, "az_az_2") == ["cmp-2"]
    assert members(inv, "label_rack_r_1") == ["h1"]
    assert members(inv, "label_gpu_yes") == ["h1"]
    assert members(inv, "cloudctl_guests") == ["web"]
    assert members(inv, "guests_on_h1") == ["web"]
    assert members(inv, "guests_on_cmp_2") == members(inv, "guests_on_h3") == []

    h1 = hostvars(inv, "h1")
    assert h1["ansible_connection"] == "local"
    assert h1["ansible_python_interpreter"] == "/usr/bin/python3"
    assert "ansible_host" not in h1 and "ansible_user" not in h1
    assert (h1["libvirt_uri"], h1["instances_path"]) == (
        "qemu:///system",
        "/var/lib/cloudctl/instances",
    )
    assert (h1["cloudctl_status"], h1["cloudctl_state"]) == ("enabled", "up")
    assert h1["cloudctl_labels"] == {"rack": "r-1", "gpu": "yes"}
    assert h1["cloudctl_availability_zone"] == "az1"

    cmp2 = hostvars(inv, "cmp-2")
    assert {k: v for k, v in cmp2.items() if k.startswith("ansible_")} == {
        "ansible_connection": "ssh",
        "ansible_host": "192.0.2.10",
        "ansible_user": "root",
        "ansible_port": 2222,
        "ansible_ssh_private_key_file": "/root/.ssh/id_ed25519",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no",
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    assert (cmp2["cloudctl_status"], cmp2["cloudctl_disabled_reason"]) == (
        "disabled",
        "disk replacement",
    )
    assert hostvars(inv, "h3")["cloudctl_state"] == "down"

    web = hostvars(inv, "web")
    assert web["ansible_host"] == ids["web_ip"]
    assert web["cloudctl_uuid"] == ids["web"]
    assert (web["cloudctl_flavor"], web["cloudctl_image"], web["cloudctl_host"]) == (
        "small",
        "tiny",
        "h1",
    )
    assert (web["cloudctl_vm_state"], web["cloudctl_power_state"]) == ("active", "running")
    assert web["cloudctl_metadata"] == {"role": "{{ web }}"}
    # data, never a template: the raw JSON keeps the unsafe marker
    raw = inv["_meta"]["hostvars"]["web"]["cloudctl_metadata"]["role"]
    assert raw == {"__ansible_unsafe": "{{ web }}"}


def test_db_and_home_options(state: Context, fake: FakeExecutor, tmp_path: Path) -> None:
    small_cloud(state, fake)
    by_db = tmp_path / "by-db.cloudctl.yml"
    by_db.write_text(f"plugin: cloudctl\ndb: {state.settings.db_url}\n")
    by_home = tmp_path / "by-home.cloudctl.yml"
    by_home.write_text(f"plugin: cloudctl\nhome: {state.settings.home}\n")
    elsewhere = {"CLOUDCTL_HOME": str(tmp_path / "elsewhere")}
    for source in (by_db, by_home):
        inv = inventory_list(source, tmp_path, env=elsewhere)
        assert members(inv, "cloudctl_guests") == ["web"]
    # The default follows CLOUDCTL_DB, as the CLI does.
    inv = inventory_list(
        INVENTORY, tmp_path, env={**elsewhere, "CLOUDCTL_DB": state.settings.db_url}
    )
    assert members(inv, "cloudctl_hosts") == ["cmp-2", "h1", "h3"]


def test_reads_without_writing(state: Context, fake: FakeExecutor, tmp_path: Path) -> None:
    small_cloud(state, fake)
    db_file = state.settings.home / "state.db"
    before = hashlib.sha256(db_file.read_bytes()).hexdigest()
    inventory_list(INVENTORY, tmp_path)
    assert hashlib.sha256(db_file.read_bytes()).hexdigest() == before


def test_missing_state_or_schema_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_ansible(["ansible-inventory", "-i", str(INVENTORY), "--list"], tmp_path)
    assert proc.returncode != 0
    assert "cloudctl: no state database at" in proc.stderr
    assert not (tmp_path / "home").exists()  # nothing created

    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "state.db").write_bytes(b"")
    proc = run_ansible(["ansible-inventory", "-i", str(INVENTORY), "--list"], tmp_path)
    assert proc.returncode != 0
    assert "has no cloudctl schema" in proc.stderr
    assert (tmp_path / "home" / "state.db").read_bytes() == b""  # no migration ran


def test_ping_hosts_through_the_inventory(
    state: Context, fake: FakeExecutor, tmp_path: Path
) -> None:
    add_host(
        state,
        "local-1",
        connection="local",
        python_interpreter=sys.executable,
        last_heartbeat=now(),
    )
    add_host(state, "local-2", connection="local", enabled=False, last_heartbeat=None)
    state.db.dispose()
    proc = run_ansible(
        ["ansible", "-i", "inventory/cloudctl.yml", "cloudctl_hosts", "-m", "ping"], tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = sorted(line for line in proc.stdout.splitlines() if " | " in line)
    assert results == ["local-1 | SUCCESS => {", "local-2 | SUCCESS => {"]
    assert proc.stdout.count('"ping": "pong"') == 2
