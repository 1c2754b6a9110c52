/// The symbolic IR: scalar expressions over flat state components, parameters, time and noise
/// lanes, built through smart constructors that fold constants and drop 0/1 (so derivatives come
/// out small), compared structurally with a cached hash (so equal subexpressions are found and
/// shared by the emitter). Vector equations are unrolled by the lowering: every index is a
/// constant here, which makes sparsity exact (a drift component depends on exactly the state
/// components it mentions).
module Sde.Lang.Ir

open System
open Sde.Lang.Syntax

type Unary =
    | UExp
    | ULog
    | USqrt
    | USin
    | UCos
    | UTan
    | UTanh
    | UAbs
    /// Derivative of abs (0 at 0).
    | USign
    /// ⌊a⌋ (the bin index of a 2-D density; derivative 0).
    | UFloor

type Op =
    | Num of float
    | Param of int
    /// Flat state component (engine index).
    | State of int
    | Time
    /// Noise lane w_l of the current step (used by generated derivative code under multiplicative noise).
    | Noise of int
    /// An input that only the emitter binds (a method argument such as `dt`, or lane i of a buffer
    /// such as the init normals): never differentiated.
    | Ext of string * int
    /// In the body of a loop over an index i (`Lower.LoopIr`): state component k + i. Never
    /// differentiated (a model with loops has no derivative code).
    | StateAt of int
    /// In a loop body: noise lane l + i.
    | NoiseAt of int
    /// In a loop body: lane k + i of an emitter input (the init normals `zn`, uniforms `zu`).
    | ExtAt of string * int
    /// Σ_{j < count} of its one argument, a template whose `StateAt` leaves are relative to j: a
    /// reduction of an observable compiled as a loop (`Loops.observable`), equal term by term to the
    /// unrolled sum. Never differentiated.
    | SumLoop of count: int
    | Add
    | Mul
    | Neg
    | Div
    /// Integer power (expanded into multiplications by the emitter).
    | PowI of int
    /// General power a^b.
    | Pow
    | Un of Unary
    | Min
    | Max
    /// Select(cond, a, b): `if cond then a else b`; cond is a boolean node.
    | Select
    | Cmp of CmpOp
    | And
    | Or
    | Not

/// An expression node. Structural equality with a cached hash and a reference-equality fast path.
[<CustomEquality; NoComparison>]
type Sym =
    { Op: Op
      Args: Sym list
      Hash: int
      /// Number of nodes in the tree, shared subtrees counted each time (for cost decisions), at
      /// most Int32.MaxValue.
      Size: int }

    override a.Equals(o: obj) =
        match o with
        | :? Sym as b ->
            Object.ReferenceEquals(a, b)
            || (a.Hash = b.Hash && a.Op = b.Op && a.Args = b.Args)
        | _ -> false

    override a.GetHashCode() = a.Hash

let private mk op args =
    let h = List.fold (fun h (a: Sym) -> h * 31 + a.Hash) (hash op) args
    { Op = op
      Args = args
      Hash = h
      // saturating: a tree that shares subtrees (a derivative) can count more nodes than an int holds
      Size = int (min (int64 Int32.MaxValue) (List.fold (fun n (a: Sym) -> n + int64 a.Size) 1L args)) }

let num (v: float) = mk (Num v) []
let zero = num 0.0
let one = num 1.0
let param i = mk (Param i) []
let state k = mk (State k) []
let time = mk Time []
let noise l = mk (Noise l) []
let ext name i = mk (Ext(name, i)) []
let stateAt k = mk (StateAt k) []
let noiseAt l = mk (NoiseAt l) []
let extAt name k = mk (ExtAt(name, k)) []
let sumLoop (count: int) (body: Sym) = mk (SumLoop count) [ body ]

let (|NumV|_|) (s: Sym) =
    match s.Op with
    | Num v -> Some v
    | _ -> None

let isZero s =
    match s with
    | NumV 0.0 -> true
    | _ -> false

let isOne s =
    match s with
    | NumV 1.0 -> true
    | _ -> false

