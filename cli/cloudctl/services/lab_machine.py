"""The machinery behind ``cloudctl lab``: N real libvirt compute hosts on this one machine.

A lab host ``lab-N`` is a set of Linux namespaces plus the daemons running inside them:

* a network namespace ``cl<id>-<N>`` joined to the lab bridge ``cl<id>br`` (which holds ``.1`` of
  the lab's /24) by a veth pair; inside, ``eth0`` holds ``.10+N`` and a bridge ``cloudbr0`` (no
  address) takes the guests' NICs. A second veth pair joins every host's ``cloudbr0`` to the lab's
  guest bridge ``cl<id>gb`` in the root namespace, so guests on different hosts share one flat L2
  network, as on a real cloud; the root namespace has no address and no IPv6 there;
* a persistent mount namespace (``root/ns/lab-N``) in which the host's own directories are bound
  over ``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt`` and ``/var/log/libvirt`` (and,
  with ``storage="local"``, over the lab's instances path); ``/var/cache/libvirt`` (QEMU's
  probed capabilities) is one directory shared by the lab's hosts;
* a persistent UTS namespace (``root/ns/lab-N.uts``) whose hostname is ``lab-N``;
* ``virtlogd``, ``libvirtd`` (with its own ``host_uuid``) and, for ``connection="ssh"``, an
  ``sshd`` on the host's address, all started inside those namespaces with their pid files in the
  host's directory. ``qemu:///system`` seen from inside a host is that host's ``libvirtd``; from
  the root namespace it is reached at ``qemu+unix:///system?socket=<LabHost.socket>``, a path
  through the short symlink ``/run/cloudctl-lab/<id>`` -> root (unix socket paths are limited to
  107 bytes).

Every global name carries a short id derived from the lab's root directory, so two labs (the
demo's and a test's) can be up side by side. :meth:`Lab.up` reconciles: it creates or restarts
only what is missing or dead, and a second call on a healthy lab changes nothing.
:meth:`Lab.down` removes everything, also from a half-built lab, and may run any number of times.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args
from urllib.parse import quote

from cloudctl.domain.paths import DEFAULT_BRIDGE
from cloudctl.errors import CloudctlError, InvalidInput

VirtType = Literal["qemu", "kvm"]
Connection = Literal["ssh", "local"]
Storage = Literal["shared", "local"]
Progress = Callable[[str], None]

MAX_HOSTS = 16
#: The label (value ``"true"``) of the lab's hosts in cloudctl's host table.
LAB_LABEL = "lab"
DEFAULT_CIDR_POOL = "10.213.0.0/16"
#: Inside a lab host's namespaces this URI is that host's own libvirtd.
LIBVIRT_URI = "qemu:///system"
SSH_USER = "root"
SSH_PORT = 22
#: The guest bridge inside every host's network namespace (like ``cloudbr0`` on a real host).
GUEST_BRIDGE = DEFAULT_BRIDGE

_STATE_FORMAT = 1
_ID_LEN = 6
#: ``sun_path`` holds 108 bytes including the terminating NUL.
_SUN_PATH_MAX = 107
_GATEWAY_HOST = 1
_FIRST_HOST = 10
_ETH = "eth0"
_UPLINK = "uplink0"
_GLOBAL_LOCK = Path("/run/lock/cloudctl-lab.lock")
_DAEMON_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
_SSHD = "/usr/sbin/sshd"
_REQUIRED_TOOLS: tuple[str, ...] = ("ip", "nsenter", "unshare", "mount", "umount", "hostname")
_REQUIRED_TOOLS += ("sysctl", "stat", "virtlogd", "libvirtd", "virsh", "ssh-keygen")
_NO_IPV6 = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
_UNDEFINE_FLAGS = ("--managed-save", "--snapshots-metadata", "--checkpoints-metadata", "--nvram")
_SSHD_PRIVSEP_DIR = Path("/run/sshd")
#: Machine directories each host gets its own copy of (target -> directory under the host dir).
_LIBVIRT_BINDS: tuple[tuple[str, str], ...] = (
    ("/etc/libvirt", "etc"),
    ("/run/libvirt", "run/libvirt"),
    ("/var/lib/libvirt", "lib"),
    ("/var/log/libvirt", "log"),
)
#: Shared by all hosts of a lab (``root/cache``): QEMU's capabilities take seconds to probe per
#: libvirtd, and every host runs the same binaries. Seeded from the machine's own cache.
_LIBVIRT_CACHE = "/var/cache/libvirt"
_QEMU_CAPS_CACHE = Path(_LIBVIRT_CACHE) / "qemu" / "capabilities"
#: Short names for lab roots (``/run/cloudctl-lab/<id>`` -> root): a unix socket path must fit
#: in 107 bytes, and a lab root may be deep (pytest's tmp_path).
SHORT_ROOTS = Path("/run/cloudctl-lab")
#: qemu.conf keys set in each host's copy of the machine's libvirt configuration, as values;
#: written as JSON, the way roles/libvirt_host writes them, so `host prepare` finds them as it
#: would set them (see :meth:`Lab.role_vars`).
QEMU_CONF: Mapping[str, Any] = {
    "user": "root",
    "group": "root",
    "security_driver": "none",
    # Every libvirtd would name its guests' cgroups machine/qemu-<id>-<name>: two lab hosts (a
    # migration's source and destination) would share, then remove, each other's groups.
    "cgroup_controllers": [],
}
_QEMU_CONF = {key: json.dumps(value) for key, value in QEMU_CONF.items()}
#: Arguments of the hosts' daemons after ``--daemon --pid-file PIDFILE``.
_VIRTLOGD_ARGS: tuple[str, ...] = ()
_LIBVIRTD_ARGS: tuple[str, ...] = ("--listen",)
_DAEMON_START_TIMEOUT_S = 30.0
_KILL_GRACE_S = 5.0
_SUBPROCESS_TIMEOUT_S = 30.0
_PROBE_TIMEOUT_S = 10.0
#: Everything ``down`` removes from the root (the root itself goes too if that leaves it empty).
_ROOT_ENTRIES: tuple[str, ...] = ("state.json", "known_hosts", "id_ed25519", "id_ed25519.pub")
_ROOT_ENTRIES += ("hosts", "shared", "local-instances", "ns", "cache")


class LabError(CloudctlError):
    """Building, checking or removing the lab failed."""

    msg_fmt = "lab: {reason}"
    exit_code = 1


# --- the public records ------------------------------------------------------------------------


@dataclass(frozen=True)
class LabSpec:
    """What ``cloudctl lab up`` asks for."""

    hosts: int
    azs: int = 1
    virt_type: VirtType = "qemu"
    connection: Connection = "ssh"
    storage: Storage = "shared"
    #: The one address-range setting: each lab takes a free /24 of it.
    cidr_pool: str = DEFAULT_CIDR_POOL


@dataclass(frozen=True)
class LabHost:
    """One lab host as Ansible and the inventory see it."""

    name: str
    index: int
    availability_zone: str
    address: str
    connection: Connection
    libvirt_uri: str
    python_interpreter: str
    ssh_user: str | None
    ssh_port: int | None
    ssh_private_key: str | None
    instances_path: str
    bridge: str
    virt_type: str
    #: The host's libvirt socket as seen from the root namespace.
    socket: str
    host_uuid: str = ""
    #: A known_hosts file with this host's key (ssh only), for ``-o UserKnownHostsFile=``.
    ssh_known_hosts: str | None = None

    @property
    def socket_uri(self) -> str:
        """The URI that reaches this host's libvirtd from the root namespace."""
        return socket_uri(Path(self.socket))


