/// Seed repeats of the discretisation-error standard errors (issue 19; docs/discretisation.md): over 30
/// seeds the z-scores of each reported number against its exact target have an RMS in [0.7, 1.4].
/// Where the targets are exact: GBM's Euler chain (E x_N = (1 + μΔt)^N), OU's Euler chain (Gaussian:
/// its mean and variance by recursion, so every bin's probability in closed form), and the weighted OU
/// chain of WeightedTests.exactChain (log Z and the weighted mean by their Gaussian recursion).
///   * Richardson's extrapolated value 2 Q(dt/2) − Q(dt): the coupled pairs (mean, density) and the
///     weighted runs' independent pair (log_normalizer, weighted mean);
///   * the coupled bias of a mean and of a density (per bin), against 2 (Q(dt) − Q(dt/2));
///   * the weighted runs' independent half-step bias (Driver.runWeighted), the same target.
/// GBM's coupled bias of a mean is BiasTests' "Slow bias". CI's exhaustive tier runs these (SDE_SLOW=1).
module Sde.Tests.BiasSeedRepeatTests

open System
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.DocsNumbers

let private seeds = [ 1..30 ]

/// The weighted runs take 60 seeds: their z-scores' RMS over seeds 1-30 was 0.66 for the Richardson
/// weighted mean, over 1-120 0.94 (the four blocks of 30: 0.66, 1.08, 1.05, 0.93); the RMS of 30 honest
/// z-scores has a standard deviation of about 0.13, of 60 about 0.09.
let private weightedSeeds = [ 1..60 ]

let private results (src: string) =
    match SdeCompiler.Compile(src, "repeat.sde") with
    | Ok p -> p.Run(threads = 2, backend = "cpu").Sets.Head.Results |> List.toArray
    | Error ds -> failtestf "%A" (ds |> List.map (fun d -> d.Rendered))

let private rms (zs: float seq) = sqrt (Seq.averageBy (fun z -> z * z) zs)

/// The z-scores' RMS within [0.7, 1.4] (and every z finite: a zero or NaN error with a nonzero miss fails).
let private honest (what: string) (zs: float[]) =
    Expect.all zs Double.IsFinite (sprintf "%s: every z finite (%A)" what (zs |> Array.filter (Double.IsFinite >> not) |> Array.truncate 3))
    let r = rms zs
    printfn "%s: z-score RMS %.3f, mean %.3f over %d" what r (Array.average zs) zs.Length
    Expect.isGreaterThanOrEqual r 0.7 (sprintf "%s: RMS %.3f >= 0.7" what r)
    Expect.isLessThanOrEqual r 1.4 (sprintf "%s: RMS %.3f <= 1.4" what r)

// ------------------------------------------------------------------------------- GBM, OU: coupled

let private gbm (seed: int) (extra: string) =
    sprintf "model Gbm {\n  param mu = 1\n  param sigma = 0.5\n  state x\n  brownian W\n  init x = 1\n  d x = mu * x dt + sigma * x dW\n}\nsimulate { paths = 2000; dt = 0.1; T = 1; seed = %d%s }\nquery {\n  mean(x)\n}\n" seed extra

/// OU from a Gaussian initial law at a coarse step, where the Euler bias is large.
let private theta, sigma, m0, s0, dt, horizon = 1.0, 0.8, 0.5, 0.7, 0.1, 1.0
let private lo, hi, bins = -2.0, 2.0, 8

let private ou (seed: int) (extra: string) =
    sprintf
        "model OU {\n  param theta = 1\n  param sigma = 0.8\n  state x\n  brownian W\n  init x ~ normal(0.5, 0.7)\n  d x = -theta * x dt + sigma dW\n}\nsimulate { paths = 4000; dt = 0.1; T = 1; seed = %d%s }\nquery {\n  mean(x)\n  density(x) on [-2, 2] bins 8\n}\n"
        seed extra

