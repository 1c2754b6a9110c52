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
    /// `variance`, `covariance`, `quantile`, 2-D `density`: plain plans (means of powers and products,
    /// or a histogram) whose estimates `Derived.estimate` combines into the answer.
    | DerivedJob of QueryPlan list
    /// `samples(...)`: the observables (indices) recorded per path at T by one recorded run per set
    /// (`fillSamples`), after the other queries; with `every Δ` (everySteps = Δ/dt > 0) at every grid
    /// time 0, Δ, ..., ≤ T, by a recorded run of its own (the same paths).
    | SamplesJob of observables: int[] * everySteps: int64
    /// `score(x[i]) on ...`: the DK covector's component `comp` binned by x_i, from one recorded run per set
    /// (`fillSamples`) with this plan (a score plan of the default schedule).
    | ScoreJob of comp: int * lo: float * hi: float * bins: int * plan: ResponsePlan
    /// `log_normalizer` / `ess` of a weighted run (its plain plans run on the weighted engine).
    | WeightJob of name: string

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
      Backend: string
      /// Cancelled by SIGINT/SIGTERM in the CLI: the set being simulated stops and is reported as
      /// interrupted, the sets not yet started are not run (the finished ones are kept).
      Cancel: Threading.CancellationToken }

let defaultOptions =
    { Threads = 0
      Progress = None
      Backend = "cpu"
      Cancel = Threading.CancellationToken.None }

let private targetObservable (t: CTarget) =
    match t with
    | TMean e -> e
    | TSeries (e, _)
    | TDensity (e, _, _, _)
    | TVariance e
    | TCovariance (e, _)
    | TQuantile (e, _, _, _, _)
    | TDensity2 (e, _, _, _, _, _, _, _) -> e

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
    | DivergenceKernel (AdaptiveAlone, mode) -> sprintf "divergence_kernel(rate = adaptive, mode = %s, control = none)" (modeName mode)
    | DivergenceKernel (Alpha a, mode) -> sprintf "divergence_kernel(alpha = %s, mode = %s)" (fmt a) (modeName mode)
    | LikelihoodRatio -> "likelihood_ratio"
    | Pathwise -> "pathwise"
    | FiniteDifference h -> sprintf "finite_difference(h = %s)" (fmt h)

/// Is the noise degenerate (σσᵀ singular by its pattern: fewer lanes than states, or a row without noise)?
let private degenerateNoise (ir: Lower.ModelIr) =
    let rows = ir.Diffusion |> List.map (fun d -> d.Row) |> List.distinct
    ir.NoiseDim < ir.Dim || rows.Length < ir.Dim

/// Does `γ` (parameter p) enter the expression where it jumps: an `if` condition (or a sign)? Its
/// explicit derivative then holds a point mass that a pathwise term cannot carry.
let rec private jumpsIn (p: int) (e: Ir.Sym) =
    match e.Op with
    | Ir.Cmp _ | Ir.And | Ir.Or | Ir.Not | Ir.Un Ir.USign | Ir.Un Ir.UFloor -> Ir.mentions (Ir.Param p) e
    | _ -> List.exists (jumpsIn p) e.Args

/// Component k of state `st`, as the user writes it (`x`, `x[3]`).
let private componentName (st: StateInfo) (k: int) =
    if st.IsVector then sprintf "%s[%d]" st.Name (k - st.Offset) else st.Name

/// Under degenerate noise, the first state component whose init has no score (a point or a uniform
/// init), by name: the law of the first steps is then singular, without the score the kernel needs.
let private singularStart (m: CheckedModel) (ir: Lower.ModelIr) =
    if not (degenerateNoise ir) then None
    else
        ir.Init
        |> Array.tryFindIndex (function Lower.InitNormal _ -> false | _ -> true)
        |> Option.map (fun k -> componentName (m.States |> List.findBack (fun s -> s.Offset <= k)) k)

/// Why `meth` cannot answer `d target / d γ` on this model, and a hint that follows the suggested
/// methods (or ""), or None when it can. One function decides every refusal, so that the methods an
/// error suggests are exactly those it accepts.
let private refusal (m: CheckedModel) (ir: Lower.ModelIr) (target: CTarget) (p: int) (stationary: bool) (meth: CMethod) =
    let pname = m.Params[p].Name
    let phi = Lower.observable m (targetObservable target)
    let isDensity = match target with TMean _ -> false | _ -> true
    let kernelLike = match meth with DivergenceKernel _ | LikelihoodRatio -> true | _ -> false
    // the methods that inject noise into the kernel (α > 0 at some step)
    let injecting = kernelLike && (match meth with DivergenceKernel (Alpha 0.0, _) -> false | _ -> true)
    let degenerate = degenerateNoise ir
    let why (s: string) = Some(s, "")

    match meth with
    | _ when kernelLike && ir.Scheme <> Lower.EulerMaruyama ->
        Some(
            sprintf "the divergence-kernel and likelihood-ratio estimators are built on the Euler-Maruyama transition density, which scheme = %s does not have" (Lower.schemeName ir.Scheme),
            " (or scheme = euler_maruyama, with extrapolate = richardson for a smaller bias)"
        )
    | Pathwise when isDensity -> why "pathwise cannot differentiate a density"
    | Pathwise when Ir.hasSelect phi -> why "pathwise needs a differentiable observable, and this one contains 'if'"
    | Pathwise when stationary -> why "pathwise has no stationary (ergodic) form here"
    | FiniteDifference _ -> None
    | _ when jumpsIn p phi ->
        why (sprintf "the observable jumps where '%s' enters a condition, so its explicit derivative in '%s' has a point mass that only finite differences estimate" pname pname)
    | _ when isDensity && Ir.mentions (Ir.Param p) phi ->
        why (sprintf "the observable of this density depends on '%s' itself, and the derivative of that dependence (a derivative of the histogram in its argument) is not estimated by this method" pname)
    | _ when injecting && ir.NoiseDim = 0 -> why (sprintf "'%s' has no noise (an ODE): kernel methods need noise" m.Name)
    | _ when kernelLike && (singularStart m ir).IsSome ->
        // the one refusal that a change of the model (rather than of the method) lifts
        Some(
            sprintf
                "the noise does not reach every state and the init of '%s' is not normal, so the law of the first steps is singular and has no score for the kernel methods to transport"
                (singularStart m ir).Value,
            " (or give every state a normal init)"
        )
    | _ when injecting && degenerate && not (Lower.additiveNoise ir) ->
        why "the noise is degenerate and depends on the state, so the kernel part of the divergence-kernel method is not defined"
    | _ when kernelLike && Tangent.uniformInitDependsOnParam ir p ->
        why (sprintf "a uniform init that depends on '%s' has no usable score" pname)
    | _ when kernelLike && Tangent.initDependsOnParam ir p && not (Lower.additiveNoise ir) ->
        why (sprintf "a deterministic init that depends on '%s' under multiplicative noise is not supported by the kernel methods" pname)
    | _ -> None

/// The methods an error may suggest, as the user writes them.
let private alternatives =
    [ DivergenceKernel(AdaptiveRate, None), "divergence_kernel"
      DivergenceKernel(Alpha 0.0, None), "divergence_kernel(alpha = 0)"
      Pathwise, "pathwise"
      FiniteDifference 0.01, "finite_difference(h = ...)" ]

let private orList (xs: string list) =
    match List.rev xs with
    | [] -> "finite_difference(h = ...)"
    | [ x ] -> x
    | last :: rest -> String.Join(", ", List.rev rest) + " or " + last

/// Every parameter set's initial law must exist: a `normal` init with a positive finite standard
/// deviation, a `uniform` init with lo < hi (with sd ≤ 0 the samples were drawn anyway and the score
/// ∇ log ρ_0 was NaN or infinite).
let private initLawErrors (cf: CheckedFile) (ir: Lower.ModelIr) : Diagnostic list =
    let m = cf.Model
    let states = List.toArray m.States
    // the state of each component, and the first init of each state
    let stateOf = Array.zeroCreate<StateInfo> ir.Dim

    for st in states do
        for i in 0 .. st.Size - 1 do
            stateOf[st.Offset + i] <- st

    let initPos = Collections.Generic.Dictionary<int, Pos>()

    for i in m.Inits do
        initPos.TryAdd(states[i.State].Offset, i.Pos) |> ignore

    // one component per state and init law (the first): the check depends on nothing else, and
    // sets × components would be 10^10 evaluations at the limits
    let representatives =
        [| 0 .. ir.Dim - 1 |] |> Array.distinctBy (fun k -> stateOf[k].Offset, ir.Init[k])

    [ for set in cf.Sets do
          let leaf op = match op with Ir.Param i -> set.Values[i] | _ -> nan
          let where = if cf.Sets.Length > 1 then sprintf " in parameter set '%s'" set.Name else ""

          for k in representatives do
              let st = stateOf[k]
              let name = componentName st k

              let pos () =
                  match initPos.TryGetValue st.Offset with
                  | true, p -> p
                  | _ -> m.Pos

              match ir.Init[k] with
              | Lower.InitNormal (_, sd) ->
                  let v = Ir.eval leaf sd
                  if not (v > 0.0 && Double.IsFinite v) then
                      { Pos = pos (); Message = sprintf "the init of '%s' is normal with standard deviation %g%s; it must be positive and finite (a point init is written `init %s = ...`)" name v where st.Name }
              | Lower.InitUniform (a, b) ->
                  let lo, hi = Ir.eval leaf a, Ir.eval leaf b
                  if not (lo < hi && Double.IsFinite lo && Double.IsFinite hi) then
                      { Pos = pos (); Message = sprintf "the init of '%s' is uniform on [%g, %g]%s; it needs finite lo < hi" name lo hi where }
              | Lower.InitDet _ -> () ]
    |> List.distinctBy (fun d -> d.Pos.Line, d.Pos.Col)

/// A finite-difference twin must stay in its parameter's domain in every set (s − h < 0 under
/// `sqrt(s)` gave NaN with exit 0).
let private twinDomainErrors (cf: CheckedFile) : Diagnostic list =
    [ for q in cf.Queries do
          match q.Query with
          | QResponse (_, p, _, _, FiniteDifference h) ->
              let pi = cf.Model.Params[p]

              let outside =
                  cf.Sets
                  |> List.tryPick (fun set ->
                      [ set.Values[p] + h; set.Values[p] - h ]
                      |> List.tryFind (fun v -> Result.isError (Checker.checkDomain pi v)))

              match outside, pi.Domain with
              | Some v, Some d ->
                  { Pos = q.MethodPos
                    Message = sprintf "finite_difference(h = %g) evaluates '%s' at %g, outside its domain %s; use a smaller h" h pi.Name v (Checker.domainText d) }
              | _ -> ()
          | _ -> () ]

