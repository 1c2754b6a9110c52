/// Back end: emits, with System.Reflection.Emit, a value type per model that implements the core's
/// `ISdeModel`. Parameters are fields; every method is generic over the `IVec` accessor so that the
/// CPU engine (pointers) and GPU kernels (strided views) share the same type. Each method body is
/// straight-line code over the scalar IR, with common subexpressions held in locals.
module Sde.Lang.Emit

open System
open System.Collections.Generic
open System.Reflection
open System.Reflection.Emit
open Sde.Core
open Sde.Lang.Syntax
open Sde.Lang.Ir

/// Where a leaf of the IR comes from inside one emitted method.
type Load =
    /// Lane of a vector argument (argument index in the IL, lane).
    | FromVec of arg: int * lane: int
    /// A scalar double argument.
    | FromArg of arg: int
    /// A parameter field of the model struct.
    | FromField of FieldInfo
    | FromConst of float
    /// Lane `index + offset` of a vector argument, `index` a loop's int local (`emitLoop`).
    | FromVecAt of arg: int * offset: int * index: LocalBuilder

/// One output: store the value of `Value` in lane `Lane` of vector argument `Arg`.
type Output = { Arg: int; Lane: int; Value: Sym }

/// Everything a method body needs: IL, the accessor type parameter and leaf bindings.
type private Body =
    { Il: ILGenerator
      TV: Type
      Bind: Op -> Load
      GetItem: MethodInfo
      SetItem: MethodInfo }

let private mathMethod name (arity: int) =
    typeof<Math>.GetMethod(name, Array.create arity typeof<double>)

/// exp, log, sin and cos are the engine's own: the same bits on every backend and in the lanes (Sde.Core.Elementary).
let private elementary name =
    typeof<Elementary>.GetMethod(name, [| typeof<double> |])

/// Count how many times each node is referenced (a node reached again is not re-entered).
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

let private emitLoadLeaf (b: Body) (op: Op) =
    match b.Bind op with
    | FromVec (arg, lane) ->
        b.Il.Emit(OpCodes.Ldarga_S, byte arg)
        b.Il.Emit(OpCodes.Ldc_I4, lane)
        b.Il.Emit(OpCodes.Constrained, b.TV)
        b.Il.Emit(OpCodes.Callvirt, b.GetItem)
    | FromArg arg -> b.Il.Emit(OpCodes.Ldarg_S, byte arg)
    | FromField f ->
        b.Il.Emit(OpCodes.Ldarg_0)
        b.Il.Emit(OpCodes.Ldfld, f)
    | FromConst v -> b.Il.Emit(OpCodes.Ldc_R8, v)
    | FromVecAt (arg, offset, index) ->
        b.Il.Emit(OpCodes.Ldarga_S, byte arg)
        b.Il.Emit(OpCodes.Ldloc, index)

        if offset <> 0 then
            b.Il.Emit(OpCodes.Ldc_I4, offset)
            b.Il.Emit(OpCodes.Add)

        b.Il.Emit(OpCodes.Constrained, b.TV)
        b.Il.Emit(OpCodes.Callvirt, b.GetItem)

/// Most locals `emitExpr` gives shared nodes in one method: IL numbers locals with 16 bits, and an
/// unrolled model of 70,000 components shared that many (the CLR refused the method as an invalid
/// program). Past the cap a shared node is computed again where it is used again: the same bits,
/// more work.
let private maxSharedLocals = 60_000

/// The highest local index seen per method body (IL generator).
let private localsSeen = Runtime.CompilerServices.ConditionalWeakTable<ILGenerator, int ref>()

/// One scratch double per method body for the operations that hold an operand while they compute
/// (integer powers, sign): no emission happens between its store and its last load, so one serves
/// all (a local each made 10^5 powers 10^5 locals).
let private scratches = Runtime.CompilerServices.ConditionalWeakTable<ILGenerator, LocalBuilder>()

let private scratch (il: ILGenerator) =
    scratches.GetValue(il, fun il -> il.DeclareLocal(typeof<double>))

