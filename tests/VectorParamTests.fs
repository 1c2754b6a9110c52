/// Vector parameters (issue 11): `param a[K] = v [in domain]`, indexed like states, each component a
/// param of its own (`a[0]` ... `a[K-1]`) for sets, overrides, sweeps, responses and fits; JSON arrays.
/// Located errors; the same bits as the model written with scalar params; the response d/d a[1]
/// against the chain's closed form and against finite differences (common random numbers); a fit of
/// a vector param against the closed-form maximum-likelihood values of the chain's Gaussian law.
/// Fixed seeds; tolerances 4.5 standard errors.
module Sde.Tests.VectorParamTests

open System
open System.IO
open Expecto
open Sde
open Sde.Lang

let private compile (text: string) =
    match SdeCompiler.Compile(text, "vec.sde") with
    | Ok p -> p
    | Error ds -> failwithf "compile errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let private firstError (text: string) =
    match SdeCompiler.Compile(text, "vec.sde") with
    | Ok _ -> failwith "expected a compile error"
    | Error ds -> List.head ds

let private results (r: Report.RunReport) = r.Sets.Head.Results |> List.toArray

/// A 1-D model with a vector param; `body` is the drift, `extra` goes after the model, `qs` the queries.
let private model (decl: string) (drift: string) (extra: string) (qs: string) =
    sprintf
        """model V {
  const K = 3
  %s
  param s = 0.5 in (0, inf)
  state x
  brownian W
  init x = 1
  d x = %s dt + s dW
}
%s
simulate { paths = 200; dt = 0.01; T = 0.5; seed = 3 }
query {
  %s
}
"""
        decl drift extra qs

let private withTemp = FitTests.withTemp

/// The Euler chain of d x = -(a0 + a1 x) dt + s dW from x0 after n steps of dt: Gaussian with mean m
/// and variance v (m' = c m - a0 dt, v' = c² v + s² dt, c = 1 - a1 dt).
let private linearLaw (a0: float) (a1: float) (s: float) (x0: float) (dt: float) (n: int) =
    let c = 1.0 - a1 * dt
    let mutable m = x0
    let mutable v = 0.0

    for _ in 1..n do
        m <- c * m - a0 * dt
        v <- c * c * v + s * s * dt

    m, v

