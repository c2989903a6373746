"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse, and the documented options are
exactly the argument_spec (names, types, required, defaults, choices, suboptions)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.library.helpers import LIBRARY

MODULES = [
    "cloudctl_instance_files",
    "cloudctl_migrate",
    "cloudctl_migration_check",
    "cloudctl_host_facts",
    "cloudctl_instance_disks",
    "cloudctl_config_drive",
    "cloudctl_domain",
    "cloudctl_console",
    "cloudctl_snapshot",
    "cloudctl_host_cleanup",
    "cloudctl_domain_info",
    "cloudctl_base_files",
]


def _compare(doc: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    assert sorted(doc) == sorted(spec), f"{where}: documented {sorted(doc)} != spec {sorted(spec)}"
    for name, spec_opt in spec.items():
        doc_opt = doc[name]
        here = f"{where}.{name}"
        assert doc_opt.get("description"), f"{here}: no description"
        assert doc_opt.get("type", "str") == spec_opt.get("type", "str"), here
        assert bool(doc_opt.get("required", False)) == bool(spec_opt.get("required", False)), here
        assert doc_opt.get("default") == spec_opt.get("default"), here
        assert doc_opt.get("choices") == spec_opt.get("choices"), here
        assert doc_opt.get("elements") == spec_opt.get("elements"), here
        _compare(doc_opt.get("suboptions", {}), spec_opt.get("options", {}), here)


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(
    load_module: Callable[[str], ModuleType], name: str
) -> None:
    module = load_module(name)
    documentation = yaml.safe_load(module.DOCUMENTATION)
    assert documentation["module"] == name
    assert documentation["short_description"]
    _compare(documentation["options"], module.ARGUMENT_SPEC, name)
    examples = yaml.safe_load(module.EXAMPLES)
    assert examples and all(
        name in task for task in examples if "ansible.builtin.debug" not in task
    )
    assert yaml.safe_load(module.RETURN)


@pytest.mark.parametrize("name", MODULES)
def test_modules_do_not_import_the_cloudctl_package(name: str) -> None:
    source = (LIBRARY / f"{name}.py").read_text()
    assert "import cloudctl" not in source and "from cloudctl" not in source
    for util in (LIBRARY / "module_utils").glob("*.py"):
        text = util.read_text()
        assert "import cloudctl" not in text and "from cloudctl" not in text
