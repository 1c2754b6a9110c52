/// The `fit` block (docs/fitting.md), checked against the model and the settings: which params to
/// learn, the data file, the objective, the optimiser and its stopping rule.
module Sde.Lang.FitCheck

open System
open Sde.Lang.Syntax
open Sde.Lang.Checked

/// What the fit minimises.
type Objective =
    /// KL(p_data ‖ ρ_t): the data are samples of (some of) the states at time t, a grid time
    /// (None: `kl at T`, the end of the simulation, after any --T).
    | KlAt of t: float option
    /// Least squares between the drift and a given field, plus λ times between their Jacobians (data rows:
    /// a whole state, field components `dx`, Jacobian entries `dx/dy`).
    | JacobianMatching of lambda: float
    /// KL(p_data ‖ ρ_∞): the data are samples of (some of) the states from the stationary law, compared with the
    /// average of the model's law over `times` grid times evenly spaced in [burnin, T] (None: the default,
    /// `defaultStationaryTimes`); the gradient weights each recorded state by the increment of its DK weight
    /// over the last `window` time units (docs/fitting.md, "kl stationary window").
    | KlStationary of window: float * times: int option

/// How it is minimised.
type Optimizer =
    /// Adam on fresh random numbers (paths and jitter) each iteration; the fitted values are the
    /// average of the iterates over the last quarter of the iterations.
    | Adam of lr: float
    /// MathNet's L-BFGS on common random numbers (the same paths and jitter every evaluation).
    | Lbfgs

type FitSpec =
    { /// Indices into the model's params, in the order written.
      Params: int list
      /// The data file as written (relative to the directory of the .sde file).
      Data: string
      DataPos: Pos
      Objective: Objective
      Optimizer: Optimizer
      Iterations: int
      /// L-BFGS: stop when the gradient norm (unconstrained coordinates) is below it.
      Tolerance: float
      /// The smoothing bandwidth for every data column; None: the rule of docs/fitting.md.
      Bandwidth: float option
      /// The DK schedule's rate (per unit time), as `divergence_kernel(rate = r)`.
      Rate: float
      /// Paths per evaluation (None: the simulate block's `paths`, after any --paths).
      Paths: int64 option
      /// `law = marginals`: compare each data column's one-dimensional law (the sum of their cross entropies)
      /// instead of the joint law of the columns (`law = joint`, the default).
      Marginals: bool
      Pos: Pos }

let keys = [ "objective"; "optimizer"; "iterations"; "tolerance"; "bandwidth"; "rate"; "paths"; "times"; "law" ]

/// Most grid steps a stationary fit's window may span (each worker keeps that many DK weights per param), as
/// for stationary responses.
let maxWindowSteps = Limits.windowSteps

/// The grid steps n_b … N a stationary fit averages over: n_b the first step at or after burnin, N = T/dt.
let stationarySteps (s: Settings) =
    int64 (Math.Ceiling(s.Burnin / s.Dt - 1e-9)), int64 (Math.Round(s.T / s.Dt))

/// What is wrong with the window W of `kl stationary window W` under the settings (after any overrides): it
/// must be > 0, a whole number of steps of dt (else the nearest window on the grid is named), at most
/// T − burnin (the span the recorded times cover) and at most 10^6 steps.
let stationaryWindowProblem (s: Settings) (w: float) : string option =
    let n = max 1.0 (Math.Round(w / s.Dt))

    if not (w > 0.0) then Some "the stationary window must be > 0"
    elif Sde.Core.RunSettings.WholeSteps(w, s.Dt) < 0L then
        Some(
            sprintf "the stationary window %s is not a whole number of steps of dt = %s (window/dt = %s); take window %s (%g steps)"
                (Checker.shortNumber w) (Checker.shortNumber s.Dt) ((w / s.Dt).ToString("G6", Globalization.CultureInfo.InvariantCulture)) (Checker.shortNumber (n * s.Dt)) n
        )
    elif w > s.T - s.Burnin + 1e-9 * s.Dt then
        Some(
            sprintf "the stationary window %s is longer than the averaged span T - burnin = %s (T = %s, burnin = %s); take a shorter window or a larger T"
                (Checker.shortNumber w) (Checker.shortNumber (s.T - s.Burnin)) (Checker.shortNumber s.T) (Checker.shortNumber s.Burnin)
        )
    elif w / s.Dt > maxWindowSteps then Some(sprintf "the stationary window %s is %g steps of dt; at most %s" (Checker.shortNumber w) n (Limits.power maxWindowSteps))
    else None

