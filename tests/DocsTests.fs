/// The docs run as written (issue 19): every complete `.sde` file in README.md and docs/*.md
/// compiles and runs; the numbers docs/language.md's JSON example quotes agree with a run of its
/// file within their standard errors; the limits tables are the ones the checks enforce
/// (`Limits.markdownTable`); the F# and C# snippets are the sample files that the build compiles
/// and the tests run.
///
/// A complete file is a fenced block that starts with `model NAME {` (the `<...>` syntax templates
/// excepted): no marker to forget, a new one is run as soon as it is written. To stay cheap the
/// quick tier lowers `paths` of the expensive ones (see `pathsFor`); SDE_DOCS_FULL=1 runs every
/// file with its own settings (slow: minutes on 2 cores; for CI).
module Sde.Tests.DocsTests

open System
open System.IO
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.CliTests

/// A fenced block of a markdown file: where it opens (1-based line of the ``` line), its info
/// string and its text (without the fences).
type Block = { Doc: string; Line: int; Info: string; Text: string }

let private readDoc (doc: string) =
    File.ReadAllText(Path.Combine(repoRoot, doc)).Replace("\r\n", "\n")

/// README.md and every docs/*.md, as paths relative to the repository root.
let docFiles () =
    "README.md"
    :: (Directory.GetFiles(Path.Combine(repoRoot, "docs"), "*.md")
        |> Array.sort
        |> Array.map (fun p -> "docs/" + Path.GetFileName p)
        |> List.ofArray)

let blocksOf (doc: string) : Block list =
    let text = readDoc doc

    Regex.Matches(text, @"(?ms)^```([^\n]*)\n(.*?)^```")
    |> Seq.map (fun m ->
        { Doc = doc
          Line = 1 + (text.Substring(0, m.Index) |> Seq.filter ((=) '\n') |> Seq.length)
          Info = m.Groups[1].Value.Trim()
          Text = m.Groups[2].Value })
    |> List.ofSeq

let isCompleteFile (b: Block) =
    Regex.IsMatch(b.Text, @"^model [^\s{]+ \{\n") && not (b.Text.Contains "\n  <")

let completeFiles () =
    docFiles () |> List.collect blocksOf |> List.filter isCompleteFile

let private full =
    Environment.GetEnvironmentVariable "SDE_DOCS_FULL" = "1"

/// Components × steps × sets one file of the quick tier may simulate per path: the paths are
/// lowered (never below 64) so that paths × this stays under about 5 × 10^6.
let private budget = 5e6

let pathsFor (paths: int64) (steps: float) (dim: int) (sets: int) =
    if full then paths
    else
        let per = steps * float dim * float sets
        min paths (max 64L (int64 (budget / per)))

/// The same for a run of the paths alone (one trivial query): 2 × 10^8 component-steps, about a
/// second; only a file past that (the README's tour: 1.2 × 10^9) is lowered.
let pathsForPaths (paths: int64) (steps: float) (dim: int) (sets: int) =
    if full then paths
    else min paths (max 64L (int64 (2e8 / (steps * float dim * float sets))))

/// The file with its query block (and the lets in it) replaced by `query { mean(0) }`.
let plainQueries (text: string) =
    let lines = text.Split('\n')
    let start = lines |> Array.tryFindIndex (fun l -> l.StartsWith "query")
    match start with
    | None -> text + "\nquery { mean(0) }\n"
    | Some i ->
        let stop =
            if lines[i].Contains "}" then i
            else i + (lines[i..] |> Array.findIndex (fun l -> l = "}"))

        Array.concat [ lines[.. i - 1]; [| "query { mean(0) }" |]; lines[stop + 1 ..] ] |> String.concat "\n"

