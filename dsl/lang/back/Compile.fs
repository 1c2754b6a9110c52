/// From the scalar IR to a runnable model: emits the `ISdeModel` value type and creates instances
/// with parameter values.
module Sde.Lang.Compile

open System
open System.Reflection
open Sde.Core
open Sde.Lang.Ir
open Sde.Lang.Lower
open Sde.Lang.Emit

/// A model compiled to a value type; instances differ only in their parameter values.
type CompiledModel =
    { Ir: ModelIr
      /// The observables every query of the file needs, numbered as `ISdeModel.Observe` writes them.
      Observables: Sym[]
      /// The derivatives (for the response parameters of the file's queries).
      Tangent: Tangent.TangentIr
      Structure: TangentStructure
      Type: Type
      ParamFields: FieldInfo[] }

    /// A boxed instance with the given parameter values (in `Ir.ParamNames` order).
    member m.Instance(values: float[]) : obj =
        let o = Activator.CreateInstance m.Type

        for i in 0 .. m.ParamFields.Length - 1 do
            m.ParamFields[i].SetValue(o, box values[i])

        o

let private outputs arg (es: Sym[]) =
    es |> Array.mapi (fun k e -> { Arg = arg; Lane = k; Value = e }) |> Array.toList

let private sparseOut arg (xs: (int * int * Sym) list) =
    xs |> List.mapi (fun n (_, _, v) -> { Arg = arg; Lane = n; Value = v })

/// Does the expression depend on the state, the noise or the time (anything that changes along a path)?
let rec private varies (e: Sym) =
    match e.Op with
    | State _ | Noise _ | Time -> true
    | _ -> List.exists varies e.Args

let private structureOf (ir: ModelIr) (tg: Tangent.TangentIr) : TangentStructure =
    let col f (xs: (int * int * Sym) list) = xs |> List.map f |> List.toArray

    TangentStructure(
        JRow = col (fun (i, _, _) -> i) tg.J,
        JCol = col (fun (_, j, _) -> j) tg.J,
        HRow = (tg.Hessian |> List.map (fun (i, _, _, _) -> i) |> List.toArray),
        HCol = (tg.Hessian |> List.map (fun (_, j, _, _) -> j) |> List.toArray),
        HK = (tg.Hessian |> List.map (fun (_, _, k, _) -> k) |> List.toArray),
        GRow = col (fun (i, _, _) -> i) tg.Sigma,
        GLane = col (fun (_, l, _) -> l) tg.Sigma,
        Params = tg.Params,
        DChiRow = (tg.DChi |> Array.map (col (fun (i, _, _) -> i))),
        DChiCol = (tg.DChi |> Array.map (col (fun (_, j, _) -> j))),
        DgRow = (tg.Dg |> Array.map (col (fun (i, _, _) -> i))),
        DgLane = (tg.Dg |> Array.map (col (fun (_, l, _) -> l))),
        ObsGradObs = col (fun (q, _, _) -> q) tg.ObsGrad,
        ObsGradState = col (fun (_, k, _) -> k) tg.ObsGrad,
        AdditiveNoise = tg.AdditiveNoise,
        HessianConstant = (tg.Hessian |> List.forall (fun (_, _, _, v) -> not (varies v))),
        InitHasScore = tg.InitHasScore,
        NormalInit = (ir.Init |> Array.map (function InitNormal _ -> true | _ -> false))
    )

/// The outputs of the components that no loop computes.
let private outputsExcept (covered: bool[]) arg (es: Sym[]) =
    [ for k in 0 .. es.Length - 1 do
          if not covered[k] then { Arg = arg; Lane = k; Value = es[k] } ]

