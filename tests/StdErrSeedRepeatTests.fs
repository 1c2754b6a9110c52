/// The standard errors of the plain query kinds, checked by seed repeats against the exact Euler chain
/// (the developers' guide: a value and its standard error must be right, the spread over seeds must match
/// the error). A 2-D linear Gaussian chain (x a normal init, y a point init driven by x), whose law at every
/// step is exact: means Aⁿ μ₀, covariances Σ ← A Σ Aᵀ + Q. Over 40 seeds each kind's z-scores against the
/// chain's exact value have RMS near 1: a mean, a mean of a product, a variance (delta method), a
/// covariance, a quantile (Woodruff's interval, 400 bins), every bin of a density and of a score, a time
/// average; and the responses of every method.
module Sde.Tests.StdErrSeedRepeatTests

open System
open Expecto
open MathNet.Numerics.Distributions
open Sde
open Sde.Lang

/// The chain's file up to its queries (the same model and settings for every test below).
let private head = """model Linear2 {
  param theta = 1
  state x
  state y
  brownian W
  brownian V
  init x ~ normal(1, 0.5)
  init y = 0
  d x = -theta * x dt + dW
  d y = (x - y) dt + 0.5 * dV
}
simulate { paths = 4000; dt = 0.05; T = 1; seed = SEED; bias = off }
query {
"""

/// The chain's file with `queries`.
let private linear2 (queries: string) = head + queries + "}\n"

let private template =
    linear2 "  mean(x)\n  mean(x * y)\n  variance(x)\n  covariance(x, y)\n  quantile(x, 0.9) on [-4, 4] bins 400\n  density(x) on [-3, 3] bins 12\n  mean(x) over [0.49, 0.99]\n  score(x) on [-3, 3] bins 12\n"

let private dt = 0.05

/// The chain's mean and covariance after n steps: μ ← A μ, Σ ← A Σ Aᵀ + Q, A = [[1 − θ dt, 0], [dt, 1 − dt]],
/// Q = dt diag(1, 0.25), from μ₀ = (1, 0), Σ₀ = diag(0.25, 0).
let private chainAt (theta: float) (n: int) =
    let mutable mx, my = 1.0, 0.0
    let mutable sxx, sxy, syy = 0.25, 0.0, 0.0
    let a = 1.0 - theta * dt
    let b = 1.0 - dt
    for _ in 1..n do
        let mx', my' = a * mx, dt * mx + b * my
        let xx = a * a * sxx + dt
        let xy = a * (dt * sxx + b * sxy)
        let yy = dt * dt * sxx + 2.0 * dt * b * sxy + b * b * syy + 0.25 * dt
        mx <- mx'
        my <- my'
        sxx <- xx
        sxy <- xy
        syy <- yy
    mx, my, sxx, sxy

let private chain = chainAt 1.0

let private exact =
    let mx, my, sxx, sxy = chain 20
    let sd = sqrt sxx
    let window = [ for n in 10..19 -> let m, _, _, _ = chain n in m ] |> List.average
    let bin (k: int) =
        let lo, w = -3.0 + 0.5 * float k, 0.5
        (Normal.CDF(mx, sd, lo + w) - Normal.CDF(mx, sd, lo)) / w
    {| Mean = mx; MeanXY = sxy + mx * my; Var = sxx; Cov = sxy; Q90 = mx + Normal.InvCDF(0.0, 1.0, 0.9) * sd
       Bins = Array.init 12 bin; Window = window |}

let private rms (zs: float seq) = sqrt (Seq.averageBy (fun z -> z * z) zs)

/// The results of `text` for seeds 1..40.
let private runs40 (text: string) =
    [| for seed in 1..40 ->
           match SdeCompiler.Compile(text.Replace("SEED", string seed), "linear2.sde") with
           | Ok p -> (List.head (p.Run(threads = 2, backend = "cpu")).Sets).Results |> List.toArray
           | Error ds -> failtestf "%A" ds |]

/// Result i's z-scores against `want` over the runs: RMS in [0.7, 1.35] (about 3 standard deviations of the
/// RMS of 40 normal z-scores each way).
let private scalarZ (runs: Report.QueryOutcome[][]) (i: int) (name: string) (want: float) =
    let zs = runs |> Array.map (fun r -> (r[i].Value - want) / r[i].StdErr)
    let z = rms zs
    printfn "%s: RMS z %.3f, mean z %+.3f over 40 seeds (exact %g, mean se %g)" name z (Array.average zs) want (runs |> Array.averageBy (fun r -> r[i].StdErr))
    Expect.isGreaterThanOrEqual z 0.7 (sprintf "%s: RMS z >= 0.7" name)
    Expect.isLessThanOrEqual z 1.35 (sprintf "%s: RMS z <= 1.35" name)

