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
          } ]
