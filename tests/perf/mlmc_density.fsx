// Densities under multilevel Monte Carlo (docs/mlmc.md, "Densities"): the work of a multilevel run of one
// density bin's probability P(a < S_T < b) against plain Euler at its optimal dt and paths for the same
// error, for the bin's indicator (not Lipschitz: the corrections' variance decays like dt^1/2, beta = 1/2)
// and for a smoothed bin, sigmoid((S - a)/h) - sigmoid((S - b)/h) with h a fraction of the bin width
// (Lipschitz: beta = 1 once sqrt(dt) is below h). GBM (S0 = 1, mu = 0.05, sigma = 0.2, T = 1), bin [1, 1.1].
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi tests/perf/mlmc_density.fsx [relative-accuracies, comma-separated] [threads] [scheme] [only]
//
// Work is counted in path-steps (fine plus coarse steps), not seconds: it does not depend on the load.
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/OxyPlot.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"

open System
open Sde
open Sde.Lang

let args = fsi.CommandLineArgs
let epss = if args.Length > 1 then args[1].Split(',') |> Array.map float else [| 1e-2; 3e-3 |]
let threads = if args.Length > 2 then int args[2] else 0
let scheme = if args.Length > 3 then args[3] else "euler_maruyama"
let only = if args.Length > 4 then args[4] else ""  // e.g. "smoothed": only the observables whose name starts so

let template = """model GBM {
  param mu = 0.05
  param sigma = 0.2
  state S
  brownian W
  init S = 1
  d S = mu * S dt + sigma * S dW
}
simulate { SIMULATE }
query {
  QUERY
}
"""
let text (simulate: string) (query: string) = template.Replace("SIMULATE", simulate).Replace("QUERY", query)

let compile (t: string) =
    match SdeCompiler.Compile(t, "density.sde") with
    | Ok p -> p
    | Error ds -> failwithf "%A" (ds |> List.map (fun d -> d.Rendered))

let multilevel (t: string) =
    let p = compile t
    let sw = Diagnostics.Stopwatch.StartNew()
    match Multilevel.run p.Program { Driver.defaultOptions with Threads = threads } with
    | _, info, [] -> Option.get (List.head info.Sets).Result, sw.Elapsed.TotalSeconds
    | _, _, e :: _ -> raise e

/// Plain Euler at its optimum for an RMS error ε, bias c·dt and variance V: bias² = ε²/3, N = V / (ε² − c²dt²).
let plainWork (c: float) (v: float) (eps: float) =
    let steps = max 1.0 (ceil (1.0 / (eps / (sqrt 3.0 * c))))
    let dt = 1.0 / steps
    let n = ceil (v / (eps * eps - c * c * dt * dt))
    steps, n * steps

/// The bias constant c (|E[P_l − P_l−1]| = c·dt_l: the median over levels ≥ 1) and V = var(P) on the finest level.
let biasAndVariance (res: Sde.Core.MlmcResult) =
    let cs = res.Levels |> Array.filter (fun l -> l.Level >= 1) |> Array.map (fun l -> abs l.Mean[0] / l.Dt) |> Array.sort
    cs[cs.Length / 2], res.Levels[res.Levels.Length - 1].VarianceFine[0]

let a, b = 1.0, 1.1
let queries =
    [ "indicator", sprintf "mean(if S > %g and S < %g then 1 else 0)" a b
      "smoothed h = w/4", sprintf "mean(sigmoid((S - %g) / %g) - sigmoid((S - %g) / %g))" a ((b - a) / 4.0) b ((b - a) / 4.0)
      "smoothed h = w/8", sprintf "mean(sigmoid((S - %g) / %g) - sigmoid((S - %g) / %g))" a ((b - a) / 8.0) b ((b - a) / 8.0) ]

printfn "bin [%g, %g] of GBM S_T; %s (plain Monte Carlo: the same scheme, its bias constant from the levels); dt0 = 0.25; pilot 400; seed 1" a b scheme
printfn "%-18s %8s %10s %7s %6s %12s %10s %8s %12s %8s" "observable" "rel eps" "value" "levels" "beta" "mlmc work" "plain dt" "" "plain work" "gain"
for eps in epss do
    for name, q in queries |> List.filter (fun (n, _) -> n.StartsWith only) do
        let res, secs = multilevel (text (sprintf "relative_accuracy = %g; dt = 0.25; paths = 400; T = 1; seed = 1; max_levels = 14; scheme = %s" eps scheme) q)
        let t = res.Targets[0]
        let c, v = biasAndVariance res
        let steps, w = plainWork c v t.Accuracy
        printfn "%-18s %8.0e %10.5g %7d %6.2f %12.4g %10s %8s %12.4g %8.2f" name eps t.Value res.Levels.Length t.Beta res.Work (sprintf "1/%g" steps) "" w (w / res.Work)
