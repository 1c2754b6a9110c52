#!/usr/bin/env python3
"""Checks an executed docs/notebooks/tour notebook (.ipynb written by dotnet-repl): every code cell ran
without an error, the results displayed themselves (HTML tables and inline SVG plots), and the numbers
agree with closed forms computed here, independently of the engine:

  1. OU from x0 = 1 (theta = 1, sigma = 0.5, dt = 0.01, T = 1): the Euler chain is Gaussian, so its mean,
     d mean / d theta, the density's bin masses and their derivative in sigma are exact;
  2. the sweep of examples/sweep.sde: mean(x^2) = sigma^2 / (theta (2 - theta dt)) per set;
  3. the fit of examples/fit_ou.sde: the maximum-likelihood values of the chain's law from fit_ou.csv, with
     the tolerance of tests/FitTests.fs (ouTolerance: 4.5 standard deviations of the paths' sampling error);
  4. examples/wfr_double_well.sde: the WFR set's mass right of 0 near the target's (quadrature), plain
     Langevin measurably short of it (the claims of tests/WeightedTests.fs).

With a third argument, the committed notebook (docs/notebooks/tour.ipynb), it also checks that the run
reproduces its structure: the same cells with the same sources, outputs of the same kinds, the same
result rows and as many plots per cell (the numbers and timings may differ), so that the committed
notebook cannot go stale (`tests/notebooks/run.sh --update` rewrites it).

Usage: check.py NOTEBOOK.ipynb REPO_ROOT [COMMITTED.ipynb]. Prints one line per check and `notebook: N passed, N failed`;
exits 1 on any failure.
"""
import html
import json
import math
import re
import sys

notebook_path, repo = sys.argv[1], sys.argv[2]
nb = json.load(open(notebook_path, encoding="utf-8"))
passed, failed = 0, 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print("  ok    " + what)
    else:
        failed += 1
        print("  FAIL  " + what)


def html_of(cell):
    out = []
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if "text/html" in data:
            out.append("".join(data["text/html"]))
    return "".join(out)


code = [c for c in nb["cells"] if c["cell_type"] == "code"]
for i, c in enumerate(code):
    errors = [o for o in c.get("outputs", []) if o.get("output_type") == "error"]
    check(not errors, "code cell %d ran without error%s" % (i, "" if not errors else ": " + errors[0].get("evalue", "")[:300]))

# the cells in order: 0 the reference, 1 the OU run, 2 the comparison, 3 the sweep, 4 the fit, 5 WFR,
# 6 the OU run from C#
check(len(code) == 7, "seven code cells (found %d)" % len(code))
if len(code) != 7:
    print("notebook: %d passed, %d failed" % (passed, failed))
    sys.exit(1)

ou, sweep, fit, wfr, cs = html_of(code[1]), html_of(code[3]), html_of(code[4]), html_of(code[5]), html_of(code[6])
for name, h in [("OU run", ou), ("sweep", sweep), ("fit", fit), ("WFR run", wfr)]:
    check("<table" in h and "<svg" in h, "%s: displayed as an HTML table with inline SVG plots" % name)


def attrs(tag):
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag)}


def results(h):
    """Per set (in order), the result rows' attributes."""
    sets = []
    for part in re.split(r'<h4 class="sde-set"', h)[1:]:
        name = attrs(part[: part.index(">") + 1]).get("data-set")
        rows = [attrs(t) for t in re.findall(r'<tr class="sde-result"[^>]*>', part)]
        sets.append((name, {r["data-query"]: r for r in rows}))
    return sets


def floats(s):
    return [float(x) for x in s.split()]


Phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

# 1. OU: the chain's exact law at T
a, n, dt, x0, theta, sigma = 0.99, 100, 0.01, 1.0, 1.0, 0.5
m = a**n * x0
S = (1 - a ** (2 * n)) / (1 - a * a)
var = lambda s: s * s * dt * S
(set1, r1), = results(ou)[:1]