/// The OU Euler chain at step h: x_N ~ N(m, v), m_{n+1} = (1 − θh) m_n, v_{n+1} = (1 − θh)² v_n + σ²h.
let private ouChain (h: float) =
    let a = 1.0 - theta * h
    let mutable m, v = m0, s0 * s0
    for _ in 1 .. int (Math.Round(horizon / h)) do
        m <- a * m
        v <- a * a * v + sigma * sigma * h
    m, v

/// The chain's density estimate per bin: P(bin) / width.
let private ouBins (h: float) =
    let m, v = ouChain h
    let w = (hi - lo) / float bins
    Array.init bins (fun k ->
        let a, b = lo + float k * w, lo + float (k + 1) * w
        (normalCdf ((b - m) / sqrt v) - normalCdf ((a - m) / sqrt v)) / w)

// ------------------------------------------------------------------------------- weighted OU

let private wTheta, wSigma, wC, wDt, wT = 1.0, 0.8, 0.5, 0.05, 2.0

let private weighted (seed: int) (extra: string) =
    sprintf
        "model OUW {\n  param theta = 1\n  param sigma = 0.8\n  param c = 0.5\n  state x\n  brownian W\n  weight w\n  init x ~ normal(0.5, 0.7)\n  d x = -theta * x dt + sigma dW\n  d log w = -c * x^2 dt\n}\nsimulate { paths = 4000; dt = 0.05; T = 2; seed = %d; resample = none%s }\nquery {\n  mean(x)\n  log_normalizer\n}\n"
        seed extra

