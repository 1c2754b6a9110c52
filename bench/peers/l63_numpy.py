"""Reference peer: numpy Euler-Maruyama for noisy Lorenz-63, vectorised over paths (what a Python user
writes): sigma = 10, rho = 28, beta = 8/3, additive noise 0.5 on each component, dt = 0.001,
x0 = (1, 1, 1) (the workload of tests/perf/l63_bench.sde). Usage: l63_numpy.py PATHS STEPS"""
import sys, time, numpy as np
P, S = int(sys.argv[1]), int(sys.argv[2])
s, r, b, eps, dt = 10.0, 28.0, 8.0 / 3.0, 0.5, 0.001
rng = np.random.default_rng(1)
x = np.ones(P); y = np.ones(P); z = np.ones(P)
sq = eps * np.sqrt(dt)
t0 = time.perf_counter()
for _ in range(S):
    w = rng.standard_normal((3, P))
    fx = s * (y - x); fy = x * (r - z) - y; fz = x * y - b * z
    x = x + fx * dt + sq * w[0]
    y = y + fy * dt + sq * w[1]
    z = z + fz * dt + sq * w[2]
el = time.perf_counter() - t0
print(f"mean_x {x.mean():.6f}\nseconds {el:.3f}\npath_steps_per_s {P*S/el:.4e}")
