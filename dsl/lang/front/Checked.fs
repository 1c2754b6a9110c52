/// The checked model: names resolved, shapes and indices verified, equations split into a drift
/// coefficient and diffusion coefficients, queries typed, settings validated. Everything the
/// lowering to the symbolic IR needs, and nothing about syntax except positions for later errors.
module Sde.Lang.Checked

open Sde.Lang.Syntax

/// Integer index arithmetic on constants and bound index variables (`i+1`, `2*j-1`).
type IExpr =
    | IConst of int
    | IVar of string
    | IAdd of IExpr * IExpr
    | ISub of IExpr * IExpr
    | IMul of IExpr * IExpr
    | INeg of IExpr

type Fn =
    | Exp
    | Log
    | Sqrt
    | Sin
    | Cos
    | Tan
    | Tanh
    | Abs
    | Pow
    | Min
    | Max
    | Sigmoid
    /// ⌊a⌋: not a user function; the bin index of a 2-D density (`Driver`).
    | Floor

/// A real-valued expression with names resolved.
type CExpr =
    | Const of float
    /// Parameter, by its index in `CheckedModel.Params`.
    | Param of int
    /// A component of a vector param `a[i]` whose index uses index variables: the param
    /// `first + index` (the checker has proved the index in [0, count)). A fixed index is a `Param`.
    | ParamAt of first: int * count: int * index: IExpr
    /// State component: state index in `CheckedModel.States`, index expression (IConst 0 for scalars).
    /// Periodic states wrap the index modulo their size; for others the checker has proved it in range.
    | StateRef of state: int * index: IExpr
    /// Time `t`.
    | Time
    /// An index variable or index expression used as a real number (`0.01 * i`).
    | IndexValue of IExpr
    | Neg of CExpr
    | Add of CExpr * CExpr
    | Sub of CExpr * CExpr
    | Mul of CExpr * CExpr
    | Div of CExpr * CExpr
    /// `a ^ b`.
    | Power of CExpr * CExpr
    | Func of Fn * CExpr list
    | IfThen of CCond * CExpr * CExpr
    /// `sum(j, e)` with j ranging over [0, count).
    | SumOver of var: string * count: int * body: CExpr
    /// `avg(j, e)`.
    | AvgOver of var: string * count: int * body: CExpr

and CCond =
    | CCmp of CmpOp * CExpr * CExpr
    | CAnd of CCond * CCond
    | COr of CCond * CCond
    | CNot of CCond

type ParamInfo =
    { Name: string
      Default: float
      Domain: (Bound * Bound) option
      Pos: Pos }

/// The name a vector param's component has in `CheckedModel.Params`: `a[2]`. A vector param
/// `param a[K]` is K scalar params `a[0]`, ..., `a[K-1]` (in order, adjacent).
let componentName (name: string) (k: int) = sprintf "%s[%d]" name k

/// The param a component belongs to (`a` for `a[2]`); a scalar param's own name.
let paramBase (name: string) =
    match name.IndexOf '[' with
    | -1 -> name
    | k -> name.Substring(0, k)

/// The params grouped as written: a scalar by itself, a vector's components together, in order,
/// as (name, indices into the params, is a vector).
let paramGroups (names: string list) : (string * int list * bool) list =
    names
    |> List.mapi (fun i n -> i, n)
    |> List.fold
        (fun acc (i, n) ->
            let b = paramBase n

            match acc with
            | (b0, ix, true) :: rest when b0 = b && b <> n -> (b0, i :: ix, true) :: rest
            | _ -> (b, [ i ], b <> n) :: acc)
        []
    |> List.rev
    |> List.map (fun (b, ix, v) -> b, List.rev ix, v)

/// Values by param name for the JSON: the components of a vector param (all of them, `a[0]` to
/// `a[K-1]` in order, K counted in `all`, the model's param names) as one array under `a`; anything
/// else (a scalar, a lone component) by its own name.
let groupParamValues (all: string list) (names: string list) (values: float[]) : (string * Choice<float, float[]>) list =
    let names = List.toArray names
    let sizeOf b = all |> List.filter (fun n -> n <> b && paramBase n = b) |> List.length
    let out = System.Collections.Generic.List<string * Choice<float, float[]>>()
    let mutable i = 0

    while i < names.Length do
        let b = paramBase names[i]
        let k = if b <> names[i] then sizeOf b else 0

        if k > 0 && i + k <= names.Length && Seq.forall (fun j -> names[i + j] = componentName b j) (seq { 0 .. k - 1 }) then
            out.Add(b, Choice2Of2 values[i .. i + k - 1])
            i <- i + k
        else
            out.Add(names[i], Choice1Of2 values[i])
            i <- i + 1

    List.ofSeq out

