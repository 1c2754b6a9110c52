/// `law = marginals` (docs/fitting.md#the-law-compared) and the fit examples: with one column the marginal
/// objective is the joint one (loss, gradient and standard errors alike); with independent columns its fit
/// reaches the pooled maximum-likelihood values and its sandwich standard errors agree with the joint law's
/// Fisher ones; Lorenz-96's forcing and noise are recovered from the example's data; every example with a
/// fit block fits with a few iterations from the command line. Fixed seeds; tolerances derived below.
module Sde.Tests.FitLawTests

open System
open System.IO
open Expecto
open Sde.Lang
open Sde.Tests.CliTests
open Sde.Tests.FitTests

/// Two independent OU components with the same θ and σ (x0 = y0 = 1, Δt = 0.01, T = 1).
let private twoOu (law: string) (paths: int) =
    sprintf
        """model OU2 {
  param theta = 3 in (0, inf)
  param sigma = 1.5 in (0, inf)
  state x
  state y
  brownian W
  brownian V
  init x = 1
  init y = 1
  d x = -theta * x dt + sigma dW
  d y = -theta * y dt + sigma dV
}
simulate { paths = %d; dt = 0.01; T = 1; seed = 5 }
fit theta, sigma to "data.csv" { optimizer = lbfgs; iterations = 60%s }
"""
        paths (if law = "" then "" else "; law = " + law)

[<Tests>]
let marginals =
    testList
        "Fit.Marginals"
        [ test "with one column the marginal objective is the joint one: loss, gradient, fit and standard errors" {
              withTemp (fun dir ->
                  writeCsv dir "data.csv" "x" (chainSamples 44 1000 1.0 0.01 100 (fun x -> -x) (fun _ -> 0.5))
                  let joint = compile (ouModel 2.0 1.0 1000 "iterations = 30")
                  let marg = compile (ouModel 2.0 1.0 1000 "iterations = 30; law = marginals")
                  let opts = { Fit.defaultFitOptions with BaseDir = dir }

                  match Fit.problem joint.Program.File joint.FitSpec.Value opts, Fit.problem marg.Program.File marg.FitSpec.Value opts with
                  | Ok pj, Ok pm ->
                      Expect.sequenceEqual pm.H pj.H "the same bandwidth (Silverman's rule in one dimension)"
                      let rj = Fit.evaluate pj [| 1.3; 0.7 |] 9UL 9UL
                      let rm = Fit.evaluate pm [| 1.3; 0.7 |] 9UL 9UL
                      Expect.floatClose Accuracy.veryHigh rm.Loss rj.Loss "loss"
                      for k in 0..1 do
                          Expect.floatClose Accuracy.veryHigh rm.Gradient[k] rj.Gradient[k] (sprintf "gradient %d" k)
                  | a, b -> failwithf "%A %A" a b

                  let fj, fm = fitOk joint dir, fitOk marg dir
                  for k in 0..1 do
                      Expect.floatClose Accuracy.high fm.Fitted[k] fj.Fitted[k] (sprintf "fitted %d" k)
                      // the sandwich H⁻¹JH⁻¹ with a single marginal is J⁻¹, the Fisher form
                      Expect.floatClose Accuracy.medium fm.StdErrs[k] fj.StdErrs[k] (sprintf "stderr %d" k))
          }

          test "independent columns: the fit reaches the pooled maximum-likelihood values, the sandwich errors the joint law's [slow tier]" {
              Tier.requireSlow "a fit and its sandwich errors (about 15 s)"
              withTemp (fun dir ->
                  let n = 2000
                  let xs = chainSamples 45 n 1.0 0.01 100 (fun x -> -x) (fun _ -> 0.5)
                  let ys = chainSamples 46 n 1.0 0.01 100 (fun x -> -x) (fun _ -> 0.5)
                  let inv = Globalization.CultureInfo.InvariantCulture
                  File.WriteAllLines(Path.Combine(dir, "data.csv"), Array.append [| "x, y" |] (Array.init n (fun i -> xs[i].ToString("R", inv) + ", " + ys[i].ToString("R", inv))))
                  let paths = 2000
                  let r = fitOk (compile (twoOu "marginals" paths)) dir
                  // the composite likelihood of independent columns is the likelihood of the pooled values: its
                  // maximiser is the closed form of the pooled 2n values; the paths' error is at most that of one
                  // marginal's P paths (ouTolerance, 4.5 standard deviations)
                  let theta, sigma, _, _ = ouMle (Array.append xs ys)
                  let tt, ts = ouTolerance theta sigma (float paths)
                  Expect.isLessThan (abs (r.Fitted[0] - theta)) tt (sprintf "theta %g vs pooled MLE %g (tolerance %g)" r.Fitted[0] theta tt)
                  Expect.isLessThan (abs (r.Fitted[1] - sigma)) ts (sprintf "sigma %g vs pooled MLE %g (tolerance %g)" r.Fitted[1] sigma ts)
                  // independent columns: the joint law is the product of the marginals, so the joint fit's Fisher
                  // errors F⁻¹/n estimate the same covariance as the sandwich; both are computed from the same n
                  // rows, and differ by the estimated cross-column terms, O(1/√n) ≈ 2% relative: within 15%
                  let j = fitOk (compile (twoOu "" paths)) dir
                  for k in 0..1 do
                      let ratio = r.StdErrs[k] / j.StdErrs[k]
                      Expect.isTrue (ratio > 0.85 && ratio < 1.15) (sprintf "stderr %d: sandwich %g, joint Fisher %g" k r.StdErrs[k] j.StdErrs[k]))
          }

          test "law: a located error for anything but joint or marginals; the joint law of many columns warns" {
              let ds = compileErrors (ouModel 1.0 0.5 100 "law = product")
              Expect.stringContains (List.head ds).Message "law is 'joint'" (oneLine (List.head ds))
              Expect.equal (List.head ds).Line 10 "at the fit block"
              let ds = compileErrors (ouModel 1.0 0.5 100 "law = 2")
              Expect.stringContains (List.head ds).Message "law is 'joint'" (oneLine (List.head ds))
              let ds = compileErrors (ouModel 1.0 0.5 100 "laws = marginals")
              Expect.stringContains (List.head ds).Message "did you mean 'law'" (oneLine (List.head ds))

              withTemp (fun dir ->
                  let src = File.ReadAllText(Path.Combine(repoRoot, "examples", "fit_lorenz96.sde"))
                  File.WriteAllText(Path.Combine(dir, "joint.sde"), src.Replace("law = marginals", "law = joint"))
                  File.Copy(Path.Combine(repoRoot, "examples", "fit_lorenz96.csv"), Path.Combine(dir, "fit_lorenz96.csv"))
                  let args = [ "fit"; Path.Combine(dir, "joint.sde"); "--iterations"; "1"; "--paths"; "100"; "--json"; "--quiet" ]
                  let o = dsl args
                  Expect.equal o.Code 0 (describe args o)
                  let j = parseJson o
                  let warnings = j["warnings"].AsArray() |> Seq.map (fun w -> w.GetValue<string>()) |> String.concat "\n"
                  Expect.stringContains warnings "'law = marginals'" "the joint law of 20 columns warns")
          } ]

