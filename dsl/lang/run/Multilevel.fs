/// Multilevel Monte Carlo runs (`simulate { accuracy = ε }`, docs/mlmc.md): every parameter set on the
/// core's adaptive multilevel engine (`Sde.Core.Mlmc`), its report (the run's, plus the level table),
/// the JSON fields it adds (`error`, `multilevel`, a set's `levels`) and the plot of the levels.
module Sde.Lang.Multilevel

open System
open System.Diagnostics
open System.Text.Json.Nodes
open Sde.Core
open Sde.Lang.Checked
open Sde.Lang.Report
open Sde.Lang.Driver

/// One query of a set: its targets (several for a mean series, one per time) in the engine's target list.
type QueryTargets =
    { Query: string
      Targets: int list
      /// The target whose level table is shown (the last; a density's largest bin)
      Shown: int }

/// One set's multilevel run.
type SetLevels =
    { Set: string
      Result: MlmcResult option
      Queries: QueryTargets list }

/// What a multilevel run adds to the run's report.
type Info =
    { Settings: Multilevel
      Scheme: string
      WeakOrder: float
      CoarseDt: float
      Pilot: int64
      Sets: SetLevels list }

/// The sampled plans and the targets of the program's queries (in query order).
/// The plans' model instances: 0 the set's model, 1 + k the finite-difference twin k (`Program.Variants`).
let plan (p: Program) : QueryPlan[] * int[] * MlmcTarget[] * int list list =
    let plans = Collections.Generic.List<QueryPlan>()
    let models = Collections.Generic.List<int>()
    let targets = Collections.Generic.List<MlmcTarget>()

    let addIn (group: int) (kind: MlmcTargetKind) (scale: float) (ps: (QueryPlan * int) list) =
        let first = plans.Count
        for pl, m in ps do
            plans.Add pl
            models.Add m
        targets.Add(MlmcTarget(Kind = kind, Samples = Array.init ps.Length (fun i -> first + i), Scale = scale, Group = group))
        targets.Count - 1

    let addOn = addIn -1

    let add kind (ps: QueryPlan list) = addOn kind 1.0 (ps |> List.map (fun pl -> pl, 0))

    let per =
        p.Jobs
        |> List.map (fun (q, job) ->
            match q.Query, job with
            | QPlain (TVariance _, _), DerivedJob (a :: a2 :: _) -> [ add MlmcTargetKind.Variance [ a; a2 ] ]
            | QPlain (TCovariance _, _), DerivedJob (a :: b :: ab :: _) -> [ add MlmcTargetKind.Covariance [ a; b; ab ] ]
            | QPlain (TSeries _, _), DerivedJob ps -> ps |> List.map (fun pl -> add MlmcTargetKind.Mean [ pl ])
            | QPlain (TDensity _, _), PlainJob pl when pl.Kind = EstimateKind.Density ->
                // one smoothed bin per target (LevelPair.SmoothedBin), the bins one group (a relative accuracy's ε)
                let w = (pl.Hi - pl.Lo) / float pl.Bins
                let group = targets.Count
                [ for b in 0 .. pl.Bins - 1 ->
                      let bin = QueryPlan(Kind = EstimateKind.Density, Observable = pl.Observable, TimeAverage = pl.TimeAverage, T0 = pl.T0, T1 = pl.T1,
                                          Lo = pl.Lo + float b * w, Hi = (if b = pl.Bins - 1 then pl.Hi else pl.Lo + float (b + 1) * w), Bins = 1)
                      addIn group MlmcTargetKind.Mean 1.0 [ bin, 0 ] ]
            | _, PlainJob pl -> [ add MlmcTargetKind.Mean [ pl ] ]
            | _, ResponseJob ([ rp ], _, _, []) when rp.Method = ResponseMethod.FiniteDifference ->
                // (E φ(θ + h) − E φ(θ − h)) / 2h, both twins on the same normals at every level
                let twin () = QueryPlan(Kind = EstimateKind.Mean, Observable = rp.Observable, TimeAverage = rp.TimeAverage, T0 = rp.T0, T1 = rp.T1)
                [ addOn MlmcTargetKind.Difference (1.0 / (2.0 * rp.H)) [ twin (), 1 + rp.VariantPlus; twin (), 1 + rp.VariantMinus ] ]
            | _ -> failwithf "multilevel: the checker refuses '%s'" q.Text)

    plans.ToArray(), models.ToArray(), targets.ToArray(), per

