/// Statistical tests of the response estimators against closed forms of the simulated (Euler)
/// chain and against finite differences with common random numbers. Fixed seeds; tolerances in
/// standard errors (4.5).
module Sde.Tests.ResponseTests

open System
open Expecto
open MathNet.Numerics.Distributions
open Sde
open Sde.Core
open Sde.Lang

let compileOrFail (src: string) =
    match SdeCompiler.Compile(src, "test.sde") with
    | Ok p -> p
    | Error ds -> failwithf "compile errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let runText (src: string) = (compileOrFail src).Run()

let results (r: Report.RunReport) = r.Sets.Head.Results |> List.toArray

/// Noisy Lorenz-96 with N components (normal init around F), dt = 0.005, seed 2.
let l96SourceN (n: int) (paths: int) (T: float) (queries: string) =
    sprintf
        """model Lorenz96 {
  const N = %d
  param F = 8
  param sigma = 0.5
  state x[N] periodic
  brownian W[N]
  init x[i] ~ normal(8, 1)
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]
}
simulate { paths = %d; dt = 0.005; T = %g; seed = 2 }
query {
%s
}"""
        n paths T queries

let l96Source = l96SourceN 40

let within (k: float) (name: string) (est: float) (se: float) (exact: float) =
    Expect.isTrue (Double.IsFinite est && Double.IsFinite se) (sprintf "%s: finite (%g ± %g)" name est se)
    Expect.isLessThanOrEqual (abs (est - exact)) (k * se) (sprintf "%s: %g ± %g vs exact %g (%.1f se)" name est se exact (abs (est - exact) / se))

/// The OU Euler chain x_{n+1} = a x_n + σ√Δt w, a = 1 − θΔt, x_0 fixed: mean, variance and their derivatives.
type OuChain =
    { Theta: float; Sigma: float; X0: float; Dt: float; N: int }

    member c.A = 1.0 - c.Theta * c.Dt
    member c.Mean = Math.Pow(c.A, float c.N) * c.X0
    member c.S = Seq.sum (seq { for k in 0 .. c.N - 1 -> Math.Pow(c.A, 2.0 * float k) })
    member c.Var = c.Sigma * c.Sigma * c.Dt * c.S
    member c.DMeanDTheta = float c.N * Math.Pow(c.A, float (c.N - 1)) * (-c.Dt) * c.X0
    member c.DSDa = Seq.sum (seq { for k in 1 .. c.N - 1 -> 2.0 * float k * Math.Pow(c.A, 2.0 * float k - 1.0) })
    member c.DVarDTheta = c.Sigma * c.Sigma * c.Dt * c.DSDa * (-c.Dt)
    member c.DVarDSigma = 2.0 * c.Sigma * c.Dt * c.S
    member c.DSecondDTheta = 2.0 * c.Mean * c.DMeanDTheta + c.DVarDTheta
    member c.DSecondDSigma = c.DVarDSigma

    /// ∂/∂γ of the probability of [lo, hi), per unit width (what the density response estimates).
    member c.DBinDensity (lo: float) (hi: float) (dMean: float) (dVar: float) =
        let s = sqrt c.Var
        let ds = dVar / (2.0 * s)
        let dz (b: float) = -dMean / s - (b - c.Mean) * ds / (s * s)
        let pdf b = Normal.PDF(0.0, 1.0, (b - c.Mean) / s)
        (pdf hi * dz hi - pdf lo * dz lo) / (hi - lo)

let ouSource (paths: int) (dt: float) (T: float) (queries: string) =
    sprintf
        """model OU {
  param theta = 1
  param sigma = 0.5
  state x
  brownian W
  init x = 1
  d x = -theta * x dt + sigma dW
}
simulate { paths = %d; dt = %g; T = %g; seed = 7 }
query {
%s
}"""
        paths dt T queries

let ouChain dt T =
    { Theta = 1.0; Sigma = 0.5; X0 = 1.0; Dt = dt; N = int (Math.Round(T / dt)) }

