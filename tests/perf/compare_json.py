"""Worst relative difference between two `dsl run --json` results (same file, two backends)."""
import json, math, sys

def values(doc):
    out = []
    for s in doc["sets"]:
        for r in s["results"]:
            for key in ("value", "stderr"):
                if key in r and r[key] is not None:
                    out.append((r["query"], key, r[key]))
            for key in ("values", "stderrs"):
                for i, v in enumerate(r.get(key) or []):
                    if v is not None:
                        out.append((r["query"], f"{key}[{i}]", v))
    return out

a, b = (json.load(open(p)) for p in sys.argv[1:3])
worst, where = 0.0, ""
for (q, k, x), (_, _, y) in zip(values(a), values(b)):
    if x == y:
        continue
    d = abs(x - y) / max(abs(x), abs(y), 1e-300)
    if d > worst:
        worst, where = d, f"{q} {k}: {x!r} vs {y!r}"
print(f"{worst:.3g}  {where}")
