/// Multilevel Monte Carlo (`simulate { accuracy = ... }`, docs/mlmc.md): the settings and their located
/// errors, a run against closed forms, thread-count independence; the slow tier repeats runs over 40
/// seeds and checks the achieved root-mean-square error against the target and the reported error.
module Sde.Tests.MultilevelTests

open System
open System.Text.Json.Nodes
open Expecto
open Sde
open Sde.Lang

let private compile (text: string) =
    match SdeCompiler.Compile(text, "m.sde") with
    | Ok p -> p
    | Error ds -> failtestf "unexpected diagnostics: %A" (ds |> List.map (fun d -> d.Rendered))

let private errors (text: string) =
    match SdeCompiler.Compile(text, "m.sde") with
    | Ok _ -> failtest "expected a located error"
    | Error ds -> ds |> List.filter (fun d -> d.Severity = "error")

/// GBM from S0 = 1: E[S_T] = e^(mu T), E[S_T^2] = e^((2 mu + sigma^2) T); `simulate` and queries filled in.
let private gbm (simulate: string) (queries: string) =
    sprintf
        """model G {
  param mu = 0.05
  param sigma = 0.2
  state S
  brownian W
  init S = 1
  d S = mu * S dt + sigma * S dW
}
simulate { %s }
query {
%s
}
"""
        simulate queries

/// OU from x0 = 1: E[x_T] = e^(-T), Var x_T = sigma^2 (1 - e^(-2T)) / 2.
let private ou (simulate: string) (queries: string) =
    sprintf
        """model O {
  param sigma = 0.5
  state x
  brownian W
  init x = 1
  d x = -x dt + sigma dW
}
simulate { %s }
query {
%s
}
"""
        simulate queries

/// The Black–Scholes price without discounting: E[max(S_T − K, 0)] for GBM from S0.
let private call (s0: float) (k: float) (mu: float) (sigma: float) (t: float) =
    let phi (x: float) = 0.5 * (1.0 + MathNet.Numerics.SpecialFunctions.Erf(x / sqrt 2.0))
    let d1 = (log (s0 / k) + (mu + 0.5 * sigma * sigma) * t) / (sigma * sqrt t)
    let d2 = d1 - sigma * sqrt t
    s0 * exp (mu * t) * phi d1 - k * phi d2

let private runMl (p: CompiledProgram) (threads: int) =
    let opts = { Driver.defaultOptions with Threads = threads }
    match Multilevel.run p.Program opts with
    | r, info, [] -> r, info
    | _, _, e :: _ -> raise e

/// (value, reported error) of each query of the first set.
let private valuesAndErrors (r: Report.RunReport) (info: Multilevel.Info) =
    let set = List.head info.Sets
    let res = Option.get set.Result
    List.map2 (fun (q: Report.QueryOutcome) (qt: Multilevel.QueryTargets) -> q.Value, res.Targets[List.last qt.Targets].Error) (List.head r.Sets).Results set.Queries

