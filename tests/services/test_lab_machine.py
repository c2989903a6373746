"""Tests of cloudctl.services.lab_machine: N real libvirt hosts in namespaces on this machine.

The unit tests cover the pure parts (names, address choice, configuration files, state) from
tables. The integration tests build real labs under ``tmp_path`` (so their names cannot clash
with the demo's lab), talk to their libvirtds over the sockets, over SSH and through the Python
wrapper, break them, reconcile them and check that ``down`` leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cloudctl.errors import InvalidInput
from cloudctl.services.lab_machine import (
    MAX_HOSTS,
    HostRecord,
    Lab,
    LabError,
    LabHost,
    LabNames,
    LabSpec,
    LabState,
    availability_zone,
    gateway_address,
    host_address,
    lab_id_for,
    pick_network,
    plan_hosts,
    render_enter_script,
    render_sshd_config,
    set_conf_values,
    socket_uri,
    used_networks,
    validate_spec,
)

NET = ipaddress.IPv4Network

# --- unit: names -------------------------------------------------------------------------------


def test_lab_id_is_short_hex_of_the_resolved_root(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    lab_id = lab_id_for(tmp_path / "real")
    assert len(lab_id) == 6 and int(lab_id, 16) >= 0
    assert lab_id_for(tmp_path / "link") == lab_id
    assert lab_id_for(tmp_path / "other") != lab_id
    assert Lab(tmp_path / "link").names.lab_id == lab_id


def test_every_global_name_carries_the_lab_id_and_fits_ifnamsiz() -> None:
    names = LabNames("a1b2c3")
    for i in range(1, MAX_HOSTS + 1):
        for name in (names.netns(i), names.veth(i), names.guest_veth(i)):
            assert name.startswith("cla1b2c3") and len(name) <= 15
    assert (names.bridge, names.guest_bridge) == ("cla1b2c3br", "cla1b2c3gb")
    assert (names.netns(16), names.veth(16), names.guest_veth(16)) == (
        "cla1b2c3-16",
        "cla1b2c3v16",
        "cla1b2c3g16",
    )
    assert names.index_of_link("cla1b2c3v7") == 7
    assert names.index_of_link("cla1b2c3g12") == 12
    assert names.index_of_link("cla1b2c3br") is None
    assert names.index_of_link("clffffffv7") is None
    assert names.index_of_netns("cla1b2c3-3") == 3
    assert names.index_of_netns("clffffff-3") is None
    assert names.links([1]) == ["cla1b2c3br", "cla1b2c3gb", "cla1b2c3v1", "cla1b2c3g1"]


@pytest.mark.parametrize(
    ("azs", "expected"),
    [
        (1, ["az1", "az1", "az1", "az1"]),
        (2, ["az1", "az2", "az1", "az2"]),
        (3, ["az1", "az2", "az3", "az1"]),
    ],
)
def test_hosts_go_round_robin_over_the_azs(azs: int, expected: list[str]) -> None:
    assert [availability_zone(i, azs) for i in range(1, 5)] == expected


def test_addresses_gateway_is_dot_1_and_hosts_start_at_dot_11() -> None:
    net = NET("10.213.7.0/24")
    assert str(gateway_address(net)) == "10.213.7.1"
    assert [str(host_address(net, i)) for i in (1, 2, 16)] == [
        "10.213.7.11",
        "10.213.7.12",
        "10.213.7.26",
    ]


def test_plan_hosts_gives_distinct_stable_uuids_addresses_and_zones(tmp_path: Path) -> None:
    spec = LabSpec(hosts=3, azs=2)
    hosts = plan_hosts(spec, NET("10.213.3.0/24"), tmp_path)
    assert [(h.name, h.index, h.availability_zone, h.address) for h in hosts] == [
        ("lab-1", 1, "az1", "10.213.3.11"),
        ("lab-2", 2, "az2", "10.213.3.12"),
        ("lab-3", 3, "az1", "10.213.3.13"),
    ]
    assert len({h.host_uuid for h in hosts}) == 3
    assert all(uuid.UUID(h.host_uuid) for h in hosts)
    assert plan_hosts(spec, NET("10.213.3.0/24"), tmp_path) == hosts
    assert plan_hosts(spec, NET("10.213.3.0/24"), tmp_path / "x")[0].host_uuid != hosts[0].host_uuid


def test_socket_uri_escapes_odd_characters() -> None:
    assert socket_uri(Path("/a/b-c_d.e/libvirt-sock")) == (
        "qemu+unix:///system?socket=/a/b-c_d.e/libvirt-sock"
    )
    assert socket_uri(Path("/a b/&x")) == "qemu+unix:///system?socket=/a%20b/%26x"


# --- unit: spec validation and the choice of a /24 --------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (LabSpec(hosts=0), "hosts must be 1..16"),
        (LabSpec(hosts=17), "hosts must be 1..16"),
        (LabSpec(hosts=2, azs=3), "azs must be 1..hosts"),
        (LabSpec(hosts=2, azs=0), "azs must be 1..hosts"),
        (LabSpec(hosts=1, virt_type="xen"), "virt_type must be one of qemu, kvm"),  # type: ignore[arg-type]
        (LabSpec(hosts=1, connection="tcp"), "connection must be one of ssh, local"),  # type: ignore[arg-type]
        (LabSpec(hosts=1, storage="nfs"), "storage must be one of shared, local"),  # type: ignore[arg-type]
        (LabSpec(hosts=1, cidr_pool="10.213.0.0/25"), "/24 or larger"),
        (LabSpec(hosts=1, cidr_pool="fd00::/64"), "IPv4 network"),
        (LabSpec(hosts=1, cidr_pool="10.213.0.1/16"), "has host bits set"),
        (LabSpec(hosts=1, cidr_pool="banana"), "cidr_pool 'banana'"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(spec: LabSpec, fragment: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_spec(spec)
    assert fragment in err.value.message
    assert err.value.exit_code == 2


def test_a_valid_spec_yields_its_pool() -> None:
    assert validate_spec(LabSpec(hosts=16, azs=16)) == NET("10.213.0.0/16")
    assert validate_spec(LabSpec(hosts=1, cidr_pool="192.168.50.0/24")) == NET("192.168.50.0/24")


ADDR_JSON: list[dict[str, Any]] = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {
        "ifname": "eth0",
        "addr_info": [
            {"family": "inet", "local": "192.0.2.2", "prefixlen": 24},
            {"family": "inet6", "local": "fd00::2", "prefixlen": 64},
        ],
    },
    {
        "ifname": "clotherbr",
        "addr_info": [{"family": "inet", "local": "10.213.0.1", "prefixlen": 24}],
    },
    {
        "ifname": "clmineebr",
        "addr_info": [{"family": "inet", "local": "10.213.1.1", "prefixlen": 24}],
    },
]
ROUTE_JSON: list[dict[str, Any]] = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0"},
    {"dst": "10.213.2.0/23", "dev": "eth0", "gateway": "192.0.2.9"},
    {"type": "local", "dst": "10.213.9.9", "dev": "lo", "table": "local"},
    {"dst": "10.213.1.0/24", "dev": "clmineebr"},
]


def test_used_networks_reads_addresses_and_routes_but_not_defaults_or_ignored_links() -> None:
    used = used_networks(ADDR_JSON, ROUTE_JSON, ignore_links=["clmineebr"])
    assert set(used) == {
        NET("127.0.0.0/8"),
        NET("192.0.2.0/24"),
        NET("10.213.0.0/24"),
        NET("10.213.2.0/23"),
        NET("10.213.9.9/32"),
    }


@pytest.mark.parametrize(
    ("pool", "used", "expected"),
    [
        ("10.213.0.0/16", [], "10.213.0.0/24"),
        ("10.213.0.0/16", ["10.213.0.0/24"], "10.213.1.0/24"),
        ("10.213.0.0/16", ["10.213.0.0/23", "10.213.2.5/32"], "10.213.3.0/24"),
        ("10.213.0.0/16", ["10.213.0.128/25"], "10.213.1.0/24"),
        ("10.213.0.0/16", ["192.168.0.0/16", "10.214.0.0/24"], "10.213.0.0/24"),
        ("192.168.50.0/24", [], "192.168.50.0/24"),
    ],
)
def test_pick_network_takes_the_first_free_24(pool: str, used: list[str], expected: str) -> None:
    assert pick_network(NET(pool), [NET(u) for u in used]) == NET(expected)


def test_pick_network_on_the_machine_tables_skips_every_used_24() -> None:
    used = used_networks(ADDR_JSON, ROUTE_JSON, ignore_links=["clmineebr"])
    assert pick_network(NET("10.213.0.0/16"), used) == NET("10.213.1.0/24")
    assert pick_network(NET("10.213.0.0/16"), used_networks(ADDR_JSON, ROUTE_JSON)) == NET(
        "10.213.4.0/24"
    )


def test_pick_network_fails_precisely_when_the_pool_is_full() -> None:
    with pytest.raises(LabError, match=r"no free /24 left in the address pool 10\.213\.0\.0/23"):
        pick_network(NET("10.213.0.0/23"), [NET("10.0.0.0/8")])


# --- unit: configuration files -----------------------------------------------------------------


def test_sshd_config_allows_only_the_lab_key_on_the_host_address() -> None:
    text = render_sshd_config(
        address="10.213.0.11",
        port=22,
        host_key=Path("/lab/hosts/lab-1/ssh/ssh_host_ed25519_key"),
        authorized_keys=Path("/lab/id_ed25519.pub"),
        pid_file=Path("/lab/hosts/lab-1/run/sshd.pid"),
    )
    lines = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in text.splitlines()
        if line[:1].isalpha()
    }
    assert lines["ListenAddress"] == "10.213.0.11"
    assert lines["Port"] == "22"
    assert lines["HostKey"] == "/lab/hosts/lab-1/ssh/ssh_host_ed25519_key"
    assert lines["AuthorizedKeysFile"] == "/lab/id_ed25519.pub"
    assert lines["PermitRootLogin"] == "prohibit-password"
    assert lines["PasswordAuthentication"] == "no"
    assert lines["UsePAM"] == "no"
    assert lines["StrictModes"] == "no"
    assert lines["PidFile"] == "/lab/hosts/lab-1/run/sshd.pid"
    assert lines["Subsystem"] == "sftp internal-sftp"
    assert "Include" not in lines  # the machine's sshd_config.d must not leak in


def test_enter_script_quotes_paths_and_passes_arguments_through() -> None:
    text = render_enter_script(
        nsenter="/usr/bin/nsenter",
        mount_ns=Path("/odd dir/ns/lab-1"),
        net_ns=Path("/run/netns/clabc123-1"),
        uts_ns=Path("/odd dir/ns/lab-1.uts"),
        command=["/venv/bin/python"],
    )
    first, *rest = text.splitlines()
    assert first == "#!/bin/sh"
    exec_line = rest[-1]
    assert exec_line.endswith(' "$@"')
    argv = shlex.split(exec_line.removesuffix(' "$@"'))
    assert argv == [
        "exec",
        "/usr/bin/nsenter",
        "--mount=/odd dir/ns/lab-1",
        "--net=/run/netns/clabc123-1",
        "--uts=/odd dir/ns/lab-1.uts",
        "--",
        "/venv/bin/python",
    ]


def test_set_conf_values_replaces_active_keys_and_keeps_the_rest() -> None:
    text = '# user = "qemu"\nuser = "libvirt-qemu"\nvnc_listen = "0.0.0.0"\n  group="kvm"\n\n'
    out = set_conf_values(text, {"user": '"root"', "group": '"root"', "cgroup_controllers": "[ ]"})
    assert out.splitlines() == [
        '# user = "qemu"',
        'vnc_listen = "0.0.0.0"',
        "",
        "# Set by cloudctl lab for this lab host.",
        'user = "root"',
        'group = "root"',
        "cgroup_controllers = [ ]",
    ]
    assert (
        set_conf_values(out, {"user": '"root"', "group": '"root"', "cgroup_controllers": "[ ]"})
        == out
    )
    assert set_conf_values("", {"host_uuid": '"x"'}) == (
        '# Set by cloudctl lab for this lab host.\nhost_uuid = "x"\n'
    )


# --- unit: state -------------------------------------------------------------------------------


def _state(root: Path, spec: LabSpec) -> LabState:
    net = NET("10.213.5.0/24")
    return LabState(
        lab_id=lab_id_for(root),
        root=str(root),
        network=str(net),
        python="/venv/bin/python",
        spec=spec,
        hosts=plan_hosts(spec, net, root),
    )


def test_state_round_trips_through_json(tmp_path: Path) -> None:
    state = _state(tmp_path, LabSpec(hosts=2, azs=2, connection="local", storage="local"))
    assert LabState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert state.to_dict()["format"] == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("network"),
        lambda d: d.update(format=99),
        lambda d: d["hosts"][0].pop("address"),
        lambda d: d.update(spec=None),
    ],
)
def test_a_broken_state_file_is_a_lab_error(tmp_path: Path, mutate: Any) -> None:
    data = _state(tmp_path, LabSpec(hosts=1)).to_dict()
    mutate(data)
    with pytest.raises(LabError, match="unreadable lab state"):
        LabState.from_dict(data)


def test_hosts_come_from_the_state_file(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    lab = Lab(root, python="/venv/bin/python")
    assert lab.hosts() == [] and lab.status() == []
    root.mkdir()
    ssh = _state(root, LabSpec(hosts=2, azs=2))
    lab.state_file.write_text(json.dumps(ssh.to_dict()))
    h1, h2 = lab.hosts()
    assert h1 == LabHost(
        name="lab-1",
        index=1,
        availability_zone="az1",
        address="10.213.5.11",
        connection="ssh",
        libvirt_uri="qemu:///system",
        python_interpreter="/venv/bin/python",
        ssh_user="root",
        ssh_port=22,
        ssh_private_key=str(root / "id_ed25519"),
        instances_path=str(root / "shared" / "instances"),
        bridge="cloudbr0",
        virt_type="qemu",
        socket=f"/run/cloudctl-lab/{lab.names.lab_id}/hosts/lab-1/run/libvirt/libvirt-sock",
        host_uuid=ssh.hosts[0].host_uuid,
        ssh_known_hosts=str(root / "known_hosts"),
    )
    assert (h2.availability_zone, h2.address, h2.instances_path) == (
        "az2",
        "10.213.5.12",
        h1.instances_path,
    )
    assert h1.socket_uri == socket_uri(Path(h1.socket))

    local = _state(root, LabSpec(hosts=1, connection="local", storage="local", virt_type="kvm"))
    lab.state_file.write_text(json.dumps(local.to_dict()))
    [h] = lab.hosts()
    assert (h.connection, h.ssh_user, h.ssh_port, h.ssh_private_key, h.ssh_known_hosts) == (
        "local",
        None,
        None,
        None,
        None,
    )
    assert h.python_interpreter == str(root / "hosts" / "lab-1" / "python")
    assert (h.instances_path, h.virt_type) == (str(root / "local-instances"), "kvm")


def test_host_record_is_what_the_state_lists(tmp_path: Path) -> None:
    state = _state(tmp_path, LabSpec(hosts=1))
    assert state.hosts == (HostRecord("lab-1", 1, "az1", "10.213.5.11", state.hosts[0].host_uuid),)


# --- integration helpers -----------------------------------------------------------------------

FIRMWARE_ONLY_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <interface type='bridge'><source bridge='cloudbr0'/><model type='virtio'/></interface>
  </devices>
</domain>"""

