"""Instance states after Nova's vm_states.py, task_states.py and power_state.py, and which of
them each action accepts (Nova's ``@check_instance_state`` and ``@check_instance_lock``).

The accepted states are one table, :data:`ACTION_STATES`: action name -> :class:`Accepts`.
A row names the vm_states (``None`` = any) and the task_states (``None`` = any; the default,
:data:`IDLE`, is "no task in progress") the action may start from, and whether the action is
allowed on a locked instance (only ``unlock``, and the system's ``reclaim``, are). To add an
action, add one row to the table::

    "shelve": Accepts(frozenset({VmState.ACTIVE, VmState.STOPPED})),

and call ``check_state(ctx, inst, "shelve")`` (services/compute/common.py) before changing
anything; :func:`refusal` is the pure decision behind it (None = allowed, else the one-line
reason the CLI prints), tested from a table in tests/domain/test_states.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, StrEnum


class VmState(StrEnum):
    """The stable state an instance is in."""

    BUILDING = "building"
    ACTIVE = "active"
    STOPPED = "stopped"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    RESIZED = "resized"
    SOFT_DELETED = "soft-delete"
    DELETED = "deleted"
    ERROR = "error"
    SHELVED = "shelved"


class TaskState(StrEnum):
    """The transition an instance is going through; None when idle."""

    SCHEDULING = "scheduling"
    NETWORKING = "networking"
    BLOCK_DEVICE_MAPPING = "block_device_mapping"
    SPAWNING = "spawning"
    DELETING = "deleting"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    REBOOTING = "rebooting"
    REBOOTING_HARD = "rebooting_hard"
    MIGRATING = "migrating"
    RESIZE_PREP = "resize_prep"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_FINISH = "resize_finish"
    RESIZE_REVERTING = "resize_reverting"
    RESIZE_CONFIRMING = "resize_confirming"
    REBUILDING = "rebuilding"
    IMAGE_SNAPSHOT = "image_snapshot"
    IMAGE_UPLOADING = "image_uploading"
    PAUSING = "pausing"
    UNPAUSING = "unpausing"
    SUSPENDING = "suspending"
    RESUMING = "resuming"
    SOFT_DELETING = "soft-deleting"
    RESTORING = "restoring"
    REBUILD_BLOCK_DEVICE_MAPPING = "rebuild_block_device_mapping"
    REBUILD_SPAWNING = "rebuild_spawning"
    #: ``reconcile`` settles what a dead command left, or repairs the guest on its host.
    SETTLING = "settling"


class PowerState(IntEnum):
    """What the hypervisor says, as Nova numbers it."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7

    @classmethod
    def from_libvirt(cls, state: str) -> PowerState:
        """Map the state names the host modules report (libvirt's) onto Nova's power states."""
        return _LIBVIRT_STATES.get(state, cls.NOSTATE)


_LIBVIRT_STATES: dict[str, PowerState] = {
    "running": PowerState.RUNNING,
    "blocked": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "shutdown": PowerState.SHUTDOWN,
    "shutoff": PowerState.SHUTDOWN,
    "crashed": PowerState.CRASHED,
    "pmsuspended": PowerState.SUSPENDED,
    "nostate": PowerState.NOSTATE,
    "absent": PowerState.NOSTATE,
}


#: libvirt state -> the vm_state of an idle instance whose domain is in it.
VM_STATE_OF_DOMAIN: dict[str, str] = {
    "running": VmState.ACTIVE,
    "blocked": VmState.ACTIVE,
    "paused": VmState.PAUSED,
    "shutoff": VmState.STOPPED,
    "shutdown": VmState.STOPPED,
    "crashed": VmState.STOPPED,
    "pmsuspended": VmState.STOPPED,
}


def display_status(vm_state: str, task_state: str | None) -> str:
    """The one-word status shown in lists, as Nova's API derives it."""
    if vm_state == VmState.BUILDING:
        return "BUILD"
    if task_state == TaskState.DELETING:
        return "DELETING"
    if task_state in (TaskState.REBOOTING, TaskState.REBOOTING_HARD):
        return "REBOOT" if task_state == TaskState.REBOOTING else "HARD_REBOOT"
    if task_state == TaskState.MIGRATING:
        return "MIGRATING"
    if task_state in (TaskState.RESIZE_PREP, TaskState.RESIZE_MIGRATING, TaskState.RESIZE_FINISH):
        return "RESIZE"
    if task_state == TaskState.RESIZE_REVERTING:
        return "REVERT_RESIZE"
    if task_state == TaskState.REBUILDING:
        return "REBUILD"
    if task_state in (TaskState.REBUILD_BLOCK_DEVICE_MAPPING, TaskState.REBUILD_SPAWNING):
        return "REBUILD"
    return {
        VmState.ACTIVE: "ACTIVE",
        VmState.STOPPED: "SHUTOFF",
        VmState.PAUSED: "PAUSED",
        VmState.SUSPENDED: "SUSPENDED",
        VmState.RESIZED: "VERIFY_RESIZE",
        VmState.SOFT_DELETED: "SOFT_DELETED",
        VmState.DELETED: "DELETED",
        VmState.ERROR: "ERROR",
        VmState.SHELVED: "SHELVED",
    }.get(VmState(vm_state), vm_state.upper())


