"""Reference peer: numpy Euler-Maruyama for the 1-D Ornstein-Uhlenbeck process, vectorised over paths
(what a Python user writes). dx = -theta x dt + sigma dW, theta = 1, sigma = 0.5, x0 = 1, dt = 0.001
(the workload of tests/perf/ou_bench.sde). Usage: ou_numpy.py PATHS STEPS"""
import sys, time, numpy as np
P, S = int(sys.argv[1]), int(sys.argv[2])
theta, sig, dt = 1.0, 0.5, 0.001
rng = np.random.default_rng(1)
x = np.full(P, 1.0)
sq = np.sqrt(dt)
t0 = time.perf_counter()
for _ in range(S):
    x += -theta * x * dt + sig * sq * rng.standard_normal(P)
el = time.perf_counter() - t0
print(f"mean_x {x.mean():.6f}\nseconds {el:.3f}\npath_steps_per_s {P*S/el:.4e}")