/// The recorded times per path of a stationary fit without a `times` setting: one per window W over
/// [burnin, T] (times closer than the decorrelation window add kernel cost but little information), at
/// most 20 (each multiplies the kernel sums' cost) and at most the grid times there.
let defaultStationaryTimes (s: Settings) (w: float) =
    let nb, nt = stationarySteps s
    let perWindow = 1.0 + Math.Floor((s.T - s.Burnin) / w + 1e-9)
    int (min 20.0 (min perWindow (float (nt - nb + 1L))))

/// Most iterations a fit may ask for.
let maxIterations = Limits.fitIterations

let private fail (p: Pos) (m: string) : Result<'a, Diagnostic list> = Error [ { Pos = p; Message = m } ]

let private collect (rs: Result<unit, Diagnostic list> list) =
    rs |> List.collect (function Error ds -> ds | Ok () -> [])

let private argPos a = match a with ArgNum(_, _, p) | ArgName(_, _, p) -> p
let private argName a = match a with ArgNum(n, _, _) | ArgName(n, _, _) -> n

/// The one number argument `name = v` of a method (jacobian_matching(lambda = ...), adam(lr = ...)): `dflt`
/// when absent; an argument given twice, another argument, a name for the number or a value `check`
/// refuses is an error at that argument.
let private numberArg (consts: Map<string, int>) (m: Method) (name: string) (dflt: float) (check: float -> string option) =
    let dup =
        m.Args
        |> List.groupBy argName
        |> List.collect (fun (n, occ) -> occ |> List.tail |> List.map (fun a -> { Pos = argPos a; Message = sprintf "argument '%s' given twice" n }))

    if not dup.IsEmpty then Error dup
    else
        m.Args
        |> List.fold
            (fun acc a ->
                acc
                |> Result.bind (fun v ->
                    match a with
                    | ArgNum(n, e, _) when n = name ->
                        Checker.constantValue consts name e
                        |> Result.bind (fun v -> match check v with Some msg -> fail e.Pos msg | None -> Ok v)
                    | ArgName(n, _, p) when n = name -> fail p (sprintf "%s must be a number" name)
                    | a -> fail (argPos a) (sprintf "unknown argument '%s' of %s; it takes %s = ..." (argName a) m.Name name)))
            (Ok dflt)

/// The objective: `kl at T` (the settings' T, or a grid time).
let private objectiveOf (consts: Map<string, int>) (settings: Settings) (s: FitSetting) : Result<Objective, Diagnostic list> =
    match s.FitArg with
    | FitKl(Some { Kind = Var "T" }, None) -> Ok(KlAt None)
    | FitKl(Some e, None) ->
        Checker.constantValue consts "the time of 'kl at'" e
        |> Result.bind (fun t ->
            if not (t > 0.0) then fail e.Pos "the time of 'kl at' must be > 0"
            elif t > settings.T then fail e.Pos (sprintf "kl at %s is after the end of the simulation (T = %s)" (Checker.shortNumber t) (Checker.shortNumber settings.T))
            elif Sde.Core.RunSettings.WholeSteps(t, settings.Dt) < 1L then
                fail e.Pos (sprintf "kl at %s is not a whole number of steps of dt = %s" (Checker.shortNumber t) (Checker.shortNumber settings.Dt))
            else Ok(KlAt(Some t)))
    | FitKl(None, Some w) ->
        Checker.constantValue consts "the stationary window" w
        |> Result.bind (fun v -> match stationaryWindowProblem settings v with Some m -> fail w.Pos m | None -> Ok(KlStationary(v, None)))
    | FitKl(_, _) -> fail s.FitPos "write the objective as 'kl at T' (the data are samples of the states at T)"
    | FitMethod m when m.Name = "jacobian_matching" ->
        numberArg consts m "lambda" 1.0 (fun v -> if v >= 0.0 then None else Some "lambda must be >= 0") |> Result.map JacobianMatching
    | FitMethod m -> fail m.Pos (sprintf "unknown objective '%s'; available: kl at T, kl stationary window W, jacobian_matching(lambda = ...)" m.Name)
    | FitExpr e -> fail e.Pos "the objective is 'kl at T', 'kl stationary window W' or jacobian_matching(lambda = ...)"

