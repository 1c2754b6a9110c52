/// The discretisation error of a result (docs/discretisation.md): the estimate b of its distance from
/// the dt → 0 limit, from the engine's coupled pairs or from an independent run at dt/2; the kinds that
/// have none, and why; the warning that names a dt; Richardson's combination of independent runs.
module Sde.Lang.Bias

open System
open System.Globalization
open Sde.Core
open Sde.Lang.Report

/// The engine's coupled estimate of a result (None when it carries none, or its value is extrapolated).
let ofEstimate (e: Estimate) : BiasOutcome option =
    if e.Extrapolated || e.BiasPairs <= 0L then None
    elif not (isNull e.Biases) then
        Some { Value = 0.0; StdErr = 0.0; Values = e.Biases; StdErrs = e.BiasStdErrs; Method = "coupled"; Samples = e.BiasPairs; Reason = None }
    elif not (Double.IsFinite e.Bias) then
        Some(biasNone "the coupled pairs gave non-finite values of the observable")
    else
        Some { Value = e.Bias; StdErr = e.BiasStdErr; Values = [||]; StdErrs = [||]; Method = "coupled"; Samples = e.BiasPairs; Reason = None }

/// A finite-difference response's twins as plans of the coupled pairs (docs/discretisation.md): its
/// observable sampled on the twin instances γ + h and γ − h (1 + the variant's index), on the pairs' shared
/// init draw and Brownian path; [] for another method. The main paths sample them on the run's model, a
/// value that is not reported.
let fdTwins (rp: ResponsePlan) : QueryPlan list =
    if rp.Method <> ResponseMethod.FiniteDifference || rp.Inactive then []
    else
        let twin v =
            QueryPlan(Kind = rp.Kind, Observable = rp.Observable, TimeAverage = rp.TimeAverage, T0 = rp.T0, T1 = rp.T1, Lo = rp.Lo, Hi = rp.Hi,
                      Bins = rp.Bins, PairBlocks = true, PairTwin = 1 + v)
        [ twin rp.VariantPlus; twin rp.VariantMinus ]

/// The coupled bias of a linear combination Σ w_k Q_k of coupled estimates (a finite-difference response:
/// (Q₊ − Q₋)/2h), per slot (one for a mean, a bin each for a density, per unit width): b = Σ w_k
/// mean(c_k − f_k) / (1 − 2^−p), its standard error by the jackknife over the blocks of pairs, which sees
/// the twins' correlation (they share every pair's path). None without blocks (another backend, bias off).
let linearBias (terms: (Estimate * float) list) : BiasOutcome option =
    let ok (e: Estimate) = not (isNull e.PairBlockC) && not (isNull e.PairBlockN) && e.BiasPairs > 0L
    match terms with
    | (e0, _) :: _ when terms |> List.forall (fst >> ok) ->
        let counts = e0.PairBlockN
        let nb = counts.Length
        let total = Array.sum counts
        // a density's blocks hold its bins and, after them, the fraction below its range
        let slots = if isNull e0.Values then 1 else e0.Values.Length
        let width = if isNull e0.Grid || e0.Grid.Length < 2 then 1.0 else e0.Grid[1] - e0.Grid[0]
        let factor = e0.BiasFactor
        let used = [| for b in 0 .. nb - 1 do if counts[b] > 0L then yield b |]
        let per k =
            // Σ_k w_k (c − f) per block, and over all blocks
            let blockD = Array.init nb (fun b -> terms |> List.sumBy (fun (e, w) -> w * (e.PairBlockC[k * nb + b] - e.PairBlockF[k * nb + b])))
            let all = Array.sum blockD
            let theta = used |> Array.map (fun b -> (all - blockD[b]) / float (total - counts[b]))
            let m = Array.average theta
            let kk = float theta.Length
            let var = (kk - 1.0) / kk * (theta |> Array.sumBy (fun t -> (t - m) * (t - m)))
            all / float total * factor / width, sqrt var * factor / width
        if used.Length < 2 then None
        else
            let vs = Array.init slots per
            let finite = vs |> Array.forall (fun (v, s) -> Double.IsFinite v && Double.IsFinite s)
            if not finite then Some(biasNone "the coupled pairs gave non-finite values of the observable")
            elif isNull e0.Values then
                Some { Value = fst vs[0]; StdErr = snd vs[0]; Values = [||]; StdErrs = [||]; Method = "coupled"; Samples = total; Reason = None }
            else
                Some { Value = 0.0; StdErr = 0.0; Values = Array.map fst vs; StdErrs = Array.map snd vs; Method = "coupled"; Samples = total; Reason = None }
    | _ -> None

