/// Fitting (issue 11, docs/fitting.md): the fit block's checks, the data's located errors, the DK
/// gradient of the KL objective against central finite differences of the same objective (common
/// random numbers), the OU fit against the closed-form maximum-likelihood values of the chain's
/// Gaussian law, recovery of a nonlinear multiplicative-noise model, Adam, the CLI, and memory that
/// does not grow with the number of steps. Fixed seeds; tolerances 4.5 standard errors, derived below.
module Sde.Tests.FitTests

open System
open System.IO
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.CliTests

/// Box–Muller normals from a seeded System.Random: the test's own random numbers, independent of the engine's.
let normals (seed: int) =
    let rng = Random(seed)

    fun () ->
        let u1 = 1.0 - rng.NextDouble()
        let u2 = rng.NextDouble()
        sqrt (-2.0 * log u1) * cos (2.0 * Math.PI * u2)

/// `n` samples at T of the Euler–Maruyama chain x ← x + f(x) dt + g(x) √dt w, simulated here (not by the engine).
let chainSamples (seed: int) (n: int) (x0: float) (dt: float) (steps: int) (f: float -> float) (g: float -> float) =
    let z = normals seed

    Array.init n (fun _ ->
        let mutable x = x0

        for _ in 1 .. steps do
            x <- x + f x * dt + g x * sqrt dt * z ()

        x)

let writeCsv (dir: string) (name: string) (column: string) (xs: float[]) =
    let lines = Array.append [| column |] (xs |> Array.map (fun x -> x.ToString("R", Globalization.CultureInfo.InvariantCulture)))
    File.WriteAllLines(Path.Combine(dir, name), lines)

let compile (text: string) =
    match SdeCompiler.Compile(text, "fit.sde") with
    | Ok p -> p
    | Error ds -> failwithf "compile errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let compileErrors (text: string) =
    match SdeCompiler.Compile(text, "fit.sde") with
    | Ok _ -> failwith "expected a compile error"
    | Error ds -> ds

let fitOk (p: CompiledProgram) (dir: string) =
    match p.Fit(dataDir = dir) with
    | Ok r -> r
    | Error ds -> failwithf "fit errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let fitErrors (p: CompiledProgram) (dir: string) =
    match p.Fit(dataDir = dir) with
    | Ok _ -> failwith "expected a fit error"
    | Error ds -> ds

let ouModel (theta: float) (sigma: float) (paths: int) (fitBody: string) =
    sprintf
        """model OU {
  param theta = %g in (0, inf)
  param sigma = %g in (0, inf)
  state x
  brownian W
  init x = 1
  d x = -theta * x dt + sigma dW
}
simulate { paths = %d; dt = 0.01; T = 1; seed = 5 }
fit theta, sigma to "data.csv" { %s }
"""
        theta sigma paths fitBody

/// The OU chain's law at step N from x0: mean (1 − θΔt)^N x0, variance σ²Δt Σ_{k<N} (1 − θΔt)^{2k}.
let ouLaw (theta: float) (sigma: float) =
    let dt, n = 0.01, 100
    let a = 1.0 - theta * dt
    a ** float n, sigma * sigma * dt * Seq.sum (Seq.init n (fun k -> a ** float (2 * k)))

/// The maximum-likelihood (θ, σ) of the chain's Gaussian law for data ys: the law's mean and variance
/// equal the data's mean and (1/n) variance, solved in closed form.
let ouMle (ys: float[]) =
    let n = float ys.Length
    let m = Array.average ys
    let v = (ys |> Array.sumBy (fun y -> (y - m) ** 2.0)) / n
    let theta = (1.0 - m ** (1.0 / 100.0)) / 0.01
    let _, unit = ouLaw theta 1.0
    theta, sqrt (v / unit), m, v

/// How far a fit on P paths may land from the MLE: with common random numbers the fitted law matches the data's
/// smoothed mean and variance up to the paths' sampling errors e_m ~ N(0, v/P) and e_v ~ N(0, 2v²/P)
/// (independent for a Gaussian law); by the delta method δθ = e_m / ∂m/∂θ and δσ = (e_v − ∂v/∂θ δθ) / ∂v/∂σ.
/// 4.5 standard deviations of each.
let ouTolerance (theta: float) (sigma: float) (paths: float) =
    let d = 1e-6
    let m, v = ouLaw theta sigma
    let dm = (fst (ouLaw (theta + d) sigma) - fst (ouLaw (theta - d) sigma)) / (2.0 * d)
    let dvt = (snd (ouLaw (theta + d) sigma) - snd (ouLaw (theta - d) sigma)) / (2.0 * d)
    let dvs = 2.0 * v / sigma
    ignore m
    let sdTheta = sqrt (v / paths) / abs dm
    let sdSigma = sqrt (2.0 * v * v / paths + (dvt * sdTheta) ** 2.0) / dvs
    4.5 * sdTheta, 4.5 * sdSigma