[<Tests>]
let errors =
    testList
        "Vector params.errors"
        [ let err (text: string) (line: int) (col: int) (fragment: string) =
              let d = firstError text
              Expect.stringContains d.Message fragment (sprintf "message: %s" d.Rendered)
              Expect.equal (d.Line, d.Col) (line, col) (sprintf "position of: %s" d.Rendered)

          test "an index out of range, fixed or through an index variable" {
              err (model "param a[K] = 0" "-a[3] * x" "" "mean(x)") 8 12 "index 3 out of range for param 'a' of size 3"
              err (model "param a[K] = 0" "-a[0-1] * x" "" "mean(x)") 8 12 "out of range for param 'a'"
              err (model "param a[K] = 0" "-sum(k, a[k+1] * x^k)" "" "mean(x)") 8 19 "index k + 1 out of range for param 'a' of size 3 when k = 2"
          }

          test "a vector param without an index, an index on a scalar param" {
              err (model "param a[K] = 0" "-a * x" "" "mean(x)") 8 10 "param 'a' is a vector of size 3; index it"
              err (model "param a[K] = 0" "-s[0] * x" "" "mean(x)") 8 10 "param 's' is a scalar and cannot be indexed"
          }

          test "the size is a positive integer" {
              err (model "param a[0] = 0" "-x" "" "mean(x)") 3 11 "a size must be positive"
              err (model "param a[K - 4] = 0" "-x" "" "mean(x)") 3 11 "a size must be positive"
              err (model "param a[2.5] = 0" "-x" "" "mean(x)") 3 11 "must be an integer"
          }

          test "responses name one component" {
              err (model "param a[K] = 0" "-a[0] * x" "" "d mean(x) / d a") 13 3 "param 'a' is a vector of size 3; name a component, e.g. a[0]"
              err (model "param a[K] = 0" "-a[0] * x" "" "d mean(x) / d a[3]") 13 3 "index 3 out of range for param 'a' of size 3"
              err (model "param a[K] = 0" "-a[0] * x" "" "d mean(x) / d s[1]") 13 3 "param 's' is a scalar"
              err (model "param a[K] = 0" "-a[0] * x" "" "d mean(x) / d a[k]") 13 19 "integer literal"
          }

          test "params blocks, sweeps and domains" {
              err (model "param a[K] = 0" "-a[0] * x" "params p { a[5] = 1 }" "mean(x)") 10 12 "index 5 out of range for param 'a' of size 3"
              err (model "param a[K] = 0" "-a[0] * x" "params p { a = 1 }" "mean(x)") 10 12 "name a component"
              err (model "param a[K] = 1 in (0, inf)" "-a[0] * x" "params p { a[2] = -1 }" "mean(x)") 10 19 "outside its domain (0, inf)"
              err (model "param a[K] = 1" "-a[0] * x" "sweep a[3] from 0 to 1 step 0.5" "mean(x)") 10 7 "index 3 out of range"
          }

          test "--set names a component in range" {
              let text = model "param a[K] = 0" "-a[0] * x" "" "mean(x)"
              let bad (name: string) (fragment: string) =
                  let o = SdeCompiler.MakeOverrides(Nullable(), Nullable(), Nullable(), Nullable(), null, dict [ name, 1.0 ])

                  match SdeCompiler.Compile(text, "vec.sde", o) with
                  | Ok _ -> failwithf "--set %s accepted" name
                  | Error ds -> Expect.stringContains (List.head ds).Message fragment name

              bad "a" "name a component"
              bad "a[3]" "out of range"
              bad "s[0]" "scalar"
          } ]

/// The same model with `param a[3]` (indexed, and summed over its components) and with three scalar params.
let private vectorForm =
    """model P {
  param a[3] = 0.3
  param s = 0.4 in (0, inf)
  state x
  brownian W
  init x ~ normal(0.5, 0.2)
  d x = -(sum(k, a[k] * x^k) + 0.1 * x^3) dt + s * (1 + a[2] * x^2) dW
}
params base {}
params other { a[1] = 0.8; a[0] = -0.2 }
simulate { paths = 3000; dt = 0.01; T = 1; seed = 11 }
query {
  mean(x)
  mean(x^2)
  density(x) on [-2, 2] bins 8
  d mean(x^2) / d a[1]
  d mean(x^2) / d a[2]
  d mean(x^2) / d a[0] with finite_difference
}
"""

let private scalarForm =
    vectorForm
        .Replace("param a[3] = 0.3", "param a0 = 0.3\n  param a1 = 0.3\n  param a2 = 0.3")
        .Replace("sum(k, a[k] * x^k)", "a0 * x^0 + a1 * x^1 + a2 * x^2")
        .Replace("a[2] * x^2) dW", "a2 * x^2) dW")
        .Replace("a[1] = 0.8; a[0] = -0.2", "a1 = 0.8; a0 = -0.2")
        .Replace("d a[1]", "d a1")
        .Replace("d a[2]", "d a2")
        .Replace("d a[0]", "d a0")