/// Why `name` (as written: `a`, `a[2]`) names no param when no param has that name exactly, if it is
/// about vector params (a vector without an index, an index out of range or on a scalar); else None.
let vectorParamProblem (names: string list) (name: string) : string option =
    let b = paramBase name
    let size = names |> List.filter (fun n -> n <> b && paramBase n = b) |> List.length

    if b = name then
        if size > 0 then Some(sprintf "param '%s' is a vector of size %d; name a component, e.g. %s" b size (componentName b 0))
        else None
    elif size > 0 then
        Some(sprintf "index %s out of range for param '%s' of size %d (valid: 0 to %d)" (name.Substring(b.Length + 1).TrimEnd(']')) b size (size - 1))
    elif List.contains b names then
        Some(sprintf "param '%s' is a scalar and cannot be indexed; remove the index" b)
    else
        None

type StateInfo =
    { Name: string
      /// 1 for a scalar state.
      Size: int
      IsVector: bool
      Periodic: bool
      /// Offset of the first component in the engine's state vector (declaration order).
      Offset: int
      Pos: Pos }

type BrownianInfo =
    { Name: string
      Size: int
      IsVector: bool
      /// Offset of the first lane in the engine's noise vector.
      Offset: int
      Pos: Pos }

type InitKind =
    | Deterministic of CExpr
    | Normal of mean: CExpr * sd: CExpr
    | Uniform of lo: CExpr * hi: CExpr

/// `init x[i] ...` for one state: the expressions may use the index variable `Index`.
type CInit =
    { State: int
      Index: string option
      Kind: InitKind
      Pos: Pos }

/// One diffusion term `coeff * dW[index]`.
type NoiseTerm =
    { Brownian: int
      Index: IExpr
      Coeff: CExpr }

/// `d x[i] = drift dt + Σ coeff dW[...]` for one state.
type CEquation =
    { State: int
      Index: string option
      Drift: CExpr
      Noise: NoiseTerm list
      Pos: Pos }

type Schedule =
    /// `rate = r` per unit time, harmonic start.
    | Rate of float
    /// The default: a rate per unit time measured from the model's covector growth before the run
    /// (`CovectorGrowth.RateFor`), harmonic start.
    | AdaptiveRate
    /// `divergence_kernel(control = none)`: the adaptive rate without the pathwise control variate the
    /// default of a mean carries (the kernel's own estimate, e.g. to compare with the controlled one).
    | AdaptiveAlone
    /// Constant per-step `alpha = a`.
    | Alpha of float

type DkMode =
    | Exact
    | Iterative
    | FirstOrder

type CMethod =
    | DivergenceKernel of Schedule * DkMode option
    | LikelihoodRatio
    | Pathwise
    | FiniteDifference of h: float

type CTarget =
    | TMean of CExpr
    | TDensity of CExpr * lo: float * hi: float * bins: int
    /// `variance(e)` (plain queries at T only).
    | TVariance of CExpr
    /// `covariance(e1, e2)` (plain queries at T only).
    | TCovariance of CExpr * CExpr
    /// `quantile(e, p) on [lo, hi] bins n`, 0 < p < 1 (plain queries at T only).
    | TQuantile of CExpr * p: float * lo: float * hi: float * bins: int
    /// `mean(e) every Δ`: the mean at t = 0, Δ, ..., up to T (plain queries only, no window).
    | TSeries of CExpr * every: float
    /// `density(e1, e2) on [lo1, hi1] x [lo2, hi2] bins n1 x n2` (plain queries only).
    | TDensity2 of CExpr * CExpr * lo1: float * hi1: float * lo2: float * hi2: float * bins1: int * bins2: int