/// Runs `f` in a fresh temporary folder, removed afterwards (also by VectorParamTests).
let withTemp (f: string -> unit) =
    let dir = Path.Combine(Path.GetTempPath(), "sde-fit-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore

    try
        f dir
    finally
        try
            Directory.Delete(dir, true)
        with _ ->
            ()

let oneLine (d: SourceDiagnostic) = sprintf "%d:%d %s" d.Line d.Col d.Message

[<Tests>]
let checks =
    testList
        "Fit.Check"
        [ let model = ouModel 1.0 0.5 100

          let err (body: string) (fragment: string) (line: int) =
              let ds = compileErrors (model body)
              let d = List.head ds
              Expect.stringContains d.Message fragment (oneLine d)
              Expect.equal d.Line line (oneLine d)

          test "a fit block parses, checks and prints back to the same tree" {
              let text = model "objective = kl at T; optimizer = adam(lr = 0.1); iterations = 20; bandwidth = 0.05; rate = 5; paths = 50; tolerance = 1e-3"
              let p = compile text
              Expect.isTrue p.HasFit "has a fit"
              let spec = p.FitSpec.Value
              Expect.equal spec.Params [ 0; 1 ] "params in order"
              Expect.equal spec.Optimizer (FitCheck.Adam 0.1) "adam"
              Expect.equal spec.Iterations 20 "iterations"
              Expect.equal spec.Bandwidth (Some 0.05) "bandwidth"
              Expect.equal spec.Paths (Some 50L) "paths"

              match Parser.parseFile text with
              | Ok f ->
                  match Parser.parseFile (Printer.printFile f) with
                  | Ok g -> Expect.equal g f "round trip"
                  | Error d -> failwithf "reparse: %s" d.Message
              | Error d -> failwithf "parse: %s" d.Message
          }

          test "defaults: kl at T, lbfgs, 100 iterations, the rule's bandwidth" {
              let spec = (compile (model "")).FitSpec.Value
              Expect.equal spec.Objective (FitCheck.KlAt None) "kl at T"
              Expect.equal spec.Optimizer FitCheck.Lbfgs "lbfgs"
              Expect.equal spec.Iterations 100 "iterations"
              Expect.isNone spec.Bandwidth "rule"
          }

          test "unknown param, state, duplicate" {
              let ds = compileErrors ((model "").Replace("fit theta, sigma", "fit thta, x, sigma, sigma"))
              let msgs = ds |> List.map (fun d -> d.Message)
              Expect.exists msgs (fun m -> m.Contains "unknown param 'thta'" && m.Contains "theta") "suggests theta"
              Expect.exists msgs (fun m -> m.Contains "'x' is a state, not a param") "state"
              Expect.exists msgs (fun m -> m.Contains "'sigma' is listed twice") "twice"
              Expect.isTrue (ds |> List.forall (fun d -> d.Line = 10)) "located on the fit line"
          }

          test "settings: unknown, duplicate, bad values" {
              err "iteratons = 3" "unknown fit setting 'iteratons'" 10
              err "iterations = 3; iterations = 4" "duplicate setting 'iterations'" 10
              err "iterations = 0" "iterations must be a whole number" 10
              err "iterations = 2.5" "iterations must be a whole number" 10
              err "bandwidth = -1" "bandwidth must be > 0" 10
              err "optimizer = sgd" "unknown optimizer 'sgd'" 10
              err "optimizer = adam(lr = -1)" "lr must be > 0" 10
              err "optimizer = adam(beta = 1)" "unknown argument 'beta'" 10
              err "optimizer = lbfgs(m = 3)" "lbfgs takes no arguments" 10
              err "objective = kl at 2" "after the end of the simulation" 10
              err "objective = kl at 0.015" "not a whole number of steps" 10
          }

          test "objectives not available yet are located errors that say so" {
              err "objective = kl stationary window 5" "longer than the averaged span T - burnin = 1" 10
              err "objective = jacobian_matching(lambda = -1)" "lambda must be >= 0" 10
              err "objective = jacobian_matching(mu = 1)" "unknown argument 'mu'" 10
              err "objective = likelihood" "unknown objective 'likelihood'" 10
          }

          test "a second fit block and a missing file name" {
              let text = model "" + "fit theta to \"other.csv\" { }\n"
              let d = compileErrors text |> List.head
              Expect.stringContains d.Message "a second 'fit' block" (oneLine d)
              let d2 = compileErrors ((model "").Replace("\"data.csv\"", "\"\"")) |> List.head
              Expect.stringContains d2.Message "file name is empty" (oneLine d2)
              let d3 = compileErrors ((model "").Replace("\"data.csv\"", "\"data.csv")) |> List.head
              Expect.equal d3.Line 10 (oneLine d3)
          }

          test "a fit-only file has no 'computes nothing' warning; dsl run still works with a query block" {
              let p = compile (model "")
              Expect.isEmpty p.Warnings "no warning"
          } ]

[<Tests>]
let data =
    testList
        "Fit.Data"
        [ let model = ouModel 1.0 0.5 50 "iterations = 1"

          let dataErr (csv: string option) (fragment: string) =
              withTemp (fun dir ->
                  csv |> Option.iter (fun c -> File.WriteAllText(Path.Combine(dir, "data.csv"), c))
                  let d = fitErrors (compile model) dir |> List.head
                  Expect.stringContains d.Message fragment (oneLine d)
                  // located at the file name in the source: line 10, the opening quote
                  Expect.equal (d.Line, d.Col) (10, 21) (oneLine d)
                  Expect.stringContains d.Rendered "fit.sde:10:21: error:" "rendered")

          test "missing file" { dataErr None "data file 'data.csv' not found" }
          test "empty file" { dataErr (Some "\n\n") "the file is empty" }
          test "unknown column" { dataErr (Some "x,y\n1,2\n3,4\n") "unknown column 'y'" }
          test "empty header cell" { dataErr (Some "x,\n1,2\n3,4\n") "column 2 of the header has no name" }
          test "duplicate column" { dataErr (Some "x,x\n1,2\n3,4\n") "column 'x' appears twice" }
          test "missing cell" { dataErr (Some "x\n1\n2,3\n") "line 3: 2 cells, but the header names 1 column" }
          test "non-numeric cell names line and column" { dataErr (Some "x\n1\n2\nabc\n") "line 4, column 'x': 'abc' is not a number" }
          test "NaN" { dataErr (Some "x\n1\nNaN\n") "line 3, column 'x': 'NaN' is not a finite number" }
          test "infinity" { dataErr (Some "x\n1\n-Infinity\n") "is not a finite number" }
          test "fewer than two rows" { dataErr (Some "x\n1\n") "1 data row; a fit needs at least two" }

          test "comments, blank lines and quoted names are fine; vector components are columns" {
              let text =
                  """model V {
  param a = 1
  state y[2]
  state z
  brownian W[3]
  init y[i] = 0
  d y[i] = -a * y[i] dt + 0.5 dW[i]
  d z = -z dt + 0.5 dW[2]
}
fit a to "d.csv" { }
"""

              let p = compile text

              match Fit.parseData "d.csv" p.Program.File.Model "# a comment\n\"y[1]\", z , y[ 0 ]\n\n1,2,3\r\n4,5,6\n" with
              | Ok fd ->
                  Expect.equal fd.Columns [| "y[1]"; "z"; "y[0]" |] "names"
                  Expect.equal fd.Components [| 1; 2; 0 |] "components"
                  Expect.equal fd.Values [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 |] "values"
              | Error e -> failwith e

              match Fit.parseData "d.csv" p.Program.File.Model "y[0],z\n1,\n2,3\n" with
              | Error e -> Expect.stringContains e "d.csv, line 2, column 'z': the cell is empty" e
              | Ok _ -> failwith "an empty cell is an error"
          }

          test "a start on the bound of the domain is refused" {
              let text = (ouModel 1.0 0.5 50 "").Replace("param sigma = 0.5 in (0, inf)", "param sigma = 0 in [0, inf)")

              withTemp (fun dir ->
                  writeCsv dir "data.csv" "x" [| 0.1; 0.2; 0.3 |]
                  let d = fitErrors (compile text) dir |> List.head
                  Expect.stringContains d.Message "on the bound of its domain" (oneLine d))
          }

          test "Silverman's rule: h = 1.06 s P^(-1/5) in one dimension, and the fit uses the data's sd" {
              // (4/3)^(1/5) = 1.0592 (the rule's constant for q = 1)
              Expect.floatClose Accuracy.high (Core.KlObjective.Silverman(2.0, 1, 10000L)) (2.0 * 1.0592238410488122 * 10000.0 ** -0.2) "q = 1"
              Expect.floatClose Accuracy.high (Core.KlObjective.Silverman(1.0, 2, 100L)) ((4.0 / (4.0 * 100.0)) ** (1.0 / 6.0)) "q = 2"
              let p = compile model

              match Fit.parseData "d" p.Program.File.Model "x\n1\n3\n" with
              | Ok fd ->
                  let h = Fit.bandwidths fd p.FitSpec.Value 50L
                  Expect.floatClose Accuracy.high h[0] (Core.KlObjective.Silverman(sqrt 2.0, 1, 50L)) "sd of 1, 3 is sqrt 2"
              | Error e -> failwith e
          } ]

/// The gradient model: drift and diffusion parameters, multiplicative noise, a point init.
let private gradModel =
    """model G {
  param a = 0.8
  param b = 0.4 in (0, inf)
  state x
  brownian W
  init x = 0.5
  d x = (a - x) dt + b * sqrt(1 + x^2) dW
}
simulate { paths = 3000; dt = 0.02; T = 0.5; seed = 11 }
fit a, b to "data.csv" { iterations = 1 }
"""

/// The DK gradient of a fit's objective against central differences (h = 1e-4) of the same objective with
/// common random numbers (the same paths and jitter), over 16 seeds, for the two params of `gamma` (a drift
/// and a diffusion param): the mean difference is 0 within 4.5 standard errors, and the gradient is resolved
/// (more than 10 of them, else the check could not fail). Prints the figures under `label`.
let gradientAgreesWithDifferences (label: string) (pb: Fit.Problem) (gamma: float[]) =
    let h = 1e-4

    let rows =
        [ for r in 0..15 ->
              let seed = uint64 (100 + r)
              let g = (Fit.evaluate pb gamma seed seed).Gradient

              let fd k =
                  let at s = Array.mapi (fun i v -> if i = k then v + s else v) gamma
                  ((Fit.evaluate pb (at h) seed seed).Loss - (Fit.evaluate pb (at -h) seed seed).Loss) / (2.0 * h)

              g, [| fd 0; fd 1 |] ]

    for k in 0..1 do
        let d = rows |> List.map (fun (g, f) -> g[k] - f[k]) |> List.toArray
        let gs = rows |> List.map (fun (g, _) -> g[k]) |> List.toArray
        let fs = rows |> List.map (fun (_, f) -> f[k]) |> List.toArray
        let mean (xs: float[]) = Array.average xs
        let se (xs: float[]) = sqrt ((xs |> Array.sumBy (fun x -> (x - mean xs) ** 2.0)) / float (xs.Length - 1) / float xs.Length)
        let name = if k = 0 then "a (drift)" else "b (diffusion)"
        let what = sprintf "%s: DK %g ± %g, differences %g ± %g, DK − differences %g ± %g" name (mean gs) (se gs) (mean fs) (se fs) (mean d) (se d)
        printfn "%s %s" label what
        Expect.isLessThan (abs (mean d)) (4.5 * se d) what
        Expect.isGreaterThan (abs (mean gs)) (10.0 * se d) (sprintf "the gradient is resolved: %s" what)

[<Tests>]
let gradient =
    testList
        "Fit.Gradient"
        [ test "the DK gradient of the KL objective agrees with central differences of the same objective (common random numbers)" {
              // Both estimate ∂γ of the expected objective: the DK gradient by the weights ℓ_T, the differences by
              // moving the paths with their noise fixed (same paths, same jitter). Over R independent seeds the
              // mean of their difference must be 0 within 4.5 standard errors; the gradient itself must be far
              // from 0 (else the check could not fail).
              withTemp (fun dir ->
                  // data from the chain at (a, b) = (0.7, 0.35): near the model's law at (0.8, 0.4), where the
                  // kernel estimate has many paths at every data point (in the far tails both estimators carry
                  // a finite-path bias of O(1 / paths within the bandwidth), not the same one: docs/fitting.md)
                  writeCsv dir "data.csv" "x" (chainSamples 3 300 0.5 0.02 25 (fun x -> 0.7 - x) (fun x -> 0.35 * sqrt (1.0 + x * x)))
                  let p = compile gradModel

                  match Fit.problem p.Program.File p.FitSpec.Value { Fit.defaultFitOptions with BaseDir = dir } with
                  | Error e -> failwithf "%A" e.Diagnostics
                  | Ok pb -> gradientAgreesWithDifferences "Fit.Gradient" pb [| 0.8; 0.4 |])
          } ]

[<Tests>]
let fits =
    testList
        "Fit.Fits"
        [ test "OU: the L-BFGS fit reaches the closed-form maximum-likelihood values of the chain's Gaussian law [slow tier]" {
              Tier.requireSlow "an L-BFGS fit to convergence (about 15 s; the quick tier's Fit.Cli fits examples/fit_ou.sde end to end)"
              withTemp (fun dir ->
                  // 2000 samples of the chain at T = 1 (θ = 1, σ = 0.5, x0 = 1, Δt = 0.01), simulated here
                  let ys = chainSamples 42 2000 1.0 0.01 100 (fun x -> -x) (fun _ -> 0.5)
                  writeCsv dir "data.csv" "x" ys
                  // the tolerance is the paths' (ouTolerance): 4000 keep it well inside the test's purpose
                  let paths = 4000
                  let p = compile (ouModel 3.0 1.5 paths "optimizer = lbfgs; iterations = 60")
                  let r = fitOk p dir
                  let theta, sigma, _, _ = ouMle ys
                  let tt, ts = ouTolerance theta sigma (float paths)
                  Expect.isLessThan (abs (r.Fitted[0] - theta)) tt (sprintf "theta %g vs MLE %g (tolerance %g)" r.Fitted[0] theta tt)
                  Expect.isLessThan (abs (r.Fitted[1] - sigma)) ts (sprintf "sigma %g vs MLE %g (tolerance %g)" r.Fitted[1] sigma ts)
                  // the standard errors are the data's: for σ of a Gaussian sample about σ/√(2n) times a factor ≥ 1
                  Expect.isTrue (r.StdErrs |> Array.forall (fun s -> s > 0.0 && s < 0.1)) (sprintf "stderrs %A" r.StdErrs)
                  Expect.isLessThan r.History.[r.History.Length - 1].GradNorm 1.0 "the gradient has come down"
                  // fit.json: fitted by name, history, plots
                  let files = Fit.write (Path.Combine(dir, "out")) r
                  let json = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "out", "fit.json")))
                  Expect.floatClose Accuracy.high (json.["fitted"].["theta"].GetValue<float>()) r.Fitted[0] "fitted.theta"
                  Expect.equal (json.["history"].AsArray().Count) r.History.Length "history"
                  Expect.equal files.Length 4 "json, loss and two param plots"
                  Expect.isTrue (files |> List.forall File.Exists) "written")
          }

          test "OU: Adam on fresh random numbers reaches the same values [slow tier]" {
              Tier.requireSlow "an Adam fit of many evaluations (about 13 s)"
              withTemp (fun dir ->
                  let ys = chainSamples 43 2000 1.0 0.01 100 (fun x -> -x) (fun _ -> 0.5)
                  writeCsv dir "data.csv" "x" ys
                  let paths = 1000
                  let p = compile (ouModel 2.0 1.0 paths "optimizer = adam(lr = 0.05); iterations = 120")
                  let r = fitOk p dir
                  let theta, sigma, _, _ = ouMle ys
                  // the average over the last quarter of the iterates is at least as accurate as one fit on
                  // `paths` paths: the single-fit tolerance is a safe bound
                  let tt, ts = ouTolerance theta sigma (float paths)
                  Expect.isLessThan (abs (r.Fitted[0] - theta)) tt (sprintf "theta %g vs MLE %g (tolerance %g)" r.Fitted[0] theta tt)
                  Expect.isLessThan (abs (r.Fitted[1] - sigma)) ts (sprintf "sigma %g vs MLE %g (tolerance %g)" r.Fitted[1] sigma ts)
                  Expect.equal r.History.Length 120 "one line per iteration")
          }

          test "recovery: a nonlinear multiplicative-noise model from a distant start, without the diffusion collapsing [slow tier]" {
              Tier.requireSlow "a fit of many evaluations (7 s)"
              withTemp (fun dir ->
                  // dx = (a − x³) dt + s √(1 + x²) dW, x0 = 0, Δt = 0.01, T = 1: a = 1, s = 0.3, fitted from (0, 0.9)
                  let a0, s0 = 1.0, 0.3
                  let ys = chainSamples 7 2000 0.0 0.01 100 (fun x -> a0 - x * x * x) (fun x -> s0 * sqrt (1.0 + x * x))
                  writeCsv dir "data.csv" "x" ys
                  let paths = 2000

                  let text =
                      sprintf
                          """model NL {
  param a = 0
  param s = 0.9 in (0, inf)
  state x
  brownian W
  init x = 0
  d x = (a - x^3) dt + s * sqrt(1 + x^2) dW
}
simulate { paths = %d; dt = 0.01; T = 1; seed = 9 }
fit a, s to "data.csv" { optimizer = lbfgs; iterations = 60 }
"""
                          paths

                  let r = fitOk (compile text) dir
                  // the fit's error is the data's sampling error (the reported standard errors, from the data's
                  // scores) plus the paths' (the same size scaled by √(rows/paths)): 4.5 of the combined
                  let k = 4.5 * sqrt (1.0 + 2000.0 / float paths)
                  Expect.isTrue (r.StdErrs |> Array.forall (fun s -> s > 0.0 && s < 0.1)) (sprintf "stderrs %A" r.StdErrs)
                  Expect.isLessThan (abs (r.Fitted[0] - a0)) (k * r.StdErrs[0]) (sprintf "a %g ± %g vs %g" r.Fitted[0] r.StdErrs[0] a0)
                  Expect.isLessThan (abs (r.Fitted[1] - s0)) (k * r.StdErrs[1]) (sprintf "s %g ± %g vs %g" r.Fitted[1] r.StdErrs[1] s0)
                  Expect.isGreaterThan r.Fitted[1] (0.5 * s0) "the diffusion does not collapse")
          } ]

