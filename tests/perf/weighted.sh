#!/usr/bin/env bash
# Weighted models (issue 14, docs/weighted.md): (1) the cost of a weight without resampling, per
# path-step, against the same model without it (tests/perf/weighted_cost.sde, 10^5 paths x 1000
# steps); (2) birth-death Langevin with the binned log_density against the numpy peer
# bench/peers/bd_numpy.py, same particles, steps, bandwidth and estimator (tests/perf/wfr_bd.sde,
# 20000 paths x 500 steps). Prints the medians of REPS runs and the ratios.
#
#   tests/perf/weighted.sh [REPS]     (default 3); PYTHON (default /usr/bin/python3, needs numpy)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
reps="${1:-3}"
python="${PYTHON:-/usr/bin/python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dotnet build -c Release dsl/cli -nologo -v quiet >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
dll="$root/dsl/cli/bin/Release/net10.0/dsl.dll"
grep -v -e '^  weight w' -e '^  d log w' tests/perf/weighted_cost.sde | sed 's/; resample = none//' >"$tmp/plain.sde"
cp tests/perf/weighted_cost.sde "$tmp/weighted.sde"
cp tests/perf/wfr_bd.sde "$tmp/bd.sde"

rate() { dotnet "$dll" run "$1" --json | "$python" -c 'import json,sys; print(json.load(sys.stdin)["timing"]["path_steps_per_second"])'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

for i in $(seq "$reps"); do
    rate "$tmp/plain.sde" >>"$tmp/plain"
    rate "$tmp/weighted.sde" >>"$tmp/weighted"
    rate "$tmp/bd.sde" >>"$tmp/bd"
    "$python" bench/peers/bd_numpy.py 20000 500 0.1 | awk '$1 == "path_steps_per_s" { print $2 }' >>"$tmp/numpy"
done
for f in plain weighted bd numpy; do echo "raw $f: $(tr '\n' ' ' <"$tmp/$f")"; done
p=$(median <"$tmp/plain"); w=$(median <"$tmp/weighted"); b=$(median <"$tmp/bd"); n=$(median <"$tmp/numpy")
printf '%-44s %12s\n' "run" "path-steps/s"
printf '%-44s %12.3g\n' "plain (no weight)" "$p" "weighted, resample = none" "$w" "birth-death + log_density (engine)" "$b" "birth-death + binned KDE (numpy peer)" "$n"
awk -v p="$p" -v w="$w" -v b="$b" -v n="$n" 'BEGIN { printf "cost of the weight per path-step: %.2fx; engine / numpy on birth-death: %.2fx\n", p / w, b / n }'