/// Emit code that leaves the value of `e` on the stack. Shared nodes are computed once into a
/// local; locals created inside a branch of `if` are forgotten after it (they are not assigned on
/// the other path).
let rec private emitExpr (b: Body) (uses: Dictionary<Sym, int>) (locals: Dictionary<Sym, LocalBuilder>) (e: Sym) =
    match locals.TryGetValue e with
    | true, l -> b.Il.Emit(OpCodes.Ldloc, l)
    | _ ->
        emitRaw b uses locals e

        let shared =
            match e.Op with
            | Num _ -> false
            | _ -> (match uses.TryGetValue e with | true, n -> n > 1 | _ -> false)

        let seen = localsSeen.GetValue(b.Il, fun _ -> ref 0)

        if shared && seen.Value < maxSharedLocals then
            let l = b.Il.DeclareLocal(typeof<double>)
            seen.Value <- l.LocalIndex + 1
            b.Il.Emit(OpCodes.Dup)
            b.Il.Emit(OpCodes.Stloc, l)
            locals[e] <- l

and private emitRaw (b: Body) uses locals (e: Sym) =
    let il = b.Il
    let go = emitExpr b uses locals

    let call name arity =
        il.Emit(OpCodes.Call, mathMethod name arity)

    match e.Op, e.Args with
    | Num v, _ -> il.Emit(OpCodes.Ldc_R8, v)
    | (Param _ | State _ | Time | Noise _ | Ext _ | StateAt _ | NoiseAt _ | ExtAt _) as op, _ -> emitLoadLeaf b op
    | Add, x :: xs ->
        go x

        for y in xs do
            match y.Op, y.Args with
            | Neg, [ z ] ->
                go z
                il.Emit(OpCodes.Sub)
            | _ ->
                go y
                il.Emit(OpCodes.Add)
    | Mul, x :: xs ->
        go x

        for y in xs do
            go y
            il.Emit(OpCodes.Mul)
    | Neg, [ x ] ->
        go x
        il.Emit(OpCodes.Neg)
    | Div, [ x; y ] ->
        go x
        go y
        il.Emit(OpCodes.Div)
    | PowI n, [ x ] ->
        // exponentiation by squaring on a local; negative powers invert at the end
        let m = abs n
        let baseL = scratch il
        go x
        il.Emit(OpCodes.Stloc, baseL)

        if n < 0 then il.Emit(OpCodes.Ldc_R8, 1.0)

        let rec powCode (k: int) =
            if k = 1 then
                il.Emit(OpCodes.Ldloc, baseL)
            elif k % 2 = 0 then
                powCode (k / 2)
                il.Emit(OpCodes.Dup)
                il.Emit(OpCodes.Mul)
            else
                powCode (k - 1)
                il.Emit(OpCodes.Ldloc, baseL)
                il.Emit(OpCodes.Mul)

        powCode m
        if n < 0 then il.Emit(OpCodes.Div)
    | Pow, [ x; y ] ->
        go x
        go y
        il.Emit(OpCodes.Call, typeof<Elementary>.GetMethod("Pow", [| typeof<double>; typeof<double> |]))
    | Un f, [ x ] ->
        go x

        match f with
        | UExp -> il.Emit(OpCodes.Call, elementary "Exp")
        | ULog -> il.Emit(OpCodes.Call, elementary "Log")
        | USqrt -> call "Sqrt" 1
        | USin -> il.Emit(OpCodes.Call, elementary "Sin")
        | UCos -> il.Emit(OpCodes.Call, elementary "Cos")
        | UTan -> il.Emit(OpCodes.Call, elementary "Tan")
        | UTanh -> il.Emit(OpCodes.Call, elementary "Tanh")
        | UAbs -> call "Abs" 1
        | UFloor -> call "Floor" 1
        | USign ->
            // (x > 0) - (x < 0) as a double
            let l = scratch il
            il.Emit(OpCodes.Stloc, l)
            il.Emit(OpCodes.Ldloc, l)
            il.Emit(OpCodes.Ldc_R8, 0.0)
            il.Emit(OpCodes.Cgt)
            il.Emit(OpCodes.Ldloc, l)
            il.Emit(OpCodes.Ldc_R8, 0.0)
            il.Emit(OpCodes.Clt)
            il.Emit(OpCodes.Sub)
            il.Emit(OpCodes.Conv_R8)
    | Min, [ x; y ] ->
        go x
        go y
        call "Min" 2
    | Max, [ x; y ] ->
        go x
        go y
        call "Max" 2
    | Select, [ c; x; y ] ->
        let elseL = il.DefineLabel()
        let endL = il.DefineLabel()
        emitCond b uses locals c
        il.Emit(OpCodes.Brfalse, elseL)
        let saved = Dictionary<Sym, LocalBuilder>(locals, HashIdentity.Structural)
        go x
        il.Emit(OpCodes.Br, endL)
        locals.Clear()
        for kv in saved do locals[kv.Key] <- kv.Value
        il.MarkLabel elseL
        go y
        il.MarkLabel endL
        locals.Clear()
        for kv in saved do locals[kv.Key] <- kv.Value
    | SumLoop _, _ -> failwith "emit: a loop sum outside an observable (Observe computes them first)"
    | (Cmp _ | And | Or | Not), _ ->
        // a boolean used as a number: 1.0 or 0.0
        emitCond b uses locals e
        il.Emit(OpCodes.Conv_R8)
    | op, args -> failwithf "emit: malformed node %A/%d" op args.Length

