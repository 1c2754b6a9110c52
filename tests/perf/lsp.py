#!/usr/bin/env python3
"""Benchmark (issue 23): how long `dsl lsp` takes to publish diagnostics after a change to a
2,000-line model. Not a timed test: it prints the figures.

  python3 tests/perf/lsp.py [LINES] [CHANGES]      (defaults 2000 and 20; SDE_DSL_DLL: the dsl.dll)

The model: N/4 scalar states, each with a param, an init and an equation (4 lines each). Each change
replaces the whole text (the client's full sync) with one param's value edited, alternately
introducing and fixing a misspelt name, so every other change publishes an error and the others a
clean file. The time is from writing the didChange to reading its publishDiagnostics; the server's
CPU time over the same interval (from /proc, 10 ms ticks) is printed too, a figure that a busy
machine inflates less than the wall time.
"""
import json, os, statistics, subprocess, sys, time

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
dll = os.environ.get("SDE_DSL_DLL", os.path.join(root, "dsl/cli/bin/Release/net10.0/dsl.dll"))
lines = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
changes = int(sys.argv[2]) if len(sys.argv) > 2 else 20

def model(k, typo):
    n = (lines - 12) // 4
    out = ["model Big {", "  brownian W"]
    for i in range(n):
        out.append(f"  param a{i} = {1 + (i + k) % 7} in (0, inf)")
        out.append(f"  state x{i}")
        out.append(f"  init x{i} = 0.1")
        name = f"a{i}x" if typo and i == n // 2 else f"a{i}"
        out.append(f"  d x{i} = -{name} * x{i} dt + 0.1 dW")
    out += ["}", "", "simulate { paths = 10; dt = 0.01; T = 1 }", "", "query {", "  mean(x0)", "}"]
    return "\n".join(out) + "\n"

p = subprocess.Popen(["dotnet", dll, "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

def send(o):
    b = json.dumps(o).encode()
    p.stdin.write(b"Content-Length: %d\r\n\r\n" % len(b) + b)
    p.stdin.flush()

def recv():
    h = b""
    while not h.endswith(b"\r\n\r\n"):
        c = p.stdout.read(1)
        if not c:
            sys.exit("the server closed its output")
        h += c
    n = int([l for l in h.decode().split("\r\n") if l.lower().startswith("content-length")][0].split(":")[1])
    return json.loads(p.stdout.read(n))

def cpu_ms():
    try:
        f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")

def diagnostics():
    while True:
        m = recv()
        if m.get("method") == "textDocument/publishDiagnostics":
            return m["params"]["diagnostics"]

uri = "file:///bench/big.sde"
send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}})
recv()
text = model(0, False)
print(f"model: {text.count(chr(10))} lines, {len(text)} characters")
t = time.perf_counter()
send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": uri, "languageId": "sde", "version": 1, "text": text}}})
d = diagnostics()
print(f"didOpen (cold: JIT and first compile): {1000 * (time.perf_counter() - t):.0f} ms, {len(d)} diagnostics")

times = []
cpus = []
for k in range(1, changes + 1):
    typo = k % 2 == 1
    text = model(k, typo)
    c = cpu_ms()
    t = time.perf_counter()
    send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"textDocument": {"uri": uri, "version": k + 1}, "contentChanges": [{"text": text}]}})
    d = diagnostics()
    times.append(1000 * (time.perf_counter() - t))
    cpus.append(cpu_ms() - c)
    if typo != (len(d) == 1):
        sys.exit(f"change {k}: expected {'one error' if typo else 'no diagnostics'}, got {d}")

send({"jsonrpc": "2.0", "id": 2, "method": "shutdown"})
recv()
send({"jsonrpc": "2.0", "method": "exit"})
p.wait()
warm = times[2:] if len(times) > 4 else times
wcpu = cpus[2:] if len(cpus) > 4 else cpus
print(f"diagnostics after a change: median {statistics.median(warm):.0f} ms, max {max(warm):.0f} ms "
      f"(changes 3 to {changes}; all: {', '.join(f'{x:.0f}' for x in times)})")
print(f"server CPU time per change (from /proc; includes the parse for hover after publishing): median {statistics.median(wcpu):.0f} ms, max {max(wcpu):.0f} ms")
print(f"load average: {open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} cores")
