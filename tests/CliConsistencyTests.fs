/// The command line, consistent (issue 13): `--opt=value` and options on either side of the file,
/// `--out` checked before the run, `-` for standard input, several files in one run, `dsl --help`,
/// and the compiler's warnings (a file without queries, an unused brownian).
module Sde.Tests.CliConsistencyTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open Expecto
open Sde
open Sde.Tests.CliTests

/// `dotnet dsl.dll ARGS` with `input` on its standard input.
let private dslWithInput (input: string) (args: string list) : Outcome =
    let psi = ProcessStartInfo("dotnet")
    psi.ArgumentList.Add dslDll

    for a in args do
        psi.ArgumentList.Add a

    psi.WorkingDirectory <- repoRoot
    psi.RedirectStandardInput <- true
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.UseShellExecute <- false
    psi.Environment["NO_COLOR"] <- "1"
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    p.StandardInput.Write input
    p.StandardInput.Close()

    if not (p.WaitForExit(TimeSpan.FromMinutes 3.0)) then
        p.Kill true
        failwithf "dsl %s did not finish in 3 minutes" (String.Join(" ", args))

    { Code = p.ExitCode; Out = out.Result; Err = err.Result }

/// goodModel with a second brownian that no equation uses (line 6: `  brownian V`).
let private unusedBrownian = goodModel.Replace("  brownian W\n", "  brownian W\n  brownian V\n")

/// goodModel without its query block.
let private noQueries = goodModel.Substring(0, goodModel.IndexOf "query {")

