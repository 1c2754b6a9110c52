#!/usr/bin/env bash
# Weighted models (issues 14 and 20, docs/weighted.md), each against the plain engine on the same model
# without its weight (the `weight` and `d log w` lines dropped), per path-step: (1) a weight without
# resampling (tests/perf/weighted_cost.sde, 10^5 paths x 1000 steps); (2) the same model with
# systematic resampling at ESS/N < 0.5 and a noisy weight d log w = -x^2 dt + 2 dW, so that the
# population is resampled several times; (3) birth-death Langevin with the binned log_density
# (tests/perf/wfr_bd.sde, 20000 paths x 500 steps), also against the numpy peer bench/peers/bd_numpy.py
# (same particles, steps, bandwidth and estimator). The runs alternate within each repetition; prints
# the machine's load, the medians of REPS runs and the ratios (weighted cost / plain cost). Every engine
# run has bias = off (see below).
#
#   tests/perf/weighted.sh [REPS]     (default 3); PYTHON (default /usr/bin/python3, needs numpy);
#   THREADS (engine threads; default: all cores); PATHS (the double-well runs' paths; default 100000)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
reps="${1:-3}"
python="${PYTHON:-/usr/bin/python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dotnet build -c Release dsl/cli -nologo -v quiet >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
dll="$root/dsl/cli/bin/Release/net10.0/dsl.dll"
# bias = off everywhere: the simulation's own cost per path-step (a weighted run's default bias
# estimate is an independent run at dt/2 on 15% of the paths, inside its timing; the plain engine's
# is coupled pairs)
nobias() { sed 's/seed = 5\b/seed = 5; bias = off/'; }
grep -v -e '^  weight w' -e '^  d log w' tests/perf/weighted_cost.sde | sed 's/; resample = none//' | nobias >"$tmp/plain.sde"
nobias <tests/perf/weighted_cost.sde >"$tmp/weighted.sde"
sed -e 's/^  d log w = -x^2 dt$/  d log w = -x^2 dt + 2 dW/' -e 's/resample = none/resample = systematic; ess = 0.5/' tests/perf/weighted_cost.sde | nobias >"$tmp/resampled.sde"
nobias <tests/perf/wfr_bd.sde >"$tmp/bd.sde"
grep -v -e '^  weight w' -e '^  d log w' tests/perf/wfr_bd.sde | sed 's/; resample = birth_death; bandwidth = 0.1//' | nobias >"$tmp/bdplain.sde"
for f in plain weighted resampled bd bdplain; do grep -q 'bias = off' "$tmp/$f.sde" || { echo "weighted.sh: $f.sde has no 'seed = 5' to add bias = off to" >&2; exit 1; }; done
threads="${THREADS:-0}"
paths="${PATHS:-}"
rate() { dotnet "$dll" run "$1" --json --threads "$threads" ${2:+--paths "$2"} | "$python" -c 'import json,sys; print(json.load(sys.stdin)["timing"]["path_steps_per_second"])'; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "load before: $(uptime)"
for i in $(seq "$reps"); do
    rate "$tmp/plain.sde" "$paths" >>"$tmp/plain"
    rate "$tmp/weighted.sde" "$paths" >>"$tmp/weighted"
    rate "$tmp/resampled.sde" "$paths" >>"$tmp/resampled"
    rate "$tmp/bdplain.sde" >>"$tmp/bdplain"
    rate "$tmp/bd.sde" >>"$tmp/bd"
    "$python" bench/peers/bd_numpy.py 20000 500 0.1 | awk '$1 == "path_steps_per_s" { print $2 }' >>"$tmp/numpy"
done
echo "load after: $(uptime)"
for f in plain weighted resampled bdplain bd numpy; do echo "raw $f: $(tr '\n' ' ' <"$tmp/$f")"; done
p=$(median <"$tmp/plain"); w=$(median <"$tmp/weighted"); r=$(median <"$tmp/resampled")
bp=$(median <"$tmp/bdplain"); b=$(median <"$tmp/bd"); n=$(median <"$tmp/numpy")
printf '%-48s %12s %14s\n' "run" "path-steps/s" "cost vs plain"
printf '%-48s %12.3g %14s\n' "double well, plain (no weight)" "$p" "1"
awk -v p="$p" -v x="$w" 'BEGIN { printf "%-48s %12.3g %13.2fx\n", "  weighted, resample = none", x, p / x }'
awk -v p="$p" -v x="$r" 'BEGIN { printf "%-48s %12.3g %13.2fx\n", "  weighted + dW, systematic at ess 0.5", x, p / x }'
printf '%-48s %12.3g %14s\n' "birth-death model, plain (Langevin, no weight)" "$bp" "1"
awk -v p="$bp" -v x="$b" 'BEGIN { printf "%-48s %12.3g %13.2fx\n", "  birth-death + log_density (engine)", x, p / x }'
awk -v p="$bp" -v x="$n" 'BEGIN { printf "%-48s %12.3g %13.2fx\n", "  birth-death + binned KDE (numpy peer)", x, p / x }'
awk -v b="$b" -v n="$n" 'BEGIN { printf "engine / numpy on birth-death: %.2fx\n", b / n }'