/// Leave an int32 0/1 on the stack.
and private emitCond (b: Body) uses locals (c: Sym) =
    let il = b.Il
    let go = emitExpr b uses locals

    match c.Op, c.Args with
    | Cmp op, [ x; y ] ->
        go x
        go y

        match op with
        | Eq -> il.Emit(OpCodes.Ceq)
        | Lt -> il.Emit(OpCodes.Clt)
        | Gt -> il.Emit(OpCodes.Cgt)
        | Ne ->
            il.Emit(OpCodes.Ceq)
            il.Emit(OpCodes.Ldc_I4_0)
            il.Emit(OpCodes.Ceq)
        | Le ->
            // not (x > y or unordered)
            il.Emit(OpCodes.Cgt_Un)
            il.Emit(OpCodes.Ldc_I4_0)
            il.Emit(OpCodes.Ceq)
        | Ge ->
            il.Emit(OpCodes.Clt_Un)
            il.Emit(OpCodes.Ldc_I4_0)
            il.Emit(OpCodes.Ceq)
    | And, [ x; y ] ->
        emitCond b uses locals x
        emitCond b uses locals y
        il.Emit(OpCodes.And)
    | Or, [ x; y ] ->
        emitCond b uses locals x
        emitCond b uses locals y
        il.Emit(OpCodes.Or)
    | Not, [ x ] ->
        emitCond b uses locals x
        il.Emit(OpCodes.Ldc_I4_0)
        il.Emit(OpCodes.Ceq)
    | _ ->
        // a number used as a condition: non-zero is true
        go c
        il.Emit(OpCodes.Ldc_R8, 0.0)
        il.Emit(OpCodes.Ceq)
        il.Emit(OpCodes.Ldc_I4_0)
        il.Emit(OpCodes.Ceq)

/// A model type under construction.
type ModelBuilder =
    { Type: TypeBuilder
      Params: FieldBuilder[] }

/// One collectible assembly per model type: a tool that embeds the compiler compiles forever without
/// growing (one shared module made every compile slower and kept every type alive).
let private newModule (n: int) =
    let name = AssemblyName(sprintf "Sde.Models.%d" n)
    let ab = AssemblyBuilder.DefineDynamicAssembly(name, AssemblyBuilderAccess.RunAndCollect)
    ab.DefineDynamicModule(name.Name)

let private typeCounter = ref 0

