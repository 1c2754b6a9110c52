/// Back end, lanes over paths: emits the model's Euler–Maruyama step for four paths at once
/// (`ISdeLaneModel.StepLanes4`), one path per lane of a `Vector256<double>`, over struct-of-arrays
/// buffers (component i of path j at `p[i*4 + j]`). It walks the same IR as `Emit`'s one-path step and
/// makes, per lane, the same operations in the same order (sums left to right with `-z` as a
/// subtraction, integer powers by the same squarings, `if` as a select of both branches, the
/// transcendental functions through `Math` per lane: `LaneMath`), so that every lane gets the bits of
/// the one-path step. +, −, ×, ÷ are the vector type's operators (JIT intrinsics, expanded whatever
/// the method's size), the rest `LaneMath`'s small methods.
module Sde.Lang.LaneEmit

open System
open System.Collections.Generic
open System.Reflection
open System.Reflection.Emit
open System.Runtime.Intrinsics
open Sde.Core
open Sde.Lang.Ir
open Sde.Lang.Emit

let private vt = typeof<Vector256<double>>
let private op name (arity: int) = vt.GetMethod(name, Array.create arity vt)
let private vAdd = op "op_Addition" 2
let private vSub = op "op_Subtraction" 2
let private vMul = op "op_Multiply" 2
let private vDiv = op "op_Division" 2
let private vNeg = op "op_UnaryNegation" 1
let private vCreate = typeof<Vector256>.GetMethod("Create", [| typeof<double> |])

let private genericOf name =
    typeof<Vector256>.GetMethods()
    |> Array.find (fun m -> m.Name = name && m.IsGenericMethodDefinition && m.GetParameters().Length = (if name = "Load" then 1 else 2))
    |> fun m -> m.MakeGenericMethod(typeof<double>)

let private vLoad = genericOf "Load"
let private vStore = genericOf "Store"
let private lane name = typeof<LaneMath>.GetMethod(name)

/// Largest IL body (bytes) and number of vector locals for which the lane step is offered: past the
/// JIT's limits for full optimisation (60,000 bytes of IL, 2,000 locals) it would compile the method
/// without optimisation, far slower than one path at a time.
let maxLaneIl = 50_000
let maxLaneLocals = 1_500

/// Where a lane method finds its inputs: the IL argument indices of the state, noise, time, dt and
/// sqdt, and of the buffer its values go to.
type private LaneArgs = { X: int; W: int; T: int; Dt: int; Sqdt: int; Out: int }

/// `StepLanes4(double* x, double* y, double* w, double t, double dt, double sqdt)`.
let private stepArgs = { X = 1; Out = 2; W = 3; T = 4; Dt = 5; Sqdt = 6 }

/// `TangentLanes4(double* x, double* w, double t, double dt, double sqdt, double* values)`.
let private tangentArgs = { X = 1; W = 2; T = 3; Dt = 4; Sqdt = 5; Out = 6 }

type private LaneBody =
    { Il: ILGenerator
      Args: LaneArgs
      Params: FieldBuilder[]
      Uses: Dictionary<Sym, int>
      Locals: Dictionary<Sym, LocalBuilder>
      Scratch: LocalBuilder }

let private countUses (roots: Sym seq) =
    let uses = Dictionary<Sym, int>(HashIdentity.Structural)

    let rec visit (e: Sym) =
        match uses.TryGetValue e with
        | true, n -> uses[e] <- n + 1
        | _ ->
            uses[e] <- 1
            List.iter visit e.Args

    Seq.iter visit roots
    uses

/// The address of row `k` (four doubles) of the buffer in argument `arg`.
let private emitRow (il: ILGenerator) (arg: int) (k: int) =
    il.Emit(OpCodes.Ldarg_S, byte arg)

    if k <> 0 then
        il.Emit(OpCodes.Ldc_I4, k * 32)
        il.Emit(OpCodes.Conv_I)
        il.Emit(OpCodes.Add)

let private broadcast (il: ILGenerator) = il.Emit(OpCodes.Call, vCreate)

