module Sde.Tests.OutputTests

open System
open System.IO
open System.Text.Json
open System.Xml.Linq
open Expecto
open Sde.Lang
open Sde.Lang.Report

/// A result with every field empty but its kind and query (for output tests elsewhere too).
let internal outcome kind query =
    { Query = query
      Kind = kind
      Wrt = None
      Method = None
      Value = nan
      StdErr = nan
      Grid = [||]
      Values = [||]
      StdErrs = [||]
      Lo = nan
      Hi = nan
      Below = 0L
      Above = 0L
      Count = 100000L
      NonFinite = 0L
      Rate = None
      RateSource = None
      CovectorGrowth = None
      Control = None
      ControlCoefficient = None
      WeightKurtosis = None
      WeightMaxShare = None
      Windows = []
      ValueWindow = None
      GridY = [||]
      Weighted = false
      Resamplings = None
      Bias = None
      Extrapolated = false
      Warnings = [] }

let private grid lo hi n =
    Array.init n (fun i -> lo + (float i + 0.5) * (hi - lo) / float n)

let private meanQ =
    { outcome "mean" "mean(x[0])" with
        Value = 2.3456789
        StdErr = 0.0123 }

let private densityQ =
    let g = grid -10.0 15.0 25

    { outcome "density" "density(x[0]) on [-10, 15] bins 25" with
        Grid = g
        Values = g |> Array.map (fun x -> exp (-(x - 2.0) * (x - 2.0) / 8.0) / sqrt (8.0 * Math.PI))
        StdErrs = g |> Array.map (fun x -> 0.002 + 0.001 * exp (-(x - 2.0) * (x - 2.0) / 8.0))
        Lo = -10.0
        Hi = 15.0
        Below = 12L
        Above = 3L }

let private responseQ =
    { outcome "response" "d mean(x[0]) / d F" with
        Wrt = Some "F"
        Method = Some "divergence_kernel(rate = 10)"
        Value = nan
        StdErr = 0.02 }

let private densityResponseQ =
    let g = grid -10.0 15.0 30

    { outcome "density_response" "d density(x[0]) / d F on [-10, 15] bins 30" with
        Wrt = Some "F"
        Method = Some "divergence_kernel(alpha = 0.2)"
        Grid = g
        Values = g |> Array.map (fun x -> -(x - 2.0) * exp (-(x - 2.0) * (x - 2.0) / 8.0) / 10.0)
        StdErrs = g |> Array.map (fun _ -> 0.01)
        Lo = -10.0
        Hi = 15.0 }

let private report =
    { Model = "Lorenz96"
      Source = "examples/lorenz96.sde"
      Settings =
        { Paths = 100000L
          Dt = 0.005
          T = 20.0
          Seed = 42UL
          Scheme = "euler_maruyama"
          Backend = "cpu" }
      Sets =
        [ { Name = "base"
            Params = [ "F", 8.0; "sigma", 0.5 ]
            Results = [ meanQ; densityQ; responseQ; densityResponseQ ]; Failure = None } ]
      Warnings = []
      Seconds = 3.1
      PathStepsPerSecond = 6.4e6 }

let private kindOf (e: JsonElement) (name: string) =
    match e.TryGetProperty name with
    | true, v -> Some v.ValueKind
    | _ -> None

let private expectKind (e: JsonElement) name kind =
    Expect.equal (kindOf e name) (Some kind) (sprintf "field %s" name)

let private numberArray (e: JsonElement) name n =
    expectKind e name JsonValueKind.Array
    Expect.equal (e.GetProperty(name).GetArrayLength()) n (sprintf "length of %s" name)

let private tempDir () =
    let d = Path.Combine(Path.GetTempPath(), "sde-output-tests-" + Guid.NewGuid().ToString "N")
    Directory.CreateDirectory d |> ignore
    d