let private outcome (q: CheckedQuery) (kind: string) (value: float) (se: float) (count: int64) (nonFinite: int64) (warnings: string list) : QueryOutcome =
    { Query = q.Text; Kind = kind; Wrt = None; Method = None; Value = value; StdErr = se
      Grid = [||]; GridY = [||]; Values = [||]; StdErrs = [||]; Lo = 0.0; Hi = 0.0; Below = 0L; Above = 0L
      Count = count; NonFinite = nonFinite; Rate = None; RateSource = None; CovectorGrowth = None; Control = None
      ControlCoefficient = None; WeightKurtosis = None; WeightMaxShare = None; Windows = []; ValueWindow = None
      Warnings = warnings; Weighted = false; Resamplings = None
      // the levels estimate their own remaining bias (`multilevel.bias`, inside `error_estimate`)
      Bias = Some(biasNone "a multilevel result: its estimated remaining bias is multilevel.bias, and error_estimate combines it with the standard error")
      Extrapolated = false }

/// The finite-difference twins of a set's model (`Program.Variants`), as the engine's instances.
let private twinsOf (p: Program) (values: float[]) : obj[] =
    p.Variants
    |> List.map (fun v ->
        let vs = Array.copy values
        vs[v.Param] <- vs[v.Param] + v.Shift
        p.Compiled.Instance vs)
    |> List.toArray

/// The engine's options of the program's multilevel settings.
let options (p: Program) : MlmcOptions =
    let s = p.File.Settings
    let ml = Option.get s.Multilevel
    MlmcOptions(Accuracy = ml.Accuracy, Relative = ml.Relative, Pilot = s.Paths, MaxLevel = ml.MaxLevels,
                WeakOrder = (multilevelWeakOrder s.Scheme |> Option.defaultValue 1.0))

/// Runs every parameter set: the report (values with their sampling standard errors), the level
/// plans, and the sets' failures (as `Driver.runKeeping`).
let rec run (p: Program) (opts: RunOptions) : RunReport * Info * exn list =
    let s = p.File.Settings
    let ml = Option.get s.Multilevel

    match opts.Backend with
    | "ilgpu-cpu"
    | "cuda" ->
        raise (NotSupportedException(sprintf "%d:%d: '%s' uses multilevel Monte Carlo, which the %s backend cannot run yet (it runs on the CPU engine); use --backend cpu" ml.Pos.Line ml.Pos.Col (if ml.Relative then "relative_accuracy" else "accuracy") opts.Backend))
    | _ -> ()

    let runner = MlmcRunner.For p.Compiled.Type
    let plans, planModel, targets, per = plan p
    let o = options p
    let nSets = p.File.Sets.Length

    let twins = twinsOf p

    let runSet (i: int) (values: float[]) =
        let bm = p.Compiled.Instance values
        let progress = opts.Progress |> Option.map (fun f -> Action<float>(fun x -> f ((float i + x) / float nSets)))
        let rs = RunSettings(Dt = s.Dt, T = s.T, Seed = s.Seed, Threads = opts.Threads, Progress = Option.toObj progress, Cancel = opts.Cancel)
        runner.Run(bm, twins values, planModel, rs, plans, targets, o)

    // JIT warm-up outside the timing: a cheap run (a coarse target) on one thread, 8 samples so that the four-lane code runs too
    (try
        let bm = p.Compiled.Instance (List.head p.File.Sets).Values
        runner.Run(bm, twins (List.head p.File.Sets).Values, planModel, RunSettings(Dt = s.Dt, T = s.T, Seed = s.Seed, Threads = 1), plans, targets,
                   MlmcOptions(Accuracy = 1e300, Pilot = 8L, MaxLevel = min 1 ml.MaxLevels)) |> ignore
     with _ -> ())

    let sw = Stopwatch.StartNew()

    let results =
        p.File.Sets
        |> List.mapi (fun i set ->
            if opts.Cancel.IsCancellationRequested then Error(OperationCanceledException(interruptedMessage) :> exn)
            else
                try Ok(runSet i set.Values) with
                | :? SimulationFailedException as e -> Error(e :> exn)
                | :? OperationCanceledException -> Error(OperationCanceledException(interruptedMessage) :> exn))

    let seconds = sw.Elapsed.TotalSeconds
    reportOf p o results seconds

