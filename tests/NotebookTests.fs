/// Results in notebooks (dsl/lang/Notebook.fs, dsl/lang/run/Formatting.fs): the HTML and text a cell
/// shows, and the shape of the formatter sources that .NET Interactive finds by convention. The tour
/// notebook itself runs headless in CI (tests/notebooks/run.sh), too slow for this tier.
module Sde.Tests.NotebookTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto
open Sde
open Sde.Lang
open Sde.Lang.Fit

let private small =
    """model OU {
  param theta = 1 in (0, inf)
  param sigma = 0.5 in (0, inf)
  state x
  brownian W
  init x = 1
  d x = -theta * x dt + sigma dW
}
sweep theta from 0.5 to 1.5 step 0.5
simulate { paths = 300; dt = 0.05; T = 1; seed = 3 }
query {
  mean(x)
  d mean(x) / d theta
  density(x) on [-0.5, 1.5] bins 8
  lyapunov(1)
}
"""

let private report = lazy (Notebook.Run small)

/// The attribute values of the tags that match `pattern` (one dictionary per tag).
let private tags (pattern: string) (html: string) =
    [ for m in Regex.Matches(html, pattern) ->
          Regex.Matches(m.Value, "([\\w-]+)=\"([^\"]*)\"")
          |> Seq.map (fun a -> a.Groups[1].Value, Net.WebUtility.HtmlDecode a.Groups[2].Value)
          |> dict ]

/// Equal to the last bit, NaN included.
let private same (a: float) (b: float) = BitConverter.DoubleToInt64Bits a = BitConverter.DoubleToInt64Bits b

let private count (what: string) (s: string) = Regex.Matches(s, Regex.Escape what).Count

/// What .NET Interactive's formatter finds for a value whose type names a formatter source by convention
/// (an attribute called TypeFormatterSourceAttribute, a source with CreateTypeFormatters, formatters with
/// MimeType and Format(object, TextWriter)): per MIME type, the call that writes the value.
let private formatters (value: obj) : (string * (unit -> string)) list =
    let attr =
        value.GetType().GetCustomAttributes(true)
        |> Array.find (fun a -> a.GetType().Name = "TypeFormatterSourceAttribute")

    let sourceType = attr.GetType().GetProperty("FormatterSourceType").GetValue(attr) :?> Type
    let source = Activator.CreateInstance sourceType
    let all = sourceType.GetMethod("CreateTypeFormatters").Invoke(source, [||]) :?> Collections.IEnumerable

    [ for f in Seq.cast<obj> all ->
          let mime = f.GetType().GetProperty("MimeType").GetValue(f) :?> string

          mime,
          fun () ->
              use w = new StringWriter()
              let ok = f.GetType().GetMethod("Format", [| typeof<obj>; typeof<TextWriter> |]).Invoke(f, [| value; w |]) :?> bool
              Expect.isTrue ok (sprintf "%s formats %s" mime (value.GetType().Name))
              w.ToString() ]

let private formatAs (mime: string) (value: obj) = (formatters value |> List.find (fst >> (=) mime) |> snd) ()

/// The HTML with its plots' unique id prefixes made equal (they differ from one rendering to the next).
let private sameIds (html: string) = Regex.Replace(html, "sde[0-9a-f]{12}-", "sde-")

