module Sde.Tests.CheckerTests

open Expecto
open Sde.Lang
open Sde.Lang.Syntax
open Sde.Lang.Checked

let private compile (src: string) = Frontend.compileText "test.sde" src

let private checkedOk (src: string) =
    match compile src with
    | Ok cf -> cf
    | Error ds -> failwithf "unexpected errors:\n%s" (ds |> List.map Diagnostics.short |> String.concat "\n")

/// A small valid model to build malformed variants from.
let private ou body = sprintf "model M {\n  state x\n  brownian W\n%s\n}\n" body

/// (name, source, line, col, message substring): the first diagnostic must match.
let private malformed: (string * string * int * int * string) list =
    [ "empty file", "", 1, 1, "no 'model' block"
      "only a comment", "// nothing\n", 1, 1, "no 'model' block"
      "binary junk", "\u0000\u0001\u0002junk", 1, 1, "U+0000"
      "replacement characters", "model M {\n  state x \uFFFD\n}", 2, 11, "found"
      "truncated file", "model M {\n  state x\n  d x = (x", 3, 9, "unclosed '('"
      // a block's missing '}': at the end of its last item (where the '}' belongs), naming the block and its '{'
      "truncated block", "model M {\n  state x\n", 2, 10, "missing '}' closing the 'model' block opened at 1:9"
      "model block unclosed before simulate", "model M {\n  state x\n  d x = -x dt\nsimulate { T = 1 }\n", 3, 14, "missing '}' closing the 'model' block opened at 1:9"
      "simulate block unclosed before query", ou "  d x = -x dt + dW" + "simulate { paths = 10; T = 1\nquery {\n  mean(x)\n}\n", 6, 29, "missing '}' closing the 'simulate' block opened at 6:10"
      "simulate block unclosed at the end", ou "  d x = -x dt + dW" + "simulate { paths = 10; T = 1\n", 6, 29, "missing '}' closing the 'simulate' block opened at 6:10"
      "simulate block unclosed before query on its line", ou "  d x = -x dt + dW" + "simulate { T = 1 query { mean(x) }\n", 6, 18, "missing '}' closing the 'simulate' block opened at 6:10"
      "empty simulate block unclosed", ou "  d x = -x dt + dW" + "simulate {\nquery { mean(x) }\n", 6, 11, "missing '}' closing the 'simulate' block opened at 6:10"
      "simulate block unclosed, comments before query", ou "  d x = -x dt + dW" + "simulate { T = 1  // the end\n\n// queries\nquery { mean(x) }\n", 6, 29, "missing '}' closing the 'simulate' block opened at 6:10"
      "query block unclosed before simulate", ou "  d x = -x dt + dW" + "query {\n  mean(x)\nsimulate { T = 1 }\n", 7, 10, "missing '}' closing the 'query' block opened at 6:7"
      "query block unclosed at the end", ou "  d x = -x dt + dW" + "query { mean(x)", 6, 16, "missing '}' closing the 'query' block opened at 6:7"
      "params block unclosed before sweep", ou "  param F = 1\n  d x = F dt + dW" + "params strong { F = 2\nsweep F from 1 to 2 step 1\n", 7, 22, "missing '}' closing the 'params' block opened at 7:15"
      "params block unclosed at the end", ou "  param F = 1\n  d x = F dt + dW" + "params strong { F = 2\n  // more\n", 7, 22, "missing '}' closing the 'params' block opened at 7:15"
      "fit block unclosed before query", ou "  param F = 1\n  d x = F dt + dW" + "fit F to \"d.csv\" {\n  iterations = 3\nquery { mean(x) }\n", 8, 17, "missing '}' closing the 'fit' block opened at 7:18"
      "fit block unclosed at the end", ou "  param F = 1\n  d x = F dt + dW" + "fit F to \"d.csv\" {\n  iterations = 3\n", 8, 17, "missing '}' closing the 'fit' block opened at 7:18"
      "a top-level keyword as a name in a block is a name", ou "  d x = dt + dW" + "params p { model = 1; query = 2 }\n", 6, 12, "unknown param 'model'"
      "unbalanced bracket before brace", "model M {\n  state x\n  d x = (x dt\n}", 3, 9, "unclosed '('"
      "unbalanced index bracket", "model M {\n  state x[3]\n  d x[i = x[i] dt\n}", 3, 9, "expected ']' but found '='"
      "missing expression", "model M {\n  state x\n  d x = \n}", 3, 9, "expected expression"
      "double operator", "model M {\n  state x\n  d x = x + * dt\n}", 3, 13, "expected expression"
      "unknown top-level item", "modle M {}", 1, 1, "expected 'model'"
      "unknown model item", "model M {\n  stat x\n}", 2, 3, "model item"
      "misspelled model item", "model M {\n  parm a = 1\n}", 2, 3, "found 'parm'; did you mean 'param'?"
      "transposed top-level keyword", "modle M {}", 1, 1, "found 'modle'; did you mean 'model'?"
      "misspelled block", "model M {\n  state x\n  d x = -x dt\n}\nsimulat { paths = 10 }\n", 5, 1, "did you mean 'simulate'?"
      "unknown name with suggestion", ou "  param sigma = 1\n  d x = -x dt + sigm dW", 5, 17, "did you mean 'sigma'?"
      "unknown function", ou "  d x = expp(x) dt + dW", 4, 9, "unknown function 'expp'; did you mean 'exp'?"
      "wrong arity", ou "  d x = max(x) dt + dW", 4, 9, "takes 2 arguments"
      "duplicate declaration", ou "  param x = 1\n  d x = -x dt + dW", 4, 9, "duplicate declaration of 'x'"
      "reserved name", ou "  param t = 1\n  d x = -x dt + dW", 4, 9, "reserved"
      "index shadows a name", "model M {\n  param i = 1\n  state x[3]\n  d x[i] = -x[i] dt\n}", 4, 3, "shadows the param 'i'"
      "vector state without index", "model M {\n  state x[3]\n  state y\n  d x[i] = -x[i] dt\n  d y = x dt\n}", 5, 9, "is a vector"
      "scalar state with index", ou "  d x = -x[0] dt + dW", 4, 10, "is a scalar"
      "index out of range", "model M {\n  state x[3]\n  d x[i] = x[i+1] dt\n}", 3, 14, "out of range"
      "index arithmetic overflow", "model M {\n  state x[3]\n  d x[i] = x[2147483647 * 2147483647 * 2147483647] dt\n}", 3, 14, "overflows 64-bit"
      "negative index", "model M {\n  state x[3]\n  d x[i] = x[i-1] dt\n}", 3, 14, "when i = 0"
      "dW index out of range", "model M {\n  state x[3]\n  brownian W[2]\n  d x[i] = dW[i]\n}", 4, 15, "brownian 'W' of size 2"
      "size not positive", "model M {\n  state x[0]\n  d x[i] = dt\n}", 2, 11, "size must be positive"
      "const not integer", "model M {\n  const N = 2.5\n  state x\n  d x = dt\n}", 2, 13, "must be an integer"
      "const refers to later const", "model M {\n  const N = M\n  const M = 2\n  state x\n  d x = dt\n}", 2, 13, "not a const"
      "missing equation", "model M {\n  state x\n  state y\n  d x = dt\n}", 3, 9, "state 'y' has no equation"
      "duplicate equation", ou "  d x = dt + dW\n  d x = dt", 5, 3, "a second equation for 'x'"
      "duplicate init", ou "  init x = 0\n  init x = 1\n  d x = dt + dW", 5, 3, "a second init for 'x'"
      "nonlinear dW*dW", ou "  d x = dW * dW", 4, 9, "dW*dW is not linear"
      "dt squared", ou "  d x = dt^2 + dW", 4, 9, "not linear in dt"
      "dt times dW", ou "  d x = dt * dW", 4, 9, "dt*dW"
      "dt in a function", ou "  d x = exp(dt) + dW", 4, 9, "inside a function"
      "dt in a denominator", ou "  d x = x / dt + dW", 4, 13, "denominator"
      "dt inside if", ou "  d x = if x > 0 then dt else 0", 4, 9, "inside 'if'"
      "term without differential", ou "  d x = x", 4, 9, "without dt or dW"
      "mixed term without differential", ou "  d x = -x dt + 1 + dW", 4, 17, "without dt or dW"
      "if on the state in an equation", ou "  d x = (if x > 0 then 1 else 2) dt + dW", 4, 13, "must not depend on the state"
      "reduction indexes nothing", "model M {\n  state x[2]\n  d x[i] = sum(j, 1) dt\n}", 3, 12, "must index a vector state or param"
      "reduction over different sizes", "model M {\n  state x[2]\n  state y[3]\n  d x[i] = sum(j, x[j] * y[j]) dt\n  d y[i] = dt\n}", 4, 12, "different sizes"
      "param default outside domain", ou "  param s = -1 in (0, inf)\n  d x = dt + s dW", 4, 13, "outside its domain"
      "unknown param in params block", ou "  d x = dt + dW" + "params a { G = 1 }\n", 6, 12, "unknown param 'G'"
      "sweep with a zero step", ou "  param F = 1\n  d x = F dt + dW" + "sweep F from 1 to 2 step 0\n", 7, 26, "step must be > 0"
      "sweep start above end", ou "  param F = 1\n  d x = F dt + dW" + "sweep F from 3 to 2 step 1\n", 7, 14, "above its end"
      "unknown setting", ou "  d x = dt + dW" + "simulate { path = 10 }\n", 6, 12, "unknown setting 'path'; did you mean 'paths'?"
      "duplicate setting", ou "  d x = dt + dW" + "simulate {\n  T = 1\n  T = 2\n}\n", 8, 3, "duplicate setting 'T'"
      "non-integer paths", ou "  d x = dt + dW" + "simulate { paths = 1.5 }\n", 6, 20, "paths must be an integer"
      "negative dt", ou "  d x = dt + dW" + "simulate { dt = -0.1 }\n", 6, 17, "dt must be > 0"
      "burnin not below T", ou "  d x = dt + dW" + "simulate { T = 1; burnin = 2 }\n", 6, 28, "burnin"
      "unknown scheme", ou "  d x = dt + dW" + "simulate { scheme = heun }\n", 6, 21, "unknown scheme"
      "dt in an observable", ou "  d x = dt + dW" + "query { mean(x dt) }\n", 6, 16, "observables must not contain"
      "zero bins", ou "  d x = dt + dW" + "query { density(x) on [0, 1] bins 0 }\n", 6, 35, "bins must be >= 1"
      "empty density range", ou "  d x = dt + dW" + "query { density(x) on [1, 1] bins 3 }\n", 6, 24, "a < b"
      "window past T", ou "  d x = dt + dW" + "query { mean(x) over [0, 5] }\n", 6, 9, "after the final time"
      "response to an unknown param", ou "  d x = dt + dW" + "query { d mean(x) / d G }\n", 6, 9, "unknown param 'G'"
      "over with stationary (the over window was silently unused)", ou "  param F = 1\n  d x = F dt + dW" + "query { d mean(x) / d F over [0, 1] stationary window 0.5 }\n", 7, 31, "stationary response averages over [burnin, T]"
      "rate and alpha together", ou "  param F = 1\n  d x = F dt + dW" + "query { d mean(x) / d F with divergence_kernel(rate = 1, alpha = 0.5) }\n", 7, 48, "either rate or alpha"
      "bad mode", ou "  param F = 1\n  d x = F dt + dW" + "query { d mean(x) / d F with divergence_kernel(mode = fast) }\n", 7, 48, "unknown mode 'fast'"
      "unknown method", ou "  param F = 1\n  d x = F dt + dW" + "query { d mean(x) / d F with pathwize }\n", 7, 30, "did you mean 'pathwise'?"
      "stationary window not positive", ou "  param F = 1\n  d x = F dt + dW" + "query { d mean(x) / d F stationary window 0 }\n", 7, 43, "must be > 0"
      "very long line", ou ("  d x = dt + dW + " + String.replicate 20000 "x + ") , 4, 40013, "more than 10000 terms"
      "100k-character name", ou ("  d x = " + String.replicate 100000 "a" + " dt + dW"), 4, 9, "names are at most 256 characters"
      "deep nesting", ou ("  d x = " + String.replicate 10000 "(" + "1" + String.replicate 10000 ")" + " dt"), 4, 266, "nested too deeply"
      "deep unary minus", ou ("  d x = " + String.replicate 10000 "-" + "1 dt"), 4, 266, "nested too deeply" ]