/// The run's report (values with their sampling standard errors), the level plans and the sets' failures,
/// from each set's multilevel result (an adaptive run's, or a fixed plan's).
and reportOf (p: Program) (o: MlmcOptions) (results: Result<MlmcResult, exn> list) (seconds: float) : RunReport * Info * exn list =
    let s = p.File.Settings
    let ml = Option.get s.Multilevel
    let _, _, _, per = plan p
    let failures = Collections.Generic.List<exn>()

    let setReport (set: ParamSet) (r: Result<MlmcResult, exn>) =
        let pars = List.zip (p.File.Model.Params |> List.map (fun q -> q.Name)) (Array.toList set.Values)
        match r with
        | Error e ->
            failures.Add e
            { Name = set.Name; Params = pars; Results = []; Failure = Some(failureText e) }
        | Ok r ->
            let count = r.Levels |> Array.sumBy (fun l -> l.Paths)
            let unconverged = if r.Converged then [] else [ sprintf "the accuracy was not reached: %s" r.Note ]

            let results =
                List.map2
                    (fun (q: CheckedQuery, _) (ts: int list) ->
                        let t = r.Targets[List.last ts]
                        let bad = ts |> List.map (fun k -> r.Targets[k].NonFinite) |> List.max
                        let warns =
                            [ if bad > 0L then sprintf "%d samples gave a NaN or infinite value of the observable, so the value is not finite" bad
                              if o.Relative && ts |> List.exists (fun k -> not (r.Targets[k].Accuracy > 0.0)) then
                                  "the value is 0, so a relative accuracy sets no target for it; give an absolute accuracy"
                              yield! unconverged ]
                        match q.Query with
                        | QPlain (TSeries (_, every), _) ->
                            { outcome q "mean_series" t.Value t.StdErr count bad warns with
                                Grid = ts |> List.mapi (fun k _ -> float k * every) |> List.toArray
                                Values = ts |> List.map (fun k -> r.Targets[k].Value) |> List.toArray
                                StdErrs = ts |> List.map (fun k -> r.Targets[k].StdErr) |> List.toArray }
                        | QResponse (_, wrt, _, _, FiniteDifference h) ->
                            { outcome q "response" t.Value t.StdErr count bad warns with
                                Wrt = Some p.File.Model.Params[wrt].Name
                                Method = Some(methodText p.Compiled.Ir.Dim (FiniteDifference h)) }
                        | QPlain (TDensity (_, lo, hi, bins), _) ->
                            { outcome q "density" nan nan count bad warns with
                                Grid = Derived.centres lo hi bins
                                Values = ts |> List.map (fun k -> r.Targets[k].Value) |> List.toArray
                                StdErrs = ts |> List.map (fun k -> r.Targets[k].StdErr) |> List.toArray
                                Lo = lo
                                Hi = hi
                                // the bins are sums of level corrections: no sample count outside the range
                                Below = -1L
                                Above = -1L }
                        | QPlain (TVariance _, _) -> outcome q "variance" t.Value t.StdErr count bad warns
                        | QPlain (TCovariance _, _) -> outcome q "covariance" t.Value t.StdErr count bad warns
                        | _ -> outcome q "mean" t.Value t.StdErr count bad warns)
                    p.Jobs per

            { Name = set.Name; Params = pars; Results = results; Failure = None }

    let sets = List.map2 setReport p.File.Sets results
    let work = results |> List.sumBy (function Ok r -> r.Work | Error _ -> 0.0)

    let report =
        { Model = p.File.Model.Name
          Source = p.Source
          Settings = { Paths = s.Paths; Dt = s.Dt; T = s.T; Seed = s.Seed; Scheme = s.Scheme; Backend = "cpu" }
          Sets = sets
          Warnings = p.File.Warnings |> List.map (Diagnostics.warningLine p.Source)
          Seconds = seconds
          PathStepsPerSecond = if seconds > 0.0 then work / seconds else 0.0 }

    let info =
        { Settings = ml
          Scheme = s.Scheme
          WeakOrder = o.WeakOrder
          CoarseDt = s.Dt
          Pilot = s.Paths
          Sets =
            List.map2
                (fun (set: ParamSet) (r: Result<MlmcResult, exn>) ->
                    { Set = set.Name
                      Result = (match r with Ok r -> Some r | Error _ -> None)
                      Queries =
                        List.map2
                            (fun (q: CheckedQuery, _) (ts: int list) ->
                                let shown =
                                    match q.Query, r with
                                    | QPlain (TDensity _, _), Ok r -> ts |> List.maxBy (fun k -> abs r.Targets[k].Value)
                                    | _ -> List.last ts
                                { Query = q.Text; Targets = ts; Shown = shown })
                            p.Jobs per })
                p.File.Sets results }

    report, info, List.ofSeq failures

