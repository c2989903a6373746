"""The pure checks of what reaches libvirt, hosts and SQL, from tables of inputs."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from cloudctl.domain import validation
from cloudctl.errors import InvalidInput

#: URIs cloudctl reaches hosts with: the README's, the lab's, what live migration builds.
GOOD_URIS = [
    "qemu:///system",
    "qemu:///session",
    "qemu+unix:///system",
    "qemu://cmp1.example.org/system",
    "qemu+ssh://root@10.0.0.2/system",
    "qemu+ssh://cmp1.example.org:2222/system?keyfile=/root/.ssh/id_ed25519&no_tty=1",
    "qemu+ssh://h/system?known_hosts=/etc/ssh/known&known_hosts_verify=normal&no_verify=0",
    "qemu+ssh://[2001:db8::1]:22/system",
    "qemu+ssh://[::1]/system",
    "qemu+tcp://10.213.0.12/system",
    "qemu+tls://h:16514/system?no_verify=1",
]

#: (URI, what the one-line refusal says): programs, sockets, smuggling, malformed parts.
BAD_URIS = [
    ("qemu+ssh://x/system?command=/tmp/prog", "has parameter 'command'"),
    ("qemu+ext:///system?command=/tmp/prog", "uses transport 'qemu+ext'"),
    ("qemu+ssh://x/system?netcat=nc", "has parameter 'netcat'"),
    ("qemu+unix:///system?socket=/run/other.sock", "has parameter 'socket'"),
    ("qemu+ssh://x/system?socket=/run/other.sock", "has parameter 'socket'"),
    ("qemu+ssh://x/system?proxy=netcat", "has parameter 'proxy'"),
    ("qemu+ssh://x/system?mode=direct", "has parameter 'mode'"),
    ("qemu+ssh://x/system?name=qemu:///system", "has parameter 'name'"),
    ("qemu+ssh://x/system?COMMAND=/tmp/prog", "has parameter 'COMMAND'"),
    ("qemu+ssh://x/system?no_tty=1;command=/tmp/prog", "may only have letters"),
    ("qemu+ssh://x/system?%63ommand=/tmp/prog", "may only have letters"),
    ("qemu+ssh://x/system#command=/tmp/prog", "may only have letters"),
    ("qemu+ssh://x/system?keyfile=/root/../etc/shadow", "must be an absolute, normalised path"),
    ("qemu+ssh://x/system?keyfile=id_rsa", "must be an absolute, normalised path"),
    ("qemu+ssh://x/system?keyfile=", "must be an absolute, normalised path"),
    ("qemu+ssh://x/system?no_tty=yes", "parameter no_tty must be one of 0, 1"),
    ("qemu+ssh://x/system?no_tty=1&no_tty=0", "gives parameter 'no_tty' twice"),
    ("qemu+tcp://x/system?no_verify=1", "qemu+tcp allows only: none"),
    ("qemu:///system?", "has parameter ''"),
    ("qemu+ssh://u:secret@x/system", "is not a user name (and a URI carries no password)"),
    ("qemu+ssh://-oProxyCommand=x/system", "is not a host name or IPv4 address"),
    ("qemu+ssh://x:0/system", "port '0' is not a port number"),
    ("qemu+ssh://x:99999/system", "port '99999' is not a port number"),
    ("qemu+ssh://x:/system", "port '' is not a port number"),
    ("qemu+ssh://[not-v6]/system", "is not [IPv6] or [IPv6]:PORT"),
    ("qemu+unix://h/system", "names a host, but qemu+unix reaches only this machine"),
    ("qemu+ssh://x/other", "must end in /system or /session"),
    ("qemu+ssh://x", "must end in /system or /session"),
    ("test:///default", "uses transport 'test'"),
    ("qemu+libssh2://x/system", "uses transport 'qemu+libssh2'"),
    ("QEMU:///system", "uses transport 'QEMU'"),
    ("qemu:///system'><x", "may only have letters"),
    ("qemu:///system x", "may only have letters"),
    ("", "may only have letters"),
    ("system", "is not TRANSPORT://[HOST]/system"),
    ("qemu:///" + "s" * 1100, "may only have letters"),
]


@pytest.mark.parametrize("uri", GOOD_URIS)
def test_libvirt_uris_cloudctl_uses_pass(uri: str) -> None:
    assert validation.libvirt_uri(uri) == uri


@pytest.mark.parametrize(("uri", "why"), BAD_URIS, ids=[u for u, _ in BAD_URIS])
def test_hostile_libvirt_uris_are_refused(uri: str, why: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        validation.libvirt_uri(uri)
    assert why in exc.value.message
    assert exc.value.exit_code == 2 and "\n" not in exc.value.message


def test_the_lab_registers_a_uri_that_passes() -> None:
    from cloudctl.services.lab_machine import LIBVIRT_URI

    # The lab reaches its hosts' sockets (qemu+unix:///system?socket=...) only with virsh from
    # the root namespace; the hosts are registered with the URI they see inside.
    assert validation.libvirt_uri(LIBVIRT_URI) == LIBVIRT_URI


GOOD_PATHS = [
    "/var/lib/cloudctl/instances",
    "/usr/bin/python3",
    "/root/.ssh/id_ed25519",
    "/opt/venv-3.11/bin/python+x",
    "/srv/a.b_c",
]
BAD_PATHS = [
    "/srv/x/../../etc",
    "/srv/x/..",
    "/srv/./x",
    "/srv//x",
    "//srv/x",
    "/srv/x/",
    "/",
    "",
    "relative/path",
    "~/.ssh/id_rsa",
    "/srv/x y",
    "/srv/$(id)",
    "/srv/x\n",
    "/srv/" + "x" * 1020,
]


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_plain_absolute_paths_pass(path: str) -> None:
    assert validation.host_path("instances path", path) == path


@pytest.mark.parametrize("path", BAD_PATHS)
def test_paths_that_are_not_absolute_and_normalised_are_refused(path: str) -> None:
    with pytest.raises(InvalidInput, match="must be an absolute, normalised path"):
        validation.host_path("instances path", path)


RANGES = [
    (validation.non_negative, 0, None),
    (validation.non_negative, 2**31 - 1, None),
    (validation.non_negative, -1, "x must be >= 0, got -1"),
    (validation.non_negative, 2**31, "x must be <= 2147483647, got 2147483648"),
    (validation.positive, 1, None),
    (validation.positive, 0, "x must be >= 1, got 0"),
    (validation.positive, 10**5000, "x must be <= 2147483647, got a number of more than 30 digits"),
]


@pytest.mark.parametrize(("check", "value", "error"), RANGES, ids=[str(e) for *_, e in RANGES])
def test_sizes_fit_their_sql_column(
    check: Callable[[str, int], int], value: int, error: str | None
) -> None:
    if error is None:
        assert check("x", value) == value
    else:
        with pytest.raises(InvalidInput) as exc:
            check("x", value)
        assert exc.value.message == f"invalid input: {error}"


USER_DATA = [
    (b"#cloud-config\n", None),
    (b"x" * validation.MAX_USER_DATA, None),
    (b"x" * (validation.MAX_USER_DATA + 1), "user data is larger than 65536 bytes"),
    ("é".encode() * (validation.MAX_USER_DATA // 2 + 1), "user data is larger than 65536 bytes"),
    (b"\xff\xfe", "user data must be UTF-8 text"),
    (b"a\x00b", "user data must be text (it contains NUL bytes)"),
]


@pytest.mark.parametrize(("raw", "error"), USER_DATA)
def test_user_data_is_bounded_like_novas(raw: bytes, error: str | None) -> None:
    if error is None:
        assert validation.user_data_bytes(raw) == raw.decode()
    else:
        with pytest.raises(InvalidInput, match=re.escape(error)):
            validation.user_data_bytes(raw)


#: A regex's ``$`` also matches before a final newline: every check matches the whole value.
TRAILING_NEWLINE = [
    lambda: validation.instance_name("web\n"),
    lambda: validation.object_name("flavor", "m1\n"),
    lambda: validation.availability_zone("az1\n"),
    lambda: validation.properties(["key\n=v"]),
    lambda: validation.host_path("instances path", "/srv/x\n"),
    lambda: validation.libvirt_uri("qemu:///system\n"),
]


@pytest.mark.parametrize("check", TRAILING_NEWLINE)
def test_a_trailing_newline_is_refused(check: Callable[[], object]) -> None:
    with pytest.raises(InvalidInput):
        check()