/// A name as an ASCII identifier part for IL (and the PTX that ILGPU generates from it): ASCII letters
/// and digits kept, any other letter or digit as `uXXXX` (its UTF-16 code), anything else `_`.
let asciiName (name: string) =
    name
    |> Seq.map (fun c ->
        if Char.IsAsciiLetterOrDigit c then string c
        elif Char.IsLetterOrDigit c then sprintf "u%04X" (int c)
        else "_")
    |> String.concat ""

/// Start a value type implementing the given interfaces, with one double field per parameter.
let defineModelType (name: string) (paramNames: string[]) (interfaces: Type[]) : ModelBuilder =
    let n = Threading.Interlocked.Increment typeCounter
    let safe = asciiName name

    let tb =
        (newModule n).DefineType(
            sprintf "Sde.Models.%s_%d" safe n,
            TypeAttributes.Public ||| TypeAttributes.Sealed ||| TypeAttributes.SequentialLayout,
            typeof<ValueType>,
            interfaces
        )

    let fields =
        paramNames
        |> Array.mapi (fun i p ->
            let safeP = asciiName p
            tb.DefineField(sprintf "p%d_%s" i safeP, typeof<double>, FieldAttributes.Public))

    { Type = tb; Params = fields }

/// Implement an interface property getter returning a constant int.
let implementConstInt (mb: ModelBuilder) (iface: Type) (propName: string) (value: int) =
    let getter = iface.GetProperty(propName).GetGetMethod()

    let m =
        mb.Type.DefineMethod(
            iface.Name + "." + getter.Name,
            MethodAttributes.Private ||| MethodAttributes.Virtual ||| MethodAttributes.Final
            ||| MethodAttributes.HideBySig ||| MethodAttributes.NewSlot ||| MethodAttributes.SpecialName,
            typeof<int>,
            Type.EmptyTypes
        )

    let il = m.GetILGenerator()
    il.Emit(OpCodes.Ldc_I4, value)
    il.Emit(OpCodes.Ret)
    mb.Type.DefineMethodOverride(m, getter)

/// Store each output's value (shared subexpressions in locals local to this block).
let private emitOutputs (b: Body) (outputs: Output list) =
    let il = b.Il
    let outputs = List.map2 (fun (o: Output) v -> { o with Value = v }) outputs (shareAll (outputs |> List.map (fun o -> o.Value)))
    let uses = countUses (outputs |> Seq.map (fun o -> o.Value))
    let locals = Dictionary<Sym, LocalBuilder>(HashIdentity.Structural)
    let tmp = il.DeclareLocal(typeof<double>)

    for o in outputs do
        emitExpr b uses locals o.Value
        il.Emit(OpCodes.Stloc, tmp)
        il.Emit(OpCodes.Ldarga_S, byte o.Arg)
        il.Emit(OpCodes.Ldc_I4, o.Lane)
        il.Emit(OpCodes.Ldloc, tmp)
        il.Emit(OpCodes.Constrained, b.TV)
        il.Emit(OpCodes.Callvirt, b.SetItem)

/// One loop of a method body: for i in each range, store `Value` (a template over i, see
/// `Lower.LoopIr`) in lane `Target + i` of vector argument `Arg`.
type LoopOutput =
    { Arg: int
      Target: int
      Ranges: (int * int) list
      Value: Sym }

/// `for index in from .. n - 1 do body ()`.
let private emitCountedLoop (il: ILGenerator) (index: LocalBuilder) (from: int) (n: int) (body: unit -> unit) =
    let start = il.DefineLabel()
    let test = il.DefineLabel()
    il.Emit(OpCodes.Ldc_I4, from)
    il.Emit(OpCodes.Stloc, index)
    il.Emit(OpCodes.Br, test)
    il.MarkLabel start
    body ()
    il.Emit(OpCodes.Ldloc, index)
    il.Emit(OpCodes.Ldc_I4_1)
    il.Emit(OpCodes.Add)
    il.Emit(OpCodes.Stloc, index)
    il.MarkLabel test
    il.Emit(OpCodes.Ldloc, index)
    il.Emit(OpCodes.Ldc_I4, n)
    il.Emit(OpCodes.Blt, start)

