// Where a multilevel run's time goes (docs/mlmc.md, "Measured cost"): the cost per sample of each level of the
// GBM call payoff (dt0 = 1, so level l has 2^l fine and 2^(l-1) coarse steps), Euler and Milstein, on one
// thread, against plain Euler's cost per path-step at 30 steps (the engine's 4-path lanes above 10^6
// path-steps). A fit of seconds per sample = a + b * (path-steps per sample) separates the fixed cost of a
// sample (its init draws, observables, sums) from the cost of a step.
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi tests/perf/mlmc_profile.fsx [samples] [rounds]
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/OxyPlot.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"

open System
open Sde
open Sde.Lang
open Sde.Lang.Multilevel

let args = fsi.CommandLineArgs
let samples = if args.Length > 1 then int64 args[1] else 200000L

let text (simulate: string) =
    sprintf "model GBM {\n  param mu = 0.05\n  param sigma = 0.2\n  state S\n  brownian W\n  init S = 1\n  d S = mu * S dt + sigma * S dW\n}\nsimulate { %s }\nquery {\n  mean(max(S - 1, 0))\n}\n" simulate

let compile (t: string) =
    match SdeCompiler.Compile(t, "profile.sde") with
    | Ok p -> p
    | Error ds -> failwithf "%A" (ds |> List.map (fun d -> d.Rendered))

/// Seconds per sample of level l on one thread, with a fixed plan of `samples` samples on that level only
/// (the others 2, the least a plan has), by the plan runner: the multilevel engine's own path.
let perSample (scheme: string) (l: int) =
    let p = compile (text (sprintf "accuracy = 0.01; dt = 1; paths = 200; T = 1; seed = 1; scheme = %s" scheme))
    let levels = [ for k in 0 .. l -> ({ Level = k; Dt = 1.0 / float (1 <<< k); Steps = 1L <<< k; Paths = (if k = l then samples else 2L) } : LevelPlan) ]
    let pf : PlanFile =
        { Fingerprint = ""; Model = "GBM"; Accuracy = 0.01; Relative = false; PilotFactor = 4.0; PilotWork = 0.0
          Sets = [ { Set = "default"; Levels = levels; Note = "" } ] }
    let opts = { Driver.defaultOptions with Threads = 1 }
    Multilevel.runPlan p.Program { pf with Sets = [ { (List.head pf.Sets) with Levels = levels |> List.map (fun x -> { x with Paths = 2L }) } ] } opts None |> ignore // JIT
    let sw = Diagnostics.Stopwatch.StartNew()
    Multilevel.runPlan p.Program pf opts None |> ignore
    sw.Elapsed.TotalSeconds / float samples

let plainPerStep () =
    let p = compile (text "dt = 0.03333333333333333; paths = 200000; T = 1; seed = 2")
    p.Run(threads = 1, backend = "cpu") |> ignore
    let sw = Diagnostics.Stopwatch.StartNew()
    p.Run(threads = 1, backend = "cpu") |> ignore
    sw.Elapsed.TotalSeconds / (200000.0 * 30.0)

// `rounds` rounds, each timing every level of both schemes and plain Euler in turn; each figure is the median
// of its rounds (on a loaded machine one timing can be off by 2x; interleaving shares the load out)
let rounds = if args.Length > 2 then int args[2] else 3
let median (xs: float list) = let s = List.sort xs in s[s.Length / 2]
let timings =
    [ for _ in 1 .. rounds ->
          [ for scheme in [ "euler_maruyama"; "milstein" ] -> [ for l in 0 .. 5 -> perSample scheme l ] ], plainPerStep () ]

for si, scheme in List.indexed [ "euler_maruyama"; "milstein" ] do
    let rows = [ for l in 0 .. 5 -> l, (if l = 0 then 1.0 else 1.5 * float (1 <<< l)), median [ for ts, _ in timings -> ts[si][l] ] ]
    // least squares of seconds per sample against path-steps per sample
    let xs = rows |> List.map (fun (_, c, _) -> c)
    let ys = rows |> List.map (fun (_, _, s) -> s)
    let mx, my = List.average xs, List.average ys
    let b = List.sum (List.map2 (fun x y -> (x - mx) * (y - my)) xs ys) / List.sumBy (fun x -> (x - mx) ** 2.0) xs
    let a = my - b * mx
    printfn "%s (one thread): level, path-steps per sample, ns per sample, ns per path-step" scheme
    for l, c, s in rows do printfn "  %d %6g %10.1f %10.1f" l c (1e9 * s) (1e9 * s / c)
    printfn "  fit: %.1f ns per sample + %.1f ns per path-step" (1e9 * a) (1e9 * b)
printfn "plain Euler (one thread, 30 steps, 200000 paths: lanes): %.1f ns per path-step" (1e9 * median [ for _, p in timings -> p ])
printfn "(medians of %d interleaved rounds)" rounds
