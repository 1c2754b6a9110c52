/// End-to-end tests of the `dsl` command-line tool: the built dsl.dll is run as a process.
module Sde.Tests.CliTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open Expecto

/// The repository root: the first folder above the test assembly that holds Dsl.sln.
let repoRoot =
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "Dsl.sln not found above the test assembly"
        elif File.Exists(Path.Combine(d.FullName, "Dsl.sln")) then d.FullName
        else up d.Parent

    up (DirectoryInfo AppContext.BaseDirectory)

/// The configuration the tests were built in (tests/bin/<Configuration>/net10.0/).
let configuration =
    let tfmDir = DirectoryInfo AppContext.BaseDirectory
    tfmDir.Parent.Name

/// dsl.dll, built in the same configuration through the project reference (SDE_DSL_DLL overrides).
let dslDll =
    match Environment.GetEnvironmentVariable "SDE_DSL_DLL" with
    | null
    | "" -> Path.Combine(repoRoot, "dsl", "cli", "bin", configuration, "net10.0", "dsl.dll")
    | p -> p

type Outcome = { Code: int; Out: string; Err: string }

/// Runs `dotnet dsl.dll ARGS` in `cwd` (the repository root by default).
let dslIn (cwd: string) (args: string list) : Outcome =
    let psi = ProcessStartInfo("dotnet")
    psi.ArgumentList.Add dslDll

    for a in args do
        psi.ArgumentList.Add a

    psi.WorkingDirectory <- cwd
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true
    psi.UseShellExecute <- false
    psi.Environment["NO_COLOR"] <- "1"
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()

    if not (p.WaitForExit(TimeSpan.FromMinutes 3.0)) then
        p.Kill true
        failwithf "dsl %s did not finish in 3 minutes" (String.Join(" ", args))

    { Code = p.ExitCode; Out = out.Result; Err = err.Result }

let dsl args = dslIn repoRoot args

let describe (args: string list) (o: Outcome) =
    sprintf "dsl %s\nexit %d\n--- stdout\n%s\n--- stderr\n%s" (String.Join(" ", args)) o.Code o.Out o.Err

let examples () =
    Directory.GetFiles(Path.Combine(repoRoot, "examples"), "*.sde") |> Array.sort

let collapse (s: string) = Regex.Replace(s.Trim(), @"\s+", " ")

/// The queries of a file as written (one per line in the `query` block), white space collapsed.
let queriesOf (file: string) =
    let text = File.ReadAllText file
    let m = Regex.Match(text, @"(?m)^\s*query\s*\{([^}]*)\}")

    if not m.Success then
        failwithf "%s: no query block" file

    m.Groups[1].Value.Split('\n')
    |> Array.map (fun l ->
        let i = l.IndexOf "//"
        collapse (if i >= 0 then l.Substring(0, i) else l))
    |> Array.filter (fun l -> l <> "")
    |> Array.toList

let parseJson (o: Outcome) = JsonNode.Parse o.Out

/// `node[k1][k2]...`
let at (node: JsonNode) (keys: string list) = keys |> List.fold (fun (n: JsonNode) (k: string) -> n[k]) node
let num (node: JsonNode) (keys: string list) = (at node keys).GetValue<float>()
let str (node: JsonNode) (keys: string list) = (at node keys).GetValue<string>()

let resultQueries (set: JsonNode) =
    set["results"].AsArray() |> Seq.map (fun r -> r["query"].GetValue<string>()) |> List.ofSeq

/// A temporary folder, deleted on dispose.
type TempDir() =
    let path = Path.Combine(Path.GetTempPath(), "sde-cli-" + Guid.NewGuid().ToString("N"))
    do Directory.CreateDirectory path |> ignore
    member _.Path = path

    member _.File (name: string) (text: string) =
        let p = Path.Combine(path, name)
        File.WriteAllText(p, text)
        p

    interface IDisposable with
        member _.Dispose() =
            try
                Directory.Delete(path, true)
            with _ ->
                ()

let goodModel =
    """model Decay {
  param a = 1 in (0, inf)
  param b = 0.5
  state x
  brownian W
  init x = 1
  d x = -a * x dt + b dW
}

simulate { paths = 300; dt = 0.01; T = 1; seed = 4 }

query {
  mean(x)
  density(x) on [-2, 2] bins 20
}
"""

