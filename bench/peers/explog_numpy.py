"""Reference peer: numpy Euler-Maruyama for dx = -(exp(x) - 1 - log(1 + x^2)) dt + 0.5 dW, x0 = 0.1,
dt = 0.001, vectorised over paths (the workload of tests/perf/explog_bench.sde). Usage: explog_numpy.py PATHS STEPS"""
import sys, time, numpy as np
P, S = int(sys.argv[1]), int(sys.argv[2])
dt = 0.001
rng = np.random.default_rng(1)
x = np.full(P, 0.1)
sq = 0.5 * np.sqrt(dt)
t0 = time.perf_counter()
for _ in range(S):
    w = rng.standard_normal(P)
    x = x - (np.exp(x) - 1.0 - np.log1p(x * x)) * dt + sq * w
el = time.perf_counter() - t0
print(f"mean_x {x.mean():.6f}\nseconds {el:.3f}\npath_steps_per_s {P*S/el:.4e}")
