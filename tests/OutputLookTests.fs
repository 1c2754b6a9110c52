/// Output people read and look at (issue 13): wrapped spectra, sweep summaries and plots, CSV, the SVGs'
/// details, and a progress bar that advances per step.
module Sde.Tests.OutputLookTests

open System
open System.Globalization
open System.IO
open System.Text
open System.Xml.Linq
open Expecto
open Sde.Core
open Sde.Lang
open Sde.Lang.Report
open Sde.Tests.TestModels

let private outcome kind query = { OutputTests.outcome kind query with Count = 1000L }

let private scalar kind query value stderr =
    { outcome kind query with Value = value; StdErr = stderr }

let private spectrum k =
    { outcome "lyapunov" (sprintf "lyapunov(%d)" k) with
        Grid = Array.init k (fun i -> float (i + 1))
        Values = Array.init k (fun i -> 1.5 - 0.17 * float i)
        StdErrs = Array.init k (fun i -> 0.01 + 0.003 * float i)
        Value = -36.8
        StdErr = 0.03 }

let private density (values: float[]) =
    let n = values.Length

    { outcome "density" (sprintf "density(x) on [0, 1] bins %d" n) with
        Grid = Array.init n (fun i -> (float i + 0.5) / float n)
        Values = values
        StdErrs = Array.create n 0.01
        Lo = 0.0
        Hi = 1.0 }

let private reportOf (sets: SetReport list) =
    { Model = "OU"
      Source = "ou.sde"
      Settings = { Paths = 1000L; Dt = 0.01; T = 1.0; Seed = 1UL; Scheme = "euler_maruyama"; Backend = "cpu" }
      Sets = sets
      Seconds = 1.0
      PathStepsPerSecond = 1e6
      Warnings = [] }

/// A sweep of theta over 0.5, 1, 1.5: mean(x^2) = 1/(2θ), its response -1/(2θ²), and a density.
let private sweepReport =
    let set (theta: float) =
        { Failure = None; Name = sprintf "theta=%s" (Output.num theta)
          Params = [ "theta", theta; "sigma", 1.0 ]
          Results =
            [ scalar "mean" "mean(x^2)" (0.5 / theta) 0.01
              { scalar "response" "d mean(x^2) / d theta with divergence_kernel" (-0.5 / (theta * theta)) 0.02 with
                  Wrt = Some "theta"
                  Method = Some "divergence_kernel" }
              density [| 0.5; 1.5 |] ] }

    reportOf [ set 0.5; set 1.0; set 1.5 ]

let private tempDir () =
    let d = Path.Combine(Path.GetTempPath(), "sde-look-tests-" + Guid.NewGuid().ToString "N")
    Directory.CreateDirectory d |> ignore
    d

/// The fields of the CSV lines (RFC 4180: quoted fields, doubled quotes inside).
let private parseCsv (text: string) : string list list =
    let rows = Collections.Generic.List<string list>()
    let fields = Collections.Generic.List<string>()
    let field = StringBuilder()
    let mutable quoted = false
    let mutable i = 0

    while i < text.Length do
        let c = text[i]

        if quoted then
            if c = '"' && i + 1 < text.Length && text[i + 1] = '"' then
                field.Append '"' |> ignore
                i <- i + 1
            elif c = '"' then quoted <- false
            else field.Append c |> ignore
        elif c = '"' then quoted <- true
        elif c = ',' then
            fields.Add(string field)
            field.Clear() |> ignore
        elif c = '\n' then
            fields.Add(string field)
            field.Clear() |> ignore
            rows.Add(List.ofSeq fields)
            fields.Clear()
        else field.Append c |> ignore

        i <- i + 1

    List.ofSeq rows

/// The SVG's <text> elements: (x, y, text-anchor, rotated, content).
let private texts (svg: string) =
    let doc = XDocument.Parse svg

    doc.Descendants()
    |> Seq.filter (fun e -> e.Name.LocalName = "text")
    |> Seq.map (fun e ->
        let t = e.Attribute(XName.Get "transform").Value
        let inside = t.Substring(t.IndexOf '(' + 1, t.IndexOf ')' - t.IndexOf '(' - 1).Split ','
        let x, y = Double.Parse(inside[0], CultureInfo.InvariantCulture), Double.Parse(inside[1], CultureInfo.InvariantCulture)
        x, y, e.Attribute(XName.Get "text-anchor").Value, t.Contains "rotate", e.Value.Trim())
    |> List.ofSeq

let private isNumber (s: string) =
    fst (Double.TryParse(s.Replace('−', '-'), NumberStyles.Float, CultureInfo.InvariantCulture))

/// Tick labels of the bottom axis: numbers centred under their tick.
let private bottomTicks svg =
    texts svg |> List.filter (fun (_, _, a, r, s) -> a = "middle" && not r && isNumber s)