/// Leave the lane vector of `e` on the stack; shared nodes once, in locals (both branches of an `if`
/// are computed, so a local is assigned on every path through the method).
let rec private emitExpr (b: LaneBody) (e: Sym) =
    match b.Locals.TryGetValue e with
    | true, l -> b.Il.Emit(OpCodes.Ldloc, l)
    | _ ->
        emitRaw b e

        let shared =
            match e.Op with
            | Num _ -> false
            | _ -> (match b.Uses.TryGetValue e with | true, n -> n > 1 | _ -> false)

        if shared then
            let l = b.Il.DeclareLocal(vt)
            b.Il.Emit(OpCodes.Dup)
            b.Il.Emit(OpCodes.Stloc, l)
            b.Locals[e] <- l

and private emitRaw (b: LaneBody) (e: Sym) =
    let il = b.Il
    let go = emitExpr b
    let call (m: MethodInfo) = il.Emit(OpCodes.Call, m)

    match e.Op, e.Args with
    | Num v, _ ->
        il.Emit(OpCodes.Ldc_R8, v)
        broadcast il
    | State k, _ ->
        emitRow il b.Args.X k
        call vLoad
    | Noise l, _ ->
        emitRow il b.Args.W l
        call vLoad
    | Time, _ ->
        il.Emit(OpCodes.Ldarg_S, byte b.Args.T)
        broadcast il
    | Ext ("dt", _), _ ->
        il.Emit(OpCodes.Ldarg_S, byte b.Args.Dt)
        broadcast il
    | Ext ("sqdt", _), _ ->
        il.Emit(OpCodes.Ldarg_S, byte b.Args.Sqdt)
        broadcast il
    | Param i, _ ->
        il.Emit(OpCodes.Ldarg_0)
        il.Emit(OpCodes.Ldfld, b.Params[i])
        broadcast il
    | Add, x :: xs ->
        go x

        for y in xs do
            match y.Op, y.Args with
            | Neg, [ z ] ->
                go z
                call vSub
            | _ ->
                go y
                call vAdd
    | Mul, x :: xs ->
        go x

        for y in xs do
            go y
            call vMul
    | Neg, [ x ] ->
        go x
        call vNeg
    | Div, [ x; y ] ->
        go x
        go y
        call vDiv
    | PowI n, [ x ] ->
        // the one-path step's squarings, on the same operands
        let m = abs n
        go x
        il.Emit(OpCodes.Stloc, b.Scratch)

        if n < 0 then
            il.Emit(OpCodes.Ldc_R8, 1.0)
            broadcast il

        let rec powCode (k: int) =
            if k = 1 then
                il.Emit(OpCodes.Ldloc, b.Scratch)
            elif k % 2 = 0 then
                powCode (k / 2)
                il.Emit(OpCodes.Dup)
                call vMul
            else
                powCode (k - 1)
                il.Emit(OpCodes.Ldloc, b.Scratch)
                call vMul

        powCode m
        if n < 0 then call vDiv
    | Pow, [ x; y ] ->
        go x
        go y
        call (lane "Pow")
    | Un f, [ x ] ->
        go x

        let name =
            match f with
            | UExp -> "Exp"
            | ULog -> "Log"
            | USqrt -> "Sqrt"
            | USin -> "Sin"
            | UCos -> "Cos"
            | UTan -> "Tan"
            | UTanh -> "Tanh"
            | UAbs -> "Abs"
            | UFloor -> "Floor"
            | USign -> "Sign"

        call (lane name)
    | Min, [ x; y ] ->
        go x
        go y
        call (lane "Min")
    | Max, [ x; y ] ->
        go x
        go y
        call (lane "Max")
    | Select, [ c; x; y ] ->
        emitCond b c
        go x
        go y
        call (lane "Select")
    | (Cmp _ | And | Or | Not), _ ->
        emitCond b e
        call (lane "AsNumber")
    | op, args -> failwithf "lane emit: node %A/%d has no lane form" op args.Length

