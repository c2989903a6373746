#!/usr/bin/env bash
# Debian packages the controller's venv needs before `pip install -e '.[dev]'`:
# libvirt-python builds from source against libvirt-dev + pkg-config + gcc; python3-apt lets
# Ansible's apt module run (it re-executes itself under Debian's python3, which has apt_pkg).
# Idempotent and quick (one dpkg-query per package) when everything is there.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_debs libvirt-dev pkg-config gcc python3-dev python3-venv python3-apt