/// Emit a loop over i. The template's parts that do not depend on i (a mean-field sum) are computed
/// once, before the loop, into locals; the rest once per i, with its shared nodes in locals local to
/// one iteration. Each range gets its own copy of the body (there are few: the peeled indices).
let private emitLoop (b: Body) (l: LoopOutput) =
    let il = b.Il
    let index = il.DeclareLocal(typeof<int>)

    let argOf (op: Op) =
        match b.Bind op with
        | FromVec (arg, _) -> arg
        | other -> failwithf "emit: %A is bound to %A, not to a vector" op other

    let lb =
        { b with
            Bind =
                fun op ->
                    match op with
                    | StateAt k -> FromVecAt(argOf (State 0), k, index)
                    | NoiseAt k -> FromVecAt(argOf (Noise 0), k, index)
                    | ExtAt (n, k) -> FromVecAt(argOf (Ext(n, 0)), k, index)
                    | op -> b.Bind op }

    let value = (shareAll [ l.Value ]).Head
    let uses = countUses [ value ]

    // the largest subtrees without the index (booleans stay with their `if`, which tests them)
    let isRelative = Loops.dependsOnIndex Loops.indexedLeaf

    let invariant = List<Sym>()
    let seen = HashSet<Sym>(HashIdentity.Reference)

    let rec findInvariant (e: Sym) =
        if seen.Add e then
            match e.Op with
            | Num _ -> ()
            | Cmp _ | And | Or | Not -> List.iter findInvariant e.Args
            | _ when e.Args.IsEmpty -> ()
            | _ when not (isRelative e) -> invariant.Add e
            | _ -> List.iter findInvariant e.Args

    findInvariant value
    let hoisted = Dictionary<Sym, LocalBuilder>(HashIdentity.Structural)

    for e in invariant do
        emitExpr lb uses hoisted e

        if hoisted.ContainsKey e then
            il.Emit(OpCodes.Pop)
        else
            let local = il.DeclareLocal(typeof<double>)
            il.Emit(OpCodes.Stloc, local)
            hoisted[e] <- local

    let tmp = il.DeclareLocal(typeof<double>)

    for lo, hi in l.Ranges do
        emitCountedLoop il index lo hi (fun () ->
            // a fresh table per range: the locals of one body are not assigned in another
            let locals = Dictionary<Sym, LocalBuilder>(hoisted, HashIdentity.Structural)
            emitExpr lb uses locals value
            il.Emit(OpCodes.Stloc, tmp)
            il.Emit(OpCodes.Ldarga_S, byte l.Arg)
            il.Emit(OpCodes.Ldloc, index)

            if l.Target <> 0 then
                il.Emit(OpCodes.Ldc_I4, l.Target)
                il.Emit(OpCodes.Add)

            il.Emit(OpCodes.Ldloc, tmp)
            il.Emit(OpCodes.Constrained, b.TV)
            il.Emit(OpCodes.Callvirt, b.SetItem))

/// The template of two consecutive terms of a sum (`State k` in the first, `State (k + 1)` in the
/// second becoming `StateAt k`), or None.
let rec private antiUnify (a: Sym) (b: Sym) : Sym option =
    match a.Op, b.Op with
    | State k, State k2 when k2 = k + 1 -> Some(stateAt k)
    | oa, ob when oa = ob && a.Args.Length = b.Args.Length ->
        if a.Args.IsEmpty then
            Some a
        else
            let args = List.map2 antiUnify a.Args b.Args

            if List.forall Option.isSome args then
                Some(withArgs a (List.map Option.get args))
            else
                None
    | _ -> None

/// Is `e` the template `t` at index j?
let rec private matchesAt (j: int) (t: Sym) (e: Sym) =
    match t.Op with
    | StateAt k -> e.Op = State(k + j)
    | _ when t.Args.IsEmpty -> e.Args.IsEmpty && t.Op = e.Op
    | op -> op = e.Op && t.Args.Length = e.Args.Length && List.forall2 (matchesAt j) t.Args e.Args

