/// The driver: from a checked file to a compiled program (model type, observables, engine plans),
/// and from there to a run report. Queries that a method cannot answer are located errors here.
module Sde.Lang.Driver

open System
open System.Diagnostics
open Sde.Core
open Sde.Lang.Syntax
open Sde.Lang.Checked
open Sde.Lang.Report

/// A finite-difference twin: parameter `Param` shifted by `Shift` (same noise as the base model).
type Variant = { Param: int; Shift: float }

/// How each query is answered.
type QueryJob =
    /// A plain mean/density: one plan of the plain engine.
    | PlainJob of QueryPlan
    /// A response: one response-engine plan per stationary window (one when not stationary).
    | ResponseJob of ResponsePlan list * wrt: string * methodText: string * windows: float list
    /// `lyapunov(k)`: one run of the Lyapunov engine per set serves every such query (the largest k).
    | LyapunovJob of k: int
    /// `alignment on ...`: one response-engine plan (DK score with the default schedule, top Lyapunov vector).
    | AlignmentJob of ResponsePlan

/// A checked file compiled for execution.
type Program =
    { File: CheckedFile
      Compiled: Compile.CompiledModel
      Jobs: (CheckedQuery * QueryJob) list
      Variants: Variant list
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

let private fmt (v: float) = v.ToString("R", Globalization.CultureInfo.InvariantCulture)

/// The method as the JSON reports it.
let methodText (dim: int) (m: CMethod) =
    let modeName mode =
        match mode with
        | Some Exact -> "exact"
        | Some Iterative -> "iterative"
        | Some FirstOrder -> "first_order"
        | None -> if dim <= 10 then "exact" else "iterative"

    match m with
    | DivergenceKernel (Rate r, mode) -> sprintf "divergence_kernel(rate = %s, mode = %s)" (fmt r) (modeName mode)
    | DivergenceKernel (AdaptiveRate, mode) -> sprintf "divergence_kernel(rate = adaptive, mode = %s)" (modeName mode)
    | DivergenceKernel (Alpha a, mode) -> sprintf "divergence_kernel(alpha = %s, mode = %s)" (fmt a) (modeName mode)
    | LikelihoodRatio -> "likelihood_ratio"
    | Pathwise -> "pathwise"
    | FiniteDifference h -> sprintf "finite_difference(h = %s)" (fmt h)

/// Is the noise degenerate (σσᵀ singular by its pattern: fewer lanes than states, or a row without noise)?
let private degenerateNoise (ir: Lower.ModelIr) =
    let rows = ir.Diffusion |> List.map (fun d -> d.Row) |> List.distinct
    ir.NoiseDim < ir.Dim || rows.Length < ir.Dim

/// Compile a checked file: lower the model, collect the observables, plan every query.
let prepare (source: string) (cf: CheckedFile) : Result<Program, Diagnostic list> =
    try
        let m = cf.Model
        let ir = Lower.lowerModel m
        let obs = Collections.Generic.List<Ir.Sym>()

        let obsIndex (e: CExpr) =
            let s = Lower.observable m e

            match Seq.tryFindIndex (fun o -> o = s) obs with
            | Some i -> i
            | None ->
                obs.Add s
                obs.Count - 1

        let wrt =
            cf.Queries
            |> List.choose (fun q -> match q.Query with QResponse (_, p, _, _, _) -> Some p | _ -> None)
            |> List.distinct
            |> List.toArray

        let variants = Collections.Generic.List<Variant>()

        let variantIndex v =
            match Seq.tryFindIndex ((=) v) variants with
            | Some i -> i
            | None ->
                variants.Add v
                variants.Count - 1

        let err (q: CheckedQuery) msg = Error { Pos = q.Pos; Message = msg }

        let planOf (q: CheckedQuery) : Result<QueryJob, Diagnostic> =
            let window over =
                match over with
                | Some (a, b) -> true, a, b
                | None -> false, 0.0, 0.0

            match q.Query with
            | QPlain (target, over) ->
                let k = obsIndex (targetObservable target)
                let ta, t0, t1 = window over

                match target with
                | TMean _ -> Ok(PlainJob(QueryPlan(Kind = EstimateKind.Mean, Observable = k, TimeAverage = ta, T0 = t0, T1 = t1)))
                | TDensity (_, lo, hi, bins) ->
                    Ok(PlainJob(QueryPlan(Kind = EstimateKind.Density, Observable = k, TimeAverage = ta, T0 = t0, T1 = t1, Lo = lo, Hi = hi, Bins = bins)))
            | QResponse (target, p, over, stationary, meth) ->
                let pname = m.Params[p].Name
                let kernel =
                    match meth with
                    | DivergenceKernel (Alpha 0.0, _) -> false
                    | DivergenceKernel _ | LikelihoodRatio -> true
                    | _ -> false

                let detInitMoves = Tangent.initDependsOnParam ir p

                if kernel && ir.NoiseDim = 0 then
                    err q (sprintf "'%s' has no noise (an ODE): kernel methods need noise; use pathwise or finite_difference" m.Name)
                elif kernel && degenerateNoise ir && not (Lower.additiveNoise ir) then
                    err q "the noise is degenerate and depends on the state, so the kernel part of the divergence-kernel method is not defined; use divergence_kernel(alpha = 0), pathwise or finite_difference"
                elif (kernel || meth = DivergenceKernel(Alpha 0.0, None)) && Tangent.uniformInitDependsOnParam ir p then
                    err q (sprintf "a uniform init that depends on '%s' has no usable score; use a normal init, or finite_difference" pname)
                elif (match meth with DivergenceKernel _ | LikelihoodRatio -> true | _ -> false) && detInitMoves && not (Lower.additiveNoise ir) then
                    err q (sprintf "a deterministic init that depends on '%s' under multiplicative noise is not supported by the kernel methods; use a normal init, pathwise or finite_difference" pname)
                elif meth = Pathwise && stationary.IsSome then
                    err q "pathwise has no stationary (ergodic) form here; use divergence_kernel or finite_difference"
                else
                    let k = obsIndex (targetObservable target)
                    let ta, t0, t1 = window over
                    let which = Array.IndexOf(wrt, p)

                    let kind, lo, hi, bins =
                        match target with
                        | TMean _ -> EstimateKind.Mean, 0.0, 0.0, 0
                        | TDensity (_, lo, hi, bins) -> EstimateKind.Density, lo, hi, bins

                    let defaultMode = if ir.Dim <= 10 then Sde.Core.DkMode.Exact else Sde.Core.DkMode.Iterative

                    let modeOf mode =
                        match mode with
                        | Some Exact -> Sde.Core.DkMode.Exact
                        | Some Iterative -> Sde.Core.DkMode.Iterative
                        | Some FirstOrder -> Sde.Core.DkMode.FirstOrder
                        | None -> defaultMode

                    let plan (win: float) =
                        // method, schedule (constant α?, α, rate), mode, FD twins and step, sampling window
                        let rm, constant, alpha, rate, mode, (vp, vm, h), (ta, t0, t1, win) =
                            match meth with
                            | DivergenceKernel (Rate r, mode) ->
                                ResponseMethod.DivergenceKernel, false, 0.0, r, modeOf mode, (0, 0, 0.0), (ta, t0, t1, win)
                            | DivergenceKernel (AdaptiveRate, mode) ->
                                // the rate is measured per parameter set before the run (see `run`)
                                ResponseMethod.DivergenceKernel, false, 0.0, CovectorGrowth.Floor, modeOf mode, (0, 0, 0.0), (ta, t0, t1, win)
                            | DivergenceKernel (Alpha a, mode) ->
                                ResponseMethod.DivergenceKernel, true, a, 0.0, modeOf mode, (0, 0, 0.0), (ta, t0, t1, win)
                            | LikelihoodRatio ->
                                ResponseMethod.DivergenceKernel, true, 1.0, 0.0, defaultMode, (0, 0, 0.0), (ta, t0, t1, win)
                            | Pathwise -> ResponseMethod.Pathwise, false, 0.0, 0.0, defaultMode, (0, 0, 0.0), (ta, t0, t1, 0.0)
                            | FiniteDifference h ->
                                let twins = variantIndex { Param = p; Shift = h }, variantIndex { Param = p; Shift = -h }, h
                                // a stationary FD is the FD of the long-time average over [burnin, T]
                                let window = if win > 0.0 then true, cf.Settings.Burnin, cf.Settings.T, 0.0 else ta, t0, t1, 0.0
                                ResponseMethod.FiniteDifference, false, 0.0, 0.0, defaultMode, twins, window

                        ResponsePlan(
                            Kind = kind, Observable = k, TimeAverage = ta, T0 = t0, T1 = t1, Lo = lo, Hi = hi, Bins = bins,
                            Which = which, Method = rm, ConstantAlpha = constant, Alpha = alpha, Rate = rate, Mode = mode,
                            AdaptiveRate = (match meth with DivergenceKernel (AdaptiveRate, _) -> true | _ -> false),
                            VariantPlus = vp, VariantMinus = vm, H = h, StationaryWindow = win, Burnin = cf.Settings.Burnin
                        )

                    let windows = defaultArg stationary []
                    let plans = if windows.IsEmpty then [ plan 0.0 ] else windows |> List.map plan
                    Ok(ResponseJob(plans, pname, methodText ir.Dim meth, windows))
            | QLyapunov k -> Ok(LyapunovJob k)
            | QAlignment (lo, hi, bins) ->
                if ir.NoiseDim = 0 then
                    err q (sprintf "'%s' has no noise (an ODE): its density is singular and has no score, so alignment is not defined; use lyapunov(k)" m.Name)
                elif degenerateNoise ir && not (Lower.additiveNoise ir) then
                    err q "the noise is degenerate and depends on the state, so the divergence-kernel score (with its default schedule) is not defined; alignment needs it"
                else
                    let mode = if ir.Dim <= 10 then Sde.Core.DkMode.Exact else Sde.Core.DkMode.Iterative
                    Ok(AlignmentJob(ResponsePlan(Kind = EstimateKind.Density, Lo = lo, Hi = hi, Bins = bins, Method = ResponseMethod.DivergenceKernel,
                                                 Rate = 10.0, Mode = mode, Alignment = true, Burnin = cf.Settings.Burnin)))

        let jobs = cf.Queries |> List.map (fun q -> q, planOf q)

        match jobs |> List.choose (fun (_, r) -> match r with Error d -> Some d | _ -> None) with
        | [] ->
            let compiled = Compile.compile ir (obs.ToArray()) wrt

            Ok
                { File = cf
                  Compiled = compiled
                  Jobs = jobs |> List.map (fun (q, r) -> q, (match r with Ok j -> j | Error _ -> failwith "unreachable"))
                  Variants = List.ofSeq variants
                  Source = source }
        | errs -> Error errs
    with ex ->
        Error [ { Pos = cf.Model.Pos; Message = sprintf "internal compiler error: %s" ex.Message } ]

let private modeText (m: Sde.Core.DkMode) =
    match m with
    | Sde.Core.DkMode.Exact -> "exact"
    | Sde.Core.DkMode.Iterative -> "iterative"
    | _ -> "first_order"

/// A rate as the method text shows it (three significant digits; the adaptive rate is rounded to them).
let private rateText (r: float) = r.ToString("G3", Globalization.CultureInfo.InvariantCulture)

let private g4 (x: float) = sprintf "%.3g" x

/// The weight-tail guard (docs/responses.md, "The guard"): a kernel result is flagged when one path
/// carries more than `shareLimit paths` of the weights' sum of squares Σℓ² (or the weights overflowed).
/// With finite-variance weights the largest share falls like (log n)/n; when the variance is infinite
/// (the covector outgrows the kernel's damping) it stays of order one: the value and its standard error
/// then rest on a handful of paths. The bound is 0.05, and 50/n for n < 1000 paths (so that the largest
/// of n Gaussian weights, about 2 log n / n, stays far below it; with n ≤ 50 nothing can be flagged).
let shareLimit (paths: int64) = max 0.05 (50.0 / float (max 1L paths))

let weightsBlownUp (e: Estimate) =
    not (Double.IsNaN e.WeightKurtosis) && not (e.WeightMaxShare <= shareLimit e.Count)

/// The warning of a flagged kernel result, with the schedule to try instead: for a rate, the larger of
/// twice it and the adaptive rule's (`measured` is the adaptive rate of this set's model).
let private weightWarning (pl: ResponsePlan) (e: Estimate) (dt: float) (measured: unit -> float) =
    let what =
        if Double.IsFinite e.WeightKurtosis then
            sprintf "the kernel weights are heavy-tailed: one path of %d carries %s%% of their variance (kurtosis %s), so the value and its standard error are unreliable"
                e.Count (g4 (100.0 * e.WeightMaxShare)) (g4 e.WeightKurtosis)
        else "the kernel weights overflowed: the value and its standard error are meaningless"
    let suggestion =
        if pl.ConstantAlpha then
            if pl.Alpha < 1.0 then sprintf "try divergence_kernel(alpha = %s) or finite_difference" (rateText (min 1.0 (max 0.1 (2.0 * pl.Alpha))))
            else "try finite_difference, or a smaller dt"
        elif pl.Rate * dt < 0.5 then
            let r = max (2.0 * pl.Rate) (measured ()) |> min (1.0 / dt) |> CovectorGrowth.ThreeDigits
            sprintf "try divergence_kernel(rate = %s)" (rateText r)
        else "the rate is already near 1/dt: try a smaller dt, more paths, or finite_difference"
    what + "; " + suggestion

let private outcomeOf (q: CheckedQuery) (job: QueryJob) (used: ResponsePlan list) (dt: float) (measured: unit -> float) (ests: Estimate list) : QueryOutcome =
    let kind, lo, hi =
        match q.Query with
        | QPlain (TMean _, _) -> "mean", 0.0, 0.0
        | QPlain (TDensity (_, lo, hi, _), _) -> "density", lo, hi
        | QResponse (TMean _, _, _, _, _) -> "response", 0.0, 0.0
        | QResponse (TDensity (_, lo, hi, _), _, _, _, _) -> "density_response", lo, hi
        | QLyapunov _ -> "lyapunov", 0.0, 0.0
        | QAlignment (lo, hi, _) -> "alignment", lo, hi

    let arr (a: float[]) = if isNull a then [||] else a
    let est = List.head ests

    let kernelPlan =
        match used with
        | pl :: _ when pl.Method = ResponseMethod.DivergenceKernel && not pl.Alignment -> Some pl
        | _ -> None

    let wrt, meth, windows =
        match job with
        | PlainJob _ | LyapunovJob _ -> None, None, []
        | AlignmentJob _ -> None, Some "divergence_kernel(rate = 10)", []
        | ResponseJob (_, wrt, m, wins) ->
            let m =
                match kernelPlan with
                | Some pl when pl.AdaptiveRate -> sprintf "divergence_kernel(rate = %s (adaptive), mode = %s)" (rateText pl.Rate) (modeText pl.Mode)
                | _ -> m
            let ws =
                if wins.Length > 1 then
                    List.map2 (fun w (e: Estimate) -> w, (if isNull e.Values then e.Value else nan), (if isNull e.Values then e.StdErr else nan)) wins ests
                else []
            Some wrt, Some m, ws

    { Query = q.Text
      Kind = kind
      Wrt = wrt
      Method = meth
      Value = est.Value
      StdErr = est.StdErr
      Grid = arr est.Grid
      Values = arr est.Values
      StdErrs = arr est.StdErrs
      Lo = lo
      Hi = hi
      Below = est.Below
      Above = est.Above
      Count = est.Count
      Rate = kernelPlan |> Option.filter (fun pl -> not pl.ConstantAlpha) |> Option.map (fun pl -> pl.Rate)
      RateSource = kernelPlan |> Option.filter (fun pl -> not pl.ConstantAlpha) |> Option.map (fun pl -> if pl.AdaptiveRate then "adaptive" else "explicit")
      CovectorGrowth = None
      WeightKurtosis = kernelPlan |> Option.map (fun _ -> ests |> List.map (fun e -> e.WeightKurtosis) |> List.max)
      WeightMaxShare = kernelPlan |> Option.map (fun _ -> ests |> List.map (fun e -> e.WeightMaxShare) |> List.max)
      Warnings =
        match kernelPlan with
        | Some _ ->
            List.zip used ests
            |> List.filter (fun (_, e) -> weightsBlownUp e)
            |> List.truncate 1
            |> List.map (fun (pl, e) -> weightWarning pl e dt measured)
        | None -> []
      Windows = windows }

/// Run every parameter set of the program. Throws SimulationFailedException / RunTooLargeException.
let run (p: Program) (opts: RunOptions) : RunReport =
    let s = p.File.Settings
    // backends: "cpu" (the CPU engine), "ilgpu-cpu" / "cuda" (the ILGPU kernels), "auto" (CUDA if present, else cpu)
    // The tangent kernel (divergence kernel, likelihood ratio, pathwise, alignment) equals the CPU engine
    // bit for bit on ILGPU's CPU accelerator, but a device check on an NVIDIA H100 (2026-11-26,
    // tests/perf/gpu.sh) gave wrong results with it (zeros or stale values), while the plain, finite-
    // difference and Lyapunov kernels agreed with the CPU engine. Until that is found, CUDA refuses those
    // queries (DSL_CUDA_TANGENT=1 lifts the refusal, for debugging on a GPU).
    let tangentOnCuda = Environment.GetEnvironmentVariable "DSL_CUDA_TANGENT" = "1"

    let gpuSupports (b: string) (pl: ResponsePlan) =
        Gpu.GpuRunner.Supports pl
        && (b <> "cuda" || tangentOnCuda || pl.Method = ResponseMethod.FiniteDifference)

    let gpuCanRunAll =
        p.Jobs
        |> List.forall (fun (_, j) ->
            match j with
            | ResponseJob (plans, _, _, _) -> plans |> List.forall (gpuSupports "cuda")
            | AlignmentJob _ -> tangentOnCuda
            | _ -> true)

    // `auto` takes CUDA only when a device is present and has a kernel for every query
    let backend =
        if opts.Backend = "auto" then
            (match Gpu.GpuRunner.ResolveAuto() with
             | "cuda" when not gpuCanRunAll -> "cpu"
             | b -> b)
        else opts.Backend
    let opts = { opts with Backend = backend }

    let runner =
        match backend with
        | "ilgpu-cpu"
        | "cuda" ->
            // a located error for the queries that have no kernel yet (before any simulation)
            for (q, j) in p.Jobs do
                match j with
                | ResponseJob (plans, _, m, _) when plans |> List.exists (fun pl -> not (gpuSupports backend pl)) ->
                    raise (
                        NotSupportedException(
                            sprintf "%d:%d: '%s' uses %s, which the %s backend cannot run yet (on CUDA only finite_difference responses are enabled); use --backend cpu"
                                q.Pos.Line q.Pos.Col q.Text m backend
                        )
                    )
                | AlignmentJob _ when backend = "cuda" && not tangentOnCuda ->
                    raise (
                        NotSupportedException(
                            sprintf "%d:%d: '%s' cannot run on the cuda backend yet; use --backend cpu" q.Pos.Line q.Pos.Col q.Text
                        )
                    )
                | _ -> ()

            Gpu.GpuRunner.For(p.Compiled.Type, Gpu.GpuRunner.Parse backend)
        | _ -> ModelRunner.For p.Compiled.Type

    let plain =
        p.Jobs |> List.choose (fun (_, j) -> match j with PlainJob plan -> Some plan | _ -> None) |> List.toArray

    let responses =
        p.Jobs |> List.collect (fun (_, j) -> match j with ResponseJob (plans, _, _, _) -> plans | AlignmentJob plan -> [ plan ] | _ -> []) |> List.toArray

    let lyapunovK =
        p.Jobs |> List.fold (fun acc (_, j) -> match j with LyapunovJob k -> max acc k | _ -> acc) 0

    let sets = p.File.Sets
    let nSets = List.length sets
    let engines = (if plain.Length > 0 then 1 else 0) + (if responses.Length > 0 then 1 else 0) + (if lyapunovK > 0 then 1 else 0)

    let settings (paths: int64) (t: float) (threads: int) (progress: (float -> unit) option) =
        RunSettings(
            Paths = paths, Dt = s.Dt, T = t, Seed = s.Seed, Threads = threads,
            Progress = (match progress with Some f -> Action<float>(f) | None -> null)
        )

    let instances (values: float[]) =
        let baseModel = p.Compiled.Instance values

        let variants =
            p.Variants
            |> List.map (fun v ->
                let vs = Array.copy values
                vs[v.Param] <- vs[v.Param] + v.Shift
                p.Compiled.Instance vs)
            |> List.toArray

        baseModel, variants

    // the adaptive default schedule: the covector growth rate of each set's model, measured before the
    // run (untimed, deterministic: its own paths of the run's seed), and the plans with that rate
    let anyAdaptive = responses |> Array.exists (fun pl -> pl.AdaptiveRate)

    let growthOf =
        sets
        |> List.map (fun set ->
            lazy
                (let bm, _ = instances set.Values
                 ModelRunner.CovectorGrowth(p.Compiled.Type, bm, p.Compiled.Structure, settings s.Paths s.T 1 None)))
        |> List.toArray

    // measured now, outside the timing, when a plan needs it; otherwise only if a warning asks for it
    let growth = growthOf |> Array.map (fun g -> if anyAdaptive then Some(g.Force()) else None)

    let responsesOf (i: int) =
        match growth[i] with
        | Some g ->
            let r = CovectorGrowth.RateFor g
            responses |> Array.map (fun pl -> if pl.AdaptiveRate then pl.WithRate r else pl)
        | None -> responses

    let runSet (i: int) (values: float[]) (paths: int64) (t: float) (threads: int) (progress: bool) =
        let bm, vs = instances values
        let responses = responsesOf i

        let prog k =
            if progress then
                opts.Progress |> Option.map (fun f -> fun x -> f ((float (i * engines + k) + x) / float (nSets * engines)))
            else None

        let pe = if plain.Length > 0 then runner.Run(bm, settings paths t threads (prog 0), plain) else [||]

        let re =
            if responses.Length > 0 then
                runner.RunResponses(bm, vs, p.Compiled.Structure, settings paths t threads (prog (engines - 1)), responses)
            else [||]

        let le =
            if lyapunovK > 0 then
                // log|det J| (dense LU per step) only when the full spectrum is asked: its sum identity
                let logDet = lyapunovK = p.Compiled.Ir.Dim
                let ly =
                    match backend with
                    | "ilgpu-cpu"
                    | "cuda" -> Gpu.GpuRunner.LyapunovFor(p.Compiled.Type, Gpu.GpuRunner.Parse backend)
                    | _ -> LyapunovRunner.For p.Compiled.Type
                // the JIT warm-up (progress = false) needs only a few steps past the burn-in, not the whole run
                let t = if progress then t else min t (s.Burnin + 10.0 * s.Dt)
                Some(ly.Run(bm, p.Compiled.Structure, settings paths t threads (prog (engines - 1)), lyapunovK, s.Burnin, logDet))
            else None

        pe, re, le

    let ignoreRate () = nan

    // JIT warm-up on a couple of paths, outside the timing
    runSet 0 (List.head sets).Values 2L s.T 1 false |> ignore
    let sw = Stopwatch.StartNew()

    let reports =
        sets
        |> List.mapi (fun i set ->
            let pe, re, le = runSet i set.Values s.Paths s.T opts.Threads true
            let mutable pi = 0
            let mutable ri = 0
            let used = responsesOf i
            let measured () = CovectorGrowth.RateFor(growthOf[i].Force())

            let results =
                p.Jobs
                |> List.map (fun (q, job) ->
                    match job with
                    | PlainJob _ ->
                        pi <- pi + 1
                        outcomeOf q job [] s.Dt ignoreRate [ pe[pi - 1] ]
                    | ResponseJob (plans, _, _, _) ->
                        let ests = [ for k in 0 .. plans.Length - 1 -> re[ri + k] ]
                        let pls = [ for k in 0 .. plans.Length - 1 -> used[ri + k] ]
                        ri <- ri + plans.Length
                        let o = outcomeOf q job pls s.Dt measured ests
                        if pls.Head.AdaptiveRate then { o with CovectorGrowth = growth[i] |> Option.map (fun g -> g.Rate) } else o
                    | AlignmentJob _ ->
                        ri <- ri + 1
                        outcomeOf q job [ used[ri - 1] ] s.Dt measured [ re[ri - 1] ]
                    | LyapunovJob k ->
                        let r = Option.get le
                        let full = k = r.Exponents.Length && not (Double.IsNaN r.LogDetRate)
                        outcomeOf q job [] s.Dt ignoreRate [ Estimate(Value = (if full then r.LogDetRate else nan), StdErr = (if full then r.LogDetStdErr else nan),
                                                   Grid = Array.init k (fun c -> float (c + 1)), Values = Array.sub r.Exponents 0 k,
                                                   StdErrs = Array.sub r.StdErrs 0 k, Count = r.Paths) ])

            { Name = set.Name
              Params = List.zip (p.File.Model.Params |> List.map (fun q -> q.Name)) (Array.toList set.Values)
              Results = results })

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