@dataclass(frozen=True)
class HostHealth:
    """What :meth:`Lab.status` found for one host."""

    name: str
    healthy: bool
    problems: tuple[str, ...]


# --- pure helpers: names, addresses, configuration files, state ------------------------------


def lab_id_for(root: Path) -> str:
    """The short id of the lab rooted at ``root`` (hex of the resolved path's sha256)."""
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:_ID_LEN]


@dataclass(frozen=True)
class LabNames:
    """The machine-wide names of one lab: namespaces, bridges and veths all carry its id."""

    lab_id: str

    @property
    def prefix(self) -> str:
        """Every link and network namespace of the lab starts with this."""
        return f"cl{self.lab_id}"

    @property
    def bridge(self) -> str:
        """The root-side bridge holding the lab network's ``.1``."""
        return f"{self.prefix}br"

    @property
    def guest_bridge(self) -> str:
        """The root-side bridge joining the hosts' guest bridges (no address)."""
        return f"{self.prefix}gb"

    def netns(self, index: int) -> str:
        """The network namespace of host ``index``."""
        return f"{self.prefix}-{index}"

    def veth(self, index: int) -> str:
        """Root side of host ``index``'s management veth (its peer is ``eth0``)."""
        return f"{self.prefix}v{index}"

    def guest_veth(self, index: int) -> str:
        """Root side of host ``index``'s guest-network veth (its peer is ``uplink0``)."""
        return f"{self.prefix}g{index}"

    def links(self, hosts: Iterable[int]) -> list[str]:
        """All root-namespace links of a lab with these hosts."""
        out = [self.bridge, self.guest_bridge]
        for i in hosts:
            out += [self.veth(i), self.guest_veth(i)]
        return out

    def index_of_link(self, name: str) -> int | None:
        """The host index a root-side veth name belongs to, else None."""
        m = re.fullmatch(re.escape(self.prefix) + r"[vg](\d+)", name)
        return int(m.group(1)) if m else None

    def index_of_netns(self, name: str) -> int | None:
        """The host index a network namespace name belongs to, else None."""
        m = re.fullmatch(re.escape(self.prefix) + r"-(\d+)", name)
        return int(m.group(1)) if m else None


def host_name(index: int) -> str:
    """``lab-<index>``."""
    return f"lab-{index}"


def availability_zone(index: int, azs: int) -> str:
    """Hosts go round-robin over ``az1..az<azs>``: host 1 in az1, host 2 in az2, ..."""
    return f"az{(index - 1) % azs + 1}"