// In parallel with the rest, like the Cli list: each test runs dsl processes in its own temporary folder.
[<Tests>]
let tests =
    testList
        "CliConsistency"
        [ test "CliConsistency --opt=value works as --opt value, and options go before or after the file" {
              use tmp = new TempDir()
              let f = tmp.File "good.sde" goodModel
              let spaced = [ "run"; f; "--paths"; "40"; "--seed"; "9"; "--set"; "b=0.7"; "--json"; "--quiet" ]
              let equals = [ "run"; "--paths=40"; "--seed=9"; "--json"; "--set=b=0.7"; f; "--quiet" ]
              let a, b = dsl spaced, dsl equals
              Expect.equal a.Code 0 (describe spaced a)
              Expect.equal b.Code 0 (describe equals b)
              let ja, jb = parseJson a, parseJson b
              Expect.equal (num jb [ "settings"; "paths" ]) 40.0 "--paths=40"
              Expect.equal (num jb [ "settings"; "seed" ]) 9.0 "--seed=9"
              Expect.equal (num ((jb["sets"].AsArray()[0])) [ "params"; "b" ]) 0.7 "--set=b=0.7"
              Expect.equal (ja["sets"].ToJsonString()) (jb["sets"].ToJsonString()) "the same results either way"
          }

          test "CliConsistency --out is checked before the run: an existing file, a place that cannot be written" {
              use tmp = new TempDir()
              let f = tmp.File "good.sde" goodModel
              let file = tmp.File "taken" "keep me"

              for out, expected in [ file, "is a file"; Path.Combine(file, "sub"), "cannot write there" ] do
                  let args = [ "run"; f; "--out"; out; "--quiet" ]
                  let o = dsl args
                  expectUnlocatedError out ("dsl: error: --out " + out + ": " + expected) args o
                  Expect.equal o.Out "" (sprintf "nothing ran\n%s" (describe args o))

              Expect.equal (File.ReadAllText file) "keep me" "the file in the way is untouched"
              let args = [ "run"; f; "--out"; Path.Combine(tmp.Path, "new", "deep"); "--quiet" ]
              Expect.equal (dsl args).Code 0 "a new folder, several levels deep, is created"
              Expect.isTrue (File.Exists(Path.Combine(tmp.Path, "new", "deep", "results.json"))) "results written"
              Expect.isEmpty (Directory.GetFiles(Path.Combine(tmp.Path, "new", "deep"), ".dsl-write-test*")) "the probe file is removed"
          }

          test "CliConsistency - reads the model from standard input, named <stdin>" {
              let o = dslWithInput goodModel [ "run"; "-"; "--json"; "--quiet" ]
              Expect.equal o.Code 0 (describe [ "run"; "-" ] o)
              Expect.equal (str (parseJson o) [ "source" ]) "<stdin>" "the source"
              let bad = dslWithInput (goodModel.Replace("-a * x dt", "-c * x dt")) [ "check"; "-" ]
              Expect.equal bad.Code 2 (describe [ "check"; "-" ] bad)
              Expect.stringContains bad.Err "<stdin>:7:" "located in <stdin>"
              let ok = dslWithInput goodModel [ "check"; "-" ]
              Expect.stringContains ok.Out "<stdin>: ok" (describe [ "check"; "-" ] ok)
          }

          test "CliConsistency dsl run a.sde b.sde runs both, in order; --json an array; --out one folder per file; the worst exit code" {
              use tmp = new TempDir()
              let a = tmp.File "first.sde" goodModel
              let b = tmp.File "second.sde" (goodModel.Replace("seed = 4", "seed = 5"))
              let out = Path.Combine(tmp.Path, "out")
              let args = [ "run"; a; b; "--json"; "--quiet"; "--paths=50"; "--out"; out ]
              let o = dsl args
              Expect.equal o.Code 0 (describe args o)
              let arr = (parseJson o).AsArray()
              Expect.equal arr.Count 2 "one report per file"
              Expect.equal [ for r in arr -> r["source"].GetValue<string>() ] [ a; b ] "in order"
              Expect.equal [ for r in arr -> (at r [ "settings"; "seed" ]).GetValue<int>() ] [ 4; 5 ] "each its own settings"

              for stem in [ "first"; "second" ] do
                  Expect.isTrue (File.Exists(Path.Combine(out, stem, "results.json"))) (stem + ": results in --out/STEM")

              let table = dsl [ "run"; a; b; "--quiet" ]
              Expect.equal table.Code 0 (describe [ "run"; a; b ] table)
              let ia, ib = table.Out.IndexOf("(" + a + ")"), table.Out.IndexOf("(" + b + ")")
              Expect.isTrue (ia >= 0 && ib > ia) (sprintf "two tables, in order\n%s" table.Out)

              let bad = tmp.File "bad.sde" (goodModel.Replace("-a * x dt", "-c * x dt"))
              let boom = tmp.File "boom.sde" explodingModel
              let worst = [ "run"; bad; a; boom; "--quiet" ]
              let w = dsl worst
              Expect.equal w.Code 3 (sprintf "3 (a failed run) over 2 (an input error)\n%s" (describe worst w))
              Expect.stringContains w.Out ("(" + a + ")") "the good file still ran"
              Expect.stringContains w.Err "bad.sde:7:" "the bad file's error"
              let two = [ "run"; bad; a; "--quiet" ]
              Expect.equal (dsl two).Code 2 "an input error and a success: 2"

              Directory.CreateDirectory(Path.Combine(tmp.Path, "sub")) |> ignore
              let same = [ "run"; a; tmp.File (Path.Combine("sub", "first.sde")) goodModel; "--out"; out ]
              expectUnlocatedError "two files with one stem" "dsl: error: --out: two files are named 'first'" same (dsl same)
          }

          test "CliConsistency dsl --help describes the tool, gives examples, the exit codes and the docs" {
              let h = dsl [ "--help" ]
              Expect.equal h.Code 0 (describe [ "--help" ] h)
              Expect.stringContains h.Out "stochastic differential equations" "what the tool is"
              let examples = h.Out.Split('\n') |> Array.filter (fun l -> l.TrimStart().StartsWith "dsl run " || l.TrimStart().StartsWith "dsl check ")
              Expect.isGreaterThanOrEqual examples.Length 3 (sprintf "three examples\n%s" h.Out)
              Expect.stringContains h.Out "Exit codes: 0" "the exit codes"
              Expect.stringContains h.Out "2 an input or option error" "exit 2"
              Expect.stringContains h.Out "3 a run that failed" "exit 3"
              Expect.stringContains h.Out "docs/language.md" "where the docs are"
              Expect.stringContains h.Out "run <options>" "the commands"
          }

          test "CliConsistency an unused brownian and a file without queries: warnings on stderr and in the JSON; --strict exits 3" {
              use tmp = new TempDir()
              let f = tmp.File "unused.sde" unusedBrownian
              let args = [ "run"; f; "--json"; "--quiet" ]
              let o = dsl args
              Expect.equal o.Code 0 (describe args o)
              let expected = f + ":6:12: warning: brownian 'V' is declared but no equation has a dV term"
              Expect.stringContains o.Err expected (describe args o)
              let ws = (at (parseJson o) [ "warnings" ]).AsArray() |> Seq.map (fun w -> w.GetValue<string>()) |> List.ofSeq
              Expect.equal ws.Length 1 "one warning in the JSON"
              Expect.stringStarts ws.Head expected "the JSON's warning"
              let strict = args @ [ "--strict" ]
              Expect.equal (dsl strict).Code 3 "--strict: a warning fails the run"
              let checkArgs = [ "check"; f ]
              let c = dsl checkArgs
              Expect.equal c.Code 0 (describe checkArgs c)
              Expect.stringContains c.Err expected "check warns too"

              let nq = tmp.File "noq.sde" noQueries
              let o = dsl [ "run"; nq; "--quiet"; "--json" ]
              Expect.equal o.Code 0 (describe [ "run"; nq ] o)
              Expect.stringContains o.Err (nq + ":1:1: warning: the file has no 'query' block") (describe [ "run"; nq ] o)
              Expect.equal ((at (parseJson o) [ "warnings" ]).AsArray().Count) 1 "in the JSON"

              let clean = dsl [ "run"; tmp.File "good.sde" goodModel; "--quiet"; "--json" ]
              Expect.isFalse (clean.Err.Contains "warning") (describe [ "run"; "good.sde" ] clean)
              Expect.isNull (at (parseJson clean) [ "warnings" ]) "no warnings key without warnings"
          }

          test "CliConsistency the API reports the compiler's warnings, located" {
              match SdeCompiler.Compile(unusedBrownian, "u.sde") with
              | Error ds -> failtestf "%A" (ds |> List.map string)
              | Ok p ->
                  match p.Warnings with
                  | [ w ] ->
                      Expect.equal (w.Line, w.Col, w.Severity) (6, 12, "warning") "located warning"
                      Expect.stringStarts w.Rendered "u.sde:6:12: warning: brownian 'V'" "rendered"
                      Expect.stringContains w.Rendered "\n  brownian V\n           ^" "with the line and a caret"
                  | ws -> failtestf "one warning expected: %A" (ws |> List.map string)

              match SdeCompiler.Compile(noQueries + "query { }\n", "e.sde") with
              | Ok p ->
                  match p.Warnings with
                  | [ w ] ->
                      Expect.equal w.Line (noQueries.Split('\n').Length) "at the empty query block"
                      Expect.stringContains w.Message "the query block is empty" "says so"
                  | ws -> failtestf "one warning expected: %A" (ws |> List.map string)
              | Error ds -> failtestf "%A" (ds |> List.map string)

              match SdeCompiler.Compile(goodModel, "g.sde") with
              | Ok p -> Expect.isEmpty p.Warnings "no warnings"
              | Error ds -> failtestf "%A" (ds |> List.map string)
          } ]
