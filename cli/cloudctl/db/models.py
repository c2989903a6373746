"""SQLAlchemy 2.0 typed models, after Nova's ``nova/db/main/models.py``.

Soft delete follows Nova: ``deleted`` is 0 for a live row and the row's id once deleted, so unique
constraints that include ``deleted`` let a name be reused after its owner was deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """Timezone-aware now; every timestamp cloudctl stores is UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC before storing."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to naive values read back."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every cloudctl table."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class TimestampMixin:
    """created_at / updated_at, as Nova's TimestampMixin."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), default=None, onupdate=utcnow
    )


class SoftDeleteMixin:
    """deleted_at / deleted (0 = live, id = deleted), as Nova's SoftDeleteMixin."""

    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    deleted: Mapped[int] = mapped_column(Integer, default=0, index=True)


class Host(TimestampMixin, SoftDeleteMixin, Base):
    """A compute host (Nova's compute_nodes + services rows in one)."""

    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("name", "deleted", name="uq_hosts_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    # How to reach it.
    connection: Mapped[str] = mapped_column(String(16), default="local")
    address: Mapped[str | None] = mapped_column(String(255), default=None)
    ssh_user: Mapped[str | None] = mapped_column(String(64), default=None)
    ssh_port: Mapped[int | None] = mapped_column(Integer, default=None)
    ssh_private_key: Mapped[str | None] = mapped_column(String(1024), default=None)
    ssh_common_args: Mapped[str | None] = mapped_column(String(1024), default=None)
    python_interpreter: Mapped[str | None] = mapped_column(String(1024), default=None)
    libvirt_uri: Mapped[str] = mapped_column(String(1024))
    instances_path: Mapped[str] = mapped_column(String(1024))
    bridge: Mapped[str | None] = mapped_column(String(64), default=None)
    # Hypervisor settings (Nova's [libvirt] virt_type / cpu_mode, per host).
    virt_type: Mapped[str] = mapped_column(String(16), default="kvm")
    cpu_mode: Mapped[str] = mapped_column(String(32), default="none")
    cpu_model: Mapped[str | None] = mapped_column(String(64), default=None)
    # Placement attributes.
    availability_zone: Mapped[str] = mapped_column(String(255), default="nova")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(255), default=None)
    # Capacity as discovered by the host-facts module.
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    local_gb: Mapped[int] = mapped_column(Integer, default=0)
    disk_available_gb: Mapped[int | None] = mapped_column(Integer, default=None)
    cpu_allocation_ratio: Mapped[float] = mapped_column(Float, default=4.0)
    ram_allocation_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    disk_allocation_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    reserved_host_cpus: Mapped[int] = mapped_column(Integer, default=0)
    reserved_host_memory_mb: Mapped[int] = mapped_column(Integer, default=512)
    reserved_host_disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    hypervisor_type: Mapped[str | None] = mapped_column(String(64), default=None)
    hypervisor_version: Mapped[int | None] = mapped_column(Integer, default=None)
    libvirt_version: Mapped[int | None] = mapped_column(Integer, default=None)
    hypervisor_hostname: Mapped[str | None] = mapped_column(String(255), default=None)
    host_uuid: Mapped[str | None] = mapped_column(String(36), default=None)
    cpu_info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Ledger generation: bumped by every claim/release, for compare-and-swap.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    # Builds that failed here since the last one that succeeded (BuildFailureWeigher).
    failed_builds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The `cloudctl lab` that made this host (its id); None for hosts added by hand.
    lab_id: Mapped[str | None] = mapped_column(String(64), default=None)