/// The bias of a finite-difference response from its twins' estimates (plus, minus) and h.
let fdBias (h: float) (plus: Estimate) (minus: Estimate) : BiasOutcome option =
    linearBias [ plus, 1.0 / (2.0 * h); minus, -1.0 / (2.0 * h) ]

/// Why a response by `method` has no estimate.
let private responseReason (backend: string) (methodText: string) =
    if methodText.StartsWith "finite_difference" then
        if backend <> "cpu" then sprintf "the %s backend does not run the coupled pairs yet; use --backend cpu for the estimate" backend
        else "not estimated for this finite-difference response (the coupled pairs run its twins for a single-window response of the plain engine only); compare with a run at dt/2"
    elif methodText = "pathwise" then
        "not estimated for pathwise responses yet: the coupled pairs do not carry the tangent (the bias of a derivative would need the tangent at dt and at dt/2 on the same path); use finite_difference(h = ...), whose twins the pairs run, or compare with a run at dt/2"
    else
        "not estimated for divergence-kernel and likelihood-ratio responses: their per-path weights are sums over the steps of Euler transition scores, which at dt and at dt/2 are different random variables (no coupled difference converges); use finite_difference(h = ...), whose twins the pairs run, or compare with a run at dt/2"

/// Why a result of `kind` has no estimate (None: the kind is not an estimate of the SDE, e.g. samples).
let missingReason (backend: string) (kind: string) : string option =
    match kind with
    | "samples"
    | "samples_every"
    | "ess" -> None
    | "mean"
    | "density"
    | "mean_series"
    | "variance"
    | "covariance"
    | "quantile"
    | "density2d" when backend <> "cpu" -> Some(sprintf "the %s backend does not run the coupled pairs yet; use --backend cpu for the estimate" backend)
    | "response"
    | "density_response" -> Some "not estimated for responses yet (the coupled pairs run on the plain engine only); compare with a run at dt/2"
    | "quantile" ->
        Some "the quantile or its standard error (whose density at the quantile the bias needs) is not inside the histogram's range; widen the range or use more paths"
    | "variance"
    | "covariance"
    | "density2d" -> Some "the coupled pairs gave no finite estimate (too few pairs, or a non-finite observable); compare with a run at dt/2"
    | "lyapunov" -> Some "not estimated for Lyapunov exponents yet; compare with a run at dt/2"
    | "score"
    | "alignment" -> Some(sprintf "not estimated for %s results yet; compare with a run at dt/2" kind)
    | _ -> Some "not estimated for this kind of result yet; compare with a run at dt/2"

/// Why a result has no estimate (None: the kind is not an estimate of the SDE, e.g. samples).
let missingReasonOf (backend: string) (q: QueryOutcome) : string option =
    match q.Kind, q.Method with
    | ("response" | "density_response"), Some m -> Some(responseReason backend m)
    | _ -> missingReason backend q.Kind

/// Where a result of `kind` cannot be extrapolated: the reason (Richardson needs the coupled pairs of the
/// plain engine, or independent weighted runs).
let richardsonRefusal (kind: string) : string option =
    match kind with
    | "mean"
    | "density"
    | "mean_series" -> None
    | "samples"
    | "samples_every" -> Some "samples are per-path values, not an estimate that can be extrapolated"
    | k -> Some(sprintf "extrapolate = richardson is not available for %s results yet (it extrapolates means, series, densities and weighted results); remove it, or compare runs at dt and dt/2" k)

let private inv = CultureInfo.InvariantCulture

/// The largest step 5, 2 or 1 × 10^k at most `target` on which T is a whole number of steps.
let niceDtBelow (t: float) (target: float) : float option =
    if not (target > 0.0 && Double.IsFinite target) then None
    else
        let e = int (floor (log10 target))
        seq {
            for k in 0 .. 40 do
                for m in [ 5; 2; 1 ] do
                    yield Double.Parse(sprintf "%de%d" m (e - k), inv)
        }
        |> Seq.filter (fun d -> d <= target * (1.0 + 1e-12))
        |> Seq.tryFind (fun d -> RunSettings.WholeSteps(t, d) >= 0L)

let private show (x: float) = x.ToString("G3", inv).Replace("E", "e")

/// Is a bias b of a result of size `value` more than the rounding of double precision: a model without
/// noise gives coarse and fine estimates that differ in their last bits (3.6e-15 on a value of 1), which
/// is no discretisation error to report.
let aboveRounding (value: float) (b: float) = abs b > 1e-12 * abs value