[<Tests>]
let tableTests =
    testList
        "Output.look.table"
        [ test "a spectrum of 40 exponents is a wrapped table within 100 characters" {
              let t = Output.table (reportOf [ { Failure = None; Name = "default"; Params = []; Results = [ spectrum 40 ] } ])
              let lines = t.Split '\n'
              Expect.all lines (fun l -> l.Length <= 100) (sprintf "every line within 100 characters\n%s" t)
              let rows = lines |> Array.filter (fun l -> l.Contains "λ")
              Expect.isGreaterThanOrEqual rows.Length 8 "several rows"
              Expect.isTrue (rows |> Array.forall (fun r -> r.Split('=').Length - 1 >= 2 || r = Array.last rows)) "several exponents a row"

              for i in 1..40 do
                  Expect.isTrue (rows |> Array.exists (fun r -> r.Contains(sprintf "λ%-2d = " i))) (sprintf "λ%d" i)

              Expect.stringContains t "40 exponents" "header"
              Expect.stringContains t "log|det J|" "the sum line"
          }

          test "a sweep has a summary table per scalar query after the sets" {
              let t = Output.table sweepReport
              let at (s: string) = t.IndexOf s
              Expect.isGreaterThan (at "sweep over theta (3 sets)") (at "set theta=1.5") "after the per-set tables"

              for theta in [ 0.5; 1.0; 1.5 ] do
                  let line = sprintf "theta = %-3s   %s" (Output.num theta) (Output.valueWithError (0.5 / theta) 0.01)
                  Expect.stringContains t line (sprintf "mean at %g\n%s" theta t)

              let summary = t.Substring(at "sweep over theta")
              Expect.stringContains summary "d mean(x^2) / d theta" "the response's summary"
              Expect.isFalse (summary.Contains "density(") "no summary of a binned query"
          }

          test "sets that are not a sweep have no summary" {
              let one = { sweepReport with Sets = [ List.head sweepReport.Sets ] }
              Expect.isFalse ((Output.table one).Contains "sweep over") "one set"
              let named = { sweepReport with Sets = sweepReport.Sets |> List.mapi (fun i s -> { s with Name = sprintf "set%d" i }) }
              Expect.isFalse ((Output.table named).Contains "sweep over") "params blocks"
              Expect.equal (Output.sweeps sweepReport |> List.map (fun s -> s.Param, s.Values)) [ "theta", [| 0.5; 1.0; 1.5 |] ] "the sweep"
          }

          test "the method is printed once: no brackets when the query ends with exactly that method" {
              let r q m = { scalar "response" q 0.5 0.01 with Method = Some m }
              let t =
                  Output.table (reportOf [ { Failure = None; Name = "default"; Params = []
                                             Results = [ r "d mean(x) / d a with pathwise" "pathwise"
                                                         r "d mean(x) / d a with finite_difference(h = 0.01)" "finite_difference(h = 0.01)"
                                                         r "d mean(x) / d a with divergence_kernel(rate = 20)" "divergence_kernel(rate = 20, mode = exact)"
                                                         r "d mean(x) / d a" "divergence_kernel(rate = 10 (adaptive), mode = exact)" ] } ])
              Expect.isFalse (t.Contains "[pathwise]") "pathwise once"
              Expect.isFalse (t.Contains "[finite_difference") "finite differences once"
              Expect.stringContains t "[divergence_kernel(rate = 20, mode = exact)]" "the mode the query did not say"
              Expect.stringContains t "[divergence_kernel(rate = 10 (adaptive), mode = exact)]" "the default's method"
          } ]

[<Tests>]
let csvTests =
    testList
        "Output.look.csv"
        [ test "one row per estimate under the header, fields quoted as RFC 4180 asks" {
              let r =
                  reportOf
                      [ { Failure = None; Name = "a,b"
                          Params = []
                          Results =
                            [ scalar "mean" "mean(x)" 0.25 nan
                              density [| 0.5; 1.5 |]
                              spectrum 3
                              { scalar "response" "d mean(\"x\") / d F" -1.0 0.1 with Wrt = Some "F"; Method = Some "divergence_kernel(rate = 10, mode = iterative)" } ] } ]

              let rows = parseCsv (Output.toCsv r)
              Expect.equal (List.head rows) [ "set"; "query"; "kind"; "wrt"; "method"; "index"; "x"; "value"; "stderr" ] "header"
              let body = List.tail rows
              Expect.equal body.Length (1 + 2 + (3 + 1) + 1) "scalar, 2 bins, 3 exponents and the log-det rate, response"
              Expect.all body (fun row -> row.Length = 9 && row[0] = "a,b") "nine fields, the set"
              Expect.equal body[0] [ "a,b"; "mean(x)"; "mean"; ""; ""; ""; ""; "0.25"; "" ] "a scalar; NaN is empty"
              Expect.equal body[2] [ "a,b"; "density(x) on [0, 1] bins 2"; "density"; ""; ""; "1"; "0.75"; "1.5"; "0.01" ] "bin 1 at its centre"
              Expect.equal (body[3][5], body[5][5]) ("1", "3") "exponents numbered from 1"
              Expect.equal (body[6][5], body[6][7]) ("", "-36.8") "the log-det rate"
              Expect.equal (body[7][1], body[7][3], body[7][4]) ("d mean(\"x\") / d F", "F", "divergence_kernel(rate = 10, mode = iterative)") "quotes and commas survive"
              Expect.equal (Output.csvField "a\"b") "\"a\"\"b\"" "doubled quote"
              Expect.equal (Output.csvField "plain") "plain" "unquoted"
          }

          test "numbers read back to the same bits" {
              let v = 0.1 + 0.2
              let row = parseCsv (Output.toCsv (reportOf [ { Failure = None; Name = "s"; Params = []; Results = [ scalar "mean" "mean(x)" v 1e-300 ] } ])) |> List.item 1
              Expect.equal (Double.Parse(row[7], CultureInfo.InvariantCulture)) v "value"
              Expect.equal (Double.Parse(row[8], CultureInfo.InvariantCulture)) 1e-300 "stderr"
          } ]

