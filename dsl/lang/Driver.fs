/// The driver: from a checked file to a compiled program (model type, observables, engine plans),
/// and from there to a run report. Queries the engine cannot answer yet are located errors here.
module Sde.Lang.Driver

open System
open System.Diagnostics
open Sde.Core
open Sde.Lang.Syntax
open Sde.Lang.Checked
open Sde.Lang.Report

/// How each query is answered.
type QueryJob =
    /// A plain mean/density: one engine plan.
    | PlainJob of QueryPlan

/// A checked file compiled for execution.
type Program =
    { File: CheckedFile
      Compiled: Compile.CompiledModel
      Jobs: (CheckedQuery * QueryJob) list
      Source: string }

/// Options of one run that do not belong to the file.
type RunOptions =
    { Threads: int
      Progress: (float -> unit) option
      Backend: string }

let defaultOptions =
    { Threads = 0
      Progress = None
      Backend = "cpu" }

let private targetObservable (t: CTarget) =
    match t with
    | TMean e -> e
    | TDensity (e, _, _, _) -> e

/// Compile a checked file: lower the model, collect the observables, plan every query.
let prepare (source: string) (cf: CheckedFile) : Result<Program, Diagnostic list> =
    try
        let ir = Lower.lowerModel cf.Model
        let obs = Collections.Generic.List<Ir.Sym>()

        let obsIndex (e: CExpr) =
            let s = Lower.observable cf.Model e

            match Seq.tryFindIndex (fun o -> o = s) obs with
            | Some i -> i
            | None ->
                obs.Add s
                obs.Count - 1

        let planOf (q: CheckedQuery) : Result<QueryJob, Diagnostic> =
            match q.Query with
            | QPlain (target, over) ->
                let k = obsIndex (targetObservable target)
                let ta, t0, t1 =
                    match over with
                    | Some (a, b) -> true, a, b
                    | None -> false, 0.0, 0.0

                match target with
                | TMean _ ->
                    Ok(PlainJob(QueryPlan(Kind = EstimateKind.Mean, Observable = k, TimeAverage = ta, T0 = t0, T1 = t1)))
                | TDensity (_, lo, hi, bins) ->
                    Ok(
                        PlainJob(
                            QueryPlan(Kind = EstimateKind.Density, Observable = k, TimeAverage = ta, T0 = t0, T1 = t1, Lo = lo, Hi = hi, Bins = bins)
                        )
                    )
            | QResponse _ ->
                Error
                    { Pos = q.Pos
                      Message = "response queries (d ... / d p) are not available yet in this version of the engine" }

        let jobs = cf.Queries |> List.map (fun q -> q, planOf q)

        match jobs |> List.choose (fun (_, r) -> match r with Error d -> Some d | _ -> None) with
        | [] ->
            let compiled = Compile.compile ir (obs.ToArray()) [||]

            Ok
                { File = cf
                  Compiled = compiled
                  Jobs = jobs |> List.map (fun (q, r) -> q, (match r with Ok j -> j | Error _ -> failwith "unreachable"))
                  Source = source }
        | errs -> Error errs
    with ex ->
        Error [ { Pos = cf.Model.Pos; Message = sprintf "internal compiler error: %s" ex.Message } ]

let private outcomeOf (q: CheckedQuery) (est: Estimate) : QueryOutcome =
    let kind, lo, hi =
        match q.Query with
        | QPlain (TMean _, _) -> "mean", 0.0, 0.0
        | QPlain (TDensity (_, lo, hi, _), _) -> "density", lo, hi
        | QResponse (TMean _, _, _, _, _) -> "response", 0.0, 0.0
        | QResponse (TDensity (_, lo, hi, _), _, _, _, _) -> "density_response", lo, hi

    let arr (a: float[]) = if isNull a then [||] else a

    { Query = q.Text
      Kind = kind
      Wrt = None
      Method = None
      Value = est.Value
      StdErr = est.StdErr
      Grid = arr est.Grid
      Values = arr est.Values
      StdErrs = arr est.StdErrs
      Lo = lo
      Hi = hi
      Below = est.Below
      Above = est.Above
      Count = est.Count }

/// Run every parameter set of the program. Throws SimulationFailedException / RunTooLargeException.
let run (p: Program) (opts: RunOptions) : RunReport =
    let s = p.File.Settings
    let runner = ModelRunner.For p.Compiled.Type
    let plans = p.Jobs |> List.map (fun (_, PlainJob plan) -> plan) |> List.toArray
    let sets = p.File.Sets
    let nSets = List.length sets

    let settingsFor (i: int) =
        RunSettings(
            Paths = s.Paths,
            Dt = s.Dt,
            T = s.T,
            Seed = s.Seed,
            Threads = opts.Threads,
            Progress =
                (match opts.Progress with
                 | Some f -> Action<float>(fun x -> f ((float i + x) / float nSets))
                 | None -> null)
        )

    // JIT warm-up on a few paths, outside the timing
    runner.Run(p.Compiled.Instance (List.head sets).Values, RunSettings(Paths = 2L, Dt = s.Dt, T = min s.T (10.0 * s.Dt), Seed = s.Seed, Threads = 1), plans)
    |> ignore

    let sw = Stopwatch.StartNew()

    let reports =
        sets
        |> List.mapi (fun i set ->
            let est = runner.Run(p.Compiled.Instance set.Values, settingsFor i, plans)

            { Name = set.Name
              Params = List.zip (p.File.Model.Params |> List.map (fun q -> q.Name)) (Array.toList set.Values)
              Results = List.map2 (fun (q, _) e -> outcomeOf q e) p.Jobs (Array.toList est) })

    let seconds = sw.Elapsed.TotalSeconds
    let steps = float (RunSettings(Dt = s.Dt, T = s.T).Steps)

    { Model = p.File.Model.Name
      Source = p.Source
      Settings =
        { Paths = s.Paths
          Dt = s.Dt
          T = s.T
          Seed = s.Seed
          Scheme = s.Scheme
          Backend = opts.Backend }
      Sets = reports
      Seconds = seconds
      PathStepsPerSecond = float s.Paths * steps * float nSets / max seconds 1e-9 }