IDENTITY = (
    "import json, re, socket, libvirt; c = libvirt.open('qemu:///system'); "
    "print(json.dumps({'hostname': socket.gethostname(), 'libvirt_hostname': c.getHostname(), "
    "'host_uuid': re.search('<uuid>(.*?)</uuid>', c.getCapabilities()).group(1), "
    "'domains': sorted(d.name() for d in c.listAllDomains())}))"
)


def ssh(host: LabHost, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on ``host`` over real SSH, checking its key against the lab's known_hosts."""
    assert host.ssh_private_key and host.ssh_known_hosts
    return subprocess.run(
        [
            "ssh",
            "-i",
            host.ssh_private_key,
            "-o",
            f"UserKnownHostsFile={host.ssh_known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=5",
            "-p",
            str(host.ssh_port),
            f"{host.ssh_user}@{host.address}",
            shlex.join(command),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def lab_namespaces(lab: Lab, hosts: list[LabHost]) -> set[int]:
    """Inodes of every namespace of the lab's hosts."""
    out = set()
    for h in hosts:
        for path in (
            lab.root / "ns" / h.name,
            lab.root / "ns" / f"{h.name}.uts",
            Path("/run/netns") / lab.names.netns(h.index),
        ):
            out.add(os.stat(path).st_ino)
    return out


def processes_in(namespaces: set[int]) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for kind in ("mnt", "net", "uts"):
            try:
                ino = os.stat(f"/proc/{pid}/ns/{kind}").st_ino
            except OSError:
                continue
            if ino in namespaces:
                found.append(f"{pid} ({kind}): {Path(f'/proc/{pid}/cmdline').read_bytes()[:100]!r}")
                break
    return found


def ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-json", *args], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout or "[]"))


def machine_netns() -> set[str]:
    out = subprocess.run(
        ["ip", "-json", "netns", "list"], capture_output=True, text=True, check=True
    )
    return {n["name"] for n in json.loads(out.stdout or "[]")}


def machine_links() -> set[str]:
    out = subprocess.run(["ip", "-json", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def assert_nothing_left(lab: Lab, namespaces: set[int]) -> None:
    prefix = lab.names.prefix
    assert processes_in(namespaces) == []
    assert not {n for n in machine_netns() if n.startswith(prefix)}
    assert not {n for n in machine_links() if n.startswith(prefix)}
    assert str(lab.root) not in Path("/proc/self/mountinfo").read_text()
    assert not lab.root.exists()
    assert lab.hosts() == [] and lab.status() == []


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A lab rooted in this test's tmp_path; always brought down afterwards."""
    the_lab = Lab(tmp_path / "lab", python=sys.executable)
    try:
        yield the_lab
    finally:
        the_lab.down()


# --- integration ------------------------------------------------------------------------------


@pytest.mark.integration
def test_ssh_lab_hosts_are_distinct_libvirt_hosts_reconciled_and_removed(lab: Lab) -> None:
    messages: list[str] = []
    start = time.monotonic()
    hosts = lab.up(LabSpec(hosts=2, azs=2), messages.append)
    up_s = time.monotonic() - start
    assert [(h.name, h.availability_zone, h.connection) for h in hosts] == [
        ("lab-1", "az1", "ssh"),
        ("lab-2", "az2", "ssh"),
    ]
    h1, h2 = hosts
    net = ipaddress.IPv4Network(f"{h1.address}/24", strict=False)
    assert (h1.address, h2.address) == (str(net[11]), str(net[12]))
    assert net.subnet_of(NET("10.213.0.0/16"))
    assert h1.instances_path == h2.instances_path == str(lab.root / "shared" / "instances")
    assert lab.hosts() == hosts
    assert all(h.healthy for h in lab.status()), lab.status()
    # Every host's cloudbr0 is wired to the lab's guest bridge: one flat guest network.
    root_links = {link["ifname"]: link for link in ip_json("link")}
    for h in hosts:
        assert root_links[lab.names.guest_veth(h.index)]["master"] == lab.names.guest_bridge
        assert root_links[lab.names.veth(h.index)]["master"] == lab.names.bridge
        inside = {link["ifname"]: link for link in ip_json("-n", lab.names.netns(h.index), "link")}
        assert inside["uplink0"]["master"] == "cloudbr0"
        assert {"eth0", "cloudbr0", "lo"} <= set(inside)

    # A firmware-only guest started on lab-1 through its socket runs there, nowhere else.
    dom_name = f"labtest-{uuid.uuid4().hex[:8]}"
    c1, c2 = libvirt.open(h1.socket_uri), libvirt.open(h2.socket_uri)
    machine = libvirt.open("qemu:///system")
    try:
        dom = c1.defineXML(FIRMWARE_ONLY_XML.format(name=dom_name))
        dom.create()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert dom_name not in [d.name() for d in c2.listAllDomains()]
        assert dom_name not in [d.name() for d in machine.listAllDomains()]
    finally:
        for conn in (c1, c2, machine):
            conn.close()

    # Over real SSH, `qemu:///system` is each host's own libvirtd, with its own host_uuid, and
    # both see the shared instances directory.
    seen = {}
    marker = Path(h1.instances_path) / f"{dom_name}.txt"
    for h in hosts:
        proc = ssh(h, h.python_interpreter, "-c", IDENTITY)
        assert proc.returncode == 0, proc.stderr
        seen[h.name] = json.loads(proc.stdout)
        assert seen[h.name]["host_uuid"] == h.host_uuid
        assert seen[h.name]["hostname"] == seen[h.name]["libvirt_hostname"] == h.name
    assert seen["lab-1"]["host_uuid"] != seen["lab-2"]["host_uuid"]
    assert seen["lab-1"]["domains"] == [dom_name] and seen["lab-2"]["domains"] == []
    assert ssh(h1, "sh", "-c", f"echo shared > {marker}").returncode == 0
    assert ssh(h2, "cat", str(marker)).stdout == "shared\n"

    # A killed libvirtd: status names the host and the daemon; up brings it back and leaves the
    # healthy host (and its guest) alone.
    pid = int((lab.root / "hosts" / "lab-2" / "run" / "libvirtd.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    health = {h.name: h for h in lab.status()}
    assert health["lab-1"].healthy
    assert not health["lab-2"].healthy
    assert any(p.startswith("libvirtd not running") for p in health["lab-2"].problems)
    messages.clear()
    assert lab.up(LabSpec(hosts=2, azs=2), messages.append) == hosts
    assert f"lab-2: starting libvirtd (libvirtd not running (pid {pid} gone))" in messages
    assert "lab-1: healthy, nothing to do" in messages
    assert all(h.healthy for h in lab.status())

    # A second up right after is a no-op.
    messages.clear()
    start = time.monotonic()
    assert lab.up(LabSpec(hosts=2, azs=2), messages.append) == hosts
    noop_s = time.monotonic() - start
    assert sorted(messages) == ["lab-1: healthy, nothing to do", "lab-2: healthy, nothing to do"]
    assert noop_s < max(2.0, up_s)
    c1 = libvirt.open(h1.socket_uri)
    try:
        assert c1.lookupByName(dom_name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        c1.close()

    namespaces = lab_namespaces(lab, hosts)
    assert processes_in(namespaces)  # the check below would see them
    lab.down()
    assert_nothing_left(lab, namespaces)
    lab.down()  # idempotent
    assert_nothing_left(lab, namespaces)


@pytest.mark.integration
def test_local_lab_runs_modules_inside_the_host_and_grows_and_shrinks(
    lab: Lab, tmp_path: Path
) -> None:
    spec = LabSpec(hosts=2, connection="local", storage="local")
    hosts = lab.up(spec)
    h1, h2 = hosts
    assert (h1.ssh_user, h1.ssh_port, h1.ssh_private_key) == (None, None, None)
    assert h1.python_interpreter == str(lab.root / "hosts" / "lab-1" / "python")
    assert h1.instances_path == h2.instances_path == str(lab.root / "local-instances")
    assert all(h.healthy for h in lab.status()), lab.status()
    assert not (lab.root / "hosts" / "lab-1" / "run" / "sshd.pid").exists()

    # The wrapper runs Python inside the host: its libvirtd, its hostname, its own instances.
    for h in hosts:
        code = IDENTITY.replace(
            "print(", f"open('{h.instances_path}/who', 'w').write('{h.name}'); print(", 1
        )
        proc = subprocess.run(
            [h.python_interpreter, "-c", code], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
        ident = json.loads(proc.stdout)
        assert (ident["hostname"], ident["host_uuid"]) == (h.name, h.host_uuid)
    assert (lab.root / "hosts" / "lab-1" / "instances" / "who").read_text() == "lab-1"
    assert (lab.root / "hosts" / "lab-2" / "instances" / "who").read_text() == "lab-2"
    assert not (lab.root / "local-instances" / "who").exists()

    # A second lab beside it gets its own names and its own /24.
    other = Lab(tmp_path / "other-lab")
    try:
        [o1] = other.up(LabSpec(hosts=1, connection="local"))
        assert other.names.prefix != lab.names.prefix
        assert ipaddress.ip_address(o1.address) not in ipaddress.ip_network(
            f"{h1.address}/24", strict=False
        )
        assert all(h.healthy for h in other.status())
    finally:
        other.down()
    assert all(h.healthy for h in lab.status())

    # Shrinking removes lab-2 completely; lab-1 is left alone.
    namespaces_2 = lab_namespaces(lab, [h2])
    messages: list[str] = []
    assert lab.up(LabSpec(hosts=1, connection="local", storage="local"), messages.append) == [h1]
    assert "lab-1: healthy, nothing to do" in messages
    assert processes_in(namespaces_2) == []
    assert lab.names.netns(2) not in machine_netns()
    assert not {lab.names.veth(2), lab.names.guest_veth(2)} & machine_links()
    assert not (lab.root / "hosts" / "lab-2").exists()
    assert [h.name for h in lab.status()] == ["lab-1"]

    namespaces = lab_namespaces(lab, [h1])
    lab.down()
    assert_nothing_left(lab, namespaces)


@pytest.mark.integration
def test_down_cleans_a_half_built_lab_without_state(lab: Lab) -> None:
    hosts = lab.up(LabSpec(hosts=1, connection="local"))
    namespaces = lab_namespaces(lab, hosts)
    # As if `up` had died before writing its state, after someone unmounted the mount namespace
    # file: its daemons live on in a namespace nothing names any more.
    lab.state_file.unlink()
    subprocess.run(["umount", str(lab.root / "ns" / "lab-1")], check=True)
    assert processes_in(namespaces)
    assert lab.hosts() == []
    lab.down()
    assert_nothing_left(lab, namespaces)
