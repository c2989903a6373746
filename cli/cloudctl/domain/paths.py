"""Where the project's own files live (the repository root holds playbooks, roles, templates)."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository (or source distribution) root: ``cli/cloudctl/domain/paths.py`` -> 3 levels up.
REPO_ROOT = Path(os.environ.get("CLOUDCTL_REPO_ROOT", Path(__file__).resolve().parents[3]))
PLAYBOOKS_DIR = REPO_ROOT / "playbooks"
ROLES_DIR = REPO_ROOT / "roles"
LIBRARY_DIR = REPO_ROOT / "library"
MODULE_UTILS_DIR = LIBRARY_DIR / "module_utils"
TEMPLATES_DIR = REPO_ROOT / "templates"

#: Default location of guest files on a compute host (Nova's ``instances_path``).
DEFAULT_INSTANCES_PATH = "/var/lib/cloudctl/instances"
#: Default Linux bridge guests' NICs attach to on a compute host.
DEFAULT_BRIDGE = "cloudbr0"