def within(q, value, stderr, exact, k=4.5, slack=0.0):
    check(abs(value - exact) <= k * stderr + slack, "%s = %.5f ± %.5f vs closed form %.5f" % (q, value, stderr, exact))


q = r1["mean(x)"]
within("mean(x)", float(q["data-value"]), float(q["data-stderr"]), m)
q = r1["d mean(x) / d theta"]
within("d mean(x) / d theta", float(q["data-value"]), float(q["data-stderr"]), -n * dt * a ** (n - 1) * x0)


def bin_mass(lo, hi, s):
    sd = math.sqrt(var(s))
    return Phi((hi - m) / sd) - Phi((lo - m) / sd)


for key, derivative in [("density(x) on [-0.5, 1.25] bins 14", False), ("d density(x) / d sigma on [-0.5, 1.25] bins 14", True)]:
    q = r1[key]
    grid, vals, errs = floats(q["data-grid"]), floats(q["data-values"]), floats(q["data-stderrs"])
    w = 1.75 / 14
    bad = []
    for c, v, e in zip(grid, vals, errs):
        lo, hi = c - w / 2, c + w / 2
        if derivative:
            h = 1e-5
            exact = (bin_mass(lo, hi, sigma + h) - bin_mass(lo, hi, sigma - h)) / (2 * h) / w
        else:
            exact = bin_mass(lo, hi, sigma) / w
        if abs(v - exact) > 4.5 * e + 1e-9:
            bad.append("bin at %.3f: %.4f ± %.4f vs %.4f" % (c, v, e, exact))
    check(len(grid) == 14 and not bad, "%s: all 14 bins within 4.5 stderr of the Gaussian's %s" % (key, "derivative" if derivative else "bin masses") + ("; " + "; ".join(bad) if bad else ""))

# the same from C# (1000 paths)
check("<table" in cs, "C#: displayed as an HTML table")
cs_sets = results(cs)
check(len(cs_sets) == 1 and "mean(x)" in cs_sets[0][1], "C#: the run's mean(x)")
if len(cs_sets) == 1 and "mean(x)" in cs_sets[0][1]:
    q = cs_sets[0][1]["mean(x)"]
    within("C#: mean(x)", float(q["data-value"]), float(q["data-stderr"]), m)
    check('data-stderr="' in cs and "1000 paths" in cs, "C#: the paths override (1000 paths)")

# 2. the sweep: the chain's stationary variance (the transient from N(0, 1) is below 1e-4 at T = 5)
cells = re.findall(r'<h4 class="sde-sweep" data-param="theta">.*?</table>', sweep, re.S)
check(len(cells) == 1, "the sweep's table over theta")
if cells:
    rows = re.findall(r'<tr><td class="sde-num">([^<]*)</td><td class="sde-num" data-value="([^"]*)" data-stderr="([^"]*)"', cells[0])
    check(len(rows) == 5, "five swept values (found %d)" % len(rows))
    for t, v, e in rows:
        t = float(t)
        within("mean(x^2) at theta = %g" % t, float(v), float(e), 1.0 / (t * (2 - t * 0.01)), slack=1e-4)

# 3. the fit: the MLE of the chain's Gaussian law at T from the data (tests/FitTests.fs: ouMle, ouTolerance)
lines = [l.strip() for l in open(repo + "/examples/fit_ou.csv", encoding="utf-8") if l.strip() and not l.startswith("#")]
ys = [float(l) for l in lines[1:]]  # after the header `x`


def ou_law(th, s):
    aa = 1 - th * 0.01
    return aa**100, s * s * 0.01 * (1 - aa**200) / (1 - aa * aa)


