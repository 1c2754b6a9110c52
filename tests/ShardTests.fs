/// Sharded runs and their merge (docs/cluster.md): the merged report equals the unsplit run's bit for
/// bit, for every query kind and any number of shards merged in any order; every refusal says why.
module Sde.Tests.ShardTests

open System
open System.Diagnostics
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.CliTests

/// Every query kind, two parameter sets, few paths and a short horizon (fast). 101 paths: no shard
/// count divides it, so the ranges have unequal sizes; a 3-dimensional model with multiplicative noise
/// (exact mode by default, iterative and first-order asked for).
let private source =
    """model Mixed {
  const N = 3
  param F = 1
  param s = 0.6 in (0, inf)
  state x[N] periodic
  brownian W[N]
  init x[i] ~ normal(0.5, 0.3)
  d x[i] = (0.3 * x[i+1] - x[i] - 0.2 * x[i]^3 + F) dt + s * (1 + 0.1 * x[i]^2) dW[i]
}
params weak { F = 0.5 }
params strong { F = 1.5 }
simulate { paths = 101; dt = 0.01; T = 1; seed = 7; burnin = 0.3 }
query {
  mean(x[0])
  density(x[0]) on [-1, 3] bins 12
  mean(x[1]^2) over [0.2, 0.8]
  density(x[2]) on [-1, 3] bins 8 over [0.5, 1]
  d mean(x[0]) / d F
  d mean(x[0]) / d s with divergence_kernel(alpha = 0.3)
  d mean(x[0]^2) / d F with divergence_kernel(mode = iterative)
  d mean(x[0]) / d F with divergence_kernel(rate = 20, mode = first_order)
  d mean(x[0]) / d s with likelihood_ratio
  d mean(x[0]) / d F with pathwise
  d mean(x[0]) / d F with finite_difference(h = 0.01)
  d density(x[0]) / d F on [-1, 3] bins 6
  d mean(x[0]) / d F over [0.5, 1]
  d mean(x[0]) / d F stationary window 0.2, 0.4
  d density(x[1]) / d F on [-1, 3] bins 5 stationary window 0.3
  lyapunov(3)
  lyapunov(2)
  alignment on [0, 1] bins 5
}
"""

let private compileWith (text: string) (o: Overrides) =
    match SdeCompiler.Compile(text, "mixed.sde", o) with
    | Ok p -> p
    | Error ds -> failwithf "%A" ds

let private program = lazy (compileWith source Frontend.noOverrides)

/// The JSON without its timing (the only part that may differ between a run and a merge).
let private withoutTiming (json: string) =
    let node = JsonNode.Parse(json).AsObject()
    node.Remove "timing" |> ignore
    node.ToJsonString()

let private tempDir (name: string) =
    let d = Path.Combine(Path.GetTempPath(), sprintf "dsl-shards-%s-%s" name (Guid.NewGuid().ToString("N").Substring(0, 8)))
    Directory.CreateDirectory d |> ignore
    d

let private opts = { Driver.defaultOptions with Threads = 2 }

/// Runs shard k/n of `p` (compiled from `text` with `o`) into `dir`.
let private shardOf (p: CompiledProgram) (text: string) (o: Overrides) (dir: string) (k: int) (n: int) =
    let h = Shards.headerOf p.Program "mixed.sde" text o { K = k; N = n }
    Shards.runShard p.Program h opts dir false

let private runShards (dir: string) (n: int) =
    for k in 0 .. n - 1 do
        shardOf program.Value source Frontend.noOverrides dir k n |> ignore

let private mergeJson (args: string list) =
    match Shards.merge args with
    | Ok (_, report, _) -> Output.toJson report
    | Error m -> failwithf "merge refused: %s" m

let private refusal (args: string list) =
    match Shards.merge args with
    | Ok _ -> failwith "the merge was accepted"
    | Error m -> m

/// The unsplit run (computed once).
let private unsplit = lazy (withoutTiming (Output.toJson (program.Value.Run(threads = 1, backend = "cpu"))))