let private malformedTests =
    malformed
    |> List.map (fun (name, src, line, col, msg) ->
        test name {
            match compile src with
            | Ok _ -> failtestf "expected an error for %s" name
            | Error [] -> failtest "an empty error list"
            | Error(d :: _ as ds) ->
                let all = ds |> List.map Diagnostics.short |> String.concat "\n"
                Expect.equal (d.Pos.Line, d.Pos.Col) (line, col) (sprintf "position; got\n%s" all)
                Expect.stringContains d.Message msg (sprintf "message; got\n%s" all)
                // the formatted form never throws and names the file and position
                let formatted = Diagnostics.format "test.sde" src d
                Expect.stringStarts formatted (sprintf "test.sde:%d:%d: error: " line col) "format"
        })

[<Tests>]
let tests =
    testList
        "Checker"
        [ testList "malformed" malformedTests
          test "did-you-mean: no guess for a one-letter name (any other is one edit away), never a brownian for a value, case changes still found" {
              let first src = match compile src with Error(d :: _) -> d.Message | _ -> failtest "expected an error"
              let m = first "model M {\n  param a = 1\n  state x\n  brownian W\n  d x = -a * x dt + b dW\n}\n"
              Expect.stringContains m "unknown name 'b'" "the error"
              Expect.isFalse (m.Contains "did you mean") (sprintf "no guess for 'b': %s" m)
              let m2 = first "model M {\n  param a = 1\n  state x\n  brownian Wnoise\n  d x = -a * x dt + Wnoisy dWnoise\n}\n"
              Expect.stringContains m2 "unknown name 'Wnoisy'" "the error"
              Expect.isFalse (m2.Contains "'Wnoise'") (sprintf "a brownian is not a value: %s" m2)
              let m3 = first "model M {\n  param a = 1\n  state x\n  brownian W\n  d x = -A * x dt + dW\n}\n"
              Expect.stringContains m3 "did you mean 'a'?" "a change of case"
          }
          test "errors are reported together, sorted by position" {
              match compile (ou "  d x = y dt + z dW") with
              | Error ds -> Expect.equal (ds |> List.map (fun d -> d.Pos.Col)) [ 9; 16 ] (sprintf "%A" ds)
              | Ok _ -> failtest "expected errors"
          }
          test "Lorenz-96: drift and diffusion split, dimensions, offsets" {
              let cf = checkedOk ParserTests.lorenz96
              let m = cf.Model
              Expect.equal m.Dim 40 "Dim"
              Expect.equal m.NoiseDim 40 "NoiseDim"
              Expect.equal m.Consts [ "N", 40 ] "consts"
              Expect.equal (m.Params |> List.map (fun p -> p.Name, p.Default)) [ "F", 8.0; "sigma", 0.5 ] "params"

              match m.Equations with
              | [ eq ] ->
                  let x ix = StateRef(0, ix)

                  let drift =
                      Add(Sub(Mul(Sub(x (IAdd(IVar "i", IConst 1)), x (ISub(IVar "i", IConst 2))), x (ISub(IVar "i", IConst 1))), x (IVar "i")), Param 0)

                  Expect.equal eq.Drift drift "drift"
                  Expect.equal eq.Noise [ { Brownian = 0; Index = IVar "i"; Coeff = Param 1 } ] "noise"
                  Expect.equal eq.Index (Some "i") "index"
              | other -> failtestf "%A" other

              match m.Inits with
              | [ { Kind = Normal(Param 0, Const 1.0); Index = Some "i" } ] -> ()
              | other -> failtestf "%A" other

              Expect.equal cf.Settings { Paths = 100000L; Dt = 0.005; T = 20.0; Seed = 42UL; Scheme = "euler_maruyama"; Burnin = 10.0; Multilevel = None; Bias = "estimate"; Extrapolate = "none"; ExtrapolatePos = { Line = 0; Col = 0 } } "settings"
              Expect.equal cf.Queries.Length 9 "queries"

              match cf.Queries[4].Query, cf.Queries[6].Query, cf.Queries[7].Query, cf.Queries[8].Query with
              | QResponse(TMean _, 0, None, None, DivergenceKernel(AdaptiveRate, None)),
                QResponse(_, 0, None, None, FiniteDifference 0.01),
                QResponse(TDensity(_, -10.0, 15.0, 30), 0, None, None, DivergenceKernel(Alpha 0.2, None)),
                QResponse(_, 0, None, Some [ 5.0 ], _) -> ()
              | other -> failtestf "%A" other

              match cf.Queries[1].Query with
              | QPlain(TMean(AvgOver("i", 40, Power(StateRef(0, IVar "i"), Const 2.0))), None) -> ()
              | other -> failtestf "%A" other
          }
          test "sets: params blocks and sweeps in declaration order" {
              let cf = checkedOk ParserTests.lorenz96
              let names = cf.Sets |> List.map (fun s -> s.Name)
              Expect.equal names [ "base"; "strong"; "F=6"; "F=6.5"; "F=7"; "F=7.5"; "F=8"; "F=8.5"; "F=9"; "F=9.5"; "F=10" ] "names"
              Expect.equal cf.Sets[1].Values [| 10.0; 1.0 |] "strong"
              Expect.equal cf.Sets[3].Values [| 6.5; 0.5 |] "F=6.5"
          }
          test "a sweep alone gives its sets; none gives default" {
              let src = ou "  param F = 1\n  d x = F dt + dW"
              Expect.equal ((checkedOk (src + "sweep F from 0.1 to 0.3 step 0.1\n")).Sets |> List.map (fun s -> s.Name)) [ "F=0.1"; "F=0.2"; "F=0.3" ] ""
              let cf = checkedOk src
              Expect.equal (cf.Sets |> List.map (fun s -> s.Name, s.Values)) [ "default", [| 1.0 |] ] ""
              Expect.equal cf.Settings Checker.defaultSettings "default settings"
          }
          test "several states: offsets, scalar and vector, missing init is zero" {
              let cf =
                  checkedOk "model M {\n  state q\n  state x[3]\n  state p\n  brownian B[3]\n  d q = p dt\n  d p = -q dt\n  d x[i] = -x[i] dt + 0.5 dB[i] + dt\n  init q = 1\n}"

              Expect.equal (cf.Model.States |> List.map (fun s -> s.Name, s.Offset, s.Size)) [ "q", 0, 1; "x", 1, 3; "p", 4, 1 ] ""
              Expect.equal cf.Model.Dim 5 "dim"
              Expect.equal (cf.Model.Equations |> List.map (fun e -> e.State)) [ 0; 1; 2 ] "equations by state"
              Expect.equal cf.Model.Equations[1].Drift (Add(CExpr.Neg(StateRef(1, IVar "i")), Const 1.0)) "dt terms summed"
              Expect.equal cf.Model.Equations[1].Noise [ { Brownian = 0; Index = IVar "i"; Coeff = Const 0.5 } ] "noise"
              Expect.equal (cf.Model.Inits |> List.map (fun i -> i.Kind)) [ Deterministic(Const 1.0); Deterministic(Const 0.0); Deterministic(Const 0.0) ] "inits"
          }
          test "an ODE and an if on t/params in an equation are fine" {
              let cf = checkedOk "model M {\n  param a = 1\n  state x\n  d x = (if t < 1 and a > 0 then -x else x) dt\n  init x = if a > 0 then 1 else 2\n}"
              Expect.equal cf.Model.NoiseDim 0 "no noise"
              Expect.isEmpty cf.Model.Equations.Head.Noise "no noise terms"
          }
          test "overrides: --set, --params, settings" {
              let cf = checkedOk ParserTests.lorenz96
              let o = Frontend.noOverrides

              match Frontend.applyOverrides cf { o with Sets = [ "F", 9.0 ]; ParamsName = Some "strong"; Paths = Some 10L; T = Some 30.0 } with
              | Ok c ->
                  Expect.equal (c.Sets |> List.map (fun s -> s.Name, s.Values)) [ "strong", [| 9.0; 1.0 |] ] "sets"
                  Expect.equal (c.Settings.Paths, c.Settings.T) (10L, 30.0) "settings"
              | Error m -> failtest m

              let err ov frag =
                  match Frontend.applyOverrides cf ov with
                  | Error m -> Expect.stringContains m frag m
                  | Ok _ -> failtestf "expected error %s" frag

              err { o with ParamsName = Some "nope" } "base, strong, F=6"
              err { o with Sets = [ "sigma", -1.0 ] } "outside its domain"
              err { o with Sets = [ "G", 1.0 ] } "unknown param 'G'"
              err { o with Paths = Some 0L } "paths"
              err { o with Dt = Some 0.0 } "dt"
              err { o with T = Some 5.0 } "burnin"
          } ]