/// Constant α ∈ {1, 0.5, 0.1} and the default schedule, in exact and iterative mode, and the likelihood ratio.
let methods =
    [ for mode in [ "exact"; "iterative" ] do
          for schedule in [ "alpha = 1, "; "alpha = 0.5, "; "alpha = 0.1, "; "" ] do
              yield sprintf "divergence_kernel(%smode = %s)" schedule mode
      yield "likelihood_ratio" ]

[<Tests>]
let tests =
    testList "Response" [
        test "OU: d mean(x^2) in theta and sigma, every schedule and mode, against the chain's closed form" {
            let c = ouChain 0.01 2.0
            Expect.equal methods.Length 9 "4 schedules x 2 modes + likelihood ratio"
            let qs =
                [ for m in methods do
                      sprintf "  d mean(x^2) / d theta with %s" m
                      sprintf "  d mean(x^2) / d sigma with %s" m ]
            let r = results (runText (ouSource 40000 0.01 2.0 (String.concat "\n" qs)))
            r |> Array.iteri (fun i q ->
                let exact = if i % 2 = 0 then c.DSecondDTheta else c.DSecondDSigma
                within 4.5 q.Query q.Value q.StdErr exact)
        }

        test "OU: d density(x) in theta and sigma against the chain's Gaussian, per bin" {
            let c = ouChain 0.01 2.0
            let lo, hi, bins = -1.0, 1.5, 10
            let qs =
                [ for m in methods do
                      sprintf "  d density(x) / d theta on [-1, 1.5] bins 10 with %s" m
                      sprintf "  d density(x) / d sigma on [-1, 1.5] bins 10 with %s" m ]
            let r = results (runText (ouSource 40000 0.01 2.0 (String.concat "\n" qs)))
            let w = (hi - lo) / float bins
            r |> Array.iteri (fun qi q ->
                for b in 0 .. bins - 1 do
                    let a = lo + float b * w
                    let exact =
                        if qi % 2 = 0 then c.DBinDensity a (a + w) c.DMeanDTheta c.DVarDTheta
                        else c.DBinDensity a (a + w) 0.0 c.DVarDSigma
                    within 4.5 (sprintf "%s bin %d" q.Query b) q.Values[b] q.StdErrs[b] exact)
        }

        test "the centred density response integrates to zero when every sample falls in the range" {
            let r = results (runText (ouSource 5000 0.01 2.0 "  d density(x) / d sigma on [-6, 6] bins 24\n  d density(x) / d theta on [-6, 6] bins 24 with likelihood_ratio"))
            for q in r do
                Expect.equal (q.Below + q.Above) 0L "all samples inside"
                let w = 12.0 / 24.0
                let total = q.Values |> Array.sumBy (fun v -> v * w)
                Expect.isLessThan (abs total) 1e-12 (sprintf "%s: integral %g" q.Query total)
                Expect.isGreaterThan (q.Values |> Array.map abs |> Array.max) 0.1 "not all zero"
        }

        test "OU: iterative mode equals exact mode on the same paths (1e-9)" {
            let qs = "  d mean(x^2) / d sigma with divergence_kernel(alpha = 0.3, mode = exact)\n  d mean(x^2) / d sigma with divergence_kernel(alpha = 0.3, mode = iterative)"
            let r = results (runText (ouSource 2000 0.01 1.0 qs))
            Expect.floatClose { absolute = 1e-12; relative = 1e-9 } r[1].Value r[0].Value "iterative = exact"
        }

        test "the response engine allocates nothing per step (every mode, the lanes of the sparse LU)" {
            let queries =
                String.concat
                    "\n"
                    // an explicit rate: the default's pathwise control is carried or not depending on the
                    // horizon (λ_tan·T), which would change the setup between the two runs; it has its own check below
                    [ "  d mean(x[0]) / d F with divergence_kernel(rate = 26)"
                      "  d density(x[0]) / d sigma on [-5, 15] bins 4 with divergence_kernel(mode = iterative)"
                      "  d mean(x[0]) / d F with divergence_kernel(mode = exact)"
                      "  d mean(x[0]) / d F with divergence_kernel(mode = first_order)"
                      "  d mean(x[0]) / d F with pathwise"
                      "  d mean(x[0]) / d F with likelihood_ratio"
                      "  d mean(x[1]) / d F stationary window 0.02" ]
            let src (steps: int) (paths: int) = l96SourceN 8 paths (float steps * 0.005) queries
            let bytes steps paths =
                let p = compileOrFail (src steps paths)
                p.Run(threads = 1) |> ignore // compile and JIT
                // the least of three runs: a run's one-off allocations (a cache filled, a JIT
                // compilation on this thread) varied by 11 kB under a parallel suite's load
                [ for _ in 1..3 ->
                      let before = GC.GetAllocatedBytesForCurrentThread()
                      p.Run(threads = 1) |> ignore
                      GC.GetAllocatedBytesForCurrentThread() - before ]
                |> List.min
            let a10, a1000 = bytes 10 10, bytes 1000 10
            // one normal's worth (8 bytes) per step and path would be 80 kB here
            Expect.isLessThan (abs (a1000 - a10)) 8192L (sprintf "10 steps: %d B, 1000 steps: %d B" a10 a1000)
            // the default with its pathwise control variate (OU: carried at both horizons)
            let ou steps =
                let p = compileOrFail (ouSource 10 0.01 (float steps * 0.01) "  d mean(x^2) / d sigma\n  d mean(x^2) / d theta")
                p.Run(threads = 1) |> ignore
                let before = GC.GetAllocatedBytesForCurrentThread()
                let r = p.Run(threads = 1)
                let used = GC.GetAllocatedBytesForCurrentThread() - before
                let first = (results r)[0]
                Expect.equal first.Control (Some "pathwise") "the control is carried"
                used
            let o10, o1000 = ou 10, ou 1000
            Expect.isLessThan (abs (o1000 - o10)) 8192L (sprintf "with the control: 10 steps: %d B, 1000 steps: %d B" o10 o1000)
        }

        test "sparse LU, four and eight lanes: emitted and interpreted kernels give the same bits, and J⁻¹ at the pattern and J⁻ᵀc as dense algebra" {
            // Lorenz-96's pattern (row i: i-2, i-1, i, i+1, periodic) and its transpose, d = 12
            let d = 12
            let rows = [| for i in 0 .. d - 1 do for _ in 0 .. 3 -> i |]
            let cols = [| for i in 0 .. d - 1 do for o in [ -2; -1; 0; 1 ] -> (i + o + d) % d |]
            let plan = SparseLuPlan(d, rows, cols)
            let selJ, selI = cols, rows // J⁻¹_ji at J's pattern, transposed
            let rng = Random(11)
            let lanes = Array.init 8 (fun _ -> Array.init rows.Length (fun e -> (if rows[e] = cols[e] then 1.0 else 0.0) + 0.2 * (rng.NextDouble() - 0.5)))
            let nus = Array.init 8 (fun _ -> Array.init d (fun _ -> rng.NextDouble() - 0.5))
            // narrow: four lanes (the AVX2 width) even where AVX-512 runs (emitted: eight there; interpreted: four);
            // a batch takes lanes 0 .. L − 1 of the eight
            let run (narrow: bool) (emit: bool) =
                let saved = Normals.ForceNarrow
                Normals.ForceNarrow <- narrow
                let b = try SparseLuBatch(plan, rows, cols, 1, selJ, selI, emit) finally Normals.ForceNarrow <- saved
                let L = b.Lanes
                for l in 0 .. L - 1 do
                    b.StageJ(l, lanes[l])
                    b.StageH(l, [| 0.0 |])
                b.Load()
                let ok = b.Factor()
                b.SelectedInverse()
                let all = Array.init selJ.Length id
                let sel = Array.init L (fun l -> let s = Array.zeroCreate selJ.Length in b.Selected(l, all, s); s)
                b.Rhs(nus[0 .. L - 1], Array.zeroCreate (d + 1), [||], [||]) // no Hessian terms: c = ν
                b.SolveTransposed()
                let u = Array.init L (fun l -> let s = Array.zeroCreate d in b.StoreSolution(l, s); s)
                L, ok, sel, u
            let results = [ for narrow in [ true; false ] do for emit in [ true; false ] -> run narrow emit ]
            let L4, _, _, _ = results[0]
            Expect.equal L4 4 "ForceNarrow: four lanes"
            let _, _, selRef, uRef = results[0]
            for (L, ok, sel, u) in results do
                Expect.equal ok ((1 <<< L) - 1) (sprintf "every lane factored (%d lanes)" L)
                // every lane has the same bits whatever the width and whether the phases are emitted or interpreted
                Expect.equal sel[0..3] selRef "selected inverse: same bits"
                Expect.equal u[0..3] uRef "transposed solve: same bits"
            let _, _, selE, uE = results[2] // emitted, at the widest width here
            for l in 0 .. selE.Length - 1 do
                let jm = MathNet.Numerics.LinearAlgebra.Matrix<float>.Build.Dense(d, d)
                for e in 0 .. rows.Length - 1 do jm[rows[e], cols[e]] <- jm[rows[e], cols[e]] + lanes[l][e]
                let inv = jm.Inverse()
                for q in 0 .. selJ.Length - 1 do
                    Expect.floatClose { absolute = 1e-13; relative = 1e-12 } (selE[l][q]) (inv[selJ[q], selI[q]]) (sprintf "lane %d pair %d" l q)
                let u = inv.Transpose() * MathNet.Numerics.LinearAlgebra.Vector<float>.Build.DenseOfArray nus[l]
                for i in 0 .. d - 1 do
                    Expect.floatClose { absolute = 1e-13; relative = 1e-12 } (uE[l][i]) (u[i]) (sprintf "lane %d: (J⁻ᵀν)_%d" l i)
        }

        test "default schedule: stderr for a diffusion parameter does not grow as dt shrinks; constant alpha 0.5's does [slow tier]" {
            Tier.requireSlow "responses at three steps (about 9 s)"
            let se dt m =
                let r = results (runText (ouSource 10000 dt 2.0 (sprintf "  d mean(x^2) / d sigma with %s" m)))
                r[0].StdErr
            let d1, d2 = se 0.01 "divergence_kernel(mode = exact)", se 0.001 "divergence_kernel(mode = exact)"
            let a1, a2 = se 0.01 "divergence_kernel(alpha = 0.5, mode = exact)", se 0.001 "divergence_kernel(alpha = 0.5, mode = exact)"
            Expect.isLessThan (d2 / d1) 1.4 (sprintf "default schedule: se %g at dt 0.01, %g at dt 0.001" d1 d2)
            Expect.isGreaterThan (a2 / a1) 2.0 (sprintf "alpha 0.5: se %g at dt 0.01, %g at dt 0.001 (expected ~sqrt 10)" a1 a2)
        }

        test "stationary OU: d mean(x^2)/d theta stationary against the chain's stationary variance" {
            // v∞ = σ²Δt / (1 − a²) = σ² / (θ (2 − θΔt))
            let th, s, dt = 1.0, 0.5, 0.01
            let dv = -s * s * (2.0 - 2.0 * th * dt) / Math.Pow(th * (2.0 - th * dt), 2.0)
            let src =
                (ouSource 4000 dt 30.0 "  d mean(x^2) / d theta stationary window 4\n  d mean(x^2) / d theta stationary window 4 with finite_difference(h = 0.01)")
                    .Replace("seed = 7", "seed = 7; burnin = 10")
            let r = results (runText src)
            within 4.5 "DK stationary" r[0].Value r[0].StdErr dv
            within 4.5 "FD stationary" r[1].Value r[1].StdErr dv
        }
    ]