[<Tests>]
let examples =
    testList
        "Fit.Examples"
        [ test "examples/fit_lorenz96.sde: the 20-D ring's F and sigma are recovered from a wrong start [slow tier]" {
              Tier.requireSlow "a 20-D fit of many evaluations (about 25 s)"
              let o = dsl [ "fit"; "examples/fit_lorenz96.sde"; "--json"; "--quiet" ]
              Expect.equal o.Code 0 (describe [ "fit"; "examples/fit_lorenz96.sde" ] o)
              let j = parseJson o
              let fitted (k: string) = num j [ "fitted"; k ]
              let se (k: string) = num j [ "stderr"; k ]
              // the data were made at F = 8, sigma = 0.5 (the file's 'truth' set, another seed). The fit's error is
              // the data's (the reported standard errors) plus the paths' (about √(rows/paths) of it)
              let rows, paths = num j [ "data"; "rows" ], num j [ "settings"; "paths" ]
              let k = 4.5 * sqrt (1.0 + rows / paths)
              Expect.isTrue (j["converged"].GetValue<bool>()) "converged"
              Expect.isLessThan (abs (fitted "F" - 8.0)) (k * se "F") (sprintf "F %g ± %g" (fitted "F") (se "F"))
              Expect.isLessThan (abs (fitted "sigma" - 0.5)) (k * se "sigma") (sprintf "sigma %g ± %g" (fitted "sigma") (se "sigma"))
              Expect.isLessThan (se "sigma") 0.05 "sigma is resolved (the law at T sees the noise)"
          }

          test "every example with a fit block fits from the command line with a few iterations, lowering its loss [slow tier]" {
              Tier.requireSlow "a quick fit of every fit example from the command line (about 17 s)"
              let files =
                  examples ()
                  |> Array.filter (fun f -> Text.RegularExpressions.Regex.IsMatch(File.ReadAllText f, @"(?m)^fit\s"))

              Expect.isGreaterThanOrEqual files.Length 3 "fit_ou, fit_lorenz63_jacobian, fit_lorenz96"

              for f in files do
                  let rel = Path.GetRelativePath(repoRoot, f)
                  // the Lorenz-96 ring's gradient is at its noise floor on 100 paths (the line search may then find
                  // no decrease, which the fit reports as such): 200 paths resolve it
                  let paths = if rel.Contains "lorenz96" then "200" else "100"
                  let args = [ "fit"; rel; "--iterations"; "3"; "--paths"; paths; "--json"; "--quiet" ]
                  let o = dsl args
                  Expect.equal o.Code 0 (describe args o)
                  let j = parseJson o
                  let history = j["history"].AsArray()
                  let first = num history[0] [ "loss" ]
                  // the final loss is evaluated on the same paths as the first (common random numbers, L-BFGS)
                  Expect.isLessThan (j["loss"].GetValue<float>()) first (rel + ": the loss came down")
          }

          test "a trajectory file given to a kl objective says what it is and which objective takes it" {
              withTemp (fun dir ->
                  File.WriteAllText(Path.Combine(dir, "data.csv"), "path,t,x\n0,0,1\n0,0.1,0.9\n1,0,1\n1,0.1,0.8\n")
                  let p = compile (ouModel 1.0 0.5 100 "iterations = 1")
                  let d = List.head (fitErrors p dir)
                  Expect.stringContains d.Message "a column 't': this looks like a trajectory file" (oneLine d)
                  Expect.stringContains d.Message "jacobian_matching" (oneLine d)
                  Expect.equal d.Line 10 "located at the fit line")
          }

          test "dsl fit --iterations: a whole number from 1; it caps the fit's iterations" {
              let bad = dsl [ "fit"; "examples/fit_ou.sde"; "--iterations"; "0" ]
              Expect.equal bad.Code 2 (describe [ "--iterations 0" ] bad)
              Expect.stringContains bad.Err "--iterations" "names the option"
              let o = dsl [ "fit"; "examples/fit_ou.sde"; "--iterations"; "1"; "--paths"; "200"; "--json"; "--quiet" ]
              Expect.equal o.Code 0 (describe [ "--iterations 1" ] o)
              let j = parseJson o
              Expect.isFalse (j["converged"].GetValue<bool>()) "one iteration does not converge"
          } ]