[<Tests>]
let memory =
    testSequenced
    <| testList
        "Fit.Memory"
        [ test "an evaluation's allocations do not grow with the number of steps (T = 1 vs T = 10)" {
              withTemp (fun dir ->
                  writeCsv dir "data.csv" "x" [| 0.1; 0.3; -0.2; 0.5; 0.0 |]

                  let allocated (t: float) =
                      let text = (ouModel 1.0 0.5 500 "").Replace("T = 1;", sprintf "T = %g;" t)
                      let p = compile text

                      match Fit.problem p.Program.File p.FitSpec.Value { Fit.defaultFitOptions with BaseDir = dir; Threads = 1 } with
                      | Error e -> failwithf "%A" e.Diagnostics
                      | Ok pb ->
                          Fit.evaluate pb [| 1.0; 0.5 |] 1UL 1UL |> ignore // warm: JIT, buffers
                          let before = GC.GetTotalAllocatedBytes true
                          Fit.evaluate pb [| 1.0; 0.5 |] 2UL 2UL |> ignore
                          GC.GetTotalAllocatedBytes true - before

                  let a1, a10 = allocated 1.0, allocated 10.0
                  // the adjoint/backpropagation alternative stores the path: 10x the steps would be ~10x the bytes
                  Expect.isLessThan (float a10) (1.5 * float a1 + 262144.0) (sprintf "T = 1: %d bytes, T = 10: %d bytes" a1 a10))
          } ]

