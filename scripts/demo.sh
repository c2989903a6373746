#!/usr/bin/env bash
# `make demo`: a lab of four real compute hosts on this machine (each its own namespaces,
# libvirtd and sshd, spread over two AZs, reached by Ansible over SSH), a flavor and the tiny
# image; four guests booted across the lab, each waited for until it prints its console marker.
# Then the desired state of examples/estate/: validated, planned, applied, planned again (nothing
# left to do) and verified against what the hosts report.
# Re-running is harmless: the lab is reconciled, existing guests are kept, ERROR ones replaced,
# and the second apply finds nothing to do. The lab stays up (`cloudctl lab down` removes it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
status_of() {
    cloudctl -q show "$1" -o json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' || echo absent
}

step "lab: 4 compute hosts in 2 availability zones (lab-1, lab-3 in az1; lab-2, lab-4 in az2)"
cloudctl lab up --hosts 4 --azs 2
# An older demo registered this machine itself as host 'local'; the lab is the demo now.
if cloudctl -q host show local >/dev/null 2>&1; then
    cloudctl -q host disable local --reason "make demo uses the lab" >/dev/null
fi

step "one reconcile pass: the books learn what the hosts run (after a restart, guests are off)"
cloudctl reconcile >/dev/null

step "flavor m1.tiny and the tiny test image"
cloudctl -q flavor show m1.tiny >/dev/null 2>&1 ||
    cloudctl flavor create m1.tiny --vcpus 1 --ram 128 --disk 1
cloudctl image create-tiny tiny

step "boot demo-1..demo-3 (one Ansible play; the RAM weigher spreads them over the lab)"
missing=0
for name in demo-1 demo-2 demo-3; do
    status=$(status_of "$name")
    if [[ $status == ERROR ]]; then cloudctl delete "$name"; status=absent; fi
    if [[ $status == SHUTOFF ]]; then cloudctl start "$name" >/dev/null; status=$(status_of "$name"); fi
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
case $(status_of demo-az2) in
    absent) cloudctl boot demo-az2 --flavor m1.tiny --image tiny --az az2 ;;
    SHUTOFF) cloudctl start demo-az2 >/dev/null ;;
    *) echo "demo-az2 is already $(status_of demo-az2)" ;;
esac

step "wait for each guest's console marker (read over SSH from its lab host)"
for name in demo-1 demo-2 demo-3 demo-az2; do
    cloudctl -q console "$name" --wait-for 'CLOUDCTL-GUEST-UP' --timeout 180 | grep 'CLOUDCTL-GUEST-UP'
done

ESTATE=examples/estate
step "desired state: cloudctl validate -f $ESTATE"
cloudctl validate -f "$ESTATE"

step "cloudctl plan -f $ESTATE (where each new server lands and why, capacity before/after)"
cloudctl plan -f "$ESTATE"

step "cloudctl apply -f $ESTATE --auto-approve"
cloudctl apply -f "$ESTATE" --auto-approve

step "cloudctl plan -f $ESTATE --detailed-exitcode (0: nothing left to do)"
rc=0
cloudctl plan -f "$ESTATE" --detailed-exitcode || rc=$?
if [[ $rc != 0 ]]; then
    echo "demo: expected no changes after apply, plan exited $rc" >&2
    exit 1
fi

step "wait for the running servers of the estate to print their console marker"
for name in web-1 web-2 web-3 db cache; do
    cloudctl -q console "$name" --wait-for 'CLOUDCTL-GUEST-UP' --timeout 300 | grep 'CLOUDCTL-GUEST-UP'
done

step "cloudctl verify (SQL, ledger and every host's domains and files agree)"
cloudctl verify

step "cloudctl lab status / host list / list / state show"
cloudctl lab status
cloudctl host list
cloudctl list
cloudctl state show
cat <<'TXT'

Try (with PATH=.venv/bin:$PATH): cloudctl show demo-1 | cloudctl action list demo-az2
     cloudctl console db | cloudctl plan -f examples/estate -o markdown
     edit examples/estate/servers.yaml (replicas, flavor, pinned host, power_state), plan, apply
     cloudctl lab status | cloudctl lab down (the lab stays up until then)
TXT