let private optimizerOf (consts: Map<string, int>) (s: FitSetting) : Result<Optimizer, Diagnostic list> =
    match s.FitArg with
    | FitMethod m ->
        match m.Name with
        | "lbfgs" ->
            match m.Args with
            | [] -> Ok Lbfgs
            | a :: _ -> fail (argPos a) (sprintf "lbfgs takes no arguments (its stopping rule is the fit's 'tolerance' and 'iterations'); '%s' is not one" (argName a))
        | "adam" -> numberArg consts m "lr" 0.05 (fun v -> if v > 0.0 then None else Some "lr must be > 0") |> Result.map Adam
        | n -> fail m.Pos (sprintf "unknown optimizer '%s'%s; available: adam(lr = ...), lbfgs" n (Checker.suggest n [ "adam"; "lbfgs" ]))
    | FitKl _ -> fail s.FitPos "unknown optimizer 'kl'; available: adam(lr = ...), lbfgs"
    | FitExpr e -> fail e.Pos "the optimizer is adam(lr = ...) or lbfgs"

/// Checks the file's `fit` block, if any. `cf` is the checked file (model, settings, consts).
let check (f: File) (cf: CheckedFile) : Result<FitSpec option, Diagnostic list> =
    let fits = f.Items |> List.choose (function FitBlock(ps, d, dp, xs, p) -> Some(ps, d, dp, xs, p) | _ -> None)

    match fits with
    | [] -> Ok None
    | (ps, data, dataPos, settings, pos) :: rest ->
        let consts = Map.ofList cf.Model.Consts
        let names = cf.Model.Params |> List.map (fun p -> p.Name)
        let second = rest |> List.map (fun (_, _, _, _, p) -> { Pos = p; Message = "a second 'fit' block; a file holds one" })

        // (linear in the list: a set of the names seen, not a scan of the list before each)
        let seen = Collections.Generic.HashSet<string>()
        let known = Collections.Generic.HashSet<string>(names)

        // a vector param stands for all its components (`fit a` learns a[0], ..., a[K-1])
        let ps =
            ps
            |> List.collect (fun (n, p) ->
                if known.Contains n then [ n, p ]
                else
                    match names |> List.filter (fun c -> c <> n && Checked.paramBase c = n) with
                    | [] -> [ n, p ]
                    | cs -> cs |> List.map (fun c -> c, p))

        let paramErrs =
            ps
            |> List.map (fun (n, p) ->
                if not (known.Contains n) && (Checked.vectorParamProblem names n).IsSome then
                    fail p (sprintf "%s; a fit learns params" (Checked.vectorParamProblem names n).Value)
                elif not (known.Contains n) then
                    let what =
                        if cf.Model.States |> List.exists (fun s -> s.Name = n) then sprintf "'%s' is a state, not a param" n
                        else sprintf "unknown param '%s'%s" n (Checker.suggest n names)

                    fail p (sprintf "%s; a fit learns params (%s)" what (if names.IsEmpty then "the model declares none" else String.Join(", ", names)))
                elif not (seen.Add n) then fail p (sprintf "'%s' is listed twice" n)
                else Ok())
            |> collect
            |> List.truncate 20 // a list of thousands of wrong names: the first few say it

        let dup =
            settings
            |> List.groupBy (fun s -> s.FitKey)
            |> List.collect (fun (k, occ) -> occ |> List.tail |> List.map (fun s -> { Pos = s.FitPos; Message = sprintf "duplicate setting '%s'" k }))

        let unknown =
            settings
            |> List.filter (fun s -> not (List.contains s.FitKey keys))
            |> List.map (fun s -> { Pos = s.FitPos; Message = sprintf "unknown fit setting '%s'%s (known: %s)" s.FitKey (Checker.suggest s.FitKey keys) (String.Join(", ", keys)) })

        let setting k = settings |> List.tryFind (fun s -> s.FitKey = k)

        let number k (check: float -> string option) (dflt: 'a) (conv: float -> 'a) : Result<'a, Diagnostic list> =
            match setting k with
            | None -> Ok dflt
            | Some { FitArg = FitExpr e } ->
                Checker.constantValue consts k e
                |> Result.bind (fun v -> match check v with Some m -> fail e.Pos m | None -> Ok(conv v))
            | Some s -> fail s.FitPos (sprintf "%s must be a number" k)

        let whole (v: float) = Math.Floor v = v
        let objective = match setting "objective" with Some s -> objectiveOf consts cf.Settings s | None -> Ok(KlAt None)
        let optimizer = match setting "optimizer" with Some s -> optimizerOf consts s | None -> Ok Lbfgs

        // `times`: the recorded times per path of `kl stationary window W` (no other objective has them)
        let objective =
            match objective, setting "times" with
            | Ok(KlStationary(w, _)), Some _ ->
                let nb, nt = stationarySteps cf.Settings
                let most = nt - nb + 1L

                number "times" (fun v -> if whole v && v >= 1.0 && v <= float most then None else Some(sprintf "times must be a whole number from 1 to %d (the grid times in [burnin, T])" most)) None (int >> Some)
                |> Result.map (fun r -> KlStationary(w, r))
            | Ok _, Some s -> fail s.FitPos "'times' (the recorded times per path) belongs to 'objective = kl stationary window W'"
            | o, _ -> o

        let iterations =
            number "iterations" (fun v -> if whole v && v >= 1.0 && v <= float maxIterations then None else Some(sprintf "iterations must be a whole number from 1 to %d" maxIterations)) 100 int

        let tolerance = number "tolerance" (fun v -> if v > 0.0 then None else Some "tolerance must be > 0") 1e-4 id
        // (the kernel divides by h and squares: 1e-310 or 1e308 overflowed it silently)
        let bandwidth =
            number "bandwidth" (fun v -> if not (v > 0.0) then Some "bandwidth must be > 0" elif v >= 1e-100 && v <= 1e100 then None else Some(sprintf "bandwidth must be from 1e-100 to 1e100 (the kernel divides data differences by it and squares them), got %s" (v.ToString("G6", Globalization.CultureInfo.InvariantCulture).Replace("E", "e")))) None Some
        let rate = number "rate" (fun v -> if v > 0.0 then None else Some "rate must be > 0 (per unit time)") Sde.Core.CovectorGrowth.Floor id

        let paths =
            number "paths" (fun v -> if whole v && v >= 2.0 && v <= 1e9 then None else Some "paths must be a whole number from 2 to 10^9") None (int64 >> Some)

        let law =
            match setting "law" with
            | None -> Ok false
            | Some { FitArg = FitExpr { Kind = Var "joint" } } -> Ok false
            | Some { FitArg = FitExpr { Kind = Var "marginals" } } -> Ok true
            | Some s -> fail s.FitPos "law is 'joint' (the joint law of the data columns, the default) or 'marginals' (each column's own law)"

        let err r = match r with Error ds -> ds | Ok _ -> []

        let errs =
            second @ paramErrs @ dup @ unknown @ err objective @ err optimizer @ err iterations @ err tolerance @ err bandwidth @ err rate @ err paths @ err law
            |> List.sortBy (fun d -> d.Pos.Line, d.Pos.Col)

        let dataErr = if String.IsNullOrWhiteSpace data then [ { Pos = dataPos; Message = "the data file name is empty" } ] else []

        match errs @ dataErr, objective, optimizer, iterations, tolerance, bandwidth, rate, paths, law with
        | [], Ok o, Ok opt, Ok it, Ok tol, Ok bw, Ok r, Ok n, Ok marg ->
            Ok(
                Some
                    { Params = (let index = names |> List.mapi (fun i n -> n, i) |> dict in ps |> List.map (fun (n, _) -> index[n]))
                      Data = data
                      DataPos = dataPos
                      Objective = o
                      Optimizer = opt
                      Iterations = it
                      Tolerance = tol
                      Bandwidth = bw
                      Rate = r
                      Paths = n
                      Marginals = marg
                      Pos = pos }
            )
        | es, _, _, _, _, _, _, _, _ -> Error es