/// Emit the model type; with `derivatives`, the derivative code for the response parameters `wrt`
/// (the Jacobian, Hessian, ... that responses, Lyapunov exponents and alignment need). Without it
/// the `ISdeTangentModel` methods are empty and the structure has no entries: a model for plain
/// simulation, which may have loops (`Loops`).
let compileWith (derivatives: bool) (ir: ModelIr) (observables: Sym[]) (wrt: int[]) : CompiledModel =
    if not derivatives && wrt.Length > 0 then invalidArg "wrt" "response parameters need the derivatives"
    if derivatives && not (ir.Loops.IsEmpty && ir.InitLoops.IsEmpty) then invalidArg "ir" "loops have no derivative code"
    let iface = typeof<ISdeModel>
    let tface = typeof<ISdeTangentModel>
    let tg = if derivatives then Tangent.build ir observables wrt else Tangent.none ir
    let rows = loopedRows ir
    let initRows = loopedInits ir
    let loopsOf arg (value: LoopIr -> Sym) =
        ir.Loops |> List.map (fun l -> { LoopOutput.Arg = arg; Target = l.Target; Ranges = l.Ranges; Value = value l })
    let mb = defineModelType ir.Name ir.ParamNames [| iface; tface; typeof<ISdeLaneModel> |]
    implementConstInt mb iface "Dim" ir.Dim
    implementConstInt mb iface "NoiseDim" (noiseLanes ir)
    implementConstInt mb iface "ObservableCount" observables.Length
    // Init<TV>(x, zn, zu)
    let initBind = standardBind mb 0 0 0 [ "zn", FromVec(2, 0); "zu", FromVec(3, 0) ]
    let initLoops = ir.InitLoops |> List.map (fun l -> { LoopOutput.Arg = 1; Target = l.Target; Ranges = l.Ranges; Value = l.Value })
    implementMethodWithLoops mb iface "Init" initBind (outputsExcept initRows 1 (initExpressionsExcept initRows ir)) initLoops
    // Step<TV>(x, y, w, t, dt, sqdt)
    let stepBind = standardBind mb 1 3 4 [ "dt", FromArg 5; "sqdt", FromArg 6 ]
    let stepLoops = loopsOf 2 (fun l -> eulerStep (stateAt l.Target) l.Drift l.Gw)
    implementMethodWithLoops mb iface "Step" stepBind (outputsExcept rows 2 tg.Step) stepLoops
    // Drift<TV>(x, t, f)
    implementMethodWithLoops mb iface "Drift" (standardBind mb 1 0 2 []) (outputsExcept rows 3 ir.Drift) (loopsOf 3 (fun l -> l.Drift))
    // Diffuse<TV>(x, t, w, gw)
    implementMethodWithLoops mb iface "Diffuse" (standardBind mb 1 3 2 []) (outputsExcept rows 4 (diffusionApplied ir)) (loopsOf 4 (fun l -> l.Gw))
    // Observe<TV>(x, t, obs)
    implementMethodReducing mb iface "Observe" (standardBind mb 1 0 2 []) Loops.defaultMinLoopSize (outputs 3 observables)
    // StepLanes4(x, y, w, t, dt, sqdt): four paths per step in the vector lanes (the step without loops,
    // of a model small enough for the engine to choose lanes: a wide model's lane step would only double
    // its compile time)
    // TangentLanes4: the response engine's lanes over paths take models of a few states (SmallResponseLanes)
    // (only where the engine can use them: a model with noise)
    let tangentValues =
        if derivatives && ir.Dim <= SmallResponseLanes.MaxDim && noiseLanes ir >= 1 then
            let vals (xs: (int * int * Sym) list) = xs |> List.map (fun (_, _, v) -> v)
            [ yield! vals tg.J
              yield! tg.Hessian |> List.map (fun (_, _, _, v) -> v)
              yield! vals tg.Sigma
              for p in 0 .. tg.Chi.Length - 1 do
                  yield! tg.Chi[p]
                  yield! vals tg.DChi[p]
                  yield! vals tg.Dg[p] ]
            |> List.toArray
            |> Some
        else
            None
    LaneEmit.implementLaneStep mb (if ir.Loops.IsEmpty && ir.Dim <= Engine.MaxAutoLaneDim then Some tg.Step else None) tangentValues
    // Jacobian / Hessian <TV>(x, w, t, dt, sqdt, values)
    let dBind = standardBind mb 1 2 3 [ "dt", FromArg 4; "sqdt", FromArg 5 ]
    implementMethod mb tface "Jacobian" dBind (sparseOut 6 tg.J)
    let hOut = tg.Hessian |> List.mapi (fun n (_, _, _, v) -> { Arg = 6; Lane = n; Value = v })
    implementMethod mb tface "Hessian" dBind hOut
    // Sigma<TV>(x, t, values)
    implementMethod mb tface "Sigma" (standardBind mb 1 0 2 []) (sparseOut 3 tg.Sigma)
    // ParamTangent<TV>(which, x, w, t, dt, sqdt, chi, dchi, dg)
    let ptBind = standardBind mb 2 3 4 [ "dt", FromArg 5; "sqdt", FromArg 6 ]
    let blocks =
        Array.init wrt.Length (fun p -> outputs 7 tg.Chi[p] @ sparseOut 8 tg.DChi[p] @ sparseOut 9 tg.Dg[p])
    implementSwitch mb tface "ParamTangent" ptBind 1 blocks
    // ObservableGradient<TV>(x, t, values)
    implementMethod mb tface "ObservableGradient" (standardBind mb 1 0 2 []) (sparseOut 3 tg.ObsGrad)
    // InitScore<TV>(x, nu)
    implementMethod mb tface "InitScore" (standardBind mb 1 0 0 []) (outputs 2 tg.InitScore)
    // InitParamScore<TV>(x, zn, zu, out, v0)
    let ipBind = standardBind mb 1 0 0 [ "zn", FromVec(2, 0); "zu", FromVec(3, 0) ]
    let v0 = [ for p in 0 .. wrt.Length - 1 do for k in 0 .. ir.Dim - 1 -> { Arg = 5; Lane = p * ir.Dim + k; Value = tg.InitTangent[p][k] } ]
    implementMethod mb tface "InitParamScore" ipBind (outputs 4 tg.InitParamScore @ v0)
    let t = mb.Type.CreateType()
    // one listing of the fields (GetField by name scans them all each time: quadratic in the params)
    let fields = t.GetFields() |> Array.map (fun f -> f.Name, f) |> dict

    { Ir = ir
      Observables = observables
      Tangent = tg
      Structure = structureOf ir tg
      Type = t
      ParamFields = mb.Params |> Array.map (fun f -> fields[f.Name]) }

/// Emit the model type with the derivatives for the response parameters `wrt` (every component
/// unrolled).
let compile (ir: ModelIr) (observables: Sym[]) (wrt: int[]) : CompiledModel = compileWith true ir observables wrt