/// log Z and the weighted mean at T of the weighted OU chain at step h (exact).
let private weightedChain (h: float) =
    let steps = int (Math.Round(wT / h))
    let logZ, means, _ = WeightedTests.exactChain wTheta wSigma wC 0.5 0.7 h steps
    logZ, means[steps]

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Slow bias seed repeats"
        [ test "extrapolate = richardson, coupled: GBM's mean against the chain's exact 2 (1 + μdt/2)^2N − (1 + μdt)^N, 30 seeds" {
              Tier.requireSlow "30 runs of 2000 coupled pairs"
              let target = 2.0 * 1.05 ** 20.0 - 1.1 ** 10.0
              let zs =
                  [| for s in seeds ->
                         let r = (results (gbm s "; extrapolate = richardson"))[0]
                         Expect.isTrue r.Extrapolated "extrapolated"
                         (r.Value - target) / r.StdErr |]
              honest "richardson, GBM mean" zs
          }

          test "extrapolate = richardson, coupled: OU's mean and density (per bin) against the Gaussian chain's 2 Q(dt/2) − Q(dt), 30 seeds" {
              Tier.requireSlow "30 runs of 4000 coupled pairs"
              let mc, _ = ouChain dt
              let mf, _ = ouChain (dt / 2.0)
              let binsC, binsF = ouBins dt, ouBins (dt / 2.0)
              let runs = [| for s in seeds -> results (ou s "; extrapolate = richardson") |]
              honest "richardson, OU mean" (runs |> Array.map (fun r -> (r[0].Value - (2.0 * mf - mc)) / r[0].StdErr))
              // every bin with at least 2% of the mass (the outer bins' errors rest on a few samples)
              let used = Array.init bins id |> Array.filter (fun k -> binsF[k] * (hi - lo) / float bins > 0.02)
              Expect.isGreaterThanOrEqual used.Length 5 "bins tested"
              honest "richardson, OU density per bin" [| for r in runs do for k in used -> (r[1].Values[k] - (2.0 * binsF[k] - binsC[k])) / r[1].StdErrs[k] |]
          }

          test "bias = estimate, coupled: OU's mean and density (per bin) against the Gaussian chain's 2 (Q(dt) − Q(dt/2)), 30 seeds" {
              Tier.requireSlow "30 runs of 4000 paths and their pairs"
              let mc, _ = ouChain dt
              let mf, _ = ouChain (dt / 2.0)
              let binsC, binsF = ouBins dt, ouBins (dt / 2.0)
              // 6400 paths: the cap's P/16 = 400 pairs, enough that most bins see a pair whose chains differ
              let runs = [| for s in seeds -> results ((ou s "").Replace("paths = 4000;", "paths = 6400;")) |]
              let bias (q: Report.QueryOutcome) =
                  match q.Bias with
                  | Some b when b.Reason.IsNone && b.Method = "coupled" -> b
                  | other -> failtestf "%s: no coupled bias (%A)" q.Query other
              honest "coupled bias, OU mean" (runs |> Array.map (fun r -> let b = bias r[0] in (b.Value - 2.0 * (mc - mf)) / b.StdErr))
              let used = Array.init bins id |> Array.filter (fun k -> binsF[k] * (hi - lo) / float bins > 0.02)
              Expect.isGreaterThanOrEqual used.Length 5 "bins tested"
              // a bin where no pair's samples differed reads 0 with the rule-of-three bound √3/n as its error
              // (per unit width, times the bias factor 2); the others are tested, and they must be most of them
              // (the pilot sees few edge crossings, so a density takes the most pairs)
              let cells = [| for r in runs do let b = bias r[1] in for k in used -> b.Values[k], b.StdErrs[k], 2.0 * (binsC[k] - binsF[k]), b.Samples |]
              let width = (hi - lo) / float bins
              let isBound (se: float) (n: int64) = abs (se / (2.0 * sqrt 3.0 / float n / width) - 1.0) < 1e-9
              let unresolved = cells |> Array.filter (fun (_, se, _, n) -> isBound se n)
              Expect.all unresolved (fun (v, _, _, _) -> v = 0.0) "an unresolved bin reads 0"
              Expect.isLessThan unresolved.Length (cells.Length / 4) (sprintf "%d of %d bins unresolved" unresolved.Length cells.Length)
              honest
                  "coupled bias, OU density per bin"
                  (cells |> Array.filter (fun (_, se, _, n) -> not (isBound se n)) |> Array.map (fun (v, se, truth, _) -> (v - truth) / se))
          }

          test "weighted (resample = none): the independent half-step bias of log_normalizer and of the weighted mean against the exact chains' 2 (Q(dt) − Q(dt/2)), 60 seeds" {
              Tier.requireSlow "60 weighted runs of 4000 paths and their half-step runs"
              let zc, mc = weightedChain wDt
              let zf, mf = weightedChain (wDt / 2.0)
              let runs = [| for s in weightedSeeds -> results (weighted s "") |]
              for i, name, truth in [ 0, "weighted mean", 2.0 * (mc - mf); 1, "log_normalizer", 2.0 * (zc - zf) ] do
                  honest
                      (sprintf "independent bias, %s" name)
                      (runs
                       |> Array.map (fun r ->
                           match r[i].Bias with
                           | Some b when b.Method = "independent" && b.Reason.IsNone -> (b.Value - truth) / b.StdErr
                           | other -> failtestf "%s: no independent bias (%A)" name other))
          }

          test "weighted (resample = none) with extrapolate = richardson: log_normalizer and the weighted mean against the exact chains' 2 Q(dt/2) − Q(dt), 60 seeds" {
              Tier.requireSlow "60 weighted runs of 4000 paths at dt and dt/2"
              let zc, mc = weightedChain wDt
              let zf, mf = weightedChain (wDt / 2.0)
              let runs = [| for s in weightedSeeds -> results (weighted s "; extrapolate = richardson") |]
              for i, name, target in [ 0, "weighted mean", 2.0 * mf - mc; 1, "log_normalizer", 2.0 * zf - zc ] do
                  honest (sprintf "richardson, weighted, %s" name) (runs |> Array.map (fun r -> Expect.isTrue r[i].Extrapolated "extrapolated"; (r[i].Value - target) / r[i].StdErr))
          } ]
