/// Symbolic derivatives of a lowered model, with their sparsity: the Jacobian of the Euler step,
/// its state derivatives (the Hessian terms of ∇ log|det J|), the parameter perturbation χ and its
/// Jacobian, the diffusion and its parameter derivative, the observables' gradients and the initial
/// scores. Every entry is simplified and only structural non-zeros are kept.
module Sde.Lang.Tangent

open Sde.Lang.Ir
open Sde.Lang.Lower

/// A sparse matrix as (row, column, value) triples in a fixed order.
type Sparse = (int * int * Sym) list

type TangentIr =
    { /// G_i(x, w) = x_i + f_i Δt + Σ_l g_il √Δt w_l.
      Step: Sym[]
      J: Sparse
      /// (i, j, k, ∂_k J_ij).
      Hessian: (int * int * int * Sym) list
      /// g_il (without √Δt).
      Sigma: Sparse
      /// Model parameter indices differentiated by some query.
      Params: int[]
      /// Per response parameter: χ (dense), Dχ, ∂_γ g.
      Chi: Sym[][]
      DChi: Sparse[]
      Dg: Sparse[]
      /// (observable, state, ∂φ/∂x).
      ObsGrad: Sparse
      /// ν₀ per component (0 where the init is not normal).
      InitScore: Sym[]
      /// ℓ₀ per response parameter; ∂_γ x₀ per response parameter (dense).
      InitParamScore: Sym[]
      InitTangent: Sym[][]
      AdditiveNoise: bool
      InitHasScore: bool }

/// Most structural non-zeros of the step's Jacobian, and most entries of its state derivatives (the
/// Hessian terms): a dense nonlinear coupling over n states has n² and n³ of them, which no compile
/// of n = 1000 would finish.
let maxDerivativeEntries = Limits.derivativeEntries

/// A model whose derivatives would pass `maxDerivativeEntries` (the message says which).
exception TooManyDerivatives of string

let private checkEntries (what: string) (count: int64) =
    if count > maxDerivativeEntries then
        raise (TooManyDerivatives(sprintf "the %s has at least %d entries; at most %d (a dense nonlinear coupling of n states has n^2 Jacobian and n^3 Hessian entries)" what count maxDerivativeEntries))

let private jacobianOf (rows: Sym[]) : Sparse =
    checkEntries "Jacobian of the step" (rows |> Array.sumBy (fun r -> int64 (stateDeps r).Length))

    [ for i in 0 .. rows.Length - 1 do
          for j, d in stateGradient rows[i] -> i, j, d ]

/// Compute every derivative the response and Lyapunov engines need, for the given parameters.
let build (ir: ModelIr) (observables: Sym[]) (wrt: int[]) : TangentIr =
    let step = stepExpressions ir
    let j = jacobianOf step

    // counted with an early stop: each count costs about the entries it finds
    let hessianEntries =
        let mutable n = 0L
        let mutable rest = j

        while n <= maxDerivativeEntries && not rest.IsEmpty do
            let (_, _, v) = rest.Head
            n <- n + int64 (stateDeps v).Length
            rest <- rest.Tail

        n

    checkEntries "state derivative of the Jacobian (the Hessian terms)" hessianEntries

    let hessian =
        [ for (i, c, v) in j do
              for k, d in stateGradient v -> i, c, k, d ]

    let sigma = ir.Diffusion |> List.map (fun d -> d.Row, d.Lane, d.Coeff)

    let chi = wrt |> Array.map (fun p -> step |> Array.map (derivative (Param p)))
    let dchi = chi |> Array.map jacobianOf

    let dg =
        wrt
        |> Array.map (fun p ->
            [ for (r, l, c) in sigma do
                  let d = derivative (Param p) c
                  if not (isZero d) then r, l, d ])

    let obsGrad =
        [ for q in 0 .. observables.Length - 1 do
              for k, d in stateGradient observables[q] -> q, k, d ]

    // ν₀ and ℓ₀ for normal inits: log N(x; m, s) = -(x-m)²/(2s²) - log s + const
    let normalLogDensity k =
        match ir.Init[k] with
        | InitNormal (m, s) ->
            let z = div (sub (state k) m) s
            Some(sub (mul (num -0.5) (powi z 2)) (unary ULog s))
        | _ -> None

    let logRho0 = [ for k in 0 .. ir.Dim - 1 -> normalLogDensity k ] |> List.choose id |> sumAll
    let initScore = Array.create ir.Dim zero

    for k, d in stateGradient logRho0 do
        initScore[k] <- d

    let initParamScore = wrt |> Array.map (fun p -> derivative (Param p) logRho0)
    let inits = initExpressions ir
    let initTangent = wrt |> Array.map (fun p -> inits |> Array.map (derivative (Param p)))

    { Step = step
      J = j
      Hessian = hessian
      Sigma = sigma
      Params = wrt
      Chi = chi
      DChi = dchi
      Dg = dg
      ObsGrad = obsGrad
      InitScore = initScore
      InitParamScore = initParamScore
      InitTangent = initTangent
      AdditiveNoise = additiveNoise ir
      InitHasScore = ir.Init |> Array.forall (function InitNormal _ -> true | _ -> false) }

/// No derivatives: the step only, of the rows that no loop computes (`zero` in the others): a model
/// compiled for plain simulation (`Compile.compileWith`).
let none (ir: ModelIr) : TangentIr =
    { Step = stepExpressionsExcept (loopedRows ir) ir
      J = []
      Hessian = []
      Sigma = []
      Params = [||]
      Chi = [||]
      DChi = [||]
      Dg = [||]
      ObsGrad = []
      InitScore = [||]
      InitParamScore = [||]
      InitTangent = [||]
      AdditiveNoise = additiveNoise ir
      InitHasScore = ir.Init |> Array.forall (function InitNormal _ -> true | _ -> false) }

/// Parameters that a deterministic or uniform init depends on, per response parameter: the
/// divergence-kernel method handles a deterministic init through the first step's perturbation.
let initDependsOnParam (ir: ModelIr) (p: int) =
    ir.Init
    |> Array.exists (fun i ->
        match i with
        | InitDet e -> mentions (Param p) e
        | InitUniform (a, b) -> mentions (Param p) a || mentions (Param p) b
        | InitNormal _ -> false)

let uniformInitDependsOnParam (ir: ModelIr) (p: int) =
    ir.Init
    |> Array.exists (fun i ->
        match i with
        | InitUniform (a, b) -> mentions (Param p) a || mentions (Param p) b
        | _ -> false)