/// The scheme's weak order, for the bias estimate of a multilevel run (`accuracy = ...`): the one place
/// to extend when a scheme is added (None: multilevel refuses the scheme until its coupling is written).
let multilevelWeakOrder (scheme: string) : float option =
    match scheme with
    | "euler_maruyama"
    | "milstein" -> Some 1.0 // Milstein's gain is the variance decay (beta 2, strong order 1), not the bias
    | _ -> None // sra: its second normal per lane (the iterated integral) has no coupling across levels yet

/// What a multilevel run (`accuracy = ...`, docs/mlmc.md) cannot answer: located errors that say what works.
let private multilevelErrors (cf: CheckedFile) : Diagnostic list =
    match cf.Settings.Multilevel with
    | None -> []
    | Some ml ->
        let plainInstead = "; run it without accuracy (plain Monte Carlo with dt and paths) or ask for means"
        [ match multilevelWeakOrder cf.Settings.Scheme with
          | None ->
              { Pos = ml.Pos
                Message = sprintf "multilevel Monte Carlo (accuracy) couples levels with euler_maruyama only, not scheme = %s yet; use scheme = euler_maruyama or drop accuracy" cf.Settings.Scheme }
          | Some _ -> ()
          match cf.Weight with
          | Some w ->
              { Pos = w.Pos
                Message = sprintf "multilevel Monte Carlo (accuracy) cannot run a weighted model (weight '%s'): its resampling couples the paths of one level; run it without accuracy" w.Name }
          | None -> ()
          for q in cf.Queries do
              let refuse why = { Pos = q.Pos; Message = sprintf "multilevel Monte Carlo (accuracy) %s%s" why plainInstead }
              match q.Query with
              | QPlain ((TMean _ | TVariance _ | TCovariance _ | TSeries _), _) -> ()
              | QPlain (TDensity _, _) when cf.Settings.Scheme = "milstein" -> () // smoothed bins (docs/mlmc.md, "Densities")
              | QPlain (TDensity _, _) ->
                  refuse "estimates a density with scheme = milstein only: a bin's indicator is not Lipschitz, and with euler_maruyama even its smoothed bins' corrections decay too slowly to beat plain Monte Carlo (measured in docs/mlmc.md); add scheme = milstein"
              | QPlain (TDensity2 _, _) ->
                  refuse "estimates 1-D densities (with scheme = milstein) and means, not 2-D densities"
              | QPlain (TQuantile _, _) -> refuse "estimates means and what is derived from them, not quantiles (read off a histogram)"
              | QResponse (TMean _, _, _, None, FiniteDifference _) -> ()
              | QResponse _ ->
                  refuse "estimates responses by finite_difference(h = ...) of a mean only (its twins coupled across parameter and level); not stationary responses, densities or the kernel and pathwise methods yet"
              | QLyapunov _ | QAlignment _ -> refuse "does not estimate Lyapunov exponents or alignment (long-time averages, not expectations at T)"
              | QSamples _ | QScore _ -> refuse "has no per-path values to record (its paths live on several levels)"
              | QWeight _ -> () ]

/// Compile a checked file: lower the model, collect the observables, plan every query.
/// Most values (paths × observables) one `samples(...)` query records (they are held in memory).
let maxSampleValues = Limits.sampleValues
/// Most values (paths × times × observables) one `samples(...) every Δ` query records (held in memory: 400 MB).
let maxTrajectoryValues = Limits.trajectoryValues

/// Most result bins one run holds and writes (sets × the bins of every binned query, a mean or a series point
/// counting one): a bin is three numbers in memory and about 60 characters of the JSON, whose text must stay
/// within .NET's 2^30-character strings (10^7 bins: about 600 MB of JSON).
let maxResultBins = Limits.resultBins
/// Most values the samples queries of one run hold in memory until they are written (over sets and queries).
let maxRunSampleValues = Limits.runSampleValues

/// The results' size, before anything runs: the first query at which the sets' bins, or the sets' samples
/// values, pass their limit (the run would otherwise grow until the machine killed it, or fail after it).
let private resultSizeError (cf: CheckedFile) (jobs: (CheckedQuery * QueryJob) list) : Diagnostic option =
    let sets = float cf.Sets.Length
    let binsOf (kind: EstimateKind) (bins: int) = if kind = EstimateKind.Density then float bins else 1.0

    let size job =
        match job with
        | PlainJob p -> binsOf p.Kind p.Bins, 0.0
        | DerivedJob ps -> ps |> List.sumBy (fun p -> binsOf p.Kind p.Bins), 0.0
        | ResponseJob(ps, _, _, _) -> ps |> List.sumBy (fun p -> binsOf p.Kind p.Bins), 0.0
        | AlignmentJob p -> float p.Bins, 0.0
        | ScoreJob(_, _, _, bins, _) -> float bins, 0.0
        | LyapunovJob k -> float k, 0.0
        | WeightJob _ -> 1.0, 0.0
        | SamplesJob(obs, every) ->
            let times = if every > 0L then float (RunSettings(Dt = cf.Settings.Dt, T = cf.Settings.T).Steps / every + 1L) else 1.0
            0.0, float cf.Settings.Paths * times * float obs.Length

    jobs
    |> List.scan (fun (_, b, v) (q, job) -> let qb, qv = size job in Some q, b + sets * qb, v + sets * qv) (None, 0.0, 0.0)
    |> List.tryPick (fun (q, b, v) ->
        match q with
        | Some q when b > maxResultBins ->
            Some { Pos = q.Pos
                   Message = sprintf "the results would hold %g bins (%d parameter set%s x the bins of the queries up to this one), more than the limit of %g per run; use fewer bins or fewer sets" b cf.Sets.Length (if cf.Sets.Length = 1 then "" else "s") maxResultBins }
        | Some q when v > maxRunSampleValues ->
            Some { Pos = q.Pos
                   Message = sprintf "the samples queries would hold %g values in memory (%d parameter set%s x paths x times x observables, up to this query), more than the limit of %g per run; use fewer paths, sets or observables" v cf.Sets.Length (if cf.Sets.Length = 1 then "" else "s") maxRunSampleValues }
        | _ -> None)

/// The noise of component k as the user writes it: the brownian lane's name (`dW`, `dW[2]`).
let private laneName (m: CheckedModel) (l: int) =
    match m.Brownians |> List.tryFindBack (fun b -> b.Offset <= l) with
    | Some b when b.IsVector -> sprintf "d%s[%d]" b.Name (l - b.Offset)
    | Some b -> "d" + b.Name
    | None -> sprintf "lane %d" l

/// Where the equation of component k is written (the model's position when none is found).
let private equationPos (m: CheckedModel) (k: int) =
    let states = List.toArray m.States

    match states |> Array.tryFindIndexBack (fun s -> s.Offset <= k) with
    | Some si ->
        match m.Equations |> List.tryFind (fun e -> e.State = si) with
        | Some e -> e.Pos
        | None -> m.Pos
    | None -> m.Pos

/// What the scheme needs of the noise (docs/discretisation.md, Schemes): `sra` an additive
/// diffusion, `milstein` a commutative one; located at the first equation that breaks it.
let private schemeErrors (cf: CheckedFile) (ir: Lower.ModelIr) : Diagnostic list =
    let m = cf.Model
    let compName k = componentName (m.States |> List.findBack (fun s -> s.Offset <= k)) k

    let name (op: Ir.Op) =
        match op with
        | Ir.Param i -> ir.ParamNames[i]
        | Ir.State k -> ir.ComponentNames[k]
        | _ -> string op

    match ir.Scheme with
    | Lower.EulerMaruyama -> []
    | Lower.Sra ->
        match ir.Diffusion |> List.tryFind (fun d -> (Ir.stateDeps d.Coeff).Length > 0) with
        | Some d ->
            [ { Pos = equationPos m d.Row
                Message =
                  sprintf "scheme = sra is for additive noise, and the coefficient of %s in the equation of '%s' (%s) depends on the state; use scheme = milstein or scheme = euler_maruyama"
                      (laneName m d.Lane) (compName d.Row) (Ir.render name d.Coeff) } ]
        | None -> []
    | Lower.Milstein ->
        match Lower.nonCommutative ir with
        | Some (i, j, k) ->
            [ { Pos = equationPos m i
                Message =
                  sprintf "scheme = milstein needs commutative noise (L^j g_k = L^k g_j for every pair of noise lanes, with L^j = sum_l g_lj d/dx_l), and in the equation of '%s' the lanes %s and %s do not commute as far as the compiler can prove (Milstein would then need the Levy areas); use scheme = euler_maruyama (with extrapolate = richardson for a smaller bias), or a diagonal noise (each equation on its own brownian, its coefficient reading only its own state)"
                      (compName i) (laneName m j) (laneName m k) } ]
        | None -> []

let rec prepare (source: string) (cf: CheckedFile) : Result<Program, Diagnostic list> =
    // lowering, the derivatives and the emitter recurse on the expressions: on a large stack
    try
        Frontend.onLargeStack (fun () -> prepareHere source cf)
    with ex ->
        Error [ { Pos = cf.Model.Pos; Message = sprintf "internal compiler error: %s" ex.Message } ]