[<Tests>]
let plotTests =
    testList
        "Output.look.plots"
        [ test "SVGs start with the XML declaration, not a byte order mark" {
              let dir = tempDir ()
              let d = Path.Combine(dir, "d.svg")
              let s = Path.Combine(dir, "s.svg")
              Plot.writeDensity d (density [| 0.5; 1.5 |]) "OU" "default"
              Plot.writeSpectrum s (spectrum 3) "OU" "default"

              for f in [ d; s ] do
                  let bytes = File.ReadAllBytes f
                  Expect.equal (Encoding.ASCII.GetString(bytes, 0, 5)) "<?xml" f
          }

          test "a long subtitle is wrapped, and the method printed once" {
              let dir = tempDir ()
              let path = Path.Combine(dir, "r.svg")
              let method = "divergence_kernel(mode = iterative, rate = 10, alpha = 0.2)"

              let q =
                  { density [| 0.1; -0.2; 0.3 |] with
                      Kind = "density_response"
                      Query = sprintf "d density(x[0] + 0.5 * x[1] * x[2] - sin(x[3]) / (1 + x[4]^2)) / d F on [0, 1] bins 3 stationary window 2 with %s" method
                      Wrt = Some "F"
                      Method = Some method }

              Plot.writeDensity path q "Lorenz96" "default"
              let svg = File.ReadAllText path
              let lines = texts svg |> List.map (fun (_, _, _, _, s) -> s)
              Expect.all lines (fun s -> s.Length <= 95) (sprintf "no line the plot clips:\n%s" (String.concat "\n" lines))
              Expect.isGreaterThanOrEqual (lines |> List.filter (fun s -> s.Contains "d density" || s.Contains "stationary" || s.Contains "[divergence")).Length 2 "wrapped over lines"
              let all = String.concat " " lines
              Expect.equal (all.Split("divergence_kernel").Length - 1) 1 "the method once"

              let titled = Path.Combine(dir, "t.svg")
              let title = "divergence kernel: standard error against the rate (relative to the best fixed rate; clipped at 10x)"
              Plot.writeSeries titled title "x" "y" [ "a", [| 1.0; 2.0 |], [| 1.0; 2.0 |], [||] ]
              let titleLines = texts (File.ReadAllText titled) |> List.map (fun (_, _, _, _, s) -> s) |> List.filter (fun s -> title.Contains s && s.Length > 5)
              Expect.isGreaterThanOrEqual titleLines.Length 2 "a long title on several lines"
              Expect.all titleLines (fun s -> s.Length <= 70) (sprintf "title lines fit: %A" titleLines)
          }

          test "spectrum plots have whole-number index ticks" {
              let dir = tempDir ()

              for k in [ 2; 3; 7; 40 ] do
                  let path = Path.Combine(dir, sprintf "s%d.svg" k)
                  Plot.writeSpectrum path (spectrum k) "L96" "default"
                  let ticks = bottomTicks (File.ReadAllText path) |> List.map (fun (_, _, _, _, s) -> s)
                  Expect.isNonEmpty ticks "ticks"
                  Expect.all ticks (fun s -> not (s.Contains ".")) (sprintf "k = %d: %A" k ticks)
                  Expect.equal (List.distinct ticks) ticks (sprintf "k = %d: no tick between two indices (shown rounded): %A" k ticks)
          }

          test "histograms are drawn as steps, even steps under a pixel" {
              let dir = tempDir ()
              let path = Path.Combine(dir, "h.svg")
              let values = Array.init 40 (fun i -> 1.0 + 1e-4 * float i + (if i = 20 then 0.5 else 0.0))
              Plot.writeDensity path (density values) "OU" "default"
              let doc = XDocument.Parse(File.ReadAllText path)

              let lines =
                  doc.Descendants()
                  // the estimate's line (1.8 wide; the band's edges are transparent lines of their own)
                  |> Seq.filter (fun e -> e.Name.LocalName = "polyline" && e.Attribute(XName.Get "style").Value.Contains "stroke-width:1.8")
                  |> Seq.map (fun e ->
                      e.Attribute(XName.Get "points").Value.Split(' ', StringSplitOptions.RemoveEmptyEntries)
                      |> Array.map (fun p ->
                          let xy = p.Split ','
                          Double.Parse(xy[0], CultureInfo.InvariantCulture), Double.Parse(xy[1], CultureInfo.InvariantCulture)))
                  |> Seq.sortByDescending Array.length
                  |> List.ofSeq

              let estimate = List.head lines
              Expect.equal estimate.Length 80 "two points per bin, none dropped"

              for k in 1 .. estimate.Length - 1 do
                  let (x0, y0), (x1, y1) = estimate[k - 1], estimate[k]
                  Expect.isTrue (abs (x1 - x0) < 1e-3 || abs (y1 - y0) < 1e-3) (sprintf "segment %d is horizontal or vertical: (%g, %g) - (%g, %g)" k x0 y0 x1 y1)
          }

          test "the legend sits below the plot area, outside it" {
              let dir = tempDir ()
              let path = Path.Combine(dir, "d.svg")
              Plot.writeDensity path (density [| 0.5; 1.5; 1.0 |]) "OU" "default"
              let svg = File.ReadAllText path
              let ts = texts svg
              let legendY = ts |> List.filter (fun (_, _, _, _, s) -> s = "estimate") |> List.map (fun (_, y, _, _, _) -> y)
              let tickY = bottomTicks svg |> List.map (fun (_, y, _, _, _) -> y)
              Expect.isNonEmpty legendY "legend"
              Expect.isGreaterThan (List.min legendY) (List.max tickY) "below the axis"

              let series = Path.Combine(dir, "s.svg")
              Plot.writeSeries series "t" "x" "y" [ "a", [| 1.0; 2.0 |], [| 1.0; 2.0 |], [||]; "b", [| 1.0; 2.0 |], [| 2.0; 1.0 |], [||] ]
              let s = File.ReadAllText series
              let ly = texts s |> List.filter (fun (_, _, _, _, t) -> t = "a" || t = "b") |> List.map (fun (_, y, _, _, _) -> y)
              Expect.equal ly.Length 2 "both entries"
              Expect.isGreaterThan (List.min ly) (bottomTicks s |> List.map (fun (_, y, _, _, _) -> y) |> List.max) "series legend below the axis"
          }

          test "a sweep plots each scalar query against the swept parameter; a response overlays the means' differences" {
              let dir = tempDir ()
              let files = Plot.writeSweeps dir sweepReport |> List.map Path.GetFileName
              Expect.equal files [ "sweep_theta_q0_mean_x_2.svg"; "sweep_theta_q1_response_x_2_theta.svg" ] "one plot per scalar query"
              let mean = File.ReadAllText(Path.Combine(dir, files[0]))
              let response = File.ReadAllText(Path.Combine(dir, files[1]))
              XDocument.Parse mean |> ignore
              let words svg = texts svg |> List.map (fun (_, _, _, _, s) -> s)
              Expect.contains (words mean) "theta" "x axis: the swept parameter"
              Expect.isFalse (words mean |> List.exists (fun s -> s.StartsWith "Δ")) "no overlay on a mean"
              Expect.isTrue (words response |> List.exists (fun s -> s.StartsWith "Δ mean(x^2) / Δ theta")) "the finite differences' legend"
              let xs, ys = Plot.finiteDifferences [| 0.5; 1.0; 1.5 |] [| 1.0; 0.5; 1.0 / 3.0 |]
              Expect.equal xs [| 0.75; 1.25 |] "midpoints"
              Expect.floatClose Accuracy.high ys[0] -1.0 "slope"
              Expect.isTrue (Plot.isDerivativeOf "theta" "mean(x^2)" "d mean( x^2 )/d theta with pathwise") "white space and method aside"
              Expect.isTrue (Plot.isDerivativeOf "F" "mean(x) over [5, 10]" "d mean(x) / d F over [5,10]") "over windows"
              Expect.isFalse (Plot.isDerivativeOf "F" "mean(x)" "d mean(x) / d sigma") "another parameter"
              Expect.isFalse (Plot.isDerivativeOf "F" "mean(x)" "d mean(x^2) / d F") "another observable"
          } ]