def gateway_address(network: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The root side of the lab network (on the lab bridge)."""
    return network.network_address + _GATEWAY_HOST


def host_address(network: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    """Host ``index``'s address: ``.11`` for lab-1, ``.12`` for lab-2, ..."""
    return network.network_address + _FIRST_HOST + index


def host_uuid_for(root: Path, index: int) -> str:
    """A stable, distinct ``host_uuid`` for host ``index`` of the lab at ``root``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cloudctl-lab:{Path(root).resolve()}:{index}"))


def socket_uri(sock: Path) -> str:
    """``qemu+unix:///system?socket=<sock>`` with the path escaped for libvirt's URI parser."""
    return f"qemu+unix:///system?socket={quote(str(sock), safe='/._-~')}"


def validate_spec(spec: LabSpec) -> ipaddress.IPv4Network:
    """Check ``spec`` and return its address pool; raise InvalidInput naming the bad field."""
    if not isinstance(spec.hosts, int) or not 1 <= spec.hosts <= MAX_HOSTS:
        raise InvalidInput(reason=f"lab hosts must be 1..{MAX_HOSTS}, got {spec.hosts!r}")
    if not isinstance(spec.azs, int) or not 1 <= spec.azs <= spec.hosts:
        raise InvalidInput(reason=f"lab azs must be 1..hosts ({spec.hosts}), got {spec.azs!r}")
    for field_name, value, choices in (
        ("virt_type", spec.virt_type, get_args(VirtType)),
        ("connection", spec.connection, get_args(Connection)),
        ("storage", spec.storage, get_args(Storage)),
    ):
        if value not in choices:
            raise InvalidInput(
                reason=f"lab {field_name} must be one of {', '.join(choices)}, got {value!r}"
            )
    try:
        pool = ipaddress.ip_network(spec.cidr_pool)
    except ValueError as exc:
        raise InvalidInput(reason=f"lab cidr_pool {spec.cidr_pool!r}: {exc}") from exc
    if not isinstance(pool, ipaddress.IPv4Network) or pool.prefixlen > 24:
        raise InvalidInput(
            reason=f"lab cidr_pool must be an IPv4 network of /24 or larger, got {spec.cidr_pool}"
        )
    return pool


def used_networks(
    addresses: Sequence[Mapping[str, Any]],
    routes: Sequence[Mapping[str, Any]],
    *,
    ignore_links: Iterable[str] = (),
) -> list[ipaddress.IPv4Network]:
    """IPv4 networks in use on the machine, from ``ip -json addr`` and ``ip -json -4 route``.

    Addresses on ``ignore_links`` (the lab's own bridge) do not count; default routes do not
    count (they would cover every pool).
    """
    ignored = set(ignore_links)
    used: list[ipaddress.IPv4Network] = []
    for link in addresses:
        if link.get("ifname") in ignored:
            continue
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                iface = ipaddress.IPv4Interface(f"{info['local']}/{info.get('prefixlen', 32)}")
                used.append(iface.network)
    for route in routes:
        dst = str(route.get("dst", ""))
        if route.get("dev") in ignored or dst in ("", "default"):
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
            used.append(net)
    return used


def pick_network(
    pool: ipaddress.IPv4Network, used: Iterable[ipaddress.IPv4Network]
) -> ipaddress.IPv4Network:
    """The first /24 of ``pool`` that overlaps none of ``used``."""
    taken = list(used)
    for candidate in pool.subnets(new_prefix=24):
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise LabError(reason=f"no free /24 left in the address pool {pool}")


def render_sshd_config(
    *,
    address: str,
    port: int,
    host_key: Path,
    authorized_keys: Path,
    pid_file: Path,
) -> str:
    """The ``sshd_config`` of one lab host: key-only root login on its own address."""
    lines = [
        "# Written by cloudctl lab; rewritten on every `lab up`.",
        f"ListenAddress {address}",
        f"Port {port}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The lab's files live wherever $CLOUDCTL_HOME is, e.g. under a world-writable /tmp.
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "X11Forwarding no",
        f"PidFile {pid_file}",
        # Ansible copies module files over SFTP.
        "Subsystem sftp internal-sftp",
        "",
    ]
    return "\n".join(lines)


def render_enter_script(
    *, nsenter: str, mount_ns: Path, net_ns: Path, uts_ns: Path, command: Sequence[str]
) -> str:
    """A ``/bin/sh`` script that runs ``command "$@"`` inside one lab host's namespaces."""
    argv = [
        nsenter,
        f"--mount={mount_ns}",
        f"--net={net_ns}",
        f"--uts={uts_ns}",
        "--",
        *command,
    ]
    return (
        "#!/bin/sh\n"
        "# Written by cloudctl lab: runs the command inside this lab host's namespaces.\n"
        f'exec {shlex.join(argv)} "$@"\n'
    )


_CONF_KEY_RE = r"^\s*{key}\s*="
_CONF_MARKER = "# Set by cloudctl lab for this lab host."


def set_conf_values(text: str, values: Mapping[str, str]) -> str:
    """``text`` (a libvirt ``*.conf``) with each key of ``values`` set to exactly that value.

    Active lines setting a managed key are dropped; the managed lines are appended at the end,
    under one marker comment. Comments and other keys are kept as they are, and applying the
    same values again changes nothing.
    """
    patterns = [re.compile(_CONF_KEY_RE.format(key=re.escape(k))) for k in values]
    kept = [
        line
        for line in text.splitlines()
        if line != _CONF_MARKER and not any(p.match(line) for p in patterns)
    ]
    while kept and not kept[-1].strip():
        kept.pop()
    managed = [_CONF_MARKER, *(f"{k} = {v}" for k, v in values.items())]
    return "\n".join([*kept, "", *managed, ""] if kept else [*managed, ""])


@dataclass(frozen=True)
class HostRecord:
    """One host as recorded in the state file."""

    name: str
    index: int
    availability_zone: str
    address: str
    host_uuid: str


@dataclass(frozen=True)
class LabState:
    """The state file: the spec of the last ``up``, the chosen /24 and the hosts."""

    lab_id: str
    root: str
    network: str
    python: str
    spec: LabSpec
    hosts: tuple[HostRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``root/state.json``."""
        return {
            "format": _STATE_FORMAT,
            "lab_id": self.lab_id,
            "root": self.root,
            "network": self.network,
            "python": self.python,
            "spec": {
                "hosts": self.spec.hosts,
                "azs": self.spec.azs,
                "virt_type": self.spec.virt_type,
                "connection": self.spec.connection,
                "storage": self.spec.storage,
                "cidr_pool": self.spec.cidr_pool,
            },
            "hosts": [
                {
                    "name": h.name,
                    "index": h.index,
                    "availability_zone": h.availability_zone,
                    "address": h.address,
                    "host_uuid": h.host_uuid,
                }
                for h in self.hosts
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabState:
        """Parse the JSON form; raise LabError if it is not a state file of this format."""
        try:
            if data["format"] != _STATE_FORMAT:
                raise ValueError(f"format {data['format']!r}, expected {_STATE_FORMAT}")
            spec = data["spec"]
            return cls(
                lab_id=str(data["lab_id"]),
                root=str(data["root"]),
                network=str(data["network"]),
                python=str(data["python"]),
                spec=LabSpec(
                    hosts=int(spec["hosts"]),
                    azs=int(spec["azs"]),
                    virt_type=spec["virt_type"],
                    connection=spec["connection"],
                    storage=spec["storage"],
                    cidr_pool=str(spec["cidr_pool"]),
                ),
                hosts=tuple(
                    HostRecord(
                        name=str(h["name"]),
                        index=int(h["index"]),
                        availability_zone=str(h["availability_zone"]),
                        address=str(h["address"]),
                        host_uuid=str(h["host_uuid"]),
                    )
                    for h in data["hosts"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(reason=f"unreadable lab state: {exc!r}") from exc


def plan_hosts(spec: LabSpec, network: ipaddress.IPv4Network, root: Path) -> tuple[HostRecord, ...]:
    """The host records of a lab with this spec on this network."""
    return tuple(
        HostRecord(
            name=host_name(i),
            index=i,
            availability_zone=availability_zone(i, spec.azs),
            address=str(host_address(network, i)),
            host_uuid=host_uuid_for(root, i),
        )
        for i in range(1, spec.hosts + 1)
    )


# --- small system helpers ----------------------------------------------------------------------


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = _SUBPROCESS_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never through a shell); raise LabError with its stderr if it fails."""
    cmd = shlex.join(argv)
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(reason=f"{argv[0]} not found: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(reason=f"`{cmd}` did not finish within {timeout:g} s") from exc
    if check and proc.returncode != 0:
        raise LabError(reason=f"`{cmd}` failed (exit {proc.returncode}): {_last_line(proc)}")
    return proc


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = _run(["ip", "-json", *args]).stdout.strip()
    return cast(list[dict[str, Any]], json.loads(out)) if out else []


_NSFS_DEV = os.stat("/proc/self/ns/mnt").st_dev
#: The first `ip netns add` on a machine makes /run/netns a shared mount; two at once may race.
_NETNS_ADD_LOCK = threading.Lock()


def _ns_inode(path: Path | str) -> int | None:
    """The namespace inode ``path`` is bound to, or None if it is not a namespace file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino if st.st_dev == _NSFS_DEV else None


def _proc_ns(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text(errors="replace").strip()
    except OSError:
        return ""


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _processes_in(namespaces: Mapping[str, Iterable[int]]) -> list[int]:
    """Pids whose namespace of each kind (``mnt``, ``net``, ``uts``) is one of the given."""
    wanted = {kind: set(inodes) for kind, inodes in namespaces.items() if inodes}
    me = os.getpid()
    found = []
    for pid in _all_pids():
        if pid == me:
            continue
        for kind, inodes in wanted.items():
            if _proc_ns(pid, kind) in inodes:
                found.append(pid)
                break
    return found


def _kill(pids: Iterable[int], *, what: str) -> None:
    """SIGTERM ``pids``, SIGKILL whatever still lives after a grace period; raise if any stays."""
    alive = [p for p in pids if _pid_alive(p)]
    for sig, grace in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, _KILL_GRACE_S)):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = [p for p in alive if _pid_alive(p)]
        if not alive:
            return
    raise LabError(reason=f"could not kill {what}: pids {', '.join(map(str, alive))} survive")


def _mount_points() -> list[str]:
    """Mount points of the calling process's mount namespace, unescaped."""
    return _parse_mount_points(Path("/proc/self/mountinfo").read_text())


def _parse_mount_points(mountinfo: str) -> list[str]:
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            out.append(_unescape_mount(fields[4]))
    return out


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _write_if_changed(path: Path, text: str, *, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` (atomically) unless it holds exactly that; True if written."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


@contextlib.contextmanager
def _global_lock() -> Iterator[None]:
    """Serialise lab changes machine-wide (choosing a free /24 must not race another lab)."""
    _GLOBAL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(_GLOBAL_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tcp_accepts(address: str, port: int, timeout: float = 1.0) -> str | None:
    """None if ``address:port`` accepts a TCP connection, else why not."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _libvirt_answers(sock: Path, timeout: float = _PROBE_TIMEOUT_S) -> str | None:
    """None if the libvirtd behind ``sock`` answers an RPC, else why not."""
    if not sock.exists():
        return f"socket {sock} does not exist"
    try:
        proc = _run(["virsh", "-c", socket_uri(sock), "uri"], check=False, timeout=timeout)
    except LabError as exc:
        return exc.message
    return None if proc.returncode == 0 else _last_line(proc)


# --- per-host layout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _HostPaths:
    """Where one host's files live under ``root/hosts/lab-N`` (and its namespace files)."""

    root: Path
    index: int
    #: A short path to ``root`` (a symlink), for unix socket paths.
    short_root: Path

    @property
    def name(self) -> str:
        return host_name(self.index)

    @property
    def dir(self) -> Path:
        return self.root / "hosts" / self.name

    @property
    def mount_ns(self) -> Path:
        return self.root / "ns" / self.name

    @property
    def uts_ns(self) -> Path:
        return self.root / "ns" / f"{self.name}.uts"

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def log(self) -> Path:
        return self.dir / "log"

    @property
    def ssh(self) -> Path:
        return self.dir / "ssh"

    @property
    def instances(self) -> Path:
        return self.dir / "instances"

    @property
    def socket(self) -> Path:
        return self.short_root / "hosts" / self.name / "run" / "libvirt" / "libvirt-sock"

    @property
    def sshd_config(self) -> Path:
        return self.ssh / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.ssh / "ssh_host_ed25519_key"

    @property
    def python(self) -> Path:
        return self.dir / "python"

    @property
    def enter(self) -> Path:
        return self.dir / "enter"

    def pidfile(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"


@dataclass(frozen=True)
class _Daemon:
    """A daemon of a lab host: how to start it and how to recognise it as ours."""

    name: str
    argv: tuple[str, ...]
    pidfile: Path
    #: A string in its command line proving a live pid is this daemon (pid reuse).
    marker: str


class _Say:
    """Thread-safe progress reporting."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        if self._progress is not None:
            with self._lock:
                self._progress(msg)


# --- the lab -----------------------------------------------------------------------------------


class Lab:
    """The lab of compute hosts rooted at ``root`` (``$CLOUDCTL_HOME/lab``)."""

    def __init__(self, root: Path, *, python: str = sys.executable) -> None:
        self.root = Path(root).resolve()
        self.python = python
        self.names = LabNames(lab_id_for(self.root))
        self._caps_lock = threading.Lock()

    # paths ------------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        """``root/state.json``."""
        return self.root / "state.json"

    @property
    def private_key(self) -> Path:
        """The lab's SSH key, accepted by every lab host's sshd."""
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file listing every ssh lab host's key."""
        return self.root / "known_hosts"

    @property
    def ns_dir(self) -> Path:
        """Where the hosts' mount and UTS namespaces are bound (a private mount of itself)."""
        return self.root / "ns"

    @property
    def shared_instances(self) -> Path:
        """The instances path every host sees with ``storage="shared"`` (like NFS)."""
        return self.root / "shared" / "instances"

    @property
    def local_instances(self) -> Path:
        """The path every host sees its own instances directory at with ``storage="local"``."""
        return self.root / "local-instances"

    @property
    def short_root(self) -> Path:
        """A short symlink to ``root`` (made by :meth:`up`): use it for unix socket paths."""
        return SHORT_ROOTS / self.names.lab_id

    @property
    def cache(self) -> Path:
        """The hosts' shared ``/var/cache/libvirt``."""
        return self.root / "cache"

    def _paths(self, index: int) -> _HostPaths:
        return _HostPaths(self.root, index, self.short_root)

    # public API -------------------------------------------------------------------------------

    def hosts(self) -> list[LabHost]:
        """The lab's hosts from its state file; [] when there is no lab."""
        state = self._load_state()
        return [] if state is None else [self._lab_host(state, h) for h in state.hosts]

    def role_vars(self, name: str) -> dict[str, Any]:
        """Variables of ``roles/libvirt_host`` that describe lab host ``name`` as the lab runs it.

        Inside its namespaces a host has its own ``/etc/libvirt`` and ``/run/libvirt``, but
        ``/run`` itself is the machine's: its daemons keep their pid files in the host's
        directory, and its libvirtd also listens on TCP (migrations). With these values the role
        finds the host's own daemons and configuration as the lab made them (a second run changes
        nothing), and starts a daemon that is down exactly as :meth:`up` would (same pid file, same
        arguments), never touching the machine's. Raises LabError for a host the lab lacks.
        """
        state = self._load_state()
        rec = next((h for h in state.hosts if h.name == name), None) if state else None
        if state is None or rec is None:
            raise LabError(reason=f"{name} is not a host of the lab in {self.root}")
        p = self._paths(rec.index)
        return {
            "libvirt_host_run_dir": "/run/libvirt",
            "libvirt_host_virtlogd_pidfile": str(p.pidfile("virtlogd")),
            "libvirt_host_virtlogd_args": list(_VIRTLOGD_ARGS),
            "libvirt_host_libvirtd_pidfile": str(p.pidfile("libvirtd")),
            "libvirt_host_libvirtd_args": list(_LIBVIRTD_ARGS),
            "libvirt_host_qemu_conf_extra": dict(QEMU_CONF),
        }

    def up(self, spec: LabSpec, progress: Progress | None = None) -> list[LabHost]:
        """Create the lab, or reconcile it with ``spec``; return its hosts once all are healthy.

        Whatever is missing or dead is created or restarted, healthy parts are left alone, hosts
        beyond ``spec.hosts`` are removed completely. Raises InvalidInput for a bad spec and
        LabError when a step fails or a host is still unhealthy afterwards.
        """
        pool = validate_spec(spec)
        say = _Say(progress)
        self._check_tools(spec)
        with _global_lock():
            self.root.mkdir(parents=True, exist_ok=True)
            old = self._load_state()
            network = self._choose_network(pool, old)
            state = LabState(
                lab_id=self.names.lab_id,
                root=str(self.root),
                network=str(network),
                python=self.python,
                spec=spec,
                hosts=plan_hosts(spec, network, self.root),
            )
            if old is None:
                say(f"lab {self.names.lab_id}: network {network} in {self.root}")
            # Recorded before anything is built, so status() and down() know the hosts.
            self._save_state(state)
            for index in sorted(self._present_indices() - {h.index for h in state.hosts}):
                say(f"{host_name(index)}: removing (the lab now has {spec.hosts} hosts)")
                self._teardown_host(index, say)
            self._ensure_lab(state, say)
            root_links = {link["ifname"]: link for link in _ip_json("addr")}
            with ThreadPoolExecutor(max_workers=len(state.hosts)) as pool_exec:
                futures = [
                    pool_exec.submit(self._ensure_host, state, h, root_links, say)
                    for h in state.hosts
                ]
            errors = _failures(zip([h.name for h in state.hosts], futures, strict=True))
            if errors:
                raise LabError(reason="; ".join(errors))
            self._write_known_hosts(state)
            sick = [h for h in self._health(state) if not h.healthy]
            if sick:
                raise LabError(
                    reason="unhealthy after up: "
                    + "; ".join(f"{h.name}: {', '.join(h.problems)}" for h in sick)
                )
        return [self._lab_host(state, h) for h in state.hosts]

    def status(self) -> list[HostHealth]:
        """Health of every host of the lab's state file ([] when there is no lab)."""
        state = self._load_state()
        return [] if state is None else self._health(state)

    def down(self, progress: Progress | None = None) -> None:
        """Remove everything of the lab: guests, processes, namespaces, links, mounts, files.

        Works on a half-built lab and when there is no lab at all.
        """
        say = _Say(progress)
        with _global_lock():
            indices = self._present_indices()
            if indices:
                with ThreadPoolExecutor(max_workers=len(indices)) as pool_exec:
                    futures = [
                        pool_exec.submit(self._teardown_host, i, say) for i in sorted(indices)
                    ]
                errors = _failures(
                    zip([host_name(i) for i in sorted(indices)], futures, strict=True)
                )
                if errors:
                    raise LabError(reason="; ".join(errors))
            self._teardown_lab(say)

    # state ------------------------------------------------------------------------------------

    def _load_state(self) -> LabState | None:
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LabError(reason=f"cannot read {self.state_file}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise LabError(reason=f"{self.state_file} is not JSON: {exc}") from exc
        return LabState.from_dict(data)

    def _save_state(self, state: LabState) -> None:
        _write_if_changed(
            self.state_file, json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n"
        )

    def _choose_network(
        self, pool: ipaddress.IPv4Network, old: LabState | None
    ) -> ipaddress.IPv4Network:
        if old is not None:
            net = ipaddress.IPv4Network(old.network)
            if not net.subnet_of(pool):
                raise LabError(
                    reason=f"the lab uses {net}, outside the new address pool {pool}; "
                    "run `cloudctl lab down` first to change it"
                )
            return net
        used = used_networks(
            _ip_json("addr"),
            _ip_json("-4", "route", "show", "table", "all"),
            ignore_links=[self.names.bridge],
        )
        return pick_network(pool, used)

    def _lab_host(self, state: LabState, rec: HostRecord) -> LabHost:
        p = self._paths(rec.index)
        ssh = state.spec.connection == "ssh"
        instances = (
            self.shared_instances if state.spec.storage == "shared" else self.local_instances
        )
        return LabHost(
            name=rec.name,
            index=rec.index,
            availability_zone=rec.availability_zone,
            address=rec.address,
            connection=state.spec.connection,
            libvirt_uri=LIBVIRT_URI,
            python_interpreter=state.python if ssh else str(p.python),
            ssh_user=SSH_USER if ssh else None,
            ssh_port=SSH_PORT if ssh else None,
            ssh_private_key=str(self.private_key) if ssh else None,
            instances_path=str(instances),
            bridge=GUEST_BRIDGE,
            virt_type=state.spec.virt_type,
            socket=str(p.socket),
            host_uuid=rec.host_uuid,
            ssh_known_hosts=str(self.known_hosts) if ssh else None,
        )

    def _present_indices(self) -> set[int]:
        """Hosts that have anything on this machine: a directory, ns file, netns or link."""
        found: set[int] = set()
        for pattern, base in (
            (r"lab-(\d+)", self.root / "hosts"),
            (r"lab-(\d+)(\.uts)?", self.ns_dir),
        ):
            with contextlib.suppress(OSError):
                for entry in os.listdir(base):
                    m = re.fullmatch(pattern, entry)
                    if m:
                        found.add(int(m.group(1)))
        with contextlib.suppress(OSError):
            for entry in os.listdir("/run/netns"):
                i = self.names.index_of_netns(entry)
                if i is not None:
                    found.add(i)
        for link in _ip_json("link"):
            i = self.names.index_of_link(str(link.get("ifname", "")))
            if i is not None:
                found.add(i)
        with contextlib.suppress(LabError):  # a broken state file must not block `down`
            state = self._load_state()
            if state is not None:
                found.update(h.index for h in state.hosts)
        return found

    # checks -----------------------------------------------------------------------------------

    def _check_tools(self, spec: LabSpec) -> None:
        missing = [t for t in _REQUIRED_TOOLS if shutil.which(t) is None]
        if spec.connection == "ssh" and not os.access(_SSHD, os.X_OK):
            missing.append(f"{_SSHD} (openssh-server)")
        if missing:
            raise LabError(reason=f"missing programs: {', '.join(missing)}")
        if not os.access(self.python, os.X_OK):
            raise LabError(reason=f"python interpreter {self.python} is not executable")

    def _daemons(self, state: LabState, rec: HostRecord) -> list[_Daemon]:
        p = self._paths(rec.index)
        virtlogd = _Daemon(
            "virtlogd",
            ("virtlogd", "--daemon", "--pid-file", str(p.pidfile("virtlogd")), *_VIRTLOGD_ARGS),
            p.pidfile("virtlogd"),
            str(p.pidfile("virtlogd")),
        )
        libvirtd = _Daemon(
            "libvirtd",
            ("libvirtd", "--daemon", "--pid-file", str(p.pidfile("libvirtd")), *_LIBVIRTD_ARGS),
            p.pidfile("libvirtd"),
            str(p.pidfile("libvirtd")),
        )
        sshd = _Daemon(
            "sshd",
            (_SSHD, "-f", str(p.sshd_config), "-E", str(p.log / "sshd.log")),
            p.pidfile("sshd"),
            str(p.sshd_config),
        )
        return (
            [virtlogd, libvirtd, sshd] if state.spec.connection == "ssh" else [virtlogd, libvirtd]
        )

    def _host_namespaces(self, index: int) -> dict[str, int | None]:
        p = self._paths(index)
        return {
            "mnt": _ns_inode(p.mount_ns),
            "net": _ns_inode(Path("/run/netns") / self.names.netns(index)),
            "uts": _ns_inode(p.uts_ns),
        }

    def _daemon_problem(self, d: _Daemon, ns: Mapping[str, int | None]) -> tuple[int | None, str]:
        """(pid if the pid file names a live process, why ``d`` is not healthy or "")."""
        pid = _read_pid(d.pidfile)
        if pid is None:
            return None, f"{d.name} not running (no pid file {d.pidfile})"
        if not _pid_alive(pid):
            return None, f"{d.name} not running (pid {pid} gone)"
        if d.marker not in _cmdline(pid):
            return None, f"{d.name} not running (pid {pid} is now another program)"
        for kind in ("mnt", "net", "uts"):
            have, want = _proc_ns(pid, kind), ns.get(kind)
            if want is None or have != want:
                expected = f"{kind}:[{want}]" if want else "gone"
                return pid, (
                    f"{d.name} pid {pid} is outside the host's {kind} namespace "
                    f"(in {kind}:[{have}], the host's is {expected})"
                )
        return pid, ""

    def _health(self, state: LabState) -> list[HostHealth]:
        root_links = {link["ifname"]: link for link in _ip_json("addr")}
        lab_problems = self._lab_problems(state, root_links)
        with ThreadPoolExecutor(max_workers=len(state.hosts) or 1) as pool_exec:
            per_host = list(
                pool_exec.map(lambda rec: self._host_problems(state, rec, root_links), state.hosts)
            )
        return [
            HostHealth(rec.name, not (lab_problems or problems), (*lab_problems, *problems))
            for rec, problems in zip(state.hosts, per_host, strict=True)
        ]

    def _lab_problems(self, state: LabState, root_links: Mapping[str, Any]) -> list[str]:
        problems = []
        gw = f"{gateway_address(ipaddress.IPv4Network(state.network))}/24"
        bridge = root_links.get(self.names.bridge)
        if bridge is None:
            problems.append(f"lab bridge {self.names.bridge} missing")
        elif gw not in _inet_addresses(bridge):
            problems.append(f"lab bridge {self.names.bridge} lacks address {gw}")
        if self.names.guest_bridge not in root_links:
            problems.append(f"guest bridge {self.names.guest_bridge} missing")
        try:
            target = os.readlink(self.short_root)
        except OSError:
            target = None
        if target != str(self.root):
            problems.append(f"symlink {self.short_root} -> {self.root} missing")
        return problems

    def _host_problems(
        self, state: LabState, rec: HostRecord, root_links: Mapping[str, Any]
    ) -> list[str]:
        p = self._paths(rec.index)
        netns = self.names.netns(rec.index)
        ns = self._host_namespaces(rec.index)
        problems = []
        if ns["net"] is None:
            problems.append(f"network namespace {netns} missing")
        if ns["mnt"] is None:
            problems.append(f"mount namespace {p.mount_ns} is not a live namespace")
        if ns["uts"] is None:
            problems.append(f"UTS namespace {p.uts_ns} is not a live namespace")
        for veth, bridge in (
            (self.names.veth(rec.index), self.names.bridge),
            (self.names.guest_veth(rec.index), self.names.guest_bridge),
        ):
            link = root_links.get(veth)
            if link is None:
                problems.append(f"link {veth} missing")
            elif link.get("master") != bridge or "UP" not in link.get("flags", []):
                problems.append(f"link {veth} is not up on {bridge}")
        if ns["net"] is not None:
            inside = {link["ifname"]: link for link in _ip_json("-n", netns, "addr")}
            want = f"{rec.address}/24"
            if want not in _inet_addresses(inside.get(_ETH, {})):
                problems.append(f"{_ETH} in {netns} lacks address {want}")
            if GUEST_BRIDGE not in inside:
                problems.append(f"bridge {GUEST_BRIDGE} missing in {netns}")
        daemons = self._daemons(state, rec)
        for d in daemons:
            _pid, problem = self._daemon_problem(d, ns)
            if problem:
                problems.append(problem)
        why = _libvirt_answers(p.socket, timeout=5)
        if why is not None:
            problems.append(f"libvirt socket {p.socket} does not answer: {why}")
        if state.spec.connection == "ssh":
            why = _tcp_accepts(rec.address, SSH_PORT)
            if why is not None:
                problems.append(f"sshd not answering on {rec.address}:{SSH_PORT} ({why})")
        return problems

    # up: lab-wide ----------------------------------------------------------------------------

    def _ensure_lab(self, state: LabState, say: _Say) -> None:
        if not self.private_key.exists() or not self.private_key.with_suffix(".pub").exists():
            self.private_key.unlink(missing_ok=True)
            self.private_key.with_suffix(".pub").unlink(missing_ok=True)
            say(f"creating the lab SSH key {self.private_key}")
            _keygen(self.private_key, f"cloudctl-lab-{self.names.lab_id}")
        if state.spec.connection == "ssh" and not _SSHD_PRIVSEP_DIR.is_dir():
            _SSHD_PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        (self.shared_instances / "_base").mkdir(parents=True, exist_ok=True)
        if state.spec.storage == "local":
            self.local_instances.mkdir(exist_ok=True)
        for target in [t for t, _sub in _LIBVIRT_BINDS] + [_LIBVIRT_CACHE]:
            Path(target).mkdir(parents=True, exist_ok=True)
        self._ensure_short_root(say)
        self._seed_cache(say)
        # The namespace files must sit on a private mount: a bind of a mount namespace into a
        # mount that propagates into that namespace would be a loop the kernel refuses.
        self.ns_dir.mkdir(exist_ok=True)
        if str(self.ns_dir) not in _mount_points():
            say(f"making {self.ns_dir} a private mount")
            _run(["mount", "--bind", str(self.ns_dir), str(self.ns_dir)])
            _run(["mount", "--make-private", str(self.ns_dir)])
        self._ensure_root_bridges(state, say)

    def _ensure_short_root(self, say: _Say) -> None:
        link = self.short_root
        with contextlib.suppress(OSError):
            if os.readlink(link) == str(self.root):
                return
        say(f"linking {link} -> {self.root}")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.root)
        tmp.replace(link)

    def _seed_cache(self, say: _Say) -> None:
        ours = self.cache / "qemu" / "capabilities"
        ours.mkdir(parents=True, exist_ok=True)
        if any(ours.glob("*.xml")):
            return
        machine = sorted(_QEMU_CAPS_CACHE.glob("*.xml"))
        if machine:
            say(f"seeding the hosts' QEMU capabilities cache from {_QEMU_CAPS_CACHE}")
        for src in machine:
            tmp = ours / f".{src.name}.tmp"
            shutil.copyfile(src, tmp)
            tmp.chmod(0o600)
            tmp.replace(ours / src.name)

    def _ensure_root_bridges(self, state: LabState, say: _Say) -> None:
        links = {link["ifname"]: link for link in _ip_json("addr")}
        gw = f"{gateway_address(ipaddress.IPv4Network(state.network))}/24"
        for bridge, address in ((self.names.bridge, gw), (self.names.guest_bridge, None)):
            link = links.get(bridge)
            if link is None:
                say(f"creating bridge {bridge}" + (f" with {address}" if address else ""))
                _run(["ip", "link", "add", bridge, "type", "bridge"])
                _disable_ipv6(bridge)
                link = {"flags": [], "addr_info": []}
            have = _inet_addresses(link)
            for extra in have - ({address} if address else set()):
                _run(["ip", "addr", "del", extra, "dev", bridge])
            if address and address not in have:
                _run(["ip", "addr", "add", address, "dev", bridge])
            if "UP" not in link.get("flags", []):
                _run(["ip", "link", "set", bridge, "up"])

    # up: one host ----------------------------------------------------------------------------

    def _ensure_host(
        self, state: LabState, rec: HostRecord, root_links: Mapping[str, Any], say: _Say
    ) -> None:
        p = self._paths(rec.index)
        acted: list[str] = []

        def step(msg: str) -> None:
            acted.append(msg)
            say(f"{rec.name}: {msg}")

        conf_changed = self._ensure_files(state, rec, step)
        self._ensure_netns(rec, root_links, step)
        self._ensure_mount_ns(state, rec, step)
        ns = self._host_namespaces(rec.index)
        for d in self._daemons(state, rec):
            restart = (d.name == "libvirtd" and "libvirt" in conf_changed) or (
                d.name == "sshd" and "sshd" in conf_changed
            )
            self._ensure_daemon(d, ns, rec, p, restart=restart, step=step)
        if state.spec.connection != "ssh":
            self._stop_daemon(
                _Daemon("sshd", (), p.pidfile("sshd"), str(p.sshd_config)), step, "local mode"
            )
        say(f"{rec.name}: " + ("ready" if acted else "healthy, nothing to do"))

    def _ensure_files(
        self, state: LabState, rec: HostRecord, step: Callable[[str], None]
    ) -> set[str]:
        """Directories, configuration files and scripts; returns which configurations changed."""
        p = self._paths(rec.index)
        for _target, sub in _LIBVIRT_BINDS:
            (p.dir / sub).mkdir(parents=True, exist_ok=True)
        for directory in (p.ssh, p.instances / "_base"):
            directory.mkdir(parents=True, exist_ok=True)
        changed: set[str] = set()
        for src in sorted(Path("/etc/libvirt").glob("*.conf")):
            text = src.read_text()
            if src.name == "qemu.conf":
                text = set_conf_values(text, _QEMU_CONF)
            elif src.name == "libvirtd.conf":
                continue
            if _write_if_changed(p.etc / src.name, text):
                changed.add("libvirt")
        if not (p.etc / "qemu.conf").exists():
            _write_if_changed(p.etc / "qemu.conf", set_conf_values("", _QEMU_CONF))
            changed.add("libvirt")
        base = Path("/etc/libvirt/libvirtd.conf")
        libvirtd_conf = set_conf_values(
            base.read_text() if base.is_file() else "",
            {
                "host_uuid": f'"{rec.host_uuid}"',
                "log_outputs": '"3:file:/var/log/libvirt/libvirtd.log"',
                # Peers reach this libvirtd at qemu+tcp://<address>/system for live migration
                # (peer to peer) and disk streams; only the lab's own bridge carries it.
                "listen_tls": "0",
                "listen_tcp": "1",
                "auth_tcp": '"none"',
                "listen_addr": f'"{rec.address}"',
            },
        )
        if _write_if_changed(p.etc / "libvirtd.conf", libvirtd_conf):
            changed.add("libvirt")
        if not p.host_key.exists():
            p.host_key.with_suffix(".pub").unlink(missing_ok=True)
            _keygen(p.host_key, rec.name)
        sshd_config = render_sshd_config(
            address=rec.address,
            port=SSH_PORT,
            host_key=p.host_key,
            authorized_keys=self.private_key.with_suffix(".pub"),
            pid_file=p.pidfile("sshd"),
        )
        if _write_if_changed(p.sshd_config, sshd_config, mode=0o600):
            changed.add("sshd")
        nsenter = shutil.which("nsenter") or "nsenter"
        netns_file = Path("/run/netns") / self.names.netns(rec.index)
        for script, command in ((p.python, [state.python]), (p.enter, [])):
            text = render_enter_script(
                nsenter=nsenter,
                mount_ns=p.mount_ns,
                net_ns=netns_file,
                uts_ns=p.uts_ns,
                command=command,
            )
            _write_if_changed(script, text, mode=0o755)
        if changed:
            step("configuration written")
        return changed

    def _ensure_netns(
        self, rec: HostRecord, root_links: Mapping[str, Any], step: Callable[[str], None]
    ) -> None:
        i = rec.index
        netns = self.names.netns(i)
        netns_file = Path("/run/netns") / netns
        p = self._paths(i)
        fresh = False
        if _ns_inode(netns_file) is None:
            step(f"creating network namespace {netns}")
            with _NETNS_ADD_LOCK:
                if netns_file.exists():
                    _run(["ip", "netns", "del", netns], check=False)
                _run(["ip", "netns", "add", netns])
            _run(["nsenter", f"--net={netns_file}", "--", "sysctl", "-q", "-w", *_NO_IPV6])
            fresh = True
        if _ns_inode(p.uts_ns) is None:
            step(f"creating UTS namespace (hostname {rec.name})")
            with contextlib.suppress(LabError):
                _run(["umount", str(p.uts_ns)])
            p.uts_ns.touch()
            _run(["unshare", f"--uts={p.uts_ns}", "hostname", rec.name])
        inside = {link["ifname"]: link for link in _ip_json("-n", netns, "addr")}
        pairs = (
            (self.names.veth(i), _ETH, self.names.bridge),
            (self.names.guest_veth(i), _UPLINK, self.names.guest_bridge),
        )
        for root_side, peer, bridge in pairs:
            link = None if fresh else root_links.get(root_side)
            if link is None or peer not in inside:
                step(f"creating veth {root_side} <-> {netns}:{peer}")
                _run(["ip", "link", "del", root_side], check=False)
                _run(["ip", "-n", netns, "link", "del", peer], check=False)
                add = ["ip", "link", "add", root_side, "type", "veth"]
                _run([*add, "peer", "name", peer, "netns", netns])
                _disable_ipv6(root_side)
                link = {"flags": []}
                inside[peer] = {"flags": [], "addr_info": []}
            if link.get("master") != bridge or "UP" not in link.get("flags", []):
                _run(["ip", "link", "set", root_side, "master", bridge, "up"])
        eth = inside[_ETH]
        want = f"{rec.address}/24"
        have = _inet_addresses(eth)
        for extra in have - {want}:
            _run(["ip", "-n", netns, "addr", "del", extra, "dev", _ETH])
        if want not in have:
            step(f"{_ETH} address {want}")
            _run(["ip", "-n", netns, "addr", "add", want, "dev", _ETH])
        if "UP" not in eth.get("flags", []):
            _run(["ip", "-n", netns, "link", "set", _ETH, "up"])
        if "UP" not in inside.get("lo", {}).get("flags", []):
            _run(["ip", "-n", netns, "link", "set", "lo", "up"])
        if GUEST_BRIDGE not in inside:
            step(f"creating bridge {GUEST_BRIDGE} in {netns}")
            _run(["ip", "-n", netns, "link", "add", GUEST_BRIDGE, "type", "bridge"])
            inside[GUEST_BRIDGE] = {"flags": []}
        if "UP" not in inside[GUEST_BRIDGE].get("flags", []):
            _run(["ip", "-n", netns, "link", "set", GUEST_BRIDGE, "up"])
        uplink = inside[_UPLINK]
        if uplink.get("master") != GUEST_BRIDGE or "UP" not in uplink.get("flags", []):
            _run(["ip", "-n", netns, "link", "set", _UPLINK, "master", GUEST_BRIDGE, "up"])

    def _ensure_mount_ns(
        self, state: LabState, rec: HostRecord, step: Callable[[str], None]
    ) -> None:
        p = self._paths(rec.index)
        enter = ["nsenter", f"--mount={p.mount_ns}", "--"]
        if _ns_inode(p.mount_ns) is None:
            step(f"creating mount namespace {p.mount_ns}")
            with contextlib.suppress(LabError):
                _run(["umount", str(p.mount_ns)])
            p.mount_ns.touch()
            _run(["unshare", f"--mount={p.mount_ns}", "--propagation", "private", "true"])
            # The copy of the root namespace's mounts holds every network (and UTS) namespace
            # file bound at that moment, which would keep those namespaces, and their veths,
            # alive after `ip netns del`. Nothing inside needs them.
            mountinfo = _run([*enter, "cat", "/proc/self/mountinfo"]).stdout
            nsfs = [
                _unescape_mount(f[4])
                for f in (line.split() for line in mountinfo.splitlines())
                if "-" in f and f[f.index("-") + 1] == "nsfs"
            ]
            if nsfs:
                _run([*enter, "umount", "--lazy", *sorted(set(nsfs), reverse=True)], check=False)
        binds = [(target, p.dir / sub) for target, sub in _LIBVIRT_BINDS]
        binds.append((_LIBVIRT_CACHE, self.cache))
        if state.spec.storage == "local":
            binds.append((str(self.local_instances), p.instances))
        targets = [t for t, _s in binds]
        out = _run([*enter, "stat", "-L", "-c", "%d %i", *targets]).stdout.split("\n")
        missing = []
        for (target, source), seen in zip(binds, out, strict=False):
            st = os.stat(source)
            if seen.strip() != f"{st.st_dev} {st.st_ino}":
                missing.append((target, source))
        if missing:
            step(f"binding its own {', '.join(t for t, _s in missing)}")
        for target, source in missing:
            _run([*enter, "mount", "--bind", str(source), target])
        if state.spec.storage != "local":
            # A lab switched from local to shared storage: drop the old per-host bind.
            inside = _run([*enter, "cat", "/proc/self/mountinfo"]).stdout
            if str(self.local_instances) in _parse_mount_points(inside):
                step(f"unbinding {self.local_instances}")
                _run([*enter, "umount", "--lazy", str(self.local_instances)])

    def _ensure_daemon(
        self,
        d: _Daemon,
        ns: Mapping[str, int | None],
        rec: HostRecord,
        p: _HostPaths,
        *,
        restart: bool,
        step: Callable[[str], None],
    ) -> None:
        pid, problem = self._daemon_problem(d, ns)
        if not problem and not restart:
            if d.name == "libvirtd" and _libvirt_answers(p.socket, timeout=5) is not None:
                problem = f"libvirtd pid {pid} does not answer on {p.socket}"
            elif d.name == "sshd" and _tcp_accepts(rec.address, SSH_PORT) is not None:
                problem = f"sshd pid {pid} does not accept connections on {rec.address}"
            else:
                return
        stopped = self._stop_daemon(d, step, problem or "configuration changed")
        quiet = stopped or not problem or problem.startswith(f"{d.name} not running (no pid file")
        step(f"starting {d.name}" + ("" if quiet else f" ({problem})"))
        netns_file = Path("/run/netns") / self.names.netns(rec.index)
        argv = [
            "nsenter",
            f"--mount={p.mount_ns}",
            f"--net={netns_file}",
            f"--uts={p.uts_ns}",
            "--",
            *d.argv,
        ]
        if d.name == "libvirtd":
            p.socket.unlink(missing_ok=True)
        with open(p.log / f"{d.name}.out", "ab") as out:
            try:
                rc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=_DAEMON_ENV,
                    start_new_session=True,
                    timeout=_DAEMON_START_TIMEOUT_S,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired as exc:
                raise LabError(reason=f"starting {d.name} did not return") from exc
        if rc != 0:
            raise LabError(
                reason=f"{d.name} failed to start (exit {rc}); see {p.log / (d.name + '.out')}"
            )
        self._wait_ready(d, ns, rec, p)

    def _wait_ready(
        self, d: _Daemon, ns: Mapping[str, int | None], rec: HostRecord, p: _HostPaths
    ) -> None:
        deadline = time.monotonic() + _DAEMON_START_TIMEOUT_S
        why = ""
        while time.monotonic() < deadline:
            _pid, problem = self._daemon_problem(d, ns)
            if problem:
                why = problem
            elif d.name == "libvirtd":
                why = _libvirt_answers(p.socket, timeout=5) or ""
            elif d.name == "sshd":
                why = _tcp_accepts(rec.address, SSH_PORT) or ""
            else:
                why = ""
            if not why:
                if d.name == "libvirtd":
                    # The first capabilities call loads (or probes, for seconds) QEMU's
                    # capabilities: pay it here rather than in the first Ansible task that asks,
                    # one host at a time, so that the others find the shared cache filled.
                    with self._caps_lock:
                        _run(["virsh", "-c", socket_uri(p.socket), "capabilities"], timeout=120)
                return
            time.sleep(0.05)
        raise LabError(
            reason=f"{d.name} not ready after {_DAEMON_START_TIMEOUT_S:g} s: {why}; see {p.log}"
        )

    def _stop_daemon(self, d: _Daemon, step: Callable[[str], None], why: str) -> bool:
        """Stop ``d`` if its pid file names it; True if a process was stopped."""
        pid = _read_pid(d.pidfile)
        stopped = False
        if pid is not None and _pid_alive(pid) and d.marker in _cmdline(pid):
            step(f"stopping {d.name} pid {pid} ({why})")
            _kill([pid], what=d.name)
            stopped = True
        d.pidfile.unlink(missing_ok=True)
        return stopped

    def _write_known_hosts(self, state: LabState) -> None:
        lines = []
        if state.spec.connection == "ssh":
            for rec in state.hosts:
                pub = self._paths(rec.index).host_key.with_suffix(".pub").read_text().split()
                lines.append(f"{rec.address} {pub[0]} {pub[1]}")
        _write_if_changed(self.known_hosts, "\n".join(lines) + "\n" if lines else "")

    # down -------------------------------------------------------------------------------------

    def _teardown_host(self, index: int, say: _Say) -> None:
        p = self._paths(index)
        name = p.name
        netns = self.names.netns(index)
        netns_file = Path("/run/netns") / netns
        ns = self._host_namespaces(index)
        if p.socket.exists() and _libvirt_answers(p.socket, timeout=5) is None:
            self._remove_domains(p, say)
        pids = _processes_in({k: [v] for k, v in ns.items() if v is not None})
        if pids:
            say(f"{name}: stopping {len(pids)} process(es)")
            _kill(pids, what=f"the processes of {name}")
        # Deleting the root side of a veth pair deletes both ends at once; `ip netns del` would
        # only start an asynchronous cleanup.
        for link in (self.names.veth(index), self.names.guest_veth(index)):
            _delete_link(link)
        for ns_file in (p.mount_ns, p.uts_ns):
            while str(ns_file) in _mount_points():
                _run(["umount", str(ns_file)])
            ns_file.unlink(missing_ok=True)
        if netns_file.exists():
            say(f"{name}: deleting network namespace {netns}")
            _run(["ip", "netns", "del", netns])
        if p.dir.exists():
            shutil.rmtree(p.dir)
            say(f"{name}: removed")

    def _remove_domains(self, p: _HostPaths, say: _Say) -> None:
        uri = socket_uri(p.socket)
        listed = _run(["virsh", "-c", uri, "list", "--all", "--name"], check=False)
        domains = [d.strip() for d in listed.stdout.splitlines() if d.strip()]
        if not domains:
            return
        say(f"{p.name}: destroying guests {', '.join(domains)}")
        # libvirt waits until a killed QEMU is reaped; destroy them side by side.
        with ThreadPoolExecutor(max_workers=min(8, len(domains))) as pool_exec:
            list(pool_exec.map(lambda dom: self._remove_domain(uri, dom), domains))

    def _remove_domain(self, uri: str, dom: str) -> None:
        _run(["virsh", "-c", uri, "destroy", dom], check=False)
        _run(["virsh", "-c", uri, "undefine", dom, *_UNDEFINE_FLAGS], check=False)

    def _teardown_lab(self, say: _Say) -> None:
        for bridge in (self.names.bridge, self.names.guest_bridge):
            if _delete_link(bridge):
                say(f"deleted bridge {bridge}")
        # SSH clients (an Ansible ControlPersist master) still holding the lab's key.
        key = str(self.private_key)
        clients = [
            pid
            for pid in _all_pids()
            if pid != os.getpid() and _comm(pid) == "ssh" and key in _cmdline(pid)
        ]
        if clients:
            _kill(clients, what="ssh clients of the lab")
        for _ in range(8):
            if str(self.ns_dir) not in _mount_points():
                break
            _run(["umount", str(self.ns_dir)])
        left = [
            m for m in _mount_points() if m == str(self.root) or m.startswith(str(self.root) + "/")
        ]
        if left:
            raise LabError(reason=f"still mounted, not removing {self.root}: {', '.join(left)}")
        with contextlib.suppress(OSError):
            if os.readlink(self.short_root) == str(self.root):
                self.short_root.unlink()
        with contextlib.suppress(OSError):
            SHORT_ROOTS.rmdir()
        for entry in _ROOT_ENTRIES:
            path = self.root / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        try:
            self.root.rmdir()
            say(f"lab {self.names.lab_id} removed")
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise LabError(reason=f"cannot remove {self.root}: {exc.strerror}") from exc


def _failures(results: Iterable[tuple[str, Future[None]]]) -> list[str]:
    """``"<host>: <why>"`` for every finished per-host job that raised."""
    out = []
    for name, fut in results:
        exc = fut.exception()
        if isinstance(exc, CloudctlError):
            out.append(f"{name}: {exc.kwargs.get('reason', exc.message)}")
        elif exc is not None:
            out.append(f"{name}: {type(exc).__name__}: {exc}")
    return out


def _inet_addresses(link: Mapping[str, Any]) -> set[str]:
    return {
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    }


def _delete_link(name: str) -> bool:
    """Delete the root-namespace link ``name`` if it exists; True if it did."""
    proc = _run(["ip", "link", "del", name], check=False)
    if proc.returncode == 0:
        return True
    if Path(f"/sys/class/net/{name}").exists():
        raise LabError(reason=f"cannot delete link {name}: {_last_line(proc)}")
    return False


def _keygen(path: Path, comment: str) -> None:
    """A new ed25519 key pair without passphrase at ``path`` and ``path.pub``."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _disable_ipv6(link: str) -> None:
    """No IPv6 on a root-side lab link: the machine never speaks on the lab's wires but IPv4."""
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1")
