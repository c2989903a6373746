"""The accepted-states table (Nova's check_instance_state / check_instance_lock), from data."""

from __future__ import annotations

import pytest

from cloudctl.domain.states import (
    ACTION_STATES,
    IDLE,
    Accepts,
    TaskState,
    VmState,
    display_status,
    refusal,
)

A, S, P, U, E = (
    VmState.ACTIVE,
    VmState.STOPPED,
    VmState.PAUSED,
    VmState.SUSPENDED,
    VmState.ERROR,
)
SD, B = VmState.SOFT_DELETED, VmState.BUILDING

#: The vm_states each action accepts, after nova/compute/api.py (None = any).
NOVA_VM_STATES: dict[str, set[str] | None] = {
    "start": {S},
    "stop": {A, E},
    "reboot": {A},
    "reboot_hard": {A, S, P, U, E},
    "pause": {A},
    "unpause": {P},
    "suspend": {A},
    "resume": {U},
    "rebuild": {A, S, E},
    "restore": {SD},
    "delete": None,
    "force_delete": None,
    "lock": None,
    "unlock": None,
}


@pytest.mark.parametrize("action", sorted(NOVA_VM_STATES))
def test_vm_states_follow_nova(action: str) -> None:
    row = ACTION_STATES[action]
    expected = NOVA_VM_STATES[action]
    assert row.vm_states == (None if expected is None else frozenset(expected))


def test_every_row_names_known_states_only() -> None:
    for action, row in ACTION_STATES.items():
        assert row.vm_states is None or row.vm_states <= set(VmState), action
        assert row.task_states is None or row.task_states <= {None, *TaskState}, action


@pytest.mark.parametrize(
    ("action", "vm_state", "task_state", "expected"),
    [
        (
            "pause",
            "stopped",
            None,
            "cannot pause instance web: vm_state stopped, task_state None (pause needs active)",
        ),
        ("pause", "active", None, None),
        (
            "pause",
            "active",
            "powering-off",
            "cannot pause instance web: vm_state active, "
            "task_state powering-off (pause needs task_state None)",
        ),
        ("unpause", "paused", None, None),
        ("unpause", "active", None, "(unpause needs paused)"),
        ("suspend", "active", None, None),
        ("suspend", "paused", None, "(suspend needs active)"),
        ("resume", "suspended", None, None),
        ("resume", "stopped", None, "(resume needs suspended)"),
        ("stop", "error", None, None),
        ("stop", "stopped", None, "(stop needs active or error)"),
        ("start", "active", None, "(start needs stopped)"),
        ("reboot", "paused", None, "(reboot needs active)"),
        ("reboot_hard", "suspended", None, None),
        (
            "reboot_hard",
            "soft-delete",
            None,
            "cannot hard reboot instance web: vm_state "
            "soft-delete, task_state None (hard reboot needs active, stopped, paused, suspended "
            "or error)",
        ),
        ("rebuild", "stopped", None, None),
        ("rebuild", "error", None, None),
        ("rebuild", "paused", None, "(rebuild needs active, stopped or error)"),
        ("restore", "soft-delete", None, None),
        ("restore", "active", None, "(restore needs soft-delete)"),
        ("delete", "building", None, None),
        ("delete", "soft-delete", None, None),
        # Any task is another command's lock (in SQL): a delete is refused, or waits with
        # --wait-lock; none is let through to race the other command on the host.
        ("delete", "error", "powering-off", "(delete needs task_state None)"),
        ("delete", "active", "rebooting_hard", "(delete needs task_state None)"),
        ("delete", "building", "spawning", "(delete needs task_state None)"),
        ("delete", "active", "migrating", "task_state migrating (delete needs task_state None"),
        ("force_delete", "soft-delete", None, None),
        ("soft_delete", "active", None, None),
        ("soft_delete", "soft-delete", None, "cannot soft delete instance web"),
        ("lock", "building", "spawning", None),
        ("unlock", "error", "deleting", None),
        ("reclaim", "soft-delete", None, None),
        ("reclaim", "active", None, "(reclaim needs soft-delete)"),
    ],
)
def test_refusal(action: str, vm_state: str, task_state: str | None, expected: str | None) -> None:
    got = refusal(action, name="web", vm_state=vm_state, task_state=task_state)
    if expected is None:
        assert got is None
    else:
        assert got is not None and expected in got, got


@pytest.mark.parametrize(
    ("action", "reason", "expected"),
    [
        ("pause", "maintenance", "instance web is locked: maintenance"),
        ("delete", "maintenance", "instance web is locked: maintenance"),
        ("force_delete", None, "instance web is locked"),
        ("lock", None, "instance web is locked"),
        ("rebuild", "x", "instance web is locked: x"),
        ("unlock", "maintenance", None),
        ("reclaim", "maintenance", None),  # the system's reclaim is no user action
    ],
)
def test_a_locked_instance_refuses_all_but_unlock(
    action: str, reason: str | None, expected: str | None
) -> None:
    vm_state = "soft-delete" if action == "reclaim" else "active"
    got = refusal(
        action, name="web", vm_state=vm_state, task_state=None, locked=True, locked_reason=reason
    )
    assert got == expected


def test_the_lock_is_checked_before_the_states() -> None:
    got = refusal("start", name="web", vm_state="active", task_state=None, locked=True)
    assert got == "instance web is locked"


def test_an_explicit_row_replaces_the_table_and_unknown_actions_need_one() -> None:
    row = Accepts(frozenset({VmState.ACTIVE}))
    assert (
        refusal("live-migrate", name="w", vm_state="active", task_state=None, accepts=row) is None
    )
    assert (
        refusal("live-migrate", name="w", vm_state="stopped", task_state=None, accepts=row)
        == "cannot live-migrate instance w: vm_state stopped, task_state None (live-migrate needs active)"
    )
    with pytest.raises(KeyError):
        refusal("fly", name="w", vm_state="active", task_state=None)


def test_idle_is_no_task() -> None:
    assert frozenset({None}) == IDLE


@pytest.mark.parametrize(
    ("vm_state", "task_state", "status"),
    [
        ("active", "pausing", "ACTIVE"),
        ("paused", None, "PAUSED"),
        ("suspended", None, "SUSPENDED"),
        ("soft-delete", None, "SOFT_DELETED"),
        ("active", "rebuild_spawning", "REBUILD"),
        ("error", "rebuild_block_device_mapping", "REBUILD"),
    ],
)
def test_display_status(vm_state: str, task_state: str | None, status: str) -> None:
    assert display_status(vm_state, task_state) == status
