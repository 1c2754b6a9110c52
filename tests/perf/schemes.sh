#!/usr/bin/env bash
# The equal-error scheme benchmark (issue 21 §4; docs/discretisation.md, "Which scheme at equal
# error"): Euler–Maruyama, Milstein, SRA and Richardson from Euler at the dt and paths that reach a
# total error sqrt(bias^2 + se^2) of 1e-3 relative at least cost, on geometric Brownian motion and
# Lorenz-96 (N = 40, additive noise); prints the wall-time ratios against Euler measured in the same run.
#
#   tests/perf/schemes.sh [REPS] [THREADS] [BUDGET] [CALIBRATION_PATHS]   (defaults 3, 1, 1e7, per model)
#
# BUDGET caps the chain steps of one timed Lorenz-96 run (a plan above it runs fewer paths, its time
# scaled up; GBM runs whole);
# `tests/perf/schemes.sh 1 1 3e6 400` is a quick smoke run. See tests/perf/schemes.fsx.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
dotnet build -c Release dsl/cli -nologo -v quiet >"$log" 2>&1 || { cat "$log"; exit 1; }
echo "uptime: $(uptime)"
dotnet fsi tests/perf/schemes.fsx "$@"
echo "uptime: $(uptime)"