let rec neg (a: Sym) =
    match a.Op, a.Args with
    | Num v, _ -> num (-v)
    | Neg, [ x ] -> x
    | _ -> mk Neg [ a ]

/// Sum of any number of terms with constants folded and zeros dropped; nested sums are flattened.
/// One pass over the terms (a sum of n terms is built in O(n), not by n binary additions).
let sumAll (xs: Sym seq) =
    let rest = Collections.Generic.List<Sym>()
    let mutable c = 0.0

    let term (s: Sym) =
        match s with
        | NumV v -> c <- c + v
        | _ -> rest.Add s

    for x in xs do
        match x.Op with
        | Add -> List.iter term x.Args
        | _ -> term x

    match rest.Count, c with
    | 0, c -> num c
    | 1, 0.0 -> rest[0]
    | _, 0.0 -> mk Add (List.ofSeq rest)
    | _, c ->
        rest.Add(num c)
        mk Add (List.ofSeq rest)

/// Sum with constants folded and zeros dropped; nested sums are flattened.
let add (a: Sym) (b: Sym) = sumAll [ a; b ]

let sub a b = add a (neg b)

/// Largest integer exponent that powers are folded into ((x^a)^b is x^(ab), x^a x^b is x^(a+b)):
/// beyond it the node stays nested, and no exponent wraps round an int.
let maxExponent = 1_000_000L

/// The factors of a product with repeated ones as one positive integer power (`x*x*x` is `x^3`,
/// `x^2*x` is `x^3`), in the order of their first occurrence: a product of n equal factors stays
/// one node whose derivatives have one term, not n (and n² for the second derivative). `fa` and
/// `fb` are the non-constant factors of the two operands; each list has distinct bases already
/// (a product node is only built here), so only a factor of `fb` can repeat one of `fa`.
let private collectPowers (fa: Sym list) (fb: Sym list) =
    let baseOf (s: Sym) =
        match s.Op, s.Args with
        | PowI n, [ x ] when n > 0 -> x, n
        | _ -> s, 1

    match fa, fb with
    | [], _
    | _, [] -> fa @ fb
    | _ ->
        let bases = Collections.Generic.List<Sym * int>(fa |> List.map baseOf)
        let mutable merged = false

        for f in fb do
            let b, n = baseOf f
            let i = bases.FindIndex(fun (b0, _) -> b0.Hash = b.Hash && b0 = b)

            let i = if i >= 0 && int64 (snd bases[i]) + int64 n <= maxExponent then i else -1

            if i >= 0 then
                let b0, m = bases[i]
                bases[i] <- (b0, m + n)
                merged <- true
            else
                bases.Add((b, n))

        if not merged then
            fa @ fb
        else
            [ for b, n in bases -> if n = 1 then b else mk (PowI n) [ b ] ]

/// Product with constants folded, zeros absorbing, ones dropped; negations pulled out; repeated
/// factors collected into powers.
let rec mul (a: Sym) (b: Sym) =
    match a, b with
    | NumV 0.0, _
    | _, NumV 0.0 -> zero
    | NumV 1.0, x
    | x, NumV 1.0 -> x
    | NumV -1.0, x
    | x, NumV -1.0 -> neg x
    | NumV u, NumV v -> num (u * v)
    | { Op = Neg; Args = [ x ] }, y
    | y, { Op = Neg; Args = [ x ] } -> neg (mul x y)
    | _ ->
        let factors s =
            match s.Op with
            | Mul -> s.Args
            | _ -> [ s ]

        let all = factors a @ factors b
        let c = all |> List.fold (fun c s -> match s with NumV v -> c * v | _ -> c) 1.0
        let nonConstant s = s |> factors |> List.filter (fun s -> match s with NumV _ -> false | _ -> true)
        let rest = collectPowers (nonConstant a) (nonConstant b)

        match rest with
        | [] -> num c
        | [ x ] when c = 1.0 -> x
        | xs when c = 1.0 -> mk Mul xs
        | xs when c = -1.0 -> neg (mk Mul xs)
        | xs -> mk Mul (num c :: xs)