// ------------------------------------------------------------------------------------ fixed level plans

/// One level of a fixed plan: its step and the samples 0 .. Paths − 1 that the plan runs.
type LevelPlan = { Level: int; Dt: float; Steps: int64; Paths: int64 }

/// A set's fixed plan; `Note` says why the pilot could not reach the accuracy (empty when it could).
type SetPlan = { Set: string; Levels: LevelPlan list; Note: string }

/// A fixed level plan (docs/mlmc.md, "Shards"): written by the pilot (`dsl run FILE --plan-only --plan PLAN`),
/// run whole (`--plan PLAN`) or in shards (`--shard K/N --plan PLAN`). `Fingerprint` ties it to the source and
/// settings (after the overrides) it was made for.
type PlanFile =
    { Fingerprint: string
      Model: string
      Accuracy: float
      Relative: bool
      PilotFactor: float
      PilotWork: float
      Sets: SetPlan list }

let private planFormat = "dsl-mlmc-plan 1"

/// How much looser than the file's accuracy the pilot runs: 4ε costs about 1/16 of the run.
let pilotFactor = 4.0

let private inv = Globalization.CultureInfo.InvariantCulture

/// The identity of the run a plan is for: the source text, the settings and the parameter sets in force
/// (after the overrides), hashed (SHA-256). Not the tool's version: the plan is only sample counts.
let planFingerprint (source: string) (p: Program) =
    let s = p.File.Settings
    let ml = Option.get s.Multilevel
    let f (x: float) = x.ToString("R", inv)
    let sb = Text.StringBuilder()
    sb.Append("source ").Append(Convert.ToHexString(Security.Cryptography.SHA256.HashData(Text.Encoding.UTF8.GetBytes source))).Append('\n') |> ignore
    sb.Append(sprintf "settings paths=%d dt=%s T=%s seed=%d scheme=%s accuracy=%s relative=%b max_levels=%d\n"
                  s.Paths (f s.Dt) (f s.T) s.Seed s.Scheme (f ml.Accuracy) ml.Relative ml.MaxLevels) |> ignore
    for set in p.File.Sets do
        sb.Append("set ").Append(set.Name) |> ignore
        for v in set.Values do sb.Append(' ').Append(f v) |> ignore
        sb.Append('\n') |> ignore
    Convert.ToHexString(Security.Cryptography.SHA256.HashData(Text.Encoding.UTF8.GetBytes(sb.ToString()))).ToLowerInvariant()