[<Tests>]
let tests =
    testList
        "Multilevel"
        [ test "Multilevel settings: accuracy errors are located" {
              let at (ds: SourceDiagnostic list) (line: int) (text: string) =
                  Expect.isTrue (ds |> List.exists (fun d -> d.Line = line && d.Message.Contains text)) (sprintf "line %d says '%s': %A" line text (ds |> List.map (fun d -> d.Rendered)))
              at (errors (gbm "accuracy = -1; T = 1" "  mean(S)")) 9 "accuracy must be > 0"
              at (errors (gbm "accuracy = 0.1; relative_accuracy = 0.01; T = 1" "  mean(S)")) 9 "either accuracy or relative_accuracy"
              at (errors (gbm "relative_accuracy = 2; T = 1" "  mean(S)")) 9 "relative_accuracy must be < 1"
              at (errors (gbm "max_levels = 4; T = 1" "  mean(S)")) 9 "needs accuracy"
              at (errors (gbm "accuracy = 0.1; max_levels = 40" "  mean(S)")) 9 "max_levels must be an integer in 1..20"
              at (errors (gbm "accuracy = 0.1" "  mean(S)\n  density(S) on [0, 3] bins 10")) 12 "not Lipschitz"
              at (errors (gbm "accuracy = 0.1" "  d mean(S) / d mu")) 11 "finite_difference(h = ...) of a mean only"
              at (errors (gbm "accuracy = 0.1" "  lyapunov(1)")) 11 "Lyapunov"
          }

          test "Multilevel shards and the GPU backends: located refusals at the accuracy setting" {
              let p = compile (gbm "accuracy = 0.1" "  mean(S)")
              let refused (f: unit -> unit) =
                  try
                      f ()
                      failtest "expected a refusal"
                  with :? NotSupportedException as e -> e.Message
              for m in [ refused (fun () -> Driver.runShard p.Program Driver.defaultOptions { First = 0L; Count = 10L } |> ignore)
                         refused (fun () -> Multilevel.run p.Program { Driver.defaultOptions with Backend = "cuda" } |> ignore)
                         refused (fun () -> Driver.runKeeping p.Program Driver.defaultOptions |> ignore) ] do
                  Expect.isMatch m @"^9:12: 'accuracy' " "located at the accuracy setting"
          }

          test "Multilevel defaults: dt = T/8, paths = 1000 pilot samples, max_levels 10" {
              let p = compile (gbm "accuracy = 0.1; T = 2" "  mean(S)")
              Expect.equal p.Settings.Dt 0.25 "coarsest step T/8"
              Expect.equal p.Settings.Paths 1000L "pilot"
              Expect.equal (Option.get p.Settings.Multilevel).MaxLevels 10 "max_levels"
          }

          test "Multilevel GBM: E[S_T], E[S_T^2] and the call within 4.5 reported errors of the closed forms" {
              let p = compile (gbm "accuracy = 0.01; dt = 0.25; paths = 200; T = 1; seed = 5" "  mean(S)\n  mean(S^2)\n  mean(max(S - 1, 0))\n  variance(S)")
              let r, info = runMl p 0
              let exact = [ exp 0.05; exp 0.14; call 1.0 1.0 0.05 0.2 1.0; exp 0.14 - exp 0.1 ]
              for (v, e), x in List.zip (valuesAndErrors r info) exact do
                  Expect.isLessThanOrEqual e 0.0101 "the reported error is within the target"
                  Expect.isLessThan (abs (v - x)) (4.5 * e) (sprintf "%g against %g (error %g)" v x e)
              let res = Option.get (List.head info.Sets).Result
              Expect.isTrue res.Converged "converged"
              Expect.isGreaterThanOrEqual res.Levels.Length 3 "at least levels 0..2"
              // the samples fall with the level: the corrections' variance decays (beta about 1 for Euler)
              Expect.isGreaterThan res.Levels[0].Paths res.Levels[res.Levels.Length - 1].Paths "fewer samples on finer levels"
          }

          test "Multilevel: paths that blow up fail the run (on every thread count, with and without lanes), never a number" {
              // x' = x² from 1 blows up at t = 1: Euler with dt 0.25 overflows within 20 steps
              let text = "model B {\n  state x\n  brownian W\n  init x = 1\n  d x = x * x dt + 0.1 dW\n}\nsimulate { accuracy = 0.01; dt = 0.25; paths = 64; T = 5; seed = 1 }\nquery {\n  mean(x)\n}\n"
              let p = compile text
              for threads, lanes in [ 1, 0; 2, 0; 1, 1 ] do
                  let fails =
                      Sde.Core.Engine.LanesOnThisThread <- lanes
                      try
                          match Multilevel.run p.Program { Driver.defaultOptions with Threads = threads } with
                          | _, _, [] -> false
                          | _, _, e :: _ -> e :? Sde.Core.SimulationFailedException
                      finally
                          Sde.Core.Engine.LanesOnThisThread <- 0
                  Expect.isTrue fails (sprintf "%d threads, lanes %d: the run fails" threads lanes)
          }

          test "Multilevel: the variance gets what the bias leaves of accuracy^2 (within [0.5, 0.85])" {
              // one target: its samples are the optimum for the share s = 1 − bias²/ε² of the final estimates, so
              // stderr² ≤ s ε² (the run stops when no level needs more) and, unless a level was over-allocated from
              // earlier estimates, close to it; a fixed half (Giles' split) would leave stderr² ≤ ε²/2
              // ε small enough that level 0 needs far more than the pilot's samples (Var S_T ≈ 0.045)
              let eps = 0.005
              let p = compile (gbm (sprintf "accuracy = %g; dt = 0.25; paths = 200; T = 1; seed = 11" eps) "  mean(S)")
              let _, info = runMl p 0
              let res = Option.get (List.head info.Sets).Result
              let t = res.Targets[0]
              let share = min 0.85 (max 0.5 (1.0 - (t.Bias / eps) ** 2.0))
              Expect.isTrue res.Converged "converged"
              Expect.isLessThanOrEqual (t.StdErr * t.StdErr) (share * eps * eps * (1.0 + 1e-9)) (sprintf "stderr² %g, share %g of ε²" (t.StdErr * t.StdErr) share)
              Expect.isGreaterThan (t.StdErr * t.StdErr) (0.8 * share * eps * eps) (sprintf "stderr² %g: most of the share %g of ε² used" (t.StdErr * t.StdErr) share)
              Expect.isGreaterThan share 0.55 "the bias leaves the variance more than half of ε² here"
              Expect.isLessThanOrEqual t.Error eps "the error estimate within the target"
              let l0 = res.Levels[0]
              Expect.isGreaterThan l0.Paths (10L * res.Levels[res.Levels.Length - 1].Paths) "level 0 holds most samples"
          }

          test "Multilevel with scheme = milstein: closed forms within 4.5 reported errors, the corrections' variance decaying faster than Euler's" {
              let run scheme =
                  let p = compile (gbm (sprintf "accuracy = 0.003; dt = 0.25; paths = 400; T = 1; seed = 8; scheme = %s" scheme) "  mean(S^2)")
                  let r, info = runMl p 0
                  let set = List.head info.Sets
                  let res = Option.get set.Result
                  let t = res.Targets[List.last (List.head set.Queries).Targets]
                  List.head (valuesAndErrors r info), t.Beta

              let (v, e), betaMilstein = run "milstein"
              Expect.isLessThan (abs (v - exp 0.14)) (4.5 * e) (sprintf "milstein: %g against %g (error %g)" v (exp 0.14) e)
              let _, betaEuler = run "euler_maruyama"
              // strong order 1 against 1/2: beta about 2 against about 1
              Expect.isGreaterThan betaMilstein (betaEuler + 0.5) (sprintf "beta: milstein %g, euler %g" betaMilstein betaEuler)
          }

          test "Multilevel finite-difference responses, twins coupled across parameter and level: closed forms within 4.5 reported errors" {
              let p = compile (gbm "accuracy = 0.03; dt = 0.25; paths = 200; T = 1; seed = 6" "  d mean(S) / d mu with finite_difference(h = 0.01)\n  d mean(S^2) / d sigma with finite_difference(h = 0.01)")
              let r, info = runMl p 0
              // d/dmu e^(mu T) = T e^(mu T); d/dsigma e^((2 mu + sigma^2) T) = 2 sigma T e^((2 mu + sigma^2) T)
              // (the central difference's own error, h^2 times the third derivative, is below 1e-4 here)
              let exact = [ exp 0.05; 0.4 * exp 0.14 ]
              for (v, e), x in List.zip (valuesAndErrors r info) exact do
                  Expect.isLessThan (abs (v - x)) (4.5 * e) (sprintf "%g against %g (error %g)" v x e)
              let q = (List.head r.Sets).Results |> List.head
              Expect.equal q.Kind "response" "kind"
              Expect.equal q.Wrt (Some "mu") "wrt"
          }

          test "Multilevel density with scheme = milstein: each smoothed bin within 4.5 reported errors of the Gaussian quadrature; refused with euler_maruyama" {
              let p = compile (ou "relative_accuracy = 0.02; dt = 0.25; paths = 200; T = 1; seed = 4; scheme = milstein" "  density(x) on [-0.5, 1.5] bins 5")
              let r, info = runMl p 0
              // x_T ~ N(e^-1, sigma^2 (1 - e^-2) / 2): the bin [a, b] smoothed by a logistic of scale h = w/8, per unit width
              let m, sd = exp -1.0, sqrt (0.25 * (1.0 - exp -2.0) / 2.0)
              let smoothed (a: float) (b: float) =
                  let w = b - a
                  let h = w / Sde.Core.LevelPair.SmoothingPerWidth
                  let sg (z: float) = 1.0 / (1.0 + exp -z)
                  let n = 4000
                  let lo, hi = m - 10.0 * sd, m + 10.0 * sd
                  let dx = (hi - lo) / float n
                  let f (x: float) = exp (-0.5 * ((x - m) / sd) ** 2.0) / (sd * sqrt (2.0 * Math.PI)) * (sg ((x - a) / h) - sg ((x - b) / h)) / w
                  // Simpson's rule
                  dx / 3.0 * (f lo + f hi + ([ 1 .. n - 1 ] |> List.sumBy (fun i -> (if i % 2 = 1 then 4.0 else 2.0) * f (lo + float i * dx))))
              let q = (List.head r.Sets).Results |> List.head
              Expect.equal q.Kind "density" "kind"
              Expect.equal q.Values.Length 5 "bins"
              let res = Option.get (List.head info.Sets).Result
              let ts = (List.head (List.head info.Sets).Queries).Targets
              for b in 0..4 do
                  let a = -0.5 + 0.4 * float b
                  let x = smoothed a (a + 0.4)
                  let e = res.Targets[ts[b]].Error
                  Expect.isLessThan (abs (q.Values[b] - x)) (4.5 * e) (sprintf "bin %d: %g against %g (error %g)" b q.Values[b] x e)
              Expect.isTrue res.Converged "converged"
              // no sample count outside the range (the bins are level corrections): null, not 0
              let j = JsonNode.Parse(Multilevel.toJson r info)
              let jd = j.["sets"].[0].["results"].[0]
              Expect.isNull jd.["below"] "below: null"
              Expect.isNull jd.["above"] "above: null"
              Expect.stringContains (Output.table r) "outside: not counted" "the table"
              let es = errors (ou "relative_accuracy = 0.02" "  density(x) on [-0.5, 1.5] bins 5")
              Expect.isTrue (es |> List.exists (fun d -> d.Message.Contains "add scheme = milstein")) "euler_maruyama refused, naming milstein"
          }

          test "Multilevel the same numbers on 1, 2 and 3 threads and without lanes, levels in the JSON" {
              let p = compile (ou "accuracy = 0.02; dt = 0.25; paths = 200; T = 1; seed = 2" "  mean(x)\n  variance(x)")
              let r1, i1 = runMl p 1
              let r2, i2 = runMl p 2
              let r3, i3 = runMl p 3
              let strip (r: Report.RunReport) (i: Multilevel.Info) =
                  let j = JsonNode.Parse(Multilevel.toJson { r with Seconds = 0.0; PathStepsPerSecond = 0.0 } i)
                  for l in j.["sets"].[0].["levels"].AsArray() do l.AsObject().Remove "seconds" |> ignore
                  j.ToJsonString()
              Expect.equal (strip r1 i1) (strip r2 i2) "JSON without timings"
              Expect.equal (strip r1 i1) (strip r3 i3) "JSON without timings, 3 threads"
              // one sample at a time instead of four in the vector lanes: the same bits
              let rOne, iOne =
                  Sde.Core.Engine.LanesOnThisThread <- 1
                  try runMl p 2 finally Sde.Core.Engine.LanesOnThisThread <- 0
              Expect.equal (strip rOne iOne) (strip r1 i1) "JSON without timings, without lanes"
              let j = JsonNode.Parse(Multilevel.toJson r1 i1)
              let levels = j.["sets"].[0].["levels"].AsArray()
              Expect.isGreaterThanOrEqual levels.Count 3 "levels"
              Expect.equal (levels.[1].["dt"].GetValue<float>()) 0.125 "level 1 step"
              Expect.isTrue (j.["sets"].[0].["results"].[0].["error_estimate"].GetValue<float>() <= 0.02) "error field"
              Expect.equal (j.["multilevel"].["accuracy"].GetValue<float>()) 0.02 "settings"
              let ml = j.["sets"].[0].["results"].[1].["multilevel"]
              Expect.equal (ml.["levels"].AsArray().Count) levels.Count "per-query level table"
          } ]

