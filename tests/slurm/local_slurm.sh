#!/usr/bin/env bash
# A real single-node Slurm (slurmctld + slurmd + munge) for the launch/executor tests.
#
#   tests/slurm/local_slurm.sh start    install if missing, configure, start, wait until idle
#   tests/slurm/local_slurm.sh stop     stop the daemons this script started (by pid file)
#   tests/slurm/local_slurm.sh status   exit 0 iff the node answers (idle, or busy with jobs)
#
# Writes /etc/slurm/slurm.conf (what every Slurm client reads by default, so tests and
# job scripts need no SLURM_CONF); a foreign file there is backed up once. State, spool,
# logs and pid files live under $LMPIPE_SLURM_DIR (default /tmp/lmpipe-slurm).
# Exit codes: 0 ok, 1 failed, 2 usage, 3 cannot run here (not root, no apt) -> tests skip.
set -euo pipefail

STATE_DIR="${LMPIPE_SLURM_DIR:-/tmp/lmpipe-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# Written by lmpipe tests/slurm/local_slurm.sh"
NODE="$(hostname -s)"  # slurmd matches NodeName against the short host name
WAIT_S="${LMPIPE_SLURM_WAIT_S:-60}"
MUNGE_PID=/run/munge/munged.pid

log() { echo "local_slurm: $*"; }
die() { echo "local_slurm: error: $*" >&2; exit "${2:-1}"; }
cannot() { die "$1" 3; }  # this machine cannot host Slurm: the tests skip, CI fails

pid_alive() {  # pid_alive FILE NAME: the pid in FILE runs a process called NAME
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(<"$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }

node_up() {  # idle, or running jobs; a trailing '*' means "not responding"
  # No controller -> no sinfo, which would retry for ~9 s before giving up.
  pid_alive "$STATE_DIR/slurmctld.pid" slurmctld || return 1
  [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || cannot "Slurm is not installed and there is no apt-get to install it"
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # The lock timeout lets a concurrent apt-get (another test session) finish first.
  local out="$STATE_DIR/apt.log"
  apt-get -qq -o DPkg::Lock::Timeout=300 update >"$out" 2>&1 \
    || die "apt-get update failed; see $out"
  apt-get -qq -y -o DPkg::Lock::Timeout=300 install --no-install-recommends "${missing[@]}" >>"$out" 2>&1 \
    || die "apt-get install ${missing[*]} failed; see $out"
}

write_conf() {
  local cpus mem_mb
  cpus="$(nproc)"
  # slurmd drains a node that reports less memory than configured: leave a margin.
  mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 1024); d = int(m / 20); if (d < 512) d = 512; print m - d}' /proc/meminfo)
  ((mem_mb > 0)) || mem_mb=1
  mkdir -p /etc/slurm "$STATE_DIR"/{state,spool,log}
  if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF" && [[ ! -e "$CONF.lmpipe-bak" ]]; then
    cp -p "$CONF" "$CONF.lmpipe-bak"
    log "backed up existing $CONF to $CONF.lmpipe-bak"
  fi
  # NodeAddr/SlurmctldHost pinned to 127.0.0.1: works even where the host name does not resolve.
  cat >"$CONF.tmp" <<EOF
$MARKER (single node, state in $STATE_DIR)
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  log "wrote $CONF (node $NODE, CPUs=$cpus, RealMemory=${mem_mb}MB)"
}

start_munge() {
  munge_ok && return 0
  [[ -s /etc/munge/munge.key ]] || {
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  }
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
  su -s /bin/sh munge -c /usr/sbin/munged 9>&- || die "munged failed to start"
  cp "$MUNGE_PID" "$STATE_DIR/munged.pid"  # remember that we started it: stop kills only ours
  for _ in $(seq 50); do munge_ok && return 0; sleep 0.1; done
  die "munge does not answer (munge -n | unmunge)"
}

start() {
  [[ "$(uname -s)" == Linux ]] || cannot "Slurm needs Linux (this is $(uname -s))"
  install_packages
  if node_up; then log "already running: node $NODE is $(node_state)"; return 0; fi
  start_munge
  if ! pid_alive "$STATE_DIR/slurmctld.pid" slurmctld && ! pid_alive "$STATE_DIR/slurmd.pid" slurmd; then
    write_conf  # only while nothing runs, so a running daemon never sees a config it did not start with
  fi
  pid_alive "$STATE_DIR/slurmctld.pid" slurmctld || slurmctld 9>&- || die "slurmctld failed to start; see $STATE_DIR/log/slurmctld.log"
  pid_alive "$STATE_DIR/slurmd.pid" slurmd || slurmd 9>&- || die "slurmd failed to start; see $STATE_DIR/log/slurmd.log"
  local t0=$SECONDS
  while ((SECONDS - t0 < WAIT_S)); do
    if node_up; then log "running: node $NODE is $(node_state) after $((SECONDS - t0)) s"; return 0; fi
    # A node left down/drained by an earlier run: ask for it back.
    if [[ "$(node_state)" =~ ^(down|drain) ]]; then
      scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 1
  done
  tail -n 5 "$STATE_DIR"/log/*.log >&2 || true
  die "node $NODE not idle after ${WAIT_S} s (state: '$(node_state)'); logs in $STATE_DIR/log"
}

stop_pid() {  # stop_pid FILE NAME: TERM, wait up to 15 s, then KILL
  pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
  local pid
  pid="$(<"$1")"
  kill -TERM "$pid"
  for _ in $(seq 150); do pid_alive "$1" "$2" || break; sleep 0.1; done
  pid_alive "$1" "$2" && kill -KILL "$pid"
  rm -f "$1"
  log "stopped $2 (pid $pid)"
}

stop() {
  stop_pid "$STATE_DIR/slurmd.pid" slurmd
  stop_pid "$STATE_DIR/slurmctld.pid" slurmctld
  # munged only if this script started it (its pid file copy says so and still matches).
  if [[ -s "$STATE_DIR/munged.pid" ]] && [[ "$(cat "$MUNGE_PID" 2>/dev/null)" == "$(<"$STATE_DIR/munged.pid")" ]]; then
    stop_pid "$STATE_DIR/munged.pid" munged
  fi
  rm -f "$STATE_DIR/munged.pid"
}

status() {
  if command -v sinfo >/dev/null && node_up; then log "up: node $NODE is $(node_state)"; return 0; fi
  if pid_alive "$STATE_DIR/slurmctld.pid" slurmctld; then
    log "down: node $NODE is '$(node_state)'"
  else
    log "down: slurmctld is not running (no live pid in $STATE_DIR/slurmctld.pid)"
  fi
  return 1
}

case "${1:-}" in
  start | stop)
    [[ "$(id -u)" == 0 ]] || cannot "must run as root to $1 Slurm (running as $(id -un))"
    # One start/stop at a time: concurrent test sessions share this Slurm.
    # (The daemons are started with fd 9 closed so that they do not inherit the lock.)
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w 600 9 || die "another local_slurm.sh holds $STATE_DIR/lock"
    "$1"
    ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" 2 ;;
esac