/// The pilot: per set, the adaptive run at `pilotFactor`·ε, extrapolated to the plan for ε (`Mlmc.Plan`). The plan,
/// and the pilot's own report (its levels, for the table).
let makePlan (p: Program) (source: string) (opts: RunOptions) : PlanFile * RunReport * Info * exn list =
    let s = p.File.Settings
    let runner = MlmcRunner.For p.Compiled.Type
    let plans, planModel, targets, _ = plan p
    let o = options p
    let nSets = p.File.Sets.Length
    let sw = Stopwatch.StartNew()

    let made =
        p.File.Sets
        |> List.mapi (fun i set ->
            let progress = opts.Progress |> Option.map (fun f -> Action<float>(fun x -> f ((float i + x) / float nSets)))
            let rs = RunSettings(Dt = s.Dt, T = s.T, Seed = s.Seed, Threads = opts.Threads, Progress = Option.toObj progress, Cancel = opts.Cancel)
            try
                let mutable pilot = Unchecked.defaultof<MlmcResult>
                let mutable note = ""
                let ns = runner.Plan(p.Compiled.Instance set.Values, twinsOf p set.Values, planModel, rs, plans, targets, o, pilotFactor, &pilot, &note)
                let levels = ns |> Array.toList |> List.mapi (fun l n -> { Level = l; Dt = s.Dt / float (1L <<< l); Steps = rs.Steps <<< l; Paths = n })
                Ok({ Set = set.Name; Levels = levels; Note = note }, pilot)
            with
            | :? SimulationFailedException as e -> Error(e :> exn)
            | :? OperationCanceledException -> Error(OperationCanceledException(interruptedMessage) :> exn))

    let ml = Option.get s.Multilevel
    let pilotWork = made |> List.sumBy (function Ok (_, r) -> r.Work | Error _ -> 0.0)
    let po = MlmcOptions(Accuracy = o.Accuracy * pilotFactor, Relative = o.Relative, Pilot = o.Pilot, MaxLevel = o.MaxLevel, WeakOrder = o.WeakOrder)
    let report, info, failures = reportOf p po (made |> List.map (Result.map snd)) sw.Elapsed.TotalSeconds

    let planFile =
        { Fingerprint = planFingerprint source p
          Model = p.File.Model.Name
          Accuracy = ml.Accuracy
          Relative = ml.Relative
          PilotFactor = pilotFactor
          PilotWork = pilotWork
          Sets = made |> List.choose (function Ok (sp, _) -> Some sp | Error _ -> None) }

    planFile, report, info, failures

/// The plan's path-steps per set (fine plus coarse steps on every model instance).
let planWork (p: Program) (sp: SetPlan) =
    let _, planModel, _, _ = plan p
    let instances = planModel |> Array.distinct |> Array.length
    sp.Levels |> List.sumBy (fun l -> float instances * float l.Paths * (if l.Level = 0 then float l.Steps else 1.5 * float l.Steps))

let planJson (p: Program) (pf: PlanFile) : string =
    let root = JsonObject()
    root["format"] <- JsonValue.Create planFormat
    root["fingerprint"] <- JsonValue.Create pf.Fingerprint
    root["model"] <- JsonValue.Create pf.Model
    root["accuracy"] <- JsonValue.Create pf.Accuracy
    root["relative"] <- JsonValue.Create pf.Relative
    root["pilot_accuracy_factor"] <- JsonValue.Create pf.PilotFactor
    root["pilot_work_path_steps"] <- JsonValue.Create pf.PilotWork
    root["sets"] <-
        JsonArray(
            pf.Sets
            |> List.map (fun sp ->
                let o = JsonObject()
                o["name"] <- JsonValue.Create sp.Set
                o["work_path_steps"] <- JsonValue.Create(planWork p sp)
                if sp.Note <> "" then o["note"] <- JsonValue.Create sp.Note
                o["levels"] <-
                    JsonArray(
                        sp.Levels
                        |> List.map (fun l ->
                            let lo = JsonObject()
                            lo["level"] <- JsonValue.Create l.Level
                            lo["dt"] <- JsonValue.Create l.Dt
                            lo["steps"] <- JsonValue.Create l.Steps
                            lo["paths"] <- JsonValue.Create l.Paths
                            lo :> JsonNode)
                        |> List.toArray)
                o :> JsonNode)
            |> List.toArray)
    root.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)) + "\n"

/// A plan file read back: its form checked (not yet whether it is this run's).
let parsePlan (text: string) : Result<PlanFile, string> =
    try
        use doc = Text.Json.JsonDocument.Parse text
        let r = doc.RootElement
        let fmt = r.GetProperty("format").GetString()
        if fmt <> planFormat then Error(sprintf "not a level plan of this dsl (format '%s', expected '%s')" fmt planFormat)
        else
            let sets =
                [ for so in r.GetProperty("sets").EnumerateArray() ->
                      let levels =
                          [ for lo in so.GetProperty("levels").EnumerateArray() ->
                                { Level = lo.GetProperty("level").GetInt32(); Dt = lo.GetProperty("dt").GetDouble()
                                  Steps = lo.GetProperty("steps").GetInt64(); Paths = lo.GetProperty("paths").GetInt64() } ]
                      { Set = so.GetProperty("name").GetString()
                        Levels = levels
                        Note = (match so.TryGetProperty "note" with | true, v -> v.GetString() | _ -> "") } ]
            match sets |> List.tryPick (fun sp ->
                      if sp.Levels.IsEmpty then Some(sprintf "set %s has no levels" sp.Set)
                      else
                          sp.Levels |> List.indexed |> List.tryPick (fun (i, l) ->
                              if l.Level <> i then Some(sprintf "set %s: level %d is listed as level %d" sp.Set i l.Level)
                              elif l.Paths < 2L then Some(sprintf "set %s: level %d has %d paths; a level needs at least 2" sp.Set i l.Paths)
                              else None)) with
            | Some m -> Error m
            | None ->
                Ok
                    { Fingerprint = r.GetProperty("fingerprint").GetString()
                      Model = r.GetProperty("model").GetString()
                      Accuracy = r.GetProperty("accuracy").GetDouble()
                      Relative = r.GetProperty("relative").GetBoolean()
                      PilotFactor = r.GetProperty("pilot_accuracy_factor").GetDouble()
                      PilotWork = r.GetProperty("pilot_work_path_steps").GetDouble()
                      Sets = sets }
    with ex -> Error(sprintf "not a readable level plan (%s)" ex.Message)

