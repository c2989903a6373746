"""Instance states after Nova's vm_states.py, task_states.py and power_state.py."""

from __future__ import annotations

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
    IMAGE_SNAPSHOT = "image_snapshot"


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