and private prepareHere (source: string) (cf: CheckedFile) : Result<Program, Diagnostic list> =
    try
        let m = cf.Model
        // plain simulation needs no derivatives, so its vector equations may run as loops
        let derivativeQuery = cf.Queries |> List.tryFind (fun q -> match q.Query with QPlain _ | QWeight _ | QSamples _ -> false | _ -> true)

        match derivativeQuery with
        | Some q when m.Dim > Loops.maxDerivativeDim ->
            Error [ { Pos = q.Pos; Message = Loops.derivativeDimMessage m.Dim } ]
        | _ ->

        let scheme = Lower.schemeOfName cf.Settings.Scheme

        let ir =
            if scheme <> Lower.EulerMaruyama then { Lower.lowerModel m with Scheme = scheme } // (no loops: their step is Euler's)
            elif derivativeQuery.IsSome then Lower.lowerModel m
            else Loops.lowerModel Loops.defaultMinLoopSize m
        let obs = Collections.Generic.List<Ir.Sym>()

        let symIndex (s: Ir.Sym) =
            match Seq.tryFindIndex (fun o -> o = s) obs with
            | Some i -> i
            | None ->
                obs.Add s
                obs.Count - 1

        // without derivatives, an observable's long uniform reductions are loops too
        let observableOf e = if derivativeQuery.IsSome then Lower.observable m e else Loops.observable Loops.defaultMinLoopSize m e
        let obsIndex (e: CExpr) = symIndex (observableOf e)

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
            match cf.Weight, q.Query with
            | Some w, QResponse _ -> err q (sprintf "responses of a weighted model (weight '%s') are not available yet" w.Name)
            | Some w, (QLyapunov _ | QAlignment _) ->
                err q (sprintf "lyapunov and alignment queries of a weighted model (weight '%s') are not available yet" w.Name)
            | Some w, QPlain ((TVariance _ | TCovariance _ | TQuantile _ | TDensity2 _), _) ->
                err q (sprintf "variance, covariance, quantile and 2-D density queries of a weighted model (weight '%s') are not available yet; use mean(...) of powers and products" w.Name)
            | Some w, QPlain (TDensity _, Some _) ->
                err q (sprintf "a weighted density (weight '%s') over a time window is not available yet; take it at T" w.Name)
            | Some w, (QSamples _ | QScore _) ->
                err q (sprintf "samples and score queries of a weighted model (weight '%s') are not available yet" w.Name)
            | Some _, QWeight n -> Ok(WeightJob n)
            | None, QWeight n -> err q (sprintf "'%s' needs a weight" n)
            | _ ->
            let window over =
                match over with
                | Some (a, b) -> true, a, b
                | None -> false, 0.0, 0.0

            match q.Query with
            | QSamples (es, None) when float cf.Settings.Paths * float es.Length > maxSampleValues ->
                err q (sprintf "samples(...) writes a value per path and observable: %d paths x %d = %g values, more than %g; use fewer paths (--paths)" cf.Settings.Paths es.Length (float cf.Settings.Paths * float es.Length) maxSampleValues)
            | QSamples (es, None) -> Ok(SamplesJob(es |> List.map obsIndex |> List.toArray, 0L))
            | QSamples (es, Some every) ->
                // the checker has put Δ on the grid (a whole number of steps, at most T)
                let e = max 1L (RunSettings.WholeSteps(every, cf.Settings.Dt))
                let times = float (RunSettings(Dt = cf.Settings.Dt, T = cf.Settings.T).Steps / e + 1L)
                let values = float cf.Settings.Paths * times * float es.Length
                if values > maxTrajectoryValues then
                    err q (sprintf "samples(...) every %s writes a value per path, time and observable: %d paths x %g times x %d = %g values, more than %g (held in memory); use fewer paths (--paths) or a larger step"
                               (Checker.shortNumber every) cf.Settings.Paths times es.Length values maxTrajectoryValues)
                else Ok(SamplesJob(es |> List.map obsIndex |> List.toArray, e))
            | QScore _ when ir.Scheme <> Lower.EulerMaruyama ->
                err q (sprintf "score(...) is the divergence-kernel estimator, built on the Euler-Maruyama transition density, which scheme = %s does not have; use scheme = euler_maruyama" (Lower.schemeName ir.Scheme))
            | QScore (comp, lo, hi, bins) ->
                if degenerateNoise ir && not (Lower.additiveNoise ir) then
                    err q "the noise is degenerate and depends on the state, so the divergence-kernel score (with its default schedule) is not defined"
                elif (singularStart m ir).IsSome then
                    err q (sprintf "the noise does not reach every state and the init of '%s' is not normal, so the law of the first steps is singular and has no score; give every state a normal init" (singularStart m ir).Value)
                else
                    let mode = if ir.Dim <= 10 then Sde.Core.DkMode.Exact else Sde.Core.DkMode.Iterative
                    Ok(ScoreJob(comp, lo, hi, bins, ResponsePlan(Kind = EstimateKind.Mean, Observable = 0, Method = ResponseMethod.DivergenceKernel,
                                                                  Rate = CovectorGrowth.Floor, Mode = mode, ScoreComponent = comp)))
            | QPlain (target, over) ->
                let k = obsIndex (targetObservable target)
                let ta, t0, t1 = window over

                // PairBlocks: the coupled pairs keep per-block sums, for the jackknife of the derived result's bias
                let meanOf (e: CExpr) = QueryPlan(Kind = EstimateKind.Mean, Observable = obsIndex e, TimeAverage = ta, T0 = t0, T1 = t1, PairBlocks = true)
                let densityOf (e: CExpr) lo hi bins =
                    QueryPlan(Kind = EstimateKind.Density, Observable = obsIndex e, TimeAverage = ta, T0 = t0, T1 = t1, Lo = lo, Hi = hi, Bins = bins,
                              PairBlocks = (match target with TQuantile _ -> true | _ -> false))

                match target with
                | TMean _ -> Ok(PlainJob(QueryPlan(Kind = EstimateKind.Mean, Observable = k, TimeAverage = ta, T0 = t0, T1 = t1)))
                | TDensity (_, lo, hi, bins) ->
                    Ok(PlainJob(QueryPlan(Kind = EstimateKind.Density, Observable = k, TimeAverage = ta, T0 = t0, T1 = t1, Lo = lo, Hi = hi, Bins = bins)))
                | TVariance _ | TCovariance _ -> Ok(DerivedJob(Derived.momentObservables target |> List.map meanOf))
                | TQuantile (e, _, lo, hi, bins) -> Ok(DerivedJob [ densityOf e lo hi bins ])
                | TSeries (e, every) ->
                    // the mean at each time k·Δ ≤ T: a window [t, t] holds the one grid time t
                    let n = int (floor (cf.Settings.T / every + 1e-9))
                    Ok(DerivedJob [ for k in 0..n -> QueryPlan(Kind = EstimateKind.Mean, Observable = obsIndex e, TimeAverage = true, T0 = float k * every, T1 = float k * every) ])
                | TDensity2 (_, _, _, _, _, _, n1, n2) ->
                    Ok(DerivedJob [ densityOf (Derived.cellObservable target) 0.0 (float (n1 * n2)) (n1 * n2) ])
            | QResponse (target, p, over, stationary, meth) ->
                let pname = m.Params[p].Name
                let phi = Lower.observable m (targetObservable target)
                let explicitTerm = Ir.mentions (Ir.Param p) phi

                match refusal m ir target p stationary.IsSome meth with
                | Some (why, hint) ->
                    let works =
                        alternatives
                        |> List.filter (fun (alt, _) -> alt <> meth && (refusal m ir target p stationary.IsSome alt).IsNone)
                        |> List.map snd

                    Error { Pos = q.MethodPos; Message = sprintf "%s; use %s%s" why (orList works) hint }
                | None ->
                    let k = obsIndex (targetObservable target)
                    // E[∂_γφ]: the observable's own dependence on γ (finite differences see it through the twins)
                    let explicitObs =
                        match meth with
                        | FiniteDifference _ -> -1
                        | _ when explicitTerm -> symIndex (Ir.derivative (Ir.Param p) phi)
                        | _ -> -1
                    let ta, t0, t1 = window over
                    let which = Array.IndexOf(wrt, p)

                    let kind, lo, hi, bins =
                        match target with
                        | TMean _ -> EstimateKind.Mean, 0.0, 0.0, 0
                        | TDensity (_, lo, hi, bins) -> EstimateKind.Density, lo, hi, bins
                        | _ -> failwith "the checker refuses responses of variance, covariance, quantiles and 2-D densities"

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
                            | DivergenceKernel ((AdaptiveRate | AdaptiveAlone), mode) ->
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
                            VariantPlus = vp, VariantMinus = vm, H = h, StationaryWindow = win, Burnin = cf.Settings.Burnin,
                            AdaptiveRate = (match meth with DivergenceKernel ((AdaptiveRate | AdaptiveAlone), _) -> true | _ -> false),
                            // the adaptive default of a mean carries a pathwise control variate wherever
                            // pathwise itself could answer the query (ResponsePlan.PathwiseControl)
                            PathwiseControl =
                                (match meth with
                                 | DivergenceKernel (AdaptiveRate, _) -> kind = EstimateKind.Mean && win = 0.0 && (refusal m ir target p false Pathwise).IsNone
                                 | _ -> false),
                            Explicit = explicitObs
                        )

                    let windows = defaultArg stationary []
                    let plans = if windows.IsEmpty then [ plan 0.0 ] else windows |> List.map plan
                    Ok(ResponseJob(plans, pname, methodText ir.Dim meth, windows))
            | QLyapunov k -> Ok(LyapunovJob k)
            | QWeight n -> err q (sprintf "'%s' needs a weight" n)
            | QAlignment _ when ir.Scheme <> Lower.EulerMaruyama ->
                err q (sprintf "alignment needs the divergence-kernel score, built on the Euler-Maruyama transition density, which scheme = %s does not have; use scheme = euler_maruyama" (Lower.schemeName ir.Scheme))
            | QAlignment (lo, hi, bins) ->
                if ir.NoiseDim = 0 then
                    err q (sprintf "'%s' has no noise (an ODE): its density is singular and has no score, so alignment is not defined; use lyapunov(k)" m.Name)
                elif degenerateNoise ir && not (Lower.additiveNoise ir) then
                    err q "the noise is degenerate and depends on the state, so the divergence-kernel score (with its default schedule) is not defined; alignment needs it"
                elif (singularStart m ir).IsSome then
                    err q (sprintf "the noise does not reach every state and the init of '%s' is not normal, so the law of the first steps is singular and has no score, which alignment needs; give every state a normal init" (singularStart m ir).Value)
                else
                    let mode = if ir.Dim <= 10 then Sde.Core.DkMode.Exact else Sde.Core.DkMode.Iterative
                    Ok(AlignmentJob(ResponsePlan(Kind = EstimateKind.Density, Lo = lo, Hi = hi, Bins = bins, Method = ResponseMethod.DivergenceKernel,
                                                 Rate = CovectorGrowth.Floor, AdaptiveRate = true, Mode = mode, Alignment = true, Burnin = cf.Settings.Burnin)))

        let jobs = cf.Queries |> List.map (fun q -> q, planOf q)

        // extrapolate = richardson: the kinds it cannot extrapolate are refused where they are written
        let richardsonErrors =
            if cf.Settings.Extrapolate <> "richardson" then []
            else
                cf.Queries
                |> List.choose (fun q ->
                    let kind =
                        match q.Query with
                        | QPlain (TMean _, _) -> "mean"
                        | QPlain (TSeries _, _) -> "mean_series"
                        | QPlain (TDensity _, _) -> "density"
                        | QWeight _ -> "mean"
                        | QPlain (TVariance _, _) -> "variance"
                        | QPlain (TCovariance _, _) -> "covariance"
                        | QPlain (TQuantile _, _) -> "quantile"
                        | QPlain (TDensity2 _, _) -> "density2d"
                        | QResponse _ -> "response"
                        | QLyapunov _ -> "lyapunov"
                        | QAlignment _ -> "alignment"
                        | QSamples _ -> "samples"
                        | QScore _ -> "score"
                    Bias.richardsonRefusal kind |> Option.map (fun m -> { Pos = q.Pos; Message = m }))

        let errors =
            schemeErrors cf ir @ richardsonErrors @ initLawErrors cf ir @ twinDomainErrors cf @ multilevelErrors cf @ (jobs |> List.choose (fun (_, r) -> match r with Error d -> Some d | _ -> None))
            |> List.sortBy (fun d -> d.Pos.Line, d.Pos.Col)

        // (the size needs every job planned: only when there is no other error)
        let sizeError =
            if errors.IsEmpty then jobs |> List.map (fun (q, r) -> q, (match r with Ok j -> j | Error _ -> failwith "unreachable")) |> resultSizeError cf
            else None

        match errors, sizeError with
        | [], Some d -> Error [ d ]
        | [], None ->
            let compiled = Compile.compileWith derivativeQuery.IsSome ir (obs.ToArray()) wrt

            Ok
                { File = cf
                  Compiled = compiled
                  Jobs = jobs |> List.map (fun (q, r) -> q, (match r with Ok j -> j | Error _ -> failwith "unreachable"))
                  Variants = List.ofSeq variants
                  Source = source }
        | errs, _ -> Error errs
    with
    | Tangent.TooManyDerivatives m
    | Lower.TooManyMilsteinTerms m
    | Lower.TooManyItoTerms m -> Error [ { Pos = cf.Model.Pos; Message = m } ]
    | ex -> Error [ { Pos = cf.Model.Pos; Message = sprintf "internal compiler error: %s" ex.Message } ]

