/// Stratonovich models (issue 21): `calculus stratonovich` is converted to the Itô model with the same
/// law (drift + ½ Σ_k Σ_j b_jk ∂_j b_ik), and every estimator runs on the converted model. Checked
/// against closed forms of the converted Euler chain (geometric Brownian motion), an independent
/// Heun (Stratonovich) scheme written here, and the printed drift; within 4.5 standard errors, at
/// fixed seeds.
module Sde.Tests.StratonovichTests

open System
open Expecto
open Sde
open Sde.Lang
open Sde.Lang.Checked

open Sde.Tests.LangTests

/// Geometric Brownian motion dX = mu X dt + s X ∘ dW, X0 = 1, read with `calculus` (none: Itô).
let private gbm (calculus: string) (queries: string) =
    sprintf
        "model GBM {\n  param mu = 0.2\n  param s = 0.5\n  state x\n  brownian W\n%s  init x = 1\n  d x = mu * x dt + s * x dW\n}\nsimulate { paths = 20000; dt = 0.01; T = 1; seed = 7 }\nquery {\n%s}\n"
        calculus
        queries

let private mu, s, dt, steps = 0.2, 0.5, 0.01, 100

/// E[X_N] of the Euler chain of the converted model, X_{n+1} = X_n (1 + (mu + s²/2) dt + s √dt ξ_n):
/// (1 + (mu + s²/2) dt)^N exactly.
let private chainMean = (1.0 + (mu + 0.5 * s * s) * dt) ** float steps

/// Its derivatives: ∂/∂mu = N dt (1 + c dt)^(N-1), ∂/∂s = N s dt (1 + c dt)^(N-1).
let private chainSlope = float steps * dt * (1.0 + (mu + 0.5 * s * s) * dt) ** float (steps - 1)

let private gbmTests =
    testList
        "gbm"
        [ test "Stratonovich GBM: the Euler chain's mean is (1 + (mu + s^2/2) dt)^N, not the Itô one" {
              let r = run (gbm "  calculus stratonovich\n" "  mean(x)\n")
              near "E[x_T]" chainMean r[0]
              // the continuous-time closed form X0 exp((mu + s²/2) T) is within the chain's O(dt) of it
              near "E[x_T] (SDE)" (exp (mu + 0.5 * s * s)) r[0]
              // and the Itô reading (1 + mu dt)^N is far outside: the test tells the two apart
              Expect.isGreaterThan (abs (r[0].Value - (1.0 + mu * dt) ** float steps)) (10.0 * r[0].StdErr) "not the Itô mean"
          }

          test "Stratonovich GBM: 'calculus ito' and no calculus item are the Itô chain" {
              for c in [ ""; "  calculus ito\n" ] do
                  let r = run (gbm c "  mean(x)\n")
                  near (sprintf "E[x_T] with '%s'" (c.Trim())) ((1.0 + mu * dt) ** float steps) r[0]
          }

          test "Stratonovich GBM: responses differentiate the converted drift (d/d s sees s^2/2)" {
              // pathwise: the derivative of the converted chain, whose mean has exactly these slopes;
              // the Itô model's mean does not depend on s at all
              let r = run (gbm "  calculus stratonovich\n" "  d mean(x) / d mu with pathwise\n  d mean(x) / d s with pathwise\n  d mean(x) / d s\n")
              near "d E[x_T] / d mu" chainSlope r[0]
              near "d E[x_T] / d s (pathwise)" (s * chainSlope) r[1]
              near "d E[x_T] / d s (divergence kernel)" (s * chainSlope) r[2]
          } ]

/// A 2-D model with non-diagonal, state-dependent noise (both rows on both lanes):
///   dx = -x dt + 0.8 y ∘ dW0 + 0.5 x ∘ dW1
///   dy = (1 - y) dt + 0.8 x ∘ dW0 + 0.6 sin(y) ∘ dW1
let private twoD (dt: float) (paths: int) =
    sprintf
        "model Two {\n  state x\n  state y\n  brownian W[2]\n  calculus stratonovich\n  init x = 1\n  init y = 0.5\n  d x = -x dt + 0.8 * y dW[0] + 0.5 * x dW[1]\n  d y = (1 - y) dt + 0.8 * x dW[0] + 0.6 * sin(y) dW[1]\n}\nsimulate { paths = %d; dt = %g; T = 1; seed = 3 }\nquery {\n  mean(x)\n  mean(y)\n  mean(x * y)\n  mean(x^2)\n}\n"
        paths
        dt

