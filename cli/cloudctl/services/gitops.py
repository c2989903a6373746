"""``cloudctl plan`` and ``cloudctl apply``: desired-state files made real, Terraform style.

plan: read and validate the files (:mod:`cloudctl.services.desired`), snapshot the books
(:func:`snapshot`), diff them (:func:`cloudctl.state.plan.diff`, pure), place every server to
create or move with the scheduler's placement session (the same filters and weighers as
``boot``), and compute each host's capacity before and after. The plan carries a fingerprint
of everything it was computed from (the ledger's generations, the instances' states, the
catalog, the files); apply refuses a plan whose fingerprint no longer matches.

apply: under the state lock, with a journal of its steps in SQL, in dependency order
(hosts, flavors, images, key pairs, groups, quotas, then servers: deletes, creates, updates,
moves, replaces). Server creates are claimed on their planned hosts request by request and
built in one play over every host; power changes are one play per action. An apply killed at
any point is resumed by the next one: the servers its unfinished create step claimed but never
finished building are deleted first, then the plan is made afresh.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudctl import ledger
from cloudctl.audit import HostSeen
from cloudctl.db.models import (
    Flavor,
    Host,
    Image,
    Instance,
    KeyPair,
    Network,
    ServerGroup,
    ServerGroupMember,
)
from cloudctl.errors import InvalidInput, NoValidHost, OperationFailed
from cloudctl.scheduler.host_state import GroupState, HostState, RequestSpec
from cloudctl.scheduler.session import PlacementSession
from cloudctl.services import (
    actions,
    desired,
    flavors,
    hosts,
    images,
    keypairs,
    leases,
    network,
    quotas,
    reconcile,
    server_groups,
    state_store,
)
from cloudctl.services.compute import tasks
from cloudctl.services.compute.boot import (
    BootRequest,
    boot,
    build_instances,
    create_and_claim,
    host_states,
    make_scheduler,
)
from cloudctl.services.compute.delete import delete as delete_servers
from cloudctl.services.compute.live_migrate import live_migrate
from cloudctl.services.compute.migrate import confirm_resize, resize
from cloudctl.services.compute.migrate import migrate as cold_migrate
from cloudctl.services.compute.power import power
from cloudctl.services.compute.rebuild import rebuild
from cloudctl.services.context import Context
from cloudctl.state import Estate, FlavorSpec, ImageSpec, InvalidEstate
from cloudctl.state.loader import no_cyclic_gc
from cloudctl.state.plan import (
    Change,
    Current,
    CurrentServer,
    Diff,
    ServerIntent,
    capacity,
    flavor_fields,
)
from cloudctl.state.plan import diff as diff_estate
from cloudctl.state.plan import summary as summarise

ESTATE = "default"
PLAN_VERSION = 1


@dataclass(frozen=True)
class Placed:
    """Where a server to create (or move) goes, and why."""

    host: str
    weights: tuple[tuple[str, float], ...]
    alternates: tuple[str, ...]


@dataclass
class Plan:
    """A plan as shown and as saved (``--out``)."""

    diff: Diff
    placements: dict[str, Placed]
    capacity: list[Any]
    fingerprint: str
    files: list[str]
    errors: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        """Whether applying would do anything."""
        return self.diff.has_changes

    def view(self) -> dict[str, Any]:
        """JSON-friendly (the saved plan file too)."""
        return {
            "version": PLAN_VERSION,
            "fingerprint": self.fingerprint,
            "files": self.files,
            "summary": summarise(self.diff.changes),
            "changes": [
                {
                    "kind": c.kind,
                    "name": c.name,
                    "action": c.action,
                    "reason": c.reason,
                    "impact": c.impact,
                    "fields": [{"field": f.field, "old": f.old, "new": f.new} for f in c.fields],
                    "uuid": c.uuid,
                    "from_host": c.from_host,
                    "placement": asdict(self.placements[c.name])
                    if c.kind == "Server" and c.name in self.placements
                    else None,
                }
                for c in self.diff.changes
            ],
            "drift": [asdict(d) | {"category": d.category} for d in self.diff.drift],
            "unmanaged": [{"kind": k, "name": n} for k, n in self.diff.unmanaged],
            "undeclared": [{"kind": k, "name": n} for k, n in self.diff.undeclared],
            "capacity": [asdict(h) for h in self.capacity],
            "errors": self.errors,
        }


# -- the books --------------------------------------------------------------------------------
def snapshot(session: Session, ctx: Context, owned: Mapping[str, Any]) -> Current:
    """Everything the diff compares the files with, in one read (``owned``: the estate's)."""
    project, user = ctx.settings.project_id, ctx.settings.user_id
    # Plain columns, one query per table: loading ten thousand instances as ORM objects (and
    # their joined flavor, image and host) costs seconds.
    groups = session.execute(
        select(ServerGroup.name, ServerGroup.policy, ServerGroup.rules)
        .where(ServerGroup.deleted == 0, ServerGroup.project_id == project)
        .order_by(ServerGroup.id)
    ).all()
    group_of: dict[str, str] = dict(
        session.execute(
            select(ServerGroupMember.instance_uuid, ServerGroup.name)
            .join(ServerGroup, ServerGroupMember.group_id == ServerGroup.id)
            .where(ServerGroup.deleted == 0, ServerGroup.project_id == project)
            .order_by(ServerGroup.id, ServerGroupMember.id)
        ).all()
    )
    servers = {}
    for (
        uuid,
        name,
        flavor,
        image,
        host,
        vm_state,
        task_state,
        key,
        az,
        user_data,
        metadata,
    ) in session.execute(
        select(
            Instance.uuid,
            Instance.name,
            Flavor.name,
            Image.name,
            Host.name,
            Instance.vm_state,
            Instance.task_state,
            Instance.key_name,
            Instance.availability_zone,
            Instance.user_data,
            Instance.instance_metadata,
        )
        .join(Flavor, Instance.flavor_id == Flavor.id)
        .outerjoin(Image, Instance.image_id == Image.id)
        .outerjoin(Host, Instance.host_id == Host.id)
        .where(Instance.deleted == 0, Instance.project_id == project)
        .order_by(Instance.id)
    ):
        servers[name] = CurrentServer(
            uuid=uuid,
            name=name,
            flavor=flavor,
            image=image,
            host=host,
            vm_state=vm_state,
            task_state=task_state,
            key=key,
            group=group_of.get(uuid),
            availability_zone=az,
            user_data=user_data,
            metadata=dict(metadata or {}),
        )
    return Current(
        flavors={
            f.name: {
                "vcpus": f.vcpus,
                "ram_mb": f.memory_mb,
                "disk_gb": f.root_gb,
                "ephemeral_gb": f.ephemeral_gb,
                "swap_mb": f.swap_mb,
                "extra_specs": f.specs(),
            }
            for f in session.scalars(select(Flavor).where(Flavor.deleted == 0))
        },
        images={
            i.name: {
                "min_ram_mb": i.min_ram_mb,
                "min_disk_gb": i.min_disk_gb,
                **({"properties": i.props()} if i.props() else {}),
            }
            for i in session.scalars(select(Image).where(Image.deleted == 0))
        },
        networks={
            n.name: {
                "cidr": n.cidr,
                "gateway": n.gateway,
                "dns": list(n.dns or []),
                "bridge": n.bridge,
            }
            for n in session.scalars(select(Network).where(Network.deleted == 0))
        },
        keypairs={
            k.name: k.public_key.strip()
            for k in session.scalars(
                select(KeyPair).where(KeyPair.deleted == 0, KeyPair.user_id == user)
            )
        },
        server_groups={
            name: {"policy": policy, "max_per_host": (rules or {}).get("max_server_per_host")}
            for name, policy, rules in groups
        },
        quotas={
            project: {
                ("ram_mb" if k == "ram" else k): v
                for k, v in quotas.limits(session, ctx.settings, project).items()
            }
        },
        hosts={
            name: {
                "availability_zone": az,
                "labels": dict(labels or {}),
                "enabled": enabled,
                "disabled_reason": reason,
            }
            for name, az, labels, enabled, reason in session.execute(
                select(
                    Host.name,
                    Host.availability_zone,
                    Host.labels,
                    Host.enabled,
                    Host.disabled_reason,
                )
                .where(Host.deleted == 0)
                .order_by(Host.name)
            )
        },
        servers=servers,
        owned={kind: frozenset(names) for kind, names in owned.items()},
    )


def fingerprint(session: Session, estate_digest: str) -> str:
    """What a plan was computed from: ledger generations, instances, catalog, files."""
    h = hashlib.sha256(estate_digest.encode())
    # One update per query, not per row: the same digest (SHA-256 of the concatenation).
    hosts_ = session.execute(select(Host.name, Host.generation, Host.enabled).order_by(Host.name))
    h.update("".join([repr(tuple(row)) for row in hosts_]).encode())
    instances = session.execute(
        select(
            Instance.uuid,
            Instance.name,
            Instance.vm_state,
            Instance.task_state,
            Instance.host_id,
            Instance.flavor_id,
            Instance.image_id,
            Instance.deleted,
        ).order_by(Instance.id)
    )
    h.update("".join([repr(tuple(row)) for row in instances]).encode())
    for model in (Flavor, Image, KeyPair, ServerGroup, Network):
        for name, deleted in session.execute(select(model.name, model.deleted)):
            h.update(repr((model.__name__, name, deleted)).encode())
    return h.hexdigest()[:32]


def _digest(files: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, text in files:
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


# -- plan -------------------------------------------------------------------------------------
def load(ctx: Context, path: str | Path) -> tuple[Estate, desired.EstateFiles]:
    """Read and validate the files; any problem stops here (exit 2, nothing changed).

    The path is made absolute first: the files' names are in the plan's fingerprint, and a
    saved plan is checked again from its absolute source path.
    """
    files = desired.read_files(Path(path).resolve())
    estate, problems = desired.validate_files(ctx, files)
    if problems:
        raise InvalidEstate(problems)
    return estate, files


def make_plan(
    ctx: Context, path: str | Path, *, prune: bool = False, refresh: bool = False
) -> Plan:
    """Validate, diff, place, and measure capacity before and after.

    ``refresh`` asks the hosts first (one survey play, as reconcile's) so the plan shows drift:
    domains missing, stopped or running against the books, and domains cloudctl does not know.
    """
    estate, files = load(ctx, path)  # bad files stop here, before any host is asked
    seen = reconcile.survey(ctx).seen if refresh else None
    with no_cyclic_gc():
        return _make_plan(ctx, estate, files, prune, seen)


def _observed(
    session: Session, seen: Sequence[HostSeen]
) -> tuple[dict[str, str], dict[str, tuple[int, int]], tuple[tuple[str, str], ...]]:
    """uuid -> libvirt state (``absent`` when its reachable host has no such domain), uuid ->
    (vCPUs, memory MiB) of the domains that said, and the domains no instance row knows."""
    answered = {s.host: s for s in seen if s.reachable}
    found = {d.uuid: d.state for s in answered.values() for d in s.domains}
    sizes = {
        d.uuid: (d.vcpus, d.memory_mb)
        for s in answered.values()
        for d in s.domains
        if d.vcpus is not None and d.memory_mb is not None
    }
    observed = {}
    observed_size = {}
    known = set()
    for uuid, host, deleted in session.execute(
        select(Instance.uuid, Host.name, Instance.deleted).outerjoin(
            Host, Host.id == Instance.host_id
        )
    ):
        known.add(uuid)
        if not deleted and host in answered:
            observed[uuid] = found.get(uuid, "absent")
            if uuid in sizes:
                observed_size[uuid] = sizes[uuid]
    unknown = tuple(
        (s.host, d.name) for s in answered.values() for d in s.domains if d.uuid not in known
    )
    return observed, observed_size, unknown


def _make_plan(
    ctx: Context,
    estate: Estate,
    files: Sequence[tuple[str, str]],
    prune: bool,
    seen: Sequence[HostSeen] | None,
) -> Plan:
    owned = state_store.owned(ctx, ESTATE)
    with ctx.db.unit_of_work() as session:
        current = snapshot(session, ctx, owned)
        if seen is not None:
            observed, sizes, unknown = _observed(session, seen)
            current = replace(
                current, observed=observed, observed_size=sizes, unknown_domains=unknown
            )
        diff = diff_estate(estate, current, prune=prune)
        fp = fingerprint(session, _digest(files))
        rows = hosts.list_hosts(session)
        states = host_states(session, rows, ctx.clock(), ctx.settings.service_down_time_s)
        totals = {
            h.name: {"VCPU": h.vcpus, "MEMORY_MB": h.memory_mb, "DISK_GB": h.local_gb} for h in rows
        }
        usage = {
            s.name: {
                "VCPU": s.vcpus_used,
                "MEMORY_MB": s.memory_mb_used,
                "DISK_GB": s.disk_gb_used,
            }
            for s in states
        }
        placements, errors = _place(ctx, session, estate, current, diff, states)
    moves: list[tuple[str | None, str | None, Mapping[str, int]]] = []
    for c in diff.changes:
        if c.kind != "Server":
            continue
        res = _resources(estate, current, c)
        if c.action == "create" and c.name in placements:
            moves.append((None, placements[c.name].host, res))
        elif c.action == "delete":
            old = current.servers[c.name]
            moves.append((old.host, None, _server_resources(current, old.flavor)))
        elif c.action == "move" and c.name in placements:
            old = current.servers[c.name]
            moves.append((old.host, None, _server_resources(current, old.flavor)))
            moves.append((None, placements[c.name].host, res))
    return Plan(
        diff=diff,
        placements=placements,
        capacity=capacity(totals, usage, moves),
        fingerprint=fp,
        files=[name for name, _ in files],
        errors=errors,
    )


def _flavor_values(estate: Estate, current: Current, name: str) -> Mapping[str, Any]:
    doc = estate.flavors.get(name)
    return flavor_fields(doc.spec) if doc is not None else current.flavors[name]


def _flavor_resources(f: Mapping[str, Any]) -> dict[str, int]:
    """What one server of the flavor ``f`` (plan field names) holds in the ledger."""
    return ledger.resources_for(
        int(f.get("vcpus", 0)),
        int(f.get("ram_mb", 0)),
        int(f.get("disk_gb", 0)),
        int(f.get("ephemeral_gb", 0)),
        int(f.get("swap_mb", 0)),
    )


def _server_resources(current: Current, flavor: str) -> dict[str, int]:
    return _flavor_resources(current.flavors.get(flavor, {}))


def _resources(estate: Estate, current: Current, c: Change) -> dict[str, int]:
    if c.intent is None:
        return {}
    return _flavor_resources(_flavor_values(estate, current, c.intent.flavor))


def _place(
    ctx: Context,
    session: Session,
    estate: Estate,
    current: Current,
    diff: Diff,
    states: list[HostState],
) -> tuple[dict[str, Placed], list[str]]:
    """Place creates and moves with the placement session, Server document by document."""
    todo = [c for c in diff.changes if c.kind == "Server" and c.action in ("create", "move")]
    if not todo:
        return {}, []
    planned_host = {s.name: s.host for s in current.servers.values() if s.host}
    for c in diff.changes:  # a server leaving frees its host for the others
        if c.kind == "Server" and c.action == "delete":
            planned_host.pop(c.name, None)
    group_states: dict[str, GroupState] = {}
    session_ = PlacementSession(make_scheduler(ctx), states)
    by_name = {s.name: s for s in states}
    for c in diff.changes:
        if c.kind == "Server" and c.action == "delete":
            old = current.servers[c.name]
            if old.host in by_name:
                _release(by_name[old.host], _server_resources(current, old.flavor))
                session_.host_changed(old.host)
    out: dict[str, Placed] = {}
    errors: list[str] = []
    for c in todo:
        intent = c.intent
        assert intent is not None
        if c.action == "move" and not _moves_host(c):
            continue  # a resize in place (allow_resize_to_same_host) or power/metadata only
        spec = _request_spec(session, ctx, estate, current, intent, group_states, planned_host)
        if c.action == "move" and c.from_host:
            spec = replace(spec, ignore_hosts=frozenset({c.from_host}))
        choices = [intent.host_name] if intent.placement in ("pinned", "preferred") else []
        picked = None
        for forced in [*choices, None]:
            if forced is None and intent.placement == "pinned":
                break
            try:
                [picked] = session_.select(replace(spec, force_host=forced), 1)
                break
            except NoValidHost as exc:
                if forced is None or intent.placement == "pinned":
                    errors.append(f"{c.name}: {exc}")
        if picked is None:
            if intent.placement == "pinned" and not any(e.startswith(c.name) for e in errors):
                errors.append(f"{c.name}: pinned host {intent.host_name} cannot take it")
            continue
        planned_host[c.name] = picked.host.name
        top = sorted(picked.weighed, key=lambda w: -w.weight)[:3]
        out[c.name] = Placed(
            host=picked.host.name,
            weights=tuple((w.host, round(w.weight, 4)) for w in top),
            alternates=tuple(picked.alternates),
        )
    return out, errors


def _moves_host(c: Change) -> bool:
    return any(f.field in ("host", "flavor", "availability_zone") for f in c.fields)


def _release(state: HostState, res: Mapping[str, int]) -> None:
    state.vcpus_used -= res.get("VCPU", 0)
    state.memory_mb_used -= res.get("MEMORY_MB", 0)
    state.disk_gb_used -= res.get("DISK_GB", 0)
    state.num_instances = max(0, state.num_instances - 1)


def _request_spec(
    session: Session,
    ctx: Context,
    estate: Estate,
    current: Current,
    intent: ServerIntent,
    group_states: dict[str, GroupState],
    planned_host: Mapping[str, str],
) -> RequestSpec:
    f = _flavor_values(estate, current, intent.flavor)
    res = _flavor_resources(f)
    image_doc = estate.images.get(intent.image)
    if image_doc is not None:
        props = dict(image_doc.spec.properties)
    else:
        props = images.get_image(session, intent.image).props()
    group = None
    if intent.group:
        group = group_states.get(intent.group)
        if group is None:
            doc = estate.server_groups.get(intent.group)
            if intent.group in current.server_groups:
                group = _group_state(session, ctx.settings.project_id, intent.group)
            else:
                assert doc is not None
                group = GroupState(intent.group, doc.spec.policy, doc.spec.max_per_host, Counter())
            group_states[intent.group] = group
    hinted = {
        key: frozenset(planned_host[n] for n in names if n in planned_host)
        for key, names in intent.hints.items()
    }
    return RequestSpec(
        vcpus=res[ledger.VCPU],
        memory_mb=res[ledger.MEMORY_MB],
        disk_gb=res[ledger.DISK_GB],
        availability_zone=intent.availability_zone,
        num_instances=1,
        flavor_name=intent.flavor,
        flavor_extra_specs=dict(f.get("extra_specs") or {}),
        image_properties=props,
        group=group,
        same_host=hinted.get("same_host", frozenset()),
        different_host=hinted.get("different_host", frozenset()),
    )


def _group_state(session: Session, project_id: str, name: str) -> GroupState:
    """:func:`server_groups.group_state` with the members per host counted in SQL (a group
    of thousands of servers loaded as ORM objects costs a second)."""
    group_id, policy, rules = session.execute(
        select(ServerGroup.id, ServerGroup.policy, ServerGroup.rules).where(
            ServerGroup.name == name,
            ServerGroup.project_id == project_id,
            ServerGroup.deleted == 0,
        )
    ).one()
    per_host: Counter[str] = Counter(
        dict(
            session.execute(
                select(Host.name, func.count(Instance.id))
                .select_from(ServerGroupMember)
                .join(Instance, Instance.uuid == ServerGroupMember.instance_uuid)
                .join(Host, Host.id == Instance.host_id)
                .where(ServerGroupMember.group_id == group_id, Instance.deleted == 0)
                .group_by(Host.name)
            ).all()
        )
    )
    limit = rules.get("max_server_per_host") if rules else None
    return GroupState(
        name=name,
        policy=policy,
        max_server_per_host=int(limit) if limit is not None else None,
        members_per_host=per_host,
    )


def save_plan(plan: Plan, path: str | Path, source: str | Path, prune: bool) -> None:
    """Write the plan for ``apply --plan``: what it shows, and what it was computed from."""
    data = plan.view()
    data["source"] = str(Path(source).resolve())
    data["prune"] = prune
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_plan(path: str | Path) -> dict[str, Any]:
    """A saved plan, checked for shape."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(reason=f"cannot read plan {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != PLAN_VERSION or "source" not in data:
        raise InvalidInput(reason=f"{path} is not a cloudctl plan (version {PLAN_VERSION})")
    return data


# -- apply ------------------------------------------------------------------------------------
@dataclass
class ApplyReport:
    """What an apply did."""

    run: str
    done: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {
            "run": self.run,
            "done": self.done,
            "failed": self.failed,
            "cleaned_up": self.cleaned,
        }


StepHook = Callable[[str, str], None]


def resume_unfinished(ctx: Context) -> list[str]:
    """Undo what applies killed mid-way left half-built: servers claimed but not built.

    Called under the state lock. A create step that was running when its apply died may have
    left instances BUILDING (claims held, maybe a domain or disks on the host): they are
    deleted (force: domain, disks, claim, IP), so the new plan creates them again cleanly.
    """
    reaped = ctx.executor.reap_orphans()
    if reaped:
        ctx.progress.info(f"stopped {len(reaped)} Ansible processes left by a killed cloudctl")
    _await_dead_runs(ctx)
    cleaned: list[str] = []
    for run in state_store.unfinished_runs(ctx, holding_lock=True):
        uuids = [u for step in run.get("steps", []) for u in step.get("instance_uuids") or []]
        names = []
        with ctx.db.unit_of_work() as session:
            for inst in session.scalars(
                select(Instance).where(Instance.uuid.in_(uuids), Instance.deleted == 0)
            ):
                if inst.vm_state in ("building", "error") or inst.task_state is not None:
                    names.append(inst.name)
        if names:
            ctx.progress.info(
                f"apply {run['uuid'][:8]} was interrupted: removing half-built {', '.join(names)}"
            )
            _force_delete(ctx, names)
            with ctx.db.unit_of_work() as session:
                for n in names:
                    state_store.forget_owned(session, "Server", n, ESTATE)
            cleaned += names
        _retire_lease(ctx, run.get("lease_uuid"))
        state_store.mark_interrupted(ctx, run["uuid"])
    return cleaned


def _await_dead_runs(ctx: Context) -> None:
    """Wait (at most a lease) for the command leases of runs whose state lock we took over.

    The keeper renews a process's state lock and command lease at different moments: when the
    state lock is found expired, the dead apply's command lease may live a few seconds more,
    and its servers would look held by a live command.
    """
    deadline = time.monotonic() + ctx.settings.command_lease_s + 2
    told = False
    while (runs := state_store.live_runs_of_others(ctx)) and time.monotonic() < deadline:
        if not told:
            ctx.progress.info(
                f"waiting for the lease of interrupted apply {runs[0][:8]} to run out "
                f"(at most {ctx.settings.command_lease_s}s)"
            )
            told = True
        time.sleep(0.5)


def _retire_lease(ctx: Context, lease_uuid: str | None) -> None:
    """The dead apply's lease goes: what it still holds (a step other than a create, killed
    mid-way) is settled by what the hosts show, as reconcile would."""
    if lease_uuid is None:
        return
    with ctx.db.unit_of_work() as session:
        held = list(session.scalars(select(Instance.uuid).where(Instance.task_owner == lease_uuid)))
    if held:
        ctx.progress.info(f"settling {len(held)} server(s) the interrupted apply held")
        reconcile.settle_dead(ctx, held)
    leases.forget_expired(ctx, [lease_uuid])


def _force_delete(ctx: Context, names: Sequence[str]) -> None:
    """Delete half-built servers of a dead apply: their tasks are taken over first (the dead
    command's lease is expired: its state lock was taken over), never a live command's."""
    todo = []
    with ctx.db.unit_of_work() as session:
        found = list(
            session.scalars(
                select(Instance).where(
                    Instance.name.in_(list(names)),
                    Instance.deleted == 0,
                    Instance.project_id == ctx.settings.project_id,
                )
            )
        )
    for inst in found:
        if inst.task_state is None or tasks.take_dead(ctx, inst.uuid)[0]:
            todo.append(inst.name)
        else:
            ctx.progress.info(f"{inst.name}: another command holds it; left alone")
    if todo:
        delete_servers(ctx, todo, force=True)


def apply(
    ctx: Context,
    plan: Plan,
    estate: Estate,
    *,
    on_step: StepHook | None = None,
    root: Path | None = None,
) -> ApplyReport:
    """Execute ``plan``, made under the state lock the caller holds (see :func:`run_apply`).

    ``root``: the tree given to ``-f``; the files Image documents name are checked again, as
    they are read, to lie inside it.
    """
    if plan.errors:
        raise InvalidInput(reason="the plan cannot be applied: " + "; ".join(plan.errors))
    run = state_store.start_run(ctx, plan.fingerprint)
    report = ApplyReport(run=run)
    seq = 0

    def step(
        kind: str, name: str, action: str, fn: Callable[[], Any], uuids: Sequence[str] = ()
    ) -> bool:
        nonlocal seq
        seq += 1
        state_store.record_step(ctx, run, seq, kind, name, action, "running", instance_uuids=uuids)
        if on_step:
            on_step("start", f"{action} {kind} {name}")
        try:
            fn()
        except Exception as exc:
            state_store.record_step(ctx, run, seq, kind, name, action, "failed", detail=str(exc))
            report.failed.append({"kind": kind, "name": name, "action": action, "error": str(exc)})
            if on_step:
                on_step("failed", f"{action} {kind} {name}: {exc}")
            return False
        state_store.record_step(ctx, run, seq, kind, name, action, "done", instance_uuids=uuids)
        report.done.append({"kind": kind, "name": name, "action": action})
        if on_step:
            on_step("done", f"{action} {kind} {name}")
        return True

    try:
        changes = [c for c in plan.diff.changes if c.is_change]
        for c in changes:
            if c.kind != "Server" and c.action != "delete":
                step(
                    c.kind,
                    c.name,
                    c.action,
                    functools.partial(_apply_catalog, ctx, estate, c, root),
                )
        servers = [c for c in changes if c.kind == "Server"]
        deletes = [c.name for c in servers if c.action == "delete"]
        if deletes:

            def do_delete() -> None:
                delete_servers(ctx, deletes, force=True)
                with ctx.db.unit_of_work() as session:
                    for n in deletes:
                        state_store.forget_owned(session, "Server", n, ESTATE)

            step("Server", ", ".join(deletes), "delete", do_delete)
        creates = [c for c in servers if c.action == "create"]
        if creates:
            _apply_creates(ctx, plan, creates, run, step)
        for c in servers:
            if c.action in ("update", "move", "replace"):
                step(
                    "Server",
                    c.name,
                    c.action,
                    functools.partial(_apply_server_change, ctx, plan, c),
                )
        _apply_power(ctx, [c for c in servers if c.action in ("create", "update", "move")], step)
        for c in changes:  # what the servers deleted above used goes last
            if c.kind != "Server" and c.action == "delete":
                step(
                    c.kind,
                    c.name,
                    c.action,
                    functools.partial(_apply_catalog, ctx, estate, c, root),
                )
    except BaseException:
        state_store.finish_run(ctx, run, "interrupted", report.view())
        raise
    state_store.finish_run(ctx, run, "failed" if report.failed else "done", report.view())
    return report


def _image_file(doc: Any, value: str | None, root: Path | None) -> Path | None:
    """The file an Image document names, resolved now (symlinks included): a file swapped for
    a link out of the tree since the files were validated is refused, not copied."""
    if value is None:
        return None
    real = Path(os.path.realpath(doc.resolve_path(value)))
    if root is not None and not desired.inside(real, root):
        raise InvalidInput(reason=f"{value} resolves outside {root}, the tree given to -f")
    return real


def _apply_catalog(ctx: Context, estate: Estate, c: Change, root: Path | None = None) -> None:
    if c.action in ("replace", "delete"):
        _delete_catalog(ctx, c.kind, c.name)
        with ctx.db.unit_of_work() as session:
            state_store.forget_owned(session, c.kind, c.name, ESTATE)
        if c.action == "delete":
            return
    if c.kind == "Host":
        _update_host(ctx, estate, c.name)
        return
    if c.kind == "Quota":
        spec = estate.quotas[c.name].spec
        values = {
            k: v
            for k, v in (
                ("instances", spec.instances),
                ("cores", spec.cores),
                ("ram", spec.ram_mb),
            )
            if v is not None
        }
        quotas.set_limits(ctx, values, c.name)
        return
    if c.kind == "Flavor":
        f: FlavorSpec = estate.flavors[c.name].spec
        flavors.create_flavor(
            ctx,
            c.name,
            vcpus=f.vcpus,
            memory_mb=f.ram_mb,
            root_gb=f.disk_gb,
            ephemeral_gb=f.ephemeral_gb,
            swap_mb=f.swap_mb,
            extra_specs=dict(f.extra_specs),
            description=f.description,
        )
    elif c.kind == "Image":
        doc = estate.images[c.name]
        i: ImageSpec = doc.spec
        if i.source == "tiny":
            images.create_tiny(ctx, c.name)
        else:
            images.add_image(
                ctx,
                c.name,
                file=_image_file(doc, i.file, root),
                kernel=_image_file(doc, i.kernel, root),
                initrd=_image_file(doc, i.initrd, root),
                cmdline=i.cmdline,
                properties=dict(i.properties),
                min_ram_mb=i.min_ram_mb,
                min_disk_gb=i.min_disk_gb,
            )
    elif c.kind == "Network":
        n = estate.networks[c.name].spec
        with ctx.db.unit_of_work() as session:
            network.create_network(session, c.name, n.cidr, n.gateway, n.dns, n.bridge)
    elif c.kind == "KeyPair":
        keypairs.add_keypair(ctx, c.name, estate.keypairs[c.name].spec.public_key)
    elif c.kind == "ServerGroup":
        g = estate.server_groups[c.name].spec
        server_groups.create_group(ctx, c.name, g.policy, g.max_per_host)
    else:
        raise OperationFailed(action="apply", name=c.name, reason=f"{c.kind} cannot be created yet")
    with ctx.db.unit_of_work() as session:
        state_store.record_owned(session, c.kind, c.name, None, ESTATE)


def _delete_catalog(ctx: Context, kind: str, name: str) -> None:
    if kind == "Network":
        with ctx.db.unit_of_work() as session:
            network.delete_network(session, name)
        return
    deleters: dict[str, Callable[[Context, str], None]] = {
        "Flavor": flavors.delete_flavor,
        "Image": images.delete_image,
        "KeyPair": keypairs.delete_keypair,
        "ServerGroup": server_groups.delete_group,
    }
    if kind not in deleters:
        raise OperationFailed(action="apply", name=name, reason=f"{kind} cannot be replaced")
    deleters[kind](ctx, name)


def _update_host(ctx: Context, estate: Estate, name: str) -> None:
    spec = estate.hosts[name].spec
    with ctx.db.unit_of_work() as session:
        host = hosts.get_host(session, name)
        if spec.availability_zone is not None:
            host.availability_zone = spec.availability_zone
        if spec.labels is not None:
            host.labels = dict(spec.labels)
        if spec.enabled is not None:
            host.enabled = spec.enabled
            host.disabled_reason = (
                None if spec.enabled else (spec.disabled_reason or "disabled by apply")
            )


def _boot_request(name: str, intent: ServerIntent, host: str | None) -> BootRequest:
    """What boot is asked for a declared server; ``host``: its planned host (forced)."""
    return BootRequest(
        name=name,
        flavor=intent.flavor,
        image=intent.image,
        key_name=intent.key,
        availability_zone=(
            f"{intent.availability_zone or ''}:{host}" if host else intent.availability_zone
        ),
        user_data=intent.user_data,
        metadata=dict(intent.metadata),
        group=intent.group,
    )


def _apply_creates(
    ctx: Context, plan: Plan, creates: Sequence[Change], run: str, step: Any
) -> None:
    """Claim every server on its planned host, then build them all in one play."""
    request_id = actions.new_request_id()
    uuids: list[str] = []
    claimed: list[str] = []
    for c in creates:
        intent = c.intent
        placed = plan.placements.get(c.name)
        if intent is None or placed is None:
            continue
        req = _boot_request(c.name, intent, placed.host)

        def claim(req: BootRequest = req, name: str = c.name) -> None:
            new = create_and_claim(ctx, req, request_id)
            uuids.extend(new)
            claimed.append(name)
            with ctx.db.unit_of_work() as session:
                for u in new:
                    state_store.record_owned(session, "Server", name, u, ESTATE)

        step("Server", c.name, "claim", claim)
    if not uuids:
        return
    ctx.progress.info(f"building {len(uuids)} server(s) in one play")
    step(
        "Server",
        ", ".join(claimed),
        "build",
        lambda: build_instances(ctx, uuids, request_id),
        uuids,
    )


def _apply_server_change(ctx: Context, plan: Plan, c: Change) -> None:
    fields = {f.field: f for f in c.fields}
    intent = c.intent
    assert intent is not None
    if c.action == "replace":
        if set(fields) - {"image", "power_state", "metadata"}:
            delete_servers(ctx, [c.name], force=True)
            placed = plan.placements.get(c.name)
            views = boot(ctx, _boot_request(c.name, intent, placed.host if placed else None))
            with ctx.db.unit_of_work() as session:
                for v in views:
                    state_store.record_owned(session, "Server", c.name, str(v["uuid"]), ESTATE)
            return
        rebuild(ctx, c.name, image=intent.image)
    if "metadata" in fields:
        with ctx.db.unit_of_work() as session:
            inst = session.scalars(
                select(Instance).where(
                    Instance.name == c.name,
                    Instance.deleted == 0,
                    Instance.project_id == ctx.settings.project_id,
                )
            ).one()
            inst.instance_metadata = dict(intent.metadata)
    if "flavor" in fields:
        placed = plan.placements.get(c.name)
        resize(ctx, c.name, intent.flavor, host=placed.host if placed else None)
        confirm_resize(ctx, c.name)
    elif "host" in fields:
        placed = plan.placements.get(c.name)
        live_migrate(ctx, c.name, host=placed.host if placed else intent.host_name)
    elif "availability_zone" in fields:
        placed = plan.placements.get(c.name)
        cold_migrate(ctx, c.name, host=placed.host if placed else None)
        confirm_resize(ctx, c.name)


#: desired power_state -> (vm_states it applies to, power action).
_POWER_ACTIONS = {
    ("stopped", "active"): "stop",
    ("stopped", "paused"): "stop",
    ("paused", "active"): "pause",
    ("running", "stopped"): "start",
    ("running", "paused"): "unpause",
}


def _apply_power(ctx: Context, changes: Sequence[Change], step: Any) -> None:
    """Bring servers to their desired power state: one play per action over all hosts."""
    wanted = {c.name: c.intent.power_state for c in changes if c.intent is not None}
    if not wanted:
        return
    todo: dict[str, list[str]] = defaultdict(list)
    with ctx.db.unit_of_work() as session:
        for inst in session.scalars(
            select(Instance).where(
                Instance.name.in_(list(wanted)),
                Instance.deleted == 0,
                Instance.project_id == ctx.settings.project_id,
            )
        ):
            act = _POWER_ACTIONS.get((wanted[inst.name], inst.vm_state))
            if act is not None and inst.task_state is None:
                todo[act].append(inst.name)
    for act, names in sorted(todo.items()):
        step("Server", ", ".join(names), act, lambda act=act, names=names: power(ctx, names, act))


def lock_holder() -> str:
    """``user@host`` for the state lock."""
    return f"{os.environ.get('USER', 'root')}@{os.uname().nodename}"


def run_apply(
    ctx: Context,
    path: str | Path | None,
    *,
    plan_file: str | Path | None = None,
    prune: bool = False,
    lock_timeout_s: float = 0.0,
    approve: Callable[[Plan], bool] = lambda plan: True,
    on_step: StepHook | None = None,
) -> tuple[Plan, ApplyReport | None]:
    """Lock, resume what a killed apply left, plan (or check a saved plan), approve, apply.

    A saved plan is made again from its files under the lock: if the fingerprint differs (the
    ledger, the instances, the catalog or the files changed) the apply is refused.
    """
    saved = read_plan(plan_file) if plan_file is not None else None
    source = saved["source"] if saved is not None else path
    if source is None:
        raise InvalidInput(reason="give -f PATH or --plan FILE")
    if saved is not None:
        prune = bool(saved.get("prune", False))
    with (
        state_store.state_lock(ctx, "apply", lock_timeout_s),
        leases.command_lease(ctx, f"apply -f {source}"),
    ):
        cleaned = resume_unfinished(ctx)
        hosts.refresh_stale(ctx)
        plan = make_plan(ctx, source, prune=prune)
        if saved is not None and plan.fingerprint != saved["fingerprint"]:
            raise InvalidInput(
                reason=f"the ledger or the state changed since {plan_file} was made: run plan again"
            )
        if not plan.has_changes:
            report = ApplyReport(run="", cleaned=cleaned)
            return plan, report
        if not approve(plan):
            return plan, None
        estate, files = load(ctx, source)
        report = apply(ctx, plan, estate, on_step=on_step, root=files.root)
        report.cleaned = cleaned
        return plan, report