let private compileOrFail (what: string) (text: string) (o: Frontend.Overrides) =
    match SdeCompiler.Compile(text, what, o) with
    | Ok p -> p
    | Error ds -> failtestf "%s does not compile:\n%s" what (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

/// The first complete file whose model is `name` in `doc`.
let private fileOf (doc: string) (name: string) =
    blocksOf doc
    |> List.tryFind (fun b -> isCompleteFile b && b.Text.StartsWith(sprintf "model %s {" name))
    |> Option.defaultWith (fun () -> failtestf "%s: no complete file of model %s" doc name)

// ---------------------------------------------------------------------------------- JSON example

/// The number of significant digits a quoted number was rounded to allows half a unit of its last
/// digit (three significant digits in the docs' examples, as they say).
let private roundingOf (d: float) =
    if d = 0.0 then 0.0 else 0.5 * Math.Pow(10.0, Math.Floor(Math.Log10(abs d)) - 2.0)

/// Counts of paths or samples (below/above a range, non-finite paths) are random: a Poisson-sized
/// tolerance. Settings, params, grids, ranges and counts of paths run are exact.
let private exactKeys = set [ "count"; "rows"; "paths"; "seed"; "dt"; "T"; "value_window"; "window"; "grid"; "range"; "F"; "sigma" ]
let private poissonKeys = set [ "below"; "above"; "non_finite" ]
let private stderrKeys = set [ "stderr"; "stderrs"; "log_det_stderr"; "bias_stderr" ]

/// Every difference between a quoted JSON value (`doc`) and the run's (`run`), under `path`. `...` in
/// the doc (a string, or an array `[ ... ]`) stands for what it leaves out; `se` is the run's
/// standard error of this number when it is an estimate.
let rec jsonDiffs (path: string) (doc: JsonNode) (run: JsonNode) (key: string) (se: float option) : string list =
    let here = if path = "" then key else path
    match doc, run with
    | null, null -> []
    | null, r -> [ sprintf "%s: the doc has null, the run %s" here (r.ToJsonString()) ]
    | d, null -> [ sprintf "%s: the doc has %s, the run null" here (d.ToJsonString()) ]
    | (:? JsonValue as d), _ when d.TryGetValue<string>() |> fst && d.GetValue<string>() = "..." -> []
    | (:? JsonArray as d), _ when d.Count = 1 && d[0] <> null && d[0].ToJsonString() = "\"...\"" -> []
    | (:? JsonObject as d), (:? JsonObject as r) ->
        let dk = d |> Seq.map (fun kv -> kv.Key) |> List.ofSeq
        let rk = r |> Seq.map (fun kv -> kv.Key) |> List.ofSeq

        if dk <> rk then
            [ sprintf "%s: the doc's keys %A, the run's %A" here dk rk ]
        elif key = "timing" then
            [] // wall time: machine-dependent, only its keys are checked
        else
            // an estimate's standard error: `value` with `stderr`, `values` with `stderrs`, `log_det_rate` with `log_det_stderr`
            let seOf (k: string) (i: int option) =
                let partner =
                    match k with
                    | "value" -> Some "stderr"
                    | "values" -> Some "stderrs"
                    | "log_det_rate" -> Some "log_det_stderr"
                    | "bias" -> Some "bias_stderr"
                    | _ -> None

                match partner |> Option.bind (fun p -> Option.ofObj r[p]) with
                | Some(:? JsonArray as a) -> i |> Option.map (fun i -> a[i].GetValue<float>())
                | Some v when i.IsNone -> Some(v.GetValue<float>())
                | _ -> None

            dk
            |> List.collect (fun k ->
                let p = sprintf "%s.%s" here k
                match d[k], r[k] with
                | (:? JsonArray as da), (:? JsonArray as ra) when not (da.Count = 1 && da[0] <> null && da[0].ToJsonString() = "\"...\"") ->
                    if da.Count <> ra.Count then
                        [ sprintf "%s: %d elements in the doc, %d in the run" p da.Count ra.Count ]
                    else
                        [ for i in 0 .. da.Count - 1 do
                              yield! jsonDiffs (sprintf "%s[%d]" p i) da[i] ra[i] k (seOf k (Some i)) ]
                | dv, rv -> jsonDiffs p dv rv k (seOf k None))
    | (:? JsonArray as d), (:? JsonArray as r) ->
        if d.Count <> r.Count then
            [ sprintf "%s: %d elements in the doc, %d in the run" here d.Count r.Count ]
        else
            [ for i in 0 .. d.Count - 1 do
                  yield! jsonDiffs (sprintf "%s[%d]" here i) d[i] r[i] key None ]
    | (:? JsonValue as d), (:? JsonValue as r) ->
        match d.TryGetValue<string>(), r.TryGetValue<string>() with
        | (true, ds), (true, rs) ->
            // texts as printed; a count inside a warning is checked through its own field (non_finite)
            let shape (s: string) = Regex.Replace(s, @"\d+", "#")
            if shape ds = shape rs then [] else [ sprintf "%s: the doc says %A, the run %A" here ds rs ]
        | (true, _), _
        | _, (true, _) -> [ sprintf "%s: the doc has %s, the run %s" here (d.ToJsonString()) (r.ToJsonString()) ]
        | _ ->
            match d.TryGetValue<float>(), r.TryGetValue<float>() with
            | (true, dv), (true, rv) ->
                let tol =
                    match se with
                    | Some s -> 4.5 * s
                    | None when stderrKeys.Contains key -> 0.25 * abs rv // a standard error's own relative error at 1000 paths is a few %
                    | None when exactKeys.Contains key -> 0.0
                    | None when poissonKeys.Contains key -> 4.5 * sqrt (max 1.0 (abs rv))
                    | None -> 0.1 * abs rv + 0.005 // diagnostics without an error bar: rate, growth, kurtosis, shares

                if abs (dv - rv) <= tol + roundingOf dv then []
                else [ sprintf "%s: the doc has %g, the run %g (tolerance %g)" here dv rv tol ]
            | _ -> [ sprintf "%s: the doc has %s, the run %s" here (d.ToJsonString()) (r.ToJsonString()) ]
    | d, r -> [ sprintf "%s: the doc has %s, the run %s" here (d.ToJsonString()) (r.ToJsonString()) ]

/// The JSON example of docs/language.md §10, parsed (`[ ... ]` read as `[ "..." ]`).
let private jsonExample () =
    let doc = readDoc "docs/language.md"
    let i = doc.IndexOf "## 10. JSON results"
    let a = doc.IndexOf("```json\n", i) + 8
    let b = doc.IndexOf("```\n", a)
    JsonNode.Parse(Regex.Replace(doc.Substring(a, b - a), @"\[\s*\.\.\.\s*\]", "[ \"...\" ]"))

/// docs/language.md §10's file: `Every` of §6 with `mean(log(x[0]))` added, as the doc says.
let private everyFile () =
    let every = (fileOf "docs/language.md" "Every").Text
    let last = "  score(x[0]) on [-10, 15] bins 5\n"
    Expect.stringContains every last "the file Every ends its queries with score (where the doc adds one)"
    every.Replace(last, last + "  mean(log(x[0]))\n")

// ---------------------------------------------------------------------------------- snippets

/// The region of a source file between `// docs: DOC` and `// end docs`, indentation removed.
let private region (file: string) (doc: string) =
    let lines = File.ReadAllText(Path.Combine(repoRoot, file)).Replace("\r\n", "\n").Split('\n')
    let start = lines |> Array.findIndex (fun l -> l.Trim() = "// docs: " + doc)
    let stop = lines |> Array.findIndexBack (fun l -> l.Trim() = "// end docs")
    let body = lines[start + 1 .. stop - 1]
    let indent = body |> Array.filter (fun l -> l.Trim() <> "") |> Array.map (fun l -> l.Length - l.TrimStart().Length) |> Array.min
    body |> Array.map (fun l -> if l.Length >= indent then l.Substring indent else l.TrimStart()) |> List.ofArray

let private linesOf (s: string) =
    s.TrimEnd('\n').Split('\n') |> List.ofArray

[<Tests>]
let tests =
    testList
        "Docs"
        [ test "Docs every complete file in README.md and docs/ simulates its own paths, dt and T without blowing up (queries replaced by mean(0))" {
              // a doc file that exits 3 (paths that blow up, a rare path among thousands) is caught only
              // at the file's own path count: the paths are simulated in full, with one trivial query
              let files = completeFiles ()
              Expect.isGreaterThanOrEqual files.Length 11 "the complete files"

              for b in files do
                  let what = sprintf "%s:%d" b.Doc b.Line
                  let p0 = compileOrFail what (plainQueries b.Text) Frontend.noOverrides
                  let s = p0.Settings
                  let paths = pathsForPaths s.Paths (s.T / s.Dt) p0.ModelDimension p0.ParameterSets.Length

                  let p =
                      if paths = s.Paths then p0
                      else compileOrFail what (plainQueries b.Text) { Frontend.noOverrides with Paths = Some paths }

                  try
                      p.Run() |> ignore
                  with ex ->
                      failtestf "%s (paths = %d of %d) does not run: %s" what paths s.Paths ex.Message
          }

          test "Docs every complete file in README.md and docs/ compiles and answers its queries (paths lowered where expensive; SDE_DOCS_FULL=1: as written)" {
              for b in completeFiles () do
                  let what = sprintf "%s:%d" b.Doc b.Line
                  // `Every` runs, with its own settings, in the JSON example's test below
                  if not (b.Doc = "docs/language.md" && b.Text.StartsWith "model Every {") then
                      let p0 = compileOrFail what b.Text Frontend.noOverrides
                      let s = p0.Settings
                      let paths = pathsFor s.Paths (s.T / s.Dt) p0.ModelDimension p0.ParameterSets.Length

                      let p =
                          if paths = s.Paths then p0
                          else compileOrFail what b.Text { Frontend.noOverrides with Paths = Some paths }

                      try
                          let r = p.Run()
                          Expect.equal r.Sets.Length p0.ParameterSets.Length (what + ": a report per parameter set")
                      with ex ->
                          failtestf "%s (paths = %d) does not run: %s" what paths ex.Message
          }

          test "Docs the README's tour runs all its sets: params strong and one per sweep value" {
              let tour = blocksOf "README.md" |> List.find (fun b -> b.Text.StartsWith "model Name {")
              let p = compileOrFail "README.md" tour.Text Frontend.noOverrides
              Expect.equal (List.ofArray p.ParameterSets) [ "strong"; "F=6"; "F=7"; "F=8"; "F=9"; "F=10" ] "the sets"
          }

          test "Docs the sets docs/language.md says its Sets file runs are the file's sets" {
              let doc = readDoc "docs/language.md"
              let m = Regex.Match(doc, @"A complete file; it runs \w+ sets, ((?:`[^`]+`(?:, | and )?)+):")
              Expect.isTrue m.Success "the sentence that names the sets"
              let named = Regex.Matches(m.Groups[1].Value, "`([^`]+)`") |> Seq.map (fun g -> g.Groups[1].Value) |> List.ofSeq
              let p = compileOrFail "sets.sde" (fileOf "docs/language.md" "Sets").Text Frontend.noOverrides
              Expect.equal (List.ofArray p.ParameterSets) named "the sets, in order"
          }

          test "Docs docs/language.md's note on Every's dt: seed 104 blows up at dt = 0.01 (exit 3's error), not at dt = 0.005" {
              Expect.stringContains (File.ReadAllText(Path.Combine(repoRoot, "docs", "language.md"))) "seed 104 does" "the note"
              let every = (fileOf "docs/language.md" "Every").Text
              let plain (dt: string) =
                  Regex.Replace(every, @"(?s)query \{.*\}", "query {\n  mean(x[0])\n}\n").Replace("seed = 42", "seed = 104").Replace("dt = 0.01", "dt = " + dt)
              let p = compileOrFail "every104.sde" (plain "0.01") Frontend.noOverrides
              let e = Expect.throwsC (fun () -> p.Run() |> ignore) id
              Expect.stringContains e.Message "blew up" "the failure"
              let q = compileOrFail "every104.sde" (plain "0.005") Frontend.noOverrides
              Expect.isNone (q.Run().Sets.Head.Failure) "dt = 0.005 runs through"
          }

          test "Docs docs/language.md's JSON example is a run of its file: same keys, texts and counts, estimates within 4.5 standard errors" {
              let p = compileOrFail "every.sde" (everyFile ()) Frontend.noOverrides
              let run = JsonNode.Parse(SdeCompiler.ToJson(p.Run()))
              let diffs = jsonDiffs "" (jsonExample ()) run "" None
              Expect.isEmpty diffs (String.concat "\n" diffs)
          }

          test "Docs docs/lyapunov.md's lyapunov(3) result is examples/lorenz63_lyapunov.sde's, within 4.5 standard errors" {
              let block = blocksOf "docs/lyapunov.md" |> List.find (fun b -> b.Info = "json")
              let first = block.Text.Substring(0, block.Text.IndexOf "\n{ \"query\": \"alignment")
              let text = File.ReadAllText(Path.Combine(repoRoot, "examples", "lorenz63_lyapunov.sde"))
              let run = JsonNode.Parse(SdeCompiler.ToJson((compileOrFail "lorenz63_lyapunov.sde" text Frontend.noOverrides).Run()))
              let set0 = run["sets"].AsArray()[0]
              let result = set0["results"].AsArray()[0]
              let diffs = jsonDiffs "" (JsonNode.Parse first) result "" None
              Expect.isEmpty diffs (String.concat "\n" diffs)
          }

          test "Docs docs/language.md's CSV example is a run of examples/sweep.sde with 2000 paths, within 4.5 standard errors" {
              let doc = readDoc "docs/language.md"
              let m = Regex.Match(doc, @"For example, `dsl run (examples/\S+) --csv --paths (\d+)`:")
              Expect.isTrue m.Success "the command the example quotes"
              let block = blocksOf "docs/language.md" |> List.find (fun b -> b.Text.StartsWith "set,query,kind" && b.Text.Contains "\n...")
              // RFC 4180 fields: quoted ones may hold commas
              let fields (line: string) =
                  Regex.Matches(line, "(?:^|,)(\"(?:[^\"]|\"\")*\"|[^,]*)")
                  |> Seq.map (fun f -> f.Groups[1].Value.Trim('"'))
                  |> Array.ofSeq

              let text = File.ReadAllText(Path.Combine(repoRoot, m.Groups[1].Value))
              let p = compileOrFail "sweep.sde" text { Frontend.noOverrides with Paths = Some(int64 m.Groups[2].Value) }
              let run = SdeCompiler.ToCsv(p.Run()).Replace("\r\n", "\n").Split('\n') |> Array.filter ((<>) "")
              let quoted = block.Text.Split('\n') |> Array.filter (fun l -> l <> "" && l <> "...")
              Expect.equal quoted[0] run[0] "the header"
              Expect.isGreaterThanOrEqual quoted.Length 3 "some rows"

              for q in quoted[1..] do
                  let qf = fields q
                  // the run's row of the same set, query, kind, wrt, method and index
                  match run |> Array.map fields |> Array.tryFind (fun r -> r[..5] = qf[..5]) with
                  | None -> failtestf "no row %s in the run" q
                  | Some r ->
                      let v, se, rv, rse = float qf[7], float qf[8], float r[7], float r[8]
                      Expect.equal qf[6] r[6] (q + ": x")
                      Expect.isLessThanOrEqual (abs (v - rv)) (4.5 * rse) (sprintf "%s: value, the run's %g ± %g" q rv rse)
                      Expect.isLessThanOrEqual (abs (se - rse)) (0.25 * rse) (sprintf "%s: standard error, the run's %g" q rse)
          }

          test "Docs the JSON comparison sees a stale number, a missing key and a changed method" {
              // the check above must be able to fail: a value moved by 5 standard errors, a key the
              // run lacks and a method text that differs are each reported
              let run = JsonNode.Parse """{ "results": [ { "kind": "response", "method": "divergence_kernel(rate = 21.5 (adaptive), mode = exact)", "value": 1.0, "stderr": 0.1, "count": 1000 } ] }"""
              let stale = JsonNode.Parse """{ "results": [ { "kind": "response", "method": "divergence_kernel(rate = 21.5 (adaptive), mode = exact)", "value": 1.5, "stderr": 0.1, "count": 1000 } ] }"""
              let extra = JsonNode.Parse """{ "results": [ { "kind": "response", "method": "...", "control": "pathwise", "value": 1.0, "stderr": 0.1, "count": 1000 } ] }"""
              let meth = JsonNode.Parse """{ "results": [ { "kind": "response", "method": "divergence_kernel(rate = 21.5 (adaptive), mode = exact, control = pathwise)", "value": 1.0, "stderr": 0.1, "count": 1000 } ] }"""
              let near = JsonNode.Parse """{ "results": [ { "kind": "response", "method": "...", "value": 1.4, "stderr": 0.1, "count": 1000 } ] }"""
              Expect.isNonEmpty (jsonDiffs "" stale run "" None) "5 standard errors off"
              Expect.isNonEmpty (jsonDiffs "" extra run "" None) "a key the run does not write"
              Expect.isNonEmpty (jsonDiffs "" meth run "" None) "another method text"
              Expect.isEmpty (jsonDiffs "" near run "" None) "4 standard errors off is within the tolerance"
          }

          test "Docs the limits tables of README.md and docs/language.md are the checks' (Limits.markdownTable)" {
              for doc in [ "README.md"; "docs/language.md" ] do
                  Expect.stringContains (readDoc doc) (Limits.markdownTable + "\n") (sprintf "%s holds the table Limits renders" doc)
          }

          test "Docs the limits docs/language.md's prose quotes are Limits' values" {
              // each sentence that repeats a limit outside the table, rendered from the module's value
              let prose = Regex.Replace(readDoc "docs/language.md", @"\s+", " ")
              let c (n: int) = Limits.commas (int64 n)

              for sentence in
                  [ sprintf "a model has at most %s params in all" (c Limits.paramCount)
                    sprintf "the states together have at most %s components" (c Limits.dimension)
                    sprintf "a file has at most %s parameter sets" (c Limits.parameterSets)
                    sprintf "at most %s of them (paths × observables) per query" (Limits.power Limits.sampleValues)
                    sprintf "may have at most %s state components" (c Limits.derivativeDim)
                    sprintf "A run has at most %s paths, %s steps (`T/dt`) and %s path-steps" (Limits.power (float Limits.paths)) (Limits.power Limits.steps) (Limits.power Limits.pathSteps) ] do
                  Expect.stringContains prose sentence "docs/language.md quotes the limit as enforced"
          }

          test "Docs the limits in the table are the ones enforced: one past each is refused" {
              // a spot check that the module's values are the checks' values (not only the table's)
              let refused (text: string) (expected: string) =
                  match SdeCompiler.Compile(text, "limits.sde") with
                  | Ok _ -> failtestf "accepted:\n%s" text
                  | Error ds -> Expect.exists ds (fun d -> d.Message.Contains expected) (sprintf "%A" (ds |> List.map (fun d -> d.Message)))

              let accepted (text: string) =
                  match SdeCompiler.Compile(text, "limits.sde") with
                  | Ok _ -> ()
                  | Error ds -> failtestf "refused:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

              let withParam k = sprintf "model M {\n  param a[%d] = 0\n  state x\n  brownian W\n  d x = -a[0] * x dt + dW\n}\nquery { mean(x) }\n" k
              accepted (withParam Limits.paramCount)
              refused (withParam (Limits.paramCount + 1)) (string Limits.paramCount)
              let sweep n = sprintf "model M {\n  param a = 0\n  state x\n  brownian W\n  d x = -a * x dt + dW\n}\nsweep a from 1 to %d step 1\nsimulate { paths = 2; dt = 0.1; T = 0.1 }\nquery { mean(x) }\n" n
              refused (sweep (Limits.parameterSets + 1)) (string Limits.parameterSets)
              let state n = sprintf "model M {\n  state x[%d]\n  brownian W\n  d x[i] = -x[i] dt + dW\n}\nquery { mean(x[0]) }\n" n
              refused (state (Limits.dimension + 1)) (string Limits.dimension)
          }

          test "Docs the README's F# script is samples/embed.fsx (which the tests run), from its #r on" {
              let script = File.ReadAllText(Path.Combine(repoRoot, "samples", "embed.fsx")).Replace("\r\n", "\n")
              let body = script.Substring(script.IndexOf "#r \"nuget:")
              let fsharp = blocksOf "README.md" |> List.filter (fun b -> b.Info = "fsharp")
              Expect.equal fsharp.Length 1 "the README's one F# snippet (another would need a sample file and a check here)"
              let snippet = fsharp.Head
              Expect.equal (linesOf snippet.Text) (linesOf body) "the README's script, line for line"
          }

          test "Docs the README's C# snippet is an excerpt of samples/embed-csharp/Program.cs (which the tests build and run)" {
              let program = File.ReadAllText(Path.Combine(repoRoot, "samples", "embed-csharp", "Program.cs")).Replace("\r\n", "\n")
              let snippets = docFiles () |> List.collect blocksOf |> List.filter (fun b -> b.Info = "csharp")
              Expect.isNonEmpty snippets "the README has a C# snippet"

              for s in snippets do
                  Expect.stringContains program s.Text (sprintf "%s:%d is a verbatim excerpt of Program.cs" s.Doc s.Line)
          }

          test "Docs every F# snippet of docs/ is compiled with the tests (tests/DocsSamples.fs) and the one of fitting.md runs" {
              let snippets =
                  docFiles ()
                  |> List.filter ((<>) "README.md")
                  |> List.collect blocksOf
                  |> List.filter (fun b -> b.Info = "fsharp")

              Expect.equal (snippets |> List.map (fun b -> b.Doc)) [ "docs/fitting.md" ] "the F# snippets of docs/"
              let snippet = linesOf snippets.Head.Text
              let opens, code = snippet |> List.partition (fun l -> l.StartsWith "open ")
              Expect.equal opens [ "open Sde"; "open Sde.Lang" ] "the snippet opens what DocsSamples.fs opens"
              Expect.equal (code |> List.skipWhile ((=) "")) (region "tests/DocsSamples.fs" "docs/fitting.md") "the snippet is DocsSamples.fitFromFSharp's body"

              // and it runs: a small fit of examples/fit_ou.sde (few paths and iterations)
              use tmp = new TempDir()
              let text =
                  File.ReadAllText(Path.Combine(repoRoot, "examples", "fit_ou.sde"))
                      .Replace("paths = 4000", "paths = 200")
                      .Replace("iterations = 40", "iterations = 2")

              let code = DocsSamples.fitFromFSharp text (Path.Combine(repoRoot, "examples")) tmp.Path
              Expect.equal code 0 "the snippet's fit succeeds"
              Expect.isTrue (File.Exists(Path.Combine(tmp.Path, "fit.json"))) "it wrote fit.json"
              Expect.equal (DocsSamples.fitFromFSharp "model M {" "." tmp.Path) 2 "a bad file: its diagnostics, 2"
          }

          test "Docs docs/fitting.md's quoted fit of examples/fit_ou.sde agrees with a fit (SDE_DOCS_FULL=1 only: a fit of 40 evaluations)" {
              if not full then skiptest "a full fit (about 10 s of CPU); SDE_DOCS_FULL=1 runs it"
              let doc = readDoc "docs/fitting.md"
              let a = doc.IndexOf "```\nfit of OU to fit_ou.csv"
              let quoted = doc.Substring(a + 4, doc.IndexOf("```", a + 4) - a - 4)
              let text = File.ReadAllText(Path.Combine(repoRoot, "examples", "fit_ou.sde"))
              let p = compileOrFail "fit_ou.sde" text Frontend.noOverrides

              match p.Fit(dataDir = Path.Combine(repoRoot, "examples")) with
              | Error ds -> failtestf "the fit fails: %A" (ds |> List.map (fun d -> d.Rendered))
              | Ok r ->
                  // `  theta = 1.000 ± 0.020   (start 3)`: the estimate within 4.5 of the run's standard
                  // errors, the standard error within 25%, the start exact
                  for i, name in Array.indexed r.Names do
                      let m = Regex.Match(quoted, sprintf @"(?m)^  %s = ([-\d.e]+) ± ([\d.e]+)   \(start ([-\d.e]+)\)$" name)
                      Expect.isTrue m.Success (sprintf "the doc quotes %s" name)
                      let v, se, start = float m.Groups[1].Value, float m.Groups[2].Value, float m.Groups[3].Value
                      Expect.isLessThanOrEqual (abs (v - r.Fitted[i])) (4.5 * r.StdErrs[i] + roundingOf v) (sprintf "%s: quoted %g, fitted %g ± %g" name v r.Fitted[i] r.StdErrs[i])
                      Expect.isLessThanOrEqual (abs (se - r.StdErrs[i])) (0.25 * r.StdErrs[i] + roundingOf se) (sprintf "%s: quoted standard error %g, the fit's %g" name se r.StdErrs[i])
                      Expect.equal start r.Start[i] (sprintf "%s: the start" name)

                  let loss = Regex.Match(quoted, @"nats per row\) ([\d.e]+) ± ([\d.e]+)")
                  Expect.isTrue loss.Success "the doc quotes the loss"
                  let lv = float loss.Groups[1].Value
                  Expect.isLessThanOrEqual (abs (lv - r.FinalLoss)) (4.5 * r.FinalLossStdErr + roundingOf lv) (sprintf "loss: quoted %g, the fit's %g ± %g" lv r.FinalLoss r.FinalLossStdErr)
                  Expect.equal r.Converged (quoted.Contains "converged after") "converged, as quoted"

                  // fit.json as the doc shows it: the same top-level keys in the same order, the fitted
                  // values within 4.5 standard errors
                  let example = (blocksOf "docs/fitting.md" |> List.find (fun b -> b.Info = "json" && b.Text.Contains "\"fitted\"")).Text
                  let keysOf (json: string) = Regex.Matches(json, "(?m)^  \"(\\w+)\":") |> Seq.map (fun m -> m.Groups[1].Value) |> List.ofSeq
                  let written = Fit.toJson r
                  Expect.equal (keysOf example) (keysOf written) "fit.json's keys, in order"

                  for i, name in Array.indexed r.Names do
                      let m = Regex.Match(example, sprintf "\"fitted\": \\{[^}]*\"%s\": ([-\\d.e]+)" name)
                      Expect.isTrue m.Success (sprintf "fit.json's example quotes %s" name)
                      let v = float m.Groups[1].Value
                      Expect.isLessThanOrEqual (abs (v - r.Fitted[i])) (4.5 * r.StdErrs[i] + roundingOf v) (sprintf "fit.json %s: quoted %g, fitted %g" name v r.Fitted[i])

                  // the bandwidth is a function of the data alone (the rule of fitting.md): to the digits quoted
                  let bw = Regex.Match(example, @"""bandwidth"": \[ ([\d.e]+) \]")
                  Expect.isTrue bw.Success "fit.json's example quotes the bandwidth"
                  Expect.isLessThanOrEqual (abs (float bw.Groups[1].Value - r.Bandwidth[0])) (roundingOf (float bw.Groups[1].Value)) "the bandwidth"
          }

          test "Docs docs/fitting.md's OU file is examples/fit_ou.sde" {
              let example = File.ReadAllText(Path.Combine(repoRoot, "examples", "fit_ou.sde")).Replace("\r\n", "\n")
              let body = example.Split('\n') |> Array.skipWhile (fun l -> l.StartsWith "//" || l = "") |> String.concat "\n"
              Expect.equal (fileOf "docs/fitting.md" "OU").Text body "the doc's file, after the example's opening comments"
          } ]