/// A sum's terms as runs: (first term, template, count) where terms first .. first + count - 1 are
/// the template at 0 .. count - 1 (a run of 1 is a single term, its own template).
let private runsOf (minRun: int) (terms: Sym[]) =
    let runs = List<int * Sym * int>()
    let mutable s = 0

    while s < terms.Length do
        let run =
            if s + 1 < terms.Length then
                match antiUnify terms[s] terms[s + 1] with
                | Some t ->
                    let mutable n = 2

                    while s + n < terms.Length && matchesAt n t terms[s + n] do
                        n <- n + 1

                    if n >= minRun then Some(t, n) else None
                | None -> None
            else
                None

        match run with
        | Some (t, n) ->
            runs.Add((s, t, n))
            s <- s + n
        | None ->
            runs.Add((s, terms[s], 1))
            s <- s + 1

    runs

/// The body `b` with the state's component `StateAt k` read at `k + index` (the template of a loop).
let private indexedBody (b: Body) (index: LocalBuilder) =
    let stateArg =
        match b.Bind(State 0) with
        | FromVec (arg, _) -> arg
        | other -> failwithf "emit: the state is bound to %A" other

    { b with
        Bind =
            fun op ->
                match op with
                | StateAt k -> FromVecAt(stateArg, k, index)
                | op -> b.Bind op }

/// One term of a sum stored in (the first) or added to the accumulator, as emitRaw's Add does it (a
/// term -z subtracts z), so that a loop makes the straight-line code's additions.
let private addTerm (bb: Body) (acc: LocalBuilder) (uses: Dictionary<Sym, int>) (ls: Dictionary<Sym, LocalBuilder>) (first: bool) (t: Sym) =
    let il = bb.Il

    if first then
        emitExpr bb uses ls t
    else
        il.Emit(OpCodes.Ldloc, acc)

        match t.Op, t.Args with
        | Neg, [ z ] ->
            emitExpr bb uses ls z
            il.Emit(OpCodes.Sub)
        | _ ->
            emitExpr bb uses ls t
            il.Emit(OpCodes.Add)

    il.Emit(OpCodes.Stloc, acc)

/// Compute a sum with at least `minRun` uniform terms in a row (an observable's `avg(i, x[i]^2)` over
/// 10^6 components) into a local by loops, and record it in `locals`. The additions are those of the
/// straight-line code, in its order (acc + t, or acc - z for a term -z), so the bits are the same;
/// straight-line code for 10^6 terms overflows the stack of the JIT-compiled method.
let private emitLoopSum (b: Body) (minRun: int) (locals: Dictionary<Sym, LocalBuilder>) (sum: Sym) =
    let il = b.Il
    let terms = List.toArray sum.Args
    let acc = il.DeclareLocal(typeof<double>)
    let index = il.DeclareLocal(typeof<int>)
    let lb = indexedBody b index
    let singles = runsOf minRun terms |> Seq.filter (fun (_, _, n) -> n = 1) |> Seq.map (fun (s, _, _) -> terms[s])
    let uses = countUses singles

    for s, t, n in runsOf minRun terms do
        if n = 1 then
            addTerm b acc uses locals (s = 0) t
        else
            // the first term of the sum as itself, the others by the loop
            if s = 0 then addTerm b acc uses locals true terms[0]
            let bodyUses = countUses [ t ]
            emitCountedLoop il index (if s = 0 then 1 else 0) n (fun () ->
                addTerm lb acc bodyUses (Dictionary<Sym, LocalBuilder>(locals, HashIdentity.Structural)) false t)

    locals[sum] <- acc