[<Tests>]
let jsonTests =
    testList
        "Output.json"
        [ test "every contract field is present with the right kind" {
              use doc = JsonDocument.Parse(Output.toJson report)
              let root = doc.RootElement
              expectKind root "model" JsonValueKind.String
              expectKind root "source" JsonValueKind.String
              let settings = root.GetProperty "settings"

              for f in [ "paths"; "dt"; "T"; "seed" ] do
                  expectKind settings f JsonValueKind.Number

              for f in [ "scheme"; "backend" ] do
                  expectKind settings f JsonValueKind.String

              Expect.equal (settings.GetProperty("seed").GetUInt64()) 42UL "seed"
              Expect.equal (settings.GetProperty("dt").GetDouble()) 0.005 "dt round-trips"
              let set = root.GetProperty("sets")[0]
              expectKind set "name" JsonValueKind.String
              Expect.equal (set.GetProperty("params").GetProperty("F").GetDouble()) 8.0 "param F"
              let results = set.GetProperty "results"
              Expect.equal (results.GetArrayLength()) 4 "four results"

              let mean = results[0]
              Expect.equal (mean.GetProperty("kind").GetString()) "mean" "kind"
              Expect.equal (mean.GetProperty("query").GetString()) "mean(x[0])" "query"
              Expect.equal (mean.GetProperty("value").GetDouble()) 2.3456789 "value round-trips"
              expectKind mean "stderr" JsonValueKind.Number
              expectKind mean "count" JsonValueKind.Number

              let density = results[1]
              numberArray density "grid" 25
              numberArray density "values" 25
              numberArray density "stderrs" 25
              numberArray density "range" 2
              Expect.equal (density.GetProperty("below").GetInt64()) 12L "below"
              Expect.equal (density.GetProperty("above").GetInt64()) 3L "above"

              let response = results[2]
              Expect.equal (response.GetProperty("wrt").GetString()) "F" "wrt"
              Expect.equal (response.GetProperty("method").GetString()) "divergence_kernel(rate = 10)" "method"
              expectKind response "stderr" JsonValueKind.Number

              let dr = results[3]
              expectKind dr "wrt" JsonValueKind.String
              expectKind dr "method" JsonValueKind.String
              numberArray dr "grid" 30
              numberArray dr "values" 30
              numberArray dr "stderrs" 30
              numberArray dr "range" 2

              let timing = root.GetProperty "timing"
              expectKind timing "seconds" JsonValueKind.Number
              Expect.equal (timing.GetProperty("path_steps_per_second").GetDouble()) 6.4e6 "rate"
          }

          test "NaN and infinities become null" {
              let r =
                  { report with
                      Seconds = infinity
                      Sets =
                          [ { Name = "s"
                              Params = [ "a", nan ]
                              Results = [ responseQ; { densityQ with Values = [| nan; 1.0; -infinity |] } ]; Failure = None } ] }

              use doc = JsonDocument.Parse(Output.toJson r)
              let root = doc.RootElement
              let set = root.GetProperty("sets")[0]
              expectKind (root.GetProperty "timing") "seconds" JsonValueKind.Null
              expectKind (set.GetProperty "params") "a" JsonValueKind.Null
              expectKind ((set.GetProperty "results")[0]) "value" JsonValueKind.Null
              let results = set.GetProperty "results"
              let values = results[1].GetProperty "values"
              Expect.equal (values[0].ValueKind) JsonValueKind.Null "NaN bin"
              Expect.equal (values[1].GetDouble()) 1.0 "finite bin"
              Expect.equal (values[2].ValueKind) JsonValueKind.Null "infinite bin"
          }

          test "numbers are written in shortest round-trip form" {
              let json = Output.toJson report
              Expect.stringContains json "\"dt\": 0.005" "dt"
              Expect.stringContains json "\"T\": 20" "T"
              Expect.stringContains json "\"value\": 2.3456789" "value"
          } ]

