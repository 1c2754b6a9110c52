#!/usr/bin/env python3
"""Birth-death Langevin (Lu, Lu and Nolen 2019) in numpy, as a Python user writes it: the peer of
tests/perf/wfr_bd.sde. Overdamped Langevin in V = 4 (x^2 - 1)^2 + 0.5 x from x = -1, and per step
the WFR reaction: beta_i = -(log rho(x_i) + V(x_i)), centred; a path with beta > 0 duplicates onto a
uniform other path with probability 1 - exp(-beta dt), one with beta < 0 dies and copies a uniform
other path. rho is the Gaussian kernel density estimate with bandwidth H, computed as the engine
does it: linear binning on a grid of spacing H/4 spanning the particles +- 4H, a convolution with
the kernel truncated at 4H (FFT), and linear interpolation back at the particles.

    python3 bench/peers/bd_numpy.py PATHS STEPS [H]
prints mass_right (the fraction of paths right of 0 at the end), seconds, path_steps_per_s."""
import sys
import time

import numpy as np


def log_kde(x, h):
    lo, hi = x.min() - 4 * h, x.max() + 4 * h
    g = int(min(4096, max(8, np.ceil((hi - lo) / (h / 4)) + 1)))
    dx = (hi - lo) / (g - 1)
    p = (x - lo) / dx
    j = np.clip(np.floor(p).astype(np.int64), 0, g - 2)
    f = np.clip(p - j, 0.0, 1.0)
    w = 1.0 / x.size
    grid = np.bincount(j, weights=w * (1 - f), minlength=g) + np.bincount(j + 1, weights=w * f, minlength=g)
    r = int(min(g - 1, np.ceil(4 * h / dx)))
    t = np.arange(-r, r + 1) * dx / h
    kern = np.exp(-0.5 * t * t) / (h * np.sqrt(2 * np.pi))
    n = g + 2 * r
    size = 1 << int(np.ceil(np.log2(n)))
    smooth = np.fft.irfft(np.fft.rfft(grid, size) * np.fft.rfft(kern, size), size)[r:r + g]
    dens = smooth[j] * (1 - f) + smooth[j + 1] * f
    return np.log(np.maximum(dens, 1e-300))


def main():
    paths, steps = int(sys.argv[1]), int(sys.argv[2])
    h = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    dt = 0.002
    rng = np.random.default_rng(5)
    x = np.full(paths, -1.0)
    idx = np.arange(paths)
    t0 = time.perf_counter()
    for _ in range(steps):
        V = 4 * (x * x - 1) ** 2 + 0.5 * x
        beta = -(log_kde(x, h) + V) * dt
        beta -= beta.mean()
        x = x - (16 * x * (x * x - 1) + 0.5) * dt + np.sqrt(2 * dt) * rng.standard_normal(paths)
        u = rng.random(paths)
        jump = u < 1 - np.exp(-np.abs(beta))
        partner = rng.integers(0, paths - 1, paths)
        partner = partner + (partner >= idx)
        anc = idx.copy()
        dup = jump & (beta > 0)
        kill = jump & (beta < 0)
        anc[partner[dup]] = idx[dup]
        anc[kill] = partner[kill]
        x = x[anc]
    sec = time.perf_counter() - t0
    print("mass_right", float(np.mean(x > 0)))
    print("seconds", sec)
    print("path_steps_per_s", paths * steps / sec)


if __name__ == "__main__":
    main()
