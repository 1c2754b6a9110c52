#!/usr/bin/env python3
"""Tidies a notebook executed by dotnet-repl in place: drops the cells' clock times
(dotnet_repl_cellExecution*Time) and keeps, of the package restore's progress messages
("Installing Packages..."), only the last ("Installed Packages"), so that a re-run on the same
results differs from the committed notebook only in the numbers and timings the results carry."""
import json
import re
import sys
from datetime import datetime


def clock(s):
    """An ISO time with any number of decimals of a second (.NET writes up to 7 and drops trailing
    zeros: '13:31:20.35293+00:00'), cut or padded to microseconds for fromisoformat."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)", s)
    if not m:
        return datetime.fromisoformat(s)
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    return datetime.fromisoformat("%s.%s%s" % (m.group(1), frac, m.group(3)))


path = sys.argv[1]
nb = json.load(open(path, encoding="utf-8"))
times = []
for cell in nb["cells"]:
    meta = cell.get("metadata", {})
    if "dotnet_repl_cellExecutionStartTime" in meta and "dotnet_repl_cellExecutionEndTime" in meta:
        t = lambda k: clock(meta[k])
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
