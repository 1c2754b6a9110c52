/// The discretisation bias of the derived kinds (variance, covariance, quantile, 2-D density) and of
/// finite-difference responses (docs/discretisation.md), checked where the Euler chain's values are exact:
/// geometric Brownian motion (E x_N = (1 + μ dt)^N, E x_N² = ((1 + μ dt)² + σ² dt)^N) and the
/// Ornstein–Uhlenbeck chain (Gaussian: mean x0 (1 − θ dt)^N, variance σ² dt Σ_k (1 − θ dt)^{2k}).
module Sde.Tests.BiasKindsTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Sde
open Sde.Lang
open Sde.Lang.Report

let private inv = Globalization.CultureInfo.InvariantCulture

let private fill (template: string) (dt: float) (paths: int) (seed: int) (queries: string) =
    template.Replace("PATHS", string paths).Replace("DT", dt.ToString("R", inv)).Replace("SEED", string seed).Replace("QUERIES", queries)

/// BiasTests' geometric Brownian motion (μ = 1, σ = 0.5, x₀ = 1, T = 1).
let private gbmText (dt: float) (paths: int) (seed: int) (queries: string) = BiasTests.gbm dt paths seed "" queries

let private ouTemplate = """model Ou {
  param theta = 1
  param sigma = 1
  state x
  state y
  brownian W
  brownian V
  init x = 1
  init y = 0
  d x = -theta * x dt + sigma * dW
  d y = -y dt + dV
}
simulate { paths = PATHS; dt = DT; T = 1; seed = SEED }
query {
QUERIES
}
"""

let private ouText = fill ouTemplate

let private compile (text: string) =
    match SdeCompiler.Compile(text, "bias.sde") with
    | Ok p -> p
    | Error ds -> failwithf "%A" ds

let private run (text: string) = (compile text).Run(threads = 2, backend = "cpu")
let private results (r: RunReport) = (List.head r.Sets).Results

let private biasOf (q: QueryOutcome) =
    match q.Bias with
    | Some b when b.Reason.IsNone -> b
    | other -> failwithf "%s: no bias (%A)" q.Query other

/// The GBM chain's E x_N and E x_N² (μ = 1, σ = 0.5, T = 1, x0 = 1).
let private gbmMoments (mu: float) (dt: float) =
    let n = Math.Round(1.0 / dt)
    Math.Pow(1.0 + mu * dt, n), Math.Pow((1.0 + mu * dt) ** 2.0 + 0.25 * dt, n)

let private gbmVar mu dt =
    let m1, m2 = gbmMoments mu dt
    m2 - m1 * m1

/// A 2-D linear model whose covariance is not a variance: dx = −x dt + dW, dy = (x − y) dt + 0.5 dV.
let private linText (dt: float) (paths: int) (seed: int) (queries: string) =
    (ouText dt paths seed queries).Replace("d y = -y dt + dV", "d y = (x - y) dt + 0.5 * dV")

/// Its Euler chain's cov(x_N, y_N) at T = 1 from x0 = (1, 0), exactly: Σ ← A Σ Aᵀ + dt diag(1, 0.25),
/// A = [[1 − dt, 0], [dt, 1 − dt]] (the mean does not enter a covariance).
let private linCov (dt: float) =
    let n = int (Math.Round(1.0 / dt))
    let mutable sxx, sxy, syy = 0.0, 0.0, 0.0
    for _ in 1..n do
        let a = 1.0 - dt
        let xx = a * a * sxx + dt
        let xy = a * (dt * sxx + a * sxy)
        let yy = dt * dt * sxx + 2.0 * dt * a * sxy + a * a * syy + 0.25 * dt
        sxx <- xx
        sxy <- xy
        syy <- yy
    sxy

/// The SDE's: the chain's at dt = 2^−16, extrapolated 2 Q(h) − Q(2h) (error O(h²) ≈ 10^−10).
let private linCovSde = 2.0 * linCov (1.0 / 65536.0) - linCov (1.0 / 32768.0)

