/// The abstract syntax of `.sde` files, as written, with a source position on every node.
/// Positions never take part in equality: two trees that differ only in positions are equal,
/// which is what the parse/print round trip compares.
module Sde.Lang.Syntax

/// A position in the source text (1-based line and column).
[<CustomEquality; NoComparison>]
type Pos =
    { Line: int
      Col: int }
    override _.Equals(o: obj) = o :? Pos
    override _.GetHashCode() = 0
    override p.ToString() = sprintf "%d:%d" p.Line p.Col

let noPos = { Line = 0; Col = 0 }

/// A located diagnostic: `FILE:LINE:COL: error: Message`.
type Diagnostic = { Pos: Pos; Message: string }

type BinOp =
    | Add
    | Sub
    | Mul
    | Div
    | Pow

type CmpOp =
    | Eq
    | Ne
    | Lt
    | Le
    | Gt
    | Ge

type ReduceOp =
    | Sum
    | Avg

[<NoComparison>]
type Expr = { Kind: ExprKind; Pos: Pos }

and [<NoComparison>] ExprKind =
    | Num of float
    /// A name: const, param, scalar state, index variable, `t`, `dt`, or `dW` (differential of brownian `W`).
    | Var of string
    /// `x[e]`, `dW[e]`.
    | Index of string * Expr
    | Neg of Expr
    | Bin of BinOp * Expr * Expr
    /// `f(e, ...)` for the built-in functions.
    | Call of string * Expr list
    | If of Expr * Expr * Expr
    | Cmp of CmpOp * Expr * Expr
    | And of Expr * Expr
    | Or of Expr * Expr
    | Not of Expr
    /// `sum(j, e)` / `avg(j, e)`.
    | Reduce of ReduceOp * string * Expr

/// An end of a parameter domain: `-inf`, `inf`, or a number; open `(` or closed `[`.
[<NoComparison>]
type Bound =
    { Value: float
      Closed: bool }

[<NoComparison>]
type InitRhs =
    | InitValue of Expr
    | InitNormal of mean: Expr * sd: Expr
    | InitUniform of lo: Expr * hi: Expr

[<NoComparison>]
type ModelItem =
    | ConstDecl of name: string * value: Expr * Pos
    /// `param a = v` or, with a size, `param a[K] = v` (a vector: K components with one default).
    | ParamDecl of name: string * size: Expr option * value: Expr * domain: (Bound * Bound) option * Pos
    | StateDecl of name: string * size: Expr option * periodic: bool * Pos
    | BrownianDecl of name: string * size: Expr option * Pos
    /// `init x[i] ~ normal(...)`: target state, bound index variable.
    | InitDecl of state: string * index: string option * rhs: InitRhs * Pos
    /// `d x[i] = rhs`: the whole right side, linear in dt and dW (split by the checker).
    | Equation of state: string * index: string option * rhs: Expr * Pos
    /// `let name = e`: a named expression for the equations, inits and queries (scalar, no dt/dW).
    | LetDecl of name: string * value: Expr * Pos
    /// `weight w`: a Feynman–Kac weight carried by every path (docs/weighted.md).
    | WeightDecl of name: string * Pos
    /// `d log w = V dt [+ b dW]`: the weight's equation, linear in dt and dW.
    | LogWeightEquation of name: string * rhs: Expr * Pos
    /// `calculus stratonovich` / `calculus ito`: how the equations' noise terms are read, as written
    /// (the checker validates the name); the position is the name's.
    | CalculusDecl of calculus: string * Pos

[<NoComparison>]
type Model =
    { Name: string
      Items: ModelItem list
      Pos: Pos }

/// `over [t0, t1]` time window.
[<NoComparison>]
type Window = { T0: Expr; T1: Expr }

/// A method argument: `alpha = 0.2`, `mode = exact`.
[<NoComparison>]
type MethodArg =
    | ArgNum of name: string * Expr * Pos
    | ArgName of name: string * value: string * Pos

[<NoComparison>]
type Method =
    { Name: string
      Args: MethodArg list
      Pos: Pos }

