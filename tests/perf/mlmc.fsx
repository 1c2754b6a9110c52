// The multilevel benchmark (docs/mlmc.md, issue 22). Prints
//   1. total work (path-steps) and wall time against the accuracy ε (1e-2 .. 1e-4) for the multilevel
//      run of a GBM call payoff, with the slope of log work against log ε, next to the work of plain
//      Euler Monte Carlo at its optimal dt and paths for the same ε (from the measured bias and variance);
//   2. at relative_accuracy = 1e-3: the multilevel wall time against plain Euler with the dt and paths
//      that reach the same error (chosen from the measured bias constant and variance), on GBM and on a
//      nonlinear 10-dimensional model with multiplicative noise. Plain Euler runs `fraction` of its paths
//      (its time is linear in the paths) and its time is scaled up: the line says so.
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi tests/perf/mlmc.fsx [smallest-eps] [threads] [fraction] [rounds]
//
// Work is counted in path-steps (fine plus coarse steps): unlike seconds, it does not depend on the machine's load.
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/OxyPlot.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"

open System
open Sde
open Sde.Lang

let args = fsi.CommandLineArgs
let smallest = if args.Length > 1 then float args[1] else 1e-4
let threads = if args.Length > 2 then int args[2] else 0
let fraction = if args.Length > 3 then float args[3] else 0.05
let rounds = if args.Length > 4 then int args[4] else 3

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

let ringText = """model Ring10 {
  const N = 10
  param k = 1
  param sigma = 0.5
  state x[N] periodic
  brownian W[N]
  init x[i] = 0.5
  d x[i] = (2 * x[i] * (1 - x[i]) + k * (x[i+1] + x[i-1] - 2 * x[i])) dt + sigma * x[i] dW[i]
}
simulate { SIMULATE }
query {
  mean(avg(i, x[i]^2))
}
"""
let ring (simulate: string) = ringText.Replace("SIMULATE", simulate)

let compile (text: string) =
    match SdeCompiler.Compile(text, "bench.sde") with
    | Ok p -> p
    | Error ds -> failwithf "%A" (ds |> List.map (fun d -> d.Rendered))

let multilevel (text: string) =
    let p = compile text
    let sw = Diagnostics.Stopwatch.StartNew()
    match Multilevel.run p.Program { Driver.defaultOptions with Threads = threads } with
    | r, info, [] -> r, Option.get (List.head info.Sets).Result, sw.Elapsed.TotalSeconds
    | _, _, e :: _ -> raise e

/// Plain Euler at its optimum for an RMS error ε with a weak-order-1 bias c·dt and variance V:
/// bias² = ε²/3 (the optimum of N·T/dt under V/N + c²dt² = ε²), N = 1.5 V / ε².
let plainPlan (c: float) (v: float) (eps: float) (t: float) =
    let steps = max 1.0 (ceil (t / (eps / (sqrt 3.0 * c))))
    let dt = t / steps
    let n = ceil (v / (eps * eps - c * c * dt * dt))
    steps, dt, n, n * steps

/// The bias constant c (|bias(dt)| ≈ c·dt for Euler) from the corrections: |E[P_l − P_l−1]| = c·dt_l; the
/// median over levels ≥ 1 of the run; and V = var(P_L) on the finest level.
let biasAndVariance (res: Sde.Core.MlmcResult) =
    let cs = res.Levels |> Array.filter (fun l -> l.Level >= 1) |> Array.map (fun l -> abs l.Mean[0] / l.Dt) |> Array.sort
    cs[cs.Length / 2], res.Levels[res.Levels.Length - 1].VarianceFine[0]

let slope (xs: float[]) (ys: float[]) =
    let lx = xs |> Array.map log
    let ly = ys |> Array.map log
    let mx, my = Array.average lx, Array.average ly
    Array.map2 (fun x y -> (x - mx) * (y - my)) lx ly |> Array.sum
    |> fun s -> s / (lx |> Array.sumBy (fun x -> (x - mx) ** 2.0))

// ---------------------------------------------------------------- 1. work against ε
printfn "1. GBM call payoff E[max(S_T - 1, 0)] (S0 = 1, mu = 0.05, sigma = 0.2, T = 1), Euler, dt0 = 1 (one step), pilot 200"
let epss = [| 1e-2; 5e-3; 2e-3; 1e-3; 5e-4; 2e-4; 1e-4 |] |> Array.filter (fun e -> e >= smallest * 0.999)
let rows =
    [| for eps in epss ->
           let _, res, secs = multilevel (gbm (sprintf "accuracy = %g; dt = 1; paths = 200; T = 1; seed = 1" eps))
           eps, res, secs |]
