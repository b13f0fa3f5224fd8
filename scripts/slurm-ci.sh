#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py (never for real work).
#
#   scripts/slurm-ci.sh start    install SLURM + munge if missing (Debian, root), write
#                                /etc/slurm/slurm.conf, start munged, slurmctld and slurmd, wait
#                                until the node is idle. Does nothing if that cluster is already
#                                up (safe to run twice).
#   scripts/slurm-ci.sh stop     stop the daemons that `start` started (by their pid files).
#   scripts/slurm-ci.sh status   exit 0 if that cluster is up with a usable node, 1 if not.
#
# The one node is this machine (NodeName = hostname -s, CPUs = nproc, RealMemory from free -m),
# in one partition `debug` (the default). No accounting: sacct does not work, so a Snakemake run
# against it needs `slurm-status-command: squeue` (the profile that tests/test_slurm.py writes).
# State, spool, logs and pid files live under $SLURM_CI_DIR (default /tmp/slurm-ci).
#
# Exit status of `start`: 0 ready (started, or already up); and, when this machine cannot have it:
#   3  not root                  4  no apt-get (and SLURM not installed)
#   5  apt-get failed            6  this machine has a SLURM of its own (a slurm.conf this script
#                                   did not write, or a controller that answers): left alone
# then 7 when the daemons do not come up (a real failure; see the logs named in the message).
# The message of 3-7 is the last line on stderr, prefixed "slurm-ci: ".
set -euo pipefail

DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
CONF=/etc/slurm/slurm.conf
MARK="# Written by scripts/slurm-ci.sh (a one-node test cluster); it may rewrite this file."
WAIT_S=${SLURM_CI_WAIT_S:-60}

die() { # die CODE MESSAGE
    echo "slurm-ci: $2" >&2
    exit "$1"
}

node_state() { # [SECONDS] the state of the node(s) as sinfo prints it, empty when SLURM does not answer
    command -v sinfo >/dev/null || return 0
    timeout "${1:-10}" sinfo -h -o %t 2>/dev/null | tr -d '* ' | sort -u | paste -sd, || true
}

usable() { # [SECONDS] idle, or already running jobs (sinfo takes 9 s to give up on a dead controller)
    case "$(node_state "${1:-10}")" in
        idle | mix | alloc | idle,* | mix,* | alloc,*) return 0 ;;
        *) return 1 ;;
    esac
}

pid_of() { # pid_of NAME: the pid in $DIR/NAME.pid if that process is still NAME
    local file=$DIR/$1.pid pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die 4 "SLURM is not installed and there is no apt-get to install it"
    echo "slurm-ci: installing slurmctld slurmd slurm-client munge" >&2
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge; } >"$DIR/apt.log" 2>&1; then
        tail -n 5 "$DIR/apt.log" >&2
        die 5 "apt-get could not install slurmctld slurmd slurm-client munge (log: $DIR/apt.log)"
    fi
}

start_munge() {
    mkdir -p /run/munge
    chown munge:munge /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0 # a munged is already running (not ours: `stop` leaves it)
    fi
    runuser -u munge -- /usr/sbin/munged
    local i
    for i in $(seq 50); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            cp /run/munge/munged.pid "$DIR/munged.pid" # ours: `stop` ends it
            return 0
        fi
        sleep 0.1
    done
    die 7 "munged did not start (munge -n | unmunge fails)"
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(free -m | awk '/^Mem:/ {print $2}')
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<EOF
$MARK
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

ours() { # /etc/slurm/slurm.conf is the one this script writes
    [[ -e $CONF ]] && grep -qxF "$MARK" "$CONF"
}

up() { # our SLURM answers: its daemons run and the node is usable
    ours && pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && usable
}

start() {
    if up; then
        echo "slurm-ci: SLURM is already up ($(node_state)); nothing to do"
        return 0
    fi
    # A SLURM of this machine's own (a real cluster) is left alone: no test jobs go to it.
    if [[ -e $CONF ]] && ! ours; then
        die 6 "$CONF exists and was not written by this script; not touching this machine's SLURM"
    fi
    if [[ ! -e $CONF ]] && usable; then
        die 6 "a SLURM not set up by this script answers here; not touching this machine's SLURM"
    fi
    [[ $(id -u) -eq 0 ]] || die 3 "not root: installing and starting SLURM needs root"
    mkdir -p "$DIR"
    install_packages
    write_conf
    start_munge
    pid_of slurmctld >/dev/null || slurmctld
    pid_of slurmd >/dev/null || slurmd
    local waited=0
    sleep 0.5 # before slurmctld listens, sinfo waits 9 s for it
    until usable 2; do
        if ((waited >= WAIT_S)); then
            die 7 "the node is not idle after ${WAIT_S} s (state: '$(node_state)'; logs: $DIR/slurmctld.log, $DIR/slurmd.log)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "slurm-ci: SLURM is up: node $(hostname -s) $(node_state), partition debug (state in $DIR)"
}

stop() {
    local name pid pids=() stopped=()
    for name in slurmd slurmctld munged; do
        if pid=$(pid_of "$name"); then
            kill "$pid"
            pids+=("$pid")
            stopped+=("$name")
        fi
        rm -f "$DIR/$name.pid"
    done
    for pid in "${pids[@]}"; do # each takes about 2 s to end
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    done
    echo "slurm-ci: stopped ${stopped[*]:-nothing}"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) up ;;
    *) die 2 "usage: $0 [start|stop|status]" ;;
esac
