// Regenerates docs/img/mlmc_levels.svg (the level corrections of a multilevel run: log2 of their
// variance and |mean| against the level, the figure multilevel users read) and docs/img/mlmc_work.svg
// (total work against the accuracy, multilevel and plain Euler at its optimal dt), for the GBM call
// payoff of docs/mlmc.md.
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi docs/scripts/mlmc_figures.fsx [smallest-eps]
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/OxyPlot.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"

open System
open System.IO
open Sde
open Sde.Lang

let smallest = match fsi.CommandLineArgs with [| _; e |] -> float e | _ -> 1e-4
let gbmText = """model GBM {
  param mu = 0.05
  param sigma = 0.2
  state S
  brownian W
  init S = 1
  d S = mu * S dt + sigma * S dW
}
simulate { SIMULATE }
query {
  mean(max(S - 1, 0))
}
"""
let gbm (simulate: string) = gbmText.Replace("SIMULATE", simulate)

let run (eps: float) =
    match SdeCompiler.Compile(gbm (sprintf "accuracy = %g; dt = 1; paths = 200; T = 1; seed = 1" eps), "gbm.sde") with
    | Ok p ->
        match Multilevel.run p.Program Driver.defaultOptions with
        | _, info, [] -> Option.get (List.head info.Sets).Result
        | _, _, e :: _ -> raise e
    | Error ds -> failwithf "%A" ds

let epss = [| 1e-2; 5e-3; 2e-3; 1e-3; 5e-4; 2e-4; 1e-4 |] |> Array.filter (fun e -> e >= smallest * 0.999)
let results = epss |> Array.map run
let finest = results[results.Length - 1]
let img = Path.Combine(__SOURCE_DIRECTORY__, "..", "img")
let ls = finest.Levels
let xs = ls |> Array.map (fun l -> float l.Level)
let log2 (v: float) = if v > 0.0 then Math.Log2 v else nan
let none = xs |> Array.map (fun _ -> nan)
Plot.writeSeriesWith (Path.Combine(img, "mlmc_levels.svg")) "GBM call payoff: the levels of a multilevel run"
    (sprintf "accuracy = %g, Euler, dt0 = 1: alpha = %.2f, beta = %.2f, gamma = %.2f" smallest finest.Targets[0].Alpha finest.Targets[0].Beta finest.Targets[0].Gamma) true "level l" "log2"
    [ "log2 var(P_l - P_l-1)", xs, ls |> Array.map (fun l -> log2 l.Variance[0]), none
      "log2 |mean(P_l - P_l-1)|", xs, ls |> Array.map (fun l -> log2 (abs l.Mean[0])), none
      "log2 var(P_l)", xs, ls |> Array.map (fun l -> log2 l.VarianceFine[0]), none
      "log2 |mean(P_l)|", xs, ls |> Array.map (fun l -> log2 (abs l.MeanFine[0])), none ]

// plain Euler at its optimal dt: bias c dt with c from the corrections, variance V of the finest level
let cs = ls |> Array.filter (fun l -> l.Level >= 1) |> Array.map (fun l -> abs l.Mean[0] / l.Dt) |> Array.sort
let c, v = cs[cs.Length / 2], ls[ls.Length - 1].VarianceFine[0]
let plain (eps: float) =
    let steps = max 1.0 (ceil (1.0 / (eps / (sqrt 3.0 * c))))
    let dt = 1.0 / steps
    ceil (v / (eps * eps - c * c * dt * dt)) * steps
let lx = epss |> Array.map log10
Plot.writeSeriesWith (Path.Combine(img, "mlmc_work.svg")) "GBM call payoff: work against the accuracy"
    "path-steps for a root-mean-square error eps; multilevel measured, plain Euler at its optimal dt from the measured bias and variance" false "log10 eps" "log10 path-steps"
    [ "multilevel (Euler)", lx, results |> Array.map (fun r -> log10 r.Work), Array.map (fun _ -> nan) lx
      "plain Euler, optimal dt", lx, epss |> Array.map (plain >> log10), Array.map (fun _ -> nan) lx
      "slope -2", lx, lx |> Array.map (fun x -> log10 results[0].Work - 2.0 * (x - lx[0])), Array.map (fun _ -> nan) lx ]
for e, r in Array.zip epss results do printfn "eps %g: %d levels, work %.4g, error %.3g" e r.Levels.Length r.Work r.Targets[0].Error