let div (a: Sym) (b: Sym) =
    match a, b with
    | NumV 0.0, _ -> zero
    | x, NumV 1.0 -> x
    | NumV u, NumV v -> num (u / v)
    | _ -> mk Div [ a; b ]

let rec powi (a: Sym) (n: int) =
    match a, n with
    | _, 0 -> one
    | x, 1 -> x
    | NumV v, n -> num (Math.Pow(v, float n))
    | { Op = PowI m; Args = [ x ] }, n when abs (int64 m * int64 n) <= maxExponent -> powi x (m * n)
    | x, n -> mk (PowI n) [ x ]

let pow (a: Sym) (b: Sym) =
    match b with
    | NumV v when v = Math.Round v && abs v <= 64.0 -> powi a (int v)
    | NumV 0.5 -> mk (Un USqrt) [ a ]
    | _ ->
        match a, b with
        | NumV u, NumV v -> num (Sde.Core.Elementary.Pow(u, v))
        | _ -> mk Pow [ a; b ]

/// The value of a unary function (constant folding and the interpreter share it). exp, log, sin, cos, tan and
/// tanh are the engine's own (Sde.Core.Elementary), the bits of the emitted code on every backend.
let applyUnary (f: Unary) (v: float) =
    match f with
    | UExp -> Sde.Core.Elementary.Exp v
    | ULog -> Sde.Core.Elementary.Log v
    | USqrt -> sqrt v
    | USin -> Sde.Core.Elementary.Sin v
    | UCos -> Sde.Core.Elementary.Cos v
    | UTan -> Sde.Core.Elementary.Tan v
    | UTanh -> Sde.Core.Elementary.Tanh v
    | UAbs -> abs v
    | USign -> if v > 0.0 then 1.0 elif v < 0.0 then -1.0 else 0.0
    | UFloor -> floor v

let unary (f: Unary) (a: Sym) =
    match a with
    | NumV v -> num (applyUnary f v)
    | _ -> mk (Un f) [ a ]

let minS a b =
    match a, b with
    | NumV u, NumV v -> num (min u v)
    | _ -> mk Min [ a; b ]

let maxS a b =
    match a, b with
    | NumV u, NumV v -> num (max u v)
    | _ -> mk Max [ a; b ]

/// A comparison of two numbers (1 or 0): constant folding and the interpreter share it.
let compareNum op (u: float) (v: float) =
    let r =
        match op with
        | Eq -> u = v
        | Ne -> u <> v
        | Lt -> u < v
        | Le -> u <= v
        | Gt -> u > v
        | Ge -> u >= v

    if r then 1.0 else 0.0

let cmp op a b =
    match a, b with
    | NumV u, NumV v -> num (compareNum op u v)
    | _ -> mk (Cmp op) [ a; b ]

let andS a b =
    match a, b with
    | NumV 0.0, _
    | _, NumV 0.0 -> num 0.0
    | NumV _, x
    | x, NumV _ -> x
    | _ -> mk And [ a; b ]

let orS a b =
    match a, b with
    | NumV 0.0, x
    | x, NumV 0.0 -> x
    | NumV _, _
    | _, NumV _ -> num 1.0
    | _ -> mk Or [ a; b ]

let notS a =
    match a with
    | NumV v -> num (if v = 0.0 then 1.0 else 0.0)
    | _ -> mk Not [ a ]

/// `if c then a else b`; a constant condition picks its branch.
let select c a b =
    match c with
    | NumV v -> if v <> 0.0 then a else b
    | _ when a = b -> a
    | _ -> mk Select [ c; a; b ]

/// A loop template (`Lower.LoopIr`) at index i: `StateAt k` becomes `State (k + i)`, `NoiseAt l`
/// `Noise (l + i)`, `ExtAt (n, k)` `Ext (n, k + i)`, nothing re-simplified (the tests compare it
/// with the tree the unrolled lowering builds for that component).
let rec atIndex (i: int) (e: Sym) : Sym =
    match e.Op with
    | StateAt k -> state (k + i)
    | NoiseAt l -> noise (l + i)
    | ExtAt (n, k) -> ext n (k + i)
    | _ when e.Args.IsEmpty -> e
    | op -> mk op (List.map (atIndex i) e.Args)

