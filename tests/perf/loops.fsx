// Run throughput of the noisy Lorenz-96 ring and of a stochastic heat equation with loops (which
// `dsl run` uses for a file with only mean/density queries, from Loops.defaultMinLoopSize components
// on; here at every size) against the same program with every component unrolled, at sizes both
// handle; the two give the same bits (checked here too). Compile times are of the lowering and
// emission only (no parsing). One thread, so that the figures compare code, not scheduling.
//   dotnet build dsl/cli -c Release && dotnet fsi tests/perf/loops.fsx [N ...]     default: 1000 2000 10000 50000
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"

open System
open System.Diagnostics
open Sde.Lang

let sizes =
    match fsi.CommandLineArgs |> Array.tail |> Array.map int with
    | [||] -> [| 1000; 2000; 10000; 50000 |]
    | ns -> ns

let lorenz96 n =
    sprintf "  const N = %d\n  param F = 8\n  param sigma = 0.5\n  state x[N] periodic\n  brownian W[N]\n  init x[i] ~ normal(F, 1)\n  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]" n

let heat n =
    sprintf "  const N = %d\n  param k = 20\n  param s = 0.3\n  state u[N] periodic\n  brownian W[N]\n  init u[i] ~ uniform(-1, 1)\n  d u[i] = k * (u[i+1] - 2 * u[i] + u[i-1]) dt + s dW[i]" n

// about 2*10^7 component-steps per run whatever N
let file (body: string) (n: int) (query: string) =
    let steps = 20
    let paths = max 4 (20_000_000 / (n * steps))
    sprintf "model M {\n%s\n}\nsimulate { paths = %d; dt = 0.001; T = %g; seed = 1 }\nquery {\n  %s\n}\n" body paths (float steps * 0.001) query

let one (name: string) (src: string) =
    let cf = match Frontend.compileText "bench.sde" src with Ok cf -> cf | Error ds -> failwithf "%A" ds
    let p0 = match Driver.prepare src cf with Ok p -> p | Error ds -> failwithf "%A" ds
    // loops at any size (the default starts at Loops.defaultMinLoopSize), and every component unrolled
    let sw = Stopwatch.StartNew()
    let p = { p0 with Compiled = Compile.compileWith false (Loops.lowerModel 1 cf.Model) p0.Compiled.Observables [||] }
    let tLoops = sw.Elapsed.TotalSeconds
    sw.Restart()
    let unrolled = { p0 with Compiled = Compile.compileWith false (Lower.lowerModel cf.Model) p0.Compiled.Observables [||] }
    let tUnrolled = sw.Elapsed.TotalSeconds
    let opts = { Driver.defaultOptions with Threads = 1 }
    // the first run of each JIT-compiles its methods; time the second
    let run prog = Driver.run prog opts |> ignore; Driver.run prog opts
    let a, b = run p, run unrolled
    let same = a.Sets.Head.Results.Head.Value = b.Sets.Head.Results.Head.Value && a.Sets.Head.Results.Head.StdErr = b.Sets.Head.Results.Head.StdErr
    printfn "%-16s N = %-7d loops: %d  compile %.2f s vs unrolled %.2f s   run %.3g vs %.3g component-steps/s (x%.2f)  same bits: %b"
        name cf.Model.Dim p.Compiled.Ir.Loops.Length tLoops tUnrolled
        (a.PathStepsPerSecond * float cf.Model.Dim) (b.PathStepsPerSecond * float cf.Model.Dim)
        (a.PathStepsPerSecond / b.PathStepsPerSecond) same

for n in sizes do
    one "Lorenz-96" (file (lorenz96 n) n "mean(x[0])")
    one "stochastic heat" (file (heat n) n "mean(u[0])")
