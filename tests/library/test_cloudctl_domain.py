"""Tests of library/cloudctl_domain.py.

Unit tests drive ``DomainConverger`` against libvirt's in-process ``test:///default`` driver;
integration tests run the module through ansible-playbook against the real qemu:///system.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import libvirt
import pytest

from tests.library.helpers import LIBVIRT_URI, PlayRunner, tiny_domain_xml

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@pytest.fixture
def mod(load_module: Callable[[str], ModuleType]) -> ModuleType:
    return load_module("cloudctl_domain")


@pytest.fixture
def test_conn() -> Iterator[Any]:
    conn = libvirt.open("test:///default")
    yield conn
    for dom in conn.listAllDomains(0):
        if dom.name().startswith("ut-"):
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
    conn.close()


def _name() -> str:
    return f"ut-{uuid.uuid4().hex[:10]}"


def _xml(name: str, memory: int = 64) -> str:
    return tiny_domain_xml(name, domain_type="test", memory_mib=memory)


def _converge(
    mod: ModuleType, conn: Any, guests: list[dict[str, Any]], check: bool = False, **kwargs: Any
) -> tuple[list[dict[str, Any]], list[Any], list[dict[str, Any]]]:
    converger = mod.DomainConverger(
        conn, check_mode=check, stop_timeout=kwargs.pop("stop_timeout", 5), want_diff=True, **kwargs
    )
    return converger.converge(guests)


def _state(conn: Any, name: str) -> str:
    try:
        return [
            "nostate",
            "running",
            "blocked",
            "paused",
            "shutdown",
            "shutoff",
            "crashed",
            "pmsuspended",
        ][conn.lookupByName(name).state()[0]]
    except libvirt.libvirtError:
        return "absent"


# --- unit: validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guest", "reason"),
    [
        ({"name": "bad name", "xml": "<domain/>"}, "invalid domain name"),
        ({"name": "vm1"}, "xml is required for state=running"),
        ({"name": "vm1", "state": "present"}, "xml is required for state=present"),
        ({"name": "vm1", "xml": _xml("other")}, "<name> is 'other'"),
        ({"name": "vm1", "xml": "<domain"}, "invalid domain XML"),
        ({"name": "vm1", "state": "frozen"}, "invalid state"),
        ({"name": "vm1", "state": "absent", "undefine_flags": ["bogus"]}, "unknown undefine flag"),
    ],
)
def test_validate_guest_rejects(mod: ModuleType, guest: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        mod.validate_guest(guest)


def test_validate_guest_defaults(mod: ModuleType) -> None:
    spec = mod.validate_guest({"name": "vm1", "xml": _xml("vm1")})
    assert spec.state == "running"
    assert spec.undefine_flags == mod.DEFAULT_UNDEFINE_FLAGS
    assert mod.validate_guest({"name": "vm1", "state": "absent", "xml": "ignored"}).xml is None
    assert mod.validate_guest({"name": "vm1", "state": "shutdown"}).xml is None


def test_undefine_flag_bits(mod: ModuleType) -> None:
    assert mod.undefine_flag_bits(["managed_save", "snapshots_metadata"]) == (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    )
    assert mod.undefine_flag_bits([]) == 0


# --- unit: state machine on the test driver ---------------------------------------------


def test_running_triad(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    guests = [{"name": name, "xml": _xml(name), "state": "running"}]

    results, errors, diffs = _converge(mod, test_conn, guests, check=True)
    assert not errors
    assert results == [
        {"name": name, "uuid": None, "state": "absent", "changed": True, "defined": True}
    ]
    assert _state(test_conn, name) == "absent"
    assert diffs and diffs[0]["before"] == "" and "xml-sha256" in diffs[0]["after"]

    results, errors, diffs = _converge(mod, test_conn, guests)
    assert not errors
    assert results[0]["changed"] and results[0]["state"] == "running"
    assert results[0]["uuid"] == test_conn.lookupByName(name).UUIDString()
    assert test_conn.lookupByName(name).isPersistent()

    for check in (True, False):
        results, errors, diffs = _converge(mod, test_conn, guests, check=check)
        assert not errors and diffs == []
        assert results[0]["changed"] is False and results[0]["state"] == "running"


def test_changed_xml_is_redefined_and_flags_restart(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    _converge(mod, test_conn, [{"name": name, "xml": _xml(name)}])
    uuid_before = test_conn.lookupByName(name).UUIDString()
    results, errors, diffs = _converge(mod, test_conn, [{"name": name, "xml": _xml(name, 128)}])
    assert not errors
    assert results[0]["defined"] and results[0]["restart_required"]
    assert results[0]["uuid"] == uuid_before  # XML without <uuid> keeps the domain's
    dom = test_conn.lookupByName(name)
    assert "131072" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "65536" in diffs[0]["before"] and "131072" in diffs[0]["after"]


def test_conflicting_uuid_is_an_error(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    _converge(mod, test_conn, [{"name": name, "xml": _xml(name), "state": "present"}])
    xml = tiny_domain_xml(name, "test", domain_uuid=str(uuid.uuid4()))
    results, errors, _ = _converge(mod, test_conn, [{"name": name, "xml": xml, "state": "present"}])
    assert [e.guest for e in errors] == [name]
    assert "domain exists with uuid" in errors[0].reason
    assert results[0]["failed"] is True


def test_present_makes_transient_domain_persistent(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    test_conn.createXML(_xml(name), 0)
    results, errors, _ = _converge(
        mod, test_conn, [{"name": name, "xml": _xml(name), "state": "present"}]
    )
    assert not errors and results[0]["changed"] and results[0]["state"] == "running"
    assert test_conn.lookupByName(name).isPersistent()


def test_power_transitions(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    xml = _xml(name)

    def step(state: str, check: bool = False) -> dict[str, Any]:
        results, errors, _ = _converge(
            mod, test_conn, [{"name": name, "xml": xml, "state": state}], check=check
        )
        assert not errors, errors
        return results[0]

    assert step("present")["state"] == "shutoff"
    assert step("paused", check=True) == {
        "name": name,
        "uuid": test_conn.lookupByName(name).UUIDString(),
        "state": "shutoff",
        "changed": True,
        "defined": False,
    }
    assert step("paused")["state"] == "paused"  # started paused (create+suspend on this driver)
    assert step("paused")["changed"] is False
    assert step("running")["state"] == "running"  # resumed
    assert step("paused")["state"] == "paused"  # suspended
    result = step("shutdown")
    assert result["state"] == "shutoff" and result["changed"] and result["forced"] is False
    assert step("shutdown") == {**result, "changed": False}
    assert step("running")["state"] == "running"
    assert step("destroyed")["state"] == "shutoff"
    assert step("destroyed")["changed"] is False
    assert step("present")["changed"] is False


def test_saved_restored_and_discarded(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    xml = _xml(name)

    def step(state: str, check: bool = False) -> dict[str, Any]:
        results, errors, _ = _converge(
            mod, test_conn, [{"name": name, "xml": xml, "state": state}], check=check
        )
        assert not errors, errors
        return results[0]

    assert step("running")["state"] == "running"
    check = step("saved", check=True)
    assert (check["changed"], check["state"], "managed_save" in check) == (True, "running", False)
    saved = step("saved")
    assert (saved["changed"], saved["state"], saved["managed_save"]) == (True, "shutoff", True)
    assert test_conn.lookupByName(name).hasManagedSaveImage(0) == 1
    assert step("saved") == {**saved, "changed": False}  # idempotent
    assert step("shutdown")["changed"] is False  # not running: nothing to shut down
    assert step("running", check=True)["changed"] is True
    resumed = step("running")
    assert (resumed["state"], resumed["restored"], "managed_save" in resumed) == (
        "running",
        True,
        False,
    )
    assert "restored" not in step("running")  # a second run changes nothing
    step("saved")
    discarded = step("destroyed")
    assert (discarded["changed"], discarded["state"], "managed_save" in discarded) == (
        True,
        "shutoff",
        False,
    )
    assert step("destroyed")["changed"] is False
    assert "restored" not in step("running")  # a cold boot


def test_saving_a_stopped_domain_without_a_save_image_fails(
    mod: ModuleType, test_conn: Any
) -> None:
    name = _name()
    guests = [{"name": name, "xml": _xml(name), "state": "present"}]
    _converge(mod, test_conn, guests)
    _, errors, _ = _converge(mod, test_conn, [{"name": name, "state": "saved"}])
    assert "not running" in errors[0].reason
    _, errors, _ = _converge(mod, test_conn, [{"name": name + "x", "state": "saved"}])
    assert "does not exist and no xml" in errors[0].reason


def test_absent_discards_a_save_image(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    _converge(mod, test_conn, [{"name": name, "xml": _xml(name)}])
    _converge(mod, test_conn, [{"name": name, "state": "saved"}])
    assert test_conn.lookupByName(name).hasManagedSaveImage(0) == 1
    results, errors, _ = _converge(mod, test_conn, [{"name": name, "state": "absent"}])
    assert not errors and results[0]["state"] == "absent"
    assert _state(test_conn, name) == "absent"


def test_absent(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    _converge(mod, test_conn, [{"name": name, "xml": _xml(name)}])
    guests = [{"name": name, "state": "absent"}]
    results, errors, diffs = _converge(mod, test_conn, guests, check=True)
    assert not errors and results[0]["changed"] and results[0]["state"] == "running"
    assert diffs[0]["after"] == "" and name in diffs[0]["before"]
    results, errors, _ = _converge(mod, test_conn, guests)  # nvram flag unsupported: falls back
    assert not errors and results[0]["changed"] and results[0]["state"] == "absent"
    assert _state(test_conn, name) == "absent"
    results, errors, diffs = _converge(mod, test_conn, guests)
    assert not errors and not results[0]["changed"] and diffs == []


def test_off_states_of_a_missing_domain_are_no_change(mod: ModuleType, test_conn: Any) -> None:
    name = _name()
    results, errors, _ = _converge(
        mod,
        test_conn,
        [{"name": name, "state": "shutdown"}, {"name": name + "x", "state": "destroyed"}],
    )
    assert not errors
    assert [(r["changed"], r["state"]) for r in results] == [(False, "absent"), (False, "absent")]
    results, errors, _ = _converge(mod, test_conn, [{"name": name, "state": "paused"}])
    assert "does not exist and no xml" in errors[0].reason


def test_batch_continues_after_a_failing_guest(mod: ModuleType, test_conn: Any) -> None:
    good, other = _name(), _name()
    guests = [
        {"name": "bad name!", "xml": _xml("x")},
        {"name": good, "xml": _xml(good)},
        {"name": other, "xml": _xml("mismatch")},
        {"name": good, "xml": _xml(good)},
    ]
    results, errors, _ = _converge(mod, test_conn, guests)
    assert [e.guest for e in errors] == ["bad name!", other, good]
    assert "listed twice" in errors[2].reason
    assert results[1] == {
        "name": good,
        "uuid": test_conn.lookupByName(good).UUIDString(),
        "state": "running",
        "changed": True,
        "defined": True,
    }
    assert [r.get("failed", False) for r in results] == [True, False, True, True]


def test_parallel_batch_keeps_order(mod: ModuleType, test_conn: Any) -> None:
    names = [_name() for _ in range(6)]
    states = ["running", "paused", "present", "running", "paused", "present"]
    guests = [{"name": n, "xml": _xml(n), "state": s} for n, s in zip(names, states, strict=True)]
    guests.append({"name": names[0], "xml": _xml(names[0])})
    results, errors, _ = _converge(mod, test_conn, guests, parallel=4)
    assert [e.guest for e in errors] == [names[0]] and "listed twice" in errors[0].reason
    assert [r["name"] for r in results] == [*names, names[0]]
    assert [r["state"] for r in results[:6]] == ["running", "paused", "shutoff"] * 2
    results, errors, _ = _converge(mod, test_conn, guests[:6], parallel=4)
    assert not errors and not any(r["changed"] for r in results)


class _StubbornDomain:
    """Ignores ACPI: stays active until destroyed."""

    def __init__(self) -> None:
        self.active = True
        self.destroyed = 0

    def isActive(self) -> int:
        return int(self.active)

    def destroy(self) -> None:
        self.active = False
        self.destroyed += 1


class _PoliteDomain(_StubbornDomain):
    """Goes down on its own after ``polls`` isActive() calls."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls = polls

    def isActive(self) -> int:
        self.polls -= 1
        if self.polls <= 0:
            self.active = False
        return int(self.active)