/// The operations of an observable that give NaN or ±∞ on a finite state: the likely causes of
/// its non-finite samples, for the warning.
let rec private partialOps (e: CExpr) : string list =
    let sub (es: CExpr list) = es |> List.collect partialOps

    let cond c =
        let rec go c =
            match c with
            | CCmp (_, a, b) -> sub [ a; b ]
            | CAnd (a, b) | COr (a, b) -> go a @ go b
            | CNot a -> go a
        go c

    // an integer power is total, a negative one divides by 0 at 0, any other needs a base >= 0
    let power a b =
        match b with
        | Const c when c = Math.Round c && c >= 0.0 -> partialOps a
        | Const c when c = Math.Round c -> "a negative power of 0" :: partialOps a
        | _ -> "a power of a negative base, or of 0 with a negative exponent" :: sub [ a; b ]

    match e with
    | Func (Log, args) -> "log of a value <= 0" :: sub args
    | Func (Sqrt, args) -> "sqrt of a negative value" :: sub args
    | Func (Pow, [ a; b ]) -> power a b
    | Func (Exp, args) -> "exp overflowing" :: sub args
    | Func (Tan, args) -> "tan at a pole" :: sub args
    | Func (_, args) -> sub args
    | Power (a, b) -> power a b
    | Div (a, b) -> "a division by zero" :: sub [ a; b ]
    | Neg a -> partialOps a
    | Add (a, b) | Sub (a, b) | Mul (a, b) -> sub [ a; b ]
    | IfThen (c, a, b) -> cond c @ sub [ a; b ]
    | SumOver (_, _, body) | AvgOver (_, _, body) -> partialOps body
    | Const _ | Param _ | ParamAt _ | StateRef _ | Time | IndexValue _ -> []

/// The warnings of one result: non-finite samples of the observable (with their likely cause), and
/// a standard error that one path cannot give.
let private warningsOf (q: CheckedQuery) (kind: string) (ests: Estimate list) : string list =
    let observable =
        match q.Query with
        | QPlain (t, _) | QResponse (t, _, _, _, _) -> Some(targetObservable t)
        | QLyapunov _ | QAlignment _ | QSamples _ | QScore _ | QWeight _ -> None

    let why =
        match observable |> Option.map (fun e -> Frontend.onLargeStack (fun () -> partialOps e |> List.distinct)) with
        | Some (_ :: _ as ops) -> sprintf " (probably %s)" (String.Join(", or ", ops))
        | _ -> ""

    let nonFinite = ests |> List.map (fun e -> e.NonFinite) |> List.fold max 0L
    let count = (List.head ests).Count

    [ if nonFinite > 0L then
          match kind with
          | "density"
          | "density_response" ->
              sprintf "%d sample(s) of the observable were NaN%s: they fall in no bin and count neither below nor above%s"
                  nonFinite why (if kind = "density" then ", so the density integrates to less than 1" else "")
          | "response" ->
              sprintf "%d of %d paths gave a NaN or infinite sample%s, so the value is not finite" nonFinite count
                  (if why = "" then " (the observable or the response weight)" else why)
          | _ -> sprintf "%d of %d paths gave a NaN or infinite value of the observable%s, so the value is not finite" nonFinite count why
      if count < 2L then
          sprintf "the standard error needs at least 2 paths (this run has %d)" count ]

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
        | QPlain (TSeries _, _) -> "mean_series", 0.0, 0.0
        | QPlain (TDensity (_, lo, hi, _), _) -> "density", lo, hi
        | QResponse (TMean _, _, _, _, _) -> "response", 0.0, 0.0
        | QResponse (TDensity (_, lo, hi, _), _, _, _, _) -> "density_response", lo, hi
        | QPlain (TVariance _, _) -> "variance", 0.0, 0.0
        | QPlain (TCovariance _, _) -> "covariance", 0.0, 0.0
        | QPlain (TQuantile (_, _, lo, hi, _), _) -> "quantile", lo, hi
        | QPlain (TDensity2 (_, _, lo, hi, _, _, _, _), _) -> "density2d", lo, hi
        | QResponse _ -> failwith "the checker refuses responses of variance, covariance, quantiles and 2-D densities"
        | QLyapunov _ -> "lyapunov", 0.0, 0.0
        | QAlignment (lo, hi, _) -> "alignment", lo, hi
        | QSamples (_, None) -> "samples", 0.0, 0.0
        | QSamples (_, Some _) -> "samples_every", 0.0, 0.0
        | QScore (_, lo, hi, _) -> "score", lo, hi
        | QWeight n -> n, 0.0, 0.0

    let arr (a: float[]) = if isNull a then [||] else a
    // one path gives no standard error: NaN (n/a in the table, null in the JSON), never a binomial 0
    let few (e: Estimate) = e.Count < 2L
    let se (e: Estimate) = if few e then nan else e.StdErr
    let ses (e: Estimate) = if few e then Array.map (fun _ -> nan) (arr e.StdErrs) else arr e.StdErrs

    let kernelPlan =
        match used with
        | pl :: _ when pl.Method = ResponseMethod.DivergenceKernel && not pl.Alignment -> Some pl
        | _ -> None

    // the method text shows the rate in use when it was measured
    let withRate (m: string) =
        match kernelPlan with
        | Some pl when pl.AdaptiveRate ->
            sprintf "divergence_kernel(rate = %s (adaptive), mode = %s%s)" (rateText pl.Rate) (modeText pl.Mode) (if pl.Control >= 0 then ", control = pathwise" elif m.EndsWith "control = none)" then ", control = none" else "")
        | _ -> m

    let wrt, meth, windows, valueWindow =
        match job with
        | PlainJob _ | LyapunovJob _ | DerivedJob _ | SamplesJob _ | WeightJob _ -> None, None, [], None
        | ScoreJob _ -> None, Some(sprintf "divergence_kernel(rate = %s)" (rateText CovectorGrowth.Floor)), [], None
        | AlignmentJob _ ->
            // the score of the default schedule, with the rate measured for this set's model
            let rate = match used with pl :: _ -> pl.Rate | [] -> CovectorGrowth.Floor
            None, Some(sprintf "divergence_kernel(rate = %s (adaptive))" (rateText rate)), [], None
        | ResponseJob (_, wrt, m, wins) when wins.Length > 1 ->
            let m = withRate m
            let ws =
                List.map2
                    (fun w (e: Estimate) -> { Window = w; Value = (if isNull e.Values then e.Value else nan); StdErr = (if isNull e.Values then se e else nan)
                                              Values = arr e.Values; StdErrs = ses e })
                    wins ests
            // the largest window (the last written among equals): its weights cover the most correlation decay
            let top = wins |> List.indexed |> List.maxBy (fun (i, w) -> w, i) |> snd
            Some wrt, Some m, ws, Some top
        | ResponseJob (_, wrt, m, _) -> Some wrt, Some(withRate m), [], None

    let est =
        match valueWindow with
        | Some w -> ests[windows |> List.findIndexBack (fun x -> x.Window = w)]
        | None -> List.head ests

    { Query = q.Text
      Kind = kind
      Wrt = wrt
      Method = meth
      Value = est.Value
      StdErr = se est
      Grid = arr est.Grid
      GridY = (match q.Query with QPlain (TDensity2 (_, _, _, _, lo2, hi2, _, n2), _) -> Derived.centres lo2 hi2 n2 | _ -> [||])
      Values = arr est.Values
      StdErrs = ses est
      Lo = lo
      Hi = hi
      Below = est.Below
      Above = est.Above
      Count = est.Count
      NonFinite = ests |> List.map (fun e -> e.NonFinite) |> List.fold max 0L
      Rate = kernelPlan |> Option.filter (fun pl -> not pl.ConstantAlpha) |> Option.map (fun pl -> pl.Rate)
      RateSource = kernelPlan |> Option.filter (fun pl -> not pl.ConstantAlpha) |> Option.map (fun pl -> if pl.AdaptiveRate then "adaptive" else "explicit")
      CovectorGrowth = None
      Control = kernelPlan |> Option.filter (fun pl -> pl.Control >= 0) |> Option.map (fun _ -> "pathwise")
      ControlCoefficient =
          kernelPlan |> Option.filter (fun pl -> pl.Control >= 0) |> Option.map (fun _ -> est.ControlCoefficient)
      WeightKurtosis = kernelPlan |> Option.map (fun _ -> ests |> List.map (fun e -> e.WeightKurtosis) |> List.max)
      WeightMaxShare = kernelPlan |> Option.map (fun _ -> ests |> List.map (fun e -> e.WeightMaxShare) |> List.max)
      Windows = windows
      ValueWindow = valueWindow
      Weighted = false
      Resamplings = None
      Bias = Bias.ofEstimate est
      Extrapolated = est.Extrapolated
      Warnings =
        warningsOf q kind ests
        @ (match kernelPlan with
           | Some _ ->
               List.zip used ests
               |> List.filter (fun (_, e) -> weightsBlownUp e)
               |> List.truncate 1
               |> List.map (fun (pl, e) -> weightWarning pl e dt measured)
           | None -> []) }

/// A range of path numbers, the same in every parameter set: paths First .. First + Count − 1 (a shard).
type PathRange = { First: int64; Count: int64 }

/// One parameter set's exact sums over a path range (the CPU engines), to be merged with those of
/// the other ranges before they are rounded into estimates (see `reportOfSums`).
type SetSums =
    { Plain: Accumulators option
      Responses: ResponseAccumulators option
      Lyapunov: LyapunovAccumulators option
      /// The covector growth measured for the adaptive schedule (None when no plan needs it): it is
      /// measured on paths of its own (2^47 + p), so every shard finds the same bits.
      Growth: CovectorGrowthResult option
      /// Why the set has no sums (its paths blew up in this range); the run's other sets are kept.
      Failure: string option }

/// The message of a set that did not finish because the run was interrupted (SIGINT, SIGTERM).
let interruptedMessage = "the run was interrupted (SIGINT or SIGTERM) before this set finished; no results"