class Flavor(TimestampMixin, SoftDeleteMixin, Base):
    """A hardware template."""

    __tablename__ = "flavors"
    __table_args__ = (UniqueConstraint("name", "deleted", name="uq_flavors_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flavorid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    root_gb: Mapped[int] = mapped_column(Integer)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, default=0)
    swap_mb: Mapped[int] = mapped_column(Integer, default=0)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    extra_specs: Mapped[list[FlavorExtraSpec]] = relationship(
        back_populates="flavor", cascade="all, delete-orphan", lazy="selectin"
    )

    def specs(self) -> dict[str, str]:
        """Extra specs as a plain dict."""
        return {s.key: s.value for s in self.extra_specs}


class FlavorExtraSpec(TimestampMixin, Base):
    """A key/value on a flavor (aggregate matching, cpu policy, ...)."""

    __tablename__ = "flavor_extra_specs"
    __table_args__ = (UniqueConstraint("flavor_id", "key", name="uq_flavor_extra_specs_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flavor_id: Mapped[int] = mapped_column(ForeignKey("flavors.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))
    flavor: Mapped[Flavor] = relationship(back_populates="extra_specs")


class Image(TimestampMixin, SoftDeleteMixin, Base):
    """A bootable image: a disk file and/or a kernel + initrd, kept on the controller."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("name", "deleted", name="uq_images_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default="active")
    disk_format: Mapped[str | None] = mapped_column(String(16), default=None)
    path: Mapped[str | None] = mapped_column(String(1024), default=None)
    checksum: Mapped[str | None] = mapped_column(String(64), default=None)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    virtual_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    kernel_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    kernel_checksum: Mapped[str | None] = mapped_column(String(64), default=None)
    initrd_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    initrd_checksum: Mapped[str | None] = mapped_column(String(64), default=None)
    cmdline: Mapped[str | None] = mapped_column(String(1024), default=None)
    min_ram_mb: Mapped[int] = mapped_column(Integer, default=0)
    min_disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    properties: Mapped[list[ImageProperty]] = relationship(
        back_populates="image", cascade="all, delete-orphan", lazy="selectin"
    )

    def props(self) -> dict[str, str]:
        """Image properties as a plain dict."""
        return {p.key: p.value for p in self.properties}


class ImageProperty(TimestampMixin, Base):
    """A key/value on an image (architecture, hypervisor_type, ...)."""

    __tablename__ = "image_properties"
    __table_args__ = (UniqueConstraint("image_id", "key", name="uq_image_properties_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(1024))
    image: Mapped[Image] = relationship(back_populates="properties")


class KeyPair(TimestampMixin, SoftDeleteMixin, Base):
    """An SSH public key injected through the config drive."""

    __tablename__ = "key_pairs"
    __table_args__ = (UniqueConstraint("user_id", "name", "deleted", name="uq_key_pairs_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(255))
    public_key: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(32), default="ssh")


class Instance(TimestampMixin, SoftDeleteMixin, Base):
    """A guest. Resources are copied from the flavor at boot (Nova keeps them in instance_extra)."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("project_id", "name", "deleted", name="uq_instances_name"),
        Index("ix_instances_host_deleted", "host_id", "deleted"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    flavor_id: Mapped[int] = mapped_column(ForeignKey("flavors.id"))
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), default=None)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), default=None)
    domain_name: Mapped[str] = mapped_column(String(255))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    root_gb: Mapped[int] = mapped_column(Integer)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, default=0)
    swap_mb: Mapped[int] = mapped_column(Integer, default=0)
    vm_state: Mapped[str] = mapped_column(String(32))
    task_state: Mapped[str | None] = mapped_column(String(32), default=None)
    # The command lease (``command_leases.uuid``) whose command set ``task_state``: Nova's
    # expected_task_state made an owner, so any controller can tell a dead command's task.
    task_owner: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    power_state: Mapped[int] = mapped_column(Integer, default=0)
    availability_zone: Mapped[str | None] = mapped_column(String(255), default=None)
    key_name: Mapped[str | None] = mapped_column(String(255), default=None)
    user_data: Mapped[str | None] = mapped_column(Text, default=None)
    instance_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    reservation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # Nova's request_specs: what the user asked of the scheduler, kept to reschedule and move.
    request_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_reason: Mapped[str | None] = mapped_column(String(255), default=None)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    flavor: Mapped[Flavor] = relationship(lazy="joined")
    image: Mapped[Image | None] = relationship(lazy="joined")
    host: Mapped[Host | None] = relationship(lazy="joined")


