#!/usr/bin/env bash
# The cost of the default discretisation-error estimate (issue 21, docs/discretisation.md): the
# simulation's wall time (JSON timing.seconds) of a few examples with `bias = estimate` (the default)
# against the same file with `bias = off`, and with `extrapolate = richardson` where the file's queries
# allow it, interleaved (off, estimate, richardson in turn, REPS times). Prints the load (uptime) before and
# after, the medians of the REPS runs and their ratios. tests/perf/bias_cost.fsx measures the same ratios
# in one process on one thread in thread CPU time, which the machine's load disturbs much less.
#
#   tests/perf/bias.sh [REPS] [EXAMPLE...]   (default 3; examples ou gbm double_well anneal lorenz96
#                                             ou_response, and tests/perf/bias_kinds.sde; an EXAMPLE
#                                             ending in .sde is a path)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
reps="${1:-3}"
shift || true
examples=("$@")
[ ${#examples[@]} -gt 0 ] || examples=(ou gbm double_well anneal lorenz96 ou_response tests/perf/bias_kinds.sde)
python="${PYTHON:-/usr/bin/python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dotnet build -c Release dsl/cli -nologo -v quiet >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
dll="$root/dsl/cli/bin/Release/net10.0/dsl.dll"
secs() { dotnet "$dll" run "$1" --json 2>/dev/null | "$python" -c 'import json,sys; print(json.load(sys.stdin)["timing"]["seconds"])'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "load: $(uptime)"
printf '%-14s %10s %10s %8s %12s %8s\n' example "off (s)" "estimate" ratio richardson ratio
for e in "${examples[@]}"; do
    src="examples/$e.sde"
    case "$e" in *.sde) src="$e"; e="$(basename "$e" .sde)" ;; esac
    sed 's/^simulate {/simulate {\n  bias = off\n/' "$src" >"$tmp/$e.off.sde"
    cp "$src" "$tmp/$e.est.sde"
    sed 's/^simulate {/simulate {\n  extrapolate = richardson\n/' "$src" >"$tmp/$e.rich.sde"
    : >"$tmp/off"; : >"$tmp/est"; : >"$tmp/rich"
    for i in $(seq "$reps"); do
        secs "$tmp/$e.off.sde" >>"$tmp/off"
        secs "$tmp/$e.est.sde" >>"$tmp/est"
        secs "$tmp/$e.rich.sde" >>"$tmp/rich" 2>/dev/null || echo nan >>"$tmp/rich"
    done
    o=$(median <"$tmp/off"); s=$(median <"$tmp/est"); r=$(median <"$tmp/rich")
    awk -v e="$e" -v o="$o" -v s="$s" -v r="$r" 'BEGIN { printf "%-14s %10.3f %10.3f %8.2f %12s %8s\n", e, o, s, s / o, (r == "nan" ? "refused" : sprintf("%.3f", r)), (r == "nan" ? "" : sprintf("%.2f", r / o)) }'
done
echo "load: $(uptime)"
