#!/bin/bash
# End-to-end test of deploy/slurm/ on a real (single-node) Slurm: run as root on a Debian
# bookworm machine or container, no systemd or cgroups needed.
#
#   bash tests/deploy/slurm.sh            # TESSERA_BIN=/path/to/tessera to test another binary
#
# It installs slurm-wlm and munge when missing, starts munged (unless one already answers),
# slurmctld and slurmd on a private configuration (own ports and spool; SLURM_CONF), simulates a
# small recording and runs the reference with the embedded runner. Then, through Slurm only:
# the coordinator runs as a job of deploy/slurm/coordinator.sbatch, four workers as a job array
# of deploy/slurm/workers.sbatch, and the run is submitted. While it runs:
#   - array task 0 gets SIGUSR1 on its batch script only, as `--signal=B:USR1@...` sends it before
#     the walltime: the script forwards it, the worker drains, the job completes with status 0;
#   - array task 1 is cancelled (`scancel`: SIGTERM to all its processes): the worker drains;
#   - array task 2 is killed outright (SIGKILL to all its processes, as when a node fails): its
#     lease expires and its task goes to another worker;
#   - the coordinator's job is cancelled and submitted again with the same state: it publishes
#     a new URL (port 0) and array task 3 follows it.
# The run must succeed, its data must be byte-identical to the reference, no task committed
# before the coordinator stopped may be computed again, and the task provenance records must
# carry the Slurm job ids.
#
# Environment: TESSERA_BIN (default target/debug/tessera), KEEP=1 keeps the work directory,
# SLURM_TEST_TIMEOUT_S bounds the run (default 300).

