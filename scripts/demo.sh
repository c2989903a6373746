#!/usr/bin/env bash
# `make demo`: a lab of three real compute hosts on this machine (each its own namespaces,
# libvirtd and sshd, spread over three AZs, reached by Ansible over SSH), a flavor and the tiny
# image; three guests booted across the lab, each waited for until it prints its console marker.
# Re-running is harmless: the lab is reconciled, existing guests are kept, ERROR ones replaced.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
status_of() {
    cloudctl -q show "$1" -o json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' || echo absent
}

step "lab: 3 compute hosts in 3 availability zones"
cloudctl lab up --hosts 3 --azs 3
# An older demo registered this machine itself as host 'local'; the lab is the demo now.
if cloudctl -q host show local >/dev/null 2>&1; then
    cloudctl -q host disable local --reason "make demo uses the lab" >/dev/null
fi

step "flavor m1.tiny and the tiny test image"
cloudctl -q flavor show m1.tiny >/dev/null 2>&1 ||
    cloudctl flavor create m1.tiny --vcpus 1 --ram 128 --disk 1
cloudctl image create-tiny tiny

step "boot demo-1..demo-3 (one Ansible play; the RAM weigher spreads them over the lab)"
missing=0
for name in demo-1 demo-2 demo-3; do
    status=$(status_of "$name")
    if [[ $status == ERROR ]]; then cloudctl delete "$name"; status=absent; fi
    if [[ $status == absent ]]; then missing=$((missing + 1)); else echo "$name is already $status"; fi
done
if [[ $missing == 3 ]]; then
    cloudctl boot demo --count 3 --flavor m1.tiny --image tiny
else
    for name in demo-1 demo-2 demo-3; do
        if [[ $(status_of "$name") == absent ]]; then
            cloudctl boot "$name" --flavor m1.tiny --image tiny
        fi
    done
fi

step "boot one more guest into az2 only"
if [[ $(status_of demo-az2) == absent ]]; then
    cloudctl boot demo-az2 --flavor m1.tiny --image tiny --az az2
fi

step "wait for each guest's console marker (read over SSH from its lab host)"
for name in demo-1 demo-2 demo-3 demo-az2; do
    cloudctl -q console "$name" --wait-for 'CLOUDCTL-GUEST-UP' --timeout 180 | grep 'CLOUDCTL-GUEST-UP'
done

step "cloudctl lab status / host list / list"
cloudctl lab status
cloudctl host list
cloudctl list
cat <<'TXT'

Try (with PATH=.venv/bin:$PATH): cloudctl show demo-1 | cloudctl action list demo-az2
     cloudctl console demo-2 | cloudctl lab status | cloudctl lab down
TXT