class Network(TimestampMixin, SoftDeleteMixin, Base):
    """A flat network (Nova's flat mode): a bridge on every host and a subnet to hand out."""

    __tablename__ = "networks"
    __table_args__ = (UniqueConstraint("name", "deleted", name="uq_networks_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    cidr: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str | None] = mapped_column(String(64), default=None)
    dns: Mapped[list[Any]] = mapped_column(JSON, default=list)
    kind: Mapped[str] = mapped_column(String(16), default="bridge")
    bridge: Mapped[str] = mapped_column(String(64))


class FixedIP(TimestampMixin, Base):
    """An address of a network, with the MAC of the NIC it is bound to while allocated."""

    __tablename__ = "fixed_ips"
    __table_args__ = (UniqueConstraint("network_id", "address", name="uq_fixed_ips_address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"))
    address: Mapped[str] = mapped_column(String(64))
    instance_uuid: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    mac: Mapped[str | None] = mapped_column(String(17), default=None)
    allocated: Mapped[bool] = mapped_column(Boolean, default=False)
    network: Mapped[Network] = relationship(lazy="joined")


class Allocation(Base):
    """The ledger: an amount of one resource class on one host, held by a consumer."""

    __tablename__ = "allocations"
    __table_args__ = (
        UniqueConstraint("host_id", "consumer_uuid", "resource_class", name="uq_allocations"),
        Index("ix_allocations_consumer", "consumer_uuid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    consumer_uuid: Mapped[str] = mapped_column(String(36))
    resource_class: Mapped[str] = mapped_column(String(32))
    used: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InstanceAction(Base):
    """A user-visible operation on an instance (create, delete, stop, ...)."""

    __tablename__ = "instance_actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finish_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    events: Mapped[list[InstanceActionEvent]] = relationship(
        back_populates="action_row",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="InstanceActionEvent.id",
    )


class InstanceActionEvent(Base):
    """One step of an action (schedule, networking, spawn, ...) with its result."""

    __tablename__ = "instance_action_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("instance_actions.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(64))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finish_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    result: Mapped[str | None] = mapped_column(String(32), default=None)
    host: Mapped[str | None] = mapped_column(String(255), default=None)
    details: Mapped[str | None] = mapped_column(Text, default=None)
    action_row: Mapped[InstanceAction] = relationship(back_populates="events")


class HostEvent(Base):
    """Something that happened to a host rather than to one instance (reconcile, up/down)."""

    __tablename__ = "host_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    event: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InstanceFault(Base):
    """Why an instance went to ERROR."""

    __tablename__ = "instance_faults"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    code: Mapped[int] = mapped_column(Integer, default=500)
    message: Mapped[str] = mapped_column(String(255))
    details: Mapped[str | None] = mapped_column(Text, default=None)
    host: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Migration(TimestampMixin, Base):
    """A move of an instance between hosts (cold, live, resize, evacuation)."""

    __tablename__ = "migrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    source_host: Mapped[str | None] = mapped_column(String(255), default=None)
    dest_host: Mapped[str | None] = mapped_column(String(255), default=None)
    migration_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    old_flavor_id: Mapped[int | None] = mapped_column(ForeignKey("flavors.id"), default=None)
    new_flavor_id: Mapped[int | None] = mapped_column(ForeignKey("flavors.id"), default=None)
    memory_total: Mapped[int | None] = mapped_column(BigInteger, default=None)
    memory_processed: Mapped[int | None] = mapped_column(BigInteger, default=None)
    disk_total: Mapped[int | None] = mapped_column(BigInteger, default=None)
    disk_processed: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Nova keeps these in the instance's system_metadata and migrate_data; they decide how a
    # revert, a confirm or a rollback undoes the move.
    old_vm_state: Mapped[str | None] = mapped_column(String(32), default=None)
    shared_storage: Mapped[bool | None] = mapped_column(Boolean, default=None)
    block_migration: Mapped[bool | None] = mapped_column(Boolean, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class Snapshot(TimestampMixin, SoftDeleteMixin, Base):
    """A libvirt snapshot of an instance."""

    __tablename__ = "snapshots"
    __table_args__ = (
        UniqueConstraint("instance_uuid", "name", "deleted", name="uq_snapshots_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16), default="internal")
    status: Mapped[str] = mapped_column(String(32), default="creating")
    description: Mapped[str | None] = mapped_column(String(1024), default=None)
    # Where it lives: snapshots stay on the host that took them.
    host: Mapped[str | None] = mapped_column(String(255), default=None)
    # The overlay an external (disk-only) snapshot created; the newest one is the root disk's
    # active file until the snapshot is deleted (see domain_spec).
    file: Mapped[str | None] = mapped_column(String(1024), default=None)
    # libvirt's record of the domain state it froze: running, shutoff, paused, disk-snapshot.
    state: Mapped[str | None] = mapped_column(String(32), default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    quiesced: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, default=None)


class ServerGroup(TimestampMixin, SoftDeleteMixin, Base):
    """An (anti-)affinity group."""

    __tablename__ = "server_groups"
    __table_args__ = (
        UniqueConstraint("project_id", "name", "deleted", name="uq_server_groups_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    policy: Mapped[str] = mapped_column(String(32))
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    members: Mapped[list[ServerGroupMember]] = relationship(
        back_populates="group", cascade="all, delete-orphan", lazy="selectin"
    )


class ServerGroupMember(TimestampMixin, Base):
    """An instance's membership of a server group."""

    __tablename__ = "server_group_members"
    __table_args__ = (UniqueConstraint("group_id", "instance_uuid", name="uq_sg_members"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("server_groups.id", ondelete="CASCADE"))
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    group: Mapped[ServerGroup] = relationship(back_populates="members")


class Quota(TimestampMixin, Base):
    """A per-project hard limit on a resource (instances, cores, ram)."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("project_id", "resource", name="uq_quotas"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(64))
    hard_limit: Mapped[int] = mapped_column(Integer)


class StateLock(Base):
    """The state lock of ``cloudctl apply`` (and of ``cloudctl state lock``, held by hand).

    A row per lock name; holding the lock is having inserted the row. ``pid`` 0 is a lock taken
    by a person, held until ``cloudctl state unlock``. A process's lock is a lease: its holder
    renews ``expires_at`` while it lives, and the lock is stale only once that has passed.
    """

    __tablename__ = "state_locks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    holder: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    info: Mapped[str | None] = mapped_column(Text, default=None)
    # The holder's identity beyond its pid (PID namespaces, reboots) and its lease.
    boot_id: Mapped[str | None] = mapped_column(String(64), default=None)
    pid_ns: Mapped[str | None] = mapped_column(String(64), default=None)
    start_time: Mapped[int | None] = mapped_column(BigInteger, default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: None: held by a person, never expires.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ApplyRun(Base):
    """One ``cloudctl apply``: the journal's head (running, done, failed or interrupted)."""

    __tablename__ = "apply_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    status: Mapped[str] = mapped_column(String(16), default="running")
    plan_fingerprint: Mapped[str | None] = mapped_column(String(128), default=None)
    holder: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(255))
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # The command lease of the apply's process: the run is dead once that lease is gone or
    # expired, whichever machine ran it.
    lease_uuid: Mapped[str | None] = mapped_column(String(36), default=None)


class ApplyStep(Base):
    """One step of an apply, recorded before and after it runs (the journal's lines)."""

    __tablename__ = "apply_steps"
    __table_args__ = (UniqueConstraint("apply_uuid", "seq", name="uq_apply_steps_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    apply_uuid: Mapped[str] = mapped_column(String(36), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    instance_uuids: Mapped[list[Any]] = mapped_column(JSON, default=list)


class ManagedResource(Base):
    """Ownership: a resource that ``cloudctl apply`` created from an estate's files.

    ``apply --prune`` deletes only what is recorded here; ``uuid`` is the object's UUID when it
    has one (instances, images, groups), else None.
    """

    __tablename__ = "managed_resources"
    __table_args__ = (UniqueConstraint("kind", "name", "estate", name="uq_managed_resources"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    uuid: Mapped[str | None] = mapped_column(String(36), default=None)
    estate: Mapped[str] = mapped_column(String(255), default="default")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    apply_uuid: Mapped[str | None] = mapped_column(String(36), default=None)


class CommandLease(Base):
    """A running command's lease: who it is, what it holds, and a heartbeat.

    Every command that changes a guest holds one (``services/leases.py``). Its instances name it
    in ``instances.task_owner``. The holder renews ``expires_at`` every few seconds, also while
    Ansible runs; once ``expires_at`` has passed, any controller may take the lease over
    (``taken_over_by``) and settle what the command left by what the hosts show.
    """

    __tablename__ = "command_leases"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    request_id: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(String(255))
    holder: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    boot_id: Mapped[str] = mapped_column(String(64))
    pid_ns: Mapped[str] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[int] = mapped_column(BigInteger)
    lease_s: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    #: What it holds besides its instances' rows: {"hosts": [...], "migrations": [...], ...}.
    holds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The lease of the controller settling what this dead command left.
    taken_over_by: Mapped[str | None] = mapped_column(String(36), default=None)