set -u
started=$SECONDS
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
BIN=${TESSERA_BIN:-$repo/target/debug/tessera}
case "$BIN" in /*) ;; *) BIN=$repo/$BIN ;; esac
TIMEOUT_S=${SLURM_TEST_TIMEOUT_S:-300}

failures=0
pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
note() { echo "---- [$((SECONDS - started))s] $*"; }
fatal() {
  fail "$*"
  exit 1
}

[ "$(id -u)" = 0 ] || fatal "run as root (it installs packages and starts the Slurm daemons)"
[ -x "$BIN" ] || fatal "no tessera binary at $BIN (build it, or set TESSERA_BIN)"

# ---------------------------------------------------------------- packages
need=()
for c in sbatch slurmctld slurmd munged; do
  command -v "$c" >/dev/null 2>&1 || need=(slurm-wlm munge)
done
if [ ${#need[@]} -gt 0 ]; then
  note "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need[@]}" >/tmp/tessera-slurm-apt.log 2>&1 ||
    { apt-get update >>/tmp/tessera-slurm-apt.log 2>&1 &&
      apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/tessera-slurm-apt.log 2>&1; } ||
    { tail -20 /tmp/tessera-slurm-apt.log; fatal "cannot install ${need[*]}"; }
fi

# ---------------------------------------------------------------- work directory and cleanup
W=$(mktemp -d /tmp/tessera-slurm.XXXXXX)
chmod 755 "$W"
S=$W/slurm
mkdir -p "$S/state" "$S/spool" "$W/logs" "$W/home"
export SLURM_CONF=$S/slurm.conf
started_munged=

show_logs() {
  for f in "$S/slurmctld.log" "$S/slurmd.log" "$W"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "======== $f (last 40 lines)"
    tail -n 40 "$f"
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -f "$S/slurmctld.pid" ]; then
    scancel --full --quiet --user=root 2>/dev/null
    for _ in $(seq 1 40); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
    scancel --signal=KILL --full --quiet --user=root 2>/dev/null
  fi
  local daemons=() p
  for d in "$S/slurmd.pid" "$S/slurmctld.pid" ${started_munged:+/run/munge/munged.pid}; do
    [ -f "$d" ] && p=$(cat "$d") && kill -TERM "$p" 2>/dev/null && daemons+=("$p")
  done
  # Wait for them to exit (slurmctld saves its state first), so that a next run finds the ports.
  for _ in $(seq 1 50); do
    alive=
    for p in "${daemons[@]}"; do
      [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && alive=1
    done
    [ -z "$alive" ] && break
    sleep 0.2
  done
  if [ "$failures" -gt 0 ] || [ "$rc" != 0 ]; then
    show_logs
    echo "the work directory is kept: $W"
    echo "FAIL: tests/deploy/slurm.sh ($failures failure(s), $((SECONDS - started))s)"
    exit 1
  fi
  if [ "${KEEP:-}" = 1 ]; then
    echo "the work directory is kept: $W"
  else
    rm -rf "$W"
  fi
  echo "PASS: tests/deploy/slurm.sh ($((SECONDS - started))s)"
  exit 0
}
trap cleanup EXIT
trap 'fatal "interrupted"' INT TERM

# Waits up to $1 seconds for the command "$2..." to succeed.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -ge "$end" ] && { fail "timed out after ${limit}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

# ---------------------------------------------------------------- the recording and its reference
note "simulating a recording; the reference run (embedded runner) in the background"
"$BIN" simulate --preset base --height 128 --width 128 --frames 600 --seed 3 \
  --out "$W/sim.zarr" >"$W/logs/simulate.txt" 2>&1 || fatal "tessera simulate failed"
"$BIN" run "$repo/workflows/two-photon.yaml" --input "$W/sim.zarr" --output "$W/reference.run" \
  --tile-size 32 >"$W/logs/reference.txt" 2>&1 &
reference_pid=$!

# ---------------------------------------------------------------- munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  note "munged already runs"
else
  note "starting munged"
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile=/etc/munge/munge.key --force
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
  chmod 700 /etc/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  chmod 400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged || fatal "munged did not start"
  started_munged=1
  wait_for 10 "munged" sh -c 'munge -n | unmunge >/dev/null 2>&1' || exit 1
fi

# ---------------------------------------------------------------- slurm
node=$(hostname -s)
cpus=16 # more than the machine has (config_overrides): the coordinator and 4 workers fit
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
cat >"$SLURM_CONF" <<EOF
# A single-node Slurm for tests: no systemd, no cgroups, no accounting.
ClusterName=tessera-test
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$S/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobContainerType=job_container/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=15
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
: >"$S/plugstack.conf"
note "starting slurmctld and slurmd ($SLURM_CONF)"
slurmctld -c -f "$SLURM_CONF" || fatal "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fatal "slurmd did not start"
node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; }
wait_for 60 "the node to be idle" node_idle || exit 1
pass "single-node Slurm up: $(sinfo -h -N -o '%N %c CPUs %T')"

# ---------------------------------------------------------------- the coordinator, as a job
export TESSERA_BIN=$BIN
export TESSERA_HOME=$W/home
export TESSERA_LISTEN=127.0.0.1:0
export TESSERA_LEASE_TTL_MS=2000
export TESSERA_BACKOFF_MS=100
export TESSERA_POLL_S=1
export TESSERA_RESTART_GRACE_S=3
export TESSERA_METRICS=127.0.0.1:0
url_file=$TESSERA_HOME/coordinator.url
token=$TESSERA_HOME/token
small=(--cpus-per-task=1 --mem=1G --time=30)

submit_coordinator() {
  sbatch --parsable "${small[@]}" --output="$W/logs/coordinator-%j.log" \
    "$repo/deploy/slurm/coordinator.sbatch"
}
job_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n1 | cut -d= -f2; }
is_state() { [ "$(job_state "$1")" = "$2" ]; }
has_url() { [ -s "$url_file" ]; }

coordinator_job=$(submit_coordinator) || fatal "sbatch coordinator.sbatch failed"
note "coordinator job $coordinator_job"
wait_for 60 "the coordinator's URL in $url_file" has_url || exit 1
url=$(head -n1 "$url_file")
pass "the coordinator (job $coordinator_job) published $url"
if [ "$(stat -c %a "$token")" = 600 ]; then
  pass "it created the token file with mode 600"
else
  fail "the token file has mode $(stat -c %a "$token")"
fi
metrics=$(cat "$TESSERA_HOME/coordinator.metrics" 2>/dev/null)
# GET /metrics with bash alone (a fresh Debian has neither curl nor python3).
http_get() {
  local hostport=${1#http://}
  hostport=${hostport%%/*}
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || return 1
  printf 'GET /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "${1#http://*/}" "$hostport" >&3
  timeout 10 cat <&3
  exec 3<&-
}
if http_get "$metrics" 2>/dev/null | grep -q '^tessera_'; then
  pass "metrics served at $metrics"
else
  fail "no metrics at '$metrics'"
fi

# ---------------------------------------------------------------- the run and the workers
wait "$reference_pid" || fatal "the reference run failed: $(tail -3 "$W/logs/reference.txt")"
note "reference: $(tail -n1 "$W/logs/reference.txt")"
out=$W/cluster.run
run=$("$BIN" submit "$repo/workflows/two-photon.yaml" --input "$W/sim.zarr" --output "$out" \
  --tile-size 32 --coordinator "$url" --token-file "$token" 2>"$W/logs/submit.txt" | tail -n1)
case "$run" in run-*) pass "submitted $run: $(cat "$W/logs/submit.txt")" ;;
  *) fatal "tessera submit failed: $(cat "$W/logs/submit.txt")" ;; esac

