#!/usr/bin/env bash
# A libvirtd for the real-guest tests and benchmark, without systemd.
#   libvirtd.sh start DIR   start virtlogd + libvirtd (pid files and logs in DIR, an empty
#                           folder) unless a libvirtd already answers on qemu:///system;
#                           prints the URI to use
#   libvirtd.sh stop DIR    if this run started the daemon: destroy the test domains left
#                           (names starting vmsnap-test-), stop
#                           the daemons this script started in DIR, remove DIR
# Needs root (qemu:///system) and Debian libvirt-daemon, libvirt-daemon-driver-qemu,
# libvirt-clients and qemu-system-x86. A libvirtd that was already running is used as it
# is and left running.
set -euo pipefail
action=${1:?start or stop}
dir=${2:?the state folder}
uri=qemu:///system
export LC_ALL=C

answers() {
    timeout 10 virsh -c "$uri" version >/dev/null 2>&1
}

start() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: libvirtd.sh needs root (qemu:///system)" >&2
        exit 2
    fi
    for program in libvirtd virtlogd virsh qemu-system-x86_64; do
        if ! command -v "$program" >/dev/null 2>&1; then
            echo "error: $program not found; install the Debian packages .ci/run lists" >&2
            exit 2
        fi
    done
    mkdir -p "$dir"
    if answers; then
        echo "reused" >"$dir/reused"
        echo "$uri"
        return
    fi
    # What libvirt-daemon-system would have set up: the QEMU user and the state folders.
    getent group kvm >/dev/null || groupadd --system kvm
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null ||
        useradd --system --gid libvirt-qemu --groups kvm --no-create-home \
            --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu
    mkdir -p /var/run/libvirt /var/log/libvirt /var/lib/libvirt/qemu
    # virtlogd first: libvirtd hands it the QEMU console output.
    virtlogd --daemon --pid-file "$dir/virtlogd.pid"
    LIBVIRT_LOG_OUTPUTS="3:file:$dir/libvirtd.log" \
        libvirtd --daemon --pid-file "$dir/libvirtd.pid"
    for _ in $(seq 1 100); do
        if answers; then
            echo "$uri"
            return
        fi
        # A libvirtd that failed to start its drivers exits: stop waiting then.
        kill -0 "$(cat "$dir/libvirtd.pid" 2>/dev/null || echo 0)" 2>/dev/null || break
        sleep 0.2
    done
    stop_pid "$dir/virtlogd.pid"
    echo "error: libvirtd did not answer on $uri; its log:" >&2
    tail -20 "$dir/libvirtd.log" >&2 || true
    exit 1
}

stop_pid() {
    local file=$1
    [ -f "$file" ] || return 0
    local pid
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    # Only the daemon's starter sweeps up test domains left by a crash: a run that reused a
    # daemon must not destroy the guests of the run (a CI job, a demo) that started it.
    if [ ! -f "$dir/reused" ]; then
        if answers; then
            for domain in $(virsh -c "$uri" list --all --name 2>/dev/null | grep '^vmsnap-test-' || true); do
                virsh -c "$uri" destroy "$domain" >/dev/null 2>&1 || true
                virsh -c "$uri" undefine "$domain" --snapshots-metadata >/dev/null 2>&1 || true
            done
        fi
        stop_pid "$dir/libvirtd.pid"
        stop_pid "$dir/virtlogd.pid"
    fi
    rm -rf "$dir"
}

case "$action" in
start) start ;;
stop) stop ;;
*)
    echo "error: unknown action $action (start or stop)" >&2
    exit 2
    ;;
esac
