"""render_inventory / host_vars / protect_templates, from tables."""

from __future__ import annotations

from typing import Any

import pytest

from cloudctl.errors import InvalidInput
from cloudctl.executor.base import HostTarget
from cloudctl.executor.inventory import GROUP, host_vars, protect_templates, render_inventory

PY = "/opt/venv/bin/python"

LOCAL = HostTarget(
    name="h1", connection="local", libvirt_uri="qemu:///system", python_interpreter=PY
)
SSH_FULL = HostTarget(
    name="lab-2",
    connection="ssh",
    libvirt_uri="qemu+unix:///system?socket=/x/sock",
    python_interpreter=PY,
    address="10.0.0.2",
    ssh_user="root",
    ssh_port=2222,
    ssh_private_key="/keys/id_ed25519",
    ssh_common_args="-o ControlMaster=no",
    hostvars={"cloudctl_virt_type": "qemu", "ansible_become": False},
)

HOST_VARS_TABLE: list[tuple[str, HostTarget, dict[str, Any]]] = [
    (
        "local, minimal",
        LOCAL,
        {
            "ansible_connection": "local",
            "ansible_python_interpreter": PY,
            "libvirt_uri": "qemu:///system",
        },
    ),
    (
        "local with an address keeps ansible_host, drops ssh settings",
        HostTarget(
            name="h1",
            connection="local",
            libvirt_uri="qemu:///system",
            python_interpreter=PY,
            address="127.0.0.1",
            ssh_user="root",
            ssh_port=22,
            ssh_common_args="-o X=y",
        ),
        {
            "ansible_connection": "local",
            "ansible_host": "127.0.0.1",
            "ansible_python_interpreter": PY,
            "libvirt_uri": "qemu:///system",
        },
    ),
    (
        "ssh, everything set",
        SSH_FULL,
        {
            "ansible_connection": "ssh",
            "ansible_host": "10.0.0.2",
            "ansible_user": "root",
            "ansible_port": 2222,
            "ansible_ssh_private_key_file": "/keys/id_ed25519",
            "ansible_ssh_common_args": "-o ControlMaster=no",
            "ansible_python_interpreter": PY,
            "libvirt_uri": "qemu+unix:///system?socket=/x/sock",
            "cloudctl_virt_type": "qemu",
            "ansible_become": False,
        },
    ),
    (
        "ssh, only an address",
        HostTarget(
            name="h3",
            connection="ssh",
            libvirt_uri="qemu:///system",
            python_interpreter=PY,
            address="192.0.2.7",
        ),
        {
            "ansible_connection": "ssh",
            "ansible_host": "192.0.2.7",
            "ansible_python_interpreter": PY,
            "libvirt_uri": "qemu:///system",
        },
    ),
]


@pytest.mark.parametrize(
    ("case", "host", "expected"), HOST_VARS_TABLE, ids=[c[0] for c in HOST_VARS_TABLE]
)
def test_host_vars(case: str, host: HostTarget, expected: dict[str, Any]) -> None:
    assert host_vars(host) == expected


def test_render_inventory_puts_every_host_in_compute_in_order() -> None:
    inv = render_inventory((SSH_FULL, LOCAL))
    hosts = inv["all"]["children"][GROUP]["hosts"]
    assert GROUP == "compute"
    assert list(hosts) == ["lab-2", "h1"]
    assert hosts["h1"] == host_vars(LOCAL)


def test_render_inventory_of_no_hosts_is_an_empty_group() -> None:
    assert render_inventory(()) == {"all": {"children": {"compute": {"hosts": {}}}}}


BAD_TABLE: list[tuple[str, tuple[HostTarget, ...], str]] = [
    ("duplicate name", (LOCAL, LOCAL), "appears twice"),
    (
        "empty name",
        (HostTarget(name="", connection="local", libvirt_uri="x", python_interpreter=PY),),
        "not a usable inventory host name",
    ),
    (
        "space in name",
        (HostTarget(name="h 1", connection="local", libvirt_uri="x", python_interpreter=PY),),
        "not a usable",
    ),
    (
        "group name as host",
        (HostTarget(name="compute", connection="local", libvirt_uri="x", python_interpreter=PY),),
        "not a usable",
    ),
    (
        "no interpreter",
        (HostTarget(name="h1", connection="local", libvirt_uri="x", python_interpreter=""),),
        "no python_interpreter",
    ),
    (
        "hostvars override a generated var",
        (
            HostTarget(
                name="h1",
                connection="local",
                libvirt_uri="x",
                python_interpreter=PY,
                hostvars={"ansible_python_interpreter": "/usr/bin/python3"},
            ),
        ),
        "may not set",
    ),
    (
        "hostvars key is not a name",
        (
            HostTarget(
                name="h1",
                connection="local",
                libvirt_uri="x",
                python_interpreter=PY,
                hostvars={"not-a-name": 1},
            ),
        ),
        "not a valid variable name",
    ),
]


@pytest.mark.parametrize(("case", "hosts", "error"), BAD_TABLE, ids=[c[0] for c in BAD_TABLE])
def test_render_inventory_rejects(case: str, hosts: tuple[HostTarget, ...], error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        render_inventory(hosts)


PROTECT_TABLE: list[tuple[Any, Any]] = [
    ("plain", "plain"),
    ("{{ lookup('pipe', 'id') }}", {"__ansible_unsafe": "{{ lookup('pipe', 'id') }}"}),
    ("a {% if %} b", {"__ansible_unsafe": "a {% if %} b"}),
    (42, 42),
    (None, None),
    (True, True),
    ({"k{{": "v", "n": ["x", "{#c#}"]}, {"k{{": "v", "n": ["x", {"__ansible_unsafe": "{#c#}"}]}),
    (("a", "{b}"), ["a", {"__ansible_unsafe": "{b}"}]),
]


@pytest.mark.parametrize(("value", "expected"), PROTECT_TABLE)
def test_protect_templates(value: Any, expected: Any) -> None:
    assert protect_templates(value) == expected