/// The achieved root-mean-square error over `seeds` runs and the RMS of (estimate − exact)/reported error.
let private repeat (text: int -> string) (exact: float list) (seeds: int) =
    let runs =
        [ for seed in 1..seeds ->
              let r, info = runMl (compile (text seed)) 0
              valuesAndErrors r info ]
    exact
    |> List.mapi (fun k x ->
        let errs = runs |> List.map (fun vs -> fst vs[k] - x)
        let z = List.map2 (fun e (vs: (float * float) list) -> e / snd vs[k]) errs runs
        sqrt (errs |> List.averageBy (fun e -> e * e)), sqrt (z |> List.averageBy (fun e -> e * e)))

[<Tests>]
let slow =
    testList
        "Slow multilevel"
        [ test "Slow multilevel GBM over 40 seeds: RMS error <= 1.2 accuracy, reported errors honest" {
              Tier.requireSlow "40 multilevel runs to an accuracy of 0.005"
              let eps = 0.005
              let text seed = gbm (sprintf "accuracy = %g; dt = 0.25; paths = 500; T = 1; seed = %d" eps seed) "  mean(S)\n  mean(S^2)\n  mean(max(S - 1, 0))"
              let results = repeat text [ exp 0.05; exp 0.14; call 1.0 1.0 0.05 0.2 1.0 ] 40
              for rms, z in results do
                  printfn "mlmc GBM: achieved RMS error %g (target %g), RMS of error/reported %g" rms eps z
                  Expect.isLessThanOrEqual rms (1.2 * eps) "achieved RMS error"
                  Expect.isLessThanOrEqual z 1.5 "the reported error is honest"
          }

          test "Slow multilevel OU over 40 seeds: RMS error <= 1.2 accuracy, reported errors honest" {
              Tier.requireSlow "40 multilevel runs to an accuracy of 0.003"
              let eps = 0.003
              let text seed = ou (sprintf "accuracy = %g; dt = 0.25; paths = 500; T = 1; seed = %d" eps seed) "  mean(x)\n  mean(x^2)\n  variance(x)"
              let v = 0.25 * (1.0 - exp -2.0) / 2.0
              let results = repeat text [ exp -1.0; exp -2.0 + v; v ] 40
              for rms, z in results do
                  printfn "mlmc OU: achieved RMS error %g (target %g), RMS of error/reported %g" rms eps z
                  Expect.isLessThanOrEqual rms (1.2 * eps) "achieved RMS error"
                  Expect.isLessThanOrEqual z 1.5 "the reported error is honest"
          } ]
