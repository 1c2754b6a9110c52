"""The seed-repeat studies behind docs/lyapunov.md's frame-transient warning (needs numpy and a built CLI).

1. examples/lorenz96_lyapunov.sde (40 exponents, 4 paths) at burnin 2 against burnin 60, both over a window of
   50, 16 seeds each: per exponent the shift of the seed mean against its standard error (RMS z over the 40),
   and the spread over seeds against the reported error.
2. The `Every` model of docs/language.md (Lorenz-96 with 6 states, 1000 paths, dt = 0.005) over windows
   [b, b + 1] for b = 1, 2, 3, 6, 8 seeds each: the state's own transient (the paths start near x = F).

    dotnet build dsl/cli -c Release
    /usr/bin/python3 docs/scripts/lyapunov_transient_study.py [seeds]      (default 16; about 5 minutes on 2 cores)
"""
import json, os, re, subprocess, sys, tempfile
import numpy as np

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
dll = os.path.join(root, 'dsl', 'cli', 'bin', 'Release', 'net10.0', 'dsl.dll')
tmp = tempfile.mkdtemp()


def lyapunov(text, name):
    f = os.path.join(tmp, name)
    open(f, 'w').write(text)
    out = subprocess.run(['dotnet', dll, 'run', f, '--json', '--quiet'], capture_output=True, text=True).stdout
    r = json.loads(out)['sets'][0]['results'][0]
    return np.array(r['values']), np.array(r['stderrs'])


S = int(sys.argv[1]) if len(sys.argv) > 1 else 16
l96 = open(os.path.join(root, 'examples', 'lorenz96_lyapunov.sde')).read()
res = {}
for b in (2, 60):
    runs = [lyapunov(re.sub(r'simulate \{[^}]*\}', f'simulate {{ paths = 4; dt = 0.005; T = {b + 50}; seed = {1000 * b + k + 1}; burnin = {b} }}', l96), 'l96.sde')
            for k in range(S)]
    res[b] = np.array([v for v, _ in runs]), np.array([s for _, s in runs])
(va, sa), (vr, sr) = res[2], res[60]
d = va.mean(0) - vr.mean(0)
z = d / np.sqrt(va.var(0, ddof=1) / S + vr.var(0, ddof=1) / S)
print(f'Lorenz-96, 40 exponents, burnin 2 against 60 ({S} seeds each): RMS z {np.sqrt(np.mean(z ** 2)):.2f}, '
      f'largest shift {np.abs(d).max():.3f} (|z| {np.abs(z[np.abs(d).argmax()]):.1f})')
print(f'  spread over seeds / reported error (RMS over the exponents): burnin 2 {np.sqrt(np.mean((va.std(0, ddof=1) / np.sqrt((sa ** 2).mean(0))) ** 2)):.2f}, '
      f'burnin 60 {np.sqrt(np.mean((vr.std(0, ddof=1) / np.sqrt((sr ** 2).mean(0))) ** 2)):.2f}')

every = '''model Every {
  const N = 6
  param F = 8.0
  param sigma = 0.5 in (0, inf)
  state x[N] periodic
  brownian W[N]
  init x[i] ~ normal(F, 1)
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]
}
simulate { paths = 1000; dt = 0.005; T = TT; seed = SEED; burnin = BB }
query {
  lyapunov(6)
}
'''
means = {}
for b in (1, 2, 3, 6):
    vs = [lyapunov(every.replace('TT', str(b + 1)).replace('SEED', str(100 * b + k + 1)).replace('BB', str(b)), 'every.sde')[0] for k in range(8)]
    means[b] = np.array(vs).mean(0)
for b in (1, 2, 3):
    print(f'Every over [{b}, {b + 1}] minus over [6, 7], 8 seeds each:', ' '.join(f'{x:+.3f}' for x in means[b] - means[6]))