[<Tests>]
let behaviour =
    testList
        "Vector params.behaviour"
        [ test "param a[3] gives the same bits as three scalar params (sets, means, densities, responses)" {
              Expect.isFalse (scalarForm.Contains "a[") "the scalar form has no vector left"
              let rv = (compile vectorForm).Run(threads = 1)
              let rs = (compile scalarForm).Run(threads = 1)
              Expect.equal rv.Sets.Length 2 "two sets"

              for sv, ss in List.zip rv.Sets rs.Sets do
                  Expect.equal (sv.Params |> List.map snd) (ss.Params |> List.map snd) "the same values"

                  for qv, qs in List.zip sv.Results ss.Results do
                      Expect.equal (BitConverter.DoubleToInt64Bits qv.Value) (BitConverter.DoubleToInt64Bits qs.Value) (sprintf "%s: value" qv.Query)
                      Expect.equal (BitConverter.DoubleToInt64Bits qv.StdErr) (BitConverter.DoubleToInt64Bits qs.StdErr) (sprintf "%s: stderr" qv.Query)
                      Expect.equal (qv.Values |> Array.map BitConverter.DoubleToInt64Bits) (qs.Values |> Array.map BitConverter.DoubleToInt64Bits) (sprintf "%s: values" qv.Query)
              // and the numbers are not trivial: the sets differ
              Expect.notEqual rv.Sets[0].Results[0].Value rv.Sets[1].Results[0].Value "the sets differ"
          }

          test "a vector param indexed by a vector state's index variable: each component its own rate" {
              let text =
                  """model L {
  const N = 3
  param a[N] = 1 in (0, inf)
  state x[N]
  brownian W[N]
  init x[i] = 1
  d x[i] = -a[i] * x[i] dt + 0.3 dW[i]
}
params p { a[0] = 0.5; a[2] = 2 }
simulate { paths = 4000; dt = 0.01; T = 1; seed = 2 }
query {
  mean(x[0])
  mean(x[1])
  mean(x[2])
}
"""
              let r = results ((compile text).Run())
              // the mean of the chain is (1 - a dt)^100
              for k, a in [ 0, 0.5; 1, 1.0; 2, 2.0 ] do
                  let exact = (1.0 - a * 0.01) ** 100.0
                  let q = r[k]
                  Expect.isLessThan (abs (q.Value - exact)) (4.5 * q.StdErr) (sprintf "%s = %g ± %g vs %g" q.Query q.Value q.StdErr exact)
          }

          test "d mean(x^2) / d a[1]: the chain's closed form and central finite differences (common random numbers)" {
              let text =
                  """model O {
  param a[2] = 0.5
  param s = 0.5 in (0, inf)
  state x
  brownian W
  init x = 1
  d x = -(a[0] + a[1] * x) dt + s dW
}
simulate { paths = 20000; dt = 0.01; T = 1; seed = 17 }
query {
  d mean(x^2) / d a[1]
  d mean(x^2) / d a[1] with finite_difference
  d mean(x^2) / d a[0]
}
"""
              let r = results ((compile text).Run())
              let ex2 a0 a1 = let m, v = linearLaw a0 a1 0.5 1.0 0.01 100 in m * m + v
              let h = 1e-5
              let d1 = (ex2 0.5 (0.5 + h) - ex2 0.5 (0.5 - h)) / (2.0 * h)
              let d0 = (ex2 (0.5 + h) 0.5 - ex2 (0.5 - h) 0.5) / (2.0 * h)

              for q, exact in [ r[0], d1; r[1], d1; r[2], d0 ] do
                  Expect.isLessThan (abs (q.Value - exact)) (4.5 * q.StdErr) (sprintf "%s = %g ± %g vs closed form %g" q.Query q.Value q.StdErr exact)

              let se = sqrt (r[0].StdErr ** 2.0 + r[1].StdErr ** 2.0)
              Expect.isLessThan (abs (r[0].Value - r[1].Value)) (4.5 * se) "DK = finite differences"
              Expect.isLessThan (abs d1) 1e3 "finite"
              Expect.isGreaterThan (abs d1) 0.1 "not a trivial derivative"
          }

          test "params blocks, sweeps and --set set components; the JSON lists vector params as arrays" {
              let text =
                  model "param a[K] = 0.2" "-(a[0] + a[1] * x)" "params p { a[1] = 0.5 }\nsweep a[2] from 0 to 1 step 0.5" "mean(x)"

              let o = SdeCompiler.MakeOverrides(Nullable(), Nullable(), Nullable(), Nullable(), null, dict [ "a[0]", 0.7 ])

              let p =
                  match SdeCompiler.Compile(text, "vec.sde", o) with
                  | Ok p -> p
                  | Error ds -> failwithf "%A" ds

              Expect.equal p.Parameters [| "a[0]"; "a[1]"; "a[2]"; "s" |] "components are params"
              Expect.equal p.ParameterSets [| "p"; "a[2]=0"; "a[2]=0.5"; "a[2]=1" |] "sets"
              let r = p.Run()
              let json = Text.Json.Nodes.JsonNode.Parse(SdeCompiler.ToJson r)
              let sets = json.["sets"].AsArray()
              let arr (i: int) = sets[i].["params"].["a"].AsArray() |> Seq.map (fun v -> v.GetValue<float>()) |> List.ofSeq
              Expect.equal (arr 0) [ 0.7; 0.5; 0.2 ] "set p: a as an array, --set a[0] applied"
              Expect.equal (arr 2) [ 0.7; 0.2; 0.5 ] "sweep value a[2] = 0.5"
              Expect.equal (sets[0].["params"].["s"].GetValue<float>()) 0.5 "a scalar param stays a number"
              Expect.isNull (sets[0].["params"].["a[0]"]) "no component keys"
              // the drift uses a[0] and a[1]: the means follow the chain's closed form
              let m0, _ = linearLaw 0.7 0.5 0.5 1.0 0.01 50
              let q = r.Sets[0].Results[0]
              Expect.isLessThan (abs (q.Value - m0)) (4.5 * q.StdErr) (sprintf "mean %g ± %g vs %g" q.Value q.StdErr m0)
          } ]