/// Is b shown next to the value: larger than the result's standard error and than its own (so never
/// when its own is unknown: a bias from too few half-step paths to give an error is not a measurement),
/// and above rounding.
let shows (value: float) (b: float) (sb: float) (se: float) =
    Double.IsFinite b && abs b > se && abs b > sb && aboveRounding value b

/// The warning of a result whose bias is more than twice its standard error (and clearly measured: more
/// than 2.5 of its own standard errors; 4 per bin of a density, of which there are many), naming the dt
/// that would bring it under the standard error (b ∝ dt^p).
let warning (dt: float) (t: float) (order: int) (q: QueryOutcome) : string option =
    match q.Bias with
    | Some b when b.Reason.IsNone ->
        let binned = b.Values.Length > 0
        let at (xs: float[]) i = if i < xs.Length then xs[i] else nan
        let cells =
            if binned then [ for i in 0 .. b.Values.Length - 1 -> i, b.Values[i], at b.StdErrs i, at q.StdErrs i, at q.Values i ]
            else [ -1, b.Value, b.StdErr, q.StdErr, q.Value ]
        let z = if binned then 4.0 else 2.5
        let flagged =
            cells
            |> List.filter (fun (_, v, s, se, x) -> Double.IsFinite v && se > 0.0 && abs v > 2.0 * se && abs v > z * s && aboveRounding x v)
            |> List.map (fun (i, v, s, se, _) -> i, v, s, se)
        match flagged with
        | [] -> None
        | _ ->
            let i, v, s, se = flagged |> List.maxBy (fun (_, v, _, se) -> abs v / se)
            let target = dt * Math.Pow(se / abs v, 1.0 / float order)
            let step =
                match niceDtBelow t target with
                | Some d -> sprintf "dt = %s would bring it under the standard error" (d.ToString("R", inv).Replace("E", "e"))
                | None -> sprintf "a dt below %s would bring it under the standard error" (show target)
            let what =
                if binned then
                    sprintf "in %d of %d bins the discretisation bias exceeds twice the standard error (the most at %s: bias %s ± %s against a standard error %s)"
                        flagged.Length b.Values.Length (show (at q.Grid i)) (show v) (show s) (show se)
                else sprintf "the discretisation bias %s ± %s is %s standard errors" (show v) (show s) ((abs v / se).ToString("F1", inv))
            Some(sprintf "%s: the value is the Euler chain's at dt = %s, not the SDE's; %s (or use extrapolate = richardson)" what (dt.ToString("R", inv)) step)
    | _ -> None

/// Combines a result at dt (`c`) with the same result of an independent run at dt/2 (`f`): the bias
/// (c − f)/(1 − 2^−p) with se √(se_c² + se_f²)/(1 − 2^−p), or (`richardson`) the value 2f − c with se √(4 se_f² + se_c²).
let combineIndependent (richardson: bool) (order: int) (c: QueryOutcome) (f: QueryOutcome) : QueryOutcome =
    let k = 1.0 / (1.0 - Math.Pow(2.0, -float order))
    let same = c.Kind = f.Kind && c.Values.Length = f.Values.Length
    if not same || c.Kind = "ess" then c
    elif richardson then
        // (2^p f − c) / (2^p − 1): 2f − c for weak order 1 (written so, for the same bits), (4f − c)/3 for SRA
        let r = Math.Pow(2.0, float order)
        let ext (a: float) (b: float) = if order = 1 then 2.0 * b - a else (r * b - a) / (r - 1.0)
        let extSe (a: float) (b: float) = if order = 1 then sqrt (4.0 * b * b + a * a) else sqrt (r * r * b * b + a * a) / (r - 1.0)
        { c with
            Value = ext c.Value f.Value
            StdErr = extSe c.StdErr f.StdErr
            Values = Array.map2 ext c.Values f.Values
            StdErrs = Array.map2 extSe c.StdErrs f.StdErrs
            Extrapolated = true
            Bias = None }
    else
        let binned = c.Values.Length > 0
        { c with
            Bias =
                Some
                    { Value = (if binned then 0.0 else (c.Value - f.Value) * k)
                      StdErr = (if binned then 0.0 else k * sqrt (c.StdErr * c.StdErr + f.StdErr * f.StdErr))
                      Values = Array.map2 (fun a b -> (a - b) * k) c.Values f.Values
                      StdErrs = Array.map2 (fun a b -> k * sqrt (a * a + b * b)) c.StdErrs f.StdErrs
                      Method = "independent"
                      Samples = f.Count
                      Reason = None } }