[<Tests>]
let cli =
    testList
        "Fit.Cli"
        [ test "dsl fit examples/fit_ou.sde: progress, fitted values, params block, fit.json and plots" {
              withTemp (fun dir ->
                  let o = dsl [ "fit"; "examples/fit_ou.sde"; "--out"; dir; "--paths"; "1000" ]
                  Expect.equal o.Code 0 (describe [ "fit" ] o)
                  Expect.stringContains o.Out "params fitted { theta = " "paste block"
                  Expect.stringContains o.Out "loss" "progress"
                  Expect.isTrue (File.Exists(Path.Combine(dir, "fit.json"))) "fit.json"
                  Expect.isTrue (File.Exists(Path.Combine(dir, "fit_loss.svg"))) "loss plot"
                  Expect.isTrue (File.Exists(Path.Combine(dir, "fit_param_sigma.svg"))) "param plot"
                  let j = dsl [ "fit"; "examples/fit_ou.sde"; "--json"; "--paths"; "500"; "--quiet" ]
                  Expect.equal j.Code 0 (describe [ "fit --json" ] j)
                  let node = Text.Json.Nodes.JsonNode.Parse j.Out
                  Expect.isTrue ((node.["fitted"].["sigma"].GetValue<float>()) > 0.0) "fitted sigma")
          }

          test "dsl fit: bad data is a located error with exit 2; no fit block is exit 2" {
              withTemp (fun dir ->
                  let src = File.ReadAllText(Path.Combine(repoRoot, "examples", "fit_ou.sde"))
                  File.WriteAllText(Path.Combine(dir, "m.sde"), src)
                  File.WriteAllText(Path.Combine(dir, "fit_ou.csv"), "x\n0.1\nhello\n")
                  let o = dsl [ "fit"; Path.Combine(dir, "m.sde") ]
                  Expect.equal o.Code 2 (describe [ "fit" ] o)
                  Expect.stringContains o.Err "m.sde:" "located"
                  Expect.stringContains o.Err "line 3, column 'x': 'hello' is not a number" "message"
                  Expect.isFalse (o.Err.Contains "   at ") "no stack trace"
                  let n = dsl [ "fit"; "examples/ou.sde" ]
                  Expect.equal n.Code 2 (describe [ "fit" ] n)
                  Expect.stringContains n.Err "no 'fit' block" "says why")
          } ]