/// A partial file with a field of its header replaced (same length) and its checksum recomputed: what
/// another build or machine would have written.
let private rewrite (file: string) (oldText: string) (newText: string) =
    let bytes = File.ReadAllBytes file
    let body = bytes[.. bytes.Length - 33]
    let s = Encoding.Latin1.GetString body
    let i = s.IndexOf(oldText: string)
    if i < 0 then failwithf "'%s' not in %s" oldText file
    let body = Encoding.Latin1.GetBytes(s.Substring(0, i) + newText + s.Substring(i + oldText.Length))
    File.WriteAllBytes(file, Array.append body (SHA256.HashData body))

let private files (dir: string) = Directory.GetFiles(dir, "*.partial") |> Array.sort |> Array.toList

[<Tests>]
let tests =
    testSequenced
    <| testList
        "shards"
        [ testCase "merge = the unsplit run, bit for bit, for N in {1, 2, 3, 7} and every query kind, in shuffled order" <| fun () ->
              let rng = Random 5
              for n in [ 1; 2; 3; 7 ] do
                  let dir = tempDir (sprintf "n%d" n)
                  runShards dir n
                  // the files one by one, in a shuffled order
                  let shuffled = files dir |> List.sortBy (fun _ -> rng.Next())
                  Expect.equal (withoutTiming (mergeJson shuffled)) unsplit.Value (sprintf "N = %d (order %A)" n (shuffled |> List.map Path.GetFileName))
                  Directory.Delete(dir, true)

          testCase "every set in every shard; ranges partition the paths" <| fun () ->
              let dir = tempDir "sets"
              let h = Shards.headerOf program.Value.Program "mixed.sde" source Frontend.noOverrides { K = 2; N = 7 }
              Shards.runShard program.Value.Program h opts dir false |> ignore
              let manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "shard-2-of-7.manifest.json")))
              Expect.equal (manifest["sets"].AsArray().Count) 2 "both sets"
              Expect.equal (int64 manifest["paths"].["first"]) 28L "2·101/7 = 28"
              Expect.equal (int64 manifest["paths"].["end"]) 43L "3·101/7 = 43"
              Expect.equal (string manifest["partial_sha256"]) (Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(Path.Combine(dir, "shard-2-of-7.partial")))).ToLowerInvariant()) "the manifest's checksum of the partial file"
              for (paths, n) in [ 101L, 7; 5L, 5; 1_000_000_000_000L, 7; 999_999_999_999L, 1000 ] do
                  let ranges = [ for k in 0 .. n - 1 -> Shards.pathRange paths { K = k; N = n } ]
                  Expect.equal (List.head ranges).First 0L "starts at 0"
                  Expect.equal (ranges |> List.sumBy (fun r -> r.Count)) paths "covers every path"
                  for (a, b) in List.pairwise ranges do
                      Expect.equal b.First (a.First + a.Count) "contiguous"
                  Expect.isTrue (ranges |> List.forall (fun r -> r.Count > 0L)) "no empty shard"
              Directory.Delete(dir, true)

          testCase "overrides and a sweep shard too (the overrides travel in the partial files)" <| fun () ->
              let text = source.Replace("params weak { F = 0.5 }\nparams strong { F = 1.5 }", "sweep F from 0.5 to 1.5 step 0.5")
              let o = { Frontend.noOverrides with Sets = [ "s", 0.7 ]; Paths = Some 40L; Seed = Some 11UL }
              let p = compileWith text o
              let whole = withoutTiming (Output.toJson (p.Run(threads = 2, backend = "cpu")))
              let dir = tempDir "sweep"
              for k in [ 2; 0; 1 ] do
                  shardOf p text o dir k 3 |> ignore
              Expect.equal (withoutTiming (mergeJson [ dir ])) whole "sweep with --set, --paths, --seed"
              Directory.Delete(dir, true)

          testCase "refusals: missing, duplicate, another run, another N, truncated, corrupted, another build or machine" <| fun () ->
              let dir = tempDir "refuse"
              runShards dir 3
              let fs = files dir
              let has (sub: string) (m: string) = Expect.stringContains m sub m
              refusal [ fs[0]; fs[2] ] |> has "missing shard 1 of 3 (2 of 3 present)"
              let dup = tempDir "dup"
              File.Copy(fs[1], Path.Combine(dup, Path.GetFileName fs[1]))
              refusal [ dir; dup ] |> has "shard 1/3 is given twice"
              // another seed: the same model, another run
              let other = tempDir "other"
              shardOf (compileWith source { Frontend.noOverrides with Seed = Some 8UL }) source { Frontend.noOverrides with Seed = Some 8UL } other 1 3 |> ignore
              refusal [ fs[0]; Path.Combine(other, "shard-1-of-3.partial"); fs[2] ] |> has "are shards of different runs (the settings, parameter sets or overrides differ)"
              // another model source
              let edited = source.Replace("0.3 * x[i+1]", "0.31 * x[i+1]")
              let model2 = tempDir "model2"
              shardOf (compileWith edited Frontend.noOverrides) edited Frontend.noOverrides model2 1 3 |> ignore
              refusal [ fs[0]; Path.Combine(model2, "shard-1-of-3.partial"); fs[2] ] |> has "(the model source differs)"
              // another split
              let two = tempDir "two"
              shardOf program.Value source Frontend.noOverrides two 1 2 |> ignore
              refusal [ fs[0]; Path.Combine(two, "shard-1-of-2.partial") ] |> has "a run split into 2 shards and one split into 3 cannot be merged"
              // a truncated file, a flipped byte
              let bad = tempDir "bad"
              for f in fs do File.Copy(f, Path.Combine(bad, Path.GetFileName f))
              let f1 = Path.Combine(bad, Path.GetFileName fs[1])
              let bytes = File.ReadAllBytes f1
              File.WriteAllBytes(f1, bytes[.. bytes.Length / 2])
              refusal [ bad ] |> has "corrupted or truncated (its SHA-256 checksum does not match its contents)"
              let flipped = Array.copy bytes
              flipped[bytes.Length - 100] <- flipped[bytes.Length - 100] ^^^ 1uy
              File.WriteAllBytes(f1, flipped)
              refusal [ bad ] |> has "corrupted or truncated"
              File.WriteAllBytes(f1, bytes[.. 5])
              refusal [ bad ] |> has "not a partial-results file of dsl"
              // another build (a valid file whose tool version differs), another machine's numerics
              File.WriteAllBytes(f1, bytes)
              let v = Shards.toolVersion ()
              let v2 = v.Substring(0, v.Length - 1) + (if v.EndsWith "0" then "1" else "0")
              rewrite f1 v v2
              refusal [ bad ] |> has (sprintf "was written by %s, this is %s" v2 v)
              File.WriteAllBytes(f1, bytes)
              let num = Shards.numerics ()
              rewrite f1 num ("Z" + num.Substring 1)
              refusal [ bad ] |> has "was computed with other numerics"
              File.WriteAllBytes(f1, bytes)
              Expect.equal (withoutTiming (mergeJson [ bad ])) unsplit.Value "restored: accepted again"
              // no files at all
              refusal [ tempDir "empty" ] |> has "no partial files (*.partial) in this folder"
              for d in [ dir; dup; other; model2; two; bad ] do Directory.Delete(d, true)

          testCase "an interrupted shard leaves no file that merge accepts; a complete one is skipped on rerun; --force reruns" <| fun () ->
              let dir = tempDir "resume"
              runShards dir 2
              let f1 = Path.Combine(dir, "shard-1-of-2.partial")
              let bytes = File.ReadAllBytes f1
              File.Delete f1
              // what a shard killed while writing leaves: its temporary file, never the final name
              File.WriteAllBytes(Path.Combine(dir, sprintf ".shard-1-of-2.partial.tmp-%d" 4242), bytes[.. 999])
              Expect.stringContains (refusal [ dir ]) "missing shard 1 of 2" "the temporary file is not a shard"
              // a cut file under the final name (copied by hand, a full disk) is rerun, not kept
              File.WriteAllBytes(f1, bytes[.. 999])
              match shardOf program.Value source Frontend.noOverrides dir 1 2 with
              | Shards.Written _ -> ()
              | o -> failwithf "the cut file was kept: %A" o
              match shardOf program.Value source Frontend.noOverrides dir 1 2 with
              | Shards.Skipped _ -> ()
              | o -> failwithf "a complete shard was rerun: %A" o
              let h = Shards.headerOf program.Value.Program "mixed.sde" source Frontend.noOverrides { K = 1; N = 2 }
              match Shards.runShard program.Value.Program h opts dir true with
              | Shards.Written _ -> ()
              | o -> failwithf "--force did not rerun: %A" o
              Expect.equal (withoutTiming (mergeJson [ dir ])) unsplit.Value "merged after the reruns"
              Directory.Delete(dir, true)

          testCase "--shard K/N, auto and auto/N" <| fun () ->
              let env (vars: (string * string) list) (name: string) = vars |> List.tryFind (fst >> (=) name) |> Option.map snd
              let ok vars text = match Shards.parseSpec text (env vars) with Ok s -> s.K, s.N | Error m -> failwith m
              let err vars text = match Shards.parseSpec text (env vars) with Ok s -> failwithf "accepted %A" s | Error m -> m
              Expect.equal (ok [] "3/7") (3, 7) "K/N"
              Expect.equal (ok [ "SLURM_ARRAY_TASK_ID", "2"; "SLURM_ARRAY_TASK_COUNT", "4" ] "auto") (2, 4) "Slurm"
              Expect.equal (ok [ "SLURM_ARRAY_TASK_ID", "2"; "SLURM_ARRAY_TASK_COUNT", "4"; "SLURM_ARRAY_TASK_MIN", "0"; "SLURM_ARRAY_TASK_MAX", "3" ] "auto") (2, 4) "a full array"
              Expect.equal (ok [ "JOB_COMPLETION_INDEX", "5" ] "auto/8") (5, 8) "Kubernetes indexed Job"
              Expect.equal (ok [ "SLURM_ARRAY_TASK_ID", "5"; "SLURM_ARRAY_TASK_COUNT", "1" ] "auto/8") (5, 8) "a resubmitted task with auto/N"
              Expect.stringContains (err [ "SLURM_ARRAY_TASK_ID", "5"; "SLURM_ARRAY_TASK_COUNT", "2"; "SLURM_ARRAY_TASK_MIN", "3"; "SLURM_ARRAY_TASK_MAX", "5" ] "auto") "use --shard auto/N" "a resubmitted subset"
              Expect.stringContains (err [] "auto") "are not both set" "outside Slurm"
              Expect.stringContains (err [] "auto/4") "neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX" "no index"
              Expect.stringContains (err [] "4/4") "must be in 0..3" "K = N"
              Expect.stringContains (err [] "1/0") "at least 1" "N = 0"
              Expect.stringContains (err [] "-1/3") "not a non-negative integer" "negative"
              Expect.stringContains (err [] "1-3") "expected K/N" "form"

          testCase "CLI: run --shard, merge --out (results.json = the unsplit run's), refusals exit 2" <| fun () ->
              let dir = tempDir "cli"
              let file = Path.Combine(dir, "mixed.sde")
              File.WriteAllText(file, source)
              let whole = dslIn dir [ "run"; "mixed.sde"; "--json"; "--quiet"; "--backend"; "cpu" ]
              Expect.equal whole.Code 0 (describe [ "run" ] whole)
              for k in [ 1; 0 ] do
                  let o = dslIn dir [ "run"; "mixed.sde"; "--shard"; sprintf "%d/2" k; "--out"; "shards"; "--quiet" ]
                  Expect.equal o.Code 0 (describe [ "run --shard" ] o)
                  Expect.stringContains o.Out (sprintf "shard %d/2: paths" k) "what it ran"
              let again = dslIn dir [ "run"; "mixed.sde"; "--shard"; "1/2"; "--out"; "shards"; "--quiet" ]
              Expect.stringContains again.Out "is complete already" "skipped"
              let m = dslIn dir [ "merge"; "shards"; "--out"; "merged"; "--quiet" ]
              Expect.equal m.Code 0 (describe [ "merge" ] m)
              Expect.equal (withoutTiming (File.ReadAllText(Path.Combine(dir, "merged", "results.json")))) (withoutTiming whole.Out) "results.json"
              Expect.isNonEmpty (Directory.GetFiles(Path.Combine(dir, "merged"), "*.svg")) "the plots"
              File.Delete(Path.Combine(dir, "shards", "shard-0-of-2.partial"))
              let missing = dslIn dir [ "merge"; "shards" ]
              Expect.equal missing.Code 2 (describe [ "merge (missing)" ] missing)
              Expect.stringContains missing.Err "error: missing shard 0 of 2" "says which"
              for args, msg in
                  [ [ "run"; "mixed.sde"; "--shard"; "0/2" ], "--shard needs --out DIR"
                    [ "run"; "mixed.sde"; "--shard"; "0/2"; "--out"; "x"; "--backend"; "ilgpu-cpu" ], "--shard runs on the CPU engine"
                    [ "run"; "mixed.sde"; "--shard"; "0/500"; "--out"; "x" ], "500 shards of a run of 101 paths"
                    [ "run"; "mixed.sde"; "--force" ], "--force applies to a shard only"
                    [ "merge"; "nowhere" ], "nowhere: no such file or folder" ] do
                  let o = dslIn dir args
                  Expect.equal o.Code 2 (describe args o)
                  Expect.stringContains o.Err msg (describe args o)
              Directory.Delete(dir, true)

          testCase "dsl slurm writes the array and merge scripts; --submit chains them with afterok" <| fun () ->
              let dir = tempDir "slurm"
              File.WriteAllText(Path.Combine(dir, "mixed.sde"), source)
              let args =
                  [ "slurm"; "mixed.sde"; "--shards"; "4"; "--partition"; "short"; "--time"; "00:10:00"; "--cpus"; "2"; "--mem"; "2G"
                    "--out"; "run1"; "--sbatch-arg=--account=abc"; "--set"; "s=0.7"; "--paths"; "60" ]
              let o = dslIn dir args
              Expect.equal o.Code 0 (describe args o)
              let array = File.ReadAllText(Path.Combine(dir, "run1", "slurm-shards.sh"))
              let merge = File.ReadAllText(Path.Combine(dir, "run1", "slurm-merge.sh"))
              for line in [ "#SBATCH --array=0-3"; "#SBATCH --partition=short"; "#SBATCH --time=00:10:00"; "#SBATCH --cpus-per-task=2"
                            "#SBATCH --mem=2G"; "#SBATCH --account=abc"; "--shard \"$SLURM_ARRAY_TASK_ID/4\""; "--set s=0.7 --paths 60" ] do
                  Expect.stringContains array line "array script"
              Expect.stringContains merge " merge " "merge script"
              Expect.stringContains merge "#SBATCH --cpus-per-task=1" "the merge needs one core"
              Expect.stringContains o.Out "#SBATCH --array=0-3" "printed"
              // --submit, with a stand-in sbatch that records its arguments and answers job ids
              let bin = Path.Combine(dir, "bin")
              Directory.CreateDirectory bin |> ignore
              let fake = Path.Combine(bin, "sbatch")
              File.WriteAllText(fake, sprintf "#!/bin/sh\necho \"$@\" >> %s/calls\nn=$(wc -l < %s/calls)\necho \"$((1000 + n));cluster\"\n" bin bin)
              File.SetUnixFileMode(fake, UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute)
              let psi = ProcessStartInfo("dotnet", [ dslDll ] @ args @ [ "--submit" ], WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true)
              psi.Environment["PATH"] <- bin + ":" + Environment.GetEnvironmentVariable "PATH"
              use p = Process.Start psi
              let out = p.StandardOutput.ReadToEnd()
              let err = p.StandardError.ReadToEnd()
              p.WaitForExit()
              Expect.equal p.ExitCode 0 err
              Expect.stringContains out "submitted: array job 1001 (4 shards), merge job 1002" "the ids"
              let calls = File.ReadAllLines(Path.Combine(bin, "calls"))
              Expect.stringContains calls[0] "--parsable" "array"
              Expect.stringContains calls[1] "--dependency=afterok:1001" "merge after the array"
              Directory.Delete(dir, true) ]