[<Tests>]
let tests =
    testList
        "Notebook"
        [ test "Notebook a report's HTML: per set a row per result with value ± stderr and its exact numbers, a density's inline SVG, the sweep's table" {
              let r = report.Value
              let html = Notebook.Html r
              Expect.equal r.Sets.Length 3 "three swept sets"
              let rows = tags "<tr class=\"sde-result\"[^>]*>" html
              Expect.equal rows.Length 12 "four results in each of three sets"

              for s, k in List.zip r.Sets [ 0..2 ] do
                  for q, i in List.zip s.Results [ 0..3 ] do
                      let row = rows[4 * k + i]
                      Expect.equal row["data-query"] q.Query "the row's query"
                      Expect.isTrue (same (float row["data-value"]) q.Value) "the value, to the last bit"
                      Expect.isTrue (same (float row["data-stderr"]) q.StdErr) "the stderr, to the last bit"

                      if q.Kind = "density" || q.Kind = "lyapunov" then
                          Expect.equal (row["data-values"].Split ' ' |> Array.map float) q.Values "the bins or exponents, to the last bit"
                      else
                          Expect.stringContains html (Output.valueWithError q.Value q.StdErr) "the table's value ± stderr"

                  // the exponent of the Euler chain x_{n+1} = (1 - theta dt) x_n + ...: log|1 - theta dt| / dt
                  let theta = s.Params |> List.find (fun (n, _) -> n = "theta") |> snd
                  let lyap = rows[4 * k + 3]
                  Expect.floatClose Accuracy.high (float lyap["data-values"]) (log (1.0 - theta * 0.05) / 0.05) "the spectrum's closed form"

              // a density's lines as the table has them, less the query's column: its summary starts a line
              Expect.stringContains html (Net.WebUtility.HtmlEncode "\non [-0.5, 1.5], 8 bins · peak") "the density's summary under its sparkline"

              // per set a density and a spectrum, inlined (no XML prologue), scaled by a view box; a sweep plot per scalar query
              Expect.equal (count "<svg" html) (3 * 2 + 2) "three densities, three spectra, two sweep plots"
              Expect.equal (count "<?xml" html) 0 "no XML prologue inside the HTML"
              Expect.equal (count "viewBox=\"0 0 800 500\"" html) 8 "every plot scales with the cell"
              Expect.stringContains html "<details><summary>plots of set theta=1 (2)</summary>" "several sets: their plots folded"

              // one page holds every plot: their ids are unique, and every reference names one of them
              let ids = [ for m in Regex.Matches(html, "\\sid=\"([^\"]+)\"") -> m.Groups[1].Value ]
              Expect.isNonEmpty ids "the plots' clip paths"
              Expect.equal (List.distinct ids).Length ids.Length "unique ids"
              for m in Regex.Matches(html, "url\\(#([^)]+)\\)") do
                  Expect.contains ids m.Groups[1].Value "a reference to an id of the page"

              // the sweep: one row per value, a column per scalar query, the same numbers as the sets'
              let sweep = tags "<td class=\"sde-num\" data-value=[^>]*>" html
              let expected = [ for s in r.Sets do for q in s.Results |> List.filter Output.isScalar -> q.Value ]
              Expect.equal (sweep |> List.map (fun d -> float d["data-value"])) expected "the sweep table, row by row"
          }

          test "Notebook the result types name formatter sources as .NET Interactive's convention reads them: HTML and the CLI's text" {
              let r = report.Value
              Expect.equal (formatters r |> List.map fst) [ "text/html"; "text/plain" ] "HTML and plain text"
              Expect.equal (formatAs "text/plain" r) (Output.table r) "the report's text is the CLI's table"
              let q = r.Sets.Head.Results |> List.find (fun q -> q.Kind = "density")
              Expect.equal (formatAs "text/plain" q) (Output.resultText q) "a result's text is the table's lines"
              let html = formatAs "text/html" q
              Expect.equal (sameIds html) (sameIds (Notebook.Html q)) "a result's HTML"
              Expect.stringContains html "<svg" "a density shows its plot"
              Expect.stringContains (formatAs "text/plain" r.Sets.Head) "d mean(x) / d theta" "a set's results"
              Expect.stringContains (formatAs "text/plain" (Notebook.Compile small)) "model OU: 1 state component, params theta, sigma" "a program's summary"
              let preferred = r.GetType().GetCustomAttributes(true) |> Array.pick (function :? Formatting.TypeFormatterSourceAttribute as a -> Some a.PreferredMimeTypes | _ -> None)
              Expect.equal preferred [| "text/html"; "text/plain" |] "HTML first"
          }

          test "Notebook a fit's HTML: fitted values ± stderr beside the start, the final loss, the params block, the loss and param traces" {
              let step i loss = { FitStep.Iteration = i; Loss = loss; LossStdErr = 0.01; GradNorm = 1.0 / float i; Values = [| 3.0 / float i; 1.5 / float i |] }
              let fit =
                  { FitReport.Model = "OU"; Source = "fit_ou.sde"; DataFile = "/data/fit_ou.csv"; DataRows = 2000; Columns = [| "x" |]
                    Objective = "kl at T"; Optimizer = "lbfgs"; Names = [| "theta"; "sigma" |]; Start = [| 3.0; 1.5 |]; Fitted = [| 1.01; 0.49 |]
                    Bounds = [| 0.0, infinity; 0.0, infinity |]; StdErrs = [| 0.05; 0.01 |]; AllParams = [ "theta", 1.01; "sigma", 0.49 ]
                    History = [ step 1 1.2; step 2 0.9; step 3 0.5 ]; Converged = true; Stop = "gradient small"; Bandwidth = [| 0.1 |]
                    Paths = 2000L; T = 1.0; Dt = 0.01; Seed = 7UL; Backend = "cpu"; FinalLoss = 0.5; FinalLossStdErr = 0.01; Seconds = 1.0
                    SecondsPerEvaluation = 0.3; Warnings = [ "a warning <here>" ]; Estimated = [] }

              let html = formatAs "text/html" fit
              let rows = tags "<tr class=\"sde-fitted\"[^>]*>" html
              Expect.equal (rows |> List.map (fun d -> d["data-name"], float d["data-value"], float d["data-stderr"])) [ "theta", 1.01, 0.05; "sigma", 0.49, 0.01 ] "the fitted params"
              Expect.stringContains html (Fit.fittedText 1.01 0.05) "theta's fitted ± stderr"
              Expect.stringContains html "fit_ou.csv (2000 rows)" "the data"
              Expect.stringContains html "warning: a warning &lt;here&gt;" "the warnings, escaped"
              Expect.stringContains html (Net.WebUtility.HtmlEncode(Fit.paramsBlock fit fit.AllParams)) "the params block"
              Expect.equal (count "<svg" html) 3 "the loss and each param against the evaluations"
              Expect.equal (formatAs "text/plain" fit) (Fit.summary fit fit.AllParams) "the text is dsl fit's summary"
          }

          test "Notebook docs/notebooks.md's notebook cells are verbatim excerpts of docs/notebooks/tour.dib (which CI runs and checks)" {
              let read (p: string) = File.ReadAllText(Path.Combine(CliTests.repoRoot, p)).Replace("\r\n", "\n")
              let doc, tour = read "docs/notebooks.md", read "docs/notebooks/tour.dib"
              // the blocks without an info string that hold notebook code (the #i line names a placeholder folder)
              let blocks =
                  doc.Split('\n')
                  |> Array.fold
                      (fun (inside: (string * string list) option, acc) line ->
                          match inside with
                          | None when line.StartsWith "```" -> Some(line.Substring 3, []), acc
                          | None -> None, acc
                          | Some(info, lines) when line = "```" -> None, (info, String.concat "" (List.rev lines)) :: acc
                          | Some(info, lines) -> Some(info, (line + "\n") :: lines), acc)
                      (None, [])
                  |> snd
                  |> List.rev

              let cells = blocks |> List.filter (fun (info, c) -> info = "" && not (c.StartsWith "#i ")) |> List.map snd

              Expect.equal cells.Length 2 "the reference and the OU cell"
              for c in cells do
                  Expect.stringContains tour c "a cell of the tour"
          }

          test "Notebook.Run of a text with errors throws SdeException whose message is the located diagnostics" {
              let e = Expect.throwsC (fun () -> Notebook.Run "model M {\n  state x\n  d x = -y dt\n}\n" |> ignore) id
              match e with
              | :? SdeException as e ->
                  Expect.stringContains e.Message "notebook.sde:3:" "located in the cell's text"
                  Expect.isNonEmpty e.Diagnostics "the diagnostics"
                  Expect.equal e.Message (e.Diagnostics |> List.map (fun d -> d.Rendered.TrimEnd()) |> String.concat "\n") "the message is their rendering"
              | e -> failtestf "an SdeException, not %s" (e.GetType().Name)
          }

          test "Notebook.Run and Notebook.FitFile take a backend: ilgpu-cpu gives the cpu's values and fit bit for bit" {
              let ou = "model O {\n  param theta = 1\n  state x\n  brownian W\n  init x ~ normal(1, 0.5)\n  d x = -theta * x dt + dW\n}\nsimulate { paths = 200; dt = 0.05; T = 1; seed = 3 }\nquery {\n  mean(x)\n  d mean(x) / d theta\n}\n"
              let values (r: Report.RunReport) = r.Sets.Head.Results |> List.map (fun q -> q.Value, q.StdErr)
              let cpu, gpu = Notebook.Run(ou), Notebook.Run(ou, backend = "ilgpu-cpu")
              Expect.equal gpu.Settings.Backend "ilgpu-cpu" "the run's backend"
              Expect.equal (values gpu) (values cpu) "the same values and errors"
              let file = Path.Combine(CliTests.repoRoot, "examples", "fit_ou.sde")
              let fc = Notebook.FitFile(file, paths = 200)
              let fg = Notebook.FitFile(file, paths = 200, backend = "ilgpu-cpu")
              Expect.equal fg.Backend "ilgpu-cpu" "the fit's backend"
              Expect.equal (fg.Fitted, fg.StdErrs, fg.FinalLoss) (fc.Fitted, fc.StdErrs, fc.FinalLoss) "the same fit"
          } ]
