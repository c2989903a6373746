# shellcheck shell=bash
# Helpers sourced by the scripts beside it. No systemd on these machines; we are root.

export DEBIAN_FRONTEND=noninteractive

log() { printf '%s\n' "$*" >&2; }

# Print those of the given Debian packages that are not installed (one per line).
debs_missing() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query --show --showformat='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [[ $status == installed ]] || printf '%s\n' "$pkg"
    done
}

# Install the given Debian packages unless all are installed already (then: no apt, no network).
# The package lists may be empty on a fresh machine, so `apt-get update` comes first.
ensure_debs() {
    local missing
    missing=$(debs_missing "$@")
    [[ -z $missing ]] && return 0
    # shellcheck disable=SC2086  # one package per word
    log "installing Debian packages:" $missing
    local apt_opts=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 -q)
    apt-get "${apt_opts[@]}" update >/dev/null
    # shellcheck disable=SC2086
    apt-get "${apt_opts[@]}" install -y --no-install-recommends $missing >/dev/null
}
