module Sde.Tests.LyapunovTests

open System
open System.Text.Json
open Expecto
open Sde
open Sde.Lang
open Sde.Lang.Report

let private compileOk (src: string) =
    match SdeCompiler.Compile(src, "test.sde") with
    | Ok p -> p
    | Error ds -> failwithf "unexpected errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let private run threads (src: string) = (compileOk src).Run(threads)

let private result (r: RunReport) (i: int) = r.Sets.Head.Results[i]

/// The first diagnostic of a source that must not compile.
let private firstError (src: string) =
    match SdeCompiler.Compile(src, "test.sde") with
    | Ok _ -> failtest "expected an error"
    | Error [] -> failtest "an empty error list"
    | Error(d :: _) -> d

let private relClose (tol: float) (actual: float) (expected: float) (what: string) =
    let err = abs (actual - expected) / max 1e-300 (abs expected)
    Expect.isTrue (err <= tol) (sprintf "%s: got %.15g, expected %.15g (relative error %.2e > %.0e)" what actual expected err tol)

/// A deterministic linear system dx = A x dt: the Euler map is x ← (I + AΔt) x with a constant
/// Jacobian, so after the frame has converged (burnin ≫ 1 / eigenvalue gap) every step's R diagonal is
/// |eigenvalue of I + AΔt| exactly, and the exponents are log|μ_i| / Δt to rounding.
let private linearSource (a: float[,]) (dt: float) (k: int) =
    let n = Array2D.length1 a
    let names = [| for i in 0 .. n - 1 -> sprintf "x%d" i |]
    let f (v: float) = v.ToString("R", Globalization.CultureInfo.InvariantCulture)

    let eqs =
        [ for i in 0 .. n - 1 ->
              let terms = [ for j in 0 .. n - 1 -> sprintf "(%s) * %s" (f a[i, j]) names[j] ] |> String.concat " + "
              sprintf "  d %s = (%s) dt" names[i] terms ]
        |> String.concat "\n"

    let states = names |> Array.map (sprintf "  state %s") |> String.concat "\n"
    let inits = names |> Array.mapi (fun i s -> sprintf "  init %s = %d" s (i + 1)) |> String.concat "\n"
    sprintf "model Lin {\n%s\n%s\n%s\n}\nsimulate { paths = 2; dt = %s; T = 100; seed = 1; burnin = 60 }\nquery { lyapunov(%d) }\n" states inits eqs (f dt) k

let private expectedLinear (a: float[,]) (dt: float) =
    let n = Array2D.length1 a
    let j = MathNet.Numerics.LinearAlgebra.Matrix<float>.Build.DenseOfArray(Array2D.init n n (fun r c -> (if r = c then 1.0 else 0.0) + dt * a[r, c]))
    let ev = j.Evd().EigenValues

    for z in ev do
        Expect.isTrue (abs z.Imaginary < 1e-14) (sprintf "the test matrix needs real eigenvalues, got %A" z)

    ev |> Seq.map (fun z -> log (abs z.Real) / dt) |> Seq.sortDescending |> Seq.toArray

let private linearCase name (a: float[,]) =
    test name {
        let dt = 0.01
        let n = Array2D.length1 a
        let r = result (run 0 (linearSource a dt n)) 0
        let expected = expectedLinear a dt
        Expect.equal r.Kind "lyapunov" "kind"
        Expect.equal r.Grid [| for c in 1 .. n -> float c |] "grid 1..k"

        for c in 0 .. n - 1 do
            relClose 1e-10 r.Values[c] expected[c] (sprintf "λ%d" (c + 1))

        // k = dim: the exponents' sum equals the time average of log|det J| / Δt
        relClose 1e-10 (Array.sum r.Values) r.Value "sum vs log det"
    }

// Lorenz-63 at Δt = 0.001 (an ODE; random normal initial conditions, so the paths differ).
let private lorenz63 paths =
    sprintf
        """model L63 {
  param s = 10
  param r = 28
  param b = 8 / 3
  state x
  state y
  state z
  init x ~ normal(1, 1)
  init y ~ normal(1, 1)
  init z ~ normal(25, 1)
  d x = s * (y - x) dt
  d y = (x * (r - z) - y) dt
  d z = (x * y - b * z) dt
}
simulate { paths = %d; dt = 0.001; T = 150; seed = 11; burnin = 10 }
query { lyapunov(3) }
"""
        paths

