#!/usr/bin/env bash
# Are the sandwich standard errors of `law = marginals` right when the columns are dependent?
# (docs/fitting.md#the-law-compared-joint-or-marginals). Two OU components driven by noises 0.9
# correlated, theta = 1, sigma = 0.5; REPS data sets of 1000 rows (samples(x, y), seeds 1001, ...),
# each fitted with law = marginals on 20000 paths from (2, 1). Prints the spread (sd) of the fitted
# values over the data sets against the mean reported standard error: their ratio should be about 1
# (the reported errors are the data's; the paths add about rows/paths = 5% of the variance).
#   docs/scripts/marginals_study.sh [REPS]      (default 30; ~15 s a data set on 2 cores)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
reps="${1:-30}"
dotnet build "$root/dsl/cli" -c Release -v q -nologo >/dev/null
dll="$root/dsl/cli/bin/Release/net10.0/dsl.dll"
work="$(mktemp -d -t dsl-marg.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cat > "$work/gen.sde" <<'SDE'
model C2 {
  param theta = 1 in (0, inf)
  param sigma = 0.5 in (0, inf)
  state x
  state y
  brownian W
  brownian V
  init x = 1
  init y = 1
  d x = -theta * x dt + sigma dW
  d y = -theta * y dt + sigma * (0.9 * dW + 0.43589 * dV)
}
simulate { paths = 1000; dt = 0.01; T = 1; seed = 1 }
query { samples(x, y) }
SDE
sed -e 's/^query.*$//' -e 's/param theta = 1 /param theta = 2 /' -e 's/param sigma = 0.5 /param sigma = 1 /' \
    -e 's/paths = 1000/paths = 20000/' -e 's/seed = 1 /seed = 99999 /' "$work/gen.sde" > "$work/fit.sde"
echo 'fit theta, sigma to "d/samples.csv" { law = marginals; iterations = 60 }' >> "$work/fit.sde"
for r in $(seq 1 "$reps"); do
  dotnet "$dll" run "$work/gen.sde" --seed $((1000 + r)) --out "$work/d" --quiet > /dev/null
  dotnet "$dll" fit "$work/fit.sde" --quiet --json | awk '
    /"fitted"/ { f = 1 } /"stderr"/ { e = 1 }
    f && /"theta"/ { gsub(/[,}]/, ""); split($0, a, ":"); th = a[2] } f && /"sigma"/ { gsub(/[,}]/, ""); split($0, a, ":"); si = a[2]; f = 0 }
    e && /"theta"/ { gsub(/[,}]/, ""); split($0, a, ":"); eth = a[2] } e && /"sigma"/ { gsub(/[,}]/, ""); split($0, a, ":"); esi = a[2]; e = 0 }
    END { print th, si, eth, esi }' >> "$work/res.txt"
done
awk '{ n++; t += $1; tt += $1 * $1; s += $2; ss += $2 * $2; et += $3; es += $4 }
  END { sdt = sqrt((tt - t * t / n) / (n - 1)); sds = sqrt((ss - s * s / n) / (n - 1));
        printf "%d data sets\ntheta: mean %.4f  sd %.4f  mean stderr %.4f  sd/stderr %.2f\nsigma: mean %.4f  sd %.4f  mean stderr %.4f  sd/stderr %.2f\n",
          n, t / n, sdt, et / n, sdt / (et / n), s / n, sds, es / n, sds / (es / n) }' "$work/res.txt"
