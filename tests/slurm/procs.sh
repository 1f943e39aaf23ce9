# tests/slurm/procs.sh -- process helpers shared by start.sh and stop.sh (sourced, not run):
# daemons are identified by our pid files, never by process name alone.

# running PID: alive and not a zombie (a container's PID 1 may reap late or never)
running() {
  local st
  st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
# pid_alive PIDFILE NAME: print the pid and succeed iff that pid runs and is NAME
# (guards against stale pid files and pid reuse; pid_max is often only 32768)
pid_alive() {
  local f=$1 name=$2 pid comm
  [ -s "$f" ] || return 1
  pid=$(tr -dc '0-9' < "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  case "$comm" in "$name"|"$name"-wlm) ;; *) return 1;; esac
  running "$pid" || return 1
  printf '%s' "$pid"
}