// A noisy nonlinear 2-D model with multiplicative, non-diagonal noise (the noise enters J), its σ
// invertible at every state (det σ ≥ 0.03(1 + x²) − 0.01|x| > 0): an alignment runs the kernel's σ⁺,
// which a σ singular on a line (x = 0) would need at the steps a path comes within 1e-6 of it.
let private noisy k paths extraQuery =
    sprintf
        """model Noisy {
  state x
  state y
  brownian W[2]
  init x ~ normal(0.5, 0.3)
  init y ~ normal(-0.2, 0.3)
  d x = (y - x^3 + 0.5 * x) dt + 0.3 * (1 + 0.5 * sin(y)) dW[0] + 0.1 * x dW[1]
  d y = (-x - 0.5 * y) dt + 0.2 * (1 + x^2) dW[1] + 0.1 dW[0]
}
simulate { paths = %d; dt = 0.01; T = 20; seed = 5; burnin = 5 }
query {
  lyapunov(%d)
%s
}
"""
        paths
        k
        extraQuery

[<Tests>]
let tests =
    testList
        "Lyapunov"
        [ testList
              "linear, constant Jacobian"
              [ linearCase "upper triangular, non-normal" (array2D [ [ 0.5; 4.0; -3.0 ]; [ 0.0; -1.0; 2.0 ]; [ 0.0; 0.0; -2.5 ] ])
                linearCase "full, non-normal" (array2D [ [ -1.0; 5.0; 0.0 ]; [ 0.0; -2.0; 3.0 ]; [ 0.02; 0.0; -4.0 ] ])
                linearCase "2-D, strongly non-normal" (array2D [ [ -1.0; 50.0 ]; [ 0.0; -3.0 ] ]) ]

          test "Lorenz-63 against the literature spectrum, within the Euler map's bias" {
              // Literature (the flow, Sprott): 0.9056, 0, -14.5723. The chain is the Euler map at Δt = 0.001,
              // whose exponents differ from the flow's at first order in Δt: log|1 + λΔt|/Δt = λ − λ²Δt/2 + ...
              // for a local rate λ, and the largest local rate here is |λ3| ≈ 14.6, so the bias is bounded by
              // about Δt·14.6²/2 ≈ 0.11 (measured: +0.015, 0.000, −0.05; the sum's bias, −Δt·E tr(Df²)/2 ≈ −0.035,
              // is the same order). Tolerance: 0.11 plus 4 standard errors across paths.
              let r = result (run 0 (lorenz63 4)) 0
              let lit = [| 0.9056; 0.0; -14.5723 |]

              for c in 0..2 do
                  let tol = 0.11 + 4.0 * r.StdErrs[c]
                  Expect.isTrue (abs (r.Values[c] - lit[c]) <= tol) (sprintf "λ%d = %g ± %g, literature %g (tolerance %g)" (c + 1) r.Values[c] r.StdErrs[c] lit[c] tol)

              // the flow's exponents sum to tr Df = −(s + 1 + b); the chain's to E log|det J|/Δt (exactly, below)
              relClose 1e-9 (Array.sum r.Values) r.Value "sum vs log det"
              Expect.isTrue (abs (r.Value - (-(10.0 + 1.0 + 8.0 / 3.0))) < 0.11) (sprintf "sum %g vs −13.667" r.Value)
          }

          test "k = dim: exponents sum to the time average of log|det J|/Δt (noisy, multiplicative)" {
              let r = result (run 0 (noisy 2 40 "")) 0
              Expect.equal r.Count 40L "paths"
              Expect.isTrue (Double.IsFinite r.Value) "log det reported"
              relClose 1e-9 (Array.sum r.Values) r.Value "sum vs log det"
              Expect.isTrue (r.Values[0] >= r.Values[1]) "ordered"
          }

          test "fewer exponents are the leading ones of the full spectrum; thread count does not matter" {
              let full = result (run 1 (noisy 2 12 "")) 0
              let full2 = result (run 2 (noisy 2 12 "")) 0
              let top = result (run 2 (noisy 1 12 "")) 0
              Expect.equal full2.Values full.Values "bitwise equal across thread counts"
              Expect.equal full2.StdErrs full.StdErrs "stderrs too"
              Expect.equal top.Values[0] full.Values[0] "λ1 alone = λ1 of the full spectrum (same paths, same frame)"
              Expect.isTrue (Double.IsNaN top.Value) "no log det when k < dim"
          }

          test "alignment in one dimension is always 1" {
              let src =
                  """model G {
  state x
  brownian W
  init x ~ normal(1, 0.5)
  d x = (-x + sin(x)) dt + (0.5 + 0.2 * x^2) dW
}
simulate { paths = 300; dt = 0.01; T = 2; seed = 3 }
query { alignment on [0, 1] bins 10 }
"""

              let r = result (run 0 src) 0
              Expect.equal r.Kind "alignment" "kind"
              Expect.equal r.Values[9] 10.0 "all the mass in the last bin (density 1 / width)"
              Expect.equal (Array.sum r.Values[0..8]) 0.0 "nothing elsewhere"
              Expect.equal (r.Below + r.Above) 0L "nothing outside"
          }

          test "alignment histogram is a density on [0, 1]" {
              let r = result (run 0 (noisy 2 200 "  alignment on [0, 1] bins 8")) 1
              let width = 1.0 / 8.0
              Expect.floatClose Accuracy.high (Array.sum r.Values * width) 1.0 "integrates to 1"
              Expect.equal r.Grid.Length 8 "bins"
              Expect.isTrue (r.StdErrs |> Array.forall (fun s -> s >= 0.0 && Double.IsFinite s)) "stderrs"
          }

          test "JSON: lyapunov has grid/values/stderrs, alignment is binned" {
              let r = run 0 (noisy 2 20 "  alignment on [0, 1] bins 5")
              use doc = JsonDocument.Parse(SdeCompiler.ToJson r)
              let sets = doc.RootElement.GetProperty("sets")
              let results = sets[0].GetProperty("results")
              let ly = results[0]
              Expect.equal (ly.GetProperty("kind").GetString()) "lyapunov" "kind"
              Expect.equal (ly.GetProperty("values").GetArrayLength()) 2 "values"
              Expect.equal (ly.GetProperty("stderrs").GetArrayLength()) 2 "stderrs"
              let g = ly.GetProperty("grid")
              Expect.equal (g[1].GetDouble()) 2.0 "grid"
              Expect.isTrue (ly.TryGetProperty("log_det_rate") |> fst) "log det rate with k = dim"
              let al = results[1]
              Expect.equal (al.GetProperty("kind").GetString()) "alignment" "kind"
              Expect.equal (al.GetProperty("grid").GetArrayLength()) 5 "grid"
              Expect.equal (al.GetProperty("values").GetArrayLength()) 5 "values"
              Expect.equal (al.GetProperty("stderrs").GetArrayLength()) 5 "stderrs"
              let table = Output.table r
              Expect.stringContains table "λ1 = " "table row"
              Expect.stringContains table "λ2 = " "table row"
          }

          testList
              "checks"
              [ let model = "model M {\n  state x[3]\n  brownian W\n  d x[i] = -x[i] dt + 0.1 dW\n}\n"
                let ode = "model M {\n  state x[3]\n  d x[i] = -x[i] dt\n}\n"

                for name, src, line, col, msg in
                    [ "k above the dimension", model + "query { lyapunov(4) }\n", 6, 18, "k <= the state dimension 3"
                      "k zero", model + "query { lyapunov(0) }\n", 6, 18, "k >= 1"
                      "k not an integer", model + "query { lyapunov(1.5) }\n", 6, 18, "must be an integer"
                      "alignment range outside [0, 1]", model + "query { alignment on [0, 2] bins 4 }\n", 6, 23, "within [0, 1]"
                      "alignment empty range", model + "query { alignment on [0.5, 0.5] bins 4 }\n", 6, 23, "a < b"
                      "alignment zero bins", model + "query { alignment on [0, 1] bins 0 }\n", 6, 34, "bins must be >= 1"
                      "alignment on an ODE", ode + "query { alignment on [0, 1] bins 4 }\n", 5, 9, "has no score" ] do
                    test name {
                        let d = firstError src
                        Expect.equal (d.Line, d.Col) (line, col) (sprintf "position of %s" d.Rendered)
                        Expect.stringContains d.Message msg d.Rendered
                    }

                test "lyapunov on an ODE compiles; k = dim accepted" {
                    compileOk (ode + "query { lyapunov(3) }\n") |> ignore
                }

                test "print/parse round trip of the new queries" {
                    let src = model + "query {\n  lyapunov(2)\n  alignment on [0, 1] bins 20\n}\n"

                    match Parser.parseFile src with
                    | Ok f ->
                        let printed = Printer.printFile f
                        Expect.stringContains printed "lyapunov(2)" "printed"
                        Expect.stringContains printed "alignment on [0, 1] bins 20" "printed"

                        match Parser.parseFile printed with
                        | Ok f2 -> Expect.equal f2 f "round trip"
                        | Error e -> failtestf "reparse: %A" e
                    | Error e -> failtestf "parse: %A" e
                } ] ]

