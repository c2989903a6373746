"""Helpers shared by the tests of the custom Ansible modules in ``library/``.

Importing this module extends ``ansible.module_utils`` with ``library/module_utils`` so the
modules and their helpers import in-process exactly as inside an AnsiballZ payload.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import ansible.module_utils

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "library"
MODULE_UTILS = LIBRARY / "module_utils"
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python" if (VENV_BIN / "python").exists() else Path(sys.executable)
LIBVIRT_URI = "qemu:///system"

if str(MODULE_UTILS) not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(MODULE_UTILS))

PlayRunner = Callable[..., list[dict[str, Any]]]


def load_library_module(name: str) -> ModuleType:
    """Import ``library/<name>.py`` as a Python module."""
    spec = importlib.util.spec_from_file_location(
        f"cloudctl_library_{name}", LIBRARY / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def ansible_bin_dir() -> str:
    """Directory of the ansible-playbook to run (the venv's if there is one)."""
    if (VENV_BIN / "ansible-playbook").exists():
        return str(VENV_BIN)
    found = shutil.which("ansible-playbook")
    assert found, "ansible-playbook not found"
    return str(Path(found).parent)


# kvm on these machines; CLOUDCTL_TEST_VIRT_TYPE=qemu where /dev/kvm is missing.
TEST_VIRT_TYPE = os.environ.get("CLOUDCTL_TEST_VIRT_TYPE", "kvm")


def tiny_domain_xml(
    name: str,
    domain_type: str = TEST_VIRT_TYPE,
    memory_mib: int = 64,
    domain_uuid: str | None = None,
) -> str:
    """A firmware-only, disk-less domain that starts in about a second and ignores ACPI."""
    root = ET.Element("domain", type=domain_type)
    ET.SubElement(root, "name").text = name
    if domain_uuid:
        ET.SubElement(root, "uuid").text = domain_uuid
    ET.SubElement(root, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(root, "vcpu").text = "1"
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64").text = "hvm"
    return ET.tostring(root, encoding="unicode")


def guest_task(
    module: str,
    instances_path: Path,
    guests: list[dict[str, Any]],
    state: str = "present",
    check: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A playbook task calling a guest-list module on ``instances_path`` (check mode if asked)."""
    task: dict[str, Any] = {
        module: {"instances_path": str(instances_path), "state": state, "guests": guests}
    }
    if check:
        task["check_mode"] = True
    task.update(extra)
    return task
