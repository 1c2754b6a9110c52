/// Fitting to data from the stationary law (`objective = kl stationary window W`, docs/fitting.md): the
/// recorded times, the window's located errors, the DK gradient of the stationary objective against central
/// differences of the same objective (common random numbers), and the OU fit of θ (σ fixed: a stationary law
/// identifies only σ²/θ) against the maximum-likelihood value of the Euler chain's stationary Gaussian law,
/// from data drawn here from that law. Fixed seeds; tolerances 4.5 standard errors, derived below.
module Sde.Tests.FitStationaryTests

open System
open System.IO
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.FitTests

/// Box–Muller normals from a seeded System.Random: the test's own random numbers, independent of the engine's.
let private normals (seed: int) =
    let rng = Random(seed)

    fun () ->
        let u1 = 1.0 - rng.NextDouble()
        let u2 = rng.NextDouble()
        sqrt (-2.0 * log u1) * cos (2.0 * Math.PI * u2)

let private writeCsv (dir: string) (column: string) (xs: float[]) =
    let lines = Array.append [| column |] (xs |> Array.map (fun x -> x.ToString("R", Globalization.CultureInfo.InvariantCulture)))
    File.WriteAllLines(Path.Combine(dir, "data.csv"), lines)

let private compileWith (text: string) (o: Frontend.Overrides option) =
    match o with
    | Some o -> SdeCompiler.Compile(text, "fit.sde", o)
    | None -> SdeCompiler.Compile(text, "fit.sde")

let private compile (text: string) =
    match compileWith text None with
    | Ok p -> p
    | Error ds -> failwithf "compile errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let private compileErrors (text: string) =
    match compileWith text None with
    | Ok _ -> failwith "expected a compile error"
    | Error ds -> ds

let private fitOk (p: CompiledProgram) (dir: string) =
    match p.Fit(dataDir = dir) with
    | Ok r -> r
    | Error ds -> failwithf "fit errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let private oneLine (d: SourceDiagnostic) = sprintf "%d:%d %s" d.Line d.Col d.Message

/// OU with σ a param; the simulate block runs to T = 15 after a burnin of 5 (the chain from x0 = 0 at θ ≥ 1
/// has forgotten its start to a relative variance deficit (1 − θΔt)^{2·500} ≤ 5·10⁻⁵ by then).
let private ouModel (theta: float) (paths: int) (fitLine: string) =
    sprintf
        """model OU {
  param theta = %g in (0, inf)
  param sigma = 0.5 in (0, inf)
  state x
  brownian W
  init x = 0
  d x = -theta * x dt + sigma dW
}
simulate { paths = %d; dt = 0.01; T = 15; seed = 5; burnin = 5 }
%s
"""
        theta paths fitLine

/// The Euler chain x ← (1 − θΔt) x + σ√Δt w: its stationary variance σ²Δt / (1 − (1 − θΔt)²).
let private ouStationaryVar (theta: float) (sigma: float) (dt: float) =
    let a = 1.0 - theta * dt
    sigma * sigma * dt / (1.0 - a * a)

