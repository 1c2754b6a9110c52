// Where a multilevel run's wall time goes, level by level (docs/mlmc.md, "Where the time goes"): the four
// relative_accuracy = 1e-3 runs of tests/perf/mlmc.fsx (GBM call payoff with dt0 = 1, Ring10 with dt0 = 0.25;
// euler_maruyama and milstein), each after a warm-up run at 1e-1 (a separate compile: the timed run still
// compiles its model's code), on all threads; per level the samples, the path-steps, the seconds and the
// nanoseconds per sample and per path-step.
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi tests/perf/mlmc_levels.fsx
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/OxyPlot.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"
open System
open Sde
open Sde.Lang
let gbm s = sprintf "model GBM {\n  param mu = 0.05\n  param sigma = 0.2\n  state S\n  brownian W\n  init S = 1\n  d S = mu * S dt + sigma * S dW\n}\nsimulate { %s }\nquery {\n  mean(max(S - 1, 0))\n}\n" s
let ring s = sprintf "model Ring10 {\n  const N = 10\n  param k = 1\n  param sigma = 0.5\n  state x[N] periodic\n  brownian W[N]\n  init x[i] = 0.5\n  d x[i] = (2 * x[i] * (1 - x[i]) + k * (x[i+1] + x[i-1] - 2 * x[i])) dt + sigma * x[i] dW[i]\n}\nsimulate { %s }\nquery {\n  mean(avg(i, x[i]^2))\n}\n" s
let run (text: string) =
    let p = match SdeCompiler.Compile(text, "b.sde") with Ok p -> p | Error ds -> failwithf "%A" ds
    let sw = Diagnostics.Stopwatch.StartNew()
    match Multilevel.run p.Program { Driver.defaultOptions with Threads = 0 } with
    | r, info, [] -> Option.get (List.head info.Sets).Result, sw.Elapsed.TotalSeconds
    | _, _, e :: _ -> raise e
for name, f, dt in [ "gbm", gbm, "dt = 1"; "ring", ring, "dt = 0.25" ] do
  for scheme in [ "euler_maruyama"; "milstein" ] do
    let s = sprintf "relative_accuracy = 1e-3; paths = 200; T = 1; seed = 1; scheme = %s; %s" scheme dt
    run (f (s.Replace("1e-3", "1e-1"))) |> ignore
    let r, secs = run (f s)
    printfn "%s %s: %.3f s, work %.4g, levels sum secs %.3f" name scheme secs r.Work (r.Levels |> Array.sumBy (fun l -> l.Seconds))
    for l in r.Levels do printfn "   %d paths %9d cost %6g  work %10.4g  secs %.3f  ns/sample %.0f ns/pathstep %.0f" l.Level l.Paths l.Cost (float l.Paths * l.Cost) l.Seconds (1e9 * l.Seconds / float l.Paths) (1e9 * l.Seconds / float l.Paths / l.Cost)
