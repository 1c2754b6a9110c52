#!/usr/bin/env bash
# Compile time and peak memory of `dsl check` (parse, check, lower, derivatives, emit; no simulation)
# on the noisy Lorenz-96 ring at growing N, with and without a response query (which adds the
# Jacobian and Hessian terms). Prints one line per size: N, seconds, peak MB, and the ratios to the
# previous size (linear scaling: ratios near 10). Without a derivative query the vector equation
# compiles to a loop over its index (the cost is then mostly the per-component tables, not code);
# with one, every component is unrolled, and past 10^5 components that is refused (a located error).
#   tests/perf/compile.sh [N ...]        default: 1000 10000 100000 1000000
#   tests/perf/compile.sh shapes         the shapes that were super-linear (issue 10)
#   tests/perf/compile.sh throughput     run speed with loops vs unrolled (tests/perf/loops.fsx)
# Needs GNU time as /usr/bin/time (Debian: apt-get install time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dotnet build dsl/cli -c Release -v q -nologo >/dev/null
dll=dsl/cli/bin/Release/net10.0/dsl.dll
work0="$(mktemp -d -t dsl-shapes.XXXXXX)"
# `compile.sh shapes`: the shapes that were super-linear before issue 10's fixes, one line each
if [[ ${1:-} == throughput ]]; then
  rmdir "$work0"
  shift
  exec dotnet fsi tests/perf/loops.fsx "$@"
fi
if [[ ${1:-} == shapes ]]; then
  trap 'rm -rf "$work0"' EXIT
  model() { printf 'model M {\n%b\n}\nsimulate { paths = 2; dt = 0.1; T = 0.1; seed = 1 }\nquery {\n  %s\n}\n' "$1" "$2"; }
  one() { # name, file
    out="$( { /usr/bin/time -f "%e %M" dotnet "$dll" check "$2" >/dev/null || echo "(exit $?)" >&2; } 2>&1 | tail -n 1)"
    printf "%-48s %7.2f s %7d MB\n" "$1" "${out% *}" $(( ${out#* } / 1024 ))
  }
  prod="x$(printf ' * x%.0s' $(seq 999))"
  model "  state x\n  brownian W\n  init x ~ normal(1, 0.1)\n  d x = -($prod) dt + dW" "mean(x)" > "$work0/prod.sde"
  one "x * x * ... * x, 1000 factors" "$work0/prod.sde"
  model "  const N = 200\n  state x[N]\n  brownian W[N]\n  d x[i] = -x[i] dt + dW[i]" "mean(sum(i, sum(j, x[i] * x[j])))" > "$work0/sumsum.sde"
  one "sum(i, sum(j, x[i] * x[j])), N = 200" "$work0/sumsum.sde"
  model "  const N = 20000\n  state x[N]\n  brownian W[N]\n  init x[i] ~ normal(0, 1)\n  d x[i] = -x[i] dt + dW[i]" "mean(x[0])" > "$work0/inits.sde"
  one "init x[i] ~ normal(0, 1), N = 20000" "$work0/inits.sde"
  consts="$(for k in $(seq 10000); do printf '  const c%d = %d\\n' "$k" "$k"; done)"
  model "$consts  state x\n  brownian W\n  d x = -x dt + dW" "mean(x)" > "$work0/consts.sde"
  one "10000 consts" "$work0/consts.sde"
  divs="x$(printf ' / (1 + x)%.0s' $(seq 8000))"
  model "  state x\n  brownian W\n  init x ~ normal(1, 0.1)\n  d x = -x dt + dW" "mean($divs)" > "$work0/divs.sde"
  one "x / (1 + x) / ... , 8000 divisions" "$work0/divs.sde"
  meanfield="  const N = %d\n  param s = 0.5\n  state x[N]\n  brownian W[N]\n  init x[i] ~ normal(0, 1)\n  d x[i] = (sum(j, x[j]) / N - x[i]) dt + s dW[i]"
  model "$(printf "$meanfield" 3000)" "mean(x[0])" > "$work0/mf.sde"
  one "mean field sum(j, x[j]) / N, N = 3000" "$work0/mf.sde"
  model "$(printf "$meanfield" 1000)" "mean(x[0])" > "$work0/mf1k.sde"
  one "mean field, N = 1000 (unrolled)" "$work0/mf1k.sde"
  model "$(printf "$meanfield" 1000)" "d mean(x[0]) / d s" > "$work0/mf1kr.sde"
  one "mean field, N = 1000, with a response" "$work0/mf1kr.sde"
  exit 0
fi
rmdir "$work0"
sizes=("$@"); [[ ${#sizes[@]} -gt 0 ]] || sizes=(1000 10000 100000 1000000)
work="$(mktemp -d -t dsl-compile.XXXXXX)"; trap 'rm -rf "$work"' EXIT

ring() { # N, query
  cat <<SDE
model Lorenz96 {
  const N = $1
  param F = 8
  param sigma = 0.5
  state x[N] periodic
  brownian W[N]
  init x[i] ~ normal(8, 1)
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]
}
simulate { paths = 4; dt = 0.005; T = 0.01; seed = 1 }
query { $2 }
SDE
}

for what in "mean(x[0])" "d mean(avg(i, x[i])) / d F"; do
  echo "== $what"
  prev_t=""; prev_m=""
  for n in "${sizes[@]}"; do
    ring "$n" "$what" > "$work/ring.sde"
    if [[ $what == d* && $n -gt 100000 ]]; then
      printf "N = %-8s refused: %s\n" "$n" "$(dotnet "$dll" check "$work/ring.sde" 2>&1 | head -n 1 | cut -c 1-110)..."
      continue
    fi
    out="$( { /usr/bin/time -f "%e %M" dotnet "$dll" check "$work/ring.sde" >/dev/null; } 2>&1 | tail -n 1)"
    t="${out% *}"; m=$(( ${out#* } / 1024 ))
    if [[ -n $prev_t ]]; then
      printf "N = %-8s %7.2f s %7d MB   x%.1f time, x%.1f memory\n" "$n" "$t" "$m" "$(awk "BEGIN { print $t / $prev_t }")" "$(awk "BEGIN { print $m / $prev_m }")"
    else
      printf "N = %-8s %7.2f s %7d MB\n" "$n" "$t" "$m"
    fi
    prev_t="$t"; prev_m="$m"
  done
done