/// The same node with other children, not re-simplified (loop templates).
let withArgs (e: Sym) (args: Sym list) : Sym = mk e.Op args

/// Does the expression mention this leaf?
let rec mentions (leaf: Op) (e: Sym) =
    e.Op = leaf || List.exists (mentions leaf) e.Args

/// The state components an expression depends on (sorted, distinct).
let stateDeps (e: Sym) =
    let acc = Collections.Generic.HashSet<int>()

    let rec go (e: Sym) =
        match e.Op with
        | State k -> acc.Add k |> ignore
        | _ -> List.iter go e.Args

    go e
    acc |> Seq.sort |> Seq.toArray

/// Does the expression contain a `Select` (an `if`)? Such observables are not differentiable.
let rec hasSelect (e: Sym) =
    e.Op = Select || List.exists hasSelect e.Args

/// For each sum node (by reference), the indices of its terms that mention each state component:
/// shared by the derivatives of one expression in every component, so that ∂/∂x_k of a sum of n
/// terms visits the terms with x_k only (a dense coupling `sum(j, x[j])` in n equations otherwise
/// costs n³).
type SumIndex = Collections.Generic.Dictionary<Sym, Sym[] * Collections.Generic.Dictionary<int, Collections.Generic.List<int>>>

let newSumIndex () : SumIndex = SumIndex(HashIdentity.Reference)

/// Sums with fewer terms are differentiated term by term.
let private indexedSumTerms = 16

let private derivativeWith (index: SumIndex) (v: Op) (e: Sym) : Sym =
    let memo = Collections.Generic.Dictionary<Sym, Sym>(HashIdentity.Structural)

    // the terms of a sum node that mention x_k, in order (None for a short sum)
    let termsOf (sumNode: Sym) (k: int) : Sym list option =
        let entry =
            match index.TryGetValue sumNode with
            | true, entry -> Some entry
            | _ ->
                let args = List.toArray sumNode.Args

                if args.Length < indexedSumTerms then
                    None
                else
                    let m = Collections.Generic.Dictionary<int, Collections.Generic.List<int>>()

                    args
                    |> Array.iteri (fun i t ->
                        for s in stateDeps t do
                            match m.TryGetValue s with
                            | true, l -> l.Add i
                            | _ -> m[s] <- Collections.Generic.List<int>([ i ]))

                    index[sumNode] <- (args, m)
                    Some(args, m)

        entry
        |> Option.map (fun (args, m) ->
            match m.TryGetValue k with
            | true, l -> [ for i in l -> args[i] ]
            | _ -> [])

    // A subtree without v differentiates to exactly `zero` bottom-up (every rule below returns
    // `zero` when its operands' derivatives are zero), so no separate search for v is needed: the
    // cost is linear in the (shared) tree, not in its size times its depth.
    let rec d (e: Sym) : Sym =
        match e.Args with
        | [] -> if e.Op = v then one else zero
        | _ ->
            match memo.TryGetValue e with
            | true, r -> r
            | _ ->
                let r = dRaw e
                memo[e] <- r
                r

    and dRaw (e: Sym) : Sym =
        match e.Op, e.Args with
        | (Cmp _ | And | Or | Not), _ -> zero
        | Add, xs ->
            // the terms without x_k differentiate to zero, which the sum drops: skip them
            let terms =
                match v with
                | State k -> termsOf e k |> Option.defaultValue xs
                | _ -> xs

            terms |> List.map d |> sumAll
        | Mul, xs ->
            // product rule over n factors
            let ds = List.map d xs

            if List.forall isZero ds then
                zero
            else
                List.zip xs ds
                |> List.mapi (fun i (_, dxi) ->
                    if isZero dxi then zero
                    else xs |> List.mapi (fun j xj -> if i = j then dxi else xj) |> List.reduce mul)
                |> sumAll
        | Neg, [ x ] ->
            let dx = d x
            if isZero dx then zero else neg dx
        | Div, [ a; b ] ->
            let da, db = d a, d b
            // (a/b)' = a'/b - a b'/b²
            if isZero da && isZero db then zero
            else sub (div da b) (div (mul a db) (powi b 2))
        | PowI n, [ x ] ->
            let dx = d x
            if isZero dx then zero else mul (mul (num (float n)) (powi x (n - 1))) dx
        | Pow, [ a; b ] ->
            // a^b (b' log a + b a'/a)
            let da, db = d a, d b
            if isZero da && isZero db then zero
            else mul e (add (mul db (unary ULog a)) (div (mul b da) a))
        | Un f, [ x ] ->
            let dx = d x

            if isZero dx then
                zero
            else
                let outer =
                    match f with
                    | UExp -> e
                    | ULog -> div one x
                    | USqrt -> div (num 0.5) e
                    | USin -> unary UCos x
                    | UCos -> neg (unary USin x)
                    | UTan -> add one (powi e 2)
                    | UTanh -> sub one (powi e 2)
                    | UAbs -> unary USign x
                    | USign
                    | UFloor -> zero

                mul outer dx
        | Min, [ a; b ] -> select (cmp Le a b) (d a) (d b)
        | Max, [ a; b ] -> select (cmp Ge a b) (d a) (d b)
        | Select, [ c; a; b ] -> select c (d a) (d b)
        | _ -> failwithf "derivative: malformed node %A" e.Op

    d e

