/// Language conveniences (issue 13): named observables (`let`), variance/covariance, 2-D densities,
/// Unicode names. Statistical checks compare with closed forms of the Euler chain, within 4.5
/// standard errors, at fixed seeds.
module Sde.Tests.LangTests

open System
open Expecto
open Sde.Lang
open Sde.Lang.Checked
open Sde

let compile (src: string) = Frontend.compileText "test.sde" src

let checkedOk (src: string) =
    match compile src with
    | Ok cf -> cf
    | Error ds -> failwithf "unexpected errors:\n%s" (ds |> List.map Diagnostics.short |> String.concat "\n")

/// The first diagnostic is at (line, col), its message contains `msg`, and it is formatted
/// `test.sde:LINE:COL: error: ...` (also used by StratonovichTests).
let expectError (src: string) (line: int, col: int) (msg: string) =
    match compile src with
    | Ok _ -> failtestf "expected an error containing '%s'" msg
    | Error [] -> failtest "an empty error list"
    | Error(d :: _ as ds) ->
        let all = ds |> List.map Diagnostics.short |> String.concat "\n"
        Expect.equal (d.Pos.Line, d.Pos.Col) (line, col) (sprintf "position; got\n%s" all)
        Expect.stringContains d.Message msg (sprintf "message; got\n%s" all)
        Expect.stringStarts (Diagnostics.format "test.sde" src d) (sprintf "test.sde:%d:%d: error: " line col) "format"

let run (src: string) =
    match SdeCompiler.Compile(src, "test.sde") with
    | Ok p -> p.Run(threads = 2).Sets.Head.Results
    | Error ds -> failtestf "unexpected diagnostics: %A" (ds |> List.map string)

let near (what: string) (expected: float) (q: Report.QueryOutcome) =
    Expect.isTrue (Double.IsFinite q.StdErr && q.StdErr > 0.0) (sprintf "%s: a standard error (%g)" what q.StdErr)
    Expect.isLessThan (abs (q.Value - expected)) (4.5 * q.StdErr) (sprintf "%s: %g ± %g vs %g" what q.Value q.StdErr expected)

/// Two independent OU coordinates from 0: x_{n+1} = a x_n + σ√dt ξ, a = 1 − θ dt.
let private ou2 (queries: string) =
    sprintf
        "model OU2 {\n  param theta = 1\n  param sigma = 0.5\n  state x\n  state y\n  brownian W\n  brownian V\n  init x = 0\n  init y = 0\n  d x = -theta * x dt + sigma dW\n  d y = -theta * y dt + sigma dV\n}\nsimulate { paths = 20000; dt = 0.01; T = 2; seed = 11 }\nquery {\n%s}\n"
        queries

/// Var x_n of the Euler chain from 0 (θ = 1, σ = 0.5, dt = 0.01).
let private varAt (n: int) =
    let a = 1.0 - 0.01
    0.25 * 0.01 * (1.0 - a ** (2.0 * float n)) / (1.0 - a * a)

