"""The coupled-pairs bias of GBM's variance(x), by the engine's estimator, in numpy (independent of the engine).

docs/discretisation.md, "Derived results": over a few hundred pairs the bias's z-score is not normal
(the pairs' c^2 - f^2 is skewed), yet its jackknife standard error is right on average: the spread of the
estimates over seeds matches the reported errors. This script measures both, and the spread ratio's own
scatter over groups of 40 seeds (tests/BiasKindsTests.fs's "Slow bias kinds" asserts the engine's ratio over
200 seeds in [0.8, 1.25]).

Model (tests/BiasKindsTests.fs): dx = mu x dt + sigma x dW, mu = 1, sigma = 0.5, x0 = 1, T = 1, dt = 0.02;
pairs: a chain at dt and one at dt/2 on the same Brownian path, a fixed number of them (default 80; the
engine's pilot chooses 32 to 218 at 4000 paths, the cap P/16 = 250);
b = 2 (g(C) - g(F)), g = the pairs' sample variance (n/(n-1)), se by the jackknife over 32 blocks.

Run: /usr/bin/python3 docs/scripts/gbm_variance_bias.py [seeds [pairs]]   (numpy; about 10 s for 2000 seeds)
"""
import sys
import numpy as np

mu, sigma, T, dt, blocks = 1.0, 0.5, 1.0, 0.02, 32


def chain_variance(h):
    """The Euler chain's Var x_N exactly: E x_N = (1 + mu h)^N, E x_N^2 = ((1 + mu h)^2 + sigma^2 h)^N."""
    n = round(T / h)
    m1 = (1 + mu * h) ** n
    return ((1 + mu * h) ** 2 + sigma**2 * h) ** n - m1 * m1


target = 2 * (chain_variance(dt) - chain_variance(dt / 2))


def coupled(rng, p):
    c, f = np.ones(p), np.ones(p)
    for _ in range(round(T / dt)):
        w1 = rng.standard_normal(p) * np.sqrt(dt / 2)
        w2 = rng.standard_normal(p) * np.sqrt(dt / 2)
        f = f * (1 + mu * dt / 2 + sigma * w1)
        f = f * (1 + mu * dt / 2 + sigma * w2)
        c = c * (1 + mu * dt + sigma * (w1 + w2))
    return c, f


def var(a):
    return a.var() * len(a) / (len(a) - 1)


def bias(c, f):
    b = 2 * (var(c) - var(f))
    k = np.arange(len(c)) % blocks
    t = np.array([2 * (var(c[k != j]) - var(f[k != j])) for j in range(blocks)])
    return b, np.sqrt((blocks - 1) / blocks * np.sum((t - t.mean()) ** 2))


seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 80
bs, ses = np.empty(seeds), np.empty(seeds)
for s in range(seeds):
    bs[s], ses[s] = bias(*coupled(np.random.default_rng(s), pairs))
z = (bs - target) / ses
print(f"target 2 (Q(dt) - Q(dt/2)) = {target:.5f}; {seeds} seeds of {pairs} pairs")
print(f"RMS z {np.sqrt(np.mean(z**2)):.2f}, mean z {z.mean():+.2f}, share |z| > 3: {np.mean(abs(z) > 3):.3f}")
print(f"RMS(b - target) / RMS(se) = {np.sqrt(np.mean((bs - target) ** 2) / np.mean(ses**2)):.3f}; corr(b, se) {np.corrcoef(bs, ses)[0, 1]:+.2f}")
g = [np.sqrt(np.mean((bs[i:i + 40] - target) ** 2) / np.mean(ses[i:i + 40] ** 2)) for i in range(0, seeds - 39, 40)]
zg = [np.sqrt(np.mean(z[i:i + 30] ** 2)) for i in range(0, seeds - 29, 30)]
print(f"groups of 40 seeds: spread/RMS se from {min(g):.2f} to {max(g):.2f} (5%-95%: {np.percentile(g, 5):.2f}-{np.percentile(g, 95):.2f})")
print(f"groups of 30 seeds: RMS z from {min(zg):.2f} to {max(zg):.2f} (5%-95%: {np.percentile(zg, 5):.2f}-{np.percentile(zg, 95):.2f})")
c, f = coupled(np.random.default_rng(12345), 10**6)
d = c * c - f * f
d -= d.mean()
print(f"per pair c^2 - f^2: skewness {np.mean(d**3) / np.mean(d**2) ** 1.5:.1f}, kurtosis {np.mean(d**4) / np.mean(d**2) ** 2:.0f}")