/// The same SDE by the stochastic Heun scheme (which converges to the Stratonovich solution, weak
/// order 1), with its own normals: predictor z̃ = z + f(z) dt + g(z) ΔW, then
/// z' = z + ½ (f(z) + f(z̃)) dt + ½ (g(z) + g(z̃)) ΔW. The means of x, y, x y, x² at T = 1 and their
/// standard errors.
let private heun (dt: float) (paths: int) (seed: int) : (float * float)[] =
    let rng = Random seed
    let normal () =
        // Box–Muller (one of the pair)
        let u1 = 1.0 - rng.NextDouble()
        let u2 = rng.NextDouble()
        sqrt (-2.0 * log u1) * cos (2.0 * Math.PI * u2)

    let steps = int (Math.Round(1.0 / dt))
    let sq = sqrt dt
    let sums = Array.zeroCreate 4
    let sumsSq = Array.zeroCreate 4

    for _ in 1..paths do
        let mutable x = 1.0
        let mutable y = 0.5

        for _ in 1..steps do
            let w0, w1 = sq * normal (), sq * normal ()
            let fx, fy = -x, 1.0 - y
            let gx, gy = 0.8 * y * w0 + 0.5 * x * w1, 0.8 * x * w0 + 0.6 * sin y * w1
            let xp, yp = x + fx * dt + gx, y + fy * dt + gy
            let fxp, fyp = -xp, 1.0 - yp
            let gxp, gyp = 0.8 * yp * w0 + 0.5 * xp * w1, 0.8 * xp * w0 + 0.6 * sin yp * w1
            x <- x + 0.5 * (fx + fxp) * dt + 0.5 * (gx + gxp)
            y <- y + 0.5 * (fy + fyp) * dt + 0.5 * (gy + gyp)

        let v = [| x; y; x * y; x * x |]

        for k in 0..3 do
            sums[k] <- sums[k] + v[k]
            sumsSq[k] <- sumsSq[k] + v[k] * v[k]

    let n = float paths

    Array.init 4 (fun k ->
        let m = sums[k] / n
        m, sqrt ((sumsSq[k] / n - m * m) / (n - 1.0)))

let private heunTests =
    testList
        "heun"
        [ test "Stratonovich 2-D non-diagonal noise: the converted Euler chain agrees with an independent Heun scheme" {
              // Both schemes are weakly first order, so at the same dt their means differ by D(dt) =
              // c dt + O(dt²) beside the statistical error. The difference measured at dt = 0.05
              // bounds c: the bias allowance at dt = 0.005 is |D(0.05)| / 10 plus 4.5 of its standard
              // errors / 10. So the test checks that the difference shrinks with dt as first-order
              // schemes of the same SDE must. The Itô reading of the model fails it (measured: E[x_T]
              // and E[y_T] 0.20 below Heun's, 30 standard errors).
              let names = [| "mean(x)"; "mean(y)"; "mean(x * y)"; "mean(x^2)" |]
              let paths = 20000

              let diff (calculus: string) (dt: float) (seed: int) =
                  let e = run ((twoD dt paths).Replace("calculus stratonovich", calculus))
                  let h = heun dt paths seed
                  Array.init 4 (fun k -> e[k].Value - fst h[k], sqrt (e[k].StdErr ** 2.0 + snd h[k] ** 2.0))

              let coarse = diff "calculus stratonovich" 0.05 11
              let fine = diff "calculus stratonovich" 0.005 12

              for k in 0..3 do
                  let dc, sc = coarse[k]
                  let df, sf = fine[k]
                  let allowance = (abs dc + 4.5 * sc) / 10.0

                  Expect.isLessThan (abs df) (4.5 * sf + allowance)
                      (sprintf "%s at dt = 0.005: engine - Heun = %g, 4.5 se = %g, bias allowance %g (D(0.05) = %g ± %g)" names[k] df (4.5 * sf) allowance dc sc)
          }

          test "Stratonovich 2-D: the converted drift is the hand-derived Itô drift" {
              // ½ Σ_k Σ_j b_jk ∂_j b_ik: for x, 0.8 x · 0.8 + 0.5 x · 0.5 = 0.89 x;
              // for y, 0.8 y · 0.8 + 0.6 sin(y) · 0.6 cos(y)
              let cf = checkedOk (twoD 0.01 10)
              let ir = Lower.lowerModel cf.Model
              let rng = Random 5

              for _ in 1..20 do
                  let x, y = rng.NextDouble() * 4.0 - 2.0, rng.NextDouble() * 4.0 - 2.0
                  let leaf op = match op with Ir.State 0 -> x | Ir.State 1 -> y | _ -> nan
                  let fx = -x + 0.5 * (0.64 * x + 0.25 * x)
                  let fy = (1.0 - y) + 0.5 * (0.64 * y + 0.36 * sin y * cos y)
                  Expect.floatClose Accuracy.veryHigh (Ir.eval leaf ir.Drift[0]) fx (sprintf "x drift at (%g, %g)" x y)
                  Expect.floatClose Accuracy.veryHigh (Ir.eval leaf ir.Drift[1]) fy (sprintf "y drift at (%g, %g)" x y)
          } ]

