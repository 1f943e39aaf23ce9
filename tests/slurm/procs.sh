# tests/slurm/procs.sh -- process and network helpers shared by start.sh, stop.sh and
# kill-node.sh (sourced, not run):
# daemons are identified by our pid files, never by process name alone.
# shellcheck shell=bash

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

# ---------------------------------------------------------------- the nodes' network (SLURM_NODES >= 2)
# Node nK runs in network namespace vpslurm-nK, linked by a veth pair (host side vpslurm-nK,
# namespace side eth0) to the bridge vpslurm0, which holds the controller's address SUBNET.1;
# node K is SUBNET.(10+K). Everything created is listed in $STATE/run/net, one "kind name"
# per line, so that net_down removes exactly that.
NET_BRIDGE=vpslurm0
netns_of() { printf 'vpslurm-%s' "$1"; }

# net_up STATE NODES SUBNET: create (or keep) the bridge and one namespace per node
net_up() {
  local state=$1 nodes=$2 subnet=$3 i ns addrs
  local rec=$state/run/net
  touch "$rec"
  if ! ip link show "$NET_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NET_BRIDGE" type bridge || return 1
    echo "bridge $NET_BRIDGE" >> "$rec"
  fi
  # (output captured first: with pipefail, `ip … | grep -q` fails when grep exits early)
  addrs=$(ip addr show dev "$NET_BRIDGE") || return 1
  grep -qF "inet $subnet.1/" <<<"$addrs" || ip addr add "$subnet.1/24" dev "$NET_BRIDGE" || return 1
  ip link set "$NET_BRIDGE" up || return 1
  for i in $(seq "$nodes"); do
    ns=$(netns_of "n$i")
    if [ ! -e "/run/netns/$ns" ]; then
      ip netns add "$ns" || return 1
      echo "netns $ns" >> "$rec"
    fi
    if ! ip link show "$ns" >/dev/null 2>&1; then
      ip link add "$ns" type veth peer name eth0 netns "$ns" || return 1
      ip link set "$ns" master "$NET_BRIDGE" || return 1
    fi
    ip link set "$ns" up || return 1
    ip -n "$ns" link set lo up || return 1
    addrs=$(ip -n "$ns" addr show dev eth0) || return 1
    grep -qF "inet $subnet.$((10 + i))/" <<<"$addrs" \
      || ip -n "$ns" addr add "$subnet.$((10 + i))/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
  done
}

# net_down STATE [KEEP]: remove the namespaces this script created for nodes above KEEP
# (default 0: all, and then the bridge), killing what still runs in them (our nodes' jobs)
net_down() {
  local state=$1 keep=${2:-0} kind name k pids left=()
  local rec=$state/run/net
  [ -s "$rec" ] || return 0
  while read -r kind name; do
    case "$kind" in
      netns)
        k=${name#vpslurm-n}
        if [ "$k" -le "$keep" ] 2>/dev/null; then left+=("$kind $name"); continue; fi
        pids=$(ip netns pids "$name" 2>/dev/null | tr '\n' ' ')
        if [ -n "${pids// /}" ]; then
          # shellcheck disable=SC2086
          kill -TERM $pids 2>/dev/null; sleep 1
          pids=$(ip netns pids "$name" 2>/dev/null | tr '\n' ' ')
          # shellcheck disable=SC2086
          [ -z "${pids// /}" ] || kill -KILL $pids 2>/dev/null
        fi
        ip link del "$name" 2>/dev/null   # the veth pair (also removed with the namespace)
        ip netns del "$name" 2>/dev/null || true;;
      bridge)
        if [ "$keep" -gt 0 ]; then left+=("$kind $name"); continue; fi
        ip link del "$name" 2>/dev/null || true;;
    esac
  done < "$rec"
  if [ "${#left[@]}" = 0 ]; then rm -f "$rec"; else printf '%s\n' "${left[@]}" > "$rec"; fi
}
