/// The discretisation-error estimate (`bias = estimate`, the default) and `extrapolate = richardson`
/// (docs/discretisation.md), checked where both the Euler chain's and the SDE's values are exact:
/// geometric Brownian motion, whose Euler chain has E[x_N] = x0 (1 + μ dt)^N and the SDE x0 e^{μT}.
module Sde.Tests.BiasTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Sde
open Sde.Lang
open Sde.Lang.Report

let private template = """model Gbm {
  param mu = 1
  param sigma = 0.5
  state x
  brownian W
  init x = 1
  d x = mu * x dt + sigma * x dW
}
simulate { paths = PATHS; dt = DT; T = 1; seed = SEEDEXTRA }
query {
QUERIES
}
"""

let gbm (dt: float) (paths: int) (seed: int) (extra: string) (queries: string) =
    template
        .Replace("PATHS", string paths)
        .Replace("DT", dt.ToString("R", Globalization.CultureInfo.InvariantCulture))
        .Replace("SEEDEXTRA", string seed + extra)
        .Replace("QUERIES", queries)

let private compile (text: string) =
    match SdeCompiler.Compile(text, "gbm.sde") with
    | Ok p -> p
    | Error ds -> failwithf "%A" ds

let private errorsOf (text: string) =
    match SdeCompiler.Compile(text, "gbm.sde") with
    | Ok _ -> failwith "compiled"
    | Error ds -> ds |> List.map (fun d -> sprintf "%d:%d: %s" d.Line d.Col d.Message)

let private run (text: string) = (compile text).Run(threads = 2, backend = "cpu")

let private results (r: RunReport) = (List.head r.Sets).Results

/// E[x_N] of the Euler chain of dx = μ x dt + σ x dW from x0 = 1: (1 + μ dt)^N (exact).
let private chain (mu: float) (dt: float) (t: float) = Math.Pow(1.0 + mu * dt, Math.Round(t / dt))

/// What the coupled estimate estimates, exactly: (Q(dt) − Q(dt/2)) / (1 − 2^−1).
let private expectedB (mu: float) (dt: float) = 2.0 * (chain mu dt 1.0 - chain mu (dt / 2.0) 1.0)

let private scalarBias (q: QueryOutcome) =
    match q.Bias with
    | Some b when b.Reason.IsNone -> b
    | other -> failwithf "%s: no bias (%A)" q.Query other