def test_await_shutdowns_forces_after_one_shared_timeout(mod: ModuleType) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    converger = mod.DomainConverger(
        None, check_mode=False, stop_timeout=3, clock=lambda: now[0], sleep=sleep, parallel=2
    )
    stubborn = [
        mod.GuestOutcome(
            name=f"s{i}", domain=_StubbornDomain(), forced=False, deadline=3.0 + i / 10
        )
        for i in range(3)
    ]
    polite = mod.GuestOutcome(name="p", domain=_PoliteDomain(polls=4), forced=False, deadline=3.0)
    errors = converger.await_shutdowns([*stubborn, polite])
    assert errors == []
    assert now[0] == pytest.approx(3.2)  # waited together: the last deadline, not 3 s per guest
    assert [o.forced for o in stubborn] == [True, True, True]
    assert all(o.domain.destroyed == 1 for o in stubborn)
    assert polite.forced is False and polite.domain.destroyed == 0


# --- integration: the real daemon through ansible-playbook -------------------------------


def _task(
    guests: list[dict[str, Any]], check: bool = False, stop_timeout: int = 1, **extra: Any
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "cloudctl_domain": {
            "libvirt_uri": LIBVIRT_URI,
            "stop_timeout": stop_timeout,
            "guests": guests,
        },
    }
    if check:
        task["check_mode"] = True
    task.update(extra)
    return task


