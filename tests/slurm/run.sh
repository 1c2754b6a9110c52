#!/usr/bin/env bash
# A real Slurm test of sharded runs (docs/cluster.md): starts a single-node cluster on this machine
# (munged, slurmctld and slurmd with a generated slurm.conf: proctrack/linuxproc, task/none), submits
# a 4-shard run of a response example with `dsl slurm --submit`, waits for the merge job, checks that
# the merged results.json equals a local unsplit run bit for bit (the timing aside), and stops the
# daemons it started (by pid).
#
# Needs root (slurmd runs the jobs as their user). Installs slurm-wlm and munge with apt-get only when
# run as root on a machine that has apt-get and lacks them. Anywhere else it prints SKIP and exits 0
# (a skip, never a silent pass). Exit 1 on a failure, with the daemons' logs.
#
#   tests/slurm/run.sh            (from the repository root or anywhere; builds dsl if needed)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
start=$SECONDS

skip() { echo "SKIP (tests/slurm/run.sh): $*"; exit 0; }

if [[ $(id -u) -ne 0 ]]; then
  skip "not root: slurmd must run as root to start jobs (run this script as root to test against a real Slurm)"
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  if command -v apt-get >/dev/null; then
    echo "== installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }; }; then
      skip "slurm-wlm and munge are not installed and apt-get could not install them"
    fi
  else
    skip "no Slurm here (slurmctld, slurmd, munged, sbatch) and no apt-get to install it"
  fi
fi
command -v python3 >/dev/null || skip "python3 is needed to compare the JSON files"

dll="$root/dsl/cli/bin/Release/net10.0/dsl.dll"
if [[ ! -f $dll ]]; then
  echo "== building dsl (Release)"
  dotnet build "$root/dsl/cli/dsl.fsproj" -c Release -v q >/dev/null
fi

work="$(mktemp -d -t dsl-slurm.XXXXXX)"
chmod 755 "$work"
pids=()
cleanup() {
  local code=$?
  # stop what this script started, by pid, newest first; wait so that the ports are free again
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ $code -ne 0 ]]; then
    for f in "$work"/*.log "$work"/run*/logs/*; do [[ -f $f ]] && { echo "--- $f"; tail -n 30 "$f"; }; done
  fi
  rm -rf "$work"
  exit $code
}
trap cleanup EXIT

host="$(hostname -s)"
cpus="$(nproc)"
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
# ports that nothing listens on (a Slurm of the machine's own may use the defaults 6817/6818)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
ctld_port=$(port); slurmd_port=$(port)

# munge: our own key, socket and files (munged refuses to run as root without --force)
mkdir -p "$work/munge" "$work/state" "$work/spool"
chmod 700 "$work/munge"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1 count=1024 status=none
chmod 400 "$work/munge/munge.key"
munged --force --foreground --socket="$work/munge/munge.socket" --key-file="$work/munge/munge.key" \
  --pid-file="$work/munge/munged.pid" --seed-file="$work/munge/munged.seed" --log-file="$work/munged.log" \
  >"$work/munged.out.log" 2>&1 &
pids+=($!)

cat >"$work/slurm.conf" <<EOF
ClusterName=dsltest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=dsl Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$work/slurm.conf"

for _ in $(seq 50); do [[ -S $work/munge/munge.socket ]] && break; sleep 0.1; done
# The daemons not starting is this machine's Slurm, not dsl: a loud SKIP (with the logs), never a pass.
# A job that fails or results that differ below are FAILs.
[[ -S $work/munge/munge.socket ]] || { tail -n 20 "$work"/*.log 2>/dev/null || true; skip "munged did not start on this machine (logs above)"; }

slurmctld -D -i >"$work/slurmctld.out.log" 2>&1 &
pids+=($!)
slurmd -D >"$work/slurmd.out.log" 2>&1 &
pids+=($!)

echo "== waiting for the node ($host, $cpus CPUs)"
for _ in $(seq 60); do
  state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
  [[ $state == idle* ]] && break
  sleep 1
done
[[ $state == idle* ]] || { tail -n 20 "$work"/*.log 2>/dev/null || true; skip "the Slurm node did not come up on this machine (state '$state'; logs above)"; }

example="$root/examples/ou_response.sde"
paths=4000
# The documented form DSL_COMMAND='module load dsl && dsl': `module` is a shell function exported
# into the job's environment, as a site's Lmod or Environment Modules exports it (sbatch passes the
# environment on); `load dsl` puts a `dsl` wrapper on the PATH. The run's folder has a space and a
# '#' in its name, which the #SBATCH --output lines must carry whole.
mkdir -p "$work/bin"
printf '#!/bin/sh\nexec dotnet %q "$@"\n' "$dll" >"$work/bin/dsl"
chmod 755 "$work/bin/dsl"
eval "module() { if [ \"\$1 \$2\" = 'load dsl' ]; then export PATH=$(printf %q "$work/bin"):\"\$PATH\"; fi; }"
export -f module
run="$work/run #1"
echo "== dsl slurm --submit: 4 shards of $(basename "$example") (--paths $paths), DSL_COMMAND='module load dsl && dsl'"
out="$(cd "$work" && DSL_COMMAND='module load dsl && dsl' dotnet "$dll" slurm "$example" --shards 4 --cpus 1 --time 00:10:00 --paths $paths --out "$run" --submit)"
echo "$out" | tail -n 1
merge_id="$(echo "$out" | sed -n 's/.*merge job \([0-9]*\).*/\1/p')"
[[ -n $merge_id ]] || { echo "FAIL: no merge job id in the output"; exit 1; }

echo "== waiting for the merge job $merge_id"
for _ in $(seq 240); do
  st="$(scontrol show job "$merge_id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')"
  case $st in
    COMPLETED) break ;;
    FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) echo "FAIL: the merge job ended $st"; exit 1 ;;
  esac
  # a shard that failed leaves the merge job pending forever (DependencyNeverSatisfied)
  if scontrol show job "$merge_id" 2>/dev/null | grep -q DependencyNeverSatisfied; then
    echo "FAIL: a shard failed (the merge's dependency can never be satisfied)"; exit 1
  fi
  sleep 1
done
[[ $st == COMPLETED ]] || { echo "FAIL: the merge job did not finish in 4 minutes (state '$st')"; exit 1; }
ls "$run/shards"/*.partial | sed 's/^/   /'

echo "== the unsplit run, locally"
(cd "$work" && dotnet "$dll" run "$example" --paths $paths --backend cpu --json --quiet >"$work/unsplit.json")

grep -q '^dsl_command() {$' "$run/slurm-shards.sh" || { echo "FAIL: the array script does not start dsl through DSL_COMMAND"; exit 1; }
ls "$run/logs"/shard-*.out >/dev/null || { echo "FAIL: no shard logs under the folder with a space and a '#'"; exit 1; }

python3 - "$work/unsplit.json" "$run/results.json" <<'EOF'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
for d in (a, b):
    d.pop("timing", None)
if a != b:
    print("FAIL: the merged results differ from the unsplit run")
    sys.exit(1)
n = sum(len(s["results"]) for s in a["sets"])
print(f"OK: the merged results.json equals the unsplit run bit for bit ({n} results, the timing aside)")
EOF
echo "== slurm test: done in $((SECONDS - start)) s"
