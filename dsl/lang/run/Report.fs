/// The results of a run, as the JSON of docs/language.md describes them. Built by the driver from the
/// engine's estimates; written as JSON, tables and plots by `Output`.
module Sde.Lang.Report

/// One window of a stationary response asked for several (`stationary window 1, 2`): scalar
/// responses fill Value/StdErr, density responses Values/StdErrs.
type WindowOutcome =
    { Window: float
      Value: float
      StdErr: float
      Values: float[]
      StdErrs: float[] }

/// A result's estimated distance from the dt → 0 limit (`bias = estimate`): b = (Q(dt) − Q(dt/2)) / (1 − 2^−p).
/// Scalars fill Value/StdErr, binned kinds Values/StdErrs (per bin; their Value/StdErr are 0, not NaN, so
/// that a report equals itself). Reason: why there is none (null in the JSON).
type BiasOutcome =
    { Value: float
      StdErr: float
      Values: float[]
      StdErrs: float[]
      /// "coupled" (pairs on the same Brownian path at dt and dt/2) or "independent" (a separate run at dt/2).
      Method: string
      /// The coupled pairs, or the paths of the independent half-step run, behind it.
      Samples: int64
      Reason: string option }

/// No estimate, and why.
let biasNone (reason: string) =
    { Value = 0.0; StdErr = 0.0; Values = [||]; StdErrs = [||]; Method = ""; Samples = 0L; Reason = Some reason }

/// One query's answer. Scalar kinds (`mean`, `response`) fill Value/StdErr; binned kinds
/// (`density`, `density_response`) fill Grid/Values/StdErrs (Grid = bin centres).
[<Sde.Lang.Formatting.TypeFormatterSource(typeof<Sde.Lang.Formatting.SdeFormatterSource>)>]
type QueryOutcome =
    { /// The query as written, white space collapsed.
      Query: string
      /// "mean" | "density" | "response" | "density_response"
      Kind: string
      Wrt: string option
      /// E.g. "divergence_kernel(rate = 10)".
      Method: string option
      Value: float
      StdErr: float
      Grid: float[]
      /// `density2d`: the y bin centres (Grid holds the x centres; Values are row-major, one row per y bin).
      GridY: float[]
      Values: float[]
      StdErrs: float[]
      /// Density range and the number of samples that fell below / above it.
      Lo: float
      Hi: float
      Below: int64
      Above: int64
      /// Samples behind the estimate.
      Count: int64
      /// Samples where the observable was NaN or ±∞ on a finite state (see `Estimate.NonFinite`): for
      /// a mean or response the paths, for a density the NaN samples (in no bin).
      NonFinite: int64
      /// Kernel schedules with a rate: the rate in use, and "explicit" or "adaptive" (measured from the
      /// covector growth, `CovectorGrowth`); the measured growth rate λ_cov when adaptive.
      Rate: float option
      RateSource: string option
      CovectorGrowth: float option
      /// The adaptive default of a mean: "pathwise" when a pathwise control variate was carried.
      Control: string option
      /// Its coefficient κ (0: the kernel estimate alone, 1: the pathwise one); NaN when the control was
      /// not usable (the pathwise tangent overflowed on some path).
      ControlCoefficient: float option
      /// Kernel estimators: kurtosis and largest path's share of the weights (see `Estimate`).
      WeightKurtosis: float option
      WeightMaxShare: float option
      /// Stationary responses asked for several windows: each, in the order written (empty otherwise).
      Windows: WindowOutcome list
      /// With several windows, the one whose estimate is Value/StdErr (Values/StdErrs): the largest
      /// (the last written among equals), whose weights best cover the decay of correlations.
      ValueWindow: float option
      /// What the reader must know about the numbers (non-finite samples of the observable, a standard
      /// error that needs more paths, heavy-tailed kernel weights): shown under the result, in the JSON
      /// and on standard error; `--strict` makes any of them exit 3.
      Warnings: string list
      /// A self-normalised estimate under the model's Feynman–Kac weight (`"weighted": true`).
      Weighted: bool
      /// `ess`: the number of resamplings of the run (None for other kinds).
      Resamplings: int64 option
      /// The discretisation-error estimate (None with `bias = off`; Some with a Reason when there is none).
      Bias: BiasOutcome option
      /// `extrapolate = richardson`: the value is 2 Q(dt/2) − Q(dt).
      Extrapolated: bool }

[<Sde.Lang.Formatting.TypeFormatterSource(typeof<Sde.Lang.Formatting.SdeFormatterSource>)>]
type SetReport =
    { Name: string
      Params: (string * float) list
      Results: QueryOutcome list
      /// Why this set has no results (its paths blew up, the run was interrupted before it finished):
      /// the other sets' results are still reported and written, and the run exits 3.
      Failure: string option }

type SettingsReport =
    { Paths: int64
      Dt: float
      T: float
      Seed: uint64
      Scheme: string
      Backend: string }

[<Sde.Lang.Formatting.TypeFormatterSource(typeof<Sde.Lang.Formatting.SdeFormatterSource>)>]
type RunReport =
    { Model: string
      Source: string
      Settings: SettingsReport
      Sets: SetReport list
      /// The compiler's warnings about the file (`FILE:LINE:COL: warning: MESSAGE`): a file without
      /// queries, an unused brownian. In the JSON as the top-level `warnings` (when there are any).
      Warnings: string list
      /// Wall time of the simulation proper (not parsing, compiling or JIT warm-up).
      Seconds: float
      PathStepsPerSecond: float }

/// Binned kinds: `density`, `density_response` and `alignment` (a density of |cos| on [Lo, Hi]).
/// `lyapunov` fills Grid (1..k), Values (exponents) and StdErrs, and, when k = dimension,
/// Value/StdErr with the time average of log|det J_n| / Δt (their sum identity), NaN otherwise.
let isBinned (q: QueryOutcome) = q.Kind = "density" || q.Kind = "density_response" || q.Kind = "alignment" || q.Kind = "score"