[<Tests>]
let progressTests =
    testSequenced
    <| testList
        "Output.look.progress"
        [ test "the fraction is of path-steps, reported at most ten times a second" {
              let seen = Collections.Concurrent.ConcurrentQueue<float>()
              let p = StepProgress(Action<float>(seen.Enqueue), 1L, 4L * StepProgress.Chunk)
              p.Add StepProgress.Chunk
              Threading.Thread.Sleep 150
              p.Add StepProgress.Chunk
              p.Add StepProgress.Chunk
              Expect.equal (List.ofSeq seen) [ 0.5 ] "half the steps of the one path; the third call within 100 ms is not reported"
              Expect.equal p.Done (3L * StepProgress.Chunk) "counted"
          }

          test "counting the steps allocates nothing per step" {
              let reports = ref 0
              let progress = Action<float>(fun _ -> reports.Value <- reports.Value + 1)

              let run steps =
                  let s = RunSettings(Paths = 100L, Dt = 0.01, T = float steps * 0.01, Seed = 3UL, Threads = 1, Progress = progress)
                  let mutable m = { Theta = 1.0; Sigma = 0.5; X0 = 1.0 }
                  let before = GC.GetAllocatedBytesForCurrentThread()
                  Engine.Run(&m, s, [| QueryPlan(Kind = EstimateKind.Mean, Observable = 0) |]) |> ignore
                  GC.GetAllocatedBytesForCurrentThread() - before

              run 10 |> ignore // JIT
              run 3000 |> ignore
              let a10 = run 10
              let a3000 = run 3000
              Expect.isTrue (abs (a3000 - a10) < 512L) (sprintf "10 steps: %d B, 3000 steps: %d B" a10 a3000)
          }

          test "a run of one long path reports progress before it ends" {
              let runFor (steps: float) (report: float -> unit) =
                  let s = RunSettings(Paths = 1L, Dt = 1e-3, T = steps * 1e-3, Seed = 1UL, Threads = 1, Progress = Action<float>(report))
                  let mutable m = { Theta = 1.0; Sigma = 1.0; X0 = 0.0 }
                  let clock = Diagnostics.Stopwatch.StartNew()
                  Engine.Run(&m, s, [| QueryPlan(Kind = EstimateKind.Mean, Observable = 0) |]) |> ignore
                  clock.Elapsed.TotalSeconds

              // a path long enough for about half a second on this machine (progress is reported at most every 0.1 s)
              let probe = runFor 1e6 ignore
              let steps = Math.Round(1e6 * Math.Clamp(0.5 / max probe 1e-4, 1.0, 200.0))
              let seen = Collections.Concurrent.ConcurrentQueue<float>()
              runFor steps seen.Enqueue |> ignore
              Expect.isTrue (seen |> Seq.exists (fun f -> f > 0.0 && f < 1.0)) (sprintf "a fraction within the path: %A" (List.ofSeq seen))
              Expect.isTrue (seen |> Seq.forall (fun f -> f >= 0.0 && f <= 1.0)) "fractions"
              Expect.equal (Seq.last seen) 1.0 "ends at 1"
          } ]

