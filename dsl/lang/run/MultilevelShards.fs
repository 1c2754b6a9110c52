/// Shards of a multilevel run with a fixed level plan (docs/mlmc.md, "Shards"): `dsl run FILE --shard K/N
/// --plan PLAN --out DIR` runs shard K's share of every level's samples and writes their exact sums in the
/// partial-file format of plain shards (same magic, header, checksum and manifest; the body holds the plan
/// and the level sums); `dsl merge` adds the shards' sums and gives the unsplit run of the plan, bit for bit.
module Sde.Lang.MultilevelShards

open System
open System.IO
open System.Security.Cryptography
open System.Text
open Sde.Core
open Sde.Lang.Driver
open Sde.Lang.Multilevel

/// The body's first word: a plain partial file starts with its number of sets (≥ 1), a multilevel one with −1.
let private marker = -1

let private hex (b: byte[]) = Convert.ToHexString(b).ToLowerInvariant()

/// The shards' fingerprint: the plain shards' (tool, numerics, source, settings, sets) and the plan's text.
let private fingerprintWith (planText: string) (baseFingerprint: string) =
    hex (SHA256.HashData(Encoding.UTF8.GetBytes(baseFingerprint + "\nplan " + hex (SHA256.HashData(Encoding.UTF8.GetBytes planText)))))

/// The header of shard `spec` of program `p` run with the plan `planText`: the plain header, its fingerprint
/// extended by the plan, its range the shard's share of the first set's level 0 (the levels' ranges are in the body).
let headerOf (p: Program) (sourceFile: string) (source: string) (overrides: Frontend.Overrides) (spec: Shards.ShardSpec) (pf: PlanFile) (planText: string) =
    let h = Shards.headerOf p sourceFile source overrides spec
    let first, count = levelRanges (List.head pf.Sets) (Some(spec.K, spec.N))
    { h with Fingerprint = fingerprintWith planText h.Fingerprint; Range = { First = first[0]; Count = count[0] } }

let private writeBody (planText: string) (sums: Result<PlanSums, exn> list) (seconds: float) (w: BinaryWriter) =
    w.Write marker
    w.Write planText
    w.Write(List.length sums)
    for s in sums do
        match s with
        | Error e ->
            w.Write 1uy
            w.Write(failureText e)
        | Ok ps ->
            w.Write 0uy
            w.Write ps.Levels.Length
            for l in 0 .. ps.Levels.Length - 1 do
                ps.Levels[l].Write w
                w.Write ps.Seconds[l]
    w.Write seconds

/// Is this partial file a multilevel shard's?
let isMultilevel (f: Shards.PartialFile) = f.Body.Length >= 4 && BitConverter.ToInt32(f.Body, 0) = marker

/// The plan text and each set's sums (or its failure) of a multilevel partial file, checked against the
/// plan: each level holds exactly the shard's share of the plan's samples.
let readBody (p: Program) (f: Shards.PartialFile) : Result<string * PlanFile * Result<PlanSums, string> list * float, string> =
    try
        use r = new BinaryReader(new MemoryStream(f.Body), Encoding.UTF8)
        if r.ReadInt32() <> marker then failwith "it is not a multilevel shard's"
        let planText = r.ReadString()
        match parsePlan planText with
        | Error m -> failwithf "its plan: %s" m
        | Ok pf ->
        let plans, _, _, _ = Multilevel.plan p
        let n = r.ReadInt32()
        if n <> pf.Sets.Length || n <> p.File.Sets.Length then failwithf "it holds %d parameter sets, the run has %d" n p.File.Sets.Length
        let sums =
            [ for sp in pf.Sets ->
                  match r.ReadByte() with
                  | 1uy -> Error(sprintf "%s (shard %d/%d)" (r.ReadString()) f.Header.Shard.K f.Header.Shard.N)
                  | 0uy ->
                      let levels = r.ReadInt32()
                      if levels <> sp.Levels.Length then failwithf "set %s: %d levels, the plan has %d" sp.Set levels sp.Levels.Length
                      let _, count = levelRanges sp (Some(f.Header.Shard.K, f.Header.Shard.N))
                      let ls = Array.zeroCreate levels
                      let secs = Array.zeroCreate levels
                      for l in 0 .. levels - 1 do
                          ls[l] <- LevelSums.Read(r, plans.Length)
                          secs[l] <- r.ReadDouble()
                          if ls[l].N <> count[l] then failwithf "set %s, level %d: %d samples, the shard's share of the plan is %d" sp.Set l ls[l].N count[l]
                          if not (secs[l] >= 0.0 && Double.IsFinite secs[l]) then failwithf "an impossible time (%g s)" secs[l]
                      Ok { Levels = ls; Seconds = secs }
                  | b -> failwithf "a set has an unknown flag %d" b ]
        let seconds = r.ReadDouble()
        if r.BaseStream.Position <> r.BaseStream.Length then failwith "it has bytes after its sums"
        if not (seconds >= 0.0 && Double.IsFinite seconds) then failwithf "its simulation time (%g s) is impossible" seconds
        Ok(planText, pf, sums, seconds)
    with ex -> Error(sprintf "%s: its level sums are not readable: %s" f.Path ex.Message)

