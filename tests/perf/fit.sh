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
for T in 1 10; do
  out="$( { /usr/bin/time -f "%M" dotnet "$dll" fit examples/fit_ou.sde --T "$T" --threads 1 --quiet --json > "$work/fit$T.json"; } 2>&1 | tail -n 1)"
  per="$(grep -o '"seconds_per_evaluation": [0-9.e+-]*' "$work/fit$T.json" | awk '{print $2}')"
  evals="$(grep -c '"iteration"' "$work/fit$T.json")"
  printf "fit T = %-3s  %3d evaluations  %6.3f s per evaluation  peak %4d MB\n" "$T" "$evals" "$per" $(( out / 1024 ))
done
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
# one evaluation on the 20-dimensional Lorenz-96 ring (1000 paths, 100 steps, 1000 data rows of the 20
# components made by samples(...) at F = 8, sigma = 0.5): the cost per evaluation of a 20-D fit
model='model L96 {\n  const N = 20\n  param F = %s\n  param sigma = %s in (0, inf)\n  state x[N] periodic\n  brownian W[N]\n  init x[i] ~ normal(8, 1)\n  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]\n}\nsimulate { paths = 1000; dt = 0.01; T = 1; seed = %s }\n'
cols="$(for i in $(seq 0 19); do printf 'x[%d], ' "$i"; done)"
{ printf "$model" 8 0.5 2026; printf 'query {\n  samples(%s)\n}\n' "${cols%, }"; } > "$work/l96gen.sde"
dotnet "$dll" run "$work/l96gen.sde" --out "$work/l96" --quiet > /dev/null
{ printf "$model" 6 1 11; printf 'fit F, sigma to "l96/samples.csv" { optimizer = adam(lr = 0.05); iterations = 3 }\n'; } > "$work/l96fit.sde"
out="$( { /usr/bin/time -f "%M" dotnet "$dll" fit "$work/l96fit.sde" --quiet --json > "$work/l96.json"; } 2>&1 | tail -n 1)"
per="$(grep -o '"seconds_per_evaluation": [0-9.e+-]*' "$work/l96.json" | awk '{print $2}')"
printf "fit Lorenz-96 (d = 20), 1000 paths x 100 steps, 1000 rows: %6.3f s per evaluation (all cores)  peak %4d MB\n" "$per" $(( out / 1024 ))