/// Is the plan this run's (same source, settings and sets)? The problem, or None.
let planProblem (p: Program) (source: string) (pf: PlanFile) : string option =
    let ml = p.File.Settings.Multilevel
    if ml.IsNone then Some "the file has no accuracy = ... (a level plan is for multilevel runs)"
    elif pf.Fingerprint <> planFingerprint source p then
        Some "the plan was made for another source, settings or parameter sets (its fingerprint differs); make a new plan with --plan-only"
    elif pf.Sets |> List.map (fun sp -> sp.Set) <> (p.File.Sets |> List.map (fun s -> s.Name)) then
        Some "the plan's parameter sets are not the run's (the pilot of a set failed?); make a new plan with --plan-only"
    elif pf.Sets |> List.exists (fun sp -> sp.Levels.Length - 1 > ml.Value.MaxLevels) then
        Some "the plan has more levels than max_levels allows"
    else None

/// Shard `k` of `n`'s share of each level: whole chunks of `LevelPair.ChunkSize` samples (so that its sums are
/// the unsplit run's chunks), the chunks of every level split evenly (so every shard does about 1/n of the work).
/// (first, count) per level; `None`: the whole plan.
let levelRanges (sp: SetPlan) (shard: (int * int) option) : int64[] * int64[] =
    let c = int64 LevelPair.ChunkSize
    sp.Levels
    |> List.map (fun l ->
        match shard with
        | None -> 0L, l.Paths
        | Some (k, n) ->
            let chunks = (l.Paths + c - 1L) / c
            let at (j: int) = int64 (Int128.op_Implicit chunks * Int128.op_Implicit (int64 j) / Int128.op_Implicit (int64 n))
            let a = min l.Paths (at k * c)
            let b = min l.Paths (at (k + 1) * c)
            a, b - a)
    |> List.toArray
    |> Array.unzip

/// One set's sums of a fixed plan (or a shard's share of it): per level, the exact sums and seconds.
type PlanSums = { Levels: LevelSums[]; Seconds: float[] }

/// Runs the plan's samples (a shard's share with `shard`) of every set: per set its level sums, or its failure.
let runPlan (p: Program) (pf: PlanFile) (opts: RunOptions) (shard: (int * int) option) : Result<PlanSums, exn> list =
    let s = p.File.Settings
    let runner = MlmcRunner.For p.Compiled.Type
    let plans, planModel, targets, _ = plan p
    let nSets = p.File.Sets.Length

    List.zip p.File.Sets pf.Sets
    |> List.mapi (fun i (set, sp) ->
        if opts.Cancel.IsCancellationRequested then Error(OperationCanceledException(interruptedMessage) :> exn)
        else
            let first, count = levelRanges sp shard
            let progress = opts.Progress |> Option.map (fun f -> Action<float>(fun x -> f ((float i + x) / float nSets)))
            let rs = RunSettings(Dt = s.Dt, T = s.T, Seed = s.Seed, Threads = opts.Threads, Progress = Option.toObj progress, Cancel = opts.Cancel)
            let secs = Array.zeroCreate first.Length
            try Ok { Levels = runner.RunLevels(p.Compiled.Instance set.Values, twinsOf p set.Values, planModel, rs, plans, targets, first, count, secs); Seconds = secs }
            with
            | :? SimulationFailedException as e -> Error(e :> exn)
            | :? OperationCanceledException -> Error(OperationCanceledException(interruptedMessage) :> exn))