[<Tests>]
let checks =
    testList
        "FitStationary.Check"
        [ let fitLine (body: string) = sprintf "fit theta to \"data.csv\" { %s }" body

          let err (body: string) (fragment: string) (col: int) =
              let ds = compileErrors (ouModel 1.0 100 (fitLine body))
              let d = List.head ds
              Expect.stringContains d.Message fragment (oneLine d)
              Expect.equal (d.Line, d.Col) (10, col) (oneLine d)

          test "the objective parses, checks, and prints back to the same tree" {
              let text = ouModel 1.0 100 (fitLine "objective = kl stationary window 2; times = 7")
              let p = compile text
              Expect.equal p.FitSpec.Value.Objective (FitCheck.KlStationary(2.0, Some 7)) "window and times"
              let q = compile (ouModel 1.0 100 (fitLine "objective = kl stationary window 2"))
              Expect.equal q.FitSpec.Value.Objective (FitCheck.KlStationary(2.0, None)) "default times"

              match Parser.parseFile text with
              | Ok f ->
                  match Parser.parseFile (Printer.printFile f) with
                  | Ok g -> Expect.equal g f "round trip"
                  | Error d -> failwithf "reparse: %s" d.Message
              | Error d -> failwithf "parse: %s" d.Message
          }

          test "a bad window is a located error: not > 0, off the grid (with the nearest window), longer than T - burnin" {
              // the window expression starts at column 60 of the fit line
              err "objective = kl stationary window 0" "the stationary window must be > 0" 60
              err "objective = kl stationary window -1" "the stationary window must be > 0" 60
              err "objective = kl stationary window 0.505" "is not a whole number of steps of dt = 0.01 (window/dt = 50.5); take window 0.5 (50 steps)" 60
              err "objective = kl stationary window 10.5" "longer than the averaged span T - burnin = 10 (T = 15, burnin = 5)" 60
              // exactly T - burnin is allowed
              compile (ouModel 1.0 100 (fitLine "objective = kl stationary window 10")) |> ignore
          }

          test "times: a whole number up to the grid times in [burnin, T], and only with the stationary objective" {
              err "objective = kl stationary window 2; times = 0" "times must be a whole number from 1 to 1001" 71
              err "objective = kl stationary window 2; times = 2.5" "times must be a whole number from 1 to 1001" 71
              err "objective = kl stationary window 2; times = 1002" "times must be a whole number from 1 to 1001" 71
              err "objective = kl at T; times = 3" "'times' (the recorded times per path) belongs to 'objective = kl stationary window W'" 48
              err "objective = likelihood" "available: kl at T, kl stationary window W" 39
          }

          test "a window that --T makes longer than T - burnin is a located error of the fit" {
              withTemp (fun dir ->
                  writeCsv dir "x" [| 0.1; -0.2; 0.3 |]
                  let text = ouModel 1.0 100 (fitLine "objective = kl stationary window 8")
                  let o = { Frontend.noOverrides with T = Some 12.0 }

                  match compileWith text (Some o) with
                  | Error ds -> failwithf "%A" ds
                  | Ok p ->
                      match p.Fit(dataDir = dir) with
                      | Ok _ -> failwith "expected a fit error"
                      | Error ds ->
                          let d = List.head ds
                          Expect.stringContains d.Message "the stationary window 8 is longer than the averaged span T - burnin = 7" (oneLine d)
                          Expect.equal d.Line 10 (oneLine d))
          }

          test "the recorded times: evenly spaced over [burnin, T], ends included; the default one per window, at most 20" {
              let settings = (compile (ouModel 1.0 100 (fitLine "objective = kl stationary window 2"))).Program.File.Settings

              let steps w times =
                  match Fit.stationaryRecording settings w times 100L with
                  | Ok(s, n) -> s, n
                  | Error m -> failwith m

              // [5, 15] with dt = 0.01: steps 500 … 1500; W = 2: 1 + 10/2 = 6 times, 600 samples for the rule
              Expect.equal (steps 2.0 None) ([| 500L; 700L; 900L; 1100L; 1300L; 1500L |], 600.0) "one per window"
              Expect.equal (fst (steps 0.1 None)).Length 20 "at most 20 by default"
              Expect.equal (steps 2.0 (Some 1)) ([| 1500L |], 100.0) "one time: T"
              // more times than windows: the rule counts one sample per window
              let s3, n3 = steps 5.0 (Some 11)
              Expect.equal s3 [| 500L .. 100L .. 1500L |] "eleven times"
              Expect.equal n3 300.0 "1 + 10/5 windows per path"
          } ]

/// The gradient model: drift and diffusion params, multiplicative noise, a point init; mean reversion at rate
/// about 2, so the window 3 covers the decay of the sensitivities (e^{-6}); four recorded times in [1.5, 6].
let private gradModel =
    """model G {
  param a = 0.8
  param b = 0.4 in (0, inf)
  state x
  brownian W
  init x = 0.4
  d x = (a - 2 * x) dt + b * sqrt(1 + x^2) dW
}
simulate { paths = 2000; dt = 0.02; T = 6; seed = 11; burnin = 1.5 }
fit a, b to "data.csv" { objective = kl stationary window 3; times = 4; iterations = 1 }
"""