let agree (k: float) (name: string) (a: Report.QueryOutcome) (b: Report.QueryOutcome) =
    let se = sqrt (a.StdErr * a.StdErr + b.StdErr * b.StdErr)
    Expect.isTrue (Double.IsFinite a.Value && Double.IsFinite b.Value) (sprintf "%s: finite" name)
    Expect.isLessThanOrEqual (abs (a.Value - b.Value)) (k * se)
        (sprintf "%s: %s = %g ± %g vs %s = %g ± %g (%.1f se)" name a.Query a.Value a.StdErr b.Query b.Value b.StdErr (abs (a.Value - b.Value) / se))

let nonlinear1d =
    """model Nonlinear1D {
  param a = 0.5
  param s = 0.6
  state x
  brownian W
  init x ~ normal(0.2, 0.3)
  d x = (a - x^3 + sin(x)) dt + s * sqrt(1 + x^2) dW
}
simulate { paths = 40000; dt = 0.01; T = 1.5; seed = 21 }
query {
  d mean(x^2) / d a
  d mean(x^2) / d a with finite_difference(h = 0.002)
  d mean(x^2) / d s
  d mean(x^2) / d s with finite_difference(h = 0.002)
  d mean(x^2) / d s with divergence_kernel(mode = first_order)
}"""