let private samplesModel (queries: string) =
    sprintf
        """model OU {
  param theta = 1 in (0, inf)
  param sigma = 0.5 in (0, inf)
  state x
  brownian W
  init x = 1
  d x = -theta * x dt + sigma dW
}
simulate { paths = 2000; dt = 0.01; T = 1; seed = 3 }
query {
%s
}
"""
        queries

[<Tests>]
let samples =
    testList
        "Fit.Samples"
        [ test "samples(...) records the same paths as the other queries: its column means are the means' values" {
              let p = compile (samplesModel "  samples(x, x^2)\n  mean(x)\n  mean(x^2)")
              let r = p.Run()
              let res = (List.head r.Sets).Results
              let smp = res[0]
              Expect.equal smp.Kind "samples" "kind"
              Expect.equal smp.Count 2000L "one row per path"
              Expect.equal (Output.samplesColumns smp) [ "x"; "x ^ 2" ] "columns as written (printed)"
              let col c = Array.init 2000 (fun r -> smp.Values[r * 2 + c])
              Expect.floatClose Accuracy.veryHigh (Array.average (col 0)) res[1].Value "mean(x)"
              Expect.floatClose Accuracy.veryHigh (Array.average (col 1)) res[2].Value "mean(x^2)"
              Expect.isTrue (Array.forall2 (fun a b -> a * a = b) (col 0) (col 1)) "x^2 is x squared, row by row"
              let json = Output.toJson r
              Expect.stringContains json "\"file\": \"samples.csv\"" "the only samples file is samples.csv"
              Expect.isFalse ((Output.toCsv r).Contains "samples(") "no estimate rows in the results CSV"
          }

          test "too many values and shards are refused with located errors (samples every Δ: FitTrajectoryTests)" {
              let big = (samplesModel "  samples(x, x, x)").Replace("paths = 2000", "paths = 40000000")
              let d2 = compileErrors big |> List.head
              Expect.stringContains d2.Message "use fewer paths" (oneLine d2)

              withTemp (fun dir ->
                  let f = Path.Combine(dir, "s.sde")
                  File.WriteAllText(f, samplesModel "  samples(x)")
                  let o = dsl [ "run"; f; "--shard"; "0/2"; "--out"; Path.Combine(dir, "sh") ]
                  Expect.equal o.Code 2 (describe [ "run --shard" ] o)
                  Expect.stringContains o.Err "s.sde:11:3: error:" "located"
                  Expect.stringContains o.Err "a shard cannot do yet" "says why")
          }

          test "generate data with samples(x) at one parameter set, fit it from another (the CLI end to end) [slow tier]" {
              Tier.requireSlow "a CLI run and a CLI fit (7 s)"
              withTemp (fun dir ->
                  let gen = Path.Combine(dir, "gen.sde")
                  File.WriteAllText(gen, samplesModel "  samples(x)")
                  let o = dsl [ "run"; gen; "--out"; Path.Combine(dir, "data") ]
                  Expect.equal o.Code 0 (describe [ "run" ] o)
                  let csv = File.ReadAllLines(Path.Combine(dir, "data", "samples.csv"))
                  Expect.equal csv[0] "x" "header: the state's name, as a fit reads it"
                  Expect.equal csv.Length 2001 "a row per path"
                  let ys = csv |> Array.skip 1 |> Array.map (fun l -> Double.Parse(l, Globalization.CultureInfo.InvariantCulture))
                  let fitText = (ouModel 2.5 1.2 4000 "optimizer = lbfgs; iterations = 40").Replace("\"data.csv\"", "\"data/samples.csv\"")
                  let f = Path.Combine(dir, "fit.sde")
                  File.WriteAllText(f, fitText)
                  let j = dsl [ "fit"; f; "--json"; "--quiet" ]
                  Expect.equal j.Code 0 (describe [ "fit" ] j)
                  let node = Text.Json.Nodes.JsonNode.Parse j.Out
                  let theta, sigma, _, _ = ouMle ys
                  let tt, ts = ouTolerance theta sigma 4000.0
                  let ft = node.["fitted"].["theta"].GetValue<float>()
                  let fs = node.["fitted"].["sigma"].GetValue<float>()
                  Expect.isLessThan (abs (ft - theta)) tt (sprintf "theta %g vs MLE %g (tolerance %g)" ft theta tt)
                  Expect.isLessThan (abs (fs - sigma)) ts (sprintf "sigma %g vs MLE %g (tolerance %g)" fs sigma ts))
          } ]