/// Runs one set, turning the failures that belong to it (its paths blew up, the run was interrupted)
/// into an Error, so that the sets that finished are still reported. Once cancelled, later sets are
/// not started.
let private guardSet (cancel: Threading.CancellationToken) (f: unit -> 'a) : Result<'a, exn> =
    if cancel.IsCancellationRequested then Error(OperationCanceledException(interruptedMessage) :> exn)
    else
        try Ok(f ()) with
        | :? SimulationFailedException as e -> Error(e :> exn)
        | :? OperationCanceledException -> Error(OperationCanceledException(interruptedMessage) :> exn)

/// The text of a set's failure, as the report carries it.
let failureText (e: exn) = e.Message

/// The finite-difference responses whose twins the coupled pairs run (`bias = estimate`, unweighted), with
/// their twins' plans (Bias.fdTwins): sampled by the pairs only, after the queries' own plain plans.
let biasTwins (p: Program) =
    let s = p.File.Settings
    if s.Bias <> "estimate" || s.Extrapolate = "richardson" || p.File.Weight.IsSome then []
    else p.Jobs |> List.choose (fun (q, j) -> match j with ResponseJob ([ rp ], _, _, _) when not (Bias.fdTwins rp).IsEmpty -> Some(q, Bias.fdTwins rp) | _ -> None)

/// The plans of a program by engine.
let plainPlans (p: Program) =
    let own = p.Jobs |> List.collect (fun (_, j) -> match j with PlainJob plan -> [ plan ] | DerivedJob plans -> plans | _ -> [])
    own @ (biasTwins p |> List.collect snd) |> List.toArray

/// The bias of a finite-difference response `q` from its twins' estimates (at the end of the plain ones).
let private twinBias (p: Program) (q: CheckedQuery) (pe: Estimate[]) =
    // each response's twins are two plans (γ + h, γ − h), in the order of biasTwins
    let twins = biasTwins p
    let h = p.Jobs |> List.tryPick (fun (q', j) -> match j with ResponseJob ([ rp ], _, _, _) when obj.ReferenceEquals(q', q) -> Some rp.H | _ -> None)
    match twins |> List.tryFindIndex (fun (q', _) -> obj.ReferenceEquals(q', q)), h with
    | Some k, Some h when pe.Length >= 2 * twins.Length ->
        let at = pe.Length - 2 * twins.Length + 2 * k
        Bias.fdBias h pe[at] pe[at + 1]
    | _ -> None

let responsePlans (p: Program) =
    let own =
        p.Jobs |> List.collect (fun (_, j) -> match j with ResponseJob (plans, _, _, _) -> plans | AlignmentJob plan -> [ plan ] | _ -> []) |> List.toArray
    // the pathwise twins of the controlled kernel plans, after the queries' own plans (whose estimates
    // the reports read by position; the twins' own estimates are not reported)
    let controlled = own |> Array.indexed |> Array.filter (fun (_, pl) -> pl.PathwiseControl) |> Array.map fst
    let own = own |> Array.mapi (fun i pl -> match Array.IndexOf(controlled, i) with -1 -> pl | k -> pl.WithControl(own.Length + k))
    Array.append own (controlled |> Array.map (fun i -> own[i].PathwiseTwin()))

/// The largest k of the `lyapunov(k)` queries (one run serves them all), 0 when there is none.
let lyapunovK (p: Program) =
    p.Jobs |> List.fold (fun acc (_, j) -> match j with LyapunovJob k -> max acc k | _ -> acc) 0

/// log|det J| (dense LU per step) only when the full spectrum is asked: its sum identity.
let lyapunovLogDet (p: Program) = lyapunovK p = p.Compiled.Ir.Dim

let private settingsWith (cancel: Threading.CancellationToken) (p: Program) (range: PathRange) (t: float) (threads: int) (progress: (float -> unit) option) =
    let s = p.File.Settings
    RunSettings(
        Paths = range.Count, FirstPath = range.First, Dt = s.Dt, T = t, Seed = s.Seed, Threads = threads,
        Progress = (match progress with Some f -> Action<float>(f) | None -> null),
        Cancel = cancel
    )

let private settingsOf p range t threads progress = settingsWith Threading.CancellationToken.None p range t threads progress

/// The plain engine's settings with the file's bias mode: `bias = estimate` (coupled pairs on a share of
/// the paths, spread over the whole run's path indices, so that shards merge to the unsplit run's bits) or
/// `extrapolate = richardson` (every path a coupled pair). The JIT warm-up (`warm`) sizes its pairs by its own paths.
let biasMode (s: Settings) =
    if s.Extrapolate = "richardson" then BiasMode.Richardson
    elif s.Bias = "estimate" then BiasMode.Estimate
    else BiasMode.Off

let private withBias (p: Program) (twins: obj[]) (warm: bool) (range: PathRange) (rs: RunSettings) =
    let s = p.File.Settings
    RunSettings(
        Paths = rs.Paths, FirstPath = rs.FirstPath, Dt = rs.Dt, T = rs.T, Seed = rs.Seed, Threads = rs.Threads,
        Progress = rs.Progress, Cancel = rs.Cancel, MemoryLimit = rs.MemoryLimit,
        Bias = biasMode s, TotalPaths = (if warm then range.First + range.Count else s.Paths), WeakOrder = Checker.weakOrder s.Scheme, IntegralNormals = (s.Scheme = "sra"),
        PairTwins = (if (biasTwins p).IsEmpty then null else twins)
    )

/// The results' discretisation errors once every estimate is in: the kinds without one get `bias: null`
/// with the reason, and a bias over twice the standard error its warning (naming a dt).
let finishBias (p: Program) (backend: string) (r: RunReport) : RunReport =
    let s = p.File.Settings
    if s.Bias <> "estimate" && s.Extrapolate <> "richardson" then r
    else
        let order = Checker.weakOrder s.Scheme
        let fix (q: QueryOutcome) =
            let q =
                if s.Bias = "estimate" && not q.Extrapolated && q.Bias.IsNone then
                    { q with Bias = Bias.missingReasonOf backend q |> Option.map biasNone }
                else q
            match Bias.warning s.Dt s.T order q with
            | Some w -> { q with Warnings = q.Warnings @ [ w ] }
            | None -> q
        { r with Sets = r.Sets |> List.map (fun set -> { set with Results = set.Results |> List.map fix }) }

/// The base model of a set and its finite-difference twins.
let private instances (p: Program) (values: float[]) =
    let baseModel = p.Compiled.Instance values

    let variants =
        p.Variants
        |> List.map (fun v ->
            let vs = Array.copy values
            vs[v.Param] <- vs[v.Param] + v.Shift
            p.Compiled.Instance vs)
        |> List.toArray

    baseModel, variants

/// The covector growth rate of each set's model (the adaptive default schedule), measured on demand:
/// untimed, deterministic (its own paths of the run's seed, one thread), whatever the path range.
let private growthMeasures (p: Program) =
    let s = p.File.Settings
    p.File.Sets
    |> List.map (fun set ->
        lazy
            (let bm, _ = instances p set.Values
             ModelRunner.CovectorGrowth(p.Compiled.Type, bm, p.Compiled.Structure, settingsOf p { First = 0L; Count = s.Paths } s.T 1 None)))
    |> List.toArray

/// Does a plan need the measured rate?
let private anyAdaptive (p: Program) = responsePlans p |> Array.exists (fun pl -> pl.AdaptiveRate)

/// The response plans of a set, with its measured rate in the adaptive ones; where the measured
/// tangent growth says the pathwise tangent explodes before T (chaos), the control variates are
/// dropped and their pathwise twins made inactive (the plan list keeps its length).
let private withRates (t: float) (responses: ResponsePlan[]) (growth: CovectorGrowthResult option) =
    match growth with
    | Some g ->
        let r = CovectorGrowth.RateFor g
        let keep = CovectorGrowth.TangentUseful(g, t)
        let twins = responses |> Array.choose (fun pl -> if pl.Control >= 0 then Some pl.Control else None) |> Set.ofArray
        responses
        |> Array.mapi (fun i pl ->
            let pl = if pl.AdaptiveRate then pl.WithRate r else pl
            if keep then pl
            elif pl.Control >= 0 then pl.WithControl(-1)
            elif twins.Contains i then pl.Deactivated()
            else pl)
    | None -> responses

/// A warning for the exponents 1..k whose average over [burnin, T] may still carry the initial frame's
/// transient (docs/lyapunov.md): column c of the frame approaches its Lyapunov vector like e^{−g t}, g the
/// smaller gap to the neighbouring exponents (those the run measured). What the log-diagonals sum up over
/// [b, T] is off by the change of the frame's log-overlap with the Lyapunov vectors, which is left at
/// about e^{−g b} after the burn-in b (a slowly aligning column, small g, also mixes exponents that
/// differ by little), so the exponent is off by about e^{−g b} / (T − b) (docs/lyapunov.md: two initial
/// frames moved λ2 of the `Every` file by 0.18 where this says at most 0.55; Lorenz-96 with 40 states showed
/// nothing beyond the noise, 0.007, between burn-ins 2 and 60, where this says 0.018 and the former
/// e^{−g b} / (g (T − b)) said up to 0.31). Where it passes the exponent's standard error (and 1e-4), say
/// so with the burn-in that would make it smaller. Exponents that do not separate (a gap ≤ 0) are not judged.
let lyapunovTransient (exps: float[]) (ses: float[]) (k: int) (burnin: float) (t: float) : string list =
    let w = t - burnin
    let flagged =
        [ for c in 0 .. k - 1 do
              let gaps =
                  [ if c > 0 then exps[c - 1] - exps[c]
                    if c + 1 < exps.Length then exps[c] - exps[c + 1] ]
              match gaps with
              | [] -> ()
              | _ ->
                  let g = List.min gaps
                  if g > 0.0 && w > 0.0 then
                      let bound = exp (-g * burnin) / w
                      let floor = max ses[c] 1e-4
                      if bound > floor then
                          // the burn-in at which e^{−g b} / w falls to the standard error (w kept)
                          let need = log (1.0 / (w * floor)) / g
                          yield c, g, bound, need ]
    match flagged with
    | [] -> []
    | _ ->
        let names = flagged |> List.map (fun (c, _, _, _) -> sprintf "λ%d" (c + 1)) |> String.concat ", "
        let c, g, bound, _ = flagged |> List.maxBy (fun (_, _, b, _) -> b)
        let need = flagged |> List.map (fun (_, _, _, n) -> n) |> List.max
        [ sprintf "%s may still depend on the initial frame: with burnin = %g the transient left in λ%d can be up to about %s per unit time (e^(-g burnin) / (T - burnin), g = %s its gap to a neighbour), more than its standard error; a burnin of about %s, with T beyond it, would bring it under (docs/lyapunov.md)"
              names burnin (c + 1) (bound.ToString("G3", Globalization.CultureInfo.InvariantCulture))
              (g.ToString("G3", Globalization.CultureInfo.InvariantCulture)) ((ceil (need * 10.0) / 10.0).ToString("G4", Globalization.CultureInfo.InvariantCulture)) ]

/// Student's t at 0.975 with 1 to 8 degrees of freedom: the half-width of a 95% interval in standard errors.
let private t975 = [| 12.7062; 4.3027; 3.1824; 2.7764; 2.5706; 2.4469; 2.3646; 2.3060 |]

/// A warning where Lyapunov exponents' standard errors come from fewer than 10 paths (their spread over
/// the paths): with n − 1 degrees of freedom the error is itself uncertain, and a 95% interval is ± t se
/// with Student's t rather than ± 1.96 se; one path has no error at all (its 0 is not an error bar).
/// Lyapunov runs are where few paths are common (a long T each); an ODE with a deterministic init, whose
/// paths all agree, is not flagged.
let lyapunovFewPaths (paths: int64) (ses: float[]) : string list =
    if paths = 1L then [ "one path: the standard errors (0) are not error bars; run at least 2 paths (10 or more for an error that is itself reliable)" ]
    elif paths < 10L && ses |> Array.exists (fun s -> s > 0.0) then
        [ sprintf "the standard errors come from the spread of %d paths' exponents: a 95%% interval is ± %.2f standard errors (Student's t with %d degrees of freedom, not ± 1.96), and the errors themselves are uncertain; 10 or more paths make them reliable (docs/lyapunov.md)"
              paths t975[int paths - 2] (paths - 1L) ]
    else []

/// The report from each set's estimates (plain, responses, Lyapunov): one code path for a run and
/// for a merge of shards, so that the two give the same JSON.
let rec private assemble (p: Program) (backend: string) (growth: CovectorGrowthResult option[]) (growthOf: Lazy<CovectorGrowthResult>[])
                     (estimates: Result<Estimate[] * Estimate[] * LyapunovResult option, string> list) (seconds: float) : RunReport =
    assembleWeighted p backend growth growthOf estimates (Array.create estimates.Length None) seconds |> finishBias p backend

/// `assemble`, with each set's weighted run (None: unweighted) for the weighted outcomes.
and private assembleWeighted (p: Program) (backend: string) (growth: CovectorGrowthResult option[]) (growthOf: Lazy<CovectorGrowthResult>[])
                     (estimates: Result<Estimate[] * Estimate[] * LyapunovResult option, string> list) (weighted: WeightedResult option[]) (seconds: float) : RunReport =
    let s = p.File.Settings
    let responses = responsePlans p
    let ignoreRate () = nan

    let reports =
        List.zip p.File.Sets estimates
        |> List.mapi (fun i (set, outcome) ->
          let pars = List.zip (p.File.Model.Params |> List.map (fun q -> q.Name)) (Array.toList set.Values)

          match outcome with
          | Error message -> { Name = set.Name; Params = pars; Results = []; Failure = Some message }
          | Ok (pe, re, le) ->
            let mutable pi = 0
            let mutable ri = 0
            let used = withRates p.File.Settings.T responses growth[i]
            let measured () = CovectorGrowth.RateFor(growthOf[i].Force())

            let results =
                p.Jobs
                |> List.map (fun (q, job) ->
                    match job with
                    | PlainJob _ ->
                        pi <- pi + 1
                        let o = outcomeOf q job [] s.Dt ignoreRate [ pe[pi - 1] ]
                        match weighted[i], p.File.Weight with
                        | Some wr, Some w -> { o with Weighted = true; Warnings = o.Warnings @ Weighted.estimateWarnings w wr (pi - 1) }
                        | _ -> o
                    | WeightJob name ->
                        let wr = Option.get weighted[i]
                        let est =
                            if name = "log_normalizer" then Estimate(Value = wr.LogNormalizer, StdErr = wr.LogNormalizerStdErr, Count = wr.Paths)
                            else Estimate(Value = wr.FinalEss, StdErr = nan, Count = wr.Paths)
                        let o = outcomeOf q job [] s.Dt ignoreRate [ est ]
                        { o with
                            Resamplings = (if name = "ess" then Some wr.Resamplings else None)
                            Warnings =
                                if name <> "log_normalizer" then []
                                else Weighted.normalizerWarnings (Option.get p.File.Weight) wr }
                    | DerivedJob plans ->
                        let ests = [ for k in 0 .. plans.Length - 1 -> pe[pi + k] ]
                        pi <- pi + plans.Length
                        let est, warns = Derived.estimate q.Query ests
                        let o = outcomeOf q job [] s.Dt ignoreRate [ est ]
                        match weighted[i], p.File.Weight with
                        | Some wr, Some w ->
                            let own = [ pi - plans.Length .. pi - 1 ] |> List.collect (Weighted.estimateWarnings w wr) |> List.distinct
                            { o with Weighted = true; Warnings = o.Warnings @ warns @ own }
                        | _ -> { o with Warnings = o.Warnings @ warns }
                    | ResponseJob (plans, _, _, _) ->
                        let ests = [ for k in 0 .. plans.Length - 1 -> re[ri + k] ]
                        let pls = [ for k in 0 .. plans.Length - 1 -> used[ri + k] ]
                        ri <- ri + plans.Length
                        let o = outcomeOf q job pls s.Dt measured ests
                        let o = match twinBias p q pe with Some b when not o.Extrapolated -> { o with Bias = Some b } | _ -> o
                        if pls.Head.AdaptiveRate then { o with CovectorGrowth = growth[i] |> Option.map (fun g -> g.Rate) } else o
                    | AlignmentJob _ ->
                        ri <- ri + 1
                        outcomeOf q job [ used[ri - 1] ] s.Dt measured [ re[ri - 1] ]
                    | SamplesJob _
                    | ScoreJob _ ->
                        // filled by fillSamples (a recorded run after the others)
                        { outcomeOf q job [] s.Dt ignoreRate [ Estimate(Value = nan, StdErr = nan) ] with Warnings = [] }
                    | LyapunovJob k ->
                        let r = Option.get le
                        let full = k = r.Exponents.Length && not (Double.IsNaN r.LogDetRate)
                        let ses = Array.sub r.StdErrs 0 k
                        let o =
                            outcomeOf q job [] s.Dt ignoreRate [ Estimate(Value = (if full then r.LogDetRate else nan), StdErr = (if full then r.LogDetStdErr else nan),
                                                       Grid = Array.init k (fun c -> float (c + 1)), Values = Array.sub r.Exponents 0 k,
                                                       StdErrs = ses, Count = r.Paths) ]
                        { o with Warnings = o.Warnings @ lyapunovFewPaths r.Paths ses @ lyapunovTransient r.Exponents r.StdErrs k s.Burnin s.T })

            { Name = set.Name
              Params = pars
              Results = results
              Failure = None })

    let steps = float (RunSettings(Dt = s.Dt, T = s.T).Steps)

    { Model = p.File.Model.Name
      Source = p.Source
      Settings =
        { Paths = s.Paths
          Dt = s.Dt
          T = s.T
          Seed = s.Seed
          Scheme = s.Scheme
          Backend = backend }
      Sets = reports
      Warnings = p.File.Warnings |> List.map (Diagnostics.warningLine p.Source)
      Seconds = seconds
      // the sets that finished (a failed set's paths did not all run); a file without queries
      // simulates no paths: no throughput to claim
      PathStepsPerSecond =
        if p.Jobs.IsEmpty then 0.0
        else float s.Paths * steps * float (reports |> List.filter (fun r -> r.Failure.IsNone) |> List.length) / max seconds 1e-9 }

/// The `samples(...)` results of a report: one recorded run of every set on the report's backend (the CPU
/// engine, or the tangent kernel of ilgpu-cpu / cuda: the same numbers; the same paths as the other queries:
/// same seed and path numbers), each path's observables at T row-major in `Values` (paths × observables),
/// `Count` = paths. A report without them is returned as is. What a GPU backend cannot record is refused
/// before any simulation (`recordRefusal`), not run on the CPU under the GPU's name.
let rec fillSamples (p: Program) (threads: int) (report: RunReport) : RunReport =
    fst (fillSamplesWith Threading.CancellationToken.None p threads report)

/// `fillSamples`, cancellable; a set whose recorded run fails (or is interrupted) is reported failed,
/// and its failure returned.
and fillSamplesWith (cancel: Threading.CancellationToken) (p: Program) (threads: int) (report: RunReport) : RunReport * exn list =
    let recorded = p.Jobs |> List.exists (fun (_, j) -> match j with SamplesJob _ | ScoreJob _ -> true | _ -> false)

    if not recorded then report, []
    else
        let s = p.File.Settings
        let failures = Collections.Generic.List<exn>()
        let runner =
            match report.Settings.Backend with
            | "ilgpu-cpu"
            | "cuda" -> Gpu.GpuRunner.RecordFor(p.Compiled.Type, Gpu.GpuRunner.Parse report.Settings.Backend)
            | _ -> ModelRunner.For p.Compiled.Type :?> IRecordRunner

        let scorePlans = p.Jobs |> List.choose (fun (_, j) -> match j with ScoreJob (_, _, _, _, pl) -> Some pl | _ -> None)
        // one covector serves every score query (their plans share the schedule): one plan suffices
        let plans = scorePlans |> List.truncate 1 |> List.toArray

        let sets =
            List.zip p.File.Sets report.Sets
            |> List.map (fun (set, sr) ->
              if sr.Failure.IsSome then sr
              else
              match guardSet cancel (fun () ->
                let settingsOf = settingsWith cancel
                let bm, _ = instances p set.Values
                let atT = p.Jobs |> List.exists (fun (_, j) -> match j with SamplesJob (_, 0L) | ScoreJob _ -> true | _ -> false)
                let record = PathRecord(WithObservables = true, WithNu = not scorePlans.IsEmpty)
                if atT then runner.RunRecorded(bm, p.Compiled.Structure, settingsOf p { First = 0L; Count = s.Paths } s.T threads None, plans, record)
                let n = int record.Paths

                let results =
                    List.map2
                        (fun (_, job) (o: QueryOutcome) ->
                            match job with
                            | SamplesJob (obs, every) when every > 0L ->
                                // a trajectory: a recorded run of its own, the same paths (no plans, as samples at T)
                                let tr = PathRecord(TrajectoryObservables = obs, EverySteps = every)
                                runner.RunRecorded(bm, p.Compiled.Structure, settingsOf p { First = 0L; Count = s.Paths } s.T threads None, [||], tr)
                                let k, times, n = obs.Length, tr.TrajectoryTimes, int tr.Paths
                                let values = tr.Trajectory
                                let bad =
                                    Seq.init n id
                                    |> Seq.filter (fun r -> Seq.init (times * k) (fun c -> values[(r * times * k) + c]) |> Seq.exists (Double.IsFinite >> not))
                                    |> Seq.length

                                { o with
                                    // the engine's times n·dt, to 12 digits (0.35, not 0.35000000000000003)
                                    Grid = Array.init times (fun i -> Double.Parse((float (int64 i * every) * s.Dt).ToString("G12", Globalization.CultureInfo.InvariantCulture), Globalization.CultureInfo.InvariantCulture))
                                    Values = values
                                    Count = int64 n
                                    NonFinite = int64 bad
                                    Warnings =
                                        if bad > 0 then [ sprintf "%d of %d paths have a NaN or infinite value of an observable at some time (written as empty cells)" bad n ] else [] }
                            | SamplesJob (obs, _) ->
                                let k = obs.Length
                                let values = Array.init (n * k) (fun i -> record.Obs[(i / k) * record.NObs + obs[i % k]])
                                let bad = Seq.init n id |> Seq.filter (fun r -> Seq.init k (fun c -> values[r * k + c]) |> Seq.exists (Double.IsFinite >> not)) |> Seq.length

                                { o with
                                    Values = values
                                    Count = int64 n
                                    NonFinite = int64 bad
                                    Warnings =
                                        if bad > 0 then [ sprintf "%d of %d paths have a NaN or infinite value of an observable at T (written as empty cells)" bad n ] else [] }
                            | ScoreJob (comp, lo, hi, bins, _) ->
                                // per bin of x_comp: the mean of ν_comp and its standard error (paths in the bin)
                                let d = record.D
                                let sum, sum2, cnt = Array.zeroCreate bins, Array.zeroCreate bins, Array.zeroCreate bins
                                let mutable below, above, bad = 0L, 0L, 0L

                                for r in 0 .. n - 1 do
                                    let x, v = record.X[r * d + comp], record.Nu[r * d + comp]

                                    if not (Double.IsFinite x && Double.IsFinite v) then bad <- bad + 1L
                                    elif x < lo then below <- below + 1L
                                    elif not (x < hi) then above <- above + 1L
                                    else
                                        let b = min (bins - 1) (int ((x - lo) / (hi - lo) * float bins))
                                        sum[b] <- sum[b] + v
                                        sum2[b] <- sum2[b] + v * v
                                        cnt[b] <- cnt[b] + 1L

                                let mean b = if cnt[b] > 0L then sum[b] / float cnt[b] else nan

                                let se b =
                                    if cnt[b] > 1L then
                                        let m = mean b
                                        sqrt (max 0.0 (sum2[b] / float cnt[b] - m * m) * float cnt[b] / float (cnt[b] - 1L) / float cnt[b])
                                    else nan

                                let width = (hi - lo) / float bins
                                let thin = Seq.init bins id |> Seq.filter (fun b -> cnt[b] < 2L) |> Seq.length

                                { o with
                                    Grid = Array.init bins (fun b -> lo + (float b + 0.5) * width)
                                    Values = Array.init bins mean
                                    StdErrs = Array.init bins se
                                    Below = below
                                    Above = above
                                    Count = int64 n
                                    NonFinite = bad
                                    Warnings =
                                        [ if thin > 0 then sprintf "%d of %d bins hold fewer than 2 paths: no estimate there (nan); narrow the range or add paths" thin bins
                                          if bad > 0L then sprintf "%d of %d paths have a non-finite state or covector at T" bad n ] }
                            | _ -> o)
                        p.Jobs sr.Results

                { sr with Results = results }) with
              | Ok r -> r
              | Error e ->
                  failures.Add e
                  { sr with Results = []; Failure = Some(failureText e) })

        { report with Sets = sets }, List.ofSeq failures

/// Whether the tangent kernel's queries run on cuda (DSL_CUDA_TANGENT=1): refused there by default until the
/// kernel is checked on a device (`runKeeping`, `recordRefusal`, `Fit`'s backend).
let tangentOnCuda () = Environment.GetEnvironmentVariable "DSL_CUDA_TANGENT" = "1"

/// Why `backend` (ilgpu-cpu or cuda) cannot record a `samples(...)` / `score(...)` query (None: it can): the
/// recorded run is the tangent kernel's, so it shares that kernel's refusal (on cuda every tangent-kernel query
/// until DSL_CUDA_TANGENT=1, see `runKeeping`).
let recordRefusal (p: Program) (backend: string) (job: QueryJob) : string option =
    match job with
    | SamplesJob _
    | ScoreJob _ when backend = "cuda" && not (tangentOnCuda ()) ->
        Some "per-path values are recorded by the tangent kernel, which the cuda backend does not run yet (DSL_CUDA_TANGENT=1 lifts the refusal, to check it on a GPU)"
    | _ -> None

/// A weighted program: every set's population on the weighted engine, its steps on the CPU's threads or
/// on the weighted step kernel of an ILGPU backend (the population operations on the host either way).
let private runWeighted (p: Program) (opts: RunOptions) (w: WeightSpec) : RunReport * exn list =
    let s = p.File.Settings
    // The weighted step kernel equals the CPU engine bit for bit on ILGPU's CPU accelerator but has not
    // run on a CUDA device yet: cuda refuses it unless DSL_CUDA_WEIGHTED=1 (core/Gpu/README.md), and
    // `auto` keeps the CPU engine.
    let weightedOnCuda = Environment.GetEnvironmentVariable "DSL_CUDA_WEIGHTED" = "1"

    let backend =
        match opts.Backend with
        | "auto" when weightedOnCuda -> Gpu.GpuRunner.ResolveAuto()
        | "auto" -> "cpu"
        | b -> b

    if backend = "cuda" && not weightedOnCuda then
        raise (
            NotSupportedException(
                sprintf "%d:%d: 'weight %s' makes a weighted (Feynman-Kac) model, whose step kernel the cuda backend cannot run yet: it equals the CPU engine on ilgpu-cpu but has not been checked on a device; use --backend cpu or ilgpu-cpu (DSL_CUDA_WEIGHTED=1 lifts the refusal, to check it on a GPU)"
                    w.Pos.Line w.Pos.Col w.Name
            )
        )

    let plain = plainPlans p

    let runner =
        match backend with
        | "ilgpu-cpu"
        | "cuda" -> Gpu.GpuRunner.WeightedFor(p.Compiled.Type, Gpu.GpuRunner.Parse backend)
        | _ -> WeightedRunner.For p.Compiled.Type
    let wp = Weighted.weightPlan p.File w
    let sets = p.File.Sets
    let nSets = List.length sets

    let runSet (i: int) (values: float[]) (range: PathRange) (threads: int) (progress: bool) =
        let bm, _ = instances p values
        let prog = if progress then opts.Progress |> Option.map (fun f -> fun x -> f ((float i + x) / float nSets)) else None
        runner.Run(bm, settingsWith (if progress then opts.Cancel else Threading.CancellationToken.None) p range s.T threads prog, wp, plain)

    (try runSet 0 (List.head sets).Values { First = 0L; Count = 2L } 1 false |> ignore with :? SimulationFailedException -> ())
    let sw = Stopwatch.StartNew()
    let results = sets |> List.mapi (fun i set -> guardSet opts.Cancel (fun () -> runSet i set.Values { First = 0L; Count = s.Paths } opts.Threads true))
    let estimates = results |> List.map (Result.map (fun r -> r.Estimates, [||], None) >> Result.mapError failureText)
    let failures = results |> List.choose (function Error e -> Some e | Ok _ -> None)
    let richardson = s.Extrapolate = "richardson"

    if not richardson && s.Bias <> "estimate" then
        assembleWeighted p backend (Array.create nSets None) (growthMeasures p) estimates (results |> List.map Result.toOption |> List.toArray) sw.Elapsed.TotalSeconds, failures
    else
        // the discretisation error: resampling couples every path of the population, so no pair of paths
        // can be coupled; an independent run at dt/2 (its own seed) on a tenth of the paths (it costs twice a
        // path: 20%, within the default's quarter, docs/discretisation.md) for the estimate, on all of them for Richardson
        let fineSettings = { s with Dt = s.Dt / 2.0; Paths = (if richardson then s.Paths else max 2L ((s.Paths + 9L) / 10L)); Seed = s.Seed ^^^ 0x5DEECE66DUL }
        let pf = { p with File = { p.File with Settings = fineSettings } }
        let wpf = Weighted.weightPlan pf.File w
        let fine =
            sets
            |> List.mapi (fun i set ->
                match results[i] with
                | Error _ -> None
                | Ok _ ->
                    let bm, _ = instances pf set.Values
                    guardSet opts.Cancel (fun () -> runner.Run(bm, settingsWith opts.Cancel pf { First = 0L; Count = fineSettings.Paths } s.T opts.Threads None, wpf, plain))
                    |> Result.toOption)
        let seconds = sw.Elapsed.TotalSeconds
        let coarseReport = assembleWeighted p backend (Array.create nSets None) (growthMeasures p) estimates (results |> List.map Result.toOption |> List.toArray) seconds
        let fineEstimates = fine |> List.map (function Some r -> Ok(r.Estimates, [||], None) | None -> Error "no half-step run")
        let fineReport = assembleWeighted pf backend (Array.create nSets None) (growthMeasures pf) fineEstimates (List.toArray fine) seconds
        let order = Checker.weakOrder s.Scheme
        let sets' =
            List.map2
                (fun (c: SetReport) (f: SetReport) ->
                    if c.Failure.IsSome || f.Failure.IsSome || c.Results.Length <> f.Results.Length then
                        { c with Results = c.Results |> List.map (fun q -> if richardson || q.Kind = "ess" then q else { q with Bias = Some(biasNone "the independent run at dt/2 did not finish") }) }
                    else { c with Results = List.map2 (Bias.combineIndependent richardson order) c.Results f.Results })
                coarseReport.Sets fineReport.Sets
        finishBias p backend { coarseReport with Sets = sets' }, failures

/// Run every parameter set of the program: the report, whose sets that failed (their paths blew up,
/// or the run was interrupted) carry their `Failure` and no results, and those failures. Throws
/// RunTooLargeException, and NotSupportedException for a query the backend cannot run.
let rec runKeeping (p: Program) (opts: RunOptions) : RunReport * exn list =
    match p.File.Settings.Multilevel with
    | Some ml ->
        // never a plain run of a file that asked for an accuracy
        raise (NotSupportedException(sprintf "%d:%d: 'accuracy' makes a multilevel run: run it with Multilevel.run (the CLI and the API's Run do)" ml.Pos.Line ml.Pos.Col))
    | None ->
    match p.File.Weight with
    | Some w -> runWeighted p opts w
    | None ->
    let s = p.File.Settings
    // backends: "cpu" (the CPU engine), "ilgpu-cpu" / "cuda" (the ILGPU kernels), "auto" (CUDA if present, else cpu)
    // The tangent kernel (divergence kernel, likelihood ratio, pathwise, alignment) equals the CPU engine
    // bit for bit on ILGPU's CPU accelerator, but a device check on an NVIDIA H100 (2026-11-26,
    // tests/perf/gpu.sh) gave wrong results with it (zeros or stale values), while the plain, finite-
    // difference and Lyapunov kernels agreed with the CPU engine. Until that is found, CUDA refuses those
    // queries (DSL_CUDA_TANGENT=1 lifts the refusal, for debugging on a GPU).
    let tangentOnCuda = tangentOnCuda ()

    let gpuSupports (b: string) (pl: ResponsePlan) =
        Gpu.GpuRunner.Supports pl
        && (b <> "cuda" || tangentOnCuda || pl.Method = ResponseMethod.FiniteDifference)

    let gpuCanRunAll =
        p.Jobs
        |> List.forall (fun (_, j) ->
            match j with
            | ResponseJob (plans, _, _, _) -> plans |> List.forall (gpuSupports "cuda")
            | AlignmentJob _ -> tangentOnCuda
            | SamplesJob _
            | ScoreJob _ -> (recordRefusal p "cuda" j).IsNone
            | _ -> true)

    // `auto` takes CUDA only when a device is present and has a kernel for every query
    let backend =
        if opts.Backend = "auto" then
            (match Gpu.GpuRunner.ResolveAuto() with
             | "cuda" when not gpuCanRunAll -> "cpu"
             | b -> b)
        else opts.Backend

    let runner =
        match backend with
        | "ilgpu-cpu"
        | "cuda" ->
            // the GPU kernels run no coupled pairs: an extrapolation there would be the plain value mislabelled
            if s.Extrapolate = "richardson" then
                raise (NotSupportedException(sprintf "%d:%d: extrapolate = richardson runs coupled pairs on the CPU engine only; use --backend cpu" s.ExtrapolatePos.Line s.ExtrapolatePos.Col))
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
                | SamplesJob _
                | ScoreJob _ when (recordRefusal p backend j).IsSome ->
                    raise (NotSupportedException(sprintf "%d:%d: '%s': %s; use --backend cpu" q.Pos.Line q.Pos.Col q.Text (recordRefusal p backend j).Value))
                | _ -> ()

            Gpu.GpuRunner.For(p.Compiled.Type, Gpu.GpuRunner.Parse backend)
        | _ -> ModelRunner.For p.Compiled.Type

    let plain = plainPlans p
    let responses = responsePlans p
    let lyapunovK = lyapunovK p
    let sets = p.File.Sets
    let nSets = List.length sets
    let engines = (if plain.Length > 0 then 1 else 0) + (if responses.Length > 0 then 1 else 0) + (if lyapunovK > 0 then 1 else 0)
    let all = { First = 0L; Count = s.Paths }

    let growthOf = growthMeasures p
    // measured now, outside the timing, when a plan needs it; otherwise only if a warning asks for it
    let growth = growthOf |> Array.map (fun g -> if anyAdaptive p then Some(g.Force()) else None)

    let runSet (i: int) (values: float[]) (range: PathRange) (t: float) (threads: int) (progress: bool) =
        let bm, vs = instances p values
        let responses = withRates p.File.Settings.T responses growth[i]

        let prog k =
            if progress then
                opts.Progress |> Option.map (fun f -> fun x -> f ((float (i * engines + k) + x) / float (nSets * engines)))
            else None

        // the warm-up (progress = false) is not cancelled: a signal during it stops the first set instead
        let settingsOf = settingsWith (if progress then opts.Cancel else Threading.CancellationToken.None)
        let pe = if plain.Length > 0 then runner.Run(bm, withBias p (Array.map box vs) (not progress) range (settingsOf p range t threads (prog 0)), plain) else [||]

        let re =
            if responses.Length > 0 then
                runner.RunResponses(bm, vs, p.Compiled.Structure, settingsOf p range t threads (prog (engines - 1)), responses)
            else [||]

        let le =
            if lyapunovK > 0 then
                let ly =
                    match backend with
                    | "ilgpu-cpu"
                    | "cuda" -> Gpu.GpuRunner.LyapunovFor(p.Compiled.Type, Gpu.GpuRunner.Parse backend)
                    | _ -> LyapunovRunner.For p.Compiled.Type
                // the JIT warm-up (progress = false) needs only a few steps past the burn-in, not the whole run
                // (on the grid: the engine takes whole numbers of steps only)
                let t = if progress then t else min t ((ceil (s.Burnin / s.Dt - 1e-9) + 10.0) * s.Dt)
                Some(ly.Run(bm, p.Compiled.Structure, settingsOf p range t threads (prog (engines - 1)), lyapunovK, s.Burnin, lyapunovLogDet p))
            else None

        pe, re, le

    // JIT warm-up on a couple of paths, outside the timing
    // (a blow-up there is left to the run itself, whose message counts the paths asked for, not these two)
    (try runSet 0 (List.head sets).Values { First = 0L; Count = 2L } s.T 1 false |> ignore with :? SimulationFailedException -> ())
    let sw = Stopwatch.StartNew()
    let outcomes = sets |> List.mapi (fun i set -> guardSet opts.Cancel (fun () -> runSet i set.Values all s.T opts.Threads true))
    let estimates = outcomes |> List.map (Result.mapError failureText)
    let report = assemble p backend growth growthOf estimates sw.Elapsed.TotalSeconds
    let filled, recordFailures = fillSamplesWith opts.Cancel p opts.Threads report
    let failures = (outcomes |> List.choose (function Error e -> Some e | Ok _ -> None)) @ recordFailures

    if obj.ReferenceEquals(filled, report) then report, failures
    else
        // the recorded pass of samples and score queries is simulation too: in the timing
        let seconds = sw.Elapsed.TotalSeconds
        { filled with Seconds = seconds; PathStepsPerSecond = report.PathStepsPerSecond * report.Seconds / max seconds 1e-9 }, failures

/// Run every parameter set of the program (the embedding API): the report when every set finished;
/// otherwise the first failure is thrown (SimulationFailedException, OperationCanceledException), as
/// is RunTooLargeException.
and run (p: Program) (opts: RunOptions) : RunReport =
    match runKeeping p opts with
    | report, [] -> report
    | _, e :: _ -> Runtime.ExceptionServices.ExceptionDispatchInfo.Throw e; Unchecked.defaultof<_>

/// Run paths `range` of every parameter set on the CPU engines and return their exact sums (a shard
/// of a run; `reportOfSums` turns the merged sums of all shards into the run's report, bit for bit)
/// and the simulation's seconds. Path p draws the same numbers as path p of the whole run: the Philox
/// streams are keyed by the global path number.
let runShard (p: Program) (opts: RunOptions) (range: PathRange) : SetSums list * float =
    // every path's values cannot be merged from exact sums: refused (a located input error, exit 2)
    for (q, j) in p.Jobs do
        match j with
        | SamplesJob _
        | ScoreJob _ ->
            raise (NotSupportedException(sprintf "%d:%d: '%s' is computed from every path's values, which a shard cannot do yet; run it without --shard" q.Pos.Line q.Pos.Col q.Text))
        | _ -> ()

    match p.File.Settings.Multilevel with
    | Some ml ->
        // the level plan (samples per level) is chosen from the sums of every level as the run goes
        raise (NotSupportedException(sprintf "%d:%d: '%s' makes a multilevel run, which chooses its samples per level from all the samples so far, so its shards need a fixed level plan: make one with dsl run FILE --plan-only --plan PLAN.json, then run the shards with --shard K/N --plan PLAN.json (docs/mlmc.md)" ml.Pos.Line ml.Pos.Col (if ml.Relative then "relative_accuracy" else "accuracy")))
    | None ->
    match p.File.Weight with
    | Some w ->
        // resampling couples every path of the population: a shard alone is not a part of the run
        raise (NotSupportedException(sprintf "%d:%d: 'weight %s' makes a weighted model, whose resampling couples every path: it cannot be split into shards; run it whole" w.Pos.Line w.Pos.Col w.Name))
    | None ->
    let s = p.File.Settings
    let runner = ModelRunner.For p.Compiled.Type :?> IPartialRunner
    let ly = LyapunovRunner.For p.Compiled.Type :?> ILyapunovPartialRunner
    let plain = plainPlans p
    let responses = responsePlans p
    let k = lyapunovK p
    let sets = p.File.Sets
    let nSets = List.length sets
    let engines = (if plain.Length > 0 then 1 else 0) + (if responses.Length > 0 then 1 else 0) + (if k > 0 then 1 else 0)
    let growthOf = growthMeasures p
    let growth = growthOf |> Array.map (fun g -> if anyAdaptive p then Some(g.Force()) else None)

    let runSet (i: int) (values: float[]) (range: PathRange) (t: float) (threads: int) (progress: bool) =
        let bm, vs = instances p values

        let prog e =
            if progress then
                opts.Progress |> Option.map (fun f -> fun x -> f ((float (i * engines + e) + x) / float (nSets * engines)))
            else None

        let settingsOf = settingsWith (if progress then opts.Cancel else Threading.CancellationToken.None)

        { Plain = (if plain.Length > 0 then Some(runner.RunPartial(bm, withBias p (Array.map box vs) (not progress) range (settingsOf p range t threads (prog 0)), plain)) else None)
          Responses =
            if responses.Length > 0 then
                Some(runner.RunResponsesPartial(bm, vs, p.Compiled.Structure, settingsOf p range t threads (prog (engines - 1)), withRates p.File.Settings.T responses growth[i]))
            else None
          Lyapunov =
            if k > 0 then
                let t = if progress then t else min t ((ceil (s.Burnin / s.Dt - 1e-9) + 10.0) * s.Dt)
                Some(ly.RunPartial(bm, p.Compiled.Structure, settingsOf p range t threads (prog (engines - 1)), k, s.Burnin, lyapunovLogDet p))
            else None
          Growth = growth[i]
          Failure = None }

    (try runSet 0 (List.head sets).Values { First = 0L; Count = 2L } s.T 1 false |> ignore with :? SimulationFailedException -> ())
    let sw = Stopwatch.StartNew()

    let sums =
        sets
        |> List.mapi (fun i set ->
            match guardSet opts.Cancel (fun () -> runSet i set.Values range s.T opts.Threads true) with
            | Ok sums -> sums
            // an interrupted shard writes nothing (a rerun completes it); a set whose paths blew up is
            // recorded as failed: rerunning the shard would give the same failure
            | Error (:? OperationCanceledException as e) -> raise e
            | Error e -> { Plain = None; Responses = None; Lyapunov = None; Growth = growth[i]; Failure = Some(failureText e) })

    sums, sw.Elapsed.TotalSeconds

/// The report of the merged sums of every shard (the CPU engines'), as `run` would have given it.
let reportOfSums (p: Program) (sums: SetSums list) (seconds: float) : RunReport =
    let growthOf = growthMeasures p
    let growth = sums |> List.map (fun s -> s.Growth) |> List.toArray

    let estimates =
        sums
        |> List.map (fun s ->
            match s.Failure with
            | Some m -> Error m
            | None ->
                Ok(
                    (s.Plain |> Option.map (fun a -> a.ToEstimates()) |> Option.defaultValue [||]),
                    (s.Responses |> Option.map (fun a -> a.ToEstimates()) |> Option.defaultValue [||]),
                    (s.Lyapunov |> Option.map (fun a -> a.ToResult()))
                ))

    assemble p "cpu" growth growthOf estimates seconds