let private letTests =
    testList
        "let"
        [ test "a let stands for its body" {
              let a = checkedOk (ou2 "  let r2 = x^2 + y^2\n  let r4 = r2^2\n  mean(r4)\n  d mean(r2) / d sigma\n")
              let b = checkedOk (ou2 "  mean((x^2 + y^2)^2)\n  d mean(x^2 + y^2) / d sigma\n")
              Expect.equal (a.Queries |> List.map (fun q -> q.Query)) (b.Queries |> List.map (fun q -> q.Query)) "same checked queries"
              Expect.equal (a.Queries |> List.map (fun q -> q.Text)) [ "mean(r4)"; "d mean(r2) / d sigma" ] "texts as written"
          }
          test "a let may hold a reduction and t" {
              let src = "model M {\n  state x[3]\n  brownian W[3]\n  d x[i] = -x[i] dt + dW[i]\n}\nquery {\n  let s = sum(i, x[i]^2) + t\n  mean(s)\n}\n"
              match (checkedOk src).Queries with
              | [ { Query = QPlain(TMean(Add(SumOver("i", 3, _), Time)), None) } ] -> ()
              | other -> failtestf "%A" other
          }
          test "located errors: shadowing, duplicates, reserved, unknown, differentials" {
              expectError (ou2 "  let x = 1\n  mean(x)\n") (15, 3) "let 'x' shadows the state 'x'"
              expectError (ou2 "  let sigma = 1\n  mean(x)\n") (15, 3) "shadows the param 'sigma'"
              expectError (ou2 "  let r = x\n  let r = y\n  mean(r)\n") (16, 3) "duplicate let 'r' (first at 15:3)"
              expectError (ou2 "  let t = x\n  mean(x)\n") (15, 3) "'t' is a reserved name"
              expectError (ou2 "  let exp = x\n  mean(x)\n") (15, 3) "reserved"
              expectError (ou2 "  let dW = x\n  mean(x)\n") (15, 3) "shadows the differential 'dW'"
              expectError (ou2 "  let r = x dt\n  mean(r)\n") (15, 13) "observables must not contain 'dt'"
              expectError (ou2 "  let r = x + dW\n  mean(r)\n") (15, 15) "observables must not contain 'dW'"
              expectError (ou2 "  mean(r)\n  let r = x\n") (15, 8) "unknown name 'r'"
              expectError (ou2 "  let r = x + q\n  mean(r)\n") (15, 15) "unknown name 'q'"
              expectError (ou2 "  let r = x\n  mean(r[0])\n") (16, 8) "the let 'r' is not a vector"
          }
          test "a let body with an error is reported once, not again at its uses" {
              match compile (ou2 "  let r = x + q\n  mean(r)\n  mean(r^2)\n") with
              | Error ds -> Expect.equal ds.Length 1 (sprintf "%A" ds)
              | Ok _ -> failtest "expected an error"
          }
          test "lets in the model: in equations, inits and queries, in order" {
              let src =
                  (ou2 "  mean(r2)\n  let half = r2 / 2\n  mean(half)\n")
                      .Replace("  state x\n", "  let k = theta * 1\n  state x\n")
                      .Replace("  init x = 0\n", "  let r2 = x^2 + y^2\n  let s = sigma * 1\n  init x = s * 0\n")
                      .Replace("-theta * x dt + sigma dW", "-k * x dt + s dW")
              let a = checkedOk src
              let b = checkedOk (ou2 "  mean(x^2 + y^2)\n  mean((x^2 + y^2) / 2)\n")
              Expect.equal (a.Queries |> List.map (fun q -> q.Query)) (b.Queries |> List.map (fun q -> q.Query)) "the queries see the model's lets"
              Expect.equal (a.Model.Equations[0].Drift) (Mul(Neg(Mul(Param 0, Const 1.0)), StateRef(0, IConst 0))) "the equation sees k"
              let res = run src
              near "mean(r2) with model lets" (2.0 * varAt 200) res[0]
          }
          test "lets in the model: located errors" {
              let m body = sprintf "model M {\n  param F = 1\n  state x\n  brownian W\n%s\n  d x = -x dt + dW\n}\n" body
              expectError (m "  let a = b\n  let b = 1") (5, 11) "unknown name 'b'"
              expectError (m "  let a = 1\n  let a = 2") (6, 7) "duplicate declaration of 'a' (first declared as a let at 5:7)"
              expectError (m "  let F = 2") (5, 7) "duplicate declaration of 'F'"
              expectError (m "  let r = x^2\n  init x = r") (6, 12) "an init cannot use let 'r': it depends on the state"
              expectError (m "  let r = x dt") (5, 13) "must not contain 'dt'"
              expectError (m "  let r = x\n  let s = r[0]") (6, 11) "the let 'r' is not a vector"
              expectError (m "  let r = x\n  d r = dt") (6, 3) "'r' is a let, not a state"
              expectError (m "  let r = x\n" + "query {\n  let r = 2\n  mean(r)\n}\n") (10, 3) "duplicate let 'r' (first at 5:7)"
          }
          test "parse and print round trip of a let" {
              let src = ou2 "  let r2 = x^2 + y^2\n  mean(r2)\n"
              match Parser.parseFile src with
              | Ok f ->
                  let printed = Printer.printFile f
                  Expect.stringContains printed "let r2 = (x ^ 2) + (y ^ 2)" "printed"
                  Expect.equal (Parser.parseFile printed |> Result.map id) (Ok f) "round trip"
              | Error d -> failtestf "%A" d
          }
          test "lets in means, densities, windows and responses agree with the Euler chain" {
              let res =
                  run (ou2 "  let r2 = x^2 + y^2\n  let half = r2 / 2\n  mean(r2)\n  mean(half) over [1, 2]\n  density(r2) on [0, 0.25] bins 1\n  d mean(r2) / d sigma\n")

              let n = 200
              // E r2 = 2 Var x_N; time average over the grid steps 100..200
              near "mean(r2)" (2.0 * varAt n) res[0]
              near "mean(half) over [1, 2]" (([ 100..200 ] |> List.averageBy varAt)) res[1]
              // r2 / (2 Var) is chi-square with 2 degrees of freedom: P(r2 < c) = 1 − exp(−c / (2 Var))
              let p = 1.0 - exp (-0.25 / (2.0 * varAt n))
              let d = res[2]
              Expect.isLessThan (abs (d.Values[0] * 0.25 - p)) (4.5 * d.StdErrs[0] * 0.25) (sprintf "density bin %g vs %g" (d.Values[0] * 0.25) p)
              // E r2 ∝ σ²: d E r2 / d σ = 2 E r2 / σ
              near "d mean(r2) / d sigma" (2.0 * 2.0 * varAt n / 0.5) res[3]
          } ]