/// The printed drift read back as an observable and evaluated at (x, mu, s).
let private readBack (text: string) =
    let src = gbm "" (sprintf "  mean(%s)\n" text)
    let cf = checkedOk src

    match cf.Queries.Head.Query with
    | QPlain(TMean e, _) -> Lower.observable cf.Model e
    | q -> failtestf "not a mean: %A" q

let private checkTests =
    testList
        "check"
        [ test "Stratonovich GBM: the printed Itô drift is mu*x + 0.5*s^2*x" {
              let cf = checkedOk (gbm "  calculus stratonovich\n" "  mean(x)\n")
              Expect.equal cf.Model.Calculus Stratonovich "parsed"
              let printed = Lower.itoDrifts 1 cf.Model
              Expect.equal (List.map fst printed) [ "x" ] "one component"
              let drift = readBack (snd printed.Head)
              let rng = Random 3

              for _ in 1..20 do
                  let x, m, sv = rng.NextDouble() * 4.0 - 2.0, rng.NextDouble() - 0.5, rng.NextDouble() * 2.0
                  let leaf op = match op with Ir.State 0 -> x | Ir.Param 0 -> m | Ir.Param 1 -> sv | _ -> nan
                  Expect.floatClose Accuracy.veryHigh (Ir.eval leaf drift) (m * x + 0.5 * sv * sv * x) (sprintf "'%s' at x = %g, mu = %g, s = %g" (snd printed.Head) x m sv)
          }

          test "Stratonovich dsl check --ito prints the converted drift" {
              use tmp = new CliTests.TempDir()
              let f = tmp.File "gbm.sde" (gbm "  calculus stratonovich\n" "  mean(x)\n")
              let o = CliTests.dsl [ "check"; f; "--ito" ]
              Expect.equal o.Code 0 (CliTests.describe [ "check"; f; "--ito" ] o)
              Expect.stringContains o.Out "Itô drift (calculus stratonovich)" "heading"
              let line = o.Out.Split('\n') |> Array.find (fun l -> l.TrimStart().StartsWith "x: ")
              let text = line.Trim().Substring 3
              let drift = readBack text
              let leaf op = match op with Ir.State 0 -> 1.5 | Ir.Param 0 -> 0.2 | Ir.Param 1 -> 0.5 | _ -> nan
              Expect.floatClose Accuracy.veryHigh (Ir.eval leaf drift) ((0.2 + 0.5 * 0.25) * 1.5) (sprintf "printed '%s'" text)
          }

          test "Stratonovich a misspelt calculus is a located error with a suggestion" {
              expectError (gbm "  calculus stratonovic\n" "  mean(x)\n") (6, 12) "unknown calculus 'stratonovic'; did you mean 'stratonovich'?"
              expectError (gbm "  calculus Ito\n" "  mean(x)\n") (6, 12) "did you mean 'ito'?"
          }

          test "Stratonovich 'calculus' without a name says what it expects" {
              expectError (gbm "  calculus\n" "  mean(x)\n") (6, 11) "'ito' or 'stratonovich'"
          }

          test "Stratonovich a second calculus item is a located error" {
              expectError (gbm "  calculus ito\n  calculus stratonovich\n" "  mean(x)\n") (7, 12) "a second 'calculus'"
          }

          test "Stratonovich a weighted model cannot be Stratonovich: a located error says why" {
              let src =
                  "model W {\n  state x\n  brownian B\n  weight w\n  calculus stratonovich\n  d x = -x dt + x dB\n  d log w = -x^2 dt\n}\nquery {\n  mean(x)\n}\n"

              expectError src (5, 12) "not available for a weighted model"
          }

          test "Stratonovich vector equations are unrolled, not looped, and converted per component" {
              // (minimum loop size 1: the Itô model's equation becomes a loop)
              let src = "model Ring {\n  const N = 50\n  state x[N] periodic\n  brownian W[N + 1]\n%s  d x[i] = (x[i+1] - x[i]) dt + 0.3 * x[i-1] dW[i] + 0.2 * x[i] dW[i+1]\n}\nquery {\n  mean(x[0])\n}\n"
              let strat = (checkedOk (sprintf (Printf.StringFormat<string -> string> src) "  calculus stratonovich\n")).Model
              let ito = (checkedOk (sprintf (Printf.StringFormat<string -> string> src) "")).Model
              Expect.isNonEmpty (Loops.lowerModel 1 ito).Loops "the Itô model loops"
              let looped = Loops.lowerModel 1 strat
              Expect.isEmpty looped.Loops "the Stratonovich model does not"
              Expect.equal looped.Drift (Lower.lowerModel strat).Drift "the unrolled, converted drift"
              // row i, lane i: b_i,i = 0.3 x[i-1], and row i-1 has b_i-1,i = 0.2 x[i-1] on that lane
              // (for i > 0; row 49 is on lanes 49 and 50, not 0): ½ 0.2 x[i-1] · 0.3 = 0.03 x[i-1];
              // lane i+1: b_i,i+1 = 0.2 x[i], ∂ by x[i] 0.2: ½ 0.04 x[i]
              let rng = Random 9
              let xs = Array.init 50 (fun _ -> rng.NextDouble() * 2.0 - 1.0)
              let leaf op = match op with Ir.State k -> xs[k] | _ -> nan

              for i in [ 0; 1; 25; 49 ] do
                  let at k = xs[(k + 50) % 50]
                  let expected = at (i + 1) - at i + (if i > 0 then 0.03 * at (i - 1) else 0.0) + 0.02 * at i
                  Expect.floatClose Accuracy.veryHigh (Ir.eval leaf looped.Drift[i]) expected (sprintf "row %d" i)
          }

          test "Stratonovich additive noise: the converted drift is the drift as written" {
              let src = "model OU {\n  param th = 1\n  state x[3]\n  brownian W[3]\n  calculus stratonovich\n  d x[i] = -th * x[i] dt + 0.5 dW[i] + 0.1 * t dW[0]\n}\nquery {\n  mean(x[0])\n}\n"
              let cf = checkedOk src
              let strat = Lower.lowerModel cf.Model
              let ito = Lower.lowerModel { cf.Model with Calculus = Ito }
              Expect.equal strat.Drift ito.Drift "no correction"
          } ]