[<NoComparison>]
type Target =
    | MeanOf of Expr
    /// `mean(e) every Δ`: the mean at t = 0, Δ, 2Δ, ... up to T (a time series).
    | SeriesOf of Expr * every: Expr
    /// `density(e) on [a, b] bins n`.
    | DensityOf of Expr * lo: Expr * hi: Expr * bins: Expr
    /// `variance(e)`: the unbiased sample variance over paths.
    | VarianceOf of Expr
    /// `covariance(e1, e2)`: the unbiased sample covariance over paths.
    | CovarianceOf of Expr * Expr
    /// `quantile(e, p) on [a, b] bins n`: the p-quantile, read off a histogram on [a, b].
    | QuantileOf of Expr * p: Expr * lo: Expr * hi: Expr * bins: Expr
    /// `density(e1, e2) on [a, b] x [c, d] bins n x m`.
    | Density2Of of Expr * Expr * lo1: Expr * hi1: Expr * lo2: Expr * hi2: Expr * bins1: Expr * bins2: Expr

[<NoComparison>]
type QueryKind =
    /// `mean(e)`, `density(e) on ... bins n`, optionally `over [t0, t1]`.
    | Plain of Target * over: Window option
    /// `d mean(e) / d p [on ... bins n] [over [t0,t1]] [stationary window W[, W2 ...]] [with method]`.
    | Response of Target * wrt: string * over: Window option * stationary: Expr list option * Method option
    /// `lyapunov(k)`: the top k Lyapunov exponents of the simulated chain, averaged over [burnin, T].
    | Lyapunov of k: Expr
    /// `alignment on [a, b] bins n`: histogram of |cos| of the angle between the top Lyapunov vector
    /// and the divergence-kernel score estimate ν_T, per path at T.
    | Alignment of lo: Expr * hi: Expr * bins: Expr
    /// `let name = e`: not a query but a named observable for the queries (and lets) after it.
    | Let of name: string * Expr
    /// `samples(e1, ..., ek)`: the per-path values at T, written to a CSV file (`every Δ`: trajectories,
    /// refused as not available yet).
    | Samples of Expr list * every: Expr option
    /// `score(x[i]) on [a, b] bins n`: the marginal score ∂ log ρ_T / ∂x_i per bin (the binned conditional
    /// mean of the divergence-kernel covector ν_T).
    | Score of Expr * lo: Expr * hi: Expr * bins: Expr
    /// `log_normalizer` or `ess`: a property of the weighted population (weighted models only).
    | WeightQuery of name: string

[<NoComparison>]
type Query =
    { Kind: QueryKind
      /// The query as written, white space collapsed (the JSON's `query` field). Not compared.
      Text: QueryText
      Pos: Pos }

and [<CustomEquality; NoComparison>] QueryText =
    | QueryText of string
    override _.Equals(o: obj) = o :? QueryText
    override _.GetHashCode() = 0
    member q.Value = let (QueryText s) = q in s

[<NoComparison>]
type Setting = { Key: string; Value: Expr; Pos: Pos }

/// The function name of a list value `[e0, e1, ...]`, the whole value of a vector param in a `params`
/// block (`a = [1, 2]`): a `Call(listValue, items)` that only a params block's setting holds (no
/// identifier can be spelled so).
let listValue = "[]"

/// The value of a `fit` block setting.
[<NoComparison>]
type FitValue =
    /// `iterations = 300`, `bandwidth = 0.2`
    | FitExpr of Expr
    /// `optimizer = adam(lr = 0.05)`, `optimizer = lbfgs`, `objective = jacobian_matching(lambda = 1)`
    | FitMethod of Method
    /// `objective = kl at T` (the time, or the name `T`) / `objective = kl stationary window W`
    | FitKl of at: Expr option * window: Expr option

[<NoComparison>]
/// (Field names of their own: a record expression `{ Key = ...; Value = ...; Pos = ... }` stays a `Setting`.)
type FitSetting = { FitKey: string; FitArg: FitValue; FitPos: Pos }

[<NoComparison>]
type TopItem =
    | ModelBlock of Model
    | ParamsBlock of name: string * assignments: Setting list * Pos
    | SweepDecl of param: string * from: Expr * upTo: Expr * step: Expr * Pos
    | SimulateBlock of Setting list * Pos
    | QueryBlock of Query list * Pos
    /// `fit p, q to "data.csv" { objective = kl at T; optimizer = adam(lr = 0.05); iterations = 300 }`:
    /// the params to learn (each with its position), the data file as written and its position, the settings.
    | FitBlock of parameters: (string * Pos) list * data: string * dataPos: Pos * FitSetting list * Pos

/// A whole `.sde` file.
[<NoComparison>]
type File = { Items: TopItem list }