let explodingModel =
    """model Explode {
  state x
  init x = 2
  d x = x^3 dt
}

simulate { paths = 100; dt = 0.01; T = 10; seed = 1 }

query { mean(x) }
"""

/// No stack trace and no exception name may reach the user.
let expectNoTrace (what: string) (o: Outcome) =
    let all = o.Out + o.Err
    Expect.isFalse (all.Contains "   at ") (sprintf "%s: a stack frame in the output\n%s" what all)
    Expect.isFalse (all.Contains "Exception") (sprintf "%s: an exception name in the output\n%s" what all)

let expectLocatedError (what: string) (args: string list) (o: Outcome) =
    let d = describe args o
    Expect.equal o.Code 2 (sprintf "%s: exit code 2\n%s" what d)
    Expect.isTrue (Regex.IsMatch(o.Err, @"(?m)^[^\n]+:\d+:\d+: error: ")) (sprintf "%s: FILE:LINE:COL: error: on stderr\n%s" what d)
    expectNoTrace what o

/// An error with no place in the file (an option, a file that cannot be read): exit 2, `PREFIX: error:
/// MESSAGE` on stderr, where PREFIX is the file or `dsl`, and no made-up LINE:COL.
let expectUnlocatedError (what: string) (expected: string) (args: string list) (o: Outcome) =
    let d = describe args o
    Expect.equal o.Code 2 (sprintf "%s: exit code 2\n%s" what d)
    Expect.stringContains o.Err expected (sprintf "%s: the message\n%s" what d)
    Expect.isFalse (Regex.IsMatch(o.Err, @":\d+:\d+: error: ")) (sprintf "%s: no LINE:COL for an error outside the file\n%s" what d)
    expectNoTrace what o

