#!/usr/bin/env bash
# Side-by-side benchmark: the engine (`dsl run --json`) against the peers in bench/peers (plain C,
# SIMD C, numpy) on the same noisy Lorenz-96 workload (N = 40, 4000 paths, 2000 steps;
# tests/perf/l96_bench.sde). Builds the CLI in Release and the C peers with the commands of
# bench/peers/README.md; installs nothing (the numpy peer runs only if python3 has numpy).
# Prints the median path-steps/s of each and the ratio engine/peer.
#
#   tests/perf/l96.sh [REPS]        (default 3)
#   environment: PEERS (peer sources, default bench/peers), PATHS and STEPS (default 4000, 2000),
#   RPATHS (paths of the response-cost runs, default 200), PYTHON (default python3)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
reps="${1:-3}"
peers="${PEERS:-$root/bench/peers}"
paths="${PATHS:-4000}"
steps="${STEPS:-2000}"
horizon="$(awk -v s="$steps" 'BEGIN { print s * 0.005 }')"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# the workload with `bias = off`: the default bias estimate's coupled pairs are not the simulation, and
# the peers estimate no bias (the same for the response-cost runs below)
bench="$tmp/l96_bench.sde"
sed 's/^simulate {/simulate { bias = off;/' tests/perf/l96_bench.sde >"$bench"
grep -q '^simulate { bias = off;' "$bench" || { echo "tests/perf/l96_bench.sde: no 'simulate {' line for bias = off"; exit 1; }

echo "== building (Release) and compiling the peers"
dotnet build -c Release dsl/cli -nologo -v quiet >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
dll="$root/dsl/cli/bin/Release/net10.0/dsl.dll"
gcc -O3 -march=native -fopenmp -o "$tmp/l96_em" "$peers/l96_em.c" -lm
gcc -O3 -march=native -ffast-math -fopenmp -o "$tmp/l96_simd" "$peers/l96_em_simd.c" -lm

names=(engine c_plain c_simd)
if "$python" -c 'import numpy' >/dev/null 2>&1; then
    names+=(numpy)
    have_numpy=1
else
    have_numpy=0
fi

# One measurement of NAME: prints its path-steps/s.
measure() {
    case "$1" in
    engine)
        dotnet "$dll" run "$bench" --json --quiet --paths "$paths" --T "$horizon" --dt 0.005 >"$tmp/engine.json"
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["timing"]["path_steps_per_second"])' "$tmp/engine.json" 2>/dev/null ||
            grep -o '"path_steps_per_second": *[0-9.eE+-]*' "$tmp/engine.json" | sed 's/.*: *//'
        ;;
    c_plain) "$tmp/l96_em" "$paths" "$steps" 40 | awk '$1 == "path_steps_per_s" { print $2 }' ;;
    c_simd) "$tmp/l96_simd" "$paths" "$steps" 40 | awk '$1 == "path_steps_per_s" { print $2 }' ;;
    numpy) "$python" "$peers/l96_numpy.py" "$paths" "$steps" 40 | awk '$1 == "path_steps_per_s" { print $2 }' ;;
    esac
}

echo "== $reps repetitions of: ${names[*]} ($paths paths x $steps steps, N = 40; $(nproc) cores)"
for ((r = 1; r <= reps; r++)); do
    line="rep $r:"
    for n in "${names[@]}"; do
        v="$(measure "$n")"
        echo "$v" >>"$tmp/$n.txt"
        line="$line $n=$(printf '%.3e' "$v")"
    done
    echo "$line"
done

median() { sort -g "$1" | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

echo
printf '%-10s %22s %14s\n' "program" "median path-steps/s" "engine/peer"
e="$(median "$tmp/engine.txt")"
for n in "${names[@]}"; do
    m="$(median "$tmp/$n.txt")"
    if [ "$n" = engine ]; then ratio="-"; else ratio="$(awk -v e="$e" -v m="$m" 'BEGIN { printf "%.3f", e / m }')"; fi
    printf '%-10s %22.4e %14s\n' "$n" "$m" "$ratio"
done
if [ "$have_numpy" = 0 ]; then
    echo "numpy: skipped ($python has no numpy; Debian's python3-numpy provides it; set PYTHON to another interpreter; nothing is installed here)"
fi

# --- The cost of a response: path-steps/s of the engine with one `d mean(x[0]) / d F` query per DK
# mode, against the plain simulation of the same paths, in the same run of this script.
rpaths="${RPATHS:-200}"
echo
echo "== response cost on the same workload ($rpaths paths x $steps steps), $reps repetitions each"
sim_rate() { # FILE: prints path-steps/s of one run
    dotnet "$dll" run "$1" --json --quiet --paths "$rpaths" --T "$horizon" --dt 0.005 >"$tmp/r.json"
    grep -o '"path_steps_per_second": *[0-9.eE+-]*' "$tmp/r.json" | sed 's/.*: *//'
}
with_query() { # QUERY: writes a copy of the benchmark model with that query
    sed "s|^  mean(x\[0\])\$|  $1|" "$bench" >"$tmp/q.sde"
    echo "$tmp/q.sde"
}
declare -A rq=(
    [plain]="mean(x[0])"
    [dk_iterative]="d mean(x[0]) / d F"
    [dk_first_order]="d mean(x[0]) / d F with divergence_kernel(mode = first_order)"
    [dk_exact]="d mean(x[0]) / d F with divergence_kernel(mode = exact)"
    [pathwise]="d mean(x[0]) / d F with pathwise"
)
order=(plain dk_iterative dk_first_order dk_exact pathwise)
for k in "${order[@]}"; do
    f="$(with_query "${rq[$k]}")"
    : >"$tmp/r_$k.txt"
    for ((r = 1; r <= reps; r++)); do sim_rate "$f" >>"$tmp/r_$k.txt"; done
done
p="$(median "$tmp/r_plain.txt")"
printf '%-16s %22s %22s\n' "query" "median path-steps/s" "cost vs plain (x)"
for k in "${order[@]}"; do
    m="$(median "$tmp/r_$k.txt")"
    printf '%-16s %22.4e %22s\n' "$k" "$m" "$(awk -v p="$p" -v m="$m" 'BEGIN { printf "%.2f", p / m }')"
done
