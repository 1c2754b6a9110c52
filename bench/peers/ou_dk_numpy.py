"""Reference peer: numpy divergence-kernel response of the 1-D Ornstein-Uhlenbeck process, vectorised over
paths (what a Python user writes from docs/estimators.md): d E[x_N^2] / d theta for dx = -theta x dt + sigma dW,
theta = 1, sigma = 0.5, x0 = 1, dt = 0.001 (the workload of tests/perf/ou_dk_bench.sde). The chain's Jacobian is
J = 1 - theta dt (no Hessian term), chi = -x dt, Dchi = -dt, sigma+ = 1 / (sigma sqrt(dt)); the schedule
alpha_n = max(1/(n+1), min(1, 10 dt)) (a point init). Usage: ou_dk_numpy.py PATHS STEPS"""
import sys, time, numpy as np
P, S = int(sys.argv[1]), int(sys.argv[2])
theta, sig, dt, rate = 1.0, 0.5, 0.001, 10.0
rng = np.random.default_rng(1)
x = np.full(P, 1.0)
nu = np.zeros(P)
ell = np.zeros(P)
sq = np.sqrt(dt)
jinv = 1.0 / (1.0 - theta * dt)
sp = 1.0 / (sig * sq)
t0 = time.perf_counter()
for n in range(S):
    a = max(1.0 / (n + 1), min(1.0, rate * dt))
    w = rng.standard_normal(P)
    chi = -x * dt
    u = nu * jinv                                    # J^-T c, c = nu
    ell += -(1 - a) * (u * chi) + (1 - a) * jinv * dt + a * sp * (w * chi)
    nu = (1 - a) * u - (a * sp) * w
    x += -theta * x * dt + sig * sq * w
el = time.perf_counter() - t0
y = x * x * ell
print(f"d_mean_x2_dtheta {y.mean():.6f} +- {y.std() / np.sqrt(P):.6f}\nseconds {el:.3f}\npath_steps_per_s {P * S / el:.4e}")
