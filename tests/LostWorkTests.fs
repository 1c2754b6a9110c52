/// Issue 19, "no lost work" and hostile input around runs, shards and Slurm scripts: a set that fails
/// keeps the others' results; signals end a run cleanly; job scripts carry any value safely; partial
/// files are checked beyond their checksum; FIFOs and devices do not hang the tool.
module Sde.Tests.LostWorkTests

open System
open System.Diagnostics
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open Expecto
open Sde.Tests.CliTests

/// `dsl ARGS` in `cwd` with extra environment variables, killed after `seconds`.
let private dslEnv (cwd: string) (env: (string * string) list) (seconds: float) (args: string list) : Outcome =
    let psi = ProcessStartInfo("dotnet", dslDll :: args, WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    psi.Environment["NO_COLOR"] <- "1"
    for (k, v) in env do
        psi.Environment[k] <- v
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()

    if not (p.WaitForExit(TimeSpan.FromSeconds seconds)) then
        p.Kill true
        failwithf "dsl %s did not finish in %g s (blocked?)" (String.Join(" ", args)) seconds

    { Code = p.ExitCode; Out = out.Result; Err = err.Result }

/// A sweep of a = 0.1, 0.5, 0.9 of dx = a x³ dt + 0.1 dW from x = 1 to T = 1: x blows up near
/// t = 1/(2a) without noise, so a = 0.9 (t ≈ 0.56) blows up, a = 0.1 (t ≈ 5) does not.
let private sweepModel =
    """model E {
  param a = 0.1
  state x
  init x = 1
  d x = a * x^3 dt + 0.1 dW
  brownian W
}
sweep a from 0.1 to 0.9 step 0.4
simulate { paths = 200; dt = 0.01; T = 1; seed = 1 }
query {
  mean(x)
  density(x) on [0, 3] bins 10
  samples(x)
}
"""

let private json (path: string) = JsonNode.Parse(File.ReadAllText path)
let private field (k: string) (n: JsonNode) = n[k]
let private item (i: int) (n: JsonNode) = n[i]
let private float' (n: JsonNode) = n.GetValue<float>()
let private text (n: JsonNode) = n.GetValue<string>()

let private setNamed (j: JsonNode) (name: string) =
    j["sets"].AsArray() |> Seq.find (fun s -> s["name"].GetValue<string>() = name)

/// Port of sbatch's `_get_argument` (src/sbatch/opt.c): the arguments sbatch reads from an `#SBATCH`
/// line (white space splits, ' and " group, a backslash escapes the next character, an unquoted #
/// ends the line). The tests check the scripts against it, independently of how dsl quotes.
let private sbatchArgs (line: string) : string list =
    let rest = line.Substring("#SBATCH".Length)
    let args = ResizeArray<string>()
    let mutable i = 0
    let mutable stop = false

    while not stop do
        while i < rest.Length && Char.IsWhiteSpace rest[i] do
            i <- i + 1

        if i >= rest.Length then stop <- true
        else
            let sb = StringBuilder()
            let mutable quoted = false
            let mutable q = ' '
            let mutable escape = false
            let mutable comment = false

            while i < rest.Length && (quoted || not (Char.IsWhiteSpace rest[i])) && not comment do
                let c = rest[i]
                if escape then
                    escape <- false
                    sb.Append c |> ignore
                elif c = '\\' then escape <- true
                elif quoted && c = q then quoted <- false
                elif quoted then sb.Append c |> ignore
                elif c = '"' || c = '\'' then
                    quoted <- true
                    q <- c
                elif c = '#' then comment <- true
                else sb.Append c |> ignore
                if not comment then i <- i + 1

            if sb.Length > 0 then args.Add(sb.ToString())
            if comment then stop <- true

    List.ofSeq args

let private sbatchLines (script: string) =
    script.Split('\n') |> Array.filter (fun l -> l.StartsWith "#SBATCH") |> Array.map sbatchArgs |> List.ofArray

let private run (exe: string) (args: string list) (cwd: string) (env: (string * string) list) =
    let psi = ProcessStartInfo(exe, args, WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for (k, v) in env do
        psi.Environment[k] <- v
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    p.WaitForExit()
    p.ExitCode, out.Result, err.Result

[<Tests>]
let tests =
    testList "lost work" [
        test "Lost work: a sweep whose set a=0.9 blows up writes the other sets' results (JSON, samples, plots), marks the failed set, exits 3" {
            use tmp = new TempDir()
            let f = tmp.File "sw.sde" sweepModel
            let out = Path.Combine(tmp.Path, "out")
            let args = [ "run"; f; "--out"; out; "--quiet" ]
            let o = dslIn tmp.Path args
            let d = describe args o
            Expect.equal o.Code 3 d
            Expect.stringContains o.Err "set a=0.9: the simulation blew up" d
            Expect.stringContains o.Out "error: the simulation blew up" ("the table marks it\n" + d)
            let j = json (Path.Combine(out, "results.json"))
            let good = setNamed j "a=0.1"
            let bad = setNamed j "a=0.9"
            Expect.isNull good["error"] "the finished set has no error"
            Expect.equal (good["results"].AsArray().Count) 3 "its three results"
            Expect.stringContains (bad["error"].GetValue<string>()) "blew up" "the failed set's error"
            Expect.equal (bad["results"].AsArray().Count) 0 "and no results"
            // the finished set's numbers are those of the set run alone (same seed and paths)
            let alone = dslIn tmp.Path [ "run"; f; "--params"; "a=0.1"; "--json"; "--quiet" ]
            Expect.equal alone.Code 0 (describe [ "--params a=0.1" ] alone)
            let aloneMean = JsonNode.Parse alone.Out |> field "sets" |> item 0 |> field "results" |> item 0 |> field "value" |> float'
            Expect.equal (good |> field "results" |> item 0 |> field "value" |> float') aloneMean "the mean, as the set alone gives it"
            // the samples file named in the JSON is complete: a header and one row per path
            let samples = good |> field "results" |> item 2 |> field "file" |> text
            // named as in a run where every set finished (samples_SET_INDEX.csv: three sets have the query)
            Expect.equal samples "samples_a=0.1_2.csv" "the file name does not depend on which sets failed"
            Expect.equal (File.ReadAllLines(Path.Combine(out, samples)).Length) 201 "samples: header + 200 rows"
            Expect.isNonEmpty (Directory.GetFiles(out, "*.svg")) "the density plot"
            Expect.isEmpty (Directory.GetFileSystemEntries(out, ".*")) "no temporaries left"
        }

        test "Lost work: a single set (--params) that blows up still writes results.json with its error, exit 3" {
            use tmp = new TempDir()
            let f = tmp.File "sw.sde" sweepModel
            let out = Path.Combine(tmp.Path, "out")
            let o = dslIn tmp.Path [ "run"; f; "--params"; "a=0.9"; "--out"; out; "--quiet"; "--json" ]
            Expect.equal o.Code 3 (describe [ "run --params a=0.9" ] o)
            let j = json (Path.Combine(out, "results.json"))
            Expect.stringContains (j |> field "sets" |> item 0 |> field "error" |> text) "blew up" "error in the file"
            Expect.stringContains (JsonNode.Parse o.Out |> field "sets" |> item 0 |> field "error" |> text) "blew up" "and in the printed JSON"
        }

        test "Lost work: shards record a failed set; each shard and the merge exit 3, the merge writes the finished sets as the unsplit run" {
            use tmp = new TempDir()
            let f = tmp.File "sw.sde" (sweepModel.Replace("  samples(x)\n", ""))
            let whole = dslIn tmp.Path [ "run"; f; "--json"; "--quiet"; "--backend"; "cpu" ]
            Expect.equal whole.Code 3 (describe [ "run" ] whole)
            for k in 0..1 do
                let o = dslIn tmp.Path [ "run"; f; "--shard"; sprintf "%d/2" k; "--out"; "shards"; "--quiet" ]
                Expect.equal o.Code 3 (describe [ "run --shard" ] o)
                Expect.stringContains o.Err "set a=0.9" "names the failed set"
            let again = dslIn tmp.Path [ "run"; f; "--shard"; "0/2"; "--out"; "shards"; "--quiet" ]
            Expect.stringContains again.Out "is complete already" "kept as a checkpoint"
            Expect.equal again.Code 3 "and still a failed shard"
            let m = dslIn tmp.Path [ "merge"; "shards"; "--out"; "merged"; "--quiet" ]
            Expect.equal m.Code 3 (describe [ "merge" ] m)
            let merged = json (Path.Combine(tmp.Path, "merged", "results.json"))
            let unsplit = JsonNode.Parse whole.Out
            Expect.equal ((setNamed merged "a=0.1" |> field "results").ToJsonString()) ((setNamed unsplit "a=0.1" |> field "results").ToJsonString()) "the finished set, bit for bit"
            Expect.stringContains (setNamed merged "a=0.9" |> field "error" |> text) "blew up" "the failed set"
        }

        test "Lost work: a fit whose run fails after an evaluation writes fit.json with the error and the evaluations done, exit 3" {
            use tmp = new TempDir()
            // dx = θ x³ dt from x = 1 blows up at t = 1/(2θ): the start θ = 0.1 runs; Adam's first step
            // moves θ by lr = 0.5 towards the data (x ≈ 1.5 at T = 1, θ ≈ 0.28), to 0.6, where the paths blow up before T
            let rows = Array.init 200 (fun i -> sprintf "%.4f" (1.5 + 0.05 * sin (float i)))
            File.WriteAllText(Path.Combine(tmp.Path, "d.csv"), "x\n" + String.Join("\n", rows) + "\n")
            let f =
                tmp.File "fit.sde"
                    "model C {\n  param theta = 0.1\n  state x\n  brownian W\n  init x = 1\n  d x = theta * x^3 dt + 0.01 dW\n}\nsimulate { paths = 400; dt = 0.01; T = 1; seed = 3 }\nfit theta to \"d.csv\" {\n  objective = kl at T\n  optimizer = adam(lr = 0.5)\n  iterations = 2\n}\n"
            let out = Path.Combine(tmp.Path, "out")
            let o = dslIn tmp.Path [ "fit"; f; "--out"; out; "--quiet" ]
            Expect.equal o.Code 3 (describe [ "fit" ] o)
            let j = json (Path.Combine(out, "fit.json"))
            Expect.stringContains (j |> field "error" |> text) "theta = 0.6" "the failure and where"
            let h = (j |> field "history").AsArray()
            Expect.equal h.Count 1 "the one evaluation done"
            Expect.equal (h[0] |> field "params" |> field "theta" |> float') 0.1 "at the start"
            Expect.isTrue (Double.IsFinite(h[0] |> field "loss" |> float')) "with its loss"
            Expect.isEmpty (Directory.GetFileSystemEntries(out, ".*")) "no temporaries left"
        }

        test "Signals: a long run says so early with its estimate; SIGTERM ends it with exit 3, leaving complete files or none" {
            use tmp = new TempDir()
            // 2 sets × 1000 paths × 5·10^7 steps: many minutes on any machine (one set of 200 paths took 40 s in the issue;
            // 10^6 steps ran in 25 s once the engine ran four paths per step in the vector lanes, and 5·10^6 steps
            // ran in 26 s on 2026-12-07, under the 30 s the note needs: the run is stopped early anyway)
            let f = tmp.File "long.sde" (sweepModel.Replace("a * x^3 dt", "-a * x dt").Replace("0.9 step 0.4", "0.5 step 0.4").Replace("paths = 200; dt = 0.01; T = 1", "paths = 1000; dt = 0.001; T = 50000").Replace("  samples(x)\n", ""))
            let out = Path.Combine(tmp.Path, "out")
            let psi = ProcessStartInfo("dotnet", [ dslDll; "run"; f; "--out"; out; "--quiet" ], RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            use p = Process.Start psi
            let stdout = p.StandardOutput.ReadToEndAsync()
            let clock = Stopwatch.StartNew()
            let mutable note = null
            while isNull note && clock.Elapsed.TotalSeconds < 60.0 do
                match p.StandardError.ReadLine() with
                | null -> note <- ""
                | l when l.Contains "note: this run will take about" -> note <- l
                | _ -> ()
            Expect.stringContains note "note: this run will take about" "the estimate, early"
            let seconds = Text.RegularExpressions.Regex.Match(note, @"about (\d+) s").Groups[1].Value |> float
            Expect.isGreaterThan seconds 30.0 (sprintf "an estimate past 30 s: %s" note)
            Process.Start("kill", [ "-TERM"; string p.Id ]).WaitForExit()
            let rest = p.StandardError.ReadToEnd()
            Expect.isTrue (p.WaitForExit 30000) "it ends soon after the signal"
            Expect.equal p.ExitCode 3 (sprintf "exit 3\n%s\n%s" rest stdout.Result)
            Expect.stringContains rest "interrupted" "says so"
            Expect.isLessThan clock.Elapsed.TotalSeconds 60.0 "long before the run's end"
            if Directory.Exists out then
                Expect.isEmpty (Directory.GetFileSystemEntries(out, ".*")) "no temporaries left"
                let results = Path.Combine(out, "results.json")
                if File.Exists results then
                    for s in (json results |> field "sets").AsArray() do
                        Expect.isTrue (not (isNull s["error"]) || s["results"].AsArray().Count = 1) "each set: its results, or why it has none"
        }

        test "Slurm: a control character in --out, --partition, --mem, --sbatch-arg or DSL_COMMAND is refused before any script is written" {
            use tmp = new TempDir()
            let f = tmp.File "ou.sde" goodModel
            let payload = "x\ntouch PWNED"
            for extra, env, what in
                [ [ "--out"; payload ], [], "--out"
                  [ "--partition"; payload ], [], "--partition"
                  [ "--mem"; payload ], [], "--mem"
                  [ "--time"; "00:10:00\n" ], [], "--time"
                  [ "--sbatch-arg"; payload ], [], "--sbatch-arg"
                  [], [ "DSL_COMMAND", "dsl\r" ], "DSL_COMMAND" ] do
                let args = [ "slurm"; f; "--shards"; "2" ] @ (if what = "--out" then [] else [ "--out"; "run" ]) @ extra
                let o = dslEnv tmp.Path env 60.0 args
                Expect.equal o.Code 2 (describe args o)
                Expect.stringContains o.Err (what + ": ") (describe args o)
                Expect.stringContains o.Err "control character" (describe args o)
                Expect.isEmpty (Directory.GetFiles(tmp.Path, "slurm-*.sh", SearchOption.AllDirectories)) "no script"
        }

        test "Slurm: hostile printable values reach sbatch as one argument each, never run as code; DSL_COMMAND='module load dsl && dsl' works" {
            use tmp = new TempDir()
            let f = tmp.File "ou.sde" goodModel
            let out = Path.Combine(tmp.Path, "my run #1 $(touch PWNED1)")
            let partition = "p a\"r't`touch PWNED2`"
            let mem = "4G # x"
            let extra = "--comment=a b\" c\\ #d $(touch PWNED3)"
            let args = [ "slurm"; f; "--shards"; "2"; "--out"; out; "--partition"; partition; "--mem"; mem; "--sbatch-arg=" + extra ]
            let o = dslEnv tmp.Path [ "DSL_COMMAND", "module load dsl && dsl" ] 60.0 args
            Expect.equal o.Code 0 (describe args o)
            let array = File.ReadAllText(Path.Combine(out, "slurm-shards.sh"))
            let merge = File.ReadAllText(Path.Combine(out, "slurm-merge.sh"))
            for script in [ array; merge ] do
                let lines = sbatchLines script
                Expect.all lines (fun a -> a.Length = 1) (sprintf "one argument per #SBATCH line: %A" lines)
                let got = lines |> List.map List.head
                Expect.contains got ("--partition=" + partition) "partition"
                Expect.contains got ("--mem=" + mem) "mem"
                Expect.contains got extra "sbatch-arg"
                Expect.exists got (fun a -> a.StartsWith("--output=" + Path.GetFullPath out + "/logs/")) "the log path whole"
            // the script run by bash, as a node would: `module` is the site's shell function (exported,
            // as sbatch passes the environment), `dsl` a stand-in that records its arguments
            let bin = Path.Combine(tmp.Path, "bin")
            Directory.CreateDirectory bin |> ignore
            let argsFile = Path.Combine(tmp.Path, "args")
            File.WriteAllText(Path.Combine(bin, "dsl"), sprintf "#!/bin/sh\nfor a in \"$@\"; do printf '%%s\\n' \"$a\"; done > '%s'\n" argsFile)
            File.SetUnixFileMode(Path.Combine(bin, "dsl"), UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute)
            let env =
                [ "BASH_FUNC_module%%", sprintf "() {  if [ \"$1 $2\" = \"load dsl\" ]; then export PATH='%s':\"$PATH\"; fi; }" bin
                  "SLURM_ARRAY_TASK_ID", "1"; "SLURM_CPUS_PER_TASK", "3" ]
            let code, _, err = run "bash" [ Path.Combine(out, "slurm-shards.sh") ] tmp.Path env
            Expect.equal code 0 (sprintf "the array script runs: %s" err)
            Expect.equal (File.ReadAllLines argsFile |> List.ofArray)
                [ "run"; f; "--shard"; "1/2"; "--out"; Path.Combine(Path.GetFullPath out, "shards"); "--threads"; "3"; "--quiet" ] "dsl's arguments, whole"
            let code, _, err = run "bash" [ Path.Combine(out, "slurm-merge.sh") ] tmp.Path env
            Expect.equal code 0 (sprintf "the merge script runs: %s" err)
            Expect.equal (File.ReadAllLines argsFile |> List.ofArray)
                [ "merge"; Path.Combine(Path.GetFullPath out, "shards"); "--out"; Path.GetFullPath out; "--quiet" ] "merge's arguments"
            Expect.isEmpty (Directory.GetFiles(tmp.Path, "PWNED*", SearchOption.AllDirectories)) "no payload ran"
        }

        test "Shards: a partial file edited with a recomputed checksum and impossible counts is refused; /dev/zero and a FIFO are refused unread" {
            use tmp = new TempDir()
            let f = tmp.File "ou.sde" goodModel
            for k in 0..1 do
                let o = dslIn tmp.Path [ "run"; f; "--shard"; sprintf "%d/2" k; "--out"; "shards"; "--quiet" ]
                Expect.equal o.Code 0 (describe [ "run --shard" ] o)
            let file = Directory.GetFiles(Path.Combine(tmp.Path, "shards"), "*.partial") |> Array.sort |> Array.head
            let bytes = File.ReadAllBytes file
            // the plain sums: "BEDS" ("CEDS" with the bias estimate's coupled pairs after them, the default),
            // queries (4), steps (8), dt (8), then the paths (8): 2^44 of them
            let find (tag: byte[]) = (ReadOnlySpan bytes).IndexOf(ReadOnlySpan tag)
            let i = find "BEDS"B
            let at = (if i >= 0 then i else find "CEDS"B) + 4 + 4 + 8 + 8
            Expect.isGreaterThan at 24 "found the plain sums"
            BitConverter.GetBytes(17592186044416L).CopyTo(bytes, at)
            let body = bytes[.. bytes.Length - 33]
            SHA256.HashData(body).CopyTo(bytes, bytes.Length - 32)
            File.WriteAllBytes(file, bytes)
            let m = dslIn tmp.Path [ "merge"; "shards" ]
            Expect.equal m.Code 2 (describe [ "merge (edited)" ] m)
            Expect.stringContains m.Err "inconsistent contents" (describe [ "merge (edited)" ] m)
            Expect.stringContains m.Err "17592186044416 paths" "says what is impossible"
            let z = dslEnv tmp.Path [] 20.0 [ "merge"; "/dev/zero" ]
            Expect.equal z.Code 2 (describe [ "merge /dev/zero" ] z)
            Expect.stringContains z.Err "not a partial-results file" "refused by its first bytes"
            let fifo = Path.Combine(tmp.Path, "fifo.partial")
            let code, _, _ = run "mkfifo" [ fifo ] tmp.Path []
            Expect.equal code 0 "mkfifo"
            let q = dslEnv tmp.Path [] 20.0 [ "merge"; fifo ]
            Expect.equal q.Code 2 (describe [ "merge fifo" ] q)
            Expect.stringContains q.Err "not a regular file" "a FIFO"
            let r = dslEnv tmp.Path [] 20.0 [ "run"; fifo ]
            Expect.equal r.Code 2 (describe [ "run fifo" ] r)
            // a fit's data file: read as empty, a located error
            let fitFile = tmp.File "fit.sde" (goodModel + "fit a to \"fifo.partial\" {\n  objective = kl at T\n  iterations = 2\n}\n")
            let d = dslEnv tmp.Path [] 20.0 [ "fit"; fitFile ]
            Expect.equal d.Code 2 (describe [ "fit with a FIFO as data" ] d)
            Expect.stringContains d.Err "fit.sde:" (describe [ "fit with a FIFO as data" ] d)
        }

        test "Shards: a shard that another process is running (its lock held) is refused, exit 3, its files untouched" {
            use tmp = new TempDir()
            let f = tmp.File "ou.sde" goodModel
            let shards = Path.Combine(tmp.Path, "shards")
            Directory.CreateDirectory shards |> ignore
            // the lock that a running `dsl run --shard 0/2` holds
            use held = new FileStream(Path.Combine(shards, ".shard-0-of-2.partial.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
            let o = dslIn tmp.Path [ "run"; f; "--shard"; "0/2"; "--out"; "shards"; "--quiet"; "--force" ]
            Expect.equal o.Code 3 (describe [ "run --shard (locked)" ] o)
            Expect.stringContains o.Err "being run by another process" "says why"
            Expect.isEmpty (Directory.GetFiles(shards, "*.partial")) "wrote nothing"
        }

        test "Files: a write that fails removes its temporaries (a shard's partial file, a run's staging folder), exit 3" {
            use tmp = new TempDir()
            let f = tmp.File "ou.sde" goodModel
            // the final names taken by folders: the rename at the end fails, as a full disk fails a write
            let shards = Path.Combine(tmp.Path, "shards")
            Directory.CreateDirectory(Path.Combine(shards, "shard-0-of-2.partial")) |> ignore
            let o = dslIn tmp.Path [ "run"; f; "--shard"; "0/2"; "--out"; "shards"; "--quiet" ]
            Expect.equal o.Code 3 (describe [ "run --shard (cannot write)" ] o)
            Expect.isEmpty (Directory.GetFiles(shards, "*.tmp-*")) "no temporary partial file left"
            let out = Path.Combine(tmp.Path, "out")
            Directory.CreateDirectory(Path.Combine(out, "results.json")) |> ignore
            let r = dslIn tmp.Path [ "run"; f; "--out"; out; "--quiet" ]
            Expect.equal r.Code 3 (describe [ "run --out (cannot write)" ] r)
            Expect.isEmpty (Directory.GetFileSystemEntries(out, ".*")) "no staging folder left"
        }

        test "Shards: --shard N past Int32 names the bound; a weighted model's refusal is located" {
            use tmp = new TempDir()
            let f = tmp.File "ou.sde" goodModel
            let o = dslIn tmp.Path [ "run"; f; "--shard"; "0/2147483648"; "--out"; "s" ]
            Expect.equal o.Code 2 (describe [ "--shard 0/2^31" ] o)
            Expect.stringContains o.Err "too large" "the real reason"
            Expect.isFalse (o.Err.Contains "not a non-negative integer") "not 'not an integer'"
            let w = dsl [ "run"; "examples/anneal.sde"; "--shard"; "0/2"; "--out"; Path.Combine(tmp.Path, "w") ]
            Expect.equal w.Code 2 (describe [ "weighted --shard" ] w)
            Expect.isTrue (Text.RegularExpressions.Regex.IsMatch(w.Err, @"^examples/anneal\.sde:\d+:\d+: error: ")) (describe [ "weighted --shard" ] w)
        } ]