[<Tests>]
let tableTests =
    testList
        "Output.table"
        [ test "contains each query text, a ± and the timing" {
              let t = Output.table report

              for q in [ meanQ; densityQ; responseQ; densityResponseQ ] do
                  Expect.stringContains t q.Query q.Query

              Expect.stringContains t "±" "plus-minus"
              Expect.stringContains t "set base" "set header"
              Expect.stringContains t "F = 8" "parameter value"
              Expect.stringContains t "path-steps/s" "timing"
              Expect.isFalse (t.Contains "\u001b") "no escape codes in the plain table"
          }

          test "value ± stderr keeps two significant digits of the stderr" {
              Expect.equal (Output.valueWithError 2.3456789 0.0123) "2.346 ± 0.012" "small"
              Expect.equal (Output.valueWithError 1234.5 56.7) "1235 ± 57" "units"
              Expect.equal (Output.valueWithError 123456.0 789.0) "123460 ± 790" "tens"
              Expect.equal (Output.valueWithError 1.234e-9 1.2e-11) "(1.234 ± 0.012)e-09" "tiny"
              Expect.equal (Output.valueWithError 1e15 1e14) "(1.00 ± 0.10)e+15" "huge"
              Expect.equal (Output.valueWithError -0.5 0.25) "-0.50 ± 0.25" "negative"
              Expect.stringContains (Output.valueWithError nan 0.1) "nan" "nan"
          }

          test "sparkline has one character per bin" {
              Expect.equal (Output.sparkline densityQ.Values).Length 25 "density"
              Expect.equal (Output.sparkline [| 0.0; 1.0; 0.5; nan |]) " █▄·" "levels"
              let up, down = Output.sparklineSigned densityResponseQ.Values
              Expect.equal up.Length 30 "upper row"
              Expect.equal down.Length 30 "lower row"
              let up, down = Output.sparklineSigned [| 1.0; -1.0; 0.0 |]
              Expect.equal up "█  " "positive row"
              Expect.equal down " █ " "negative row"
          }

          test "summary names range, outside mass and stderr" {
              let s = Output.summary densityQ
              Expect.stringContains s "[-10, 15]" "range"
              Expect.stringContains s "12 below" "below"
              Expect.stringContains s "3 above" "above"
              Expect.stringContains s "stderr" "stderr"
          } ]

[<Tests>]
let plotTests =
    testList
        "Output.plot"
        [ test "density SVGs are well-formed and titled" {
              let dir = tempDir ()

              for i, q in [ 1, densityQ; 3, densityResponseQ ] do
                  let path = Path.Combine(dir, Plot.fileName "base" i q)
                  Plot.writeDensity path q "Lorenz96" "base"
                  Expect.isTrue (File.Exists path) "written"
                  let text = File.ReadAllText path
                  XDocument.Parse text |> ignore
                  Expect.stringContains text "Lorenz96" "title"
                  Expect.stringContains text "<svg" "svg"
          }

          test "series SVGs are well-formed and titled" {
              let dir = tempDir ()
              let path = Path.Combine(dir, "sub", "spectrum.svg")
              let xs = [| 1.0; 2.0; 3.0; 4.0 |]

              Plot.writeSeries
                  path
                  "Lyapunov spectrum"
                  "index"
                  "exponent"
                  [ "λ", xs, [| 0.9; 0.0; -0.5; -14.0 |], [| 0.1; 0.05; 0.1; 0.3 |]
                    "other", xs, [| 1.0; 0.1; nan; -13.0 |], [||] ]

              let text = File.ReadAllText path
              XDocument.Parse text |> ignore
              Expect.stringContains text "Lyapunov spectrum" "title"
          }

          test "file names are safe" {
              let ok (s: string) =
                  s |> Seq.forall (fun c -> Char.IsAsciiLetterOrDigit c || c = '_' || c = '.' || c = '-')

              Expect.equal (Plot.fileName "default" 2 densityQ) "default_q2_density_x0.svg" "example"
              Expect.equal (Plot.fileName "base" 3 densityResponseQ) "base_q3_density_response_x0_F.svg" "response"

              let weird =
                  { densityQ with Query = "density(x[0] * y / (1 + z^2)) on [0, 1] bins 3" }

              for name in [ Plot.fileName "a b/../c" 1 weird; Plot.fileName "" 0 weird; Plot.fileName "ü€" 5 densityQ ] do
                  Expect.isTrue (ok name) name
                  Expect.isFalse (name.StartsWith ".") name
          } ]

[<Tests>]
let progressTests =
    testList
        "Output.progress"
        [ test "render fits the width and shows the percentage" {
              let line = Progress.render "simulating" 80 0.5 10.0
              Expect.stringContains line "50%" "percentage"
              Expect.stringContains line "ETA 0:10" "eta"
              Expect.isLessThan line.Length 80 "fits"
          }

          test "update and finish are safe from many threads" {
              let update, finish = Progress.create "test"
              Array.Parallel.iter (fun i -> update (float i / 1000.0)) (Array.init 1000 id)
              finish ()
              finish ()
          } ]
