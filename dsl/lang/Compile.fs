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
      Type: Type
      ParamFields: FieldInfo[] }

    /// A boxed instance with the given parameter values (in `Ir.ParamNames` order).
    member m.Instance(values: float[]) : obj =
        let o = Activator.CreateInstance m.Type

        for i in 0 .. m.ParamFields.Length - 1 do
            m.ParamFields[i].SetValue(o, box values[i])

        o

/// y_k = x_k + f_k dt + sqdt Σ_l g_kl w_l, written against leaves State / Noise / Ext("dt"|"sqdt").
let stepExpressions (ir: ModelIr) : Sym[] =
    let dt = ext "dt" 0
    let sqdt = ext "sqdt" 0
    let gw = Array.create ir.Dim zero

    for d in ir.Diffusion do
        gw[d.Row] <- add gw[d.Row] (mul d.Coeff (noise d.Lane))

    Array.init ir.Dim (fun k -> add (state k) (add (mul ir.Drift[k] dt) (mul gw[k] sqdt)))

let diffusionApplied (ir: ModelIr) : Sym[] =
    let gw = Array.create ir.Dim zero

    for d in ir.Diffusion do
        gw[d.Row] <- add gw[d.Row] (mul d.Coeff (noise d.Lane))

    gw

let initExpressions (ir: ModelIr) : Sym[] =
    ir.Init
    |> Array.mapi (fun k init ->
        match init with
        | InitDet e -> e
        | InitNormal (m, s) -> add m (mul s (ext "zn" k))
        | InitUniform (a, b) -> add a (mul (sub b a) (ext "zu" k)))

let private outputs arg (es: Sym[]) =
    es |> Array.mapi (fun k e -> { Arg = arg; Lane = k; Value = e }) |> Array.toList

/// Emit the model type.
let compile (ir: ModelIr) (observables: Sym[]) : CompiledModel =
    let iface = typeof<ISdeModel>
    let mb = defineModelType ir.Name ir.ParamNames [| iface |]
    implementConstInt mb iface "Dim" ir.Dim
    implementConstInt mb iface "NoiseDim" ir.NoiseDim
    implementConstInt mb iface "ObservableCount" observables.Length
    // Init<TV>(x, zn, zu)
    let initBind = standardBind mb 0 0 0 [ "zn", FromVec(2, 0); "zu", FromVec(3, 0) ]
    implementMethod mb iface "Init" initBind (outputs 1 (initExpressions ir))
    // Step<TV>(x, y, w, t, dt, sqdt)
    let stepBind = standardBind mb 1 3 4 [ "dt", FromArg 5; "sqdt", FromArg 6 ]
    implementMethod mb iface "Step" stepBind (outputs 2 (stepExpressions ir))
    // Drift<TV>(x, t, f)
    implementMethod mb iface "Drift" (standardBind mb 1 0 2 []) (outputs 3 ir.Drift)
    // Diffuse<TV>(x, t, w, gw)
    implementMethod mb iface "Diffuse" (standardBind mb 1 3 2 []) (outputs 4 (diffusionApplied ir))
    // Observe<TV>(x, t, obs)
    implementMethod mb iface "Observe" (standardBind mb 1 0 2 []) (outputs 3 observables)
    let t = mb.Type.CreateType()

    { Ir = ir
      Observables = observables
      Type = t
      ParamFields = mb.Params |> Array.map (fun f -> t.GetField(f.Name)) }
