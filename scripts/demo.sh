#!/usr/bin/env bash
# `make demo`: register this machine as a compute host, a flavor and the tiny image, boot two
# guests, wait until each prints its marker on its serial console, and list them.
# Re-running is harmless: what exists is kept, a guest left in ERROR is replaced.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "compute host 'local' (this machine, TCG guests)"
if cloudctl -q host show local >/dev/null 2>&1; then
    cloudctl host discover local
else
    cloudctl host add local --uri qemu:///system --virt-type qemu --az nova
fi

step "flavor m1.tiny and the tiny test image"
cloudctl -q flavor show m1.tiny >/dev/null 2>&1 ||
    cloudctl flavor create m1.tiny --vcpus 1 --ram 128 --disk 1
cloudctl image create-tiny tiny

step "boot demo-1 and demo-2 (one Ansible play for both)"
declare -A status
for name in demo-1 demo-2; do
    status[$name]=$(cloudctl -q show "$name" -o json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' || echo absent)
    if [[ ${status[$name]} == ERROR ]]; then
        cloudctl delete "$name"
        status[$name]=absent
    fi
done
if [[ ${status[demo-1]} == absent && ${status[demo-2]} == absent ]]; then
    cloudctl boot demo --count 2 --flavor m1.tiny --image tiny
else
    for name in demo-1 demo-2; do
        if [[ ${status[$name]} == absent ]]; then
            cloudctl boot "$name" --flavor m1.tiny --image tiny
        else
            echo "$name is already ${status[$name]}"
        fi
    done
fi

step "wait for each guest's console marker"
for name in demo-1 demo-2; do
    cloudctl -q console "$name" --wait-for 'CLOUDCTL-GUEST-UP' --timeout 180 | grep 'CLOUDCTL-GUEST-UP'
done

step "cloudctl list"
cloudctl list
cat <<'TXT'

Try: cloudctl show demo-1 | cloudctl action list demo-1 | cloudctl console demo-2
     cloudctl host list | cloudctl delete demo-1 demo-2       (PATH=.venv/bin:$PATH)
TXT