[<Tests>]
let cliTests =
    testList
        "Output.look.cli"
        [ test "--csv with --out writes results.csv and the sweep plots; without --out prints the CSV" {
              let dir = tempDir ()
              let model = Path.Combine(dir, "sweep.sde")

              File.WriteAllText(
                  model,
                  "model S {\n  param theta = 1 in (0, inf)\n  state x\n  brownian W\n  init x ~ normal(0, 1)\n  d x = -theta * x dt + dW\n}\n"
                  + "sweep theta from 0.5 to 1.5 step 0.5\nsimulate { paths = 200; dt = 0.01; T = 1; seed = 2 }\n"
                  + "query {\n  mean(x^2)\n  d mean(x^2) / d theta\n}\n"
              )

              let out = Path.Combine(dir, "out")
              let o = CliTests.dsl [ "run"; model; "--out"; out; "--csv"; "--quiet" ]
              Expect.equal o.Code 0 o.Err
              Expect.stringContains o.Out "sweep over theta (3 sets)" "the summary"
              let csv = parseCsv (File.ReadAllText(Path.Combine(out, "results.csv")))
              Expect.equal (List.head csv |> String.concat ",") Output.csvHeader "header"
              Expect.equal (List.tail csv).Length 6 "two estimates in three sets"
              Expect.isTrue (File.Exists(Path.Combine(out, "sweep_theta_q1_response_x_2_theta.svg"))) "the response's sweep plot"

              let p = CliTests.dsl [ "run"; model; "--csv"; "--quiet" ]
              Expect.equal p.Code 0 p.Err
              Expect.isTrue (p.Out.StartsWith(Output.csvHeader + "\n")) p.Out
              Expect.equal (parseCsv p.Out).Length 7 "header and six rows"
          } ]

/// The SVG's <text> elements with their font size: (y, font size, content).
let private sizedTexts (svg: string) =
    XDocument.Parse(svg).Descendants()
    |> Seq.filter (fun e -> e.Name.LocalName = "text")
    |> Seq.map (fun e ->
        let t = e.Attribute(XName.Get "transform").Value
        let inside = t.Substring(t.IndexOf '(' + 1, t.IndexOf ')' - t.IndexOf '(' - 1).Split ','
        Double.Parse(inside[1], CultureInfo.InvariantCulture), Double.Parse(e.Attribute(XName.Get "font-size").Value, CultureInfo.InvariantCulture), e.Value.Trim())
    |> List.ofSeq

/// A lower bound of a text's width in DejaVu Sans (the font viewers fall back to): its narrowest
/// letters are about 0.55 em wide on average in words, spaces 0.32 em.
let private dejaVuWidth (size: float) (s: string) =
    s |> Seq.sumBy (fun c -> if c = ' ' then 0.32 else 0.55) |> (*) size

let private ouText =
    "model OU {\n  param theta = 1 in (0, inf)\n  state x\n  brownian W\n  init x = 1\n  d x = -theta * x dt + 0.5 dW\n}\n"
    + "simulate { paths = 200; dt = 0.01; T = 0.5; seed = 3 }\n"

