/// The embedding API (`Sde.SdeCompiler`) used from F#, as a host program would.
module Sde.Tests.ApiTests

open System
open Expecto
open Sde.Lang
open Sde

let ou =
    """model OU {
  param theta = 1 in (0, inf)
  param sigma = 0.5 in (0, inf)
  param x0 = 1
  state x
  brownian W
  init x = x0
  d x = -theta * x dt + sigma dW
}

simulate { paths = 4000; dt = 0.01; T = 2; seed = 7 }

query {
  mean(x)
  mean(x^2)
  density(x) on [-1.5, 2] bins 35
}
"""

let expectOk r =
    match r with
    | Ok p -> p
    | Error (ds: SourceDiagnostic list) -> failtestf "unexpected diagnostics: %A" (ds |> List.map string)

[<Tests>]
let tests =
    testList
        "Api"
        [ test "Api compile and run from a string" {
              let p = SdeCompiler.Compile(ou, "ou.sde") |> expectOk
              Expect.equal p.ModelName "OU" "model name"
              Expect.equal p.Parameters [| "theta"; "sigma"; "x0" |] "parameters"
              Expect.equal p.ParameterSets [| "default" |] "sets"
              Expect.equal p.Dimension 1 "dimension"
              let r = p.Run(threads = 1)
              Expect.equal r.Model "OU" "report model"
              Expect.equal r.Settings.Paths 4000L "paths"
              let res = r.Sets.Head.Results
              Expect.equal (res |> List.map (fun q -> q.Query)) [ "mean(x)"; "mean(x^2)"; "density(x) on [-1.5, 2] bins 35" ] "queries"
              let m = res.Head
              // Euler chain: E[x_N] = 0.99^200 = 0.13398.
              Expect.isLessThan (abs (m.Value - 0.99 ** 200.0)) (5.0 * m.StdErr) "mean(x) near the Euler-chain value"
              Expect.isGreaterThan m.StdErr 0.0 "a standard error"
              Expect.equal res[2].Grid.Length 35 "density bins"
              Expect.stringContains (SdeCompiler.ToJson r) "\"query\": \"mean(x)\"" "JSON"
          }

          test "Api overrides and determinism" {
              let o = { Frontend.noOverrides with Paths = Some 500L; Seed = Some 3UL; Sets = [ "x0", 2.0 ] }
              let p = SdeCompiler.Compile(ou, "ou.sde", o) |> expectOk
              let a = p.Run(threads = 1)
              let b = p.Run(threads = 2, progress = Action<float>(ignore))
              Expect.equal a.Settings.Paths 500L "paths"
              Expect.equal a.Settings.Seed 3UL "seed"
              Expect.equal a.Sets.Head.Params [ "theta", 1.0; "sigma", 0.5; "x0", 2.0 ] "params"
              Expect.equal b.Sets a.Sets "same results on 1 and 2 threads"
          }

          test "Api diagnostics are located" {
              match SdeCompiler.Compile(ou.Replace("-theta * x dt", "-thetaa * x dt"), "bad.sde") with
              | Ok _ -> failtest "compiled a bad model"
              | Error ds ->
                  let d = List.head ds
                  Expect.equal d.File "bad.sde" "file"
                  Expect.equal d.Line 8 "line"
                  Expect.isGreaterThan d.Col 1 "column"
                  Expect.stringContains d.Message "thetaa" "message names the unknown name"
                  Expect.stringStarts (string d) "bad.sde:8:" "rendering"
                  Expect.stringContains d.Rendered "^" "caret"
          }

          test "Api bad overrides are located diagnostics" {
              let o = { Frontend.noOverrides with Sets = [ "nope", 1.0 ] }

              match SdeCompiler.Compile(ou, "ou.sde", o) with
              | Ok _ -> failtest "accepted an unknown parameter"
              | Error ds -> Expect.stringStarts (List.head ds).Rendered "ou.sde: error: --set: " "rendering"
          }

          test "Api every result kind has points and a text that are true" {
              // a density's Value is 0 (not its values): the README's loop printed `density(...) = 0 ± 0`
              let text =
                  ou.Replace("query {\n  mean(x)\n", "query {\n  mean(x)\n  d mean(x) / d theta\n  mean(x) every 1\n")
                      .Replace("simulate { paths = 4000", "simulate { paths = 400")
              let p = SdeCompiler.Compile(text, "ou.sde") |> expectOk
              let r = p.Run(threads = 1)
              let res = r.Sets.Head.Results
              let byKind k = res |> List.find (fun q -> q.Kind = k)
              let m = byKind "mean"
              Expect.equal (m.Points()).Length 1 "a scalar: one point"
              Expect.equal (m.Points()).[0].Value m.Value "its value"
              let d = byKind "density"
              let pts = d.Points()
              Expect.equal pts.Length 35 "a density: a point per bin"
              Expect.equal (pts |> Array.map (fun q -> q.X)) d.Grid "bin centres"
              Expect.equal (pts |> Array.map (fun q -> q.Value)) d.Values "values per bin"
              Expect.equal (pts |> Array.map (fun q -> q.StdErr)) d.StdErrs "errors per bin"
              // the density integrates to the mass inside the range (closed form: 1 less what fell outside)
              let width = 3.5 / 35.0
              let mass = 1.0 - float (d.Below + d.Above) / float d.Count
              Expect.floatClose Accuracy.high (pts |> Array.sumBy (fun q -> q.Value * width)) mass "the points are the density"
              Expect.isFalse ((d.Text()).Contains "= 0 ± 0") (d.Text())
              Expect.stringContains (d.Text()) "35 bins" (d.Text())
              let series = byKind "mean_series"
              Expect.equal ((series.Points()) |> Array.map (fun q -> q.X)) [| 0.0; 1.0; 2.0 |] "a series: a point per time"
              for q in res do
                  Expect.stringStarts (q.Text()) q.Query "the text names the query"
                  Expect.isTrue (q.Points() |> Array.forall (fun pt -> Double.IsFinite pt.Value)) (sprintf "%s: finite values" q.Query)
          }

          test "Api ess is a count with an exact (zero) standard error" {
              let text =
                  "model M {\n  state x\n  brownian W\n  weight w\n  d log w = -x^2 dt\n  d x = -x dt + dW\n}\n"
                  + "simulate { paths = 300; dt = 0.01; T = 0.5; seed = 3 }\nquery {\n  mean(x)\n  ess\n}\n"
              let p = SdeCompiler.Compile(text, "w.sde") |> expectOk
              let e = p.Run(threads = 1).Sets.Head.Results |> List.find (fun q -> q.Kind = "ess")
              let pt = (e.Points()).[0]
              Expect.equal pt.StdErr 0.0 "exact: computed from the run's own weights"
              Expect.isTrue (pt.Value >= 1.0 && pt.Value <= 300.0) "between 1 and the paths"
              Expect.stringContains (e.Text()) "of 300 paths" (e.Text())
          }

          test "Api C#-friendly members" {
              let mutable ds: SourceDiagnostic[] = null
              let bad = SdeCompiler.TryCompile("model {", "x.sde", &ds)
              Expect.isTrue (isNull (box bad)) "null on errors"
              Expect.isNonEmpty ds "diagnostics"

              let o = SdeCompiler.MakeOverrides(Nullable 300L, Nullable(), Nullable(), Nullable 5UL, null, dict [ "sigma", 0.25 ])
              let p = SdeCompiler.TryCompile(ou, "ou.sde", o, &ds)
              Expect.isEmpty ds "no diagnostics"
              let r = p.Simulate(1, null)
              Expect.equal r.Settings.Paths 300L "paths"
              Expect.equal r.Settings.Seed 5UL "seed"
              Expect.equal (r.Sets.Head.Params |> List.find (fst >> (=) "sigma") |> snd) 0.25 "sigma"
              Expect.equal (p.Simulate(2, null)).Sets r.Sets "Simulate(2) = Simulate(1)"
              // positional nulls for the optional progress and backend: no progress, the CPU engine
              // (an explicit null progress was Some null, and threw when the run reported progress)
              Expect.equal (p.Run(1, null, null)).Sets r.Sets "Run(1, null, null) = Simulate(1, null)"
              Expect.equal (p.Run(1, null, "cpu")).Sets r.Sets "Run(1, null, \"cpu\")"
          } ]
