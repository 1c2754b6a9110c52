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
      /// Number of nodes in the tree (for cost decisions).
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
      Size = 1 + List.sumBy (fun (a: Sym) -> a.Size) args }

let num (v: float) = mk (Num v) []
let zero = num 0.0
let one = num 1.0
let param i = mk (Param i) []
let state k = mk (State k) []
let time = mk Time []
let noise l = mk (Noise l) []
let ext name i = mk (Ext(name, i)) []

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

/// Sum with constants folded and zeros dropped; nested sums are flattened.
let add (a: Sym) (b: Sym) =
    let terms s =
        match s.Op with
        | Add -> s.Args
        | _ -> [ s ]

    let all = terms a @ terms b
    let c = all |> List.sumBy (fun s -> match s with NumV v -> v | _ -> 0.0)
    let rest = all |> List.filter (fun s -> match s with NumV _ -> false | _ -> true)

    match rest, c with
    | [], c -> num c
    | [ x ], 0.0 -> x
    | xs, 0.0 -> mk Add xs
    | xs, c -> mk Add (xs @ [ num c ])

let sub a b = add a (neg b)

/// Product with constants folded, zeros absorbing, ones dropped; negations pulled out.
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
        let rest = all |> List.filter (fun s -> match s with NumV _ -> false | _ -> true)

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
    | { Op = PowI m; Args = [ x ] }, n -> powi x (m * n)
    | x, n -> mk (PowI n) [ x ]

let pow (a: Sym) (b: Sym) =
    match b with
    | NumV v when v = Math.Round v && abs v <= 64.0 -> powi a (int v)
    | NumV 0.5 -> mk (Un USqrt) [ a ]
    | _ ->
        match a, b with
        | NumV u, NumV v -> num (Math.Pow(u, v))
        | _ -> mk Pow [ a; b ]

/// The value of a unary function (constant folding and the interpreter share it).
let applyUnary (f: Unary) (v: float) =
    match f with
    | UExp -> exp v
    | ULog -> log v
    | USqrt -> sqrt v
    | USin -> sin v
    | UCos -> cos v
    | UTan -> tan v
    | UTanh -> tanh v
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

/// Symbolic derivative ∂e/∂v for a leaf v (State k, Param i, Noise l, Time). Memoised on shared
/// subtrees. `if` differentiates branchwise (the condition is piecewise constant); abs, min and max
/// take the one-sided derivative that is almost everywhere correct.
let derivative (v: Op) (e: Sym) : Sym =
    let memo = Collections.Generic.Dictionary<Sym, Sym>(HashIdentity.Structural)

    let rec d (e: Sym) : Sym =
        match memo.TryGetValue e with
        | true, r -> r
        | _ ->
            let r = if not (mentions v e) then zero else dRaw e
            memo[e] <- r
            r

    and dRaw (e: Sym) : Sym =
        match e.Op, e.Args with
        | op, [] -> if op = v then one else zero
        | Add, xs -> xs |> List.map d |> List.fold add zero
        | Mul, xs ->
            // product rule over n factors
            xs
            |> List.mapi (fun i xi ->
                let dxi = d xi
                if isZero dxi then zero
                else xs |> List.mapi (fun j xj -> if i = j then dxi else xj) |> List.reduce mul)
            |> List.fold add zero
        | Neg, [ x ] -> neg (d x)
        | Div, [ a; b ] ->
            let da, db = d a, d b
            // (a/b)' = a'/b - a b'/b²
            sub (div da b) (div (mul a db) (powi b 2))
        | PowI n, [ x ] -> mul (mul (num (float n)) (powi x (n - 1))) (d x)
        | Pow, [ a; b ] ->
            // a^b (b' log a + b a'/a)
            let da, db = d a, d b
            mul e (add (mul db (unary ULog a)) (div (mul b da) a))
        | Un f, [ x ] ->
            let dx = d x

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
        | (Cmp _ | And | Or | Not), _ -> zero
        | _ -> failwithf "derivative: malformed node %A" e.Op

    d e

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
    | Add, xs -> List.fold add zero xs
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
    | (Param _ | State _ | Time | Noise _ | Ext _) as op, _ -> leaf op
    | Add, xs -> xs |> List.sumBy ev
    | Mul, xs -> xs |> List.fold (fun p x -> p * ev x) 1.0
    | Neg, [ x ] -> -(ev x)
    | Div, [ a; b ] -> ev a / ev b
    | PowI n, [ x ] -> Math.Pow(ev x, float n)
    | Pow, [ a; b ] -> Math.Pow(ev a, ev b)
    | Un f, [ x ] -> applyUnary f (ev x)
    | Min, [ a; b ] -> Math.Min(ev a, ev b)
    | Max, [ a; b ] -> Math.Max(ev a, ev b)
    | Select, [ c; a; b ] -> if ev c <> 0.0 then ev a else ev b
    | Cmp op, [ a; b ] -> compareNum op (ev a) (ev b)
    | And, [ a; b ] -> if ev a <> 0.0 && ev b <> 0.0 then 1.0 else 0.0
    | Or, [ a; b ] -> if ev a <> 0.0 || ev b <> 0.0 then 1.0 else 0.0
    | Not, [ a ] -> if ev a = 0.0 then 1.0 else 0.0
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
    | op, _ -> sprintf "%A" op
