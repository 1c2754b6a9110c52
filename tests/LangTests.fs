/// Language conveniences (issue 13): named observables (`let`), variance/covariance, 2-D densities,
/// Unicode names. Statistical checks compare with closed forms of the Euler chain, within 4.5
/// standard errors, at fixed seeds.
module Sde.Tests.LangTests

open System
open Expecto
open Sde.Lang
open Sde.Lang.Checked
open Sde

let private compile (src: string) = Frontend.compileText "test.sde" src

let private checkedOk (src: string) =
    match compile src with
    | Ok cf -> cf
    | Error ds -> failwithf "unexpected errors:\n%s" (ds |> List.map Diagnostics.short |> String.concat "\n")

/// The first diagnostic is at (line, col) and its message contains `msg`.
let private expectError (src: string) (line: int, col: int) (msg: string) =
    match compile src with
    | Ok _ -> failtestf "expected an error containing '%s'" msg
    | Error [] -> failtest "an empty error list"
    | Error(d :: _ as ds) ->
        let all = ds |> List.map Diagnostics.short |> String.concat "\n"
        Expect.equal (d.Pos.Line, d.Pos.Col) (line, col) (sprintf "position; got\n%s" all)
        Expect.stringContains d.Message msg (sprintf "message; got\n%s" all)
        Expect.stringStarts (Diagnostics.format "test.sde" src d) (sprintf "test.sde:%d:%d: error: " line col) "format"

let private run (src: string) =
    match SdeCompiler.Compile(src, "test.sde") with
    | Ok p -> p.Run(threads = 2).Sets.Head.Results
    | Error ds -> failtestf "unexpected diagnostics: %A" (ds |> List.map string)

let private near (what: string) (expected: float) (q: Report.QueryOutcome) =
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

[<Tests>]
let tests = testList "Lang" [ letTests ]
