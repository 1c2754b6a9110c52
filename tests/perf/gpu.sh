#!/usr/bin/env bash
# Device check for the CUDA backend, run on a machine with an NVIDIA GPU and no .NET, from the
# repository root, with a self-contained build of the tool at $DSL (default publish/dsl/dsl):
#   dotnet publish dsl/cli -c Release -r linux-x64 --self-contained -o publish/dsl
#   tar czf dsl-publish.tgz publish/dsl        (then, there, in the repository root: tar xzf dsl-publish.tgz)
# 1. equivalence: `--backend cuda` against the CPU engine with the same (scalar) normals
#    (one generator: no switch needed), on small runs of several examples, worst relative difference;
# 2. throughput on the benchmark workload (Lorenz-96-40, 2000 steps): CUDA with 10^6 paths,
#    the CPU engine (all cores of that machine) with 10^5 paths.
set -u
DSL="${DSL:-publish/dsl/dsl}"
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log="$OUT/gpu.log"
say() { echo "$*" | tee -a "$log"; }
say "== $(date -u +%F) $(nvidia-smi -L 2>/dev/null | head -1) ; $(nproc) CPU cores"
say "== equivalence: cuda vs cpu (the same normals), worst relative difference over every value and stderr"
eq() { # NAME FILE ARGS...
    local name="$1" file="$2"; shift 2
    "$DSL" run "$file" --backend cpu --json --quiet "$@" >"$tmp/cpu_$name.json" 2>>"$log" || { say "$name: cpu run failed"; return; }
    "$DSL" run "$file" --backend cuda --json --quiet "$@" >"$tmp/cuda_$name.json" 2>>"$log" || { say "$name: cuda run failed"; return; }
    say "$name: $(python3 tests/perf/compare_json.py "$tmp/cpu_$name.json" "$tmp/cuda_$name.json")"
}
eq ou examples/ou.sde --paths 4000
eq gbm examples/gbm.sde --paths 4000
eq sweep examples/sweep.sde --paths 2000
eq l96bench_T1 tests/perf/l96_bench.sde --paths 2000 --T 1
eq lorenz96_T10 examples/lorenz96.sde --paths 2000
eq ou_response examples/ou_response.sde --paths 4000
eq lorenz63_lyapunov examples/lorenz63_lyapunov.sde
eq l96_response examples/lorenz96_response.sde --paths 32
# the tangent kernel (refused on cuda until confirmed: DSL_CUDA_TANGENT=1 lifts the refusal), with
# one response parameter (the case ILGPU's one-case switch got wrong) and with two
export DSL_CUDA_TANGENT=1
ou1() { # QUERY...: an OU file with these queries
    printf 'model OU {\n  param theta = 1 in (0, inf)\n  param sigma = 0.5 in (0, inf)\n  state x\n  brownian W\n  init x = 1\n  d x = -theta * x dt + sigma dW\n}\nsimulate { paths = 4000; dt = 0.01; T = 1; seed = 3 }\nquery {\n'
    for q in "$@"; do printf '  %s\n' "$q"; done
    printf '}\n'
}
ou1 "d mean(x^2) / d theta with pathwise" >$tmp/t_ou_pw.sde
ou1 "d mean(x^2) / d theta" "d density(x) / d theta on [-1, 3] bins 8 with divergence_kernel(alpha = 0.5)" "d mean(x) / d theta with likelihood_ratio" >$tmp/t_ou_dk.sde
ou1 "d mean(x^2) / d theta" "d mean(x^2) / d sigma" "d mean(x) / d sigma with pathwise" >$tmp/t_ou_two.sde
eq tangent_ou_pathwise_theta $tmp/t_ou_pw.sde
eq tangent_ou_dk_theta $tmp/t_ou_dk.sde
eq tangent_ou_theta_sigma $tmp/t_ou_two.sde
for m in exact first_order iterative; do
    sed "s|^  mean(x\[0\])\$|  d mean(x[0]) / d F with divergence_kernel(mode = $m)|" tests/perf/l96_bench.sde >$tmp/t_l96_$m.sde
    eq tangent_l96_$m $tmp/t_l96_$m.sde --paths 64 --T 1
done
sed "s|^  mean(x\[0\])\$|  d mean(x[0]) / d F with pathwise|" tests/perf/l96_bench.sde >$tmp/t_l96_pw.sde
eq tangent_l96_pathwise $tmp/t_l96_pw.sde --paths 64 --T 1
unset DSL_CUDA_TANGENT
# the weighted step kernel (refused on cuda until confirmed: DSL_CUDA_WEIGHTED=1 lifts the refusal): the
# population operations run on the host, so the JSON should be the CPU engine's up to the device's math
# functions (every step a launch and a round trip of the population)
export DSL_CUDA_WEIGHTED=1
eq weighted_anneal examples/anneal.sde --paths 2000 --T 1
eq weighted_wfr_double_well examples/wfr_double_well.sde --paths 2000 --T 2
eq weighted_wfr_mixture2d examples/wfr_mixture2d.sde --paths 2000 --T 1
sed 's|resample = systematic; ess = 0.9|resample = birth_death|' examples/wfr_double_well.sde >$tmp/w_bd.sde
eq weighted_birth_death $tmp/w_bd.sde --paths 2000 --T 2
unset DSL_CUDA_WEIGHTED
say "== throughput, tests/perf/l96_bench.sde (N = 40, dt = 0.005, 2000 steps)"
rate() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["timing"]["path_steps_per_second"], d["timing"]["seconds"], d["sets"][0]["results"][0]["value"])' "$1"; }
for p in 100000 1000000; do
    "$DSL" run tests/perf/l96_bench.sde --backend cuda --json --quiet --paths $p >$tmp/b_cuda_$p.json 2>>"$log" && say "cuda  paths=$p: path-steps/s, seconds, mean x0 = $(rate $tmp/b_cuda_$p.json)"
done
"$DSL" run tests/perf/l96_bench.sde --backend cpu --json --quiet --paths 100000 >$tmp/b_cpu.json 2>>"$log" && say "cpu   paths=100000: path-steps/s, seconds, mean x0 = $(rate $tmp/b_cpu.json)"
sed "s|^  mean(x\[0\])\$|  d mean(x[0]) / d F with divergence_kernel(mode = first_order)|" tests/perf/l96_bench.sde >$tmp/b_dk.sde
"$DSL" run $tmp/b_dk.sde --backend cuda --json --quiet --paths 100000 >$tmp/b_dk_cuda.json 2>>"$log" && say "cuda  DK first_order paths=100000: $(rate $tmp/b_dk_cuda.json)"
"$DSL" run $tmp/b_dk.sde --backend cpu --json --quiet --paths 10000 >$tmp/b_dk_cpu.json 2>>"$log" && say "cpu   DK first_order paths=10000: $(rate $tmp/b_dk_cpu.json)"
say "== done"
