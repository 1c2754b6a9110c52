/// The results of a run, as the JSON of language.md describes them. Built by the driver from the
/// engine's estimates; written as JSON, tables and plots by `Output`.
module Sde.Lang.Report

/// One query's answer. Scalar kinds (`mean`, `response`) fill Value/StdErr; binned kinds
/// (`density`, `density_response`) fill Grid/Values/StdErrs (Grid = bin centres).
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
      Values: float[]
      StdErrs: float[]
      /// Density range and the number of samples that fell below / above it.
      Lo: float
      Hi: float
      Below: int64
      Above: int64
      /// Samples behind the estimate.
      Count: int64
      /// Kernel schedules with a rate: the rate in use, and "explicit" or "adaptive" (measured from the
      /// covector growth, `CovectorGrowth`); the measured growth rate λ_cov when adaptive.
      Rate: float option
      RateSource: string option
      CovectorGrowth: float option
      /// Kernel estimators: kurtosis and largest path's share of the weights (see `Estimate`).
      WeightKurtosis: float option
      WeightMaxShare: float option
      /// Warnings about this result (e.g. heavy-tailed kernel weights); `--strict` makes any exit 3.
      Warnings: string list
      /// Stationary responses asked for several windows: (window, value, stderr) for each; the
      /// first is also Value/StdErr (or Values/StdErrs).
      Windows: (float * float * float) list }

type SetReport =
    { Name: string
      Params: (string * float) list
      Results: QueryOutcome list }

type SettingsReport =
    { Paths: int64
      Dt: float
      T: float
      Seed: uint64
      Scheme: string
      Backend: string }

type RunReport =
    { Model: string
      Source: string
      Settings: SettingsReport
      Sets: SetReport list
      /// Wall time of the simulation proper (not parsing, compiling or JIT warm-up).
      Seconds: float
      PathStepsPerSecond: float }

/// Binned kinds: `density`, `density_response` and `alignment` (a density of |cos| on [Lo, Hi]).
/// `lyapunov` fills Grid (1..k), Values (exponents) and StdErrs, and, when k = dimension,
/// Value/StdErr with the time average of log|det J_n| / Δt (their sum identity), NaN otherwise.
let isBinned (q: QueryOutcome) = q.Kind = "density" || q.Kind = "density_response" || q.Kind = "alignment"