let _, finest, _ = rows[rows.Length - 1]
let c, v = biasAndVariance finest
printfn "   measured bias constant c = %.4g (|bias| = c dt), variance V = %.4g" c v
printfn "   %8s %7s %14s %9s %10s %16s %12s" "eps" "levels" "mlmc work" "seconds" "error" "plain work" "plain dt"
for eps, res, secs in rows do
    let steps, dt, n, w = plainPlan c v eps 1.0
    printfn "   %8.0e %7d %14.4g %9.3g %10.3g %16.4g %12.4g" eps res.Levels.Length res.Work secs res.Targets[0].Error w dt
let e = rows |> Array.map (fun (e, _, _) -> e)
let works = rows |> Array.map (fun (_, r, _) -> r.Work)
let plains = e |> Array.map (fun eps -> let _, _, _, w = plainPlan c v eps 1.0 in w)
printfn "   slope of log work against log eps: multilevel %.3g, plain Euler at its optimal dt %.3g (theory: -2 with a log^2 factor for Euler's beta = 1; -3)" (slope e works) (slope e plains)
printfn "   slope of log (work eps^2) against log eps (the log factor): %.3g" (slope e (Array.map2 (fun w eps -> w * eps * eps) works e))

// ---------------------------------------------------------------- 1b. the same with a Milstein step
// The engine couples levels for Euler–Maruyama only (the file's scheme); for the 1-D GBM a Milstein
// step is easy to write by hand as a model struct: y = x + mu x dt + sigma x dW + sigma^2 x (dW^2 - dt)/2,
// with dW = sqdt w. The engine's coarse step gets w_c = (w1 + w2)/sqrt 2, i.e. dW_c = dW1 + dW2: the
// Milstein coupling in one dimension. Weak order 1, but beta = 2: the fine levels are almost free.
[<Struct>]
type MilsteinGbm =
    val Mu: float
    val Sigma: float
    new(mu, sigma) = { Mu = mu; Sigma = sigma }
    interface Sde.Core.ISdeModel with
        member _.Dim = 1
        member _.NoiseDim = 1
        member _.ObservableCount = 1
        member _.Init<'TV when 'TV: struct and 'TV: (new: unit -> 'TV) and 'TV :> ValueType and 'TV :> Sde.Core.IVec>(x: 'TV, _zn: 'TV, _zu: 'TV) = let mutable x = x in x[0] <- 1.0
        member m.Step<'TV when 'TV: struct and 'TV: (new: unit -> 'TV) and 'TV :> ValueType and 'TV :> Sde.Core.IVec>(x: 'TV, y: 'TV, w: 'TV, _t: float, dt: float, sqdt: float) =
            let mutable y = y
            let s = x[0]
            let dw = sqdt * w[0]
            y[0] <- s + m.Mu * s * dt + m.Sigma * s * dw + 0.5 * m.Sigma * m.Sigma * s * (dw * dw - dt)
        member m.Drift<'TV when 'TV: struct and 'TV: (new: unit -> 'TV) and 'TV :> ValueType and 'TV :> Sde.Core.IVec>(x: 'TV, _t: float, f: 'TV) = let mutable f = f in f[0] <- m.Mu * x[0]
        member m.Diffuse<'TV when 'TV: struct and 'TV: (new: unit -> 'TV) and 'TV :> ValueType and 'TV :> Sde.Core.IVec>(x: 'TV, _t: float, w: 'TV, gw: 'TV) = let mutable gw = gw in gw[0] <- m.Sigma * x[0] * w[0]
        member _.Observe<'TV when 'TV: struct and 'TV: (new: unit -> 'TV) and 'TV :> ValueType and 'TV :> Sde.Core.IVec>(x: 'TV, _t: float, obs: 'TV) = let mutable obs = obs in obs[0] <- max (x[0] - 1.0) 0.0

printfn "1b. the same payoff with a hand-written Milstein step (the engine's level coupling, weak order 1)"
let milstein =
    [| for eps in epss ->
           let m = MilsteinGbm(0.05, 0.2)
           let plans = [| Sde.Core.QueryPlan(Kind = Sde.Core.EstimateKind.Mean, Observable = 0) |]
           let targets = [| Sde.Core.MlmcTarget(Kind = Sde.Core.MlmcTargetKind.Mean, Samples = [| 0 |]) |]
           let sw = Diagnostics.Stopwatch.StartNew()
           let r = Sde.Core.Mlmc.Run(&m, Sde.Core.RunSettings(Dt = 1.0, T = 1.0, Seed = 1UL, Threads = threads), plans, targets,
                                     Sde.Core.MlmcOptions(Accuracy = eps, Pilot = 200L, MaxLevel = 10))
           eps, r, sw.Elapsed.TotalSeconds |]