[<Tests>]
let tests =
    testList
        "Bias"
        [ test "GBM at dt = 0.1: the bias against the exact (Q(dt) − Q(dt/2))/(1 − 1/2) within 4.5 se; the value is bias = off's, bit for bit" {
              let q = "  mean(x)\n  density(x) on [0, 8] bins 10\n  variance(x)\n  d mean(x) / d mu with pathwise"
              // 8000 paths (500 pairs): the bias, 0.119, is about 8 of its standard errors, so the check that
              // it is resolved has room for the standard error's own spread over seeds
              let on = run (gbm 0.1 8000 5 "" q)
              let off = run (gbm 0.1 8000 5 "; bias = off" q)
              let m, d = (results on)[0], (results on)[1]
              let b = scalarBias m
              let want = expectedB 1.0 0.1
              Expect.isLessThan (abs (b.Value - want)) (4.5 * b.StdErr) (sprintf "b = %g ± %g, exact %g" b.Value b.StdErr want)
              // the check can fail: the bias is many standard errors from 0
              Expect.isGreaterThan (abs want) (6.0 * b.StdErr) "the bias is resolved"
              Expect.equal b.Method "coupled" "coupled pairs"
              Expect.isLessThanOrEqual b.Samples (Core.Engine.MaxPairs(8000L)) "at most the cap of pairs"
              Expect.equal (Core.Engine.MaxPairs(4000L)) 250L "the cap: a sixteenth of the paths (docs/discretisation.md)"
              let offM, offD = (results off)[0], (results off)[1]
              Expect.equal m.Value offM.Value "the mean is bias = off's"
              Expect.equal m.StdErr offM.StdErr "its stderr too"
              Expect.equal d.Values offD.Values "the density is bias = off's"
              Expect.isNone offM.Bias "bias = off: none"
              let db = (scalarBias d).Values
              Expect.equal db.Length 10 "a bias per bin"
              Expect.isTrue (db |> Array.forall Double.IsFinite) "finite per bin"
              // the warning names a dt, and the table shows the bias
              Expect.exists m.Warnings (fun w -> w.Contains "discretisation bias" && w.Contains "dt = ") "warning with a dt"
              Expect.stringContains (Output.table on) "(bias " "the table shows the bias"
              // the JSON: numbers per value and per bin; null with a reason for the kinds without; none with bias = off
              let json = JsonNode.Parse(Output.toJson on)
              let rs = json["sets"].[0].["results"].AsArray()
              Expect.isNotNull rs[0].["bias"] "mean: bias"
              Expect.isNotNull rs[0].["bias_stderr"] "mean: bias_stderr"
              Expect.equal (rs[0].["bias_method"].GetValue<string>()) "coupled" "method"
              Expect.equal (rs[1].["bias"].AsArray().Count) 10 "density: per bin"
              Expect.equal (rs[1].["bias_stderr"].AsArray().Count) 10 "density: per bin se"
              Expect.equal (rs[2].["bias_method"].GetValue<string>()) "coupled" "variance: a coupled bias (tests/BiasKindsTests.fs checks it)"
              for k in [ 3 ] do
                  let o = rs[k].AsObject()
                  Expect.isTrue (o.ContainsKey "bias" && isNull o["bias"]) (sprintf "result %d: bias null" k)
                  Expect.isTrue (o["bias_reason"].GetValue<string>().Length > 10) "with its reason"
              let offDoc = JsonNode.Parse(Output.toJson off)
              let offJson = offDoc["sets"].[0].["results"].AsArray()
              for k in 0 .. 3 do
                  Expect.isFalse (offJson[k].AsObject().ContainsKey "bias") "bias = off: no field" }

          test "extrapolate = richardson on GBM: within 4.5 se of e^{μT}, where the dt = 0.1 chain is far from it" {
              let r = run (gbm 0.1 4000 6 "; extrapolate = richardson" "  mean(x)\n  density(x) on [0, 8] bins 10")
              let m = (results r)[0]
              Expect.isTrue m.Extrapolated "extrapolated"
              Expect.isNone m.Bias "no bias of the extrapolated value"
              Expect.isLessThan (abs (m.Value - exp 1.0)) (4.5 * m.StdErr) (sprintf "%g ± %g against e" m.Value m.StdErr)
              Expect.isGreaterThan (abs (chain 1.0 0.1 1.0 - exp 1.0)) (4.5 * m.StdErr) "the chain itself is resolved away from e"
              Expect.equal m.Count 4000L "every path a pair"
              let json = JsonNode.Parse(Output.toJson r)
              let j = json["sets"].[0].["results"].[0]
              Expect.isTrue (j["extrapolated"].GetValue<bool>()) "JSON extrapolated"
              Expect.isTrue (json["sets"].[0].["results"].[1].["extrapolated"].GetValue<bool>()) "the density too" }

          test "settings errors are located: bias, extrapolate, and what Richardson cannot extrapolate" {
              let bad = errorsOf (gbm 0.1 100 1 "; bias = maybe" "  mean(x)")
              Expect.exists bad (fun e -> e.StartsWith "9:" && e.Contains "bias must be 'estimate'") (sprintf "%A" bad)
              let bad = errorsOf (gbm 0.1 100 1 "; extrapolate = yes" "  mean(x)")
              Expect.exists bad (fun e -> e.StartsWith "9:" && e.Contains "extrapolate must be 'richardson'") (sprintf "%A" bad)
              let bad = errorsOf (gbm 0.1 100 1 "; extrapolate = richardson" "  mean(x)\n  variance(x)")
              Expect.exists bad (fun e -> e.StartsWith "12:3:" && e.Contains "richardson is not available for variance") (sprintf "%A" bad) }

          test "the coupled pairs four at a time in the lanes give the bits of one pair at a time (estimate, twins, Richardson, SRA)" {
              // the run's thread chooses: Driver.run runs the engines on it
              let runLanes (lanes: int) (p: CompiledProgram) =
                  let saved = Core.Engine.LanesOnThisThread
                  Core.Engine.LanesOnThisThread <- lanes
                  try
                      let n = JsonNode.Parse(Output.toJson (Driver.run p.Program { Driver.defaultOptions with Threads = 2 })).AsObject()
                      n.Remove "timing" |> ignore
                      n.ToJsonString()
                  finally Core.Engine.LanesOnThisThread <- saved
              let hasLanes (p: CompiledProgram) =
                  let c = p.Program.Compiled
                  let m = c.Instance(Array.zeroCreate c.Ir.ParamNames.Length) :?> Core.ISdeLaneModel
                  Expect.equal m.LaneWidth 4 "the model has a lane step (else this compares one pair at a time with itself)"
              // 403 paths: a cap of 25 pairs, a pilot of 8, and pair counts that do not fill the last group of four
              let q = "  mean(x)\n  mean(x^2) over [0.5, 1]\n  density(x) on [0, 8] bins 10\n  variance(x)\n  d mean(x) / d mu with finite_difference(h = 0.01)"
              for extra, queries in [ "", q; "; extrapolate = richardson", "  mean(x)\n  density(x) on [0, 8] bins 10"; "; scheme = milstein", q ] do
                  let p = compile (gbm 0.05 403 9 extra queries)
                  hasLanes p
                  let one = runLanes 1 p
                  let four = runLanes 4 p
                  Expect.equal four one (sprintf "lanes = one at a time (%s)" extra)
                  Expect.stringContains one (if extra.Contains "richardson" then "\"extrapolated\"" else "\"bias_stderr\"") "the pairs ran"
              // SRA (additive noise): the coarse step's integral normals combined in the lanes as one at a time
              let ou = "model Ou {\n  param theta = 1\n  state x\n  brownian W\n  init x = 1\n  d x = -theta * x dt + 0.5 dW\n}\nsimulate { paths = 403; dt = 0.05; T = 1; seed = 4; scheme = sra }\nquery {\n  mean(x)\n  density(x) on [-2, 2] bins 8\n}\n"
              let p = compile ou
              hasLanes p
              let one = runLanes 1 p
              let four = runLanes 4 p
              Expect.equal four one "SRA: lanes = one at a time" }

          // (bias = estimate, the default, is in the "shards" list's merge = unsplit checks)
          test "shards: 2 shards merged = the unsplit run with extrapolate = richardson" {
              for extra in [ "; extrapolate = richardson" ] do
                  let text = gbm 0.1 301 8 extra "  mean(x)\n  density(x) on [0, 8] bins 5"
                  let p = compile text
                  let strip (json: string) =
                      let n = JsonNode.Parse(json).AsObject()
                      n.Remove "timing" |> ignore
                      n.ToJsonString()
                  let whole = strip (Output.toJson (p.Run(threads = 1, backend = "cpu")))
                  let dir = Path.Combine(Path.GetTempPath(), "sde-bias-" + Guid.NewGuid().ToString("N"))
                  Directory.CreateDirectory dir |> ignore
                  try
                      for k in [ 1; 0 ] do
                          let h = Shards.headerOf p.Program "gbm.sde" text Frontend.noOverrides { K = k; N = 2 }
                          Shards.runShard p.Program h { Driver.defaultOptions with Threads = 2 } dir false |> ignore
                      match Shards.merge [ dir ] with
                      | Ok (_, report, _) ->
                          let merged = strip (Output.toJson report)
                          Expect.equal merged whole (sprintf "merge = unsplit (%s)" extra)
                          Expect.stringContains merged (if extra = "" then "\"bias_stderr\"" else "\"extrapolated\"") "the fields are there"
                      | Error m -> failwithf "merge refused: %s" m
                  finally
                      Directory.Delete(dir, true) } ]