def _states(conn: Any, names: list[str]) -> list[str]:
    return [_state(conn, n) for n in names]


@pytest.mark.integration
def test_domain_triad_real_daemon(
    ansible_play: PlayRunner, libvirt_conn: Any, domain_names: Callable[[], str]
) -> None:
    names = [domain_names() for _ in range(3)]
    run_uuid = str(uuid.uuid4())
    guests = [
        {
            "name": names[0],
            "xml": tiny_domain_xml(names[0], domain_uuid=run_uuid),
            "state": "running",
        },
        {"name": names[1], "xml": tiny_domain_xml(names[1]), "state": "paused"},
        {"name": names[2], "xml": tiny_domain_xml(names[2]), "state": "present"},
    ]

    (check,) = ansible_play([_task(guests, check=True)])
    assert check["changed"] is True
    assert [r["changed"] for r in check["results"]] == [True, True, True]
    assert [r["state"] for r in check["results"]] == ["absent"] * 3
    assert len(check["diff"]) == 3
    assert _states(libvirt_conn, names) == ["absent"] * 3  # check mode did nothing

    # Then power transitions in one batch: the firmware-only guests ignore ACPI, so the
    # shutdown is forced after the (shared) stop_timeout.
    stop = [
        {"name": names[0], "state": "shutdown"},
        {"name": names[1], "state": "destroyed"},
        {"name": names[2], "xml": tiny_domain_xml(names[2], memory_mib=96), "state": "running"},
    ]
    gone = [{"name": n, "state": "absent"} for n in names]
    real, check2, real2, moved, moved_again, gone_check = ansible_play(
        [
            _task(guests),
            _task(guests, check=True),
            _task(guests),
            _task(stop),
            _task(stop),
            _task(gone, check=True),
        ]
    )
    assert real["changed"] is True
    assert [(r["state"], r["changed"]) for r in real["results"]] == [
        ("running", True),
        ("paused", True),
        ("shutoff", True),
    ]
    assert real["results"][0]["uuid"] == run_uuid
    for again in (check2, real2):
        assert again["changed"] is False, again
        assert [r["changed"] for r in again["results"]] == [False, False, False]
        assert [r["state"] for r in again["results"]] == ["running", "paused", "shutoff"]

    assert [(r["state"], r["changed"]) for r in moved["results"]] == [
        ("shutoff", True),
        ("shutoff", True),
        ("running", True),
    ]
    assert moved["results"][0]["forced"] is True
    assert moved["results"][2]["defined"] is True
    assert moved_again["changed"] is False
    assert moved_again["results"][0]["forced"] is False
    assert gone_check["changed"] is True
    assert _states(libvirt_conn, names) == ["shutoff", "shutoff", "running"]

    gone_real, gone_check2, gone_real2 = ansible_play(
        [_task(gone), _task(gone, check=True), _task(gone)]
    )
    assert gone_real["changed"] is True
    assert [r["state"] for r in gone_real["results"]] == ["absent"] * 3
    assert gone_check2["changed"] is False and gone_real2["changed"] is False
    assert _states(libvirt_conn, names) == ["absent"] * 3