type CQuery =
    /// `mean(e)` / `density(e)`, at T or time-averaged over `Over`.
    | QPlain of CTarget * over: (float * float) option
    /// `d target / d Wrt`; `Stationary` holds the window lengths (time units) when asked.
    | QResponse of CTarget * wrt: int * over: (float * float) option * stationary: float list option * CMethod
    /// `lyapunov(k)`: top k exponents of the Euler chain, averaged over [burnin, T] (1 ≤ k ≤ Dim).
    | QLyapunov of k: int
    /// `alignment on [lo, hi] bins n`: histogram of |cos(top Lyapunov vector, ν_T)| (0 ≤ lo < hi ≤ 1).
    | QAlignment of lo: float * hi: float * bins: int
    /// `samples(e1, ..., ek)`: each path's values of the observables at T (a CSV file; kind "samples");
    /// with `every Δ` (Some Δ), at t = 0, Δ, ..., T (trajectories; kind "samples_every").
    | QSamples of CExpr list * every: float option
    /// `score(x[i]) on [lo, hi] bins n`: E[ν_T,i | x_i in each bin] = ∂ log ρ_T / ∂x_i (state component `comp`).
    | QScore of comp: int * lo: float * hi: float * bins: int
    /// `log_normalizer` or `ess` of a weighted model (docs/weighted.md).
    | QWeight of name: string

type CheckedQuery =
    { Query: CQuery
      /// The query as written, white space collapsed.
      Text: string
      Pos: Pos
      /// Where the response method is written (the query's position when the default is used).
      MethodPos: Pos }

/// `simulate { accuracy = ε }` (or `relative_accuracy = ε`): multilevel Monte Carlo (docs/mlmc.md).
/// `dt` is then the coarsest step and `paths` the pilot samples per level.
type Multilevel =
    { /// The root-mean-square error target of every query (absolute, or relative to |value|).
      Accuracy: float
      Relative: bool
      /// The finest level allowed (finest step dt 2^-max_levels).
      MaxLevels: int
      /// Where `accuracy` / `relative_accuracy` is written (the located errors of what it cannot do).
      Pos: Pos }

type Settings =
    { Paths: int64
      Dt: float
      T: float
      Seed: uint64
      Scheme: string
      Burnin: float
      /// None: plain Monte Carlo with the given dt and paths.
      Multilevel: Multilevel option
      /// `bias = estimate | off`: the discretisation-error estimate on every result (default estimate).
      Bias: string
      /// `extrapolate = richardson | none`: report 2 Q(dt/2) − Q(dt) instead of Q(dt) (default none).
      Extrapolate: string
      /// Where `extrapolate` is written (line 0 when it is not: the default), for the refusals of a
      /// backend that cannot extrapolate.
      ExtrapolatePos: Pos }

/// A parameter set: a name and a value for every parameter (in `CheckedModel.Params` order).
type ParamSet = { Name: string; Values: float[] }

/// How the equations' `b dW` terms are read. A Stratonovich model is converted to the Itô model
/// with the same law when it is lowered (`Lower.itoCorrection`), so everything downstream is Itô.
type Calculus =
    | Ito
    | Stratonovich

type CheckedModel =
    { Name: string
      Consts: (string * int) list
      Params: ParamInfo list
      States: StateInfo list
      Brownians: BrownianInfo list
      Inits: CInit list
      Equations: CEquation list
      /// Engine state dimension (sum of state sizes).
      Dim: int
      /// Engine noise dimension (sum of brownian sizes).
      NoiseDim: int
      /// As written (`calculus ...`), Itô by default; `Equations` hold the coefficients as written.
      Calculus: Calculus
      Pos: Pos }

/// How the population is resampled (`resample = ...` in simulate).
type Resample =
    | Systematic
    | Stratified
    | Multinomial
    | Residual
    | BirthDeath
    | NoResample

/// A model's Feynman–Kac weight (`weight w`, `d log w = ...`) and its simulate settings. The weight is
/// carried by a hidden scalar state (its log, init 0) appended after the user's states; `log_density(...)`
/// by a second hidden state that the engine fills before each step (docs/weighted.md).
type WeightSpec =
    { Name: string
      /// The hidden state holding log w.
      LogState: string
      /// The hidden state holding log_density(...), and the states whose density it estimates (by name).
      DensityState: string option
      DensityOf: string list
      Resample: Resample
      Ess: float
      /// `bandwidth = h` (one value for every coordinate); None: Silverman's rule.
      Bandwidth: float option
      Pos: Pos }

/// A checked file: the model, its parameter sets, settings and queries.
type CheckedFile =
    { Model: CheckedModel
      Sets: ParamSet list
      Settings: Settings
      Queries: CheckedQuery list
      /// What is legal but probably not meant (a file without queries, a brownian no equation uses),
      /// located like the errors; reported, and fatal only with `--strict`.
      Warnings: Diagnostic list
      /// The weight, when the model declares one (None: the unweighted engine, bit for bit).
      Weight: WeightSpec option }