[<Tests>]
let fits =
    testList
        "Vector params.fit"
        [ test "fit a (both components) of d x = -(a[0] + a[1] x) dt + s dW: the closed-form maximum-likelihood values [slow tier]" {
              Tier.requireSlow "a fit (about 12 s)"
              withTemp (fun dir ->
                  // 2000 samples of the chain at T = 1 (a = [0.5, 1.5], s = 0.5, x0 = 1, Δt = 0.01), simulated here
                  let a0, a1, s, n, dt = 0.5, 1.5, 0.5, 100, 0.01
                  let rng = Random(2027)

                  let normal () =
                      let u1 = 1.0 - rng.NextDouble()
                      let u2 = rng.NextDouble()
                      sqrt (-2.0 * log u1) * cos (2.0 * Math.PI * u2)

                  let ys =
                      Array.init 2000 (fun _ ->
                          let mutable x = 1.0

                          for _ in 1..n do
                              x <- x - (a0 + a1 * x) * dt + s * sqrt dt * normal ()

                          x)

                  let lines = Array.append [| "x" |] (ys |> Array.map (fun y -> y.ToString("R", Globalization.CultureInfo.InvariantCulture)))
                  File.WriteAllLines(Path.Combine(dir, "data.csv"), lines)
                  let paths = 10000

                  let text =
                      sprintf
                          """model O {
  param a[2] = 0.1
  param s = 0.5 in (0, inf)
  state x
  brownian W
  init x = 1
  d x = -(a[0] + a[1] * x) dt + s dW
}
simulate { paths = %d; dt = 0.01; T = 1; seed = 5 }
fit a to "data.csv" { optimizer = lbfgs; iterations = 60 }
"""
                          paths

                  let p = compile text
                  Expect.equal p.FitSpec.Value.Params [ 0; 1 ] "fit a: both components"

                  let r =
                      match p.Fit(dataDir = dir) with
                      | Ok r -> r
                      | Error ds -> failwithf "%A" ds

                  Expect.equal r.Names [| "a[0]"; "a[1]" |] "names"
                  // the MLE of the Gaussian law (m(a0, a1), v(a1)): v(a1) = the data's (1/n) variance
                  // (v decreases in a1: bisection), then m is linear in a0
                  let m = Array.average ys
                  let v = (ys |> Array.sumBy (fun y -> (y - m) ** 2.0)) / float ys.Length
                  let vOf b = snd (linearLaw 0.0 b s 1.0 dt n)
                  let mutable lo, hi = -5.0, 50.0

                  for _ in 1..200 do
                      let mid = 0.5 * (lo + hi)
                      if vOf mid > v then lo <- mid else hi <- mid

                  let b1 = 0.5 * (lo + hi)
                  let mAt b0 = fst (linearLaw b0 b1 s 1.0 dt n)
                  let b0 = (mAt 0.0 - m) / (mAt 0.0 - mAt 1.0) // m is affine in a0
                  // tolerance: with common random numbers the fitted law matches the data's smoothed mean
                  // and variance up to the paths' sampling errors e_m ~ N(0, v/P), e_v ~ N(0, 2v²/P)
                  // (independent, Gaussian law); by the delta method δa1 = e_v / ∂v/∂a1 and
                  // δa0 = (e_m − ∂m/∂a1 δa1) / ∂m/∂a0. 4.5 standard deviations of each.
                  let d = 1e-6
                  let dv1 = (vOf (b1 + d) - vOf (b1 - d)) / (2.0 * d)
                  let dm1 = (fst (linearLaw b0 (b1 + d) s 1.0 dt n) - fst (linearLaw b0 (b1 - d) s 1.0 dt n)) / (2.0 * d)
                  let dm0 = mAt 1.0 - mAt 0.0
                  let pf = float paths
                  let sd1 = sqrt (2.0 * v * v / pf) / abs dv1
                  let sd0 = sqrt (v / pf + (dm1 * sd1) ** 2.0) / abs dm0
                  Expect.isLessThan (abs (r.Fitted[0] - b0)) (4.5 * sd0) (sprintf "a[0] %g vs MLE %g (tolerance %g)" r.Fitted[0] b0 (4.5 * sd0))
                  Expect.isLessThan (abs (r.Fitted[1] - b1)) (4.5 * sd1) (sprintf "a[1] %g vs MLE %g (tolerance %g)" r.Fitted[1] b1 (4.5 * sd1))
                  // fit.json: the vector as an array; the params block pastes back as a set
                  let files = Fit.write (Path.Combine(dir, "out")) r |> List.map Path.GetFileName
                  Expect.equal files [ "fit.json"; "fit_loss.svg"; "fit_param_a-0.svg"; "fit_param_a-1.svg" ] "a plot per component"
                  let json = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "out", "fit.json")))
                  let fitted = json.["fitted"].["a"].AsArray() |> Seq.map (fun x -> x.GetValue<float>()) |> Array.ofSeq
                  Expect.equal fitted r.Fitted "fitted.a is the array of the components"
                  Expect.equal (json.["params"].["s"].GetValue<float>()) 0.5 "the scalar param"
                  let block = Fit.paramsBlock r [ "a[0]", 0.1; "a[1]", 0.1; "s", 0.5 ]
                  Expect.stringContains block "a[0] = " "the block names components"
                  let again = compile (text.Replace("fit a to", block + "\nfit a to"))
                  Expect.equal again.ParameterSets [| "fitted" |] "the block compiles as a set"
                  let set = again.Program.File.Sets.Head.Values
                  Expect.floatClose { absolute = 0.0; relative = 1e-5 } set[0] r.Fitted[0] "a[0] pasted"
                  Expect.floatClose { absolute = 0.0; relative = 1e-5 } set[1] r.Fitted[1] "a[1] pasted")
          } ]