/// The report of a fixed plan from its (merged) sums: every level must hold exactly the plan's samples.
let reportOfPlan (p: Program) (pf: PlanFile) (sums: Result<PlanSums, exn> list) (seconds: float) : RunReport * Info * exn list =
    let s = p.File.Settings
    let _, planModel, targets, _ = plan p
    let o = options p
    let rs = RunSettings(Dt = s.Dt, T = s.T, Seed = s.Seed)

    let results =
        List.zip pf.Sets sums
        |> List.map (fun (sp, r) ->
            r
            |> Result.bind (fun ps ->
                match List.zip sp.Levels (Array.toList ps.Levels) |> List.tryFind (fun (l, ls) -> ls.N <> l.Paths) with
                | Some (l, ls) -> Error(InvalidOperationException(sprintf "level %d holds %d samples, the plan %d" l.Level ls.N l.Paths) :> exn)
                | None -> Ok(Mlmc.FromSums(ps.Levels, ps.Seconds, planModel, rs, targets, o, sp.Note))))

    reportOf p o results seconds

// ------------------------------------------------------------------------------------ JSON

let private num (x: float) : JsonNode = if Double.IsFinite x then JsonValue.Create x :> JsonNode else null
let private arr (xs: float seq) = JsonArray(xs |> Seq.map num |> Seq.toArray)

/// The run's JSON (`Output.toJson`) with the multilevel fields added (docs/language.md §10, docs/mlmc.md):
/// top-level `multilevel` (the settings), per set `levels` (step, samples, cost and seconds per level),
/// `converged` and `work`, per result `error` (the achieved root-mean-square error estimate) and
/// `multilevel` (accuracy, bias estimate, fitted rates, each level's correction mean and variance).
let toJson (report: RunReport) (info: Info) : string =
    let root = JsonNode.Parse(Output.toJson report)
    let m = JsonObject()
    m["accuracy"] <- num info.Settings.Accuracy
    m["relative"] <- JsonValue.Create info.Settings.Relative
    m["coarsest_dt"] <- num info.CoarseDt
    m["pilot"] <- JsonValue.Create info.Pilot
    m["max_levels"] <- JsonValue.Create info.Settings.MaxLevels
    m["scheme"] <- JsonValue.Create info.Scheme
    m["weak_order"] <- num info.WeakOrder
    root["multilevel"] <- m
    let sets = root["sets"].AsArray()

    for si in 0 .. sets.Count - 1 do
        let so = sets[si].AsObject()
        let sl = info.Sets[si]

        match sl.Result with
        | None -> ()
        | Some r ->
            so["converged"] <- JsonValue.Create r.Converged
            if not r.Converged then so["note"] <- JsonValue.Create r.Note
            so["work_path_steps"] <- num r.Work
            so["levels"] <-
                JsonArray(
                    r.Levels
                    |> Array.map (fun l ->
                        let o = JsonObject()
                        o["level"] <- JsonValue.Create l.Level
                        o["dt"] <- num l.Dt
                        o["steps"] <- JsonValue.Create l.Steps
                        o["paths"] <- JsonValue.Create l.Paths
                        o["cost"] <- num l.Cost
                        o["seconds"] <- num l.Seconds
                        o :> JsonNode)
                )

            let results = so["results"].AsArray()

            for qi in 0 .. results.Count - 1 do
                let ro = results[qi].AsObject()
                let ts = sl.Queries[qi].Targets
                let k = sl.Queries[qi].Shown
                let t = r.Targets[k]
                ro["error_estimate"] <- num t.Error
                let mo = JsonObject()
                mo["accuracy"] <- num t.Accuracy
                mo["error"] <- num t.Error
                mo["bias"] <- num t.Bias
                mo["stderr"] <- num t.StdErr
                mo["alpha"] <- num t.Alpha
                mo["beta"] <- num t.Beta
                mo["gamma"] <- num t.Gamma
                if ts.Length > 1 then mo["errors"] <- arr (ts |> List.map (fun k -> r.Targets[k].Error))
                mo["levels"] <-
                    JsonArray(
                        r.Levels
                        |> Array.map (fun l ->
                            let o = JsonObject()
                            o["level"] <- JsonValue.Create l.Level
                            o["mean"] <- num l.Mean[k]
                            o["variance"] <- num l.Variance[k]
                            o["mean_fine"] <- num l.MeanFine[k]
                            o["variance_fine"] <- num l.VarianceFine[k]
                            o :> JsonNode)
                    )
                ro["multilevel"] <- mo

    root.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true, Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping))