/// Symbolic derivative ∂e/∂v for a leaf v (State k, Param i, Noise l, Time). Memoised on shared
/// subtrees. `if` differentiates branchwise (the condition is piecewise constant); abs, min and max
/// take the one-sided derivative that is almost everywhere correct.
let derivative (v: Op) (e: Sym) : Sym = derivativeWith (newSumIndex ()) v e

/// ∂e/∂x_k for every state component k that e depends on, in increasing k, structural zeros
/// dropped. The derivatives share one index of the sums' terms by state, so the derivative of a
/// sum by x_k visits the terms that mention x_k only: the gradient of a sum of n terms costs about
/// n times the states per term, not n times the states.
let stateGradient (e: Sym) : (int * Sym) list =
    let index = newSumIndex ()

    [ for k in stateDeps e do
          let d = derivativeWith index (State k) e
          if not (isZero d) then k, d ]

/// The same expressions with structurally equal subtrees made one object (hash-consing, no
/// re-simplification). Derivatives rebuild equal subtrees as distinct objects, and comparing two of
/// them walks both whole (a chain of divisions made the emitter's tables quadratic and worse);
/// after sharing, equal subtrees compare by reference.
let shareAll (roots: Sym list) : Sym list =
    let byRef = Collections.Generic.Dictionary<Sym, Sym>(HashIdentity.Reference)
    let table = Collections.Generic.Dictionary<Sym, Sym>(HashIdentity.Structural)

    let rec canon (e: Sym) : Sym =
        match byRef.TryGetValue e with
        | true, c -> c
        | _ ->
            let args = List.map canon e.Args
            let same = List.forall2 (fun (a: Sym) (b: Sym) -> Object.ReferenceEquals(a, b)) args e.Args
            let candidate = if same then e else { e with Args = args }

            let c =
                match table.TryGetValue candidate with
                | true, c -> c
                | _ ->
                    table[candidate] <- candidate
                    candidate

            byRef[e] <- c
            c

    List.map canon roots

/// Substitute leaves (e.g. a parameter by a constant) and re-simplify.
let rec substitute (f: Op -> Sym option) (e: Sym) : Sym =
    match e.Args with
    | [] -> defaultArg (f e.Op) e
    | args ->
        let args' = List.map (substitute f) args
        rebuild e.Op args'