/// Compute a `SumLoop` node (an observable's reduction lowered as a loop, `Loops.observable`) into a
/// local, with the additions the unrolled sum of its terms would make, in its order.
let private emitSumLoop (b: Body) (locals: Dictionary<Sym, LocalBuilder>) (node: Sym) =
    let il = b.Il
    let n, t =
        match node.Op, node.Args with
        | SumLoop n, [ t ] -> n, t
        | _ -> failwithf "emit: not a loop sum: %A" node.Op

    let acc = il.DeclareLocal(typeof<double>)
    let index = il.DeclareLocal(typeof<int>)
    let lb = indexedBody b index
    let bodyUses = countUses [ t ]
    // the first term (index 0) stored, the others added by the loop
    il.Emit(OpCodes.Ldc_I4_0)
    il.Emit(OpCodes.Stloc, index)
    addTerm lb acc bodyUses (Dictionary<Sym, LocalBuilder>(locals, HashIdentity.Structural)) true t
    emitCountedLoop il index 1 n (fun () -> addTerm lb acc bodyUses (Dictionary<Sym, LocalBuilder>(locals, HashIdentity.Structural)) false t)
    locals[node] <- acc

/// Like `emitOutputs`, with every sum of at least `minRun` uniform terms in a row computed by loops
/// (`emitLoopSum`) before the output that needs it.
let private emitOutputsReducing (b: Body) (minRun: int) (outputs: Output list) =
    let il = b.Il
    let outputs = List.map2 (fun (o: Output) v -> { o with Value = v }) outputs (shareAll (outputs |> List.map (fun o -> o.Value)))
    let uses = countUses (outputs |> Seq.map (fun o -> o.Value))
    let locals = Dictionary<Sym, LocalBuilder>(HashIdentity.Structural)
    let tmp = il.DeclareLocal(typeof<double>)
    let seen = HashSet<Sym>(HashIdentity.Reference)

    // the parts of a loop sum's template that depend on its index are computed inside its loop
    let isRelative =
        Loops.dependsOnIndex (function
            | StateAt _ -> Some true
            // its template's index is its own
            | SumLoop _ -> Some false
            | _ -> None)

    // the long sums, inner ones first (so that one inside a loop sum's template that does not
    // depend on its index is computed once, before that loop)
    let rec prepare (e: Sym) =
        if seen.Add e then
            List.iter prepare e.Args

            match e.Op with
            | _ when isRelative e -> ()
            | SumLoop _ when not (locals.ContainsKey e) -> emitSumLoop b locals e
            | Add when e.Args.Length >= minRun && not (locals.ContainsKey e) ->
                let runs = runsOf minRun (List.toArray e.Args)
                if runs |> Seq.exists (fun (_, _, n) -> n > 1) then emitLoopSum b minRun locals e
            | _ -> ()

    for o in outputs do
        prepare o.Value
        emitExpr b uses locals o.Value
        il.Emit(OpCodes.Stloc, tmp)
        il.Emit(OpCodes.Ldarga_S, byte o.Arg)
        il.Emit(OpCodes.Ldc_I4, o.Lane)
        il.Emit(OpCodes.Ldloc, tmp)
        il.Emit(OpCodes.Constrained, b.TV)
        il.Emit(OpCodes.Callvirt, b.SetItem)

/// Implement one generic interface method `M<TV>(...)` with the body that `emitBody` writes.
/// `bind` maps the IR leaves to the method's arguments (IL argument indices: 0 is `this`).
let private implementWith (mb: ModelBuilder) (iface: Type) (methodName: string) (bind: Op -> Load) (emitBody: Body -> unit) =
    let im = iface.GetMethod(methodName)
    let igp = im.GetGenericArguments()[0]

    let m =
        mb.Type.DefineMethod(
            iface.Name + "." + methodName,
            MethodAttributes.Private ||| MethodAttributes.Virtual ||| MethodAttributes.Final
            ||| MethodAttributes.HideBySig ||| MethodAttributes.NewSlot
        )

    let gp = m.DefineGenericParameters([| "TV" |])[0]
    gp.SetGenericParameterAttributes(igp.GenericParameterAttributes)
    let constraints = igp.GetGenericParameterConstraints()
    gp.SetInterfaceConstraints(constraints |> Array.filter (fun t -> t.IsInterface))

    match constraints |> Array.tryFind (fun t -> not t.IsInterface) with
    | Some bt -> gp.SetBaseTypeConstraint bt
    | None -> ()

    let ps =
        im.GetParameters()
        |> Array.map (fun p -> if p.ParameterType.IsGenericParameter then gp :> Type else p.ParameterType)

    m.SetReturnType(typeof<Void>)
    m.SetParameters ps
    // the engine calls these millions of times from its (already optimised) loops: skip tier 0
    m.SetImplementationFlags(MethodImplAttributes.AggressiveOptimization)
    let il = m.GetILGenerator()

    emitBody
        { Il = il
          TV = gp
          Bind = bind
          GetItem = typeof<IVec>.GetProperty("Item").GetGetMethod()
          SetItem = typeof<IVec>.GetProperty("Item").GetSetMethod() }

    il.Emit(OpCodes.Ret)
    mb.Type.DefineMethodOverride(m, im)

