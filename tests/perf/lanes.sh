#!/usr/bin/env bash
# Lanes over paths against one path at a time and against numpy, one thread each, fp64, Euler–Maruyama:
#   ou      1-D Ornstein–Uhlenbeck (tests/perf/ou_bench.sde, bench/peers/ou_numpy.py), 1000 steps
#   l63     noisy Lorenz-63 (tests/perf/l63_bench.sde, bench/peers/l63_numpy.py), 1000 steps
#   l96     noisy Lorenz-96, N = 40 (tests/perf/l96_bench.sde, bench/peers/l96_numpy.py), 2000 steps
#   noise40 40 pure noises (tests/perf/noise40_bench.sde; no peer): the random numbers alone
#   explog  a 1-D drift of exp and log (tests/perf/explog_bench.sde, bench/peers/explog_numpy.py), 1000 steps
#   oudk    the 1-D OU's divergence-kernel response d E[x^2] / d theta (tests/perf/ou_dk_bench.sde,
#           bench/peers/ou_dk_numpy.py), 1000 steps: the response engine's lanes over paths (one state)
#   l63dk   Lorenz-63's divergence-kernel response d E[z] / d r (tests/perf/l63_dk_bench.sde; no peer), 1000 steps:
#           the response engine's lanes with the dense LU of three states
# The engine runs `dsl run FILE --json --threads 1` with SDE_LANES=1 (one path at a time) and SDE_LANES=4
# (four paths per step in the vector lanes); every program runs REPS times, interleaved, and the script
# prints the median path-steps/s of each and the ratios lanes/one-lane and lanes/numpy, measured in
# this same run. Each file runs with `bias = off` (a copy with it added to its simulate block): the
# default bias estimate's coupled pairs are not the simulation, and the peers have none.
# Builds the CLI in Release; installs nothing (numpy peers run only if PYTHON has numpy).
#
#   tests/perf/lanes.sh [REPS]          (default 3)
#   environment: PATHS (ou, l63, explog, oudk, l63dk; default 100000), PATHS96 (l96, noise40; default 4000),
#   PYTHON (default: python3 if it has numpy, else /usr/bin/python3), ONLY (e.g. "ou l63"),
#   BEFORE (a dsl.dll built from an earlier commit, e.g. a copy of dsl/cli/bin/Release/net10.0: its
#   four-lane run joins the interleaved rounds, and the script prints lanes/before)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
reps="${1:-3}"
paths="${PATHS:-100000}"
paths96="${PATHS96:-4000}"
only="${ONLY:-ou l63 l96 noise40 explog oudk l63dk}"
python="${PYTHON:-python3}"
"$python" -c 'import numpy' >/dev/null 2>&1 || python=/usr/bin/python3
have_numpy=0
"$python" -c 'import numpy' >/dev/null 2>&1 && have_numpy=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== building (Release)"
dotnet build -c Release dsl/cli -nologo -v quiet >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
dll="$root/dsl/cli/bin/Release/net10.0/dsl.dll"

before="${BEFORE:-}"
engine() { # LANES FILE PATHS [DLL]: path-steps/s
    SDE_LANES="$1" dotnet "${4:-$dll}" run "$2" --json --quiet --threads 1 --paths "$3" >"$tmp/e.json"
    grep -o '"path_steps_per_second": *[0-9.eE+-]*' "$tmp/e.json" | sed 's/.*: *//'
}
peer() { "$python" "$@" | awk '$1 == "path_steps_per_s" { print $2 }'; }

median() { sort -g "$1" | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

printf '%-8s %14s %14s %14s %12s %12s' workload one_lane lanes numpy lanes/one lanes/numpy
[ -n "$before" ] && printf ' %14s %13s' lanes_before lanes/before
echo
for w in $only; do
    case "$w" in
    ou) file=tests/perf/ou_bench.sde; p="$paths"; peerargs=(bench/peers/ou_numpy.py "$p" 1000) ;;
    l63) file=tests/perf/l63_bench.sde; p="$paths"; peerargs=(bench/peers/l63_numpy.py "$p" 1000) ;;
    l96) file=tests/perf/l96_bench.sde; p="$paths96"; peerargs=(bench/peers/l96_numpy.py "$p" 2000 40) ;;
    noise40) file=tests/perf/noise40_bench.sde; p="$paths96"; peerargs=() ;;
    explog) file=tests/perf/explog_bench.sde; p="$paths"; peerargs=(bench/peers/explog_numpy.py "$p" 1000) ;;
    oudk) file=tests/perf/ou_dk_bench.sde; p="$paths"; peerargs=(bench/peers/ou_dk_numpy.py "$p" 1000) ;;
    l63dk) file=tests/perf/l63_dk_bench.sde; p="$paths"; peerargs=() ;;
    *) echo "unknown workload $w"; exit 2 ;;
    esac
    sed 's/^simulate {/simulate { bias = off;/' "$file" >"$tmp/$(basename "$file")"
    grep -q '^simulate { bias = off;' "$tmp/$(basename "$file")" || { echo "$file: no 'simulate {' line for bias = off"; exit 1; }
    file="$tmp/$(basename "$file")"
    : >"$tmp/one.txt"; : >"$tmp/lanes.txt"; : >"$tmp/np.txt"; : >"$tmp/before.txt"
    for ((r = 1; r <= reps; r++)); do
        engine 1 "$file" "$p" >>"$tmp/one.txt"
        engine 4 "$file" "$p" >>"$tmp/lanes.txt"
        if [ -n "$before" ]; then engine 4 "$file" "$p" "$before" >>"$tmp/before.txt"; fi
        if [ "$have_numpy" = 1 ] && [ ${#peerargs[@]} -gt 0 ]; then peer "${peerargs[@]}" >>"$tmp/np.txt"; fi
    done
    one="$(median "$tmp/one.txt")"; lanes="$(median "$tmp/lanes.txt")"
    if [ -s "$tmp/np.txt" ]; then np="$(median "$tmp/np.txt")"; else np=""; fi
    if [ -n "$before" ]; then b="$(median "$tmp/before.txt")"; else b=""; fi
    awk -v w="$w" -v o="$one" -v l="$lanes" -v n="$np" -v b="$b" 'BEGIN {
        printf "%-8s %14.4e %14.4e %14s %12.2f %12s", w, o, l, (n == "" ? "-" : sprintf("%.4e", n)), l / o, (n == "" ? "-" : sprintf("%.2f", l / n))
        if (b != "") printf " %14.4e %13.2f", b, l / b
        printf "\n" }'
done
[ "$have_numpy" = 1 ] || echo "numpy: skipped ($python has no numpy; Debian's python3-numpy provides it)"