/// Rebuild a node through the smart constructors.
and rebuild (op: Op) (args: Sym list) : Sym =
    match op, args with
    | Add, xs -> sumAll xs
    | Mul, xs -> List.fold mul one xs
    | Neg, [ x ] -> neg x
    | Div, [ a; b ] -> div a b
    | PowI n, [ x ] -> powi x n
    | Pow, [ a; b ] -> pow a b
    | Un f, [ x ] -> unary f x
    | Min, [ a; b ] -> minS a b
    | Max, [ a; b ] -> maxS a b
    | Select, [ c; a; b ] -> select c a b
    | Cmp o, [ a; b ] -> cmp o a b
    | And, [ a; b ] -> andS a b
    | Or, [ a; b ] -> orS a b
    | Not, [ a ] -> notS a
    | op, [] -> mk op []
    | _ -> failwithf "rebuild: malformed node %A" op

/// Evaluate numerically (tests and constant folding of inits): leaves from the environment.
let rec eval (leaf: Op -> float) (e: Sym) : float =
    let ev = eval leaf

    match e.Op, e.Args with
    | Num v, _ -> v
    | (Param _ | State _ | Time | Noise _ | Ext _ | StateAt _ | NoiseAt _ | ExtAt _) as op, _ -> leaf op
    | Add, xs -> xs |> List.sumBy ev
    | Mul, xs -> xs |> List.fold (fun p x -> p * ev x) 1.0
    | Neg, [ x ] -> -(ev x)
    | Div, [ a; b ] -> ev a / ev b
    | PowI n, [ x ] -> Math.Pow(ev x, float n)
    | Pow, [ a; b ] -> Sde.Core.Elementary.Pow(ev a, ev b)
    | Un f, [ x ] -> applyUnary f (ev x)
    | Min, [ a; b ] -> Math.Min(ev a, ev b)
    | Max, [ a; b ] -> Math.Max(ev a, ev b)
    | Select, [ c; a; b ] -> if ev c <> 0.0 then ev a else ev b
    | Cmp op, [ a; b ] -> compareNum op (ev a) (ev b)
    | And, [ a; b ] -> if ev a <> 0.0 && ev b <> 0.0 then 1.0 else 0.0
    | Or, [ a; b ] -> if ev a <> 0.0 || ev b <> 0.0 then 1.0 else 0.0
    | Not, [ a ] -> if ev a = 0.0 then 1.0 else 0.0
    | SumLoop n, [ body ] -> Seq.init (n - 1) (fun j -> ev (atIndex (j + 1) body)) |> Seq.fold (+) (ev (atIndex 0 body))
    | _ -> failwithf "eval: malformed node %A" e.Op

/// A readable rendering (diagnostics, tests, `dsl check --ir`).
let rec show (e: Sym) : string =
    let p (s: Sym) =
        match s.Op with
        | Add | Select -> "(" + show s + ")"
        | _ -> show s

    match e.Op, e.Args with
    | Num v, _ -> if v < 0.0 then sprintf "(%g)" v else sprintf "%g" v
    | Param i, _ -> sprintf "p%d" i
    | State k, _ -> sprintf "x%d" k
    | Time, _ -> "t"
    | Noise l, _ -> sprintf "w%d" l
    | Ext (n, i), _ -> sprintf "%s%d" n i
    | StateAt k, _ -> sprintf "x[%d+i]" k
    | NoiseAt l, _ -> sprintf "w[%d+i]" l
    | ExtAt (n, k), _ -> sprintf "%s[%d+i]" n k
    | Add, xs -> xs |> List.map show |> String.concat " + "
    | Mul, xs -> xs |> List.map p |> String.concat "*"
    | Neg, [ x ] -> "-" + p x
    | Div, [ a; b ] -> p a + "/" + p b
    | PowI n, [ x ] -> p x + "^" + string n
    | Pow, [ a; b ] -> p a + "^" + p b
    | Un f, [ x ] -> (sprintf "%A" f).Substring(1).ToLowerInvariant() + "(" + show x + ")"
    | Min, [ a; b ] -> sprintf "min(%s, %s)" (show a) (show b)
    | Max, [ a; b ] -> sprintf "max(%s, %s)" (show a) (show b)
    | Select, [ c; a; b ] -> sprintf "if %s then %s else %s" (show c) (show a) (show b)
    | Cmp o, [ a; b ] -> sprintf "%s %A %s" (p a) o (p b)
    | And, [ a; b ] -> sprintf "(%s and %s)" (show a) (show b)
    | Or, [ a; b ] -> sprintf "(%s or %s)" (show a) (show b)
    | Not, [ a ] -> sprintf "not %s" (p a)
    | SumLoop n, [ body ] -> sprintf "sum(i < %d, %s)" n (show body)
    | op, _ -> sprintf "%A" op

