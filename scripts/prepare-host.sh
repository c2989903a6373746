#!/usr/bin/env bash
# Apply roles/libvirt_host to this machine (packages, qemu.conf, directories, virtlogd + libvirtd,
# the guest bridge) with the venv's Ansible. Extra arguments go to ansible-playbook (--check, -v).
# Quiet unless something changes or fails.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
export ANSIBLE_ROLES_PATH=$ROOT/roles
export ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_INVENTORY_UNPARSED_WARNING=False
export ANSIBLE_DISPLAY_OK_HOSTS=${ANSIBLE_DISPLAY_OK_HOSTS:-False}
export ANSIBLE_DISPLAY_SKIPPED_HOSTS=${ANSIBLE_DISPLAY_SKIPPED_HOSTS:-False}
export ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-1}
cd "$ROOT"
exec "$VENV/bin/ansible-playbook" -i localhost, -c local \
    -e "ansible_python_interpreter=$VENV/bin/python" \
    playbooks/prepare_host.yml "$@"