let private exampleTests =
    testList
        "example"
        [ test "Stratonovich examples/gbm_stratonovich.sde: the comment's closed forms (115.02, 14330, 45.977) hold" {
              let text = IO.File.ReadAllText(IO.Path.Combine(CliTests.repoRoot, "examples", "gbm_stratonovich.sde"))
              let r = run text
              let c, n = 0.05 + 0.5 * 0.2 * 0.2, 200.0
              let m1 = 100.0 * (1.0 + c * 0.01) ** n
              let m2 = 1e4 * ((1.0 + c * 0.01) ** 2.0 + 0.04 * 0.01) ** n
              let slope = 100.0 * n * 0.2 * 0.01 * (1.0 + c * 0.01) ** (n - 1.0)
              Expect.floatClose { absolute = 0.01; relative = 0.0 } m1 115.02 "the comment's E[S_N]"
              Expect.floatClose { absolute = 1.0; relative = 0.0 } m2 14330.0 "the comment's E[S_N^2]"
              Expect.floatClose { absolute = 0.001; relative = 0.0 } slope 45.977 "the comment's slope"
              near "mean(S)" m1 r[0]
              near "mean(S^2)" m2 r[1]
              near "d mean(S) / d sigma" slope r[3]
          } ]

[<Tests>]
let tests = testList "Stratonovich" [ checkTests; gbmTests; heunTests; exampleTests ]