array=$(sbatch --parsable "${small[@]}" --array=0-3 --output="$W/logs/worker-%A_%a.log" \
  "$repo/deploy/slurm/workers.sbatch") || fatal "sbatch workers.sbatch failed"
note "worker array job $array (0-3)"

committed() {
  local n=0 e
  for e in "$out"/tasks/*; do
    [ -e "$e" ] && n=$((n + 1))
  done
  echo "$n"
}
at_least() { [ "$(committed)" -ge "$1" ]; }
running() { is_state "$1" RUNNING; }
job_id() { scontrol show job "$1" 2>/dev/null | grep -o 'JobId=[0-9]*' | head -n1 | cut -d= -f2; }
# The processes of job $1 (the batch script and what it started), slurmstepd excepted.
job_pids() {
  local e p
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}
    p=${p%/environ}
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = slurmstepd ] && continue
    { tr '\0' '\n' <"$e"; } 2>/dev/null | grep -qx "SLURM_JOB_ID=$1" && echo "$p"
  done
}

for i in 0 1 2 3; do
  wait_for 60 "array task ${array}_$i to run" running "${array}_$i" || exit 1
done
pass "4 array tasks running: $(squeue -h -o '%i %T %j' | tr '\n' ';')"

# Preemption notice: SIGUSR1 to the batch script only (what --signal=B:USR1@... sends).
wait_for 120 "2 committed tasks" at_least 2 || exit 1
note "$(committed) committed: SIGUSR1 to the batch script of ${array}_0"
scancel --batch --signal=USR1 "${array}_0"
# Cancellation: SIGTERM to every process of the job.
wait_for 120 "4 committed tasks" at_least 4 || exit 1
note "$(committed) committed: scancel ${array}_1"
scancel "${array}_1"
# Hard kill, as when a node fails: SIGKILL to every process of the job at once (`scancel
# --signal=KILL` would not do: Slurm 22.05 turns it into a plain cancel, SIGTERM first).
wait_for 120 "6 committed tasks" at_least 6 || exit 1
job2=$(job_id "${array}_2")
mapfile -t pids < <(job_pids "$job2")
note "$(committed) committed: SIGKILL to the processes of ${array}_2 (job $job2): ${pids[*]}"
[ ${#pids[@]} -gt 0 ] || fatal "no processes found for job $job2"
kill -KILL "${pids[@]}" 2>/dev/null # a short-lived `sleep` may be gone already

# The coordinator's job ends; it is submitted again with the same state.
wait_for 120 "9 committed tasks" at_least 9 || exit 1
note "$(committed) committed: scancel the coordinator (job $coordinator_job)"
scancel "$coordinator_job"
gone() { ! is_state "$coordinator_job" RUNNING && ! is_state "$coordinator_job" COMPLETING; }
wait_for 60 "the coordinator's job to end" gone || exit 1
before=$W/before
mkdir -p "$before"
for k in "$out"/tasks/*; do
  [ -e "$k/provenance/record.json" ] && cp "$k/provenance/record.json" "$before/$(basename "$k").json"
done
n_before=$(find "$before" -name '*.json' | wc -l)
if [ -s "$url_file" ]; then
  fail "the coordinator's job ended but $url_file is still there"
else
  pass "the coordinator's job ended ($(job_state "$coordinator_job")) and unpublished its URL; $n_before tasks committed"
fi
coordinator_job=$(submit_coordinator) || fatal "sbatch coordinator.sbatch (again) failed"
note "coordinator job $coordinator_job (same state)"
wait_for 60 "the new coordinator's URL" has_url || exit 1
url2=$(head -n1 "$url_file")
pass "the coordinator is back (job $coordinator_job) at $url2 (was $url)"

# ---------------------------------------------------------------- the run ends
note "tessera status $run --watch"
timeout "$TIMEOUT_S" "$BIN" status "$run" --watch --coordinator "$url2" --token-file "$token" \
  >"$W/logs/status.txt" 2>&1
rc=$?
if [ "$rc" = 0 ]; then
  pass "the run succeeded: $(tail -n1 "$W/logs/status.txt")"
else
  tail -n 20 "$W/logs/status.txt"
  [ "$rc" = 124 ] && fatal "the run did not end in ${TIMEOUT_S}s"
  fatal "the run did not succeed (tessera status --watch: exit status $rc)"
fi

# ---------------------------------------------------------------- checks
# The data objects, byte for byte (what tests/e2e/run.rs data_digests compares).
digests() {
  (cd "$1" && find . -type f | sed 's|^\./||' |
    grep -v -e '^provenance/' -e '^run/' -e '/provenance/' -e 'ro-crate-metadata\.json$' |
    LC_ALL=C sort | xargs -d '\n' sha256sum)
}
digests "$W/reference.run" >"$W/reference.sha256"
digests "$out" >"$W/cluster.sha256"
n=$(wc -l <"$W/reference.sha256")
if [ "$n" -gt 0 ] && cmp -s "$W/reference.sha256" "$W/cluster.sha256"; then
  pass "the run's $n data objects are byte-identical to the reference's"
else
  diff "$W/reference.sha256" "$W/cluster.sha256" | head -20
  fail "the run's data objects differ from the reference's"
fi

# Nothing committed before the coordinator stopped was computed again.
recomputed=0
for f in "$before"/*.json; do
  cmp -s "$f" "$out/tasks/$(basename "$f" .json)/provenance/record.json" || recomputed=$((recomputed + 1))
done
if [ "$recomputed" = 0 ]; then
  pass "none of the $n_before tasks committed before the coordinator stopped was recomputed"
else
  fail "$recomputed of $n_before tasks committed before the coordinator stopped were recomputed"
fi

# The provenance records carry the Slurm ids.
total=$(committed)
with_ids=$(grep -l '"SLURM_ARRAY_TASK_ID"' "$out"/tasks/*/provenance/record.json 2>/dev/null | wc -l)
with_job=$(grep -l "\"SLURM_ARRAY_JOB_ID\": *\"$array\"" "$out"/tasks/*/provenance/record.json 2>/dev/null | wc -l)
with_job_id=$(grep -l '"SLURM_JOB_ID": *"[0-9]' "$out"/tasks/*/provenance/record.json 2>/dev/null | wc -l)
if [ "$total" -gt 0 ] && [ "$with_ids" = "$total" ] && [ "$with_job" = "$total" ] &&
  [ "$with_job_id" = "$total" ]; then
  pass "all $total task records carry SLURM_JOB_ID, SLURM_ARRAY_JOB_ID=$array, SLURM_ARRAY_TASK_ID"
