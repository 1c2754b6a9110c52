/// Weighted runs (docs/weighted.md): the engine's plan from a checked file's weight, and what the
/// report says about a weighted population.
module Sde.Lang.Weighted

open Sde.Core
open Sde.Lang.Checked

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
        Bandwidth = (match w.Bandwidth with Some h -> Array.create comps.Length h | None -> null)
    )

/// The genealogy standard error rests on the time-0 ancestors of the final paths: with few of them it
/// is unreliable (it falls towards 0 as the lines coalesce), and the reader must be told.
let genealogyWarning (wr: WeightedResult) : string list =
    if wr.Resamplings > 0L && wr.Ancestors < max 30L (wr.Paths / 100L) then
        [ sprintf "after %d resamplings the %d paths descend from only %d starting paths, so the standard error (which groups paths by their starting ancestor) is unreliable; resample less often (a lower ess), take more paths or a shorter T"
              wr.Resamplings wr.Paths wr.Ancestors ]
    else []