/// The SDE's variance of x_T: e^{2μT}(e^{σ²T} − 1).
let private gbmVarSde mu = exp (2.0 * mu) * (exp 0.25 - 1.0)

/// The OU chain's mean and variance at T = 1 (θ = σ = 1, x0 = 1).
let private ouChain (dt: float) =
    let n = int (Math.Round(1.0 / dt))
    let a = 1.0 - dt
    Math.Pow(a, float n), dt * (1.0 - Math.Pow(a, 2.0 * float n)) / (1.0 - a * a)

let private ouSde = exp -1.0, (1.0 - exp -2.0) / 2.0

/// Φ⁻¹(0.9).
let private z90 = 1.2815515655446004

let private ouQuantile (mean: float, var: float) = mean + z90 * sqrt var

/// What the estimator estimates, exactly: 2 (Q(dt) − Q(dt/2)) (Euler, weak order 1).
let private target (q: float -> float) (dt: float) = 2.0 * (q dt - q (dt / 2.0))

/// d/dμ of the GBM chain's mean by the estimator's own central difference.
let private gbmFd (h: float) (dt: float) = (fst (gbmMoments (1.0 + h) dt) - fst (gbmMoments (1.0 - h) dt)) / (2.0 * h)

[<Tests>]
let tests =
    testList
        "Bias kinds"
        [ test "GBM at dt = 0.1: the variance's bias against the exact chains' 2 (Q(dt) − Q(dt/2)) within 4.5 se; covariance(x, x) = variance(x)" {
              // 64000 paths: the pilot asks for about 2400 pairs, which resolve the variance's bias (0.51) at about
              // 10 of its standard errors (at 16000 paths, 590 pairs: 3.2; the pilot's 32 pairs underrate var(D)
              // of this skewed difference, docs/discretisation.md)
              let r = run (gbmText 0.1 64000 5 "  variance(x)\n  covariance(x, x)")
              let v, c = (results r)[0], (results r)[1]
              let bv = biasOf v
              let want = target (gbmVar 1.0) 0.1
              Expect.isLessThan (abs (bv.Value - want)) (4.5 * bv.StdErr) (sprintf "variance: b = %g ± %g, exact %g" bv.Value bv.StdErr want)
              Expect.isGreaterThan (abs want) (4.0 * bv.StdErr) "the variance's bias is resolved"
              Expect.equal bv.Method "coupled" "coupled"
              let bc = biasOf c
              Expect.floatClose { absolute = 1e-12; relative = 1e-9 } bc.Value bv.Value "covariance(x, x) = variance(x): the same pairs" }

          test "GBM at dt = 0.1: a finite-difference response's bias against the exact chains' within 4.5 se; pathwise says why it has none" {
              let r = run (gbmText 0.1 4000 5 "  d mean(x) / d mu with finite_difference(h = 0.01)\n  d mean(x) / d mu with pathwise")
              let fd, pw = (results r)[0], (results r)[1]
              let bf = biasOf fd
              let wantFd = target (gbmFd 0.01) 0.1
              Expect.isLessThan (abs (bf.Value - wantFd)) (4.5 * bf.StdErr) (sprintf "finite difference: b = %g ± %g, exact %g" bf.Value bf.StdErr wantFd)
              Expect.isGreaterThan (abs wantFd) (6.0 * bf.StdErr) "the response's bias is resolved"
              // pathwise: null with its reason (the pairs do not carry the tangent)
              match pw.Bias with
              | Some b -> Expect.stringContains (defaultArg b.Reason "") "pathwise" "pathwise: the reason names it"
              | None -> failtest "pathwise: a bias record" }

          test "OU at dt = 0.1: variance and the 0.5- and 0.9-quantiles' biases against the exact Gaussian chains within 4.5 se" {
              let r = run (ouText 0.1 10000 7 "  variance(x)\n  mean(x)\n  quantile(x, 0.5) on [-4, 4] bins 400\n  quantile(x, 0.9) on [-4, 4] bins 400")
              let check (q: QueryOutcome) (want: float) =
                  let b = biasOf q
                  Expect.isLessThan (abs (b.Value - want)) (4.5 * b.StdErr) (sprintf "%s: b = %g ± %g, exact %g" q.Query b.Value b.StdErr want)
                  Expect.isGreaterThan b.StdErr 0.0 "a standard error"
                  b
              let bv = check ((results r)[0]) (target (ouChain >> snd) 0.1)
              Expect.isGreaterThan (abs (target (ouChain >> snd) 0.1)) (6.0 * bv.StdErr) "the variance's bias is resolved"
              // (a quantile's coupled difference is noisier than a mean's: it sees the pairs that straddle the
              // quantile, a fraction ~ f(q) E|x_dt − x_dt/2|; here its se is about the value's, so no "resolved" check)
              check ((results r)[2]) (target (ouChain >> fst) 0.1) |> ignore
              check ((results r)[3]) (target (ouChain >> ouQuantile) 0.1) |> ignore
              // the mean's bias, on the same pairs, is resolved: the pairs are coupled
              let bm = check ((results r)[1]) (target (ouChain >> fst) 0.1)
              Expect.isGreaterThan (abs (target (ouChain >> fst) 0.1)) (6.0 * bm.StdErr) "the mean's bias is resolved" }

          test "a 2-D density's bias per cell is the 1-D density's per bin over a y range holding every sample (the same pairs), and the JSON carries it" {
              let r = run (ouText 0.1 4000 3 "  density(x) on [-3, 3] bins 6\n  density(x, y) on [-3, 3] x [-50, 50] bins 6 x 1")
              let b1, b2 = biasOf ((results r)[0]), biasOf ((results r)[1])
              Expect.equal b2.Values.Length 6 "a bias per cell"
              for k in 0..5 do
                  Expect.floatClose { absolute = 1e-12; relative = 1e-9 } (b2.Values[k] * 100.0) b1.Values[k] (sprintf "cell %d" k)
                  Expect.floatClose { absolute = 1e-12; relative = 1e-9 } (b2.StdErrs[k] * 100.0) b1.StdErrs[k] (sprintf "cell %d se" k)
              let json = JsonNode.Parse(Output.toJson r)
              let j = json["sets"].[0].["results"].[1]
              Expect.equal (j["bias"].AsArray().Count) 6 "JSON: per cell"
              Expect.equal (j["bias_method"].GetValue<string>()) "coupled" "JSON: method" }

          test "bias = estimate leaves every value of the derived kinds and responses bit for bit as bias = off; kernel responses say why they have none" {
              let q = "  variance(x)\n  quantile(x, 0.9) on [0, 10] bins 100\n  d mean(x) / d mu with finite_difference(h = 0.01)\n  d mean(x) / d mu"
              let on = results (run (gbmText 0.1 2000 9 q))
              let offText = (gbmText 0.1 2000 9 q).Replace("seed = 9 }", "seed = 9; bias = off }")
              let off = results (run offText)
              for a, b in List.zip on off do
                  Expect.equal a.Value b.Value (sprintf "%s: value" a.Query)
                  Expect.equal a.StdErr b.StdErr (sprintf "%s: stderr" a.Query)
                  Expect.isNone b.Bias "bias = off: none"
              match on[3].Bias with
              | Some b -> Expect.stringContains (defaultArg b.Reason "") "divergence-kernel" "the kernel response's reason"
              | None -> failtest "a bias record" }

          test "shards: 2 shards merged = the unsplit run with bias = estimate on variance, quantile and a finite-difference response" {
              let text = gbmText 0.1 301 8 "  variance(x)\n  covariance(x, x)\n  quantile(x, 0.5) on [0, 10] bins 50\n  d mean(x) / d mu with finite_difference(h = 0.01)"
              let p = compile text
              let strip (json: string) =
                  let n = JsonNode.Parse(json).AsObject()
                  n.Remove "timing" |> ignore
                  n.ToJsonString()
              let whole = strip (Output.toJson (p.Run(threads = 1, backend = "cpu")))
              let dir = Path.Combine(Path.GetTempPath(), "sde-biaskinds-" + Guid.NewGuid().ToString("N"))
              Directory.CreateDirectory dir |> ignore
              try
                  for k in [ 1; 0 ] do
                      let h = Shards.headerOf p.Program "bias.sde" text Frontend.noOverrides { K = k; N = 2 }
                      Shards.runShard p.Program h { Driver.defaultOptions with Threads = 2 } dir false |> ignore
                  match Shards.merge [ dir ] with
                  | Ok (_, report, _) ->
                      let merged = strip (Output.toJson report)
                      Expect.equal merged whole "merge = unsplit"
                      Expect.equal (JsonNode.Parse(merged).["sets"].[0].["results"].[3].["bias_method"].GetValue<string>()) "coupled" "the response's bias is there"
                  | Error m -> failwithf "merge refused: %s" m
              finally
                  Directory.Delete(dir, true) } ]