/// The transient warning (docs/lyapunov.md): on a dense spectrum the frame's transient is within the noise
/// after a short burn-in, where the first form of the bound (divided by the gap) claimed tenfold more.
[<Tests>]
let slowTests =
    testList
        "Slow Lyapunov transient"
        [ test "examples/lorenz96_lyapunov.sde (40 exponents, gaps 0.04 to 0.4): burnin 2 and 40 agree within 4.5 combined se per exponent, RMS z <= 1.5; at its own burnin no warning" {
              Tier.requireSlow "two runs of 40 exponents, 16 paths, T up to 90"
              let rec root (d: IO.DirectoryInfo) = if IO.File.Exists(IO.Path.Combine(d.FullName, "Dsl.sln")) then d.FullName else root d.Parent
              let text = IO.File.ReadAllText(IO.Path.Combine(root (IO.DirectoryInfo AppContext.BaseDirectory), "examples", "lorenz96_lyapunov.sde"))
              let at (burnin: int) (seed: int) =
                  let src = Text.RegularExpressions.Regex.Replace(text, @"simulate \{[^}]*\}", sprintf "simulate { paths = 16; dt = 0.005; T = %d; seed = %d; burnin = %d }" (burnin + 50) seed burnin)
                  result (run 2 src) 0
              let a, b = at 2 11, at 40 12
              let zs = Array.init a.Values.Length (fun c -> (a.Values[c] - b.Values[c]) / sqrt (a.StdErrs[c] ** 2.0 + b.StdErrs[c] ** 2.0))
              let rms = sqrt (Array.averageBy (fun z -> z * z) zs)
              printfn "burnin 2 against 40: RMS z %.2f, largest |z| %.2f; warnings at burnin 2: %A" rms (zs |> Array.map abs |> Array.max) a.Warnings
              for c in 0 .. zs.Length - 1 do
                  Expect.isLessThanOrEqual (abs zs[c]) 4.5 (sprintf "λ%d: %g ± %g at burnin 2, %g ± %g at burnin 40" (c + 1) a.Values[c] a.StdErrs[c] b.Values[c] b.StdErrs[c])
              Expect.isLessThanOrEqual rms 1.5 "RMS z over the exponents"
              let own = result (run 2 text) 0
              Expect.isEmpty (own.Warnings |> List.filter (fun w -> w.Contains "initial frame")) "docs/lyapunov.md: the example runs without the frame's warning"
              // its 4 paths get the few-paths warning instead (Student's t with 3 degrees of freedom)
              Expect.exists own.Warnings (fun w -> w.Contains "± 3.18 standard errors") "the few-paths warning"
          } ]