[<Tests>]
let tests =
    testList
        "Standard errors"
        [ test "the plain kinds on a 2-D linear Gaussian chain: z-scores against the exact chain over 40 seeds have RMS in [0.7, 1.35] (each density bin's that expects 10 samples, pooled: [0.85, 1.15])" {
              let runs = runs40 template
              let scalar = scalarZ runs
              scalar 0 "mean(x)" exact.Mean
              scalar 1 "mean(x * y)" exact.MeanXY
              scalar 2 "variance(x)" exact.Var
              scalar 3 "covariance(x, y)" exact.Cov
              scalar 4 "quantile(x, 0.9)" exact.Q90
              scalar 6 "mean(x) over [0.49, 0.99]" exact.Window
              // the bins where 4000 paths expect at least 10 samples (a bin that a run leaves empty reads 0 ± 0)
              let used = [| for k in 0..11 do if exact.Bins[k] * 0.5 * 4000.0 >= 10.0 then yield k |]
              let bins = [| for r in runs do for k in used -> (r[5].Values[k] - exact.Bins[k]) / r[5].StdErrs[k] |]
              let z = rms bins
              printfn "density(x), %d of 12 bins: RMS z %.3f over 40 seeds" used.Length z
              Expect.isGreaterThanOrEqual used.Length 8 "most bins are checked"
              // score: the mean of ν_T over the paths in a bin estimates E[∂ log ρ(x) | x in the bin], for the
              // Gaussian marginal −(E[x | bin] − μ) / s² = −(φ(α) − φ(β)) / (s (Φ(β) − Φ(α))), α, β the bin's ends
              // standardised
              let mx, _, sxx, _ = chain 20
              let sd = sqrt sxx
              let scoreBin (k: int) =
                  let a, b = (-3.0 + 0.5 * float k - mx) / sd, (-2.5 + 0.5 * float k - mx) / sd
                  -(Normal.PDF(0.0, 1.0, a) - Normal.PDF(0.0, 1.0, b)) / (sd * (Normal.CDF(0.0, 1.0, b) - Normal.CDF(0.0, 1.0, a)))
              let scores = [| for r in runs do for k in used -> (r[7].Values[k] - scoreBin k) / r[7].StdErrs[k] |]
              let zs = rms scores
              printfn "score(x), %d of 12 bins: RMS z %.3f over 40 seeds" used.Length zs
              Expect.isGreaterThanOrEqual zs 0.85 "score bins: RMS z >= 0.85"
              Expect.isLessThanOrEqual zs 1.15 "score bins: RMS z <= 1.15"
              Expect.isGreaterThanOrEqual z 0.85 "density bins: RMS z >= 0.85"
              Expect.isLessThanOrEqual z 1.15 "density bins: RMS z <= 1.15"
          } ]

let private responses =
    linear2 "  d mean(x) / d theta\n  d mean(x^2) / d theta with pathwise\n  d mean(x * y) / d theta with likelihood_ratio\n  d mean(x^2) / d theta with finite_difference(h = 0.01)\n  d density(x) / d theta on [-3, 3] bins 12\n"

/// d/dθ of a function of the exact chain at θ = 1 (a central difference of the exact recursion, h = 1e-5:
/// error about 1e-10, far below any standard error here), and the finite-difference estimator's own estimand.
let private dTheta (f: float -> float) = (f (1.0 + 1e-5) - f (1.0 - 1e-5)) / 2e-5
let private fd (h: float) (f: float -> float) = (f (1.0 + h) - f (1.0 - h)) / (2.0 * h)

[<Tests>]
let responseTests =
    testList
        "Standard errors"
        [ test "responses on the 2-D linear chain (divergence kernel, pathwise, likelihood ratio, finite difference, a density's bins): z-scores against the exact chain's derivative over 40 seeds have RMS in [0.7, 1.35] (bins pooled: [0.85, 1.15])" {
              let runs = runs40 responses
              let at theta = chainAt theta 20
              let m1 theta = let mx, _, _, _ = at theta in mx
              let m2 theta = let mx, _, sxx, _ = at theta in sxx + mx * mx
              let mxy theta = let mx, my, _, sxy = at theta in sxy + mx * my
              let scalar = scalarZ runs
              scalar 0 "d mean(x) / d theta (divergence kernel)" (dTheta m1)
              scalar 1 "d mean(x^2) / d theta (pathwise)" (dTheta m2)
              scalar 2 "d mean(x * y) / d theta (likelihood ratio)" (dTheta mxy)
              scalar 3 "d mean(x^2) / d theta (finite difference, h = 0.01)" (fd 0.01 m2)
              let bin (k: int) (theta: float) =
                  let mx, _, sxx, _ = at theta
                  let lo = -3.0 + 0.5 * float k
                  (Normal.CDF(mx, sqrt sxx, lo + 0.5) - Normal.CDF(mx, sqrt sxx, lo)) / 0.5
              // the bins where 4000 paths expect at least 10 samples
              let used = [| for k in 0..11 do if bin k 1.0 * 0.5 * 4000.0 >= 10.0 then yield k |]
              let bins = [| for r in runs do for k in used -> (r[4].Values[k] - dTheta (bin k)) / r[4].StdErrs[k] |]
              let z = rms bins
              printfn "d density(x) / d theta, %d of 12 bins: RMS z %.3f over 40 seeds" used.Length z
              Expect.isGreaterThanOrEqual z 0.85 "density bins: RMS z >= 0.85"
              Expect.isLessThanOrEqual z 1.15 "density bins: RMS z <= 1.15"
          } ]