/// The reported bias_stderr of each new kind is honest: over 30 seeds, the z-scores of the reported bias
/// against what it estimates (2 (Q(dt) − Q(dt/2)), exact) and against the true bias Q(dt) − Q(0) (chain
/// minus SDE, both exact; they differ at order dt², small here against the standard error) have RMS in [0.7, 1.4].
[<Tests>]
let slowTests =
    let seeds = 30

    let zTest (name: string) (text: int -> string) (index: int) (estimated: float) (truth: float) =
        test name {
            Tier.requireSlow "30 runs"
            let bs = [ for seed in 1..seeds -> biasOf ((results (run (text seed)))[index]) ]
            let rms (t: float) = sqrt (bs |> List.averageBy (fun b -> ((b.Value - t) / b.StdErr) ** 2.0))
            let r1, r2 = rms estimated, rms truth
            printfn "%s: RMS z %.3f against 2 (Q(dt) - Q(dt/2)) = %g, %.3f against the true bias %g (mean bias %g, mean se %g)"
                name r1 estimated r2 truth (bs |> List.averageBy (fun b -> b.Value)) (bs |> List.averageBy (fun b -> b.StdErr))
            Expect.isGreaterThanOrEqual r1 0.7 "RMS z (estimated) >= 0.7"
            Expect.isLessThanOrEqual r1 1.4 "RMS z (estimated) <= 1.4"
            Expect.isGreaterThanOrEqual r2 0.7 "RMS z (true) >= 0.7"
            Expect.isLessThanOrEqual r2 1.4 "RMS z (true) <= 1.4"
        }

    // The spread over seeds against the reported error, where z cannot be normal: RMS(b − estimated) /
    // RMS(se) over 200 seeds in [0.8, 1.25] (numpy's study of the same estimator gives 0.77–1.20 over groups
    // of only 40 seeds; a factor-2 error in either direction fails). z is printed, and the figures
    // docs/discretisation.md quotes from this run are checked to their digits, not asserted as bounds.
    let spreadTest (name: string) (text: int -> string) (index: int) (estimated: float) =
        test name {
            Tier.requireSlow "200 runs"
            let bs = [| for seed in 1..200 -> biasOf ((results (run (text seed)))[index]) |]
            let spread = sqrt (bs |> Array.averageBy (fun b -> (b.Value - estimated) ** 2.0))
            let se = sqrt (bs |> Array.averageBy (fun b -> b.StdErr * b.StdErr))
            let zOf (b: BiasOutcome) = (b.Value - estimated) / b.StdErr
            let rmsZ (xs: BiasOutcome[]) = sqrt (xs |> Array.averageBy (fun b -> zOf b ** 2.0))
            let bySamples = bs |> Array.sortBy (fun b -> b.Samples)
            let fewer, more = rmsZ bySamples[..99], rmsZ bySamples[100..]
            let pairs = bs |> Array.map (fun b -> b.Samples)
            printfn "%s: RMS(b - 2 (Q(dt) - Q(dt/2))) %g, RMS se %g, ratio %.3f; RMS z %.3f, mean z %.3f, |z| > 3 in %d; pairs %d to %d; RMS z of the half with fewer pairs %.3f, more %.3f"
                name spread se (spread / se) (rmsZ bs) (bs |> Array.averageBy zOf) (bs |> Array.filter (fun b -> abs (zOf b) > 3.0) |> Array.length)
                (Array.min pairs) (Array.max pairs) fewer more
            Expect.isGreaterThanOrEqual (spread / se) 0.8 "spread / RMS se >= 0.8"
            Expect.isLessThanOrEqual (spread / se) 1.25 "spread / RMS se <= 1.25"
            let page = DocsNumbers.page "discretisation.md"
            let q =
                DocsNumbers.quoted "discretisation.md" page
                    @"RMS\(b − 2 \(Q\(dt\) − Q\(dt/2\)\)\) / RMS\(se\) = ([0-9.]+) over 200 seeds"
            DocsNumbers.agreesToDigits "the ratio" q[0] (spread / se)
            let q = DocsNumbers.quoted "discretisation.md" page @"z RMS over those 200 seeds is ([0-9.]+) \(mean\s+z \+([0-9.]+)"
            DocsNumbers.agreesToDigits "RMS z" q[0] (rmsZ bs)
            DocsNumbers.agreesToDigits "mean z" q[1] (bs |> Array.averageBy zOf)
            let q = DocsNumbers.quoted "discretisation.md" page @"few pairs \(([0-9]+) to ([0-9]+) over the 200 seeds\)"
            Expect.equal (int q[0], int q[1]) (int (Array.min pairs), int (Array.max pairs)) "the pairs' range"
            let q = DocsNumbers.quoted "discretisation.md" page @"has z RMS\s+([0-9.]+), the other half ([0-9]+\.[0-9]+)"
            DocsNumbers.agreesToDigits "the half with fewer pairs" q[0] fewer
            DocsNumbers.agreesToDigits "the half with more pairs" q[1] more
        }

    testSequenced
    <| testList
        "Slow bias kinds"
        [ // GBM's variance(x): the pairs' c² − f² is skewed (skewness −11, kurtosis 380 per pair), so over a few
          // hundred pairs the estimate and its jackknife error are correlated (−0.8: a sample that misses the
          // rare large pair is off and reports a small error) and z is not normal (RMS 1.2–2.5 over 30 seeds),
          // though the error is right: the spread over seeds matches it (docs/discretisation.md, "Derived
          // results"; docs/scripts/gbm_variance_bias.py repeats it in numpy, independent of this engine).
          spreadTest "GBM variance(x) at dt = 0.02" (fun s -> gbmText 0.02 4000 s "  variance(x)") 0 (target (gbmVar 1.0) 0.02)
          zTest "OU variance(x) at dt = 0.05" (fun s -> ouText 0.05 4000 s "  variance(x)") 0 (target (ouChain >> snd) 0.05) (snd (ouChain 0.05) - snd ouSde)
          zTest "OU quantile(x, 0.9) at dt = 0.05" (fun s -> ouText 0.05 4000 s "  quantile(x, 0.9) on [-4, 4] bins 400") 0
              (target (ouChain >> ouQuantile) 0.05) (ouQuantile (ouChain 0.05) - ouQuantile ouSde)
          // (not GBM's cov(x, x²): its x³ is so heavy-tailed that 400 pairs do not give a normal z)
          zTest "2-D linear covariance(x, y) at dt = 0.05" (fun s -> linText 0.05 4000 s "  covariance(x, y)") 0 (target linCov 0.05) (linCov 0.05 - linCovSde)
          zTest "GBM d mean(x) / d mu with finite_difference at dt = 0.02" (fun s -> gbmText 0.02 4000 s "  d mean(x) / d mu with finite_difference(h = 0.01)") 0
              (target (gbmFd 0.01) 0.02) (gbmFd 0.01 0.02 - (exp 1.01 - exp 0.99) / 0.02) ]