printfn "   %8s %7s %14s %9s %10s %8s" "eps" "levels" "mlmc work" "seconds" "error" "beta"
for eps, r, secs in milstein do
    printfn "   %8.0e %7d %14.4g %9.3g %10.3g %8.3g" eps r.Levels.Length r.Work secs r.Targets[0].Error r.Targets[0].Beta
printfn "   slope of log work against log eps: Milstein multilevel %.3g (theory -2)" (slope e (milstein |> Array.map (fun (_, r, _) -> r.Work)))

// ---------------------------------------------------------------- 2. relative 1e-3 against plain Euler
let compare (name: string) (text: string -> string) (coarse: string) (t: float) =
    // the Euler multilevel run measures plain Euler's bias constant and variance (and is a candidate itself);
    // the Milstein one (scheme = milstein: the emitted step, beta about 2) is the other candidate
    // Each candidate is compiled once and run once untimed (the model's code is compiled then, as for plain Euler
    // below); then `rounds` rounds time the three in turn (multilevel Euler, multilevel Milstein, plain Euler), and
    // each figure is the median of its rounds: on a loaded machine the load drifts, and interleaving shares it out.
    let multilevelRun (scheme: string) =
        let s = sprintf "relative_accuracy = 1e-3; paths = 200; T = 1; seed = 1; scheme = %s; %s" scheme coarse
        let p = compile (text s)
        fun () ->
            let sw = Diagnostics.Stopwatch.StartNew()
            match Multilevel.run p.Program { Driver.defaultOptions with Threads = threads } with
            | _, info, [] -> Option.get (List.head info.Sets).Result, sw.Elapsed.TotalSeconds
            | _, _, e :: _ -> raise e
    let eulerRun, milsteinRun = multilevelRun "euler_maruyama", multilevelRun "milstein"
    let res, _ = eulerRun ()
    let resM, _ = milsteinRun ()
    let value = res.Targets[0].Value
    let eps = 1e-3 * abs value
    let c, v = biasAndVariance res
    let steps, dt, n, w = plainPlan c v eps t
    // plain Euler: `fraction` of its paths, timed, scaled to all
    let np = max 1000.0 (ceil (n * fraction))
    let p = compile (text (sprintf "dt = %.17g; paths = %d; T = 1; seed = 2" dt (int64 np)))
    p.Run(threads = threads, backend = "cpu") |> ignore // JIT warm-up and a first pass
    let plainRun () =
        let sw = Diagnostics.Stopwatch.StartNew()
        p.Run(threads = threads, backend = "cpu") |> ignore
        sw.Elapsed.TotalSeconds
    let times = [| for _ in 1..rounds -> snd (eulerRun ()), snd (milsteinRun ()), plainRun () |]
    let median (xs: float[]) = let s = Array.sort xs in s[s.Length / 2]
    let secs = times |> Array.map (fun (a, _, _) -> a) |> median
    let secsM = times |> Array.map (fun (_, b, _) -> b) |> median
    let plainSecs = times |> Array.map (fun (_, _, c) -> c) |> median
    let psecs = plainSecs * n / np
    printfn "2. %s, relative_accuracy = 1e-3 (eps = %.3g): value %.6g, error estimate %.3g (euler), %.3g (milstein); wall times: medians of %d interleaved rounds" name eps value res.Targets[0].Error resM.Targets[0].Error rounds
    printfn "   multilevel euler:    %d levels, %.4g path-steps, %.3g s (%.3g ns per path-step)" res.Levels.Length res.Work secs (1e9 * secs / res.Work)
    printfn "   multilevel milstein: %d levels, %.4g path-steps, %.3g s (%.3g ns per path-step), beta %.3g" resM.Levels.Length resM.Work secsM (1e9 * secsM / resM.Work) resM.Targets[0].Beta
    printfn "   plain Euler at the same error: c = %.3g, V = %.3g -> dt = %.4g (%g steps), %g paths = %.4g path-steps, %.3g s (%.3g ns per path-step; scaled from %g paths: %.3g s)"
        c v dt steps n w psecs (1e9 * psecs / w) np plainSecs
    printfn "   speed-up over plain Euler: euler multilevel %.3gx in work, %.3gx in wall time; milstein multilevel %.3gx in work, %.3gx in wall time"
        (w / res.Work) (psecs / secs) (w / resM.Work) (psecs / secsM)

compare "GBM call payoff (dt0 = 1)" gbm "dt = 1" 1.0
compare "Ring10 (10-D, logistic drift, multiplicative noise) mean(avg(i, x[i]^2)), dt0 = 0.25" ring "dt = 0.25" 1.0