let nonlinear2d =
    """model Coupled2D {
  param a = 0.8
  param s = 0.4
  state x
  state y
  brownian W[2]
  init x = 0.5
  init y = -0.3
  d x = (-x + a * y - 0.2 * x^3) dt + s * (1 + 0.3 * y^2) dW[0] + 0.2 * x dW[1]
  d y = (-a * x - y) dt + 0.3 * sin(x) dW[0] + s * (1 + 0.1 * x^2) dW[1]
}
simulate { paths = 40000; dt = 0.01; T = 1; seed = 5 }
query {
  d mean(y + x * y + x^2) / d a
  d mean(y + x * y + x^2) / d a with finite_difference(h = 0.002)
  d mean(y + x * y + x^2) / d s
  d mean(y + x * y + x^2) / d s with finite_difference(h = 0.002)
}"""

[<Tests>]
let agreementTests =
    testList "Response agreement" [
        test "1-D nonlinear drift, multiplicative noise: DK = finite differences (drift and diffusion parameter)" {
            let r = results (runText nonlinear1d)
            agree 4.5 "drift parameter" r[0] r[1]
            agree 4.5 "diffusion parameter" r[2] r[3]
        }

        test "2-D non-diagonal multiplicative noise: DK = finite differences (drift and diffusion parameter)" {
            let r = results (runText nonlinear2d)
            agree 4.5 "drift parameter" r[0] r[1]
            agree 4.5 "diffusion parameter" r[2] r[3]
        }

        test "Stein identity for the score covector: E[nu sin(x)] = -E[cos(x)] and E[nu x^2] = -E[2x]" {
            let src = nonlinear1d.Replace("d mean(x^2) / d a\n", "mean(sin(x))\n  mean(cos(x))\n  mean(x^2)\n  mean(2 * x)\n")
            match Frontend.compileText "stein.sde" src with
            | Error ds -> failwithf "%A" ds
            | Ok cf ->
                match Driver.prepare "stein.sde" cf with
                | Error ds -> failwithf "%A" ds
                | Ok p ->
                    let runner = ModelRunner.For p.Compiled.Type
                    let s = RunSettings(Paths = 40000L, Dt = 0.01, T = 1.5, Seed = 3UL)
                    let model = p.Compiled.Instance [| 0.5; 0.6 |]
                    let plans =
                        [| for mode in [ DkMode.Exact; DkMode.FirstOrder ] do
                               for obs in [ 0; 2 ] ->
                                   ResponsePlan(Kind = EstimateKind.Mean, Observable = obs, Method = ResponseMethod.DivergenceKernel, Rate = 10.0, Mode = mode, ScoreComponent = 0) |]
                    let score = runner.RunResponses(model, [||], p.Compiled.Structure, s, plans)
                    let plain =
                        runner.Run(model, s, [| QueryPlan(Kind = EstimateKind.Mean, Observable = 1); QueryPlan(Kind = EstimateKind.Mean, Observable = 3) |])
                    // exact mode: unbiased for the chain
                    within 4.5 "E[nu sin x] + E[cos x]" (score[0].Value + plain[0].Value) (score[0].StdErr + plain[0].StdErr) 0.0
                    within 4.5 "E[nu x^2] + E[2x]" (score[1].Value + plain[1].Value) (score[1].StdErr + plain[1].StdErr) 0.0
        }
    ]

