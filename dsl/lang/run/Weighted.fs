/// Weighted runs (docs/weighted.md): the engine's plan from a checked file's weight, and what the
/// report says about a weighted population.
module Sde.Lang.Weighted

open Sde.Core
open Sde.Lang.Checked

/// Independent replicas behind the standard errors of a population with log_density (docs/weighted.md,
/// "Standard errors"): the genealogy ignores the kernel density's feedback, which couples every path.
let replicas = 16

/// Paths per replica, at least: below `replicas * minReplicaPaths` paths a log_density run has no standard errors.
let minReplicaPaths = 64L

let private replicasFor (cf: CheckedFile) (w: WeightSpec) =
    if w.DensityState.IsSome && cf.Settings.Paths >= int64 replicas * minReplicaPaths then replicas else 1

/// The engine's view of the weight: where log w and log_density sit in the state, the scheme, ess.
let weightPlan (cf: CheckedFile) (w: WeightSpec) : WeightPlan =
    let offset name =
        cf.Model.States |> List.find (fun s -> s.Name = name) |> fun s -> s.Offset

    let comps = w.DensityOf |> List.map offset |> List.toArray

    WeightPlan(
        LogWeight = offset w.LogState,
        Scheme =
            (match w.Resample with
             | Systematic -> ResampleScheme.Systematic
             | Stratified -> ResampleScheme.Stratified
             | Multinomial -> ResampleScheme.Multinomial
             | Residual -> ResampleScheme.Residual
             | BirthDeath -> ResampleScheme.BirthDeath
             | NoResample -> ResampleScheme.None),
        Ess = w.Ess,
        DensitySlot = (match w.DensityState with Some n -> offset n | None -> -1),
        DensityComponents = comps,
        Bandwidth = (match w.Bandwidth with Some h -> Array.create comps.Length h | None -> null),
        Replicas = replicasFor cf w
    )

/// The genealogy standard error rests on the time-0 ancestors of the final paths: with few of them it
/// is unreliable (it falls towards 0 as the lines coalesce), and the reader must be told.
let genealogyWarning (wr: WeightedResult) : string list =
    if wr.Replicas = 1 && wr.Resamplings > 0L && wr.Ancestors < max 30L (wr.Paths / 100L) then
        [ sprintf "after %d resamplings the %d paths descend from only %d starting paths, so the standard error (which groups paths by their starting ancestor) is unreliable; resample less often (a lower ess), take more paths or a shorter T"
              wr.Resamplings wr.Paths wr.Ancestors ]
    else []

/// A log_density run too small for its replicas has no standard errors (the engine gives NaN): say why.
let private replicaWarning (w: WeightSpec) (wr: WeightedResult) : string list =
    if w.DensityState.IsSome && wr.Replicas = 1 then
        [ sprintf "no standard error: with log_density the paths interact through the density estimate, so the standard errors come from %d independent replicas of at least %d paths each, which needs paths >= %d (got %d)"
              replicas minReplicaPaths (int64 replicas * minReplicaPaths) wr.Paths ]
    else []

let private essText (ess: float) = if ess >= 10.0 then sprintf "%.0f" ess else sprintf "%.3g" ess

/// A weighted estimate whose effective sample size collapsed rests on a few paths: the value may be far
/// off and a standard error from so few is no measure of it (below 30 the engine gives none).
let private essWarning (w: WeightSpec) (wr: WeightedResult) (ess: float) : string list =
    if ess < max 30.0 (float wr.Paths / 100.0) then
        let cure =
            match w.Resample with
            | NoResample -> "resample (e.g. resample = systematic), take more paths, or a weight that varies less"
            | _ -> "resample more often (a higher ess), take more paths, or a weight that varies less"
        [ sprintf "the weights degenerated: the effective sample size fell to %s of %d paths, so the estimate rests on a few paths and may be far from the expectation%s; %s"
              (essText ess) wr.Paths
              (if ess < WeightedEngine.MinEssForError then sprintf ", and there is no standard error (fewer than %g effective paths)" WeightedEngine.MinEssForError
               else ", and its standard error is unreliable")
              cure ]
    else []

/// The warnings of a weighted mean or density (plan k of the run).
let estimateWarnings (w: WeightSpec) (wr: WeightedResult) (k: int) : string list =
    genealogyWarning wr @ replicaWarning w wr @ essWarning w wr wr.MinEss[k]

/// The warnings of `log_normalizer`: why its standard error is null where it is.
let normalizerWarnings (w: WeightSpec) (wr: WeightedResult) : string list =
    let degenerate = essWarning w wr wr.FinalEss
    let why =
        if not (System.Double.IsNaN wr.LogNormalizerStdErr) || not degenerate.IsEmpty || not (replicaWarning w wr).IsEmpty then []
        else
            match w.Resample with
            | Multinomial ->
                [ "no standard error: the genealogy estimate of the normaliser's variance is not positive here; compare runs with different seeds" ]
            | _ ->
                [ "no standard error: the genealogy estimate of the normaliser's variance holds for multinomial resampling only (in seed repeats it came out 2 to 3.4 times too small under systematic and residual resampling); resample = multinomial gives one, or compare runs with different seeds" ]
    why @ genealogyWarning wr @ replicaWarning w wr @ degenerate