/// E[score | a ≤ x < b] for the Gaussian N(m, v): the score −(x − m)/v at the bin's conditional mean
/// m + √v (φ(α) − φ(β)) / (Φ(β) − Φ(α)) (exact for a linear score).
let private gaussianBinScore (m: float) (v: float) (a: float) (b: float) =
    let s = sqrt v
    let al, be = (a - m) / s, (b - m) / s
    let n = MathNet.Numerics.Distributions.Normal(0.0, 1.0)
    let cm = m + s * (n.Density al - n.Density be) / (n.CumulativeDistribution be - n.CumulativeDistribution al)
    -(cm - m) / v

let private checkScore (text: string) (m: float) (v: float) =
    let r = (compile text).Run()
    let q = (List.head r.Sets).Results |> List.find (fun q -> q.Kind = "score")
    let w = q.Grid[1] - q.Grid[0]
    Expect.isGreaterThan q.Values.Length 4 "bins"

    for b in 0 .. q.Values.Length - 1 do
        let exact = gaussianBinScore m v (q.Grid[b] - w / 2.0) (q.Grid[b] + w / 2.0)
        Expect.isLessThan (abs (q.Values[b] - exact)) (4.5 * q.StdErrs[b]) (sprintf "bin %g: %g ± %g vs exact %g" q.Grid[b] q.Values[b] q.StdErrs[b] exact)

    // the estimate resolves the score's slope (the test could fail)
    Expect.isGreaterThan (abs (q.Values[0] - q.Values[q.Values.Length - 1])) (20.0 * Array.max q.StdErrs) "resolved"