/// The expression in `.sde` syntax, leaves named by `name` (a param, a state component `x[3]`), for
/// `dsl check --ito`: what it prints reads back as an observable with the same value. Parentheses
/// only where the language's precedence needs them (levels: 0 `if`, 1 `+ -`, 2 `* /`, 3 unary `-`,
/// 4 `^`, 5 atoms).
let render (name: Op -> string) (e: Sym) : string =
    let number (v: float) =
        if Double.IsPositiveInfinity v then "inf"
        elif Double.IsNegativeInfinity v then "-inf"
        else v.ToString("R", Globalization.CultureInfo.InvariantCulture)

    let rec go (level: int) (e: Sym) : string =
        let wrap (own: int) (s: string) = if own < level then "(" + s + ")" else s

        match e.Op, e.Args with
        | Num v, _ when v < 0.0 -> wrap 3 (number v)
        | Num v, _ -> number v
        | (Param _ | State _), _ -> name e.Op
        | Time, _ -> "t"
        | Add, x :: xs ->
            let rest =
                xs
                |> List.map (fun t ->
                    match t.Op, t.Args with
                    | Neg, [ y ] -> " - " + go 2 y
                    | Num v, _ when v < 0.0 -> " - " + number (-v)
                    | _ -> " + " + go 2 t)

            wrap 1 (go 1 x + String.concat "" rest)
        | Mul, x :: xs -> wrap 2 (go 2 x + String.concat "" (xs |> List.map (fun f -> " * " + go 3 f)))
        | Neg, [ x ] -> wrap 3 ("-" + go 4 x)
        | Div, [ a; b ] -> wrap 2 (go 2 a + " / " + go 3 b)
        | PowI n, [ x ] -> wrap 4 (go 5 x + "^" + (if n < 0 then "(" + string n + ")" else string n))
        | Pow, [ a; b ] -> wrap 4 (go 5 a + "^" + go 5 b)
        | Un USign, [ x ] ->
            let a = go 1 x
            wrap 0 (sprintf "if %s > 0 then 1 else if %s < 0 then -1 else 0" a a)
        | Un f, [ x ] -> (sprintf "%A" f).Substring(1).ToLowerInvariant() + "(" + go 0 x + ")"
        | Min, [ a; b ] -> sprintf "min(%s, %s)" (go 0 a) (go 0 b)
        | Max, [ a; b ] -> sprintf "max(%s, %s)" (go 0 a) (go 0 b)
        | Select, [ c; a; b ] -> wrap 0 (sprintf "if %s then %s else %s" (cond c) (go 0 a) (go 0 b))
        | op, _ -> sprintf "%A" op

    // conditions: comparisons, then `not`, then `and`, then `or` (parenthesised when nested)
    and cond (c: Sym) : string =
        match c.Op, c.Args with
        | Cmp op, [ a; b ] -> sprintf "%s %s %s" (go 1 a) (Printer.cmpOp op) (go 1 b)
        | Not, [ a ] -> "not " + condAtom a
        | And, [ a; b ] -> condAtom a + " and " + condAtom b
        | Or, [ a; b ] -> cond a + " or " + cond b
        | _ -> go 1 c + " != 0"

    and condAtom (c: Sym) =
        match c.Op with
        | Or -> "(" + cond c + ")"
        | _ -> cond c

    go 0 e
