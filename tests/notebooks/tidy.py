#!/usr/bin/env python3
"""Tidies a notebook executed by dotnet-repl in place: drops the cells' clock times
(dotnet_repl_cellExecution*Time) and keeps, of the package restore's progress messages
("Installing Packages..."), only the last ("Installed Packages"), so that a re-run on the same
results differs from the committed notebook only in the numbers and timings the results carry."""
import json
import sys
from datetime import datetime

path = sys.argv[1]
nb = json.load(open(path, encoding="utf-8"))
times = []
for cell in nb["cells"]:
    meta = cell.get("metadata", {})
    if "dotnet_repl_cellExecutionStartTime" in meta and "dotnet_repl_cellExecutionEndTime" in meta:
        # the clock times, to 7 decimals of a second: cut to microseconds for fromisoformat
        t = lambda k: datetime.fromisoformat(meta[k][:26] + meta[k][-6:])
        times.append((t("dotnet_repl_cellExecutionEndTime") - t("dotnet_repl_cellExecutionStartTime")).total_seconds())
    for k in [k for k in meta if k.startswith("dotnet_repl_cellExecution")]:
        del meta[k]
    outs = cell.get("outputs")
    if outs:
        restore = lambda o: "Installing Packages" in "".join(o.get("data", {}).get("text/html", []))
        cell["outputs"] = [o for o in outs if not restore(o)]
print("notebooks: the code cells took %s s" % ", ".join("%.1f" % x for x in times))
with open(path, "w", encoding="utf-8") as f:
    json.dump(nb, f, indent=1, ensure_ascii=False)
    f.write("\n")
