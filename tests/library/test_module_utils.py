"""Unit tests of library/module_utils: validation, state names, domain-XML hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.module_utils.cloudctl_common import (
    GuestError,
    base_file,
    failed_result,
    guest_dir,
    nearest_existing_path,
    validate_checksum,
    validate_domain_name,
    validate_filename,
    validate_uuid,
)
from ansible.module_utils.cloudctl_libvirt import (
    DOMAIN_STATES,
    desired_xml_hash,
    domain_xml_name,
    domain_xml_uuid,
    normalise_domain_xml,
    recorded_xml_hash,
    state_name,
    xml_with_hash,
)

GOOD_UUID = "5e1b4c1e-8a0c-4d6f-9d5e-0f4c3b2a1d00"


@pytest.mark.parametrize("value", [GOOD_UUID, "00000000-0000-0000-0000-000000000000"])
def test_validate_uuid_accepts_canonical(value: str) -> None:
    assert validate_uuid(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        None,
        42,
        GOOD_UUID.upper(),
        "{" + GOOD_UUID + "}",
        GOOD_UUID.replace("-", ""),
        "../" + GOOD_UUID,
        GOOD_UUID + "/..",
        GOOD_UUID + "\n",
        "_base",
    ],
)
def test_validate_uuid_rejects_everything_else(value: object) -> None:
    with pytest.raises(ValueError, match="invalid uuid"):
        validate_uuid(value)


@pytest.mark.parametrize("value", ["a", "instance-0001", "cctest_x.y-z", "A" * 128])
def test_validate_domain_name_accepts(value: str) -> None:
    assert validate_domain_name(value) == value


@pytest.mark.parametrize("value", ["", "-x", ".x", "a b", "a/b", "A" * 129, "é", None])
def test_validate_domain_name_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid domain name"):
        validate_domain_name(value)


@pytest.mark.parametrize("value", ["meta-data", "user-data", "network-config", "a.b_c"])
def test_validate_filename_accepts(value: str) -> None:
    assert validate_filename(value) == value


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "/etc", "a b", "x\n", None])
def test_validate_filename_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid file name"):
        validate_filename(value)


def test_validate_checksum() -> None:
    digest = "a" * 64
    assert validate_checksum(digest) == digest
    for bad in ["A" * 64, "a" * 63, "../" + "a" * 61, "g" * 64, None]:
        with pytest.raises(ValueError, match="invalid image checksum"):
            validate_checksum(bad)


def test_paths_are_under_instances_path(tmp_path: Path) -> None:
    assert guest_dir(str(tmp_path), GOOD_UUID) == str(tmp_path / GOOD_UUID)
    assert base_file(str(tmp_path), "b" * 64) == str(tmp_path / "_base" / ("b" * 64))
    with pytest.raises(ValueError):
        guest_dir(str(tmp_path), "..")


def test_nearest_existing_path(tmp_path: Path) -> None:
    assert nearest_existing_path(str(tmp_path)) == str(tmp_path)
    assert nearest_existing_path(str(tmp_path / "a" / "b" / "c")) == str(tmp_path)
    assert not (tmp_path / "a").exists()


def test_failed_result_names_the_guest() -> None:
    error = GuestError("g1", "boom", changed=True)
    assert str(error) == "guest g1: boom"
    assert failed_result("uuid", error) == {
        "uuid": "g1",
        "changed": True,
        "failed": True,
        "msg": "boom",
    }


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0, "nostate"),
        (1, "running"),
        (2, "blocked"),
        (3, "paused"),
        (4, "shutdown"),
        (5, "shutoff"),
        (6, "crashed"),
        (7, "pmsuspended"),
        (99, "nostate"),
        (-1, "nostate"),
    ],
)
def test_state_name(code: int, name: str) -> None:
    assert state_name(code) == name


def test_state_names_match_libvirt_constants() -> None:
    import libvirt

    for name in DOMAIN_STATES:
        assert state_name(getattr(libvirt, f"VIR_DOMAIN_{name.upper()}")) == name


XML_A = """<domain type='kvm'>
  <name>vm1</name>
  <memory unit='MiB'>64</memory>
  <!-- a comment -->
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
</domain>"""
XML_A_REFORMATTED = (
    '<domain type="kvm"><name> vm1 </name><memory unit="MiB">64</memory>'
    '<os><type machine="pc" arch="x86_64">hvm</type></os></domain>'
)
XML_B = XML_A.replace("64", "128")


def test_hash_ignores_formatting_attribute_order_and_comments() -> None:
    assert desired_xml_hash(XML_A) == desired_xml_hash(XML_A_REFORMATTED)
    assert normalise_domain_xml(XML_A) == normalise_domain_xml(XML_A_REFORMATTED)


def test_hash_sees_real_changes() -> None:
    assert desired_xml_hash(XML_A) != desired_xml_hash(XML_B)


def test_hash_ignores_injected_metadata() -> None:
    digest = desired_xml_hash(XML_A)
    stamped = xml_with_hash(XML_A, digest)
    assert recorded_xml_hash(stamped) == digest
    assert desired_xml_hash(stamped) == digest
    # stamping twice replaces, never accumulates
    restamped = xml_with_hash(stamped, "f" * 64)
    assert recorded_xml_hash(restamped) == "f" * 64
    assert restamped.count("xml-sha256>") == 2  # one open + one close tag


def test_stamp_keeps_foreign_metadata() -> None:
    xml = XML_A.replace(
        "</domain>",
        '<metadata><nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">'
        "x</nova:instance></metadata></domain>",
    )
    stamped = xml_with_hash(xml, "0" * 64)
    assert "openstack.org" in stamped
    assert recorded_xml_hash(stamped) == "0" * 64
    assert desired_xml_hash(stamped) == desired_xml_hash(xml)


def test_stamp_injects_uuid_only_if_missing() -> None:
    stamped = xml_with_hash(XML_A, "0" * 64, uuid=GOOD_UUID)
    assert domain_xml_uuid(stamped) == GOOD_UUID
    other = "11111111-2222-3333-4444-555555555555"
    with_uuid = XML_A.replace("<name>vm1</name>", f"<name>vm1</name><uuid>{other}</uuid>")
    assert domain_xml_uuid(xml_with_hash(with_uuid, "0" * 64, uuid=GOOD_UUID)) == other


def test_recorded_hash_absent_and_name() -> None:
    assert recorded_xml_hash(XML_A) is None
    assert domain_xml_name(XML_A) == "vm1"


@pytest.mark.parametrize("bad", ["", "<domain", "<network/>", "not xml"])
def test_invalid_xml_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid domain XML"):
        desired_xml_hash(bad)


class _FailingModule:
    """Stands in for AnsibleModule: fail_json raises so the test can inspect the call."""

    def fail_json(self, **kwargs: object) -> None:
        raise SystemExit(kwargs)


def test_missing_libvirt_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import ansible.module_utils.cloudctl_libvirt as utils

    monkeypatch.setattr(utils, "HAS_LIBVIRT", False)
    monkeypatch.setattr(utils, "LIBVIRT_IMPORT_ERROR", "ModuleNotFoundError: libvirt")
    with pytest.raises(SystemExit) as exc:
        utils.connect(_FailingModule(), "qemu:///system")
    details = exc.value.args[0]
    assert "libvirt-python" in details["msg"]
    assert details["exception"] == "ModuleNotFoundError: libvirt"


def test_connect_failure_names_the_uri() -> None:
    from ansible.module_utils.cloudctl_libvirt import connect

    with pytest.raises(SystemExit) as exc:
        connect(_FailingModule(), "test:///no/such/file.xml")
    assert "cannot connect to libvirt at test:///no/such/file.xml" in exc.value.args[0]["msg"]
