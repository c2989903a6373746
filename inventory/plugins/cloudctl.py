"""Ansible inventory plugin ``cloudctl``: compute hosts and guests from cloudctl's SQL state.

It runs in cloudctl's venv and reads the state through cloudctl's own models, read-only: no
schema upgrade, no writes (SQLite connections are ``query_only``, PostgreSQL transactions
``READ ONLY``), and a missing or out-of-date schema is an error, never a migration.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cloudctl.db.models import FixedIP, Host, Instance
from cloudctl.db.session import Database, display_url
from cloudctl.domain.secrets import mask_passwords
from cloudctl.domain.states import PowerState, VmState
from cloudctl.errors import CloudctlError
from cloudctl.executor.inventory import host_vars
from cloudctl.services.hosts import host_target, is_up
from cloudctl.services.settings import load_settings

DOCUMENTATION = r"""
name: cloudctl
short_description: cloudctl's compute hosts and guests
description:
  - Reads cloudctl's SQL state (read-only) and lists its compute hosts, reachable the way
    cloudctl's executor reaches them, and its live guests, reachable on their fixed IPs.
  - "Groups: C(cloudctl_hosts), C(az_<zone>), C(label_<key>_<value>), C(cloudctl_guests),
    C(guests_on_<host>); names are sanitized to letters, digits and underscores."
  - Disabled or down hosts stay listed; C(cloudctl_status) and C(cloudctl_state) say so.
  - The inventory file must be named C(cloudctl.yml) or end in C(.cloudctl.yml) (or C(.yaml)).
options:
  plugin:
    description: The name of this plugin; must be C(cloudctl).
    required: true
    choices: ['cloudctl']
  db:
    description:
      - SQLAlchemy URL of the state database.
      - Default, as for the cloudctl CLI, C(CLOUDCTL_DB), then C(db) in the config file, then
        C(state.db) under the home directory.
    type: str
  home:
    description:
      - cloudctl's home directory (C(CLOUDCTL_HOME)); default C(~/.local/share/cloudctl).
    type: path
"""

EXAMPLES = r"""
# inventory/cloudctl.yml: the state the cloudctl CLI uses
plugin: cloudctl

# a team's PostgreSQL state
plugin: cloudctl
db: postgresql+psycopg://cloudctl@db.example.org/cloudctl
"""

HOSTS_GROUP = "cloudctl_hosts"
GUESTS_GROUP = "cloudctl_guests"
_GONE = (VmState.DELETED.value, VmState.SOFT_DELETED.value)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_]")


def safe_group(*parts: str) -> str:
    """A group name Ansible accepts without warnings: letters, digits and underscores."""
    return _UNSAFE_CHARS.sub("_", "_".join(parts))


def power_state_name(value: int) -> str:
    """Nova's power state as a word (``running``, ``shutdown``, ...)."""
    try:
        return PowerState(value).name.lower()
    except ValueError:
        return str(value)


def build(session: Session, now: datetime, down_after_s: int) -> dict[str, Any]:
    """The inventory as ``{"hosts": {name: vars}, "groups": {group: [names]}}`` (pure read)."""
    hosts: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {HOSTS_GROUP: [], GUESTS_GROUP: []}
    compute = list(session.scalars(select(Host).where(Host.deleted == 0).order_by(Host.name)))
    for host in compute:
        hv = host_vars(host_target(host, check_files=False))
        hv.update(
            cloudctl_uuid=host.uuid,
            cloudctl_availability_zone=host.availability_zone,
            cloudctl_labels=dict(host.labels or {}),
            cloudctl_status="enabled" if host.enabled else "disabled",
            cloudctl_disabled_reason=host.disabled_reason,
            cloudctl_state="up" if is_up(host, now, down_after_s) else "down",
        )
        hosts[host.name] = hv
        groups[HOSTS_GROUP].append(host.name)
        groups.setdefault(safe_group("az", host.availability_zone), []).append(host.name)
        for key, value in sorted((host.labels or {}).items()):
            groups.setdefault(safe_group("label", key, str(value)), []).append(host.name)
        groups.setdefault(safe_group("guests_on", host.name), [])

    guests = list(
        session.scalars(
            select(Instance)
            .where(Instance.deleted == 0, Instance.vm_state.not_in(_GONE))
            .order_by(Instance.name, Instance.uuid)
        )
    )
    addresses: dict[str, str] = {}
    for ip in session.scalars(
        select(FixedIP)
        .where(FixedIP.instance_uuid.in_([g.uuid for g in guests]), FixedIP.allocated)
        .order_by(FixedIP.id.desc())
    ):
        if ip.instance_uuid is not None:
            addresses[ip.instance_uuid] = ip.address  # the oldest allocation wins
    name_counts: dict[str, int] = {}
    for inst in guests:
        name_counts[inst.name] = name_counts.get(inst.name, 0) + 1
    for inst in guests:
        # Guest names are unique per project only; a clash (or a host's name) falls back to UUID.
        name = inst.name if name_counts[inst.name] == 1 and inst.name not in hosts else inst.uuid
        gv: dict[str, Any] = {
            "cloudctl_uuid": inst.uuid,
            "cloudctl_name": inst.name,
            "cloudctl_project": inst.project_id,
            "cloudctl_flavor": inst.flavor.name,
            "cloudctl_image": inst.image.name if inst.image is not None else None,
            "cloudctl_host": inst.host.name if inst.host is not None else None,
            "cloudctl_availability_zone": inst.availability_zone,
            "cloudctl_vm_state": inst.vm_state,
            "cloudctl_task_state": inst.task_state,
            "cloudctl_power_state": power_state_name(inst.power_state),
            "cloudctl_metadata": dict(inst.instance_metadata or {}),
        }
        if inst.uuid in addresses:
            gv["ansible_host"] = addresses[inst.uuid]
        hosts[name] = gv
        groups[GUESTS_GROUP].append(name)
        if inst.host is not None and inst.host.name in groups[HOSTS_GROUP]:
            groups[safe_group("guests_on", inst.host.name)].append(name)
    return {"hosts": hosts, "groups": groups}