[<Tests>]
let gradient =
    testList
        "FitStationary.Gradient"
        [ test "the DK gradient of the stationary objective agrees with central differences of the same objective (common random numbers) [slow tier]" {
              Tier.requireSlow "gradients and central differences of a stationary objective (about 20 s)"
              // Both estimate ∂γ of the expected objective, the average over the recorded times of the law's
              // smoothed cross entropy: the DK gradient by the window increments ℓ_n − ℓ_{n−K}, the differences
              // by moving the paths with their noise fixed (same paths, same jitter). The window drops the
              // sensitivity older than W: here the mean's response to a decays as e^{-2t}, a bias of e^{-2W} of the
              // gradient, 0.25% at W = 3 (at W = 1.5 it is 5%, which this check resolves: docs/fitting.md); over R
              // seeds the mean difference must be 0 within 4.5 standard errors, and the gradient must be resolved
              // (else the check could not fail).
              withTemp (fun dir ->
                  // 300 states of the chain at (a, b) = (0.7, 0.35), each after 400 steps (t = 8: stationary), near
                  // the model's law at (0.8, 0.4)
                  let z = normals 3

                  let ys =
                      Array.init 300 (fun _ ->
                          let mutable x = 0.35

                          for _ in 1..400 do
                              x <- x + (0.7 - 2.0 * x) * 0.02 + 0.35 * sqrt (1.0 + x * x) * sqrt 0.02 * z ()

                          x)

                  writeCsv dir "x" ys
                  let p = compile gradModel

                  match Fit.problem p.Program.File p.FitSpec.Value { Fit.defaultFitOptions with BaseDir = dir } with
                  | Error e -> failwithf "%A" e.Diagnostics
                  | Ok pb ->
                      Expect.equal pb.Record.Steps [| 75L; 150L; 225L; 300L |] "recorded steps: four evenly spaced over [1.5, 6]"
                      gradientAgreesWithDifferences "FitStationary.Gradient" pb [| 0.8; 0.4 |])
          } ]

[<Tests>]
let exact =
    testList
        "FitStationary.Exact"
        [ test "one recorded time (T) with the window T and burnin 0 is kl at T exactly: same loss and gradient, bit for bit" {
              // the increment ℓ_N − ℓ_0 is ℓ_N (a point init has ℓ_0 = 0), the recorded state is x_T, and the bandwidth
              // rule counts P samples (min(1, 1 + T/W) times per path): the two objectives are the same computation
              withTemp (fun dir ->
                  writeCsv dir "x" [| 0.1; 0.3; -0.2; 0.5; 0.0; 0.25; -0.4 |]

                  let evaluate (fitLine: string) =
                      let p = compile ((ouModel 1.0 300 fitLine).Replace("burnin = 5", "burnin = 0"))

                      match Fit.problem p.Program.File p.FitSpec.Value { Fit.defaultFitOptions with BaseDir = dir } with
                      | Error e -> failwithf "%A" e.Diagnostics
                      | Ok pb -> Fit.evaluate pb [| 1.3; 0.6 |] 3UL 4UL, pb.H

                  let st, hs = evaluate "fit theta, sigma to \"data.csv\" { objective = kl stationary window 15; times = 1 }"
                  let at, ha = evaluate "fit theta, sigma to \"data.csv\" { objective = kl at T }"
                  Expect.equal hs ha "bandwidth"
                  Expect.equal st.Loss at.Loss "loss"
                  Expect.equal st.Gradient at.Gradient "gradient"
                  Expect.equal st.DatumGradient at.DatumGradient "the data's scores")
          } ]