# --- which states each action accepts -----------------------------------------------------------

#: "No task in progress": the task_states most actions accept.
IDLE: frozenset[str | None] = frozenset({None})


def _states(*states: str) -> frozenset[str]:
    return frozenset(states)


@dataclass(frozen=True)
class Accepts:
    """The states an action may start from (one row of :data:`ACTION_STATES`).

    ``None`` for ``vm_states`` or ``task_states`` means any.
    """

    vm_states: frozenset[str] | None
    task_states: frozenset[str | None] | None = IDLE
    #: Nova's check_instance_lock: only an action that says so runs on a locked instance.
    when_locked: bool = False
    #: How the action reads in messages ("hard reboot"), when not its key.
    label: str | None = None


_SOFT_DELETABLE = frozenset(VmState) - {VmState.SOFT_DELETED, VmState.DELETED}

#: action -> the states it accepts; after nova/compute/api.py's decorators.
ACTION_STATES: dict[str, Accepts] = {
    "start": Accepts(_states(VmState.STOPPED)),
    "stop": Accepts(_states(VmState.ACTIVE, VmState.ERROR)),
    "reboot": Accepts(_states(VmState.ACTIVE)),
    "reboot_hard": Accepts(
        _states(VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED, VmState.ERROR),
        label="hard reboot",
    ),
    "pause": Accepts(_states(VmState.ACTIVE)),
    "unpause": Accepts(_states(VmState.PAUSED)),
    "suspend": Accepts(_states(VmState.ACTIVE)),
    "resume": Accepts(_states(VmState.SUSPENDED)),
    "lock": Accepts(None, None),
    "unlock": Accepts(None, None, when_locked=True),
    # A delete waits for no task: the task_state is the other command's lock (in SQL, on every
    # controller), so a delete during it is refused, or waits with --wait-lock.
    "delete": Accepts(None),
    "force_delete": Accepts(None, label="force delete"),
    "soft_delete": Accepts(_SOFT_DELETABLE, label="soft delete"),
    "restore": Accepts(_states(VmState.SOFT_DELETED)),
    "rebuild": Accepts(_states(VmState.ACTIVE, VmState.STOPPED, VmState.ERROR)),
    # The background reclaim of expired soft deletes (Nova's _reclaim_queued_deletes) is the
    # system, not a user: it ignores the lock.
    "reclaim": Accepts(_states(VmState.SOFT_DELETED), when_locked=True),
}


def _either(values: Iterable[str]) -> str:
    items = list(values)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def refusal(
    action: str,
    *,
    name: str,
    vm_state: str,
    task_state: str | None,
    locked: bool = False,
    locked_reason: str | None = None,
    accepts: Accepts | None = None,
) -> str | None:
    """None if ``action`` may start from these states, else the one-line reason it may not.

    ``accepts`` replaces the action's row; without either, KeyError (a programming error).
    """
    row = accepts or ACTION_STATES[action]
    if locked and not row.when_locked:
        return (
            f"instance {name} is locked: {locked_reason}"
            if locked_reason
            else (f"instance {name} is locked")
        )
    vm_ok = row.vm_states is None or vm_state in row.vm_states
    task_ok = row.task_states is None or task_state in row.task_states
    if vm_ok and task_ok:
        return None
    label = row.label or action
    if not vm_ok:
        assert row.vm_states is not None
        needs = _either(s.value for s in VmState if s in row.vm_states)
    else:
        assert row.task_states is not None
        tasks = ["None"] if None in row.task_states else []
        tasks += [t.value for t in TaskState if t in row.task_states]
        needs = f"task_state {_either(tasks)}"
    return (
        f"cannot {label} instance {name}: vm_state {vm_state}, task_state {task_state} "
        f"({label} needs {needs})"
    )