/// Runs shard `h.Shard` of the plan into `dir` (skipped when a complete file of it is there, unless `force`),
/// as `Shards.runShard` does for a plain run.
let runShard (p: Program) (h: Shards.Header) (pf: PlanFile) (planText: string) (opts: RunOptions) (dir: string) (force: bool) : Shards.ShardOutcome =
    Directory.CreateDirectory dir |> ignore
    let partial = Path.Combine(dir, Shards.fileName h.Shard)
    let manifest = Path.Combine(dir, Shards.manifestName h.Shard)
    let failuresOf (sums: Result<PlanSums, string> list) =
        List.zip p.File.Sets sums |> List.choose (fun (set, s) -> match s with Error m -> Some(set.Name, m) | Ok _ -> None)

    let complete =
        if force then None
        else
            match Shards.readPartial partial with
            | Ok f when isMultilevel f && f.Header.Fingerprint = h.Fingerprint && f.Header.Shard = h.Shard && File.Exists manifest ->
                readBody p f |> Result.toOption |> Option.map (fun (_, _, sums, _) -> sums)
            | _ -> None

    match complete with
    | Some sums -> Shards.Skipped(partial, failuresOf sums)
    | None ->
        let lockPath = Path.Combine(dir, "." + Shards.fileName h.Shard + ".lock")

        use _lock =
            try new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
            with :? IOException ->
                raise (Shards.ShardBusyException(sprintf "shard %d/%d is being run by another process now (%s is locked); wait for it, or run another shard" h.Shard.K h.Shard.N lockPath))

        let sw = Diagnostics.Stopwatch.StartNew()
        let sums = runPlan p pf opts (Some(h.Shard.K, h.Shard.N))
        // interrupted: nothing written (as a plain shard)
        sums |> List.iter (function Error (:? OperationCanceledException as e) -> raise e | _ -> ())
        let seconds = sw.Elapsed.TotalSeconds
        let bytes = Shards.partialBytesWith h p (writeBody planText sums seconds)
        Shards.writeAtomically partial bytes
        Shards.writeAtomically manifest (Shards.manifestBytes h p (Shards.fileName h.Shard) bytes seconds)
        Shards.Written(partial, manifest, seconds, failuresOf (sums |> List.map (Result.mapError failureText)))

/// Merges multilevel shards: None when the first file is not a multilevel shard's (a plain merge then),
/// else the program, the report and level table of the plan's unsplit run (bit for bit), and the file count.
let merge (args: string list) : Result<Program * Report.RunReport * Info * int, string> option =
    match Shards.collect args |> Result.bind (fun ps -> Shards.readPartial (List.head ps)) with
    | Ok f when isMultilevel f ->
        Shards.collect args
        |> Result.bind (fun paths ->
            paths
            |> List.fold (fun acc p -> Result.bind (fun fs -> Shards.readPartial p |> Result.map (fun f -> f :: fs)) acc) (Ok [])
            |> Result.map List.rev)
        |> Result.bind (fun files ->
            match files |> List.tryFind (isMultilevel >> not) with
            | Some f -> Error(sprintf "%s is a plain shard, the others are a multilevel plan's: merge only the shards of one run" f.Path)
            | None -> Shards.checkSet files)
        |> Result.bind (fun files ->
            let h0 = (List.head files).Header
            Shards.compileHeader h0
            |> Result.bind (fun p ->
                files
                |> List.fold (fun acc f -> acc |> Result.bind (fun xs -> readBody p f |> Result.map (fun b -> b :: xs))) (Ok [])
                |> Result.map List.rev
                |> Result.bind (fun bodies ->
                    let planText, pf, _, _ = List.head bodies
                    // the program's own fingerprint with the plan must be the shards': the same source, settings and plan
                    if fingerprintWith planText (Shards.fingerprint h0.ToolVersion h0.Numerics h0.Source p) <> h0.Fingerprint then
                        Error "the shards' fingerprint does not match their own source, settings and plan (a file was edited?); rerun the shards"
                    elif p.File.Settings.Multilevel.IsNone then Error "the shards' source has no accuracy = ..., but their files are a multilevel plan's"
                    else
                        // each set: the sums of every shard, level by level (exact), or the first shard's failure
                        let merged =
                            pf.Sets
                            |> List.mapi (fun i sp ->
                                bodies
                                |> List.fold
                                    (fun (acc: Result<PlanSums, exn> option) (_, _, sums, _) ->
                                        match acc, sums[i] with
                                        | Some (Error e), _ -> Some(Error e)
                                        | _, Error m -> Some(Error(InvalidOperationException m :> exn))
                                        | None, Ok b ->
                                            // empty sums with the shard's quantities and covariance pairs
                                            let a = { Levels = b.Levels |> Array.map (fun l -> l.EmptyLike()); Seconds = Array.zeroCreate b.Levels.Length }
                                            for l in 0 .. a.Levels.Length - 1 do
                                                a.Levels[l].Merge b.Levels[l]
                                                a.Seconds[l] <- b.Seconds[l]
                                            Some(Ok a)
                                        | Some (Ok a), Ok b ->
                                            for l in 0 .. a.Levels.Length - 1 do
                                                a.Levels[l].Merge b.Levels[l]
                                                a.Seconds[l] <- a.Seconds[l] + b.Seconds[l]
                                            Some(Ok a))
                                    None
                                |> Option.defaultWith (fun () -> Error(InvalidOperationException "no shard" :> exn)))
                        let seconds = bodies |> List.sumBy (fun (_, _, _, s) -> s)
                        let report, info, _ = reportOfPlan p pf merged seconds
                        Ok(p, report, info, List.length files))))
        |> Some
    | _ -> None