[<Tests>]
let score =
    testList
        "Fit.Score"
        [ test "score(x) of OU: the exact Gaussian score of the chain per bin" {
              // the chain's law at N = 100: N(m, v), m = (1 − θΔt)^N x0, v = σ²Δt Σ (1 − θΔt)^{2k}
              let m, v = ouLaw 1.0 0.5
              checkScore ((samplesModel "  score(x) on [-0.3, 1.0] bins 6").Replace("paths = 2000", "paths = 20000")) m v
          }

          test "score(y) of a 2-D linear chain with correlated noise: the marginal's exact Gaussian score" {
              // z ← A z + √Δt B w: mean A^N z0, covariance C ← A C Aᵀ + Δt B Bᵀ; the marginal of y is N(m_y, C_yy)
              let dt, n = 0.01, 100
              let a = array2D [ [ 1.0 - dt; 0.5 * dt ]; [ 0.0; 1.0 - 0.8 * dt ] ]
              let bm = array2D [ [ 0.4; 0.0 ]; [ 0.2; 0.3 ] ]
              let mutable z = [| 1.0; -0.5 |]
              let mutable c = Array2D.zeroCreate 2 2

              for _ in 1..n do
                  z <- [| a[0, 0] * z[0] + a[0, 1] * z[1]; a[1, 0] * z[0] + a[1, 1] * z[1] |]
                  let ac = Array2D.init 2 2 (fun i j -> a[i, 0] * c[0, j] + a[i, 1] * c[1, j])
                  c <- Array2D.init 2 2 (fun i j -> ac[i, 0] * a[j, 0] + ac[i, 1] * a[j, 1] + dt * (bm[i, 0] * bm[j, 0] + bm[i, 1] * bm[j, 1]))

              let text =
                  """model Chain {
  state x
  state y
  brownian W[2]
  init x = 1
  init y = -0.5
  d x = (-x + 0.5 * y) dt + 0.4 dW[0]
  d y = -0.8 * y dt + 0.2 dW[0] + 0.3 dW[1]
}
simulate { paths = 20000; dt = 0.01; T = 1; seed = 4 }
query {
  score(y) on [-0.6, 0.2] bins 6
}
"""

              checkScore text z[1] c[1, 1]
          }

          test "score: a whole vector, a non-component, an out-of-range index, an ODE are located errors" {
              let vec = "model V {\n  state x[2]\n  brownian W[2]\n  d x[i] = -x[i] dt + dW[i]\n}\nquery {\n  score(%s) on [0, 1] bins 2\n}\n"
              let e1 = compileErrors (vec.Replace("%s", "x")) |> List.head
              Expect.stringContains e1.Message "is a vector state" (oneLine e1)
              let e2 = compileErrors (vec.Replace("%s", "x[0] + 1")) |> List.head
              Expect.stringContains e2.Message "takes a state component" (oneLine e2)
              let e3 = compileErrors (vec.Replace("%s", "x[2]")) |> List.head
              Expect.stringContains e3.Message "outside x[0 .. 1]" (oneLine e3)
              let ode = "model O {\n  state x\n  init x ~ normal(0, 1)\n  d x = -x dt\n}\nquery {\n  score(x) on [0, 1] bins 2\n}\n"
              let e4 = compileErrors ode |> List.head
              Expect.stringContains e4.Message "no score" (oneLine e4)
              Expect.equal (e1.Line, e4.Line) (7, 7) "located at the query"
          } ]

/// Lorenz-63 as a fit file for Jacobian matching: an ODE with params (s, r, b) started at (5, 20, 1).
let private l63 (start: float * float * float) (lambda: float) =
    let s, r, b = start
    sprintf
        """model L63 {
  param s = %g
  param r = %g
  param b = %g
  state x
  state y
  state z
  init x ~ normal(1, 0.5)
  init y ~ normal(1, 0.5)
  init z ~ normal(20, 0.5)
  d x = s * (y - x) dt
  d y = (x * (r - z) - y) dt
  d z = (x * y - b * z) dt
}
simulate { paths = 8; dt = 0.005; T = 60; seed = 5; burnin = 10 }
fit s, r, b to "field.csv" { objective = jacobian_matching(lambda = %g); optimizer = lbfgs; iterations = 200; tolerance = 1e-6 }
query {
  lyapunov(3)
}
"""
        s r b lambda

/// `count` states on the Lorenz-63 attractor (σ, ρ, β) = (10, 28, 8/3) from `start` by RK4 (h = 0.01, every
/// 20th step after 1000), with the exact field and all nine Jacobian entries, written to `path` (also by
/// FitMisspecifiedTests, from another start).
let writeL63FieldFrom (start: float[]) (count: int) (path: string) =
    let f (v: float[]) = [| 10.0 * (v[1] - v[0]); v[0] * (28.0 - v[2]) - v[1]; v[0] * v[1] - 8.0 / 3.0 * v[2] |]
    let add (a: float[]) (b: float[]) (c: float) = Array.map2 (fun x y -> x + c * y) a b
    let mutable v = Array.copy start
    let h = 0.01
    let rows = Collections.Generic.List<string>()
    rows.Add "x,y,z,dx,dy,dz,dx/dx,dx/dy,dx/dz,dy/dx,dy/dy,dy/dz,dz/dx,dz/dy,dz/dz"
    let mutable n = 0

    while rows.Count <= count do
        n <- n + 1
        let k1 = f v
        let k2 = f (add v k1 (h / 2.0))
        let k3 = f (add v k2 (h / 2.0))
        let k4 = f (add v k3 h)
        v <- Array.init 3 (fun i -> v[i] + h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))

        if n > 1000 && n % 20 = 0 then
            let fx = f v
            let x, y, z = v[0], v[1], v[2]
            let cells = [ x; y; z; fx[0]; fx[1]; fx[2]; -10.0; 10.0; 0.0; 28.0 - z; -1.0; -x; y; x; -8.0 / 3.0 ]
            rows.Add(String.Join(",", cells |> List.map (fun c -> c.ToString("R", Globalization.CultureInfo.InvariantCulture))))

    File.WriteAllLines(path, rows)

/// 100 states from (1, 1, 20), with the exact field and Jacobian, as `field.csv` in `dir`.
let private writeL63Field (dir: string) = writeL63FieldFrom [| 1.0; 1.0; 20.0 |] 100 (Path.Combine(dir, "field.csv"))