/// The estimate is honest: its z-scores against the true bias (chain − SDE, both exact) over 30 seeds
/// have RMS near 1; the anneal example extrapolated lands on the quadrature value.
[<Tests>]
let slowTests =
    testSequenced
    <| testList
        "Slow bias"
        [ test "GBM at dt = 0.02: z-scores of the reported bias against the true (1 + μ dt)^N − e^{μT} over 30 seeds have RMS in [0.7, 1.4]" {
              Tier.requireSlow "30 runs of 4000 paths"
              let truth = chain 1.0 0.02 1.0 - exp 1.0
              let zs =
                  [ for seed in 1..30 ->
                        let r = results (run (gbm 0.02 4000 seed "" "  mean(x)"))
                        let b = scalarBias r[0]
                        (b.Value - truth) / b.StdErr ]
              let rms = sqrt (zs |> List.averageBy (fun z -> z * z))
              printfn "bias z-scores: RMS %.3f, mean %.3f over %d seeds" rms (List.average zs) zs.Length
              Expect.isGreaterThanOrEqual rms 0.7 "RMS >= 0.7"
              Expect.isLessThanOrEqual rms 1.4 "RMS <= 1.4" }

          test "examples/anneal.sde with extrapolate = richardson lands on the quadrature value (-0.57470) within 3 se" {
              Tier.requireSlow "two weighted runs of 20000 paths"
              let rec up (d: DirectoryInfo) = if File.Exists(Path.Combine(d.FullName, "examples", "anneal.sde")) then d.FullName else up d.Parent
              let text = File.ReadAllText(Path.Combine(up (DirectoryInfo AppContext.BaseDirectory), "examples", "anneal.sde"))
              // the example's commented simulate line in place of its first
              let lines = text.Split('\n')
              let alt = lines |> Array.find (fun l -> l.StartsWith "// simulate {")
              let text = lines |> Array.choose (fun l -> if l.StartsWith "simulate {" then Some(alt.Substring 3) elif l = alt then None else Some l) |> String.concat "\n"
              Expect.stringContains text "\nsimulate { paths = 20000; dt = 0.01; T = 5; seed = 11; resample = systematic; ess = 0.5; extrapolate = richardson }" "the setting is in"
              let r = (match SdeCompiler.Compile(text, "anneal.sde") with Ok p -> p | Error ds -> failwithf "%A" ds).Run(threads = 2, backend = "cpu")
              let z = (results r) |> List.find (fun q -> q.Kind = "log_normalizer")
              printfn "anneal richardson: %.5f ± %.5f (quadrature -0.57470)" z.Value z.StdErr
              Expect.isTrue z.Extrapolated "extrapolated"
              Expect.isLessThan (abs (z.Value - -0.57470)) (3.0 * z.StdErr) (sprintf "%g ± %g" z.Value z.StdErr) } ]