/// Leave a lane mask (all bits set where true) on the stack.
and private emitCond (b: LaneBody) (c: Sym) =
    let call (name: string) = b.Il.Emit(OpCodes.Call, lane name)

    match c.Op, c.Args with
    | Cmp op, [ x; y ] ->
        emitExpr b x
        emitExpr b y

        call (
            match op with
            | Syntax.Eq -> "Eq"
            | Syntax.Lt -> "Lt"
            | Syntax.Gt -> "Gt"
            | Syntax.Ne -> "Ne"
            | Syntax.Le -> "Le"
            | Syntax.Ge -> "Ge"
        )
    | And, [ x; y ] ->
        emitCond b x
        emitCond b y
        call "And"
    | Or, [ x; y ] ->
        emitCond b x
        emitCond b y
        call "Or"
    | Not, [ x ] ->
        emitCond b x
        call "Not"
    | _ ->
        emitExpr b c
        call "NonZero"

/// Can the lane methods compute these expressions (no loop templates, no inputs other than dt and sqdt)?
/// Each shared node is visited once (derivative expressions are DAGs whose trees can be exponentially larger).
let private laneable (es: Sym list) =
    let seen = HashSet<Sym>(HashIdentity.Reference)

    let rec ok (e: Sym) =
        if not (seen.Add e) then
            true
        else
            match e.Op with
            | StateAt _ | NoiseAt _ | ExtAt _ | SumLoop _ -> false
            | Ext (n, _) when n <> "dt" && n <> "sqdt" -> false
            | _ -> List.forall ok e.Args

    List.forall ok es

/// A lane method of the model type implementing `name` of `iface`: the values `es` stored in rows 0, 1, …
/// of the output argument; or, when `es` is None or the body is past the JIT's limits, a body that throws
/// (the engine never calls it then). Returns whether the lane method is offered.
let private implementLanes (mb: ModelBuilder) (iface: Type) (name: string) (args: LaneArgs) (es: Sym[] option) =
    let im = iface.GetMethod(name)

    let m =
        mb.Type.DefineMethod(
            iface.Name + "." + name,
            MethodAttributes.Private ||| MethodAttributes.Virtual ||| MethodAttributes.Final
            ||| MethodAttributes.HideBySig ||| MethodAttributes.NewSlot,
            typeof<Void>,
            im.GetParameters() |> Array.map (fun p -> p.ParameterType)
        )

    m.SetImplementationFlags(MethodImplAttributes.AggressiveOptimization)
    let il = m.GetILGenerator()

    let values = es |> Option.map (List.ofArray >> shareAll)

    let fits =
        match values with
        | Some values when laneable values ->

            let b =
                { Il = il
                  Args = args
                  Params = mb.Params
                  Uses = countUses values
                  Locals = Dictionary<Sym, LocalBuilder>(HashIdentity.Structural)
                  Scratch = il.DeclareLocal(vt) }

            values
            |> List.iteri (fun k v ->
                emitExpr b v
                emitRow il args.Out k
                il.Emit(OpCodes.Call, vStore))

            il.Emit(OpCodes.Ret)
            il.ILOffset <= maxLaneIl && b.Locals.Count <= maxLaneLocals
        | _ ->
            il.Emit(OpCodes.Ldstr, "this model has no lane form of " + name)
            il.Emit(OpCodes.Newobj, typeof<NotSupportedException>.GetConstructor([| typeof<string> |]))
            il.Emit(OpCodes.Throw)
            false

    mb.Type.DefineMethodOverride(m, im)
    fits

/// Implement `ISdeLaneModel` on the model type: `StepLanes4` from the one-path step's expressions
/// `step` (one per state component) and `LaneWidth` 4 (0 when `step` is None, a model whose step has
/// loops, or the body is past the JIT's limits); `TangentLanes4` from `tangent` (the derivative values in
/// the order `ISdeLaneModel.TangentLanes4` documents) and `TangentLaneWidth` likewise.
let implementLaneStep (mb: ModelBuilder) (step: Sym[] option) (tangent: Sym[] option) =
    let iface = typeof<ISdeLaneModel>
    let fits = implementLanes mb iface "StepLanes4" stepArgs step
    implementConstInt mb iface "LaneWidth" (if fits then 4 else 0)
    let tfits = implementLanes mb iface "TangentLanes4" tangentArgs tangent
    implementConstInt mb iface "TangentLaneWidth" (if tfits then 4 else 0)