[<Tests>]
let jacobian =
    testList
        "Fit.Jacobian"
        [ test "jacobian matching: the symbolic gradient equals central differences of the (deterministic) objective" {
              withTemp (fun dir ->
                  writeL63Field dir
                  let p = compile (l63 (5.0, 20.0, 1.0) 1.0)

                  match Fit.problem p.Program.File p.FitSpec.Value { Fit.defaultFitOptions with BaseDir = dir } with
                  | Error e -> failwithf "%A" e.Diagnostics
                  | Ok pb ->
                      let g0 = [| 5.0; 20.0; 1.0 |]
                      let g = (Fit.evaluate pb g0 1UL 1UL).Gradient

                      for k in 0..2 do
                          let h = 1e-4
                          let at s = Array.mapi (fun i v -> if i = k then v + s else v) g0
                          let fd = ((Fit.evaluate pb (at h) 1UL 1UL).Loss - (Fit.evaluate pb (at -h) 1UL 1UL).Loss) / (2.0 * h)
                          // the loss is quadratic in (s, r, b): central differences are exact up to rounding
                          Expect.floatClose { absolute = 1e-6; relative = 1e-7 } g[k] fd (sprintf "param %d" k))
          }

          test "Lorenz-63: matching the field and its Jacobian gives the true (σ, ρ, β) and, through lyapunov(3), the true spectrum" {
              withTemp (fun dir ->
                  writeL63Field dir
                  let p = compile (l63 (5.0, 20.0, 1.0) 1.0)
                  let r = fitOk p dir
                  // exact data, a quadratic loss: L-BFGS reaches the minimum to its tolerance
                  Expect.floatClose { absolute = 1e-6; relative = 1e-6 } r.Fitted[0] 10.0 "sigma"
                  Expect.floatClose { absolute = 1e-6; relative = 1e-6 } r.Fitted[1] 28.0 "rho"
                  Expect.floatClose { absolute = 1e-6; relative = 1e-6 } r.Fitted[2] (8.0 / 3.0) "beta"
                  Expect.isTrue r.Converged r.Stop
                  // the spectrum of the fitted model against the true model's (same paths): within 4.5 standard errors
                  let spectrum (s: float, rr: float, b: float) =
                      let q = (compile (l63 (s, rr, b) 1.0)).Run() |> fun rep -> (List.head rep.Sets).Results |> List.head
                      q.Values, q.StdErrs

                  let fv, fs = spectrum (r.Fitted[0], r.Fitted[1], r.Fitted[2])
                  let tv, ts = spectrum (10.0, 28.0, 8.0 / 3.0)

                  for i in 0..2 do
                      Expect.isLessThanOrEqual (abs (fv[i] - tv[i])) (4.5 * sqrt (fs[i] ** 2.0 + ts[i] ** 2.0)) (sprintf "λ%d: %g vs %g" (i + 1) fv[i] tv[i])

                  // and it is Lorenz-63's: λ1 > 0.5, λ2 near 0, λ3 near −14.6 (the Euler chain at Δt = 0.005 shifts them a little)
                  Expect.isGreaterThan fv[0] 0.5 "chaotic"
                  Expect.isLessThan (abs fv[1]) 0.2 "neutral"
                  Expect.isLessThan (abs (fv[2] + 14.6)) 1.0 "contracting")
          }

          test "jacobian matching data: the whole state is needed, and a field column" {
              withTemp (fun dir ->
                  let p = compile (l63 (5.0, 20.0, 1.0) 1.0)
                  File.WriteAllText(Path.Combine(dir, "field.csv"), "x,y,dx\n1,2,3\n4,5,6\n")
                  let d = fitErrors p dir |> List.head
                  Expect.stringContains d.Message "no column 'z'" (oneLine d)
                  File.WriteAllText(Path.Combine(dir, "field.csv"), "x,y,z\n1,2,3\n4,5,6\n")
                  let d2 = fitErrors p dir |> List.head
                  Expect.stringContains d2.Message "no field column" (oneLine d2)
                  File.WriteAllText(Path.Combine(dir, "field.csv"), "x,y,z,dq\n1,2,3,1\n4,5,6,1\n")
                  let d3 = fitErrors p dir |> List.head
                  Expect.stringContains d3.Message "unknown column 'dq'" (oneLine d3))
          } ]

[<Tests>]
let honesty =
    testList
        "Fit.Honesty"
        [ test "a fit stopped by the iteration limit is reported as not converged, whatever MathNet's exit reason says" {
              withTemp (fun dir ->
                  writeL63Field dir
                  let text = (l63 (5.0, 20.0, 1.0) 1.0).Replace("iterations = 200", "iterations = 1")
                  let r = fitOk (compile text) dir
                  Expect.isFalse r.Converged r.Stop
                  Expect.stringContains r.Stop "not converged" r.Stop
                  Expect.isGreaterThan (abs (r.Fitted[0] - 10.0)) 1e-3 "far from the optimum after one iteration"
                  Expect.stringContains (Fit.summary r []) "stopped after" "the summary says so"
                  Expect.stringContains (Fit.toJson r) "\"converged\": false" "in fit.json")
          } ]

[<Tests>]
let weighted =
    testList
        "Fit.Weighted"
        [ let model =
              """model Wt {
  param a = 1
  state x
  brownian W
  weight w
  init x = 0
  d x = -a * x dt + 0.5 dW
  d log w = -x^2 dt
}
simulate { paths = 100; dt = 0.01; T = 1; seed = 1 }
"""

          test "a weighted model refuses samples and score queries, located" {
              let d = compileErrors (model + "query {\n  samples(x)\n}\n") |> List.head
              Expect.stringContains d.Message "not available yet" (oneLine d)
              Expect.equal d.Line 12 (oneLine d)
              let d2 = compileErrors (model + "query {\n  score(x) on [-1, 1] bins 4\n}\n") |> List.head
              Expect.stringContains d2.Message "not available yet" (oneLine d2)
          }

          test "a weighted model refuses a fit, located at the fit block" {
              withTemp (fun dir ->
                  writeCsv dir "data.csv" "x" [| 0.1; 0.2; -0.3 |]
                  let p = compile (model + "fit a to \"data.csv\" { }\n")
                  let d = fitErrors p dir |> List.head
                  Expect.stringContains d.Message "fitting a weighted model" (oneLine d)
                  Expect.equal d.Line 11 (oneLine d))
          } ]