[<Tests>]
let fits =
    testList
        "FitStationary.Fits"
        [ test "OU: the stationary fit of θ (σ fixed) reaches the maximum-likelihood value of the chain's stationary law [slow tier]" {
              Tier.requireSlow "a stationary fit (about 15 s)"
              withTemp (fun dir ->
                  // 2000 draws of the Euler chain's stationary law N(0, v), v = σ²Δt / (1 − (1 − θΔt)²) at θ = 1,
                  // σ = 0.5, Δt = 0.01, drawn here
                  let dt, sigma = 0.01, 0.5
                  let z = normals 17
                  let ys = Array.init 2000 (fun _ -> sqrt (ouStationaryVar 1.0 sigma dt) * z ())
                  writeCsv dir "x" ys
                  let paths = 500
                  let p = compile (ouModel 3.0 paths "fit theta to \"data.csv\" { objective = kl stationary window 2 }")
                  let r = fitOk p dir
                  // the law's mean is 0 whatever θ: the MLE makes v(θ) the data's mean square
                  let s2 = ys |> Array.averageBy (fun y -> y * y)
                  let a = sqrt (1.0 - sigma * sigma * dt / s2)
                  let thetaMle = (1.0 - a) / dt
                  // The tolerance is the paths': with common random numbers the fitted law's second moment, the
                  // average over the R recorded times n_r of x²_{p, n_r} over the P paths, matches the data's up to
                  // its sampling error, of variance 2v² Σ_{r,s} c²_{rs} / (P R²) with c_{rs} = (1 − θΔt)^{|n_r − n_s|}
                  // the chain's correlation between the recorded times (Cov(x_a², x_b²) = 2 v² c² for a Gaussian
                  // pair); it moves θ by that error / |dv/dθ|. (The mean's error e_m moves v by e_m², of order v/(PR):
                  // negligible; so is the transient, see ouModel.)
                  let steps = p.Program.File.Settings |> fun s -> Fit.stationaryRecording s 2.0 None (int64 paths) |> Result.map fst

                  let steps = match steps with Ok s -> s | Error m -> failwith m

                  let v = ouStationaryVar thetaMle sigma dt
                  let c (i: int64) (j: int64) = (1.0 - thetaMle * dt) ** float (abs (i - j))
                  let rr = float steps.Length
                  let sumC2 = Seq.sum (seq { for i in steps do for j in steps -> c i j ** 2.0 })
                  let sdV = sqrt (2.0 * v * v * sumC2 / (float paths * rr * rr))
                  let e = 1e-6
                  let dvdt = (ouStationaryVar (thetaMle + e) sigma dt - ouStationaryVar (thetaMle - e) sigma dt) / (2.0 * e)
                  let tol = 4.5 * sdV / abs dvdt
                  let what = sprintf "theta %g vs MLE %g (tolerance %g, %d recorded times, %s)" r.Fitted[0] thetaMle tol steps.Length r.Stop
                  printfn "FitStationary.Fits %s; seconds per evaluation %.3f; %s" what r.SecondsPerEvaluation r.Objective
                  Expect.isLessThan (abs (r.Fitted[0] - thetaMle)) tol what
                  Expect.stringStarts r.Objective "kl stationary window 2 (6 times in [5, 15])" "the objective as reported"
                  Expect.isTrue (r.StdErrs[0] > 0.0 && r.StdErrs[0] < 0.2) (sprintf "stderr %g" r.StdErrs[0]))
          } ]

[<Tests>]
let identifiability =
    testList
        "FitStationary.Identifiability"
        [ test "OU: fitting θ and σ together from stationary data is warned as unidentifiable (only σ²/θ is)" {
              withTemp (fun dir ->
                  let z = normals 19
                  writeCsv dir "x" (Array.init 500 (fun _ -> sqrt (ouStationaryVar 1.0 0.5 0.01) * z ()))
                  let p = compile (ouModel 2.0 1000 "fit theta, sigma to \"data.csv\" { objective = kl stationary window 2; iterations = 3 }")
                  let r = fitOk p dir
                  printfn "FitStationary.Identifiability warnings: %A" r.Warnings
                  Expect.exists r.Warnings (fun w -> w.Contains "the data identify 'theta' and 'sigma' only in combination") (sprintf "%A" r.Warnings))
          } ]

[<Tests>]
let memory =
    testSequenced
    <| testList
        "FitStationary.Memory"
        [ test "an evaluation's allocations do not grow with the number of steps (T = 10 vs T = 100, five recorded times)" {
              withTemp (fun dir ->
                  writeCsv dir "x" [| 0.1; 0.3; -0.2; 0.5; 0.0 |]

                  let allocated (t: float) =
                      let text =
                          (ouModel 1.0 500 "fit theta to \"data.csv\" { objective = kl stationary window 1; times = 5 }").Replace("T = 15;", sprintf "T = %g;" t)

                      let p = compile text

                      match Fit.problem p.Program.File p.FitSpec.Value { Fit.defaultFitOptions with BaseDir = dir; Threads = 1 } with
                      | Error e -> failwithf "%A" e.Diagnostics
                      | Ok pb ->
                          Fit.evaluate pb [| 1.0; 0.5 |] 1UL 1UL |> ignore // warm: JIT, buffers
                          let before = GC.GetTotalAllocatedBytes true
                          Fit.evaluate pb [| 1.0; 0.5 |] 2UL 2UL |> ignore
                          GC.GetTotalAllocatedBytes true - before

                  let a10, a100 = allocated 10.0, allocated 100.0
                  // the per-path ring of ℓ is fixed by the window (100 steps), the record by the times (5): storing the
                  // path would be 10x the bytes at 10x the steps
                  Expect.isLessThan (float a100) (1.5 * float a10 + 262144.0) (sprintf "T = 10: %d bytes, T = 100: %d bytes" a10 a100))
          } ]