mean = sum(ys) / len(ys)
v = sum((y - mean) ** 2 for y in ys) / len(ys)
th_mle = (1 - mean ** (1 / 100)) / 0.01
s_mle = math.sqrt(v / ou_law(th_mle, 1.0)[1])
paths = 2000.0
d = 1e-6
_, vv = ou_law(th_mle, s_mle)
dm = (ou_law(th_mle + d, s_mle)[0] - ou_law(th_mle - d, s_mle)[0]) / (2 * d)
dvt = (ou_law(th_mle + d, s_mle)[1] - ou_law(th_mle - d, s_mle)[1]) / (2 * d)
dvs = 2 * vv / s_mle
sd_t = math.sqrt(vv / paths) / abs(dm)
sd_s = math.sqrt(2 * vv * vv / paths + (dvt * sd_t) ** 2) / dvs
fitted = {attrs(t)["data-name"]: float(attrs(t)["data-value"]) for t in re.findall(r'<tr class="sde-fitted"[^>]*>', fit)}
check(set(fitted) == {"theta", "sigma"}, "the fit's table has theta and sigma")
if set(fitted) == {"theta", "sigma"}:
    check(abs(fitted["theta"] - th_mle) < 4.5 * sd_t, "fitted theta %.4f vs MLE %.4f (tolerance %.4f)" % (fitted["theta"], th_mle, 4.5 * sd_t))
    check(abs(fitted["sigma"] - s_mle) < 4.5 * sd_s, "fitted sigma %.4f vs MLE %.4f (tolerance %.4f)" % (fitted["sigma"], s_mle, 4.5 * sd_s))
check('class="sde-loss"' in fit, "the fit shows its final loss")

# 4. WFR: the target's mass right of 0 by the trapezoid rule
V = lambda x: 4 * (x * x - 1) ** 2 + 0.5 * x


def trapezoid(f, lo, hi, k):
    h = (hi - lo) / k
    return h * (0.5 * f(lo) + 0.5 * f(hi) + sum(f(lo + i * h) for i in range(1, k)))


target = trapezoid(lambda x: math.exp(-V(x)), 0, 6, 60000) / trapezoid(lambda x: math.exp(-V(x)), -6, 6, 120000)
check(abs(target - 0.28243) < 1e-5, "the target's mass right of 0 is %.5f (the example's comment: 0.28243)" % target)
sets = dict(results(wfr))
check(set(sets) >= {"wfr", "langevin"}, "the weighted sampler's sets wfr and langevin")
if set(sets) >= {"wfr", "langevin"}:
    w_, l_ = sets["wfr"]["mean(right)"], sets["langevin"]["mean(right)"]
    wv, we, lv, le = float(w_["data-value"]), float(w_["data-stderr"]), float(l_["data-value"]), float(l_["data-stderr"])
    # as tests/WeightedTests.fs: 0.03 for the flow not at equilibrium at T = 4 and the kernel density's smoothing
    check(abs(wv - target) <= 4.5 * we + 0.03, "WFR mass right of 0 at T %.4f ± %.4f vs target %.4f" % (wv, we, target))
    check(lv + 4.5 * le < target - 0.1, "Langevin %.4f ± %.4f is short of it" % (lv, le))
    check("ess" in sets["wfr"], "the WFR set reports its effective sample size")

# the committed notebook: the structure of this run
def structure(book):
    out = []
    for c in book["cells"]:
        outs = []
        for o in c.get("outputs", []):
            h = "".join(o.get("data", {}).get("text/html", []))
            rows = tuple(attrs(t).get("data-query") for t in re.findall(r'<tr class="sde-result"[^>]*>', h))
            outs.append((o.get("output_type"), tuple(sorted(o.get("data", {}))), rows, h.count("<svg")))
        out.append((c["cell_type"], "".join(c.get("source", [])), tuple(outs)))
    return out


if len(sys.argv) > 3:
    committed = json.load(open(sys.argv[3], encoding="utf-8"))
    a, b = structure(committed), structure(nb)
    diff = [i for i in range(max(len(a), len(b))) if i >= len(a) or i >= len(b) or a[i] != b[i]]
    check(not diff, "the committed %s has this run's structure%s" % (sys.argv[3], "" if not diff else " (cells %s differ: run tests/notebooks/run.sh --update)" % diff))

print("notebook: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