/// A double well with additive noise: first_order drops the O(Δt²) terms of each step's series,
/// so its bias relative to the chain is O(Δt).
let firstOrderSource (dt: float) =
    sprintf
        """model DoubleWell {
  param a = 1
  param s = 0.7
  state x
  brownian W
  init x ~ normal(0.2, 0.3)
  d x = (a * x - x^3) dt + s dW
}
simulate { paths = 20000; dt = %g; T = 2; seed = 4 }
query {
  d mean(x^2) / d a with divergence_kernel(mode = exact)
  d mean(x^2) / d a with divergence_kernel(mode = first_order)
}"""
        dt

[<Tests>]
let chaosTests =
    testList "Response chaos" [
        test "Lorenz-96: iterative mode (Jacobians factored four paths at a time) equals exact mode, alone and next to other methods" {
            // 10 paths: two full lane sets and one with two idle lanes; sigma brings the noise terms in
            let dk mode = sprintf "  d mean(x[0]^2) / d sigma with divergence_kernel(alpha = 0.3, mode = %s)\n  d density(x[1]) / d F on [-5, 15] bins 8 with divergence_kernel(alpha = 0.3, mode = %s)" mode mode
            let run extra mode = results (runText (l96Source 10 1.0 (dk mode + extra)))
            let exact = run "" "exact"
            let alone = run "" "iterative"                                  // the model writes J into the lane set
            let mixed = run "\n  d mean(x[0]) / d F with pathwise" "iterative" // J copied in (pathwise reads it too)
            for r in [ alone; mixed ] do
                Expect.floatClose { absolute = 1e-12; relative = 1e-9 } r[0].Value exact[0].Value "mean: iterative = exact"
                for b in 0 .. 7 do
                    Expect.floatClose { absolute = 1e-12; relative = 1e-9 } r[1].Values[b] exact[1].Values[b] (sprintf "density bin %d" b)
            Expect.isGreaterThan (abs exact[0].Value) 1e-6 "a non-trivial response"
            // which paths share a lane set depends on the thread count; the numbers must not
            let p = compileOrFail (l96Source 10 1.0 (dk "iterative"))
            let bits (r: Report.RunReport) = results r |> Array.map (fun q -> q.Value :: q.StdErr :: List.ofArray q.Values)
            Expect.equal (bits (p.Run(threads = 3))) (bits (p.Run(threads = 1))) "1 and 3 threads: the same bits"
        }

        test "noisy Lorenz-96 (40-D) at T = 5: DK agrees with finite differences where pathwise has lost all accuracy" {
            let r =
                results (runText (l96Source 1000 5.0 "  d mean(avg(i, x[i])) / d F\n  d mean(avg(i, x[i])) / d F with finite_difference(h = 0.01)\n  d mean(avg(i, x[i])) / d F with pathwise"))
            Expect.stringContains (Option.get r[0].Method) "iterative" "the default mode above d = 10"
            agree 4.5 "DK vs FD" r[0] r[1]
            Expect.isGreaterThan (r[2].StdErr / r[0].StdErr) 100.0
                (sprintf "pathwise stderr %g should dwarf DK's %g (chaos: e^{lambda T})" r[2].StdErr r[0].StdErr)
        }

        test "first_order: its difference from exact halves when dt halves" {
            let diff dt =
                let r = results (runText (firstOrderSource dt))
                abs (r[1].Value - r[0].Value)
            let d1, d2 = diff 0.01, diff 0.005
            let ratio = d1 / d2
            Expect.isTrue (ratio > 1.5 && ratio < 2.6) (sprintf "bias %g at dt 0.01, %g at dt 0.005: ratio %g (expected ~2)" d1 d2 ratio)
        }
    ]