/// x as in `ou2`; y driven by 0.6 dW + 0.8 dV, so Cov(x_N, y_N) = 0.6 Var x_N.
let private ouCorr (queries: string) =
    (ou2 queries).Replace("sigma dV", "0.6 * sigma dW + 0.8 * sigma dV")

/// Φ, by erfc (Numerical Recipes' Chebyshev fit, relative error below 1.2e-7).
let private phi (z: float) =
    let x = abs z / sqrt 2.0
    let t = 1.0 / (1.0 + 0.5 * x)
    let erfc =
        t * exp (-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807
                 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    if z >= 0.0 then 1.0 - 0.5 * erfc else 0.5 * erfc

let private momentTests =
    testList
        "variance, covariance, quantile, 2-D density"
        [ test "against the Euler chain's Gaussian law at T" {
              let res =
                  run (ouCorr "  variance(x)\n  variance(x + 3)\n  covariance(x, y)\n  covariance(2 * x, y - 1)\n  quantile(x, 0.9) on [-2, 2] bins 4000\n  quantile(y, 0.25) on [-2, 2] bins 4000\n")

              let v = varAt 200
              Expect.equal (res |> List.map (fun q -> q.Kind)) [ "variance"; "variance"; "covariance"; "covariance"; "quantile"; "quantile" ] "kinds"
              near "variance(x)" v res[0]
              // a shift changes neither the estimate nor (beyond rounding) its standard error
              Expect.floatClose Accuracy.medium res[1].Value res[0].Value "variance(x + 3) = variance(x)"
              Expect.floatClose Accuracy.low res[1].StdErr res[0].StdErr "the same standard error"
              near "covariance(x, y)" (0.6 * v) res[2]
              near "covariance(2x, y - 1)" (1.2 * v) res[3]
              near "quantile(x, 0.9)" (1.2815515655446004 * sqrt v) res[4]
              near "quantile(y, 0.25)" (-0.6744897501960817 * sqrt v) res[5]
              // the delta-method standard errors against their Gaussian values: Var s² = 2σ⁴/(n − 1);
              // Var c = (σ_xσ_y)² (1 + ρ²)/n; the quantile's √(p(1−p)/n)/f(q)
              let n = 20000.0
              Expect.floatClose { absolute = 0.0; relative = 0.06 } res[0].StdErr (v * sqrt (2.0 / (n - 1.0))) "se of the variance"
              Expect.floatClose { absolute = 0.0; relative = 0.06 } res[2].StdErr (v * sqrt ((1.0 + 0.36) / n)) "se of the covariance"
              let f = exp (-0.5 * 1.2815515655446004 ** 2.0) / sqrt (2.0 * Math.PI * v)
              Expect.floatClose { absolute = 0.0; relative = 0.35 } res[4].StdErr (sqrt (0.09 / n) / f) "se of the quantile"
          }
          test "2-D density: every cell against the product of the marginals" {
              let res = run (ou2 "  density(x, y) on [-1, 1] x [-0.5, 1] bins 4 x 3\n")
              let d = res[0]
              Expect.equal d.Kind "density2d" "kind"
              Expect.equal d.Grid [| -0.75; -0.25; 0.25; 0.75 |] "grid_x"
              Expect.equal d.GridY [| -0.25; 0.25; 0.75 |] "grid_y"
              Expect.equal d.Values.Length 12 "values"
              let s = sqrt (varAt 200)
              let p a b = phi (b / s) - phi (a / s)
              for iy in 0..2 do
                  for ix in 0..3 do
                      let x0 = -1.0 + 0.5 * float ix
                      let y0 = -0.5 + 0.5 * float iy
                      let expected = p x0 (x0 + 0.5) * p y0 (y0 + 0.5) / 0.25
                      let k = iy * 4 + ix
                      Expect.isLessThan (abs (d.Values[k] - expected)) (4.5 * d.StdErrs[k]) (sprintf "cell (%d, %d): %g ± %g vs %g" ix iy d.Values[k] d.StdErrs[k] expected)
              let inside = 1.0 - (p -1.0 1.0 * p -0.5 1.0)
              let outside = float d.Below / 20000.0
              Expect.isLessThan (abs (outside - inside)) (4.5 * sqrt (inside * (1.0 - inside) / 20000.0)) "outside share"
              let json = Output.toJson { Model = "m"; Source = "s"; Settings = { Paths = 1L; Dt = 0.1; T = 1.0; Seed = 1UL; Scheme = "e"; Backend = "cpu" }
                                         Sets = [ { Name = "default"; Params = []; Results = res; Failure = None } ]; Seconds = 1.0; PathStepsPerSecond = 1.0; Warnings = [] }
              for field in [ "\"kind\": \"density2d\""; "\"grid_x\""; "\"grid_y\""; "\"values\""; "\"stderrs\""; "\"outside\"" ] do
                  Expect.stringContains json field field
          }
          test "2-D density: a heat-map SVG with --out" {
              let res = run (ou2 "  density(x, y) on [-1, 1] x [-0.5, 1] bins 8 x 5\n")
              let dir = IO.Path.Combine(IO.Path.GetTempPath(), sprintf "sde-heat-%d" (Diagnostics.Process.GetCurrentProcess().Id))
              let path = IO.Path.Combine(dir, Plot.fileName "default" 0 res[0])
              Plot.writeHeatMap path res[0] "OU2" "default"
              let svg = IO.File.ReadAllText path
              Expect.stringEnds path "default_q0_density2d_x_y.svg" "file name"
              let rects = Text.RegularExpressions.Regex.Matches(svg, "<rect").Count
              Expect.isGreaterThanOrEqual rects 40 "one rectangle per cell (and the colour bar)"
              for label in [ ">x<"; ">y<"; ">density<" ] do
                  Expect.stringContains svg label label
              IO.Directory.Delete(dir, true)
          }
          test "the same bits on 1 and 2 threads" {
              match SdeCompiler.Compile(ouCorr "  variance(x)\n  covariance(x, y)\n  quantile(x, 0.5) on [-2, 2] bins 100\n  density(x, y) on [-1, 1] x [-1, 1] bins 3 x 3\n", "t.sde") with
              | Ok p ->
                  let o = { Frontend.noOverrides with Paths = Some 2000L }
                  let p = SdeCompiler.Compile(ouCorr "  variance(x)\n  covariance(x, y)\n  quantile(x, 0.5) on [-2, 2] bins 100\n  density(x, y) on [-1, 1] x [-1, 1] bins 3 x 3\n", "t.sde", o) |> function Ok p -> p | Error _ -> p
                  Expect.equal (p.Run(threads = 1).Sets) (p.Run(threads = 2).Sets) "same results"
              | Error ds -> failtestf "%A" ds
          }
          test "shards merge to the unsplit run, bit for bit" {
              let text = ouCorr "  let r = x + y\n  variance(r)\n  covariance(x, y)\n  quantile(x, 0.3) on [-2, 2] bins 50\n  density(x, y) on [-1, 1] x [-1, 1] bins 3 x 2\n  density(x, r) on [-1, 1] x [-1, 1] bins 2 x 2 over [1, 2]\n"
              let o = { Frontend.noOverrides with Paths = Some 301L }
              let p = match SdeCompiler.Compile(text, "m.sde", o) with Ok p -> p | Error ds -> failtestf "%A" ds
              let dir = IO.Path.Combine(IO.Path.GetTempPath(), sprintf "sde-lang-shards-%s" (Guid.NewGuid().ToString("N").Substring(0, 8)))
              IO.Directory.CreateDirectory dir |> ignore
              for k in 0..2 do
                  let h = Shards.headerOf p.Program "m.sde" text o { K = k; N = 3 }
                  Shards.runShard p.Program h { Driver.defaultOptions with Threads = 2 } dir false |> ignore
              let noTiming (r: Report.RunReport) = Output.toJson { r with Seconds = 0.0; PathStepsPerSecond = 0.0 }
              let files = IO.Directory.GetFiles(dir, "*.partial") |> Array.sort |> Array.toList
              match Shards.merge files with
              | Ok (_, merged, _) -> Expect.equal (noTiming merged) (noTiming (p.Run(threads = 1))) "merged = unsplit"
              | Error m -> failtestf "merge refused: %s" m
              IO.Directory.Delete(dir, true)
          }
          test "the ILGPU kernels (on the CPU accelerator) agree with the CPU engine" {
              let text = ouCorr "  variance(x)\n  covariance(x, y)\n  quantile(x, 0.3) on [-2, 2] bins 50\n  density(x, y) on [-1, 1] x [-1, 1] bins 3 x 2\n"
              let p = match SdeCompiler.Compile(text, "m.sde", { Frontend.noOverrides with Paths = Some 1000L }) with Ok p -> p | Error ds -> failtestf "%A" ds
              let cpu = p.Run(threads = 1, backend = "cpu").Sets.Head.Results
              let gpu = p.Run(threads = 1, backend = "ilgpu-cpu").Sets.Head.Results
              for (a, b) in List.zip cpu gpu do
                  Expect.floatClose { absolute = 1e-14; relative = 1e-12 } b.Value a.Value a.Query
                  Expect.floatClose { absolute = 1e-14; relative = 1e-9 } b.StdErr a.StdErr a.Query
                  Expect.equal b.Values a.Values a.Query
          }
          test "located errors: windows, responses, probabilities, shapes" {
              expectError (ou2 "  variance(x) over [1, 2]\n") (15, 21) "variance over a window is not available yet"
              expectError (ou2 "  covariance(x, y) over [1, 2]\n") (15, 26) "covariance over a window is not available yet"
              expectError (ou2 "  quantile(x, 0.5) on [-1, 1] bins 10 over [1, 2]\n") (15, 45) "quantile over a window"
              expectError (ou2 "  d variance(x) / d sigma\n") (15, 3) "d Var = d E[e^2] - 2 E[e] d E[e]"
              expectError (ou2 "  d covariance(x, y) / d sigma\n") (15, 3) "not available yet"
              expectError (ou2 "  d quantile(x, 0.5) / d sigma on [-1, 1] bins 10\n") (15, 3) "d density(e) / d p"
              expectError (ou2 "  d density(x, y) / d sigma on [-1, 1] x [-1, 1] bins 2 x 2\n") (15, 3) "2-D density is not available yet"
              expectError (ou2 "  quantile(x, 1.5) on [-1, 1] bins 10\n") (15, 15) "0 < p < 1"
              expectError (ou2 "  quantile(x, 0.5) on [1, -1] bins 10\n") (15, 24) "a < b"
              expectError (ou2 "  density(x, y) on [-1, 1] bins 10\n") (15, 10) "needs two ranges and two bin counts"
              expectError (ou2 "  density(x) on [-1, 1] x [0, 1] bins 10 x 2\n") (15, 10) "one range and one bin count"
              expectError (ou2 "  density(x, y) on [-1, 1] x [0, 1] bins 10 x 0\n") (15, 47) "bins must be >= 1"
          }
          test "parse and print round trip" {
              let src = ou2 "  variance(x)\n  covariance(x, y)\n  quantile(x, 0.5) on [-1, 1] bins 10\n  density(x, y) on [-1, 1] x [0, 1] bins 10 x 2 over [1, 2]\n  d variance(x) / d sigma\n"
              match Parser.parseFile src with
              | Ok f ->
                  let printed = Printer.printFile f
                  Expect.stringContains printed "density(x, y) on [-1, 1] x [0, 1] bins 10 x 2 over [1, 2]" "printed"
                  Expect.equal (Parser.parseFile printed) (Ok f) "round trip"
              | Error d -> failtestf "%A" d
          } ]

/// The OU model of `ou2` (x only) with Greek names throughout: model, params, state, brownian, let.
let private greek =
    "model Ωu {\n  param θ = 1\n  param σ = 0.5\n  state ξ\n  state x_1\n  brownian Β\n  brownian W\n  init ξ = 0\n  init x_1 = 0\n  d ξ = -θ * ξ dt + σ dΒ\n  d x_1 = -θ * x_1 dt + σ dW\n}\nsimulate { paths = 20000; dt = 0.01; T = 2; seed = 5 }\nquery {\n  let ρ = ξ^2\n  mean(ρ)\n  d mean(ξ^2) / d σ with pathwise\n  density(ξ, x_1) on [-1, 1] x [-1, 1] bins 3 x 3\n}\n"

let private unicodeTests =
    testList
        "Unicode names"
        [ test "Greek names run through the whole pipeline and agree with the Euler chain" {
              let res = run greek
              near "mean(ρ)" (varAt 200) res[0]
              near "d mean(ξ^2) / d σ" (2.0 * varAt 200 / 0.5) res[1]
          }
          test "names in the emitted type are ASCII; --set takes the Unicode name" {
              match SdeCompiler.Compile(greek, "g.sde", { Frontend.noOverrides with Sets = [ "σ", 0.25 ]; Paths = Some 100L }) with
              | Ok p ->
                  Expect.equal p.Parameters [| "θ"; "σ" |] "parameters as written"
                  for f in p.ModelType.GetFields() do
                      Expect.isTrue (f.Name |> Seq.forall Char.IsAscii) (sprintf "field %s is ASCII" f.Name)
                  Expect.isTrue (p.ModelType.FullName |> Seq.forall Char.IsAscii) p.ModelType.FullName
                  Expect.equal (p.Run(threads = 1).Sets.Head.Params) [ "θ", 1.0; "σ", 0.25 ] "the override"
              | Error ds -> failtestf "%A" (ds |> List.map string)
          }
          test "the kernels of a model with Greek names and a 2-D density (floor) compile to PTX (no GPU needed)" {
              match SdeCompiler.Compile(greek, "g.sde") with
              | Ok p ->
                  let ptx = Sde.Core.Gpu.Ptx.Compile(p.ModelType, Sde.Core.Gpu.Ptx.ParseArch "sm_70")
                  for struct (name, text) in ptx do
                      Expect.stringContains text ".entry" (sprintf "%s has an entry point" name)
                      Expect.isTrue (text |> Seq.forall Char.IsAscii) (sprintf "%s is ASCII" name)
              | Error ds -> failtestf "%A" (ds |> List.map string)
          }
          test "located errors name Unicode names; a subscript digit is not a name character" {
              expectError "model M {\n  state ξ\n  brownian W\n  d ξ = -θ dt + dW\n}\n" (4, 10) "unknown name 'θ'"
              expectError "model M {\n  state x₁\n  brownian W\n  d x = dW\n}\n" (2, 10) "found '₁'"
              expectError (greek.Replace("let ρ = ξ^2", "let σ = ξ^2")) (15, 3) "let 'σ' shadows the param 'σ'"
          }
          test "parse and print round trip with Unicode names" {
              match Parser.parseFile greek with
              | Ok f -> Expect.equal (Parser.parseFile (Printer.printFile f)) (Ok f) "round trip"
              | Error d -> failtestf "%A" d
          } ]

/// `mean(e) every Δ`: the mean at t = 0, Δ, ..., T (kind mean_series).
let private seriesTests =
    let ouFrom1 (queries: string) =
        sprintf "model OU {\n  param theta = 1\n  param sigma = 0.5\n  state x\n  brownian W\n  init x = 1\n  d x = -theta * x dt + sigma dW\n}\nsimulate { paths = 20000; dt = 0.01; T = 2; seed = 3 }\nquery {\n%s}\n" queries

    testList
        "mean every"
        [ test "OU from 1: E[x_n] = (1 - theta dt)^n and E[x_n^2] at every 0.25 against the Euler chain; the last time is the mean at T" {
              let r = run (ouFrom1 "  mean(x) every 0.25\n  mean(x^2) every 0.5\n  mean(x^2)\n")
              let s, s2, atT = r[0], r[1], r[2]
              Expect.equal s.Kind "mean_series" "kind"
              Expect.equal s.Grid [| 0.0; 0.25; 0.5; 0.75; 1.0; 1.25; 1.5; 1.75; 2.0 |] "times"
              Expect.equal (s.Values[0], s.StdErrs[0]) (1.0, 0.0) "t = 0: the init, exactly"
              for k in 1 .. s.Grid.Length - 1 do
                  let n = 25 * k
                  let m = 0.99 ** float n
                  let q = { s with Value = s.Values[k]; StdErr = s.StdErrs[k] }
                  near (sprintf "E[x] at t = %g" s.Grid[k]) m q
              for k in 1 .. s2.Grid.Length - 1 do
                  let n = 50 * k
                  near (sprintf "E[x^2] at t = %g" s2.Grid[k]) (0.99 ** (2.0 * float n) + varAt n) { s2 with Value = s2.Values[k]; StdErr = s2.StdErrs[k] }
              Expect.equal (Array.last s2.Values, Array.last s2.StdErrs) (atT.Value, atT.StdErr) "the series ends with the mean at T, same bits"
          }
          test "located errors: a step off the grid, not positive, longer than T, too many times, with a window" {
              let src body = ouFrom1 (body + "\n")
              expectError (src "  mean(x) every 0.013") (11, 3) "not a whole number of steps of dt = 0.01"
              expectError (src "  mean(x) every 0") (11, 17) "needs Δ > 0"
              expectError (src "  mean(x) every 3") (11, 3) "longer than T"
              expectError ((src "  mean(x) every 0.0001").Replace("dt = 0.01", "dt = 0.0001")) (11, 3) "at most 10^4 times"
              expectError (src "  mean(x) every 0.5 over [0, 1]") (11, 27) "not over a window"
          }
          test "weighted: the series of a weighted mean is weighted, and ends with the mean at T" {
              let r =
                  run "model W {\n  state x\n  brownian B\n  weight w\n  init x ~ normal(0, 1)\n  d x = -x dt + 0.5 dB\n  d log w = -0.5 * x^2 dt\n}\nsimulate { paths = 4000; dt = 0.01; T = 1; seed = 2; resample = systematic; ess = 0.5 }\nquery {\n  mean(x^2) every 0.5\n  mean(x^2)\n}\n"
              Expect.isTrue r[0].Weighted "weighted"
              Expect.equal r[0].Grid [| 0.0; 0.5; 1.0 |] "times"
              Expect.floatClose Accuracy.veryHigh (Array.last r[0].Values) r[1].Value "ends with the weighted mean at T"
              // t = 0: the init's E[x^2] = 1 with weights 1
              near "t = 0" 1.0 { r[0] with Value = r[0].Values[0]; StdErr = r[0].StdErrs[0] }
          } ]

[<Tests>]
let tests = testList "Lang" [ letTests; momentTests; unicodeTests; seriesTests ]