// ------------------------------------------------------------------------------------ table

let private g (x: float) = if Double.IsFinite x then x.ToString("G4", Globalization.CultureInfo.InvariantCulture).Replace("E", "e") else "n/a"

/// The level table of each set, printed after the run's table.
let table (info: Info) : string =
    let sb = Text.StringBuilder()
    let line (s: string) = sb.AppendLine s |> ignore
    let target = if info.Settings.Relative then sprintf "relative_accuracy %s" (g info.Settings.Accuracy) else sprintf "accuracy %s" (g info.Settings.Accuracy)

    for sl in info.Sets do
        match sl.Result with
        | None -> ()
        | Some r ->
            line ""
            line (sprintf "multilevel Monte Carlo, set %s (%s, %s, weak order %s): %d levels, %s path-steps, %s"
                      sl.Set target info.Scheme (g info.WeakOrder) r.Levels.Length (g r.Work) (if r.Converged then "converged" else "NOT converged: " + r.Note))
            for qt in sl.Queries do
                let k = qt.Shown
                let t = r.Targets[k]
                line (sprintf "  %s = %s  error %s (target %s; stderr %s, bias %s)  alpha %s  beta %s  gamma %s"
                          qt.Query (g t.Value) (g t.Error) (g t.Accuracy) (g t.StdErr) (g t.Bias) (g t.Alpha) (g t.Beta) (g t.Gamma))
                line (sprintf "    %5s %11s %12s %6s %12s %12s %12s" "level" "dt" "paths" "cost" "mean(Y_l)" "var(Y_l)" "var(P_l)")
                for l in r.Levels do
                    line (sprintf "    %5d %11s %12d %6s %12s %12s %12s" l.Level (g l.Dt) l.Paths (g l.Cost) (g l.Mean[k]) (g l.Variance[k]) (g l.VarianceFine[k]))

    sb.ToString()

// ------------------------------------------------------------------------------------ plot

/// One SVG per set and query: log2 of the level corrections' variance and |mean| (and of the fine
/// values') against the level, the figure multilevel users read: the slopes are -beta and -alpha.
let writePlots (dir: string) (report: RunReport) (info: Info) : string list =
    [ for sl in info.Sets do
          match sl.Result with
          | None -> ()
          | Some r ->
              for qi, qt in List.indexed sl.Queries do
                  let k = qt.Shown
                  let ls = r.Levels
                  let xs = ls |> Array.map (fun l -> float l.Level)
                  let log2 (v: float) = if v > 0.0 && Double.IsFinite v then Math.Log2 v else nan
                  let none = ls |> Array.map (fun _ -> nan)
                  let series =
                      [ "log2 var(P_l - P_l-1)", xs, ls |> Array.map (fun l -> log2 l.Variance[k]), none
                        "log2 |mean(P_l - P_l-1)|", xs, ls |> Array.map (fun l -> log2 (abs l.Mean[k])), none
                        if ls |> Array.exists (fun l -> Double.IsFinite l.VarianceFine[k]) then
                            "log2 var(P_l)", xs, ls |> Array.map (fun l -> log2 l.VarianceFine[k]), none
                            "log2 |mean(P_l)|", xs, ls |> Array.map (fun l -> log2 (abs l.MeanFine[k])), none ]
                  let name = sprintf "mlmc_%s_%d.svg" (String(sl.Set.ToCharArray() |> Array.map (fun c -> if Char.IsLetterOrDigit c then c else '_'))) qi
                  let path = IO.Path.Combine(dir, name)
                  Plot.writeSeriesWith path (sprintf "%s: multilevel levels of %s" report.Model qt.Query)
                      (sprintf "alpha = %s, beta = %s, gamma = %s (set %s)" (g r.Targets[k].Alpha) (g r.Targets[k].Beta) (g r.Targets[k].Gamma) sl.Set)
                      true "level l" "log2" series
                  name ]