// In parallel with the rest: each test starts its own dsl processes in temporary folders (a process's
// start is mostly one core of JIT, so on 2 cores the suite waits less when they overlap).
[<Tests>]
let tests =
    testList
        "Cli"
        [ test "Cli dsl.dll is built" {
              Expect.isTrue (File.Exists dslDll) (sprintf "%s missing (build dsl/cli in %s)" dslDll configuration)
          }

          test "Cli every example runs with at most 200 paths and its JSON lists the queries as written" {
              let files = examples ()
              Expect.isGreaterThanOrEqual files.Length 5 "the examples"

              // never more paths than the file asks for (the Lyapunov examples run a few long paths);
              // one process per paths value (`dsl run a.sde b.sde` runs both, --json gives an array),
              // since a process's start costs more CPU than a 200-path run of most examples
              let pathsOf (f: string) =
                  let m = Text.RegularExpressions.Regex.Match(File.ReadAllText f, @"paths\s*=\s*(\d+)")
                  if m.Success then min 200 (int m.Groups[1].Value) else 200

              let runs =
                  [ for paths, group in files |> Array.groupBy pathsOf do
                        let rels = group |> Array.map (fun f -> Path.GetRelativePath(repoRoot, f)) |> List.ofArray
                        let args = [ "run" ] @ rels @ [ "--paths"; string paths; "--json"; "--quiet" ]
                        let o = dsl args
                        Expect.equal o.Code 0 (describe args o)
                        expectNoTrace (String.Join(" ", rels)) o
                        let docs =
                            match parseJson o with
                            | :? JsonArray as a -> [ for d in a -> d ]
                            | d -> [ d ]
                        Expect.equal docs.Length group.Length (sprintf "one JSON document per file\n%s" (describe args o))
                        yield! List.zip (List.ofArray group) docs |> List.map (fun (f, j) -> f, paths, j) ]

              Expect.equal runs.Length files.Length "every example ran"

              for f, paths, j in runs do
                  let rel = Path.GetRelativePath(repoRoot, f)
                  Expect.equal (num j [ "settings"; "paths" ]) (float paths) (rel + ": settings.paths")
                  Expect.equal (j["source"].GetValue<string>()) rel (rel + ": source")
                  let sets = j["sets"].AsArray()
                  Expect.isGreaterThan sets.Count 0 (rel + ": sets")
                  let expected = queriesOf f

                  for s in sets do
                      Expect.sequenceEqual (resultQueries s) expected (sprintf "%s: queries of set %O" rel s["name"])

                  for s in sets do
                      for r in s["results"].AsArray() do
                          match r["kind"].GetValue<string>() with
                          | "mean"
                          | "response"
                          | "log_normalizer"
                          | "variance"
                          | "covariance"
                          | "ess" ->
                              Expect.isTrue (Double.IsFinite(r["value"].GetValue<float>())) (sprintf "%s: %O finite" rel r["query"])
                          | "density"
                          | "density_response"
                          | "alignment"
                          | "mean_series"
                          | "score"
                          | "lyapunov" ->
                              Expect.isGreaterThan (r["values"].AsArray().Count) 0 (sprintf "%s: %O values" rel r["query"])
                          | "samples" ->
                              Expect.equal (r["rows"].GetValue<float>()) (float paths) (sprintf "%s: %O rows" rel r["query"])
                          | "samples_every" ->
                              Expect.equal (r["rows"].GetValue<float>()) (float paths * r["times"].GetValue<float>()) (sprintf "%s: %O rows" rel r["query"])
                          | k -> failtestf "%s: unknown kind %s" rel k

                  Expect.isGreaterThan (num j [ "timing"; "path_steps_per_second" ]) 0.0 (rel + ": timing")
          }

          test "Cli the table output (without --json) runs" {
              let args = [ "run"; "examples/ou.sde"; "--paths"; "200"; "--quiet" ]
              let o = dsl args
              Expect.equal o.Code 0 (describe args o)
              Expect.stringContains o.Out "mean(x)" "the table names the query"
          }

          test "Cli --out writes results.json and one SVG per density query" {
              use tmp = new TempDir()
              let dir = Path.Combine(tmp.Path, "out")
              let args = [ "run"; "examples/double_well.sde"; "--paths"; "200"; "--out"; dir; "--quiet" ]
              let o = dsl args
              Expect.equal o.Code 0 (describe args o)
              let json = Path.Combine(dir, "results.json")
              Expect.isTrue (File.Exists json) "results.json"
              let j = JsonNode.Parse(File.ReadAllText json)

              let densities =
                  j["sets"].AsArray()
                  |> Seq.sumBy (fun s ->
                      s["results"].AsArray()
                      |> Seq.filter (fun r -> r["kind"].GetValue<string>().StartsWith "density")
                      |> Seq.length)

              Expect.equal densities 2 "double_well has two density queries"
              let svgs = Directory.GetFiles(dir, "*.svg")
              Expect.equal svgs.Length densities "one SVG per density query"

              for s in svgs do
                  Expect.stringContains (File.ReadAllText s) "<svg" (s + " is an SVG")
          }

          test "Cli check on a good file exits 0" {
              // one process checks them all (dsl check FILE...), one "ok" line each
              let files = examples () |> Array.toList
              let args = "check" :: files
              let o = dsl args
              Expect.equal o.Code 0 (describe args o)

              for f in files do
                  Expect.isTrue (o.Out.Split('\n') |> Array.exists (fun l -> l.Contains(Path.GetFileName f) && l.Contains "ok")) (sprintf "check says ok for %s: %s" f o.Out)
          }

          test "Cli --help and --version exit 0" {
              let h = dsl [ "--help" ]
              Expect.equal h.Code 0 (describe [ "--help" ] h)
              Expect.stringContains h.Out "run" "usage names run"
              let rh = dsl [ "run"; "--help" ]
              Expect.equal rh.Code 0 (describe [ "run"; "--help" ] rh)
              Expect.stringContains rh.Out "--paths" "run usage names --paths"
              let v = dsl [ "--version" ]
              Expect.equal v.Code 0 (describe [ "--version" ] v)
              Expect.isTrue (Regex.IsMatch(v.Out, @"\d+\.\d+\.\d+")) ("a version number: " + v.Out)
          }

          test "Cli malformed input exits 2 with a located error and no stack trace" {
              use tmp = new TempDir()
              let good = tmp.File "good.sde" goodModel

              let cases =
                  [ "syntax error", [ "run"; tmp.File "syntax.sde" (goodModel.Replace("d x = -a * x dt + b dW", "d x = -a * x dt +")) ]
                    "unknown name", [ "run"; tmp.File "unknown.sde" (goodModel.Replace("-a * x dt", "-c * x dt")) ]
                    "bad setting", [ "run"; tmp.File "setting.sde" (goodModel.Replace("seed = 4", "seed = 4; colour = 3")) ]
                    "bad setting value", [ "run"; tmp.File "dt.sde" (goodModel.Replace("dt = 0.01", "dt = -1")) ]
                    "not linear in dt", [ "run"; tmp.File "dt2.sde" (goodModel.Replace("-a * x dt", "-a * x dt^2")) ]
                    "missing closing brace", [ "run"; tmp.File "brace.sde" (goodModel.Replace("seed = 4 }", "seed = 4")) ]
                    "unterminated comment", [ "run"; tmp.File "comment.sde" (goodModel + "/* no end") ]
                    "empty file", [ "run"; tmp.File "empty.sde" "" ]
                    "only a comment", [ "check"; tmp.File "comment-only.sde" "// nothing here\n" ]
                    "binary junk",
                    [ "run"
                      (let p = Path.Combine(tmp.Path, "junk.sde")
                       let rng = Random 7
                       let bytes = Array.zeroCreate<byte> 600
                       rng.NextBytes bytes
                       File.WriteAllBytes(p, bytes)
                       p) ]
                    "paths past the limit in the file", [ "run"; tmp.File "paths.sde" (goodModel.Replace("seed = 4", "seed = 4; paths = 100000000000000")) ] ]

              for what, args in cases do
                  expectLocatedError what args (dsl args)
          }

          test "Cli an error outside the file names the file or the option, with no made-up line and column" {
              use tmp = new TempDir()
              let good = tmp.File "good.sde" goodModel
              let missing = Path.Combine(tmp.Path, "missing.sde")
              let sweep = Path.Combine(repoRoot, "examples", "sweep.sde")

              let cases =
                  [ "missing file", [ "run"; missing ], missing + ": error: no such file"
                    "missing file (check)", [ "check"; missing ], missing + ": error: no such file"
                    "a directory (not 'access denied')", [ "run"; tmp.Path ], tmp.Path + ": error: is a directory"
                    "unknown parameter in --set", [ "run"; good; "--set"; "zz=3" ], good + ": error: --set: unknown param 'zz'"
                    "non-number in --set", [ "run"; good; "--set"; "a=abc" ], "dsl: error: --set a=abc: 'abc' is not a number"
                    "--set outside the domain", [ "run"; good; "--set=a=-1" ], good + ": error: --set: "
                    "bad --params", [ "run"; good; "--params"; "nope" ], good + ": error: --params: unknown parameter set 'nope'"
                    "bad --paths", [ "run"; good; "--paths"; "0" ], good + ": error: --paths: "
                    "bad --dt", [ "run"; good; "--dt=-0.5" ], good + ": error: --dt: "
                    "--paths past the limit (ran zero paths, exit 0)", [ "run"; good; "--paths"; "9223372036854775807" ], good + ": error: --paths: "
                    "--dt giving more steps than the limit (exit 3 without a location)", [ "run"; good; "--dt"; "1e-300" ], good + ": error: --dt: "
                    "--dt making a window empty (exit 3)",
                    [ "run"; tmp.File "window.sde" (goodModel.Replace("T = 1;", "T = 6;").Replace("  mean(x)\n", "  mean(x) over [0.5, 1]\n")); "--dt"; "3" ],
                    "error: --dt: query 'mean(x) over [0.5, 1]'"
                    "negative --threads (exit 3)", [ "run"; good; "--threads"; "-1" ], "dsl: error: --threads: must be >= 0"
                    "negative --seed", [ "run"; good; "--seed=-1" ], "dsl: error: --seed: "
                    "unknown --backend", [ "run"; good; "--backend"; "tpu" ], "dsl: error: --backend: 'tpu' is not available"
                    "--force without --shard", [ "run"; good; "--force" ], "dsl: error: --force applies to a shard only"
                    "--shard without --out", [ "run"; good; "--shard"; "0/2" ], "dsl: error: --shard needs --out"
                    "a bad --shard", [ "run"; good; "--shard=7"; "--out"; tmp.Path ], "dsl: error: --shard: "
                    "an unknown option", [ "run"; good; "--colour" ], "dsl: error: unknown option '--colour'"
                    "an option without its value", [ "run"; good; "--paths" ], "dsl: error: "
                    "an option's value of the wrong type", [ "run"; good; "--paths"; "many" ], "dsl: error: "
                    "no file", [ "run"; "--paths"; "10" ], "dsl: error: no model file given"
                    "an unknown command", [ "simulate"; good ], "dsl: error: "
                    "- twice", [ "run"; "-"; "-" ], "dsl: error: - (standard input) may be given once"
                    "compile: an unknown --target", [ "compile"; good; "--out"; tmp.Path; "--target"; "spirv" ], "dsl: error: --target: "
                    "slurm: a bad --time", [ "slurm"; good; "--shards"; "2"; "--time"; "soon" ], "dsl: error: --time soon: "
                    "--set on a swept parameter (ran every set with one value under the sweep's labels)",
                    [ "run"; sweep; "--set"; "theta=9" ], sweep + ": error: --set: 'theta' is swept" ]

              for what, args, expected in cases do
                  expectUnlocatedError what expected args (dsl args)
          }

          test "Cli compile: a missing --out or an unknown --arch is exit 2 with a message (exit 3 before)" {
              use tmp = new TempDir()
              let good = tmp.File "good.sde" goodModel

              for args in [ [ "compile"; good ]; [ "compile"; good; "--out"; tmp.Path; "--arch"; "sm_9999999999" ]; [ "compile"; good; "--out"; tmp.Path; "--arch"; "gpu" ] ] do
                  let o = dsl args
                  Expect.equal o.Code 2 (describe args o)
                  Expect.stringContains o.Err "error:" (describe args o)
                  expectNoTrace "compile" o
          }

          test "Cli a model that blows up exits 3 naming the step, the time and the failed paths" {
              use tmp = new TempDir()
              let f = tmp.File "explode.sde" explodingModel
              let args = [ "run"; f; "--json"; "--quiet" ]
              let o = dsl args
              let d = describe args o
              Expect.equal o.Code 3 d
              Expect.isTrue (Regex.IsMatch(o.Err, @"step \d+")) ("names the step\n" + d)
              Expect.isTrue (Regex.IsMatch(o.Err, @"t = \d")) ("names the time\n" + d)
              Expect.isTrue (Regex.IsMatch(o.Err, @"\d+ path")) ("names the number of failed paths\n" + d)
              expectNoTrace "explode" o
          }

          test "Cli a weighted population whose states overflow before they are infinite fails as a blow-up, not an index error" {
              // dt = 0.05 is too large for the double well's cubic drift: states reach 1e200, finite, whose
              // squares overflow in the kernel density of log_density (it threw IndexOutOfRange)
              let args = [ "run"; "examples/wfr_double_well.sde"; "--paths"; "300"; "--dt"; "0.05"; "--T"; "2"; "--json"; "--quiet" ]
              let o = dsl args
              let d = describe args o
              Expect.equal o.Code 3 d
              Expect.isTrue (Regex.IsMatch(o.Err, @"step \d+")) ("names the step\n" + d)
              Expect.isFalse (o.Err.Contains "Index") ("no index error\n" + d)
              expectNoTrace "overflow" o
          }

          test "Cli extrapolate = richardson on a GPU backend: located at the setting, with error:" {
              use tmp = new TempDir()
              let f = tmp.File "r.sde" (goodModel.Replace("seed = 4 }", "seed = 4; extrapolate = richardson }"))
              let args = [ "run"; f; "--backend"; "ilgpu-cpu" ]
              let o = dsl args
              expectLocatedError "richardson on ilgpu-cpu" args o
              Expect.stringContains o.Err (f + ":10:") (describe args o)
          }

          test "Cli --set, --params, --paths, --dt, --T and --seed show in the JSON" {
              let args =
                  [ "run"; "examples/ou.sde"; "--json"; "--quiet"; "--set"; "sigma=0.7"; "--set"; "x0=2"
                    "--paths"; "300"; "--dt"; "0.02"; "--T"; "2.5"; "--seed"; "99" ]

              let o = dsl args
              Expect.equal o.Code 0 (describe args o)
              let j = parseJson o
              let s = j["settings"]
              Expect.equal (s["paths"].GetValue<int64>()) 300L "paths"
              Expect.equal (s["dt"].GetValue<float>()) 0.02 "dt"
              Expect.equal (s["T"].GetValue<float>()) 2.5 "T"
              Expect.equal (s["seed"].GetValue<int64>()) 99L "seed"
              let p = (j["sets"][0])["params"]
              Expect.equal (p["sigma"].GetValue<float>()) 0.7 "sigma"
              Expect.equal (p["x0"].GetValue<float>()) 2.0 "x0"
              Expect.equal (p["theta"].GetValue<float>()) 1.0 "theta keeps its default"

              let sweepArgs = [ "run"; "examples/sweep.sde"; "--json"; "--quiet"; "--paths"; "200"; "--params"; "theta=1.5" ]
              let so = dsl sweepArgs
              Expect.equal so.Code 0 (describe sweepArgs so)
              let sets = (parseJson so).["sets"].AsArray()
              Expect.equal sets.Count 1 "--params runs one set"
              Expect.equal (str sets[0] [ "name" ]) "theta=1.5" "the named set"
              Expect.equal (num sets[0] [ "params"; "theta" ]) 1.5 "its theta"

              let all = dsl [ "run"; "examples/sweep.sde"; "--json"; "--quiet"; "--paths"; "200" ]
              Expect.equal ((parseJson all).["sets"].AsArray().Count) 5 "without --params: the five sweep sets"
          }

          test "Cli the C# embedding sample runs" {
              let dll = Path.Combine(repoRoot, "samples", "embed-csharp", "bin", configuration, "net10.0", "EmbedCsharp.dll")
              Expect.isTrue (File.Exists dll) (dll + " missing")
              let psi = ProcessStartInfo("dotnet")
              psi.ArgumentList.Add dll
              psi.RedirectStandardOutput <- true
              psi.RedirectStandardError <- true
              use p = Process.Start psi
              let out = p.StandardOutput.ReadToEndAsync()
              let err = p.StandardError.ReadToEndAsync()
              Expect.isTrue (p.WaitForExit(TimeSpan.FromMinutes 2.0)) "finishes"
              let d = sprintf "exit %d\n%s\n%s" p.ExitCode out.Result err.Result
              Expect.equal p.ExitCode 0 d
              Expect.stringContains out.Result "bad.sde:7:10: error: unknown name 'thta'" d
              Expect.isTrue (Regex.IsMatch(out.Result, @"mean\(x\) = 0\.1\d+")) d
          }

          test "Cli no machine paths and no links outside the repository in its text files" {
              // the repository stands on its own: nothing may name a folder of one machine or the
              // team's workshop next to the clone (the patterns are split so that this file passes)
              let bad = Regex(String.Join("|", [ "/wo" + "rk/"; "/ho" + "me/"; "/tm" + "p/"; @"\.\./sha" + "red" ]))
              let exts = set [ ".md"; ".fs"; ".fsx"; ".cs"; ".sh"; ".py"; ".c"; ".sde"; ".fsproj"; ".csproj"; ".props"; ".config"; ".json"; ".sln" ]
              let skip = set [ "bin"; "obj"; ".git"; "out"; "TestResults"; "publish"; "artifacts" ]

              let rec files (d: string) : string seq =
                  seq {
                      for f in Directory.GetFiles d do
                          if exts.Contains(Path.GetExtension f) then yield f

                      for sub in Directory.GetDirectories d do
                          if not (skip.Contains(Path.GetFileName sub)) then yield! files sub
                  }

              let hits =
                  files repoRoot
                  |> Seq.collect (fun f ->
                      File.ReadAllLines f
                      |> Seq.mapi (fun i l -> i, l)
                      |> Seq.filter (fun (_, l) -> bad.IsMatch l)
                      |> Seq.map (fun (i, l) -> sprintf "%s:%d: %s" (Path.GetRelativePath(repoRoot, f)) (i + 1) (l.Trim())))
                  |> List.ofSeq

              Expect.isEmpty hits (String.Join("\n", hits))
          }

          test "Cli the F# script samples/embed.fsx runs on the packed library (#r nuget) [slow tier]" {
              Tier.requireSlow "packs the library and runs dotnet fsi with #r nuget (9 s)"
              // pack Sde.Core and Sde.Lang (already built by the test project's reference) into a
              // temporary folder under a version of their own, so that no package left in the global
              // NuGet cache by an earlier run can stand in for them; then run the sample script with
              // that version and a nuget.config beside it that names the folder (the repository's
              // samples/nuget.config names ../nupkg in the same way)
              use tmp = new TempDir()
              let feed = Path.Combine(tmp.Path, "feed")
              let version = "0.0.0-test." + Guid.NewGuid().ToString("N").Substring(0, 12)

              let runIn (cwd: string) (exe: string) (args: string list) =
                  let psi = ProcessStartInfo(exe)
                  args |> List.iter psi.ArgumentList.Add
                  psi.WorkingDirectory <- cwd
                  psi.RedirectStandardOutput <- true
                  psi.RedirectStandardError <- true
                  psi.UseShellExecute <- false
                  psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] <- "1"
                  psi.Environment["DOTNET_NOLOGO"] <- "1"
                  use p = Process.Start psi
                  let out = p.StandardOutput.ReadToEndAsync()
                  let err = p.StandardError.ReadToEndAsync()

                  if not (p.WaitForExit(TimeSpan.FromMinutes 4.0)) then
                      p.Kill true
                      failwithf "%s %s did not finish in 4 minutes" exe (String.Join(" ", args))

                  p.ExitCode, sprintf "%s %s\nexit %d\n--- stdout\n%s\n--- stderr\n%s" exe (String.Join(" ", args)) p.ExitCode out.Result err.Result

              let cache =
                  match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
                  | null
                  | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
                  | p -> p

              try
                  for project in [ "core"; Path.Combine("dsl", "lang") ] do
                      let code, d =
                          runIn repoRoot "dotnet" [ "pack"; project; "--no-build"; "-c"; configuration; "-o"; feed; "-p:PackageVersion=" + version; "-nologo" ]

                      Expect.equal code 0 d

                  Expect.isTrue (File.Exists(Path.Combine(feed, sprintf "Sde.Lang.%s.nupkg" version))) "Sde.Lang packed"
                  Expect.isTrue (File.Exists(Path.Combine(feed, sprintf "Sde.Core.%s.nupkg" version))) "Sde.Core packed"

                  let sample = File.ReadAllText(Path.Combine(repoRoot, "samples", "embed.fsx"))
                  let reference = "#r \"nuget: Sde.Lang, 0.1.0\""
                  Expect.stringContains sample reference "the sample references the package"
                  let script = tmp.File "embed.fsx" (sample.Replace(reference, sprintf "#r \"nuget: Sde.Lang, %s\"" version))

                  tmp.File
                      "nuget.config"
                      (sprintf "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<configuration>\n  <packageSources>\n    <add key=\"dsl-test\" value=\"%s\" />\n  </packageSources>\n</configuration>\n" feed)
                  |> ignore

                  let code, d = runIn tmp.Path "dotnet" [ "fsi"; script ]
                  Expect.equal code 0 d
                  Expect.isTrue (Regex.IsMatch(d, @"mean\(x\) = 0\.3\d+ ± 0\.0\d+")) d
                  Expect.isTrue (Regex.IsMatch(d, @"d mean\(x\) / d theta = -0\.\d+ ± 0\.0\d+")) d
                  // a density prints one point per bin (Points), not a scalar's Value of 0
                  Expect.isTrue (Regex.IsMatch(d, @"density\(x\) on \[0, 1\] bins 4:\r?\n  at 0\.125: 0\.\d+ ± 0\.0\d+")) d
              finally
                  // the two packages this test put into the global cache
                  for id in [ "sde.lang"; "sde.core" ] do
                      try
                          Directory.Delete(Path.Combine(cache, id, version), true)
                      with _ ->
                          ()
          }

          test "Cli --threads 1 and --threads 2 give byte-identical results" {
              let run threads =
                  let args = [ "run"; "examples/lorenz96.sde"; "--json"; "--quiet"; "--paths"; "200"; "--threads"; threads ]
                  let o = dsl args
                  Expect.equal o.Code 0 (describe args o)
                  let j = (parseJson o).AsObject()
                  j.Remove "timing" |> ignore
                  j.ToJsonString()

              let one = run "1"
              let two = run "2"
              Expect.equal two one "the JSON without the timing block"

              let rawSets threads =
                  let o = dsl [ "run"; "examples/sweep.sde"; "--json"; "--quiet"; "--paths"; "300"; "--threads"; threads ]
                  let i = o.Out.IndexOf "\"timing\""
                  Expect.isGreaterThan i 0 "a timing block"
                  o.Out.Substring(0, i)

              Expect.equal (rawSets "2") (rawSets "1") "the raw JSON text before the timing block"
          } ]