else
  fail "$with_ids (array job $array: $with_job) of $total task records carry the Slurm ids"
fi
tasks_by=$(grep -ho '"SLURM_ARRAY_TASK_ID": *"[0-9]*"' "$out"/tasks/*/provenance/record.json |
  grep -o '[0-9]*"$' | tr -d '"' | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
note "tasks committed per array task: $tasks_by"

# How each worker ended.
log_of() { echo "$W/logs/worker-${array}_$1.log"; }
if grep -q 'got SIGUSR1' "$(log_of 0)" && grep -q 'worker stopped:' "$(log_of 0)" &&
  grep -q 'the worker exited with status 0 after SIGUSR1' "$(log_of 0)" &&
  is_state "${array}_0" COMPLETED; then
  pass "${array}_0 drained on SIGUSR1 and completed: $(grep 'worker stopped:' "$(log_of 0)")"
else
  fail "${array}_0 did not drain on SIGUSR1 (state $(job_state "${array}_0"))"
fi
if grep -q 'worker stopped:' "$(log_of 1)" && grep -q 'the worker exited with status 0 after SIGTERM' "$(log_of 1)"; then
  pass "${array}_1 drained on scancel (SIGTERM): $(grep 'worker stopped:' "$(log_of 1)")"
else
  fail "${array}_1 did not drain on scancel (state $(job_state "${array}_1"))"
fi
if ! grep -q 'worker stopped:' "$(log_of 2)" && is_state "${array}_2" FAILED; then
  pass "${array}_2 was killed outright (FAILED); the run did not need it"
else
  fail "${array}_2 was not killed (state $(job_state "${array}_2"))"
fi
if grep -q 'the coordinator moved' "$(log_of 3)"; then
  pass "${array}_3 followed the coordinator to its new URL"
else
  fail "${array}_3 did not follow the coordinator to its new URL"
fi
# The last worker and the coordinator stop cleanly.
scancel "${array}_3" "$coordinator_job"
ended() { ! is_state "$1" RUNNING && ! is_state "$1" COMPLETING; }
wait_for 30 "${array}_3 to end" ended "${array}_3"
wait_for 30 "the coordinator's job to end" ended "$coordinator_job"
stopped_clean=$(grep -l 'got SIGTERM: stopping the coordinator' "$W"/logs/coordinator-*.log |
  xargs grep -l 'the coordinator exited with status 0$' | wc -l)
if [ "$stopped_clean" = 2 ]; then
  pass "both coordinator jobs stopped cleanly on scancel (SIGTERM, exit status 0)"
else
  fail "$stopped_clean of 2 coordinator jobs stopped cleanly on scancel: $(grep -h 'exited with' "$W"/logs/coordinator-*.log)"
fi
if grep -q 'the worker exited with status 0 after SIGTERM' "$(log_of 3)"; then
  pass "${array}_3 drained on scancel: $(grep 'worker stopped:' "$(log_of 3)")"
else
  fail "${array}_3 did not drain on scancel"
fi
note "done"