/// Implement a generic interface method whose body stores `outputs`.
let implementMethod (mb: ModelBuilder) (iface: Type) (methodName: string) (bind: Op -> Load) (outputs: Output list) =
    implementWith mb iface methodName bind (fun b -> emitOutputs b outputs)

/// Implement a generic interface method that stores `outputs` (straight-line code), then runs `loops`.
let implementMethodWithLoops (mb: ModelBuilder) (iface: Type) (methodName: string) (bind: Op -> Load) (outputs: Output list) (loops: LoopOutput list) =
    implementWith mb iface methodName bind (fun b ->
        emitOutputs b outputs
        List.iter (emitLoop b) loops)

/// Implement a generic interface method that stores `outputs`, its sums of at least `minRun`
/// uniform terms computed by loops.
let implementMethodReducing (mb: ModelBuilder) (iface: Type) (methodName: string) (bind: Op -> Load) (minRun: int) (outputs: Output list) =
    implementWith mb iface methodName bind (fun b -> emitOutputsReducing b minRun outputs)

/// Implement a generic interface method that stores `blocks[which]`, `which` being the int
/// argument at IL index `whichArg` (out-of-range does nothing). A chain of comparisons, not an IL
/// `switch`: ILGPU (1.5) folds a one-case switch into an `if` whose branches are swapped (its switch
/// takes the first target as the default), so on CUDA the only case never ran while ILGPU's CPU
/// accelerator, which runs the IL as .NET code, was right.
let implementSwitch (mb: ModelBuilder) (iface: Type) (methodName: string) (bind: Op -> Load) (whichArg: int) (blocks: Output list[]) =
    implementWith mb iface methodName bind (fun b ->
        let il = b.Il
        let endL = il.DefineLabel()

        for i in 0 .. blocks.Length - 1 do
            let next = il.DefineLabel()
            il.Emit(OpCodes.Ldarg_S, byte whichArg)
            il.Emit(OpCodes.Ldc_I4, i)
            il.Emit(OpCodes.Bne_Un, next)
            emitOutputs b blocks[i]
            il.Emit(OpCodes.Br, endL)
            il.MarkLabel next

        il.MarkLabel endL)

/// Bind parameters to fields and the standard leaves; `vecs` names the vector arguments.
let standardBind (mb: ModelBuilder) (stateArg: int) (noiseArg: int) (timeArg: int) (exts: (string * Load) list) (op: Op) : Load =
    match op with
    | Param i -> FromField mb.Params[i]
    | State k when stateArg > 0 -> FromVec(stateArg, k)
    | Noise l when noiseArg > 0 -> FromVec(noiseArg, l)
    | Time when timeArg > 0 -> FromArg timeArg
    | Time -> FromConst 0.0
    | Ext (name, i) ->
        match exts |> List.tryFind (fun (n, _) -> n = name) with
        | Some (_, FromVec (a, _)) -> FromVec(a, i)
        | Some (_, l) -> l
        | None -> failwithf "emit: unbound input %s" name
    | op -> failwithf "emit: leaf %A is not available in this method" op