@pytest.mark.integration
def test_domain_failure_names_the_guest(
    ansible_play: PlayRunner, libvirt_conn: Any, domain_names: Callable[[], str]
) -> None:
    ok = domain_names()
    guests = [
        {"name": ok, "xml": tiny_domain_xml(ok), "state": "present"},
        {"name": "cctest-missing-xml", "state": "running"},
    ]
    (result,) = ansible_play([_task(guests, ignore_errors=True)])
    assert result["failed"] is True
    assert result["failed_guests"] == ["cctest-missing-xml"]
    assert "guest cctest-missing-xml: xml is required" in result["msg"]
    assert result["results"][0]["changed"] is True and result["results"][0]["state"] == "shutoff"
    assert _state(libvirt_conn, ok) == "shutoff"


@pytest.mark.integration
def test_saved_triad_real_daemon(
    ansible_play: PlayRunner, libvirt_conn: Any, domain_names: Callable[[], str]
) -> None:
    name = domain_names()
    xml = tiny_domain_xml(name)
    saved = [{"name": name, "state": "saved"}]
    running = [{"name": name, "xml": xml, "state": "running"}]
    up, check, real, again, check_again = ansible_play(
        [
            _task(running),
            _task(saved, check=True),
            _task(saved),
            _task(saved),
            _task(saved, check=True),
        ]
    )
    assert up["results"][0]["state"] == "running"
    assert check["changed"] is True and _state(libvirt_conn, name) == "shutoff"
    assert check["results"][0]["state"] == "running"  # check mode reports the current state
    assert (real["changed"], real["results"][0]["managed_save"]) == (True, True)
    for same in (again, check_again):
        assert same["changed"] is False and same["results"][0]["state"] == "shutoff"
    assert libvirt_conn.lookupByName(name).hasManagedSaveImage(0) == 1

    restored, restored_again, gone = ansible_play(
        [_task(running), _task(running), _task([{"name": name, "state": "absent"}])]
    )
    assert restored["changed"] is True and restored["results"][0]["restored"] is True
    assert restored["results"][0]["state"] == "running"
    assert "managed_save" not in restored["results"][0]  # libvirt drops the image on restore
    assert restored_again["changed"] is False
    assert gone["changed"] is True and _state(libvirt_conn, name) == "absent"