[<Tests>]
let issue19Tests =
    testList
        "Output.look.issue19"
        [ test "a value near 1 with a tiny stderr prints without a power of ten" {
              // 0.99999999995 rounds to 1.0000000000 at the stderr's decimals: it printed (10.0000000000 ± 0.0000000011)e-01
              Expect.equal (Output.valueWithError 0.99999999995 1.1e-9) "1.0000000000 ± 0.0000000011" "rounded up to 1"
              Expect.equal (Output.valueWithError 1.0 1.1e-9) "1.0000000000 ± 0.0000000011" "exactly 1"
              Expect.equal (Output.valueWithError -2.5 3e-12) "-2.5000000000000 ± 0.0000000000030" "moderate value, tinier stderr"
              // a power of ten still where the value itself is tiny or huge; and its mantissa below 10
              Expect.equal (Output.valueWithError 9.99999999995e-12 1.1e-20) "(1.0000000000 ± 0.0000000011)e-11" "mantissa rounded to 10 moves the power"
              Expect.equal (Output.valueWithError 1.234e-9 1.2e-11) "(1.234 ± 0.012)e-09" "tiny"
          }

          test "a model without noise: an error below rounding and a bias of rounding noise are not shown as digits or as a bias" {
              // a weighted mean of a constant state printed (1.000000000000001110 ± 0.000000000000000000)e+00,
              // then a warning that its 'bias' of 3.6e-15 was 168 standard errors
              Expect.equal (Output.valueWithError 1.0000000000000011 1.1e-19) "1 ± 1.1e-19" "15 digits of the value"
              Expect.isFalse (Bias.shows 1.0000000000000011 -3.55e-15 4.0e-16 1.1e-19) "rounding noise is no bias"
              Expect.isTrue (Bias.shows 1.0 -3.55e-3 4.0e-4 1.1e-4) "a bias above rounding shows"
              let dsl = CliTests.dsl
              use tmp = new CliTests.TempDir()
              let f =
                  tmp.File
                      "still.sde"
                      "model M {\n  state x\n  brownian W\n  weight w\n  init x = 1\n  d x = 0 dt + 0 dW\n  d log w = 0\n}\nsimulate { paths = 1000; dt = 0.01; T = 1; seed = 1; resample = none }\nquery {\n  mean(x)\n}\n"
              let o = dsl [ "run"; f ]
              Expect.equal o.Code 0 (CliTests.describe [ "run"; f ] o)
              Expect.isFalse (o.Out.Contains "bias") (sprintf "no bias shown\n%s" o.Out)
              Expect.isFalse (o.Err.Contains "warning") (sprintf "no warning\n%s" o.Err)
          }

          test "ess prints as a count of paths" {
              Expect.equal (Output.essCount 18620.4) "18620" "large: whole"
              Expect.equal (Output.essCount 1.5) "1.5" "small: its fraction"
              let q = { scalar "ess" "ess" 18620.4 nan with Count = 20000L; Resamplings = Some 3L }
              let t = Output.table (reportOf [ { Name = "default"; Params = []; Results = [ q ]; Failure = None } ])
              Expect.stringContains t "18620 of 20000 paths · 3 resamplings" t
          }

          test "a run without queries claims no throughput" {
              let t = Output.table (reportOf [ { Name = "default"; Params = []; Results = []; Failure = None } ])
              Expect.isFalse (t.Contains "path-steps/s") t
              Expect.stringContains t "no queries, so no paths were simulated" t
              // an interrupted or blown-up run had queries: it says that no set finished, not that there were none
              let failed = Output.table (reportOf [ { Name = "default"; Params = []; Results = []; Failure = Some "the run was interrupted" } ])
              Expect.isFalse (failed.Contains "path-steps/s") failed
              Expect.isFalse (failed.Contains "no queries") failed
              Expect.stringContains failed "no set finished" failed
              let withQuery = Output.table (reportOf [ { Name = "default"; Params = []; Results = [ scalar "mean" "mean(x)" 1.0 0.1 ]; Failure = None } ])
              Expect.stringContains withQuery "path-steps/s" "a run that computed something"

              match Sde.SdeCompiler.Compile(ouText, "ou.sde") with
              | Error ds -> failtestf "%A" ds
              | Ok p ->
                  let r = p.Run(threads = 1)
                  Expect.equal r.PathStepsPerSecond 0.0 "the report (and the JSON) claims none either"
                  Expect.stringContains (Output.table r) "no queries, so no paths were simulated" "the run's own table"
          }

          test "a title breaks between phrases, not inside an expression" {
              let lines = Plot.wrapEven 64 "Lorenz-96 (N = 40): standard error of d E[avg x] / d F, 1000 paths"
              Expect.isGreaterThan lines.Length 1 "wrapped"
              Expect.isTrue (lines |> List.exists (fun l -> l.Contains "d E[avg x] / d F")) (sprintf "the expression whole: %A" lines)
              Expect.all lines (fun l -> l.Length <= 64) "within the width"
              Expect.equal (Plot.phrases "a, b(c, d): e") [ "a,"; "b(c, d):"; "e" ] "no cut inside brackets"
          }

          test "title, subtitle lines and legend have room in a wide fallback font" {
              let dir = tempDir ()
              let path = Path.Combine(dir, "s.svg")
              let sub = Plot.subtitleOf "d mean(x^2) / d theta with divergence_kernel(rate = 2, mode = exact)" (Some "divergence_kernel(rate = 2, mode = exact)")
              Plot.writeSeriesWith path "OU — sweep over theta" (sub + "\nsecond line") false "theta" "y"
                  [ "response ± 2 stderr", [| 1.0; 2.0 |], [| 1.0; 2.0 |], [||]; "Δ mean(x^2) / Δ theta (neighbouring sets)", [| 1.5 |], [| 1.5 |], [||] ]
              let svg = File.ReadAllText path
              let ts = sizedTexts svg
              let title = ts |> List.find (fun (_, size, _) -> size = 18.0)
              let subs = ts |> List.filter (fun (_, size, s) -> size = 13.0 && (s.StartsWith "d mean" || s = "second line"))
              Expect.equal subs.Length 2 "two subtitle lines"
              let (y0, _, _), (y1, _, _), (y2, _, _) = title, subs[0], subs[1]
              // baselines: the title's descent (0.25 em), the subtitle's ascenders (0.8 em) and a gap must fit between
              Expect.isGreaterThan (y1 - y0) (0.25 * 18.0 + 0.8 * 13.0 + 3.0) "the subtitle clear of the title"
              Expect.isGreaterThan (y2 - y1) (1.15 * 13.0) "subtitle lines clear of each other"
              // the legend's clip box holds its last item in DejaVu Sans widths
              let doc = XDocument.Parse svg
              let legendText = ts |> List.find (fun (_, _, s) -> s.StartsWith "Δ mean")
              let textX =
                  doc.Descendants() |> Seq.find (fun e -> e.Name.LocalName = "text" && e.Value.Trim().StartsWith "Δ mean")
                  |> fun e -> let t = e.Attribute(XName.Get "transform").Value in Double.Parse(t.Substring(10, t.IndexOf ',' - 10), CultureInfo.InvariantCulture)
              let clipRight =
                  doc.Descendants()
                  |> Seq.filter (fun e -> e.Name.LocalName = "rect" && e.Parent.Name.LocalName = "clipPath")
                  |> Seq.map (fun e -> float (e.Attribute(XName.Get "x").Value) + float (e.Attribute(XName.Get "width").Value))
                  |> Seq.filter (fun r -> r < 800.0)
                  |> Seq.max
              let (_, _, s) = legendText
              Expect.isGreaterThanOrEqual clipRight (textX + dejaVuWidth 13.0 s) "the legend's last item not clipped"
          }

          test "a fit's loss plot keeps a line-search spike off the scale and marks it" {
              Expect.isNone (Plot.lossScaleTop [| 0.7; 0.6; 0.5; 0.45 |] [| 0.01; 0.01; 0.01; 0.01 |]) "a plain descent: no clip"
              let loss = [| 0.7; 0.6; 31.86; 3.46; 0.5; 0.4 |]
              let errs = Array.create loss.Length 0.01
              let top = Plot.lossScaleTop loss errs |> Option.get
              Expect.isTrue (top > 0.72 && top < 1.0) (sprintf "the scale ends just above the start: %g" top)
              let dir = tempDir ()
              let path = Path.Combine(dir, "fit_loss.svg")
              Plot.writeLoss path "OU — fit loss" "kl at 1, lbfgs" "evaluation" (Array.init loss.Length (fun i -> float (i + 1))) loss errs
              let ts = sizedTexts (File.ReadAllText path) |> List.map (fun (_, _, s) -> s)
              Expect.contains ts "31.86" "the spike's value written"
              Expect.contains ts "3.46" "the second spike's value"
              Expect.isTrue (ts |> List.exists (fun s -> s.StartsWith "off the scale: 2 losses")) "the legend says what the marks are"
          }

          test "a weighted estimate's plot says it is weighted" {
              let dir = tempDir ()
              let path = Path.Combine(dir, "d.svg")
              Plot.writeDensity path { density [| 0.5; 1.5 |] with Weighted = true } "M" "default"
              let ts = sizedTexts (File.ReadAllText path) |> List.map (fun (_, _, s) -> s)
              Expect.isTrue (ts |> List.exists (fun s -> s.StartsWith "weighted: self-normalised")) (sprintf "subtitle: %A" ts)
              Expect.contains ts "density (weighted)" "the axis"
              let plain = Path.Combine(dir, "p.svg")
              Plot.writeDensity plain (density [| 0.5; 1.5 |]) "M" "default"
              Expect.isFalse ((File.ReadAllText plain).Contains "weighted") "an unweighted one does not"
          }

          test "an undeclared brownian's dW names the declaration it needs" {
              match Sde.SdeCompiler.Compile("model M {\n  state x\n  d x = -x dt + 0.5 dW\n}\nquery { mean(x) }\n", "m.sde") with
              | Ok _ -> failtest "compiled"
              | Error ds -> Expect.stringContains (List.head ds).Message "add 'brownian W'" (List.head ds).Message

              match Sde.SdeCompiler.Compile("model M {\n  state x\n  brownian W\n  d x = -x dt + 0.5 dB\n}\nquery { mean(x) }\n", "m.sde") with
              | Ok _ -> failtest "compiled"
              | Error ds ->
                  let m = (List.head ds).Message
                  Expect.stringContains m "add 'brownian B'" m
                  Expect.stringContains m "dW" "the declared ones"
          }

          test "a misspelt command or option gets a did-you-mean" {
              let o = CliTests.dsl [ "runn"; "x.sde" ]
              Expect.equal o.Code 2 o.Err
              Expect.stringContains o.Err "did you mean 'run'?" o.Err
              let p = CliTests.dsl [ "run"; "x.sde"; "--parm"; "a" ]
              Expect.equal p.Code 2 p.Err
              Expect.stringContains p.Err "did you mean '--params'?" p.Err
              let f = CliTests.dsl [ "fit"; "--pahts"; "3"; "x.sde" ]
              Expect.stringContains f.Err "unknown option '--pahts'; did you mean '--paths'?" f.Err
          }

          test "--paths and --seed take the number forms of the file, whole values only" {
              let dir = tempDir ()
              let model = Path.Combine(dir, "ou.sde")
              File.WriteAllText(model, ouText + "query { mean(x) }\n")
              let o = CliTests.dsl [ "run"; model; "--paths"; "1e2"; "--seed=2.0e1"; "--json"; "--quiet" ]
              Expect.equal o.Code 0 o.Err
              let j = CliTests.parseJson o
              Expect.equal (CliTests.num j [ "settings"; "paths" ]) 100.0 "1e2 paths"
              Expect.equal (CliTests.num j [ "settings"; "seed" ]) 20.0 "seed 2.0e1"
              let bad = CliTests.dsl [ "run"; model; "--paths"; "2.5" ]
              Expect.equal bad.Code 2 bad.Err
              Expect.stringContains bad.Err "--paths: must be a whole number, got 2.5" bad.Err
          }

          test "a CSV with decimal commas says so" {
              let dir = tempDir ()
              File.WriteAllText(Path.Combine(dir, "d.csv"), "x\n0,5\n1,25\n")
              let text = File.ReadAllText(Path.Combine(CliTests.repoRoot, "examples", "fit_ou.sde")).Replace("fit_ou.csv", "d.csv")

              match Sde.SdeCompiler.Compile(text, "f.sde") with
              | Error ds -> failtestf "%A" ds
              | Ok p ->
                  match p.Fit(threads = 1, dataDir = dir) with
                  | Ok _ -> failtest "fitted data with decimal commas"
                  | Error ds -> Expect.stringContains (List.head ds).Message "decimal comma" (List.head ds).Message
          }

          test "L-BFGS reports the iterations asked for, at the limit" {
              // MathNet counts one more iteration than it did when its loop test stops it: `iterations = 2` said "after 3"
              let text = File.ReadAllText(Path.Combine(CliTests.repoRoot, "examples", "fit_ou.sde")).Replace("iterations = 40", "iterations = 2")
              let o = { Frontend.noOverrides with Paths = Some 300L }

              match Sde.SdeCompiler.Compile(text, "f.sde", o) with
              | Error ds -> failtestf "%A" ds
              | Ok p ->
                  match p.Fit(threads = 1, dataDir = Path.Combine(CliTests.repoRoot, "examples")) with
                  | Error ds -> failtestf "%A" ds
                  | Ok r ->
                      Expect.isFalse r.Converged r.Stop
                      Expect.stringContains r.Stop "did the 2 iterations asked for" r.Stop
                      Expect.isFalse (r.Stop.Contains "3 iterations") r.Stop
          }

          test "dsl compile --target ptx writes a weighted model's step kernel only and says cuda refuses it" {
              let dir = tempDir ()
              let weighted = Path.Combine(dir, "w.sde")
              File.WriteAllText(weighted, ouText.Replace("  init x = 1\n", "  init x = 1\n  weight w\n  d log w = -x^2 dt\n") + "query { mean(x) }\n")
              let o = CliTests.dsl [ "compile"; weighted; "--out"; Path.Combine(dir, "ptx") ]
              Expect.equal o.Code 0 o.Err
              Expect.stringContains o.Err "w.sde:6:" o.Err
              Expect.stringContains o.Err "warning: 'weight w' makes a weighted" o.Err
              Expect.stringContains o.Err "'--backend cuda' refuses it" o.Err
              let files = Directory.GetFiles(Path.Combine(dir, "ptx"))
              Expect.equal (files |> Array.map (fun f -> Path.GetFileName(f).Split('.')[1])) [| "weighted_step" |] "the weighted step kernel only"
          } ]
