#!/usr/bin/env bash
# The cost of fitting (issue 11, docs/fitting.md#performance), on examples/fit_ou.sde, one thread:
#  * peak memory and seconds per evaluation of `dsl fit` at T = 1 and T = 10 (10x the steps: the
#    memory must not grow, the time grows with the steps);
#  * one evaluation's simulation against a plain simulation of the same paths: `dsl run` of the
#    two DK responses the fit needs (d mean(x) / d theta and / d sigma) against `dsl run` of mean(x).
#   tests/perf/fit.sh
# Needs GNU time as /usr/bin/time (Debian: apt-get install time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dotnet build dsl/cli -c Release -v q -nologo >/dev/null
dll=dsl/cli/bin/Release/net10.0/dsl.dll
work="$(mktemp -d -t dsl-fit.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# fit_measure LABEL FILE T [dsl fit options]: evaluations, seconds per evaluation and peak memory of one fit
fit_measure() {
  local label="$1" file="$2" T="$3"; shift 3
  local json="$work/fit.json" out per evals
  out="$( { /usr/bin/time -f "%M" dotnet "$dll" fit "$file" --T "$T" --quiet --json "$@" > "$json"; } 2>&1 | tail -n 1)"
  per="$(grep -o '"seconds_per_evaluation": [0-9.e+-]*' "$json" | awk '{print $2}')"
  evals="$(grep -c '"iteration"' "$json")"
  printf "%s T = %-3s %3d evaluations  %6.3f s per evaluation  peak %4d MB\n" "$label" "$T" "$evals" "$per" $(( out / 1024 ))
}
for T in 1 10; do fit_measure "fit OU (one thread)" examples/fit_ou.sde "$T" --threads 1; done
# the simulation part of one evaluation against a plain simulation (same model, paths, seed, steps)
sed -e '/^fit /,/^}/d' -e '/^query {/,/^}/d' examples/fit_ou.sde > "$work/base.sde"
printf 'query {\n  mean(x)\n}\n' | cat "$work/base.sde" - > "$work/plain.sde"
printf 'query {\n  d mean(x) / d theta with divergence_kernel(rate = 10)\n  d mean(x) / d sigma with divergence_kernel(rate = 10)\n}\n' | cat "$work/base.sde" - > "$work/dk.sde"
for f in plain dk; do
  for T in 1 10; do
    s="$(dotnet "$dll" run "$work/$f.sde" --T "$T" --paths 200000 --threads 1 --quiet --json | grep -o '"seconds": [0-9.e+-]*' | awk '{print $2}')"
    printf "run %-5s T = %-3s 200000 paths  %7.3f s\n" "$f" "$T" "$s"
  done
done
# the Lorenz-96 example (20 components, 1000 paths x 100 steps per evaluation, 1000 data rows, law = marginals),
# all cores, a few L-BFGS iterations at T = 1 and T = 10 (10x the steps): seconds per evaluation and peak memory
for T in 1 10; do fit_measure "fit Lorenz-96 (d = 20, all cores)" examples/fit_lorenz96.sde "$T" --iterations 3; done
# and its simulation part against a plain run of the same paths: the two DK responses the fit needs
sed -e '/^fit /,/^}/d' -e '/^query {/,/^}/d' examples/fit_lorenz96.sde > "$work/l96base.sde"
printf 'query {\n  mean(x[0])\n}\n' | cat "$work/l96base.sde" - > "$work/l96plain.sde"
printf 'query {\n  d mean(x[0]) / d F with divergence_kernel(rate = 10)\n  d mean(x[0]) / d sigma with divergence_kernel(rate = 10)\n}\n' | cat "$work/l96base.sde" - > "$work/l96dk.sde"
for f in l96plain l96dk; do
  s="$(dotnet "$dll" run "$work/$f.sde" --paths 20000 --quiet --json | grep -o '"seconds": [0-9.e+-]*' | awk '{print $2}')"
  printf "run %-8s T = 1   20000 paths  %7.3f s\n" "$f" "$s"
done
