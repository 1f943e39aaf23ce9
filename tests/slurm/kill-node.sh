#!/usr/bin/env bash
# tests/slurm/kill-node.sh NODE -- make compute node NODE of the multi-node test cluster
# (SLURM_NODES >= 2 tests/slurm/start.sh) fail the way a power loss does: SIGKILL to every
# process in its network namespace, i.e. its slurmd and the slurmstepd, batch shell and vaepipe
# of each job running there. slurmctld declares the node DOWN after SlurmdTimeout (10 s) and
# ends its jobs with NODE_FAIL (requeued when submitted with --requeue). Running
# tests/slurm/start.sh again brings the node back.
set -euo pipefail
STATE=${LOCAL_SLURM_STATE:-/tmp/local-slurm}
export PATH=/usr/sbin:/sbin:$PATH
# shellcheck source=tests/slurm/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/procs.sh"
node=${1:?usage: kill-node.sh NODE (n1, n2, ...)}
ns=$(netns_of "$node")
grep -qx "netns $ns" "$STATE/run/net" 2>/dev/null \
  || { echo "kill-node.sh: $node is not a node of the multi-node cluster in $STATE" >&2; exit 1; }
pids=$(ip netns pids "$ns" | tr '\n' ' ')
[ -n "${pids// /}" ] || { echo "kill-node.sh: nothing runs on $node" >&2; exit 1; }
# shellcheck disable=SC2086
kill -KILL $pids
for _ in $(seq 50); do
  [ -z "$(ip netns pids "$ns")" ] && break; sleep 0.1
done
echo "killed node $node (pids $pids)" >&2
