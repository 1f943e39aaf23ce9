#!/usr/bin/env bash
# shellcheck disable=SC2016  # $SLURM_* must expand inside the job, not here
# tests/slurm/smoke-test.sh -- diagnose the local SLURM from tests/slurm/start.sh (not run by CI;
# use it when the SLURM tests fail for reasons outside vaepipe).
# Checks: plain sbatch, 4-task array, signal delivery to the batch shell,
# scontrol requeue (external and self-requeue from a USR1 trap), job state after
# completion (squeue -t all, scontrol, jobcomp file, and sacct when slurmdbd is on).
set -euo pipefail
STATE=${LOCAL_SLURM_STATE:-/tmp/local-slurm}
export SLURM_CONF=${LOCAL_SLURM_CONF:-/etc/slurm/slurm.conf}
W=$(mktemp -d /tmp/local-slurm-smoke.XXXXXX); chmod 755 "$W"; cd "$W"
now() { date +%s.%N; }
since() { printf '%.2f' "$(echo "$(now) - $1" | bc)"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# state JOBID -> e.g. COMPLETED (works while the job is in slurmctld memory: MinJobAge)
state() { squeue -h -t all -j "$1" -o '%T' 2>/dev/null | sort -u | tr '\n' ' ' | sed 's/ $//'; }
wait_gone() { # wait until no task of $1 is pending/running/completing
  local t=0; while [ -n "$(squeue -h -j "$1" 2>/dev/null)" ]; do sleep 0.1; t=$((t+1)); [ $t -lt "${2:-600}" ] || fail "job $1 still queued"; done; }
wait_state() { # JOBID REGEX [tenths]
  local t=0; until state "$1" | grep -Eq "$2"; do sleep 0.1; t=$((t+1)); [ $t -lt "${3:-600}" ] || fail "job $1 never reached $2 (now: $(state "$1"))"; done; }

echo "== 1. plain job"
T=$(now); J=$(sbatch --parsable --wrap 'hostname'); J=${J%%;*}; wait_gone "$J"
[ "$(cat "slurm-$J.out")" = "$(uname -n)" ] || fail "hostname output"
[ "$(state "$J")" = COMPLETED ] || fail "state $(state "$J")"
echo "   ok: job $J COMPLETED in $(since "$T")s"

echo "== 2. array job 0-3"
T=$(now); A=$(sbatch --parsable --array=0-3 -o "arr-%A_%a.out" --wrap "echo \$SLURM_ARRAY_TASK_ID > $W/out_\$SLURM_ARRAY_TASK_ID"); A=${A%%;*}
wait_gone "$A"
for i in 0 1 2 3; do [ "$(cat "out_$i")" = "$i" ] || fail "out_$i"; done
[ "$(state "$A")" = COMPLETED ] || fail "array states $(state "$A")"
echo "   ok: array $A all COMPLETED in $(since "$T")s"

echo "== 3. failing array task -> FAILED + exit code visible"
F=$(sbatch --parsable --array=0-1 -o /dev/null --wrap 'exit $((SLURM_ARRAY_TASK_ID * 7))'); F=${F%%;*}; wait_gone "$F"
scontrol show job "${F}_1" | grep -q 'JobState=FAILED.*' || fail "task 1 not FAILED"
scontrol show job "${F}_1" | grep -q 'ExitCode=7:0' || fail "task 1 exit code"
echo "   ok: ${F}_1 FAILED ExitCode=7:0 (scontrol show job)"

echo "== 4. signal to batch shell (scancel --signal=USR1 --batch = immediate 'preemption warning')"
cat > sig.sh <<'EOF'
#!/bin/bash
trap 'echo got-USR1; exit 0' USR1
echo started
sleep 300 & wait     # bash runs traps only between commands: background + wait
EOF
S=$(sbatch --parsable -o sig.out sig.sh); S=${S%%;*}; wait_state "$S" RUNNING
sleep 0.5; T=$(now); scancel --signal=USR1 --batch "$S"; wait_gone "$S"
grep -q got-USR1 sig.out || fail "USR1 not received"
echo "   ok: USR1 handled, job ended $(since "$T")s after scancel -b -s USR1"

echo "== 5. scontrol requeue (external) then self-requeue from USR1 trap"
cat > rq.sh <<'EOF'
#!/bin/bash
#SBATCH --requeue --open-mode=append
echo "run ${SLURM_RESTART_COUNT:-0}"
trap 'scontrol requeue $SLURM_JOB_ID; exit 0' USR1
if [ "${SLURM_RESTART_COUNT:-0}" -lt 2 ]; then sleep 300 & wait; fi
echo "done ${SLURM_RESTART_COUNT:-0}"
EOF
R=$(sbatch --parsable -o rq.out rq.sh); R=${R%%;*}; wait_state "$R" RUNNING
T=$(now); scontrol requeue "$R"; sleep 1; wait_state "$R" RUNNING 600
echo "   requeue -> running again after $(since "$T")s"
until grep -q 'run 1' rq.out 2>/dev/null; do sleep 0.1; done
T=$(now); scancel --signal=USR1 --batch "$R"; wait_state "$R" COMPLETED 600
echo "   self-requeue -> completed after $(since "$T")s"
{ [ "$(grep -c '^run' rq.out)" = 3 ] && grep -q 'done 2' rq.out; } || fail "requeue runs: $(cat rq.out)"
scontrol show job "$R" | grep -q 'Restarts=2' || fail "Restarts!=2"
echo "   ok: 3 runs, Restarts=2"

echo "== 6. job state after completion"
grep -q "JobId=$J .*JobState=COMPLETED" "$STATE/log/jobcomp.log" && echo "   ok: jobcomp/filetxt has JobId=$J COMPLETED"
if sacct -n -j "$J" >/dev/null 2>&1; then
  T=$(now)
  until sacct -n -X -P -j "$A" -o JobID,State | grep -c '_[0-3]|COMPLETED' | grep -qx 4; do
    sleep 0.2; [ "$(echo "$(now) - $T > 30" | bc)" = 0 ] || fail "sacct never showed array $A"; done
  echo "   ok: sacct shows array $A COMPLETED ($(since "$T")s lag)"
else
  echo "   (sacct unavailable: $(sacct -j "$J" 2>&1 | head -n1)) -- use squeue -t all / scontrol / jobcomp"
fi
rm -rf "$W"
echo "ALL OK"