@contextmanager
def read_only_session(db: Database) -> Iterator[Session]:
    """A session that cannot write; rolled back and closed at the end."""
    if db.is_sqlite:
        event.listen(db.engine, "connect", _query_only)
    session = db.session()
    try:
        if not db.is_sqlite:
            session.execute(text("SET TRANSACTION READ ONLY"))
        yield session
    finally:
        session.rollback()
        session.close()


def _query_only(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def _sqlite_has_table(path: str, table: str) -> bool:
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
    except sqlite3.Error as exc:
        raise AnsibleParserError(f"cloudctl: cannot read {path}: {exc}") from exc
    return row is not None


def open_state(db_url: str) -> Database:
    """cloudctl's database at ``db_url``, checked to exist at the schema this cloudctl expects.

    Errors name the database by its URL without the password.
    """
    shown = display_url(db_url)
    try:
        parsed = make_url(db_url)
    except Exception as exc:
        raise AnsibleParserError(f"cloudctl: {shown} is not a database URL") from exc
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not Path(path).is_file():
            raise AnsibleParserError(
                f"cloudctl: no state database at {shown} (register a host with cloudctl first)"
            )
        # cloudctl's engine switches a file to WAL on connect: look before it touches a stranger.
        if not _sqlite_has_table(path, "alembic_version"):
            raise AnsibleParserError(f"cloudctl: {shown} has no cloudctl schema")
    try:
        db = Database(db_url)
    except CloudctlError as exc:
        raise AnsibleParserError(f"cloudctl: {exc}") from exc
    try:
        current, head = db.current_revision(), db.head_revision()
    except Exception as exc:
        db.dispose()
        reason = mask_passwords(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise AnsibleParserError(f"cloudctl: cannot read {shown}: {reason}") from exc
    if current is None:
        db.dispose()
        raise AnsibleParserError(f"cloudctl: {shown} has no cloudctl schema")
    if current != head:
        db.dispose()
        raise AnsibleParserError(
            f"cloudctl: {shown} is at schema revision {current}, this cloudctl expects {head}"
            " (any cloudctl command upgrades it)"
        )
    return db


class InventoryModule(BaseInventoryPlugin):  # type: ignore[misc]
    """Compute hosts and guests from cloudctl's SQL state."""

    NAME = "cloudctl"

    def verify_file(self, path: str) -> bool:
        """Accept ``cloudctl.yml`` and ``*.cloudctl.yml`` (or ``.yaml``)."""
        name = Path(path).name
        ok = name in ("cloudctl.yml", "cloudctl.yaml") or name.endswith(
            (".cloudctl.yml", ".cloudctl.yaml")
        )
        return ok and bool(super().verify_file(path))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        """Read the state and fill ``inventory``."""
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        environ: Mapping[str, str] | None = None
        home = self.get_option("home")
        if home:
            environ = {**os.environ, "CLOUDCTL_HOME": str(home)}
        try:
            settings = load_settings(db_url=self.get_option("db") or None, environ=environ)
        except CloudctlError as exc:
            raise AnsibleParserError(f"cloudctl: {exc}") from exc
        db = open_state(settings.db_url)
        try:
            with read_only_session(db) as session:
                data = build(session, datetime.now(UTC), settings.service_down_time_s)
        except CloudctlError as exc:
            raise AnsibleParserError(f"cloudctl: {exc}") from exc
        finally:
            db.dispose()
        self._populate(data)

    def _populate(self, data: Mapping[str, Any]) -> None:
        for group in data["groups"]:
            self.inventory.add_group(group)
        for name, hv in data["hosts"].items():
            self.inventory.add_host(name)
            for key, value in hv.items():
                self.inventory.set_variable(name, key, value)
        for group, members in data["groups"].items():
            for name in members:
                self.inventory.add_child(group, name)