/// A vector param's whole value as a list in a params block (`a = [1, 2, 3]`) and on the command line
/// (`--set 'a=[1,2,3]'`): the same sets as the components written one by one; located errors for a
/// wrong length, a list for a scalar param or for one component, a component set twice, a value outside
/// the domain (at the value); the printed file parses back to the same sets.
[<Tests>]
let lists =
    testList
        "Vector params.lists"
        [ let err (text: string) (line: int) (col: int) (fragment: string) =
              let d = firstError text
              Expect.stringContains d.Message fragment (sprintf "message: %s" d.Rendered)
              Expect.equal (d.Line, d.Col) (line, col) (sprintf "position of: %s" d.Rendered)

          test "params p { a = [...] } is the set of its components, in order, with constant expressions" {
              let sets (extra: string) = (compile (model "param a[K] = 0" "-a[0] * x" extra "mean(x)")).Program.File.Sets
              let listed = sets "params p { a = [1, 2 * 2, K]; s = 0.25 }\nparams q {\n  a = [\n    0.5,\n    -1,\n    3\n  ]\n}"
              let named = sets "params p { a[0] = 1; a[1] = 4; a[2] = 3; s = 0.25 }\nparams q { a[0] = 0.5; a[1] = -1; a[2] = 3 }"
              Expect.equal (listed |> List.map (fun s -> s.Name, s.Values)) (named |> List.map (fun s -> s.Name, s.Values)) "the same sets"
              Expect.equal listed.Head.Values [| 1.0; 4.0; 3.0; 0.25 |] "a[0], a[1], a[2], s"
          }

          test "a wrong length, a list for a scalar param or a component, a component set twice, a value outside the domain: located" {
              let m extra = model "param a[K] = 1 in (0, inf)" "-a[0] * x" extra "mean(x)"
              err (m "params p { a = [1, 2] }") 10 16 "a has 3 components, the list has 2"
              err (m "params p { a = [1, 2, 3, 4] }") 10 16 "a has 3 components, the list has 4"
              err (m "params p { s = [1] }") 10 16 "'s' is a scalar param: its value is a number, not a list"
              err (m "params p { a[1] = [1] }") 10 19 "'a[1]' is one component of a vector param: its value is a number, not a list"
              err (m "params p { b = [1] }") 10 12 "unknown param 'b'"
              err (m "params p { a = [1, 2, 3]; a[1] = 2 }") 10 27 "param 'a[1]' is set twice"
              err (m "params p { a = [1, -2, 3] }") 10 20 "value -2 of param 'a[1]' is outside its domain (0, inf)"
              err (m "params p { a = [1, 2, x] }") 10 23 "'x' is not a const"
              err (m "params p { a = [] }") 10 17 "expected expression"
          }

          test "the printed file parses back to the same sets" {
              let text = model "param a[K] = 0" "-a[0] * x" "params p { a = [1, -2.5, 1e-3] }" "mean(x)"

              match Parser.parseFile text with
              | Error e -> failwithf "%A" e
              | Ok f ->
                  let printed = Printer.printFile f
                  Expect.stringContains printed "a = [1, -2.5, 0.001]" "printed as a list"
                  Expect.equal (compile printed).Program.File.Sets (compile text).Program.File.Sets "the same sets"
          }

          test "--set 'a=[...]' sets every component; a wrong length or a scalar param is refused (exit 2)" {
              use d = new CliTests.TempDir()
              let f = d.File "v.sde" (model "param a[K] = 0.5" "-a[0] * x" "params p { a[1] = 9 }" "mean(x)")
              let o = CliTests.dsl [ "run"; f; "--json"; "--quiet"; "--set"; "a=[1, 2,3]" ]
              Expect.equal o.Code 0 (CliTests.describe [ "run"; f ] o)
              let set = (CliTests.parseJson o).["sets"].[0].["params"].["a"].AsArray() |> Seq.map (fun x -> x.GetValue<float>()) |> List.ofSeq
              Expect.equal set [ 1.0; 2.0; 3.0 ] "a from the list, over the set's a[1] = 9"

              for arg, fragment in [ "a=[1,2]", "a has 3 components, the list has 2"
                                     "a=[1,2,3,4]", "a has 3 components, the list has 4"
                                     "s=[1]", "'s' is a scalar param: its value is a number, not a list"
                                     "a=[1,x,3]", "'x' is not a number"
                                     "a=[]", "the list is empty" ] do
                  let o = CliTests.dsl [ "run"; f; "--quiet"; "--set"; arg ]
                  Expect.equal o.Code 2 (CliTests.describe [ "run"; f; "--set"; arg ] o)
                  Expect.stringContains o.Err fragment arg
          } ]
