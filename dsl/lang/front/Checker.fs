/// The checker: names, shapes, indices, linearity in dt/dW, settings, parameter sets and queries.
/// Produces a `Checked.CheckedFile` or every error it can find, sorted by position.
module Sde.Lang.Checker

open System
open System.Globalization
open Sde.Lang.Syntax
open Sde.Lang.Checked

type R<'a> = Result<'a, Diagnostic list>

// ---------------------------------------------------------------------------------- result helpers

let private fail p m : R<'a> = Error [ { Pos = p; Message = m } ]

/// The errors one expression reports before the rest are dropped (see map2).
let private maxMerged = 100

let private map2 f (a: R<'a>) (b: R<'b>) : R<'c> =
    match a, b with
    | Ok x, Ok y -> Ok(f x y)
    // at most about maxMerged errors from one expression: appending to the left operand's errors at
    // every level of a long chain `a b c ...` of unknown names was quadratic (a fuzz finding: 510 MB)
    | Error e1, Error e2 -> Error(if List.length e1 >= maxMerged then e1 else e1 @ e2)
    | Error e, _
    | _, Error e -> Error e

let private map3 f a b c = map2 (fun (x, y) z -> f x y z) (map2 (fun x y -> x, y) a b) c

/// All results, or all their errors.
let private all (xs: R<'a> list) : R<'a list> =
    List.foldBack (map2 (fun x acc -> x :: acc)) xs (Ok [])

let private errorsOf (r: R<'a>) =
    match r with
    | Ok _ -> []
    | Error e -> e

/// Formats a number the short way: `6`, `6.5`, `0.001`.
let shortNumber (v: float) =
    if Double.IsPositiveInfinity v then "inf"
    elif Double.IsNegativeInfinity v then "-inf"
    else v.ToString("G12", CultureInfo.InvariantCulture)

// ---------------------------------------------------------------------------------- names

let functions =
    [ "exp", (Exp, 1)
      "log", (Log, 1)
      "sqrt", (Sqrt, 1)
      "sin", (Sin, 1)
      "cos", (Cos, 1)
      "tan", (Tan, 1)
      "tanh", (Tanh, 1)
      "abs", (Abs, 1)
      "pow", (Fn.Pow, 2)
      "min", (Min, 2)
      "max", (Max, 2)
      "sigmoid", (Sigmoid, 1) ]
    |> Map.ofList

/// Names no declaration or index variable may take.
let reserved =
    set ([ "t"; "dt"; "sum"; "avg"; "normal"; "uniform"; "inf" ] @ (functions |> Map.keys |> List.ofSeq))

type private Entity =
    | EConst of int
    | EParam of int
    /// `param a[K]`: the params first .. first + K - 1 (`a[0]` ...).
    | EVecParam of first: int * size: int
    | EState of int
    | EBrownian of int
    | EIndex of count: int
    /// `let name = e` in the query block: the checked body, substituted where the name is used.
    | ELet of CExpr

let private describeEntity =
    function
    | EConst _ -> "const"
    | EParam _ -> "param"
    | EVecParam _ -> "vector param"
    | EState _ -> "state"
    | EBrownian _ -> "brownian"
    | EIndex _ -> "index variable"
    | ELet _ -> "let"

type private Ctx =
    | InEquation
    | InInit
    | InObservable

type private Env =
    { Names: Map<string, Entity * Pos>
      States: StateInfo[]
      Brownians: BrownianInfo[]
      Ctx: Ctx }

/// `; did you mean 'x'?` (Diagnostics.suggest).
let suggest (name: string) (candidates: string seq) = Diagnostics.suggest name candidates

/// For an unknown `dW` (a `d` and a capital): the brownian it needs, since a noise differential is
/// only known once `brownian W` declares it; the declared brownians when there are some.
let private undeclaredNoise (env: Env) (name: string) (indexed: bool) : string option =
    if name.Length >= 2 && name[0] = 'd' && Char.IsUpper name[1] && not (env.Names.ContainsKey(name.Substring 1)) then
        let declared =
            env.Names |> Map.toList |> List.choose (fun (n, (e, _)) -> match e with EBrownian _ -> Some("d" + n) | _ -> None)

        let known =
            match declared with
            | [] -> ""
            | ds -> sprintf " (the model's noise differentials: %s)" (String.Join(", ", ds))

        Some(sprintf "; a noise term needs its brownian declared in the model: add 'brownian %s%s'%s" (name.Substring 1) (if indexed then "[N]" else "") known)
    else None

let private unknownNameOf (env: Env) p (name: string) (indexed: bool) : R<'a> =
    // a brownian is not a value (only its differential dW is): never the suggestion for a value
    let values = env.Names |> Map.filter (fun _ (e, _) -> match e with EBrownian _ -> false | _ -> true) |> Map.keys
    let cands = Seq.append values [ "t"; "dt" ]
    let hint = match suggest name cands with "" -> undeclaredNoise env name indexed |> Option.defaultValue "" | s -> s
    fail p (sprintf "unknown name '%s'%s" name hint)

let private unknownName (env: Env) p (name: string) : R<'a> = unknownNameOf env p name false

/// `dW` for a declared brownian `W` (and not itself a declared name).
let private differentialOf (env: Env) (name: string) =
    if name.Length > 1 && name[0] = 'd' && not (env.Names.ContainsKey name) then
        match env.Names.TryFind(name.Substring 1) with
        | Some(EBrownian b, _) -> Some b
        | _ -> None
    else
        None

let private isDiffName (env: Env) (name: string) =
    name = "dt" || (differentialOf env name).IsSome

/// Whether `dt` or a `dW` occurs in an expression.
/// One level of `hasDiff`, with `go` for the subexpressions.
let private hasDiffStep (env: Env) (go: Expr -> bool) (e: Expr) =
    match e.Kind with
    | Num _ -> false
    | Var n -> isDiffName env n
    | Index(n, i) -> isDiffName env n || go i
    | ExprKind.Neg a
    | Not a
    | Reduce(_, _, a) -> go a
    | Bin(_, a, b)
    | Cmp(_, a, b)
    | And(a, b)
    | Or(a, b) -> go a || go b
    | Call(_, args) -> List.exists go args
    | If(c, a, b) -> go c || go a || go b

let private hasDiff (env: Env) (e: Expr) =
    let rec go (x: Expr) = hasDiffStep env go x
    go e

// ---------------------------------------------------------------------------------- constants

/// Evaluates a compile-time constant expression (numbers, consts, arithmetic, functions).
let rec private evalConst (consts: Map<string, int>) (what: string) (e: Expr) : R<float> =
    let ev = evalConst consts what

    match e.Kind with
    | Num v -> Ok v
    | Var n ->
        match consts.TryFind n with
        | Some v -> Ok(float v)
        | None -> fail e.Pos (sprintf "%s must be a constant expression; '%s' is not a const" what n)
    | ExprKind.Neg a -> ev a |> Result.map (~-)
    | Bin(op, a, b) ->
        map2
            (fun x y ->
                match op with
                | BinOp.Add -> x + y
                | BinOp.Sub -> x - y
                | BinOp.Mul -> x * y
                | BinOp.Div -> x / y
                | BinOp.Pow -> Sde.Core.Elementary.Pow(x, y))
            (ev a)
            (ev b)
    | Call(f, args) when functions.ContainsKey f && (snd functions[f]) = args.Length ->
        all (List.map ev args)
        |> Result.map (fun xs ->
            match fst functions[f], xs with
            // the engine's own functions (Sde.Core.Elementary), as the drift's constants fold and the emitted code runs
            | Exp, [ x ] -> Sde.Core.Elementary.Exp x
            | Log, [ x ] -> Sde.Core.Elementary.Log x
            | Sqrt, [ x ] -> sqrt x
            | Sin, [ x ] -> Sde.Core.Elementary.Sin x
            | Cos, [ x ] -> Sde.Core.Elementary.Cos x
            | Tan, [ x ] -> Sde.Core.Elementary.Tan x
            | Tanh, [ x ] -> Sde.Core.Elementary.Tanh x
            | Abs, [ x ] -> abs x
            | Sigmoid, [ x ] -> 1.0 / (1.0 + Sde.Core.Elementary.Exp -x)
            | Fn.Pow, [ x; y ] -> Sde.Core.Elementary.Pow(x, y)
            | Min, [ x; y ] -> min x y
            | Max, [ x; y ] -> max x y
            | _ -> nan)
    | _ -> fail e.Pos (sprintf "%s must be a constant expression (numbers, consts and arithmetic)" what)

let private isInteger (v: float) = Double.IsFinite v && Math.Floor v = v && abs v < 1e15

let private evalInt consts what (e: Expr) : R<int64> =
    evalConst consts what e
    |> Result.bind (fun v ->
        if isInteger v then Ok(int64 v)
        else fail e.Pos (sprintf "%s must be an integer, got %s" what (shortNumber v)))

/// A histogram's bin count: an integer constant in 1 ..= 10^7.
let private checkBins consts (bins: Expr) : R<int> =
    evalInt consts "bins" bins
    |> Result.bind (fun n ->
        if n < 1L then fail bins.Pos "bins must be >= 1"
        elif n > int64 Limits.bins then fail bins.Pos (sprintf "bins must be at most %d" Limits.bins)
        else Ok(int n))

let private evalFinite consts what (e: Expr) : R<float> =
    evalConst consts what e
    |> Result.bind (fun v -> if Double.IsFinite v then Ok v else fail e.Pos (sprintf "%s must be finite" what))

/// A finite constant expression (numbers, consts, arithmetic, functions): for blocks checked outside
/// this module (the `fit` block).
let constantValue (consts: Map<string, int>) (what: string) (e: Expr) : Result<float, Diagnostic list> = evalFinite consts what e

// ---------------------------------------------------------------------------------- index expressions

let rec private toIExpr (env: Env) (e: Expr) : R<IExpr> =
    let bad what =
        fail e.Pos (sprintf "an index must be integer arithmetic on consts and index variables; %s" what)

    match e.Kind with
    | Num v when isInteger v && abs v <= float Int32.MaxValue -> Ok(IConst(int v))
    | Num v when isInteger v -> fail e.Pos (sprintf "index literal %s is out of range (at most %d in magnitude)" (shortNumber v) Int32.MaxValue)
    | Num v -> bad (sprintf "%s is not an integer" (shortNumber v))
    | Var n ->
        match env.Names.TryFind n with
        | Some(EConst v, _) -> Ok(IConst v)
        | Some(EIndex _, _) -> Ok(IVar n)
        | Some(k, _) -> bad (sprintf "'%s' is a %s" n (describeEntity k))
        | None -> unknownName env e.Pos n
    | ExprKind.Neg a -> toIExpr env a |> Result.map INeg
    | Bin(BinOp.Add, a, b) -> map2 (fun x y -> IAdd(x, y)) (toIExpr env a) (toIExpr env b)
    | Bin(BinOp.Sub, a, b) -> map2 (fun x y -> ISub(x, y)) (toIExpr env a) (toIExpr env b)
    | Bin(BinOp.Mul, a, b) -> map2 (fun x y -> IMul(x, y)) (toIExpr env a) (toIExpr env b)
    | Bin(op, _, _) -> bad (sprintf "'%s' is not allowed (use + - *)" (Printer.binOp op))
    | _ -> bad "this is not"

let rec private evalI (vars: Map<string, int>) (ie: IExpr) : int64 =
    match ie with
    | IConst c -> int64 c
    | IVar v -> int64 vars[v]
    | IAdd(a, b) -> Checked.(+) (evalI vars a) (evalI vars b)
    | ISub(a, b) -> Checked.(-) (evalI vars a) (evalI vars b)
    | IMul(a, b) -> Checked.(*) (evalI vars a) (evalI vars b)
    | INeg a -> Checked.(~-) (evalI vars a)

let rec private freeVars (ie: IExpr) : string list =
    match ie with
    | IConst _ -> []
    | IVar v -> [ v ]
    | IAdd(a, b)
    | ISub(a, b)
    | IMul(a, b) -> freeVars a @ freeVars b |> List.distinct
    | INeg a -> freeVars a

let rec private iexprText (ie: IExpr) =
    match ie with
    | IConst c -> string c
    | IVar v -> v
    | IAdd(a, b) -> sprintf "%s + %s" (iexprText a) (iexprText b)
    | ISub(a, b) -> sprintf "%s - %s" (iexprText a) (iexprText b)
    | IMul(a, b) -> sprintf "%s * %s" (iexprText a) (iexprText b)
    | INeg a -> "-" + iexprText a

/// Checks `name[ie]` stays in [0, size) for every value of the index variables it uses.
let private checkRange (env: Env) p (kind: string) (name: string) (size: int) (hint: string) (ie: IExpr) : R<IExpr> =
    let vars =
        freeVars ie
        |> List.map (fun v ->
            match env.Names.TryFind v with
            | Some(EIndex n, _) -> v, n
            | _ -> v, 1)

    let combos = vars |> List.fold (fun acc (_, n) -> acc * int64 (max n 1)) 1L

    let rec assignments (vs: (string * int) list) : Map<string, int> seq =
        match vs with
        | [] -> Seq.singleton Map.empty
        | (v, n) :: rest -> seq { for m in assignments rest do for k in 0 .. n - 1 -> Map.add v k m }

    if combos > 1_000_000L then
        Ok ie
    else
        let outside =
            try
                assignments vars |> Seq.tryFind (fun m -> let k = evalI m ie in k < 0L || k >= int64 size) |> Ok
            with :? OverflowException ->
                Error(sprintf "index %s overflows 64-bit integer arithmetic" (iexprText ie))

        match outside with
        | Error msg -> fail p msg
        | Ok None -> Ok ie
        | Ok(Some m) ->
            let whenText =
                if m.IsEmpty then ""
                else " when " + String.Join(", ", m |> Map.toList |> List.map (fun (v, k) -> sprintf "%s = %d" v k))

            fail
                p
                (sprintf
                    "index %s out of range for %s '%s' of size %d%s (valid: 0 to %d)%s"
                    (iexprText ie) kind name size whenText (size - 1) hint)

// ---------------------------------------------------------------------------------- expressions

let private mul a b =
    match a, b with
    | Const 1.0, x
    | x, Const 1.0 -> x
    | _ -> Mul(a, b)

let rec private mentionsState (c: CExpr) =
    match c with
    | StateRef _ -> true
    | Const _
    | Param _
    | ParamAt _
    | Time
    | IndexValue _ -> false
    | CExpr.Neg a -> mentionsState a
    | Add(a, b)
    | Sub(a, b)
    | Mul(a, b)
    | Div(a, b)
    | Power(a, b) -> mentionsState a || mentionsState b
    | Func(_, args) -> List.exists mentionsState args
    | IfThen(c, a, b) -> condMentionsState c || mentionsState a || mentionsState b
    | SumOver(_, _, b)
    | AvgOver(_, _, b) -> mentionsState b

and private condMentionsState (c: CCond) =
    match c with
    | CCmp(_, a, b) -> mentionsState a || mentionsState b
    | CAnd(a, b)
    | COr(a, b) -> condMentionsState a || condMentionsState b
    | CNot a -> condMentionsState a

/// An index variable may not take a declared or reserved name.
let private checkFreshIndex (env: Env) p (v: string) : R<unit> =
    if reserved.Contains v then
        fail p (sprintf "index variable '%s' uses a reserved name; rename it" v)
    else
        match env.Names.TryFind v with
        | Some(k, dp) -> fail p (sprintf "index variable '%s' shadows the %s '%s' declared at %O; rename it" v (describeEntity k) v dp)
        | None -> if isDiffName env v then fail p (sprintf "index variable '%s' shadows the differential '%s'; rename it" v v) else Ok()

/// Sizes of the states indexed by an expression mentioning `v` in `e`.
let rec private indexedBy (env: Env) (v: string) (e: Expr) : (string * int) list =
    let here =
        match e.Kind with
        | Index(n, ie) ->
            match toIExpr env ie with
            | Ok ix when List.contains v (freeVars ix) ->
                match env.Names.TryFind n, differentialOf env n with
                | Some(EState s, _), _ -> [ n, env.States[s].Size ]
                | Some(EVecParam(_, k), _), _ -> [ n, k ]
                | _, Some b -> [ n, env.Brownians[b].Size ]
                | _ -> []
            | _ -> []
        | _ -> []

    let sub =
        match e.Kind with
        | Num _
        | Var _ -> []
        | Index(_, a)
        | ExprKind.Neg a
        | Not a
        | Reduce(_, _, a) -> indexedBy env v a
        | Bin(_, a, b)
        | Cmp(_, a, b)
        | And(a, b)
        | Or(a, b) -> indexedBy env v a @ indexedBy env v b
        | Call(_, args) -> List.collect (indexedBy env v) args
        | If(c, a, b) -> indexedBy env v c @ indexedBy env v a @ indexedBy env v b

    here @ sub

let private diffMisuse (env: Env) p (name: string) : R<'a> =
    match env.Ctx with
    | InObservable -> fail p (sprintf "observables must not contain '%s'; use states, params and t" name)
    | InInit -> fail p (sprintf "an init must not contain '%s'" name)
    | InEquation -> fail p (sprintf "'%s' may only multiply a term of the right side" name)

let rec private checkExpr (env: Env) (e: Expr) : R<CExpr> =
    let ce = checkExpr env

    match e.Kind with
    | Num v -> Ok(Const v)
    | Var "t" -> Ok Time
    | Var n when isDiffName env n -> diffMisuse env e.Pos n
    | Var n ->
        match env.Names.TryFind n with
        | Some(EConst v, _) -> Ok(Const(float v))
        | Some(EParam i, _) -> Ok(Param i)
        | Some(EVecParam(_, k), _) -> fail e.Pos (sprintf "param '%s' is a vector of size %d; index it, e.g. %s[0]" n k n)
        | Some(EIndex _, _) -> Ok(IndexValue(IVar n))
        | Some(ELet c, _) when env.Ctx = InInit && mentionsState c ->
            fail e.Pos (sprintf "an init cannot use let '%s': it depends on the state; use params and consts" n)
        | Some(ELet c, _) -> Ok c
        | Some(EBrownian _, _) ->
            fail e.Pos (sprintf "brownian '%s' cannot be used as a value; its differential is d%s" n n)
        | Some(EState s, _) ->
            let st = env.States[s]

            if env.Ctx = InInit then
                fail e.Pos (sprintf "an init cannot refer to state '%s'; use params and consts" n)
            elif st.IsVector then
                fail e.Pos (sprintf "state '%s' is a vector of size %d; index it, e.g. %s[i]" n st.Size n)
            else
                Ok(StateRef(s, IConst 0))
        | None -> unknownName env e.Pos n
    | Index(n, _) when isDiffName env n -> diffMisuse env e.Pos n
    | Index(n, ie) ->
        match env.Names.TryFind n with
        | Some(EState s, _) ->
            let st = env.States[s]

            if env.Ctx = InInit then
                fail e.Pos (sprintf "an init cannot refer to state '%s'; use params and consts" n)
            elif not st.IsVector then
                fail e.Pos (sprintf "state '%s' is a scalar; remove the index" n)
            else
                toIExpr env ie
                |> Result.bind (fun ix ->
                    if st.Periodic then Ok ix
                    else checkRange env ie.Pos "state" n st.Size "; declare the state periodic to wrap" ix)
                |> Result.map (fun ix -> StateRef(s, ix))
        | Some(EVecParam(first, k), _) ->
            toIExpr env ie
            |> Result.bind (checkRange env ie.Pos "param" n k "")
            |> Result.map (fun ix ->
                match freeVars ix with
                | [] -> Param(first + int (evalI Map.empty ix))
                | _ -> ParamAt(first, k, ix))
        | Some(EParam _, _) -> fail e.Pos (sprintf "param '%s' is a scalar and cannot be indexed; remove the index" n)
        | Some(k, _) -> fail e.Pos (sprintf "the %s '%s' is not a vector and cannot be indexed" (describeEntity k) n)
        | None -> unknownNameOf env e.Pos n true
    | ExprKind.Neg a -> ce a |> Result.map CExpr.Neg
    | Bin(op, a, b) ->
        map2
            (fun x y ->
                match op with
                | BinOp.Add -> Add(x, y)
                | BinOp.Sub -> Sub(x, y)
                | BinOp.Mul -> Mul(x, y)
                | BinOp.Div -> Div(x, y)
                | BinOp.Pow -> Power(x, y))
            (ce a)
            (ce b)
    | Call(f, args) ->
        match functions.TryFind f with
        | Some(fn, arity) when arity = args.Length -> all (List.map ce args) |> Result.map (fun xs -> Func(fn, xs))
        | Some(_, arity) ->
            fail e.Pos (sprintf "'%s' takes %d argument%s, not %d" f arity (if arity = 1 then "" else "s") args.Length)
        | None when env.Names.ContainsKey f ->
            fail e.Pos (sprintf "'%s' is not a function; index a vector with %s[...]" f f)
        | None ->
            fail e.Pos (sprintf "unknown function '%s'%s" f (suggest f (Map.keys functions)))
    | If(c, a, b) ->
        let cond =
            checkCond env c
            |> Result.bind (fun cc ->
                if env.Ctx = InEquation && condMentionsState cc then
                    fail
                        c.Pos
                        "in an equation the condition of 'if' must not depend on the state (only on t, params and index variables)"
                else
                    Ok cc)

        map3 (fun x y z -> IfThen(x, y, z)) cond (ce a) (ce b)
    | Cmp _
    | And _
    | Or _
    | Not _ -> fail e.Pos "a condition is not a number; use it after 'if'"
    | Reduce(op, v, body) ->
        let opName = if op = Sum then "sum" else "avg"

        checkFreshIndex env e.Pos v
        |> Result.bind (fun () ->
            let env1 = { env with Names = env.Names.Add(v, (EIndex 1, e.Pos)) }

            match indexedBy env1 v body |> List.distinctBy snd with
            | [] -> fail e.Pos (sprintf "%s(%s, ...) must index a vector state or param with '%s', e.g. %s(%s, x[%s])" opName v v opName v v)
            | [ (_, n) ] ->
                let env2 = { env with Names = env.Names.Add(v, (EIndex n, e.Pos)) }

                checkExpr env2 body
                |> Result.map (fun b -> if op = Sum then SumOver(v, n, b) else AvgOver(v, n, b))
            | (a, n1) :: (b, n2) :: _ ->
                fail
                    e.Pos
                    (sprintf "%s(%s, ...) indexes states of different sizes ('%s' has %d, '%s' has %d)" opName v a n1 b n2))

and private checkCond (env: Env) (e: Expr) : R<CCond> =
    match e.Kind with
    | Cmp(op, a, b) -> map2 (fun x y -> CCmp(op, x, y)) (checkExpr env a) (checkExpr env b)
    | And(a, b) -> map2 (fun x y -> CAnd(x, y)) (checkCond env a) (checkCond env b)
    | Or(a, b) -> map2 (fun x y -> COr(x, y)) (checkCond env a) (checkCond env b)
    | Not a -> checkCond env a |> Result.map CNot
    | _ -> fail e.Pos "expected a condition (a comparison such as x > 0)"

// ---------------------------------------------------------------------------------- linearity in dt, dW

/// The right side split into a part without differentials, a dt coefficient and dW coefficients.
type private Lin =
    { Pure: (CExpr * Pos) option
      Dt: CExpr option
      Noise: ((int * IExpr) * CExpr) list }

let private linZero = { Pure = None; Dt = None; Noise = [] }

let private linMap (f: CExpr -> CExpr) (l: Lin) =
    { Pure = l.Pure |> Option.map (fun (c, p) -> f c, p)
      Dt = Option.map f l.Dt
      Noise = l.Noise |> List.map (fun (k, c) -> k, f c) }

let private linAdd (a: Lin) (b: Lin) =
    let add x y =
        match x, y with
        | Some x, Some y -> Some(Add(x, y))
        | Some x, None
        | None, Some x -> Some x
        | None, None -> None

    let pureTerms =
        match a.Pure, b.Pure with
        | Some(x, p), Some(y, _) -> Some(Add(x, y), p)
        | Some x, None
        | None, Some x -> Some x
        | None, None -> None

    let noise =
        (a.Noise @ b.Noise)
        |> List.groupBy fst
        |> List.map (fun (k, cs) -> k, cs |> List.map snd |> List.reduce (fun x y -> Add(x, y)))

    { Pure = pureTerms; Dt = add a.Dt b.Dt; Noise = noise }

let private hasDt (l: Lin) = l.Dt.IsSome
let private hasDw (l: Lin) = not l.Noise.IsEmpty

let rec private firstDiffName (env: Env) (e: Expr) : string =
    match e.Kind with
    | Var n
    | Index(n, _) when isDiffName env n -> n
    | _ ->
        let kids =
            match e.Kind with
            | Index(_, a)
            | ExprKind.Neg a
            | Not a
            | Reduce(_, _, a) -> [ a ]
            | Bin(_, a, b)
            | Cmp(_, a, b)
            | And(a, b)
            | Or(a, b) -> [ a; b ]
            | Call(_, args) -> args
            | If(c, a, b) -> [ c; a; b ]
            | _ -> []

        kids |> List.tryFind (hasDiff env) |> Option.map (firstDiffName env) |> Option.defaultValue "dt"

let private linearHint = "the right side must be a sum of terms a*dt and b*dW"

/// `hasDiff` memoised on the nodes of one right side: `lin` asks it of the left operand at every level of
/// a product chain, which walked the chain again and again (a fuzz finding: `sigma dWsigma ... dW
/// dWsigma ... dW`, 5000 factors, allocated 500 MB, quadratic in the chain).
let private hasDiffMemo (memo: Collections.Generic.Dictionary<Expr, bool>) (env: Env) (e: Expr) =
    let rec go (e: Expr) =
        match memo.TryGetValue e with
        | true, v -> v
        | _ ->
            let v = hasDiffStep env go e
            memo[e] <- v
            v

    go e

let rec private linWith (memo: Collections.Generic.Dictionary<Expr, bool>) (env: Env) (e: Expr) : R<Lin> =
    let hasDiff (env: Env) (x: Expr) = hasDiffMemo memo env x
    let lin = linWith memo
    if not (hasDiff env e) then
        checkExpr env e |> Result.map (fun c -> { linZero with Pure = Some(c, e.Pos) })
    else
        // only the errors name it: computed eagerly at every level of a chain `a dW dW ...`, it made
        // the check cubic in the chain's length (a fuzz finding: 1000 factors took seconds)
        let dn = lazy (firstDiffName env e)

        match e.Kind with
        | Var "dt" -> Ok { linZero with Dt = Some(Const 1.0) }
        | Var n ->
            let b = (differentialOf env n).Value
            let bi = env.Brownians[b]

            if bi.IsVector then
                fail e.Pos (sprintf "brownian '%s' is a vector of size %d; write %s[i]" bi.Name bi.Size n)
            else
                Ok { linZero with Noise = [ (b, IConst 0), Const 1.0 ] }
        | Index("dt", _) -> fail e.Pos "'dt' cannot be indexed"
        | Index(n, ie) when isDiffName env n ->
            let b = (differentialOf env n).Value
            let bi = env.Brownians[b]

            if not bi.IsVector then
                fail e.Pos (sprintf "brownian '%s' is a scalar; write %s without an index" bi.Name n)
            elif hasDiff env ie then
                fail ie.Pos "dt and dW cannot appear in an index"
            else
                toIExpr env ie
                |> Result.bind (checkRange env ie.Pos "brownian" bi.Name bi.Size "")
                |> Result.map (fun ix -> { linZero with Noise = [ (b, ix), Const 1.0 ] })
        | Index _ -> fail e.Pos "dt and dW cannot appear in an index"
        | ExprKind.Neg a -> lin env a |> Result.map (linMap CExpr.Neg)
        | Bin(BinOp.Add, a, b) -> map2 linAdd (lin env a) (lin env b)
        | Bin(BinOp.Sub, a, b) -> map2 linAdd (lin env a) (lin env b |> Result.map (linMap CExpr.Neg))
        | Bin(BinOp.Mul, a, b) ->
            match hasDiff env a, hasDiff env b with
            | true, true ->
                map2
                    (fun la lb ->
                        if hasDw la && hasDw lb then
                            "dW*dW is not linear in dW; write the Itô correction as a drift term"
                        elif hasDt la && hasDt lb then
                            "dt*dt is not linear in dt; " + linearHint
                        else
                            "dt*dW is not allowed: " + linearHint)
                    (lin env a)
                    (lin env b)
                |> Result.bind (fun m -> fail e.Pos m)
            | false, _ -> map2 (fun ca lb -> linMap (mul ca) lb) (checkExpr env a) (lin env b)
            | true, false -> map2 (fun la cb -> linMap (fun c -> mul c cb) la) (lin env a) (checkExpr env b)
        | Bin(BinOp.Div, a, b) ->
            if hasDiff env b then
                fail b.Pos (sprintf "'%s' cannot appear in a denominator; %s" (firstDiffName env b) linearHint)
            else
                map2 (fun la cb -> linMap (fun c -> Div(c, cb)) la) (lin env a) (checkExpr env b)
        | Bin(BinOp.Pow, a, _) when hasDiff env a ->
            if dn.Value = "dt" then
                fail e.Pos ("dt^... is not linear in dt; " + linearHint)
            else
                fail e.Pos (sprintf "%s^... is not linear in %s; write the Itô correction as a drift term" dn.Value dn.Value)
        | Bin(BinOp.Pow, _, _) -> fail e.Pos (sprintf "'%s' cannot appear in an exponent; %s" dn.Value linearHint)
        | Call(f, _) -> fail e.Pos (sprintf "'%s' cannot appear inside a function (%s); %s" dn.Value f linearHint)
        | If _ ->
            fail e.Pos (sprintf "'%s' cannot appear inside 'if'; write (if c then a else b) %s instead" dn.Value dn.Value)
        | Reduce(op, _, _) ->
            fail e.Pos (sprintf "'%s' cannot appear inside %s(...)" dn.Value (if op = Sum then "sum" else "avg"))
        | _ -> fail e.Pos (sprintf "'%s' cannot appear in a condition" dn.Value)

let private lin (env: Env) (e: Expr) : R<Lin> =
    linWith (Collections.Generic.Dictionary<Expr, bool>(HashIdentity.Reference)) env e

let rec private isZero (c: CExpr) =
    match c with
    | Const 0.0 -> true
    | CExpr.Neg a -> isZero a
    | _ -> false

// ---------------------------------------------------------------------------------- model

/// The declarations so far. While they are collected the lists are in reverse order (each
/// declaration is consed on, so that n declarations take O(n log n), not O(n²)), with their counts
/// and total sizes; `declarations` returns them in declaration order.
type private Decls =
    { Consts: (string * int) list
      ConstMap: Map<string, int>
      Params: ParamInfo list
      ParamCount: int
      States: StateInfo list
      StateCount: int
      StateDim: int
      Brownians: BrownianInfo list
      BrownianCount: int
      NoiseDim: int
      Names: Map<string, Entity * Pos> }

/// Largest total state dimension (and total noise dimension) of a model: beyond it the expanded
/// model would not fit in memory anyway.
let maxDimension = Limits.dimension

/// Params in all (scalars and vector components): each is a field of the emitted model, a value type
/// that the engine keeps in arrays, and the runtime refuses arrays of value types above 64 KB.
let maxParams = Limits.paramCount

let private inDomain (lo: Bound, hi: Bound) (v: float) =
    (if lo.Closed then v >= lo.Value else v > lo.Value)
    && (if hi.Closed then v <= hi.Value else v < hi.Value)

let domainText (lo: Bound, hi: Bound) =
    sprintf "%s%s, %s%s" (if lo.Closed then "[" else "(") (shortNumber lo.Value) (shortNumber hi.Value) (if hi.Closed then "]" else ")")

/// Checks a parameter value against its domain.
let checkDomain (p: ParamInfo) (v: float) : Result<unit, string> =
    if Double.IsNaN v then
        Error(sprintf "param '%s' cannot be NaN" p.Name)
    else
        match p.Domain with
        | Some d when not (inDomain d v) ->
            Error(sprintf "value %s of param '%s' is outside its domain %s" (shortNumber v) p.Name (domainText d))
        | _ -> Ok()

/// Consts, params, states and brownians, in declaration order.
let private declarations (items: ModelItem list) : Decls * Diagnostic list =
    let declare (d: Decls, errs) name p entity =
        let errs =
            if reserved.Contains name then
                { Pos = p; Message = sprintf "'%s' is a reserved name; rename it" name } :: errs
            else
                match d.Names.TryFind name with
                | Some(k, fp) ->
                    { Pos = p; Message = sprintf "duplicate declaration of '%s' (first declared as a %s at %O)" name (describeEntity k) fp }
                    :: errs
                | None -> errs

        { d with Names = if d.Names.ContainsKey name then d.Names else d.Names.Add(name, (entity, p)) }, errs

    let sizeOf (d: Decls) (size: Expr option) : R<int> =
        match size with
        | None -> Ok 1
        | Some e ->
            evalInt d.ConstMap "a size" e
            |> Result.bind (fun n ->
                if n < 1L then fail e.Pos (sprintf "a size must be positive, got %d" n)
                elif n > int64 Limits.sizeExpression then fail e.Pos (sprintf "a size must be at most %d" Limits.sizeExpression)
                else Ok(int n))

    // the size of a state or brownian (1 after an error), refused when it takes the dimension so far,
    // `used`, past maxDimension (`message total limit` says so)
    let dimensionWithin (d: Decls) (size: Expr option) (p: Pos) (used: int) (message: int64 -> int -> string) =
        match sizeOf d size with
        | Error es -> 1, es
        | Ok s when int64 used + int64 s > int64 maxDimension -> 1, [ { Pos = p; Message = message (int64 used + int64 s) maxDimension } ]
        | Ok s -> s, []

    let step (d: Decls, errs: Diagnostic list) item =
        match item with
        | ConstDecl(n, e, p) ->
            match evalInt d.ConstMap (sprintf "const '%s'" n) e with
            | Ok v when abs v <= int64 Int32.MaxValue ->
                let d1, errs = declare (d, errs) n p (EConst(int v))

                (if d.Names.ContainsKey n then d1
                 else { d1 with Consts = (n, int v) :: d.Consts; ConstMap = d.ConstMap.Add(n, int v) }),
                errs
            | Ok _ -> d, { Pos = e.Pos; Message = sprintf "const '%s' is too large" n } :: errs
            | Error es -> d, List.rev es @ errs
        | ParamDecl(n, size, e, dom, p) ->
            // a vector `param a[K]`: K params a[0] .. a[K-1] with the one default and domain
            let count, sizeErrors =
                match size with
                | None -> None, []
                | Some s ->
                    match sizeOf d size with
                    // (named as if it had the largest size, so that its indices raise no second error)
                    | Ok k when k > maxParams -> Some maxParams, [ { Pos = s.Pos; Message = sprintf "a vector param has at most %d components" maxParams } ]
                    | Ok k -> Some k, []
                    | Error es -> Some 1, List.rev es

            // every param (scalar or component) is a field of the emitted model: bound them all
            let tooMany = sizeErrors.IsEmpty && d.ParamCount + defaultArg count 1 > maxParams

            let errs =
                if tooMany then
                    { Pos = p; Message = sprintf "a model has at most %d params in all (scalars and vector components); '%s' makes %d" maxParams n (d.ParamCount + defaultArg count 1) }
                    :: sizeErrors @ errs
                else sizeErrors @ errs

            let infos v =
                match count with
                | None ->
                    [ { Name = n
                        Default = v
                        Domain = dom
                        Pos = p } ]
                | Some k ->
                    [ for j in 0 .. k - 1 ->
                          { Name = componentName n j
                            Default = v
                            Domain = dom
                            Pos = p } ]

            let info v = List.head (infos v)

            let d1, errs =
                declare (d, errs) n p (match count with None -> EParam d.ParamCount | Some k -> EVecParam(d.ParamCount, k))

            let add (d1: Decls) v =
                let xs = infos v
                { d1 with Params = List.rev xs @ d.Params; ParamCount = d.ParamCount + xs.Length }

            let errs =
                match dom with
                | Some(lo, hi) when not (lo.Value < hi.Value) ->
                    { Pos = p; Message = sprintf "empty domain %s for param '%s'" (domainText (lo, hi)) n } :: errs
                | _ -> errs

            match evalFinite d.ConstMap (sprintf "the default of param '%s'" n) e with
            | Ok v ->
                let pi = info v

                let errs =
                    match checkDomain pi v with
                    | Ok() -> errs
                    | Error m -> { Pos = e.Pos; Message = m } :: errs

                (if d.Names.ContainsKey n then d1 else add d1 v), errs
            | Error es ->
                (if d.Names.ContainsKey n then d1 else add d1 0.0),
                List.rev es @ errs
        | StateDecl(n, size, per, p) ->
            let sz, serrs =
                dimensionWithin d size p d.StateDim (sprintf "state '%s' brings the state dimension to %d; at most %d" n)

            let errs =
                if per && size.IsNone then
                    { Pos = p; Message = sprintf "a scalar state cannot be periodic; declare '%s[N] periodic'" n } :: errs
                else
                    errs

            let d1, errs = declare (d, List.rev serrs @ errs) n p (EState d.StateCount)

            let info =
                { Name = n
                  Size = sz
                  IsVector = size.IsSome
                  Periodic = per
                  Offset = d.StateDim
                  Pos = p }

            (if d.Names.ContainsKey n then d1 else { d1 with States = info :: d.States; StateCount = d.StateCount + 1; StateDim = d.StateDim + sz }), errs
        | BrownianDecl(n, size, p) ->
            let sz, serrs =
                dimensionWithin d size p d.NoiseDim (sprintf "brownian '%s' brings the noise dimension to %d; at most %d" n)

            let d1, errs = declare (d, List.rev serrs @ errs) n p (EBrownian d.BrownianCount)

            let info: BrownianInfo =
                { Name = n
                  Size = sz
                  IsVector = size.IsSome
                  Offset = d.NoiseDim
                  Pos = p }

            (if d.Names.ContainsKey n then d1 else { d1 with Brownians = info :: d.Brownians; BrownianCount = d.BrownianCount + 1; NoiseDim = d.NoiseDim + sz }), errs
        // the body is checked below, once every declaration is known
        | LetDecl(n, _, p) -> declare (d, errs) n p (ELet(Const nan))
        | InitDecl _
        | Equation _
        // `Weights.desugar` turns these into hidden states before the checker sees them
        | WeightDecl _
        | LogWeightEquation _
        // read by `calculusOf`
        | CalculusDecl _ -> d, errs

    let empty =
        { Consts = []
          ConstMap = Map.empty
          Params = []
          ParamCount = 0
          States = []
          StateCount = 0
          StateDim = 0
          Brownians = []
          BrownianCount = 0
          NoiseDim = 0
          Names = Map.empty }

    let d, errs = List.fold step (empty, []) items

    let d =
        { d with
            Consts = List.rev d.Consts
            Params = List.rev d.Params
            States = List.rev d.States
            Brownians = List.rev d.Brownians }

    // the lets in order: a body sees every declaration and the lets before it
    let d, letErrs =
        let notLet (_: string) (k: Entity, _: Pos) = match k with ELet _ -> false | _ -> true

        let env0 =
            { Names = Map.filter notLet d.Names
              States = Array.ofList d.States
              Brownians = Array.ofList d.Brownians
              Ctx = InObservable }

        let names, errs =
            items
            |> List.fold
                (fun (names: Map<string, Entity * Pos>, errs) item ->
                    match item with
                    | LetDecl(n, e, p) when not (names.ContainsKey n) && (match d.Names.TryFind n with Some(ELet _, _) -> true | _ -> false) ->
                        let r = checkExpr { env0 with Names = names } e
                        let c = match r with Ok c -> c | Error _ -> Const nan
                        names.Add(n, (ELet c, p)), errs @ errorsOf r
                    | _ -> names, errs)
                (env0.Names, [])

        { d with Names = names }, errs

    // a declared name must not read as a differential `dW` of a brownian `W`
    let clash =
        d.Brownians
        |> List.choose (fun b ->
            match d.Names.TryFind("d" + b.Name) with
            | Some(_, p) ->
                Some { Pos = p; Message = sprintf "'d%s' would read as the differential of brownian '%s'; rename it" b.Name b.Name }
            | None -> None)

    let dtClash =
        d.Names
        |> Map.toList
        |> List.choose (fun (n, (_, p)) -> if n = "dt" then Some { Pos = p; Message = "'dt' is reserved" } else None)

    d, List.rev errs @ letErrs @ clash @ dtClash

/// The left side `x[i]` of an init or equation: the state and the environment with `i` bound.
let private lhs (env: Env) p (what: string) (name: string) (index: string option) : R<int * Env> =
    match env.Names.TryFind name with
    | Some(EState s, _) ->
        let st = env.States[s]

        match index, st.IsVector with
        | None, true -> fail p (sprintf "state '%s' is a vector; write '%s %s[i] ...'" name what name)
        | Some _, false -> fail p (sprintf "state '%s' is a scalar; write '%s %s' without an index" name what name)
        | None, false -> Ok(s, env)
        | Some i, true ->
            checkFreshIndex env p i
            |> Result.map (fun () -> s, { env with Names = env.Names.Add(i, (EIndex st.Size, p)) })
    | Some(k, _) -> fail p (sprintf "'%s' is a %s, not a state" name (describeEntity k))
    | None ->
        let cands = env.States |> Seq.map (fun s -> s.Name)
        fail p (sprintf "unknown state '%s'%s" name (suggest name cands))

let private checkInit (env: Env) (name, index, rhs, p) : R<CInit> =
    lhs env p "init" name index
    |> Result.bind (fun (s, env1) ->
        let env1 = { env1 with Ctx = InInit }
        let ce = checkExpr env1

        let kind =
            match rhs with
            | InitValue e -> ce e |> Result.map Deterministic
            | InitNormal(m, sd) -> map2 (fun a b -> Normal(a, b)) (ce m) (ce sd)
            | InitUniform(a, b) -> map2 (fun a b -> Uniform(a, b)) (ce a) (ce b)

        kind
        |> Result.map (fun k ->
            { State = s
              Index = index
              Kind = k
              Pos = p }))

let private checkEquation (env: Env) (name, index, rhs: Expr, p) : R<CEquation> =
    lhs env p "d" name index
    |> Result.bind (fun (s, env1) ->
        lin { env1 with Ctx = InEquation } rhs
        |> Result.bind (fun l ->
            match l.Pure with
            | Some(c, tp) when not (isZero c) ->
                fail tp "a term without dt or dW; multiply it by dt (drift) or by a dW (noise)"
            | _ ->
                Ok
                    { State = s
                      Index = index
                      Drift = defaultArg l.Dt (Const 0.0)
                      Noise = l.Noise |> List.map (fun ((b, ix), c) -> { Brownian = b; Index = ix; Coeff = c })
                      Pos = p }))

let calculusNames = [ "ito", Ito; "stratonovich", Stratonovich ]

/// The model's `calculus` item (at most one), Itô without one.
let private calculusOf (items: ModelItem list) : R<Calculus> =
    let decls = items |> List.choose (function CalculusDecl(c, p) -> Some(c, p) | _ -> None)

    let one (c: string, p) =
        match List.tryFind (fun (n, _) -> n = c) calculusNames with
        | Some(_, k) -> Ok k
        | None ->
            let names = List.map fst calculusNames
            fail p (sprintf "unknown calculus '%s'%s; write 'calculus ito' (the default) or 'calculus stratonovich'" c (suggest c names))

    match decls with
    | [] -> Ok Ito
    | first :: rest ->
        let again = rest |> List.map (fun (_, p) -> { Pos = p; Message = sprintf "a second 'calculus' (the first is at %O); a model has one" (snd first) })
        if again.IsEmpty then one first else Error again

/// Every state has exactly one equation and at most one init (a missing init is deterministic 0).
let private checkModel (m: Model) : R<CheckedModel> =
    let d, declErrs = declarations m.Items
    let calculus = calculusOf m.Items

    let env =
        { Names = d.Names
          States = Array.ofList d.States
          Brownians = Array.ofList d.Brownians
          Ctx = InEquation }

    let inits =
        m.Items
        |> List.choose (function
            | InitDecl(n, i, r, p) -> Some(checkInit env (n, i, r, p))
            | _ -> None)

    let eqs =
        m.Items
        |> List.choose (function
            | Equation(n, i, r, p) -> Some(checkEquation env (n, i, r, p))
            | _ -> None)

    let okInits = inits |> List.choose (function Ok x -> Some x | _ -> None)
    let okEqs = eqs |> List.choose (function Ok x -> Some x | _ -> None)

    let dupes (what: string) (xs: (int * Pos) list) =
        xs
        |> List.groupBy fst
        |> List.collect (fun (s, occ) ->
            match occ with
            | (_, first) :: rest ->
                rest
                |> List.map (fun (_, p) ->
                    { Pos = p; Message = sprintf "a second %s for '%s' (the first is at %O); remove one" what (List.item s d.States).Name first })
            | [] -> [])

    let stateOf name =
        match d.Names.TryFind name with
        | Some(EState s, _) -> Some s
        | _ -> None

    let eqStates =
        m.Items |> List.choose (function Equation(n, _, _, p) -> stateOf n |> Option.map (fun s -> s, p) | _ -> None)

    let initStates =
        m.Items |> List.choose (function InitDecl(n, _, _, p) -> stateOf n |> Option.map (fun s -> s, p) | _ -> None)

    let eqStateSet = eqStates |> List.map fst |> Set.ofList

    let missing =
        d.States
        |> List.indexed
        |> List.filter (fun (i, _) -> not (eqStateSet.Contains i))
        |> List.map (fun (_, st) ->
            { Pos = st.Pos
              Message =
                sprintf "state '%s' has no equation; add 'd %s%s = ... dt + ... dW'" st.Name st.Name (if st.IsVector then "[i]" else "") })

    let errs =
        declErrs
        @ errorsOf calculus
        @ List.collect errorsOf inits
        @ List.collect errorsOf eqs
        @ dupes "equation" eqStates
        @ dupes "init" initStates
        @ missing

    if not errs.IsEmpty then
        Error errs
    else
        // the first init of each state
        let firstInit = okInits |> List.rev |> List.fold (fun (acc: Map<int, CInit>) c -> acc.Add(c.State, c)) Map.empty

        let allInits =
            d.States
            |> List.mapi (fun i st ->
                match firstInit.TryFind i with
                | Some c -> c
                | None ->
                    { State = i
                      Index = (if st.IsVector then Some "i" else None)
                      Kind = Deterministic(Const 0.0)
                      Pos = st.Pos })

        let sortedEqs = okEqs |> List.sortBy (fun e -> e.State)

        Ok
            { Name = m.Name
              Consts = d.Consts
              Params = d.Params
              States = d.States
              Brownians = d.Brownians
              Inits = allInits
              Equations = sortedEqs
              Dim = d.States |> List.sumBy (fun s -> s.Size)
              NoiseDim = d.Brownians |> List.sumBy (fun b -> b.Size)
              Calculus = (match calculus with Ok c -> c | Error _ -> Ito)
              Pos = m.Pos }

// ---------------------------------------------------------------------------------- settings

/// Defaults when the file has no `simulate` block or leaves a key out:
/// paths = 1000, dt = 0.01, T = 1, seed = 1, scheme = euler_maruyama, burnin = 0.
let defaultSettings =
    { Paths = 1000L
      Dt = 0.01
      T = 1.0
      Seed = 1UL
      Scheme = "euler_maruyama"
      Burnin = 0.0
      Multilevel = None
      Bias = "estimate"
      Extrapolate = "none"
      ExtrapolatePos = { Line = 0; Col = 0 } }

/// Multilevel defaults (docs/mlmc.md): the coarsest step T/8 and 1000 pilot samples per level when
/// dt and paths are not written, and levels up to dt 2^-10.
let mlmcCoarseSteps = 8.0
let mlmcPilot = 1000L
let mlmcMaxLevels = 10

let schemes = [ "euler_maruyama"; "milstein"; "sra" ]

/// The weak order p of a scheme (the bias of Q(dt) is O(dt^p)): the bias estimate divides
/// Q(dt) − Q(dt/2) by 1 − 2^−p. Euler–Maruyama and Milstein 1, SRA 2.
let weakOrder (scheme: string) =
    match scheme with
    | "sra" -> 2
    | _ -> 1

/// `bias = ...` and `extrapolate = ...` values.
let biasModes = [ "estimate"; "off" ]
let extrapolations = [ "richardson"; "none" ]

/// Cross-checks of settings (burnin < T); `pos` locates the error.
let validateSettings (s: Settings) : Result<unit, string> =
    if s.Paths < 1L then Error "paths must be an integer >= 1"
    elif not (s.Dt > 0.0 && Double.IsFinite s.Dt) then Error "dt must be a positive number"
    elif not (s.T > 0.0 && Double.IsFinite s.T) then Error "T must be a positive number"
    elif not (s.Burnin >= 0.0 && s.Burnin < s.T) then
        Error(sprintf "burnin must satisfy 0 <= burnin < T (burnin = %s, T = %s)" (shortNumber s.Burnin) (shortNumber s.T))
    else Ok()

/// The shortest decimal (at most 12 significant digits) of `x` that `ok` accepts.
let private shortDecimal (ok: float -> bool) (x: float) : string option =
    seq { 1..12 }
    |> Seq.map (fun d -> Double.Parse(x.ToString("G" + string d, CultureInfo.InvariantCulture), CultureInfo.InvariantCulture))
    |> Seq.tryFind ok
    // "R": 10 as "10", not "1E+01"
    |> Option.map (fun v -> v.ToString("R", CultureInfo.InvariantCulture).Replace("E", "e"))

/// The size limits of one run (language limits): at most 10¹² paths, 10¹⁰ steps and 10¹⁵ path-steps
/// (about four months at 10⁸ path-steps per second). Past them a number wrapped or a run never ended.
let sizeError (paths: int64) (dt: float) (t: float) : (string * string) option =
    let steps = t / dt

    if paths > Limits.paths then
        Some("paths", sprintf "paths = %d is more than the limit of %s paths per run" paths (Limits.power (float Limits.paths)))
    elif not (steps <= Limits.steps) then
        Some("dt", sprintf "T/dt = %g steps is more than the limit of %s steps per run; take a larger dt" steps (Limits.power Limits.steps))
    elif float paths * steps > Limits.pathSteps then
        Some("paths", sprintf "paths x steps = %g path-steps is more than the limit of %s per run (about four months at 10^8 per second); split the run or take fewer paths" (float paths * steps) (Limits.power Limits.pathSteps))
    else None

/// None when T is a whole number of steps dt (within the engine's tolerance, 1e-9 relative), else
/// the message: the engine lands on T exactly and never rounds the horizon, so a T off the grid is
/// refused with the nearest step that divides T (and, when it is long, the nearest short one) and
/// the nearest horizon on the grid of dt.
let gridError (dt: float) (t: float) : string option =
    if Sde.Core.RunSettings.WholeSteps(t, dt) >= 0L then None
    else
        let r = t / dt
        let divides n (v: float) = Sde.Core.RunSettings.WholeSteps(t, v) = n
        let show (v: float) = (shortNumber v).Replace("E", "e")
        let dtFor (n: int64) = shortDecimal (divides n) (t / float n) |> Option.defaultValue (show (t / float n))
        let stepsText (n: int64) = if n = 1L then "1 step" else sprintf "%d steps" n
        let nNear = max 1L (int64 (Math.Round r))
        let near = dtFor nNear
        // a short step (three significant digits at most) no larger than dt, when the nearest is long
        let short =
            if near.TrimStart('-', '0', '.').Length <= 3 then None
            else
                // (a bounded search: the error must come at once even for a huge number of steps)
                seq { int64 (ceil r) .. min (int64 (ceil r) * 2L) (int64 (ceil r) + 200L) }
                |> Seq.tryPick (fun n -> shortDecimal (divides n) (t / float n) |> Option.filter (fun s -> s.TrimStart('0', '.').Length <= 3) |> Option.map (fun s -> s, n))
        let tNear = max 1.0 (Math.Round r) * dt
        let tText = shortDecimal (fun v -> Sde.Core.RunSettings.WholeSteps(v, dt) >= 0L) tNear |> Option.defaultValue (show tNear)

        let steps =
            match short with
            | Some(s, n) -> sprintf "dt = %s (%s) or dt = %s (%s)" s (stepsText n) near (stepsText nNear)
            | None -> sprintf "dt = %s (%s)" near (stepsText nNear)

        Some(
            sprintf "T = %s is not a whole number of steps of dt = %s (T/dt = %s), and the run must end at T exactly; take %s, or T = %s"
                (show t) (show dt) (r.ToString("G6", CultureInfo.InvariantCulture).Replace("E", "e")) steps tText
        )

let private checkSettings (consts: Map<string, int>) (block: (Setting list * Pos) option) : R<Settings> =
    match block with
    | None -> Ok defaultSettings
    | Some(xs, bp) ->
        let dupErrs =
            xs
            |> List.groupBy (fun s -> s.Key)
            |> List.collect (fun (k, occ) ->
                occ |> List.tail |> List.map (fun s -> { Pos = s.Pos; Message = sprintf "duplicate setting '%s'" k }))

        let apply (acc: R<Settings>) (s: Setting) : R<Settings> =
            let num what = evalFinite consts what s.Value
            let pos = s.Value.Pos

            let r: R<Settings -> Settings> =
                match s.Key with
                | "paths" ->
                    evalInt consts "paths" s.Value
                    |> Result.bind (fun n -> if n >= 1L then Ok(fun st -> { st with Paths = n }) else fail pos "paths must be >= 1")
                | "dt" -> num "dt" |> Result.bind (fun v -> if v > 0.0 then Ok(fun st -> { st with Dt = v }) else fail pos "dt must be > 0")
                | "T" -> num "T" |> Result.bind (fun v -> if v > 0.0 then Ok(fun st -> { st with T = v }) else fail pos "T must be > 0")
                | "seed" ->
                    evalInt consts "seed" s.Value
                    |> Result.bind (fun n -> if n >= 0L then Ok(fun st -> { st with Seed = uint64 n }) else fail pos "seed must be >= 0")
                | "burnin" ->
                    num "burnin" |> Result.bind (fun v -> if v >= 0.0 then Ok(fun st -> { st with Burnin = v }) else fail pos "burnin must be >= 0")
                | "scheme" ->
                    match s.Value.Kind with
                    | Var n when List.contains n schemes -> Ok(fun st -> { st with Scheme = n })
                    | Var n -> fail pos (sprintf "unknown scheme '%s'; available: %s" n (String.Join(", ", schemes)))
                    | _ -> fail pos "scheme must be a name, e.g. euler_maruyama"
                | "accuracy"
                | "relative_accuracy" ->
                    let relative = s.Key = "relative_accuracy"
                    num s.Key
                    |> Result.bind (fun v ->
                        if not (v > 0.0) then fail pos (sprintf "%s must be > 0 (a root-mean-square error target)" s.Key)
                        elif relative && v >= 1.0 then fail pos "relative_accuracy must be < 1 (0.001 asks for three digits)"
                        else
                            Ok(fun st ->
                                let ml = st.Multilevel |> Option.defaultValue { Accuracy = v; Relative = relative; MaxLevels = mlmcMaxLevels; Pos = s.Pos }
                                { st with Multilevel = Some { ml with Accuracy = v; Relative = relative; Pos = s.Pos } }))
                | "max_levels" ->
                    evalInt consts "max_levels" s.Value
                    |> Result.bind (fun n ->
                        if n >= 1L && n <= 20L then
                            Ok(fun st ->
                                let ml = st.Multilevel |> Option.defaultValue { Accuracy = nan; Relative = false; MaxLevels = 0; Pos = s.Pos }
                                { st with Multilevel = Some { ml with MaxLevels = int n } })
                        else fail pos "max_levels must be an integer in 1..20 (the finest step is dt 2^-max_levels)")
                | "bias" ->
                    match s.Value.Kind with
                    | Var n when List.contains n biasModes -> Ok(fun st -> { st with Bias = n })
                    | _ -> fail pos "bias must be 'estimate' (the default: a discretisation-error estimate on every result) or 'off'"
                | "extrapolate" ->
                    match s.Value.Kind with
                    | Var n when List.contains n extrapolations -> Ok(fun st -> { st with Extrapolate = n; ExtrapolatePos = s.Pos })
                    | _ -> fail pos "extrapolate must be 'richardson' (2 Q(dt/2) - Q(dt) from coupled runs) or 'none' (the default)"
                | k ->
                    fail
                        s.Pos
                        (sprintf "unknown setting '%s'%s (known: paths, dt, T, seed, scheme, burnin, bias, extrapolate, accuracy, relative_accuracy, max_levels)" k
                            (suggest k [ "paths"; "dt"; "T"; "seed"; "scheme"; "burnin"; "bias"; "extrapolate"; "accuracy"; "relative_accuracy"; "max_levels" ]))

            map2 (fun st f -> f st) acc r

        let r = List.fold apply (Ok defaultSettings) xs
        let written key = xs |> List.tryFind (fun s -> s.Key = key)

        // multilevel: one accuracy; max_levels only with it; dt and paths then default to the
        // coarsest step T/8 and the pilot size
        let r =
            r
            |> Result.bind (fun st ->
                match st.Multilevel, written "accuracy", written "relative_accuracy", written "max_levels" with
                | _, Some _, Some b, _ -> fail b.Pos "give either accuracy or relative_accuracy, not both"
                | Some ml, None, None, Some m when Double.IsNaN ml.Accuracy ->
                    fail m.Pos "max_levels bounds the finest step of a multilevel run: it needs accuracy = ... or relative_accuracy = ..."
                | Some ml, _, _, _ ->
                    let ml = if ml.MaxLevels = 0 then { ml with MaxLevels = mlmcMaxLevels } else ml
                    Ok
                        { st with
                            Multilevel = Some ml
                            Dt = (if (written "dt").IsSome then st.Dt else st.T / mlmcCoarseSteps)
                            Paths = (if (written "paths").IsSome then st.Paths else mlmcPilot) }
                | None, _, _, _ -> Ok st)

        let r =
            r
            |> Result.bind (fun st ->
                let at key = xs |> List.tryFind (fun s -> s.Key = key) |> Option.map (fun s -> s.Value.Pos)

                match validateSettings st with
                | Error m -> fail (at "burnin" |> Option.defaultValue bp) m
                | Ok() ->
                    match sizeError st.Paths st.Dt st.T, gridError st.Dt st.T with
                    | Some(key, m), _ -> fail (at key |> Option.orElse (at "T") |> Option.defaultValue bp) m
                    | None, Some m -> fail (at "T" |> Option.orElse (at "dt") |> Option.defaultValue bp) m
                    | None, None -> Ok st)

        match dupErrs, r with
        | [], r -> r
        | es, Ok _ -> Error es
        | es, Error e2 -> Error(es @ e2)

// ---------------------------------------------------------------------------------- parameter sets

/// Most parameter sets a file may run (named sets and sweep values together).
let maxParameterSets = Limits.parameterSets

let private checkSets (consts: Map<string, int>) (ps: ParamInfo list) (items: TopItem list) : R<ParamSet list> =
    let defaults = ps |> List.map (fun p -> p.Default) |> Array.ofList
    let indexOf name = ps |> List.tryFindIndex (fun p -> p.Name = name)

    let unknownParam p name =
        match vectorParamProblem (ps |> List.map (fun p -> p.Name)) name with
        | Some m -> fail p m
        | None -> fail p (sprintf "unknown param '%s'%s" name (suggest name (ps |> List.map (fun p -> p.Name))))

    let withValue (p: Pos) (values: float[]) (i: int) (v: float) : R<float[]> =
        match checkDomain ps[i] v with
        | Ok() -> Ok(Array.updateAt i v values)
        | Error m -> fail p m

    /// The components of vector param `name` with their indices in `ps` (empty for a scalar or unknown name).
    let componentsOf (name: string) =
        ps |> List.indexed |> List.filter (fun (_, p) -> p.Name <> name && paramBase p.Name = name)

    /// `a = [e0, ..., e(K-1)]`: each component's index, value and position; located errors for a scalar
    /// param, an unknown one, a component (`a[0] = [...]`) and a list of the wrong length.
    let listValues (s: Setting) (items: Expr list) : R<(int * float * Pos) list> =
        match componentsOf s.Key, indexOf s.Key with
        | [], Some _ when s.Key.Contains "[" -> fail s.Value.Pos (sprintf "'%s' is one component of a vector param: its value is a number, not a list" s.Key)
        | [], Some _ -> fail s.Value.Pos (sprintf "'%s' is a scalar param: its value is a number, not a list" s.Key)
        | [], None -> unknownParam s.Pos s.Key
        | comps, _ when comps.Length <> items.Length ->
            fail s.Value.Pos (sprintf "%s has %d components, the list has %d" s.Key comps.Length items.Length)
        | comps, _ ->
            List.zip comps items
            |> List.map (fun ((i, p), e) -> evalFinite consts (sprintf "the value of '%s'" p.Name) e |> Result.map (fun v -> i, v, e.Pos))
            |> all

    let one item : R<ParamSet list> option =
        match item with
        | ParamsBlock(name, xs, _) ->
            // a whole vector `a = [...]` sets each of its components: `a = [1, 2]; a[1] = 3` sets a[1] twice
            let setNames (s: Setting) =
                match s.Value.Kind, componentsOf s.Key with
                | Call(f, _), (_ :: _ as comps) when f = listValue -> comps |> List.map (fun (_, p: ParamInfo) -> p.Name)
                | _ -> [ s.Key ]

            let dupErrs =
                xs
                |> List.collect (fun s -> setNames s |> List.map (fun n -> n, s))
                |> List.groupBy fst
                |> List.collect (fun (k, occ) -> occ |> List.tail |> List.map (fun (_, s) -> { Pos = s.Pos; Message = sprintf "param '%s' is set twice" k }))
                |> List.distinctBy (fun d -> d.Pos)

            let values =
                xs
                |> List.fold
                    (fun acc s ->
                        let v =
                            match s.Value.Kind, indexOf s.Key with
                            | Call(f, items), _ when f = listValue -> listValues s items
                            | _, None -> unknownParam s.Pos s.Key
                            | _, Some i -> evalFinite consts (sprintf "the value of '%s'" s.Key) s.Value |> Result.map (fun v -> [ i, v, s.Value.Pos ])

                        match acc, v with
                        | Ok vals, Ok ivs -> ivs |> List.fold (fun r (i, x, p) -> r |> Result.bind (fun vals -> withValue p vals i x)) (Ok vals)
                        | Error e1, Error e2 -> Error(e1 @ e2)
                        | Error e, _
                        | _, Error e -> Error e)
                    (Ok defaults)

            Some(
                match dupErrs, values with
                | [], Ok v -> Ok [ { Name = name; Values = v } ]
                | es, Ok _ -> Error es
                | es, Error e -> Error(es @ e)
            )
        | SweepDecl(param, a, b, s, p) ->
            let ev what e = evalFinite consts what e

            Some(
                match indexOf param with
                | None -> unknownParam p param
                | Some i ->
                    map3 (fun x y z -> x, y, z) (ev "the sweep start" a) (ev "the sweep end" b) (ev "the sweep step" s)
                    |> Result.bind (fun (lo, hi, st) ->
                        if not (st > 0.0) then fail s.Pos "the sweep step must be > 0"
                        elif lo > hi then fail a.Pos (sprintf "the sweep start %s is above its end %s" (shortNumber lo) (shortNumber hi))
                        else
                            // counted in floating point before any conversion to int (a count past
                            // 2^31 must not wrap round to a small or negative one)
                            let count = Math.Floor((hi - lo) / st + 1e-9) + 1.0

                            if not (count <= float maxParameterSets) then
                                fail s.Pos (sprintf "the sweep has %s values; at most %d parameter sets" (shortNumber count) maxParameterSets)
                            else
                                let n = int count

                                [ 0 .. n - 1 ]
                                |> List.map (fun k ->
                                    let v = Double.Parse(shortNumber (lo + float k * st), CultureInfo.InvariantCulture)

                                    withValue p defaults i v
                                    |> Result.map (fun vals -> { Name = sprintf "%s=%s" param (shortNumber v); Values = vals }))
                                |> all)
            )
        | _ -> None

    let results = items |> List.choose one

    all results
    |> Result.map List.concat
    |> Result.bind (fun sets ->
        let positions =
            items |> List.collect (function ParamsBlock(n, _, p) -> [ n, p ] | SweepDecl(_, _, _, _, p) -> [ "", p ] | _ -> [])

        match sets |> List.countBy (fun s -> s.Name) |> List.tryFind (fun (_, c) -> c > 1) with
        | Some(n, _) ->
            let p = positions |> List.filter (fun (m, _) -> m = n) |> List.map snd |> List.tryLast |> Option.defaultValue (snd positions.Head)
            fail p (sprintf "duplicate parameter set '%s'" n)
        | None when sets.IsEmpty -> Ok [ { Name = "default"; Values = defaults } ]
        | None when sets.Length > maxParameterSets ->
            fail (snd (List.last positions)) (sprintf "the file has %d parameter sets; at most %d" sets.Length maxParameterSets)
        | None -> Ok sets)

// ---------------------------------------------------------------------------------- queries

let private methodNames = [ "divergence_kernel"; "likelihood_ratio"; "pathwise"; "finite_difference" ]

let private checkMethod (consts: Map<string, int>) (m: Method) : R<CMethod> =
    let argName =
        function
        | ArgNum(n, _, p)
        | ArgName(n, _, p) -> n, p

    let dup =
        m.Args
        |> List.map argName
        |> List.groupBy fst
        |> List.collect (fun (n, occ) -> occ |> List.tail |> List.map (fun (_, p) -> { Pos = p; Message = sprintf "argument '%s' given twice" n }))

    let noArgs () =
        match m.Args with
        | [] -> Ok()
        | a :: _ -> fail (snd (argName a)) (sprintf "%s takes no arguments" m.Name)

    let numArg a =
        match a with
        | ArgNum(n, e, _) -> evalFinite consts (sprintf "'%s'" n) e
        | ArgName(n, v, p) -> fail p (sprintf "'%s' must be a number, not '%s'" n v)

    let r =
        match m.Name with
        | "likelihood_ratio" -> noArgs () |> Result.map (fun () -> LikelihoodRatio)
        | "pathwise" -> noArgs () |> Result.map (fun () -> Pathwise)
        | "finite_difference" ->
            m.Args
            |> List.fold
                (fun acc a ->
                    match a with
                    | ArgNum("h", e, _) ->
                        map2 (fun _ h -> h) acc (numArg a |> Result.bind (fun h -> if h > 0.0 then Ok h else fail e.Pos "h must be > 0"))
                    | ArgName("h", _, _) -> map2 (fun _ h -> h) acc (numArg a)
                    | _ -> let n, p = argName a in map2 (fun h _ -> h) acc (fail p (sprintf "unknown argument '%s' of finite_difference (known: h)" n)))
                (Ok 0.01)
            |> Result.map FiniteDifference
        | "divergence_kernel" ->
            let step (acc: R<Schedule option * DkMode option>) a =
                let n, p = argName a

                let upd: R<Schedule option * DkMode option -> Schedule option * DkMode option> =
                    match n, a with
                    | "rate", _ ->
                        numArg a
                        |> Result.bind (fun r ->
                            if r > 0.0 then Ok(fun (_, md) -> Some(Rate r), md) else fail p "rate must be > 0")
                    | "alpha", _ ->
                        numArg a
                        |> Result.bind (fun x ->
                            if x >= 0.0 && x <= 1.0 then Ok(fun (_, md) -> Some(Alpha x), md)
                            else fail p "alpha must be in [0, 1]")
                    | "mode", ArgName(_, v, _) ->
                        match v with
                        | "exact" -> Ok(fun (s, _) -> s, Some Exact)
                        | "iterative" -> Ok(fun (s, _) -> s, Some Iterative)
                        | "first_order" -> Ok(fun (s, _) -> s, Some FirstOrder)
                        | _ -> fail p (sprintf "unknown mode '%s'; use exact, iterative or first_order" v)
                    | "mode", _ -> fail p "mode must be exact, iterative or first_order"
                    // checked below, with the schedule it needs
                    | "control", ArgName(_, ("none" | "pathwise"), _) -> Ok id
                    | "control", _ -> fail p "control must be none or pathwise (the default: a pathwise control variate where pathwise can answer the query)"
                    | _ -> fail p (sprintf "unknown argument '%s' of divergence_kernel (known: rate, alpha, mode, control)" n)

                map2 (fun st f -> f st) acc upd

            let names = m.Args |> List.map (argName >> fst)

            let control = m.Args |> List.tryPick (function ArgName("control", v, p) -> Some(v, p) | _ -> None)

            if List.contains "rate" names && List.contains "alpha" names then
                let p = m.Args |> List.map argName |> List.find (fun (n, _) -> n = "alpha" || n = "rate") |> snd
                fail p "give either rate or alpha, not both"
            else
                List.fold step (Ok(None, None)) m.Args
                |> Result.bind (fun (s, md) ->
                    match s, control with
                    | Some _, Some(_, p) ->
                        fail p "the control variate goes with the adaptive rate only; an explicit rate or alpha is the kernel's estimate alone"
                    | None, Some("none", _) -> Ok(DivergenceKernel(AdaptiveAlone, md))
                    | s, _ -> Ok(DivergenceKernel(defaultArg s AdaptiveRate, md)))
        | n -> fail m.Pos (sprintf "unknown method '%s'%s (known: %s)" n (suggest n methodNames) (String.Join(", ", methodNames)))

    match dup, r with
    | [], r -> r
    | es, Ok _ -> Error es
    | es, Error e -> Error(es @ e)

/// Checks a query's windows against the final time T (also after `--T` overrides).
let validateQueryTimes (s: Settings) (q: CheckedQuery) : Result<unit, string> =
    let over =
        match q.Query with
        | QPlain(_, o)
        | QResponse(_, _, o, _, _) -> o
        | QLyapunov _
        | QAlignment _
        | QSamples _
        | QScore _ -> None
        | QWeight _ -> None

    // a stationary window is a number of steps of the response weights: refused off the grid, as T
    let offGrid =
        match q.Query with
        | QResponse(_, _, _, Some ws, _) -> ws |> List.tryFind (fun w -> Sde.Core.RunSettings.WholeSteps(w, s.Dt) < 0L)
        | _ -> None

    // a stationary window keeps that many steps of weights per path (a ring buffer): longer than T it
    // looks back before the start, and its memory must stay bounded
    let tooLong =
        match q.Query with
        | QResponse(_, _, _, Some ws, _) -> ws |> List.tryFind (fun w -> w > s.T || w / s.Dt > Limits.windowSteps)
        | _ -> None

    // a series samples the grid every Δ: Δ a whole number of steps, at most 10^4 times up to T
    let series =
        match q.Query with
        | QPlain(TSeries(_, d), _)
        | QSamples(_, Some d) ->
            // a trajectory's bound is on its values (paths x times x observables, Driver.maxTrajectoryValues)
            let what, most =
                match q.Query with
                | QSamples _ -> "trajectory", Limits.trajectoryTimes
                | _ -> "series", Limits.seriesTimes

            let mostText = Limits.power most
            let steps = Sde.Core.RunSettings.WholeSteps(d, s.Dt)
            if steps < 0L then
                let n = max 1.0 (Math.Round(d / s.Dt))
                Some(sprintf "the %s step %s is not a whole number of steps of dt = %s (every/dt = %s); take every %s (%g steps)"
                         what (shortNumber d) (shortNumber s.Dt) ((d / s.Dt).ToString("G6", CultureInfo.InvariantCulture)) (shortNumber (n * s.Dt)) n)
            elif d > s.T then Some(sprintf "the %s step %s is longer than T = %s: the %s would hold only t = 0" what (shortNumber d) (shortNumber s.T) what)
            elif s.T / d > most then Some(sprintf "a %s holds at most %s times; every %s up to T = %s would be %g (take a larger step)" what mostText (shortNumber d) (shortNumber s.T) (floor (s.T / d) + 1.0))
            else None
        | _ -> None

    match over with
    | _ when series.IsSome -> Error series.Value
    | _ when tooLong.IsSome ->
        Error(sprintf "the stationary window %s must be at most T = %s and at most %s steps of dt (it is %g steps)" (shortNumber tooLong.Value) (shortNumber s.T) (Limits.power Limits.windowSteps) (tooLong.Value / s.Dt))
    | Some(_, t1) when t1 > s.T -> Error(sprintf "the window ends at %s, after the final time T = %s" (shortNumber t1) (shortNumber s.T))
    | Some(t0, t1) when floor (t1 / s.Dt + 1e-9) < ceil (t0 / s.Dt - 1e-9) ->
        // a window averages over the grid times n·dt in [t0, t1]; with none it has nothing to average
        Error(sprintf "the window [%s, %s] holds no time step of the grid (dt = %s); widen it" (shortNumber t0) (shortNumber t1) (shortNumber s.Dt))
    | _ when offGrid.IsSome ->
        let w = offGrid.Value
        let n = max 1.0 (Math.Round(w / s.Dt))
        Error(
            sprintf "the stationary window %s is not a whole number of steps of dt = %s (window/dt = %s); take window %s (%g steps)"
                (shortNumber w) (shortNumber s.Dt) ((w / s.Dt).ToString("G6", CultureInfo.InvariantCulture)) (shortNumber (n * s.Dt)) n
        )
    | _ ->
        match q.Query with
        | QLyapunov _ when not (s.Burnin < s.T) ->
            Error(sprintf "lyapunov averages over [burnin, T] and needs burnin < T (burnin = %s, T = %s)" (shortNumber s.Burnin) (shortNumber s.T))
        | _ -> Ok()

/// Most observables one `samples(...)` query takes (columns of its CSV file).
let maxSampleColumns = Limits.sampleColumns

/// `settings` is None when the simulate block has errors of its own: the queries' times are then not
/// checked against it (a window "after T" measured against a T that was refused misleads).
let private checkQuery (env: Env) (consts: Map<string, int>) (ps: ParamInfo list) (settings: Settings option) (q: Query) : R<CheckedQuery> =
    let obsEnv = { env with Ctx = InObservable }

    let range what lo hi =
        map2 (fun a b -> a, b) (evalFinite consts what lo) (evalFinite consts what hi)
        |> Result.bind (fun (a, b) ->
            if not (a < b) then fail lo.Pos (sprintf "%s [a, b] needs a < b" what)
            elif not (Double.IsFinite(b - a)) then fail lo.Pos (sprintf "%s [a, b] is too wide (b - a overflows)" what)
            else Ok(a, b))

    let target t : R<CTarget> =
        match t with
        | MeanOf e -> checkExpr obsEnv e |> Result.map TMean
        | SeriesOf(e, d) ->
            let step =
                evalFinite consts "the series step" d
                |> Result.bind (fun v -> if v > 0.0 then Ok v else fail d.Pos "a series step 'every Δ' needs Δ > 0")
            map2 (fun c v -> TSeries(c, v)) (checkExpr obsEnv e) step
        | DensityOf(e, lo, hi, bins) ->
            let n = checkBins consts bins
            map3 (fun c (a, b) n -> TDensity(c, a, b, n)) (checkExpr obsEnv e) (range "the density range" lo hi) n
        | VarianceOf e -> checkExpr obsEnv e |> Result.map TVariance
        | CovarianceOf(a, b) -> map2 (fun x y -> TCovariance(x, y)) (checkExpr obsEnv a) (checkExpr obsEnv b)
        | QuantileOf(e, p, lo, hi, bins) ->
            let pR =
                evalFinite consts "the quantile's probability" p
                |> Result.bind (fun v -> if v > 0.0 && v < 1.0 then Ok v else fail p.Pos "the quantile's probability p needs 0 < p < 1")

            map3 (fun c pv ((a, b), n) -> TQuantile(c, pv, a, b, n)) (checkExpr obsEnv e) pR
                (map2 (fun r n -> r, n) (range "the quantile's range" lo hi) (checkBins consts bins))
        | Density2Of(e1, e2, lo1, hi1, lo2, hi2, n1, n2) ->
            let bins =
                map2 (fun a b -> a, b) (checkBins consts n1) (checkBins consts n2)
                |> Result.bind (fun (a, b) ->
                    if int64 a * int64 b > int64 Limits.bins then fail n1.Pos (sprintf "a 2-D density has at most %s bins (got %d x %d)" (Limits.power (float Limits.bins)) a b)
                    else Ok(a, b))

            map3 (fun (c1, c2) ((a, b), (c, d)) (n, m) -> TDensity2(c1, c2, a, b, c, d, n, m))
                (map2 (fun a b -> a, b) (checkExpr obsEnv e1) (checkExpr obsEnv e2))
                (map2 (fun a b -> a, b) (range "the density range" lo1 hi1) (range "the density range" lo2 hi2))
                bins

    // the estimators of variance, covariance and quantiles assume independent samples (one per path at T)
    let atTOnly (t: Target) (w: Window option) : R<unit> =
        match t, w with
        | VarianceOf _, Some win ->
            fail win.T0.Pos "variance over a window is not available yet; mean(e) over [t0, t1] and mean(e^2) over [t0, t1] give its pieces"
        | CovarianceOf _, Some win ->
            fail win.T0.Pos "covariance over a window is not available yet; mean(e1 * e2), mean(e1) and mean(e2) over [t0, t1] give its pieces"
        | QuantileOf _, Some win ->
            fail win.T0.Pos "a quantile over a window is not available yet; density(e) on [a, b] bins n over [t0, t1] gives the time-averaged distribution"
        | SeriesOf _, Some win ->
            fail win.T0.Pos "a series 'mean(e) every Δ' is a mean at each time, not over a window; write either 'every' or 'over'"
        | _ -> Ok()

    // responses of the derived estimates: which queries give the pieces
    let noResponse (t: Target) : R<unit> =
        match t with
        | MeanOf _ | DensityOf _ | SeriesOf _ -> Ok()
        | VarianceOf _ ->
            fail q.Pos "d variance(e) / d p is not available yet; d mean(e) / d p, d mean(e^2) / d p and mean(e) give it: d Var = d E[e^2] - 2 E[e] d E[e]"
        | CovarianceOf _ ->
            fail q.Pos "d covariance(e1, e2) / d p is not available yet; d mean(e1 * e2) / d p, d mean(e1) / d p, d mean(e2) / d p and the means give it: d Cov = d E[e1 e2] - E[e1] d E[e2] - E[e2] d E[e1]"
        | QuantileOf _ ->
            fail q.Pos "d quantile(e, p) / d p is not available yet; d density(e) / d p and density(e) on the same bins give it: d q = -(d F(q)) / f(q), F the cumulative sum of the density"
        | Density2Of _ -> fail q.Pos "the response of a 2-D density is not available yet; d density(e) / d p of each observable gives the marginals"

    let over (w: Window option) : R<(float * float) option> =
        match w with
        | None -> Ok None
        | Some w ->
            map2 (fun a b -> a, b) (evalFinite consts "a window time" w.T0) (evalFinite consts "a window time" w.T1)
            |> Result.bind (fun (a, b) ->
                if a < 0.0 then fail w.T0.Pos "a window must start at t >= 0"
                elif not (a < b) then fail w.T0.Pos "a window [t0, t1] needs t0 < t1"
                else Ok(Some(a, b)))

    let kind =
        match q.Kind with
        | Plain(t, w) -> map3 (fun t o () -> QPlain(t, o)) (target t) (over w) (atTOnly t w)
        | Response(t, _, _, _, _) when Result.isError (noResponse t) -> noResponse t |> Result.map (fun () -> QLyapunov 0)
        | Response(t, wrt, w, st, m) ->
            let wrtR =
                match ps |> List.tryFindIndex (fun p -> p.Name = wrt) with
                | Some i -> Ok i
                | None ->
                    let what =
                        match vectorParamProblem (ps |> List.map (fun p -> p.Name)) wrt, env.Names.TryFind wrt with
                        | Some m, _ -> m
                        | None, Some(k, _) -> sprintf "'%s' is a %s, not a param; d ... / d p needs a declared param" wrt (describeEntity k)
                        | None, None ->
                            sprintf "unknown param '%s'%s; d ... / d p needs a declared param" wrt (suggest wrt (ps |> List.map (fun p -> p.Name)))

                    fail q.Pos what

            let stR =
                match st with
                | None -> Ok None
                | Some ws ->
                    ws
                    |> List.map (fun e ->
                        evalFinite consts "a stationary window" e
                        |> Result.bind (fun v -> if v > 0.0 then Ok v else fail e.Pos "a stationary window must be > 0"))
                    |> all
                    |> Result.map Some

            let methodR =
                match m with
                | None -> Ok(DivergenceKernel(AdaptiveRate, None))
                | Some m ->
                    // whether the method can answer this query on this model is the driver's
                    // decision (it knows the noise and the inits, and names the methods that can)
                    checkMethod consts m

            // a stationary response averages over [burnin, T]: an `over` window with it was silently unused
            let stR =
                match w, st with
                | Some win, Some _ ->
                    fail win.T0.Pos "a stationary response averages over [burnin, T]; set 'burnin' in simulate instead of an 'over' window"
                | _ -> stR

            map3
                (fun (t, o) (i, s) cm -> QResponse(t, i, o, s, cm))
                (map2 (fun a b -> a, b) (target t) (over w))
                (map2 (fun a b -> a, b) wrtR stR)
                methodR
        | Lyapunov k ->
            let dim = env.States |> Array.sumBy (fun s -> s.Size)

            evalInt consts "the number of exponents" k
            |> Result.bind (fun n ->
                if n < 1L then fail k.Pos "lyapunov(k) needs k >= 1"
                elif n > int64 dim then
                    fail k.Pos (sprintf "lyapunov(k) needs k <= the state dimension %d (got %d)" dim n)
                else Ok(QLyapunov(int n)))
        | Alignment(lo, hi, bins) ->
            let noise = env.Brownians |> Array.sumBy (fun b -> b.Size)

            let range =
                map2 (fun a b -> a, b) (evalFinite consts "the alignment range" lo) (evalFinite consts "the alignment range" hi)
                |> Result.bind (fun (a, b) ->
                    if a < 0.0 || b > 1.0 then fail lo.Pos "the alignment range [a, b] must lie within [0, 1] (|cos| of an angle)"
                    elif not (a < b) then fail lo.Pos "the alignment range [a, b] needs a < b"
                    else Ok(a, b))

            let n = checkBins consts bins

            let noiseR =
                if noise = 0 then
                    fail q.Pos "alignment compares the top Lyapunov vector with the score, and a model without noise (an ODE) has no score (its density is singular); add a brownian, or use lyapunov(k) alone"
                else Ok()

            map3 (fun (a, b) n () -> QAlignment(a, b, n)) range n noiseR
        | Score(e, lo, hi, bins) ->
            let noise = env.Brownians |> Array.sumBy (fun b -> b.Size)
            let offsets = env.States |> Array.scan (fun o (s: StateInfo) -> o + s.Size) 0
            let named n = env.States |> Array.tryFindIndex (fun (s: StateInfo) -> s.Name = n)
            let notComponent () = fail e.Pos "score(...) takes a state component: score(x) for a scalar state, score(x[3]) for a component of a vector"

            let comp =
                match e.Kind with
                | Var n ->
                    match named n with
                    | Some k when not env.States[k].IsVector -> Ok offsets[k]
                    | Some _ -> fail e.Pos (sprintf "'%s' is a vector state: score(...) takes one component, e.g. score(%s[0])" n n)
                    | None -> notComponent ()
                | Index(n, ie) ->
                    match named n with
                    | Some k when env.States[k].IsVector ->
                        let st = env.States[k]

                        evalInt consts "the component's index" ie
                        |> Result.bind (fun i ->
                            if i >= 0L && i < int64 st.Size then Ok(offsets[k] + int i)
                            else fail ie.Pos (sprintf "index %d is outside %s[0 .. %d]" i n (st.Size - 1)))
                    | _ -> notComponent ()
                | _ -> notComponent ()

            let noiseR =
                if noise = 0 then
                    fail q.Pos "a model without noise (an ODE) has a singular density and no score; add a brownian"
                else Ok()

            map3 (fun c ((a, b), n) () -> QScore(c, a, b, n)) comp (map2 (fun r n -> r, n) (range "the score's range" lo hi) (checkBins consts bins)) noiseR
        | Samples(es, _) when es.Length > maxSampleColumns ->
            fail q.Pos (sprintf "samples(...) takes at most %d observables (got %d)" maxSampleColumns es.Length)
        | Samples(es, None) -> all (es |> List.map (checkExpr obsEnv)) |> Result.map (fun cs -> QSamples(cs, None))
        | Samples(es, Some d) ->
            // trajectories: the step is checked against dt and T as a series' is (validateQueryTimes)
            let step =
                evalFinite consts "the samples step" d
                |> Result.bind (fun v -> if v > 0.0 then Ok v else fail d.Pos "a trajectory step 'every Δ' needs Δ > 0")
            map2 (fun cs v -> QSamples(cs, Some v)) (all (es |> List.map (checkExpr obsEnv))) step
        | Let _ -> fail q.Pos "a 'let' is not a query" // checkQueries handles lets before this
        // `Weights.desugar` has refused these in a model without a weight
        | WeightQuery n -> Ok(QWeight n)

    kind
    |> Result.bind (fun k ->
        let methodPos =
            match q.Kind with
            | Response(_, _, _, _, Some m) -> m.Pos
            | _ -> q.Pos

        let cq = { Query = k; Text = q.Text.Value; Pos = q.Pos; MethodPos = methodPos }

        match settings |> Option.map (fun st -> validateQueryTimes st cq) with
        | None
        | Some(Ok()) -> Ok cq
        | Some(Error m) -> fail q.Pos m)

/// `let name = e`: the name must be new (not a declaration, an earlier let, a reserved name or a
/// differential); the body is an observable. Returns the environment the later queries see: the
/// name is added even when its body has errors, so that its uses do not repeat them as unknown names.
let private checkLet (env: Env) (q: Query) (name: string) (body: Expr) : Env * R<unit> =
    let nameR =
        if reserved.Contains name then
            fail q.Pos (sprintf "'%s' is a reserved name; rename the let" name)
        else
            match env.Names.TryFind name with
            | Some(ELet _, dp) -> fail q.Pos (sprintf "duplicate let '%s' (first at %O); rename one" name dp)
            | Some(k, dp) -> fail q.Pos (sprintf "let '%s' shadows the %s '%s' declared at %O; rename the let" name (describeEntity k) name dp)
            | None when isDiffName env name -> fail q.Pos (sprintf "let '%s' shadows the differential '%s'; rename the let" name name)
            | None -> Ok()

    let bodyR = checkExpr { env with Ctx = InObservable } body

    let env1 =
        if env.Names.ContainsKey name then env
        else
            let c = match bodyR with Ok c -> c | Error _ -> Const nan
            { env with Names = env.Names.Add(name, (ELet c, q.Pos)) }

    env1, map2 (fun () _ -> ()) nameR bodyR

/// The query block in order: each `let` names an observable for what follows it.
let private checkQueries (env: Env) consts ps settings (qs: Query list) : R<CheckedQuery list> =
    let step (env: Env, acc: R<CheckedQuery option> list) (q: Query) =
        match q.Kind with
        | Let(n, e) ->
            let env1, r = checkLet env q n e
            env1, Result.map (fun () -> None) r :: acc
        | _ -> env, Result.map Some (checkQuery env consts ps settings q) :: acc

    let _, rs = List.fold step (env, []) qs
    rs |> List.rev |> all |> Result.map (List.choose id)

// ---------------------------------------------------------------------------------- file

/// Deepest expression accepted after parsing, counting every operation, call and index as one level
/// (a chain of n terms `a + b + ...` is n levels deep: it parses to a left-leaning tree). The parser
/// caps parentheses at 256 levels and chains at 10000 terms, but chains nest inside chains; every
/// later pass recurses on the tree, on threads whose stacks are sized for this depth.
let maxExprDepth = Limits.exprDepth

/// The depth of an expression tree, without recursion (it is called before the depth is known).
let exprDepth (e: Expr) : int =
    let stack = Collections.Generic.Stack<struct (Expr * int)>()
    stack.Push(struct (e, 1))
    let mutable deepest = 0

    while stack.Count > 0 do
        let struct (x, depth) = stack.Pop()
        deepest <- max deepest depth
        let push (c: Expr) = stack.Push(struct (c, depth + 1))

        match x.Kind with
        | ExprKind.Num _
        | ExprKind.Var _ -> ()
        | ExprKind.Index(_, i) -> push i
        | ExprKind.Neg a
        | ExprKind.Not a -> push a
        | ExprKind.Bin(_, a, b)
        | ExprKind.Cmp(_, a, b)
        | ExprKind.And(a, b)
        | ExprKind.Or(a, b) ->
            push a
            push b
        | ExprKind.Call(_, args) -> List.iter push args
        | ExprKind.If(c, a, b) ->
            push c
            push a
            push b
        | ExprKind.Reduce(_, _, body) -> push body

    deepest

/// Every expression of a file, in source order.
let private fileExprs (f: File) : Expr list =
    let target t =
        match t with
        | MeanOf e
        | VarianceOf e -> [ e ]
        | SeriesOf(e, d) -> [ e; d ]
        | CovarianceOf(a, b) -> [ a; b ]
        | DensityOf(e, lo, hi, bins) -> [ e; lo; hi; bins ]
        | QuantileOf(e, p, lo, hi, bins) -> [ e; p; lo; hi; bins ]
        | Density2Of(a, b, lo1, hi1, lo2, hi2, n1, n2) -> [ a; b; lo1; hi1; lo2; hi2; n1; n2 ]

    let window (w: Window option) =
        match w with
        | Some w -> [ w.T0; w.T1 ]
        | None -> []

    [ for item in f.Items do
          match item with
          | ModelBlock m ->
              for mi in m.Items do
                  match mi with
                  | ConstDecl(_, e, _) -> yield e
                  | ParamDecl(_, _, e, _, _) -> yield e
                  | StateDecl(_, size, _, _)
                  | BrownianDecl(_, size, _) -> yield! Option.toList size
                  | InitDecl(_, _, rhs, _) ->
                      match rhs with
                      | InitValue e -> yield e
                      | InitNormal(a, b)
                      | InitUniform(a, b) -> yield! [ a; b ]
                  | Equation(_, _, e, _) -> yield e
                  | LetDecl(_, e, _) -> yield e
                  | LogWeightEquation(_, e, _) -> yield e
                  | WeightDecl _
                  | CalculusDecl _ -> ()
          | ParamsBlock(_, settings, _)
          | SimulateBlock(settings, _) -> yield! settings |> List.map (fun s -> s.Value)
          | SweepDecl(_, a, b, c, _) -> yield! [ a; b; c ]
          | FitBlock(_, _, _, settings, _) ->
              for s in settings do
                  match s.FitArg with
                  | FitExpr e -> yield e
                  | FitMethod m -> yield! m.Args |> List.choose (function ArgNum(_, e, _) -> Some e | ArgName _ -> None)
                  | FitKl(a, w) -> yield! Option.toList a @ Option.toList w
          | QueryBlock(qs, _) ->
              for q in qs do
                  match q.Kind with
                  | Plain(t, w) -> yield! target t @ window w
                  | Response(t, _, w, st, m) ->
                      yield! target t @ window w @ defaultArg st []

                      match m with
                      | Some m -> yield! m.Args |> List.choose (function ArgNum(_, e, _) -> Some e | ArgName _ -> None)
                      | None -> ()
                  | Lyapunov k -> yield k
                  | Samples(es, every) -> yield! es @ Option.toList every
                  | Score(e, a, b, c) -> yield! [ e; a; b; c ]
                  | Alignment(a, b, c) -> yield! [ a; b; c ]
                  | Let(_, e) -> yield e
                  | WeightQuery _ -> () ]

/// The first expression deeper than `maxExprDepth`, as a located error.
let depthError (f: File) : Diagnostic option =
    fileExprs f
    |> List.tryPick (fun e ->
        let depth = exprDepth e

        if depth > maxExprDepth then
            Some
                { Pos = e.Pos
                  Message =
                    sprintf "expression nested %d levels deep; at most %d (every operation counts as a level, and a chain of n terms as n levels); simplify it" depth maxExprDepth }
        else
            None)

let private sortDiags (ds: Diagnostic list) =
    ds |> List.distinctBy (fun d -> d.Pos.Line, d.Pos.Col, d.Message) |> List.sortBy (fun d -> d.Pos.Line, d.Pos.Col)

/// Most scalar operations a file may expand to: equations and inits unrolled over their index, and
/// `sum`/`avg` over their range (a sum of sums over 10^3 states is 10^6 terms; one more level is
/// 10^9, which no compile would finish). Lorenz-96 at the 10^6-state limit is about 1.1 * 10^7.
let maxExpandedSize = Limits.expandedSize

/// Size (scalar operations once unrolled) and depth of a checked expression. A `let` is substituted
/// by reference, so a chain of lets that each use the previous one twice is a DAG whose tree is
/// exponentially large: both measures are memoised per node (by reference), so they take time linear
/// in the distinct nodes, and the size saturates at +∞ instead of hanging.
type private Measure() =
    let size = Collections.Generic.Dictionary<obj, float>(HashIdentity.Reference)
    let depth = Collections.Generic.Dictionary<obj, int>(HashIdentity.Reference)

    member m.Size(e: CExpr) : float =
        match size.TryGetValue(box e) with
        | true, v -> v
        | _ ->
            let v =
                match e with
                | Const _
                | CExpr.Param _
                | ParamAt _
                | StateRef _
                | Time
                | IndexValue _ -> 1.0
                | CExpr.Neg a -> 1.0 + m.Size a
                | Add(a, b)
                | Sub(a, b)
                | Mul(a, b)
                | Div(a, b)
                | Power(a, b) -> 1.0 + m.Size a + m.Size b
                | Func(_, args) -> 1.0 + List.sumBy m.Size args
                | IfThen(c, a, b) -> 1.0 + m.CondSize c + m.Size a + m.Size b
                | SumOver(_, n, body)
                | AvgOver(_, n, body) -> 1.0 + float n * m.Size body

            size[box e] <- v
            v

    member m.CondSize(c: CCond) : float =
        match c with
        | CCmp(_, a, b) -> 1.0 + m.Size a + m.Size b
        | CAnd(a, b)
        | COr(a, b) -> 1.0 + m.CondSize a + m.CondSize b
        | CNot a -> 1.0 + m.CondSize a

    /// Depth, computed without recursion on the expression (a let chain may be deeper than a stack).
    member m.Depth(root: CExpr) : int =
        let children (e: CExpr) : CExpr list =
            let rec ofCond c =
                match c with
                | CCmp(_, a, b) -> [ a; b ]
                | CAnd(a, b)
                | COr(a, b) -> ofCond a @ ofCond b
                | CNot a -> ofCond a

            match e with
            | Const _
            | CExpr.Param _
            | ParamAt _
            | StateRef _
            | Time
            | IndexValue _ -> []
            | CExpr.Neg a
            | SumOver(_, _, a)
            | AvgOver(_, _, a) -> [ a ]
            | Add(a, b)
            | Sub(a, b)
            | Mul(a, b)
            | Div(a, b)
            | Power(a, b) -> [ a; b ]
            | Func(_, args) -> args
            | IfThen(c, a, b) -> ofCond c @ [ a; b ]

        // post-order on an explicit stack; a node's depth is 1 + its deepest child's
        let stack = Collections.Generic.Stack<CExpr * bool>()
        stack.Push((root, false))

        while stack.Count > 0 do
            let e, expanded = stack.Pop()

            if not (depth.ContainsKey(box e)) then
                let cs = children e

                if expanded then
                    depth[box e] <- 1 + (cs |> List.fold (fun acc c -> max acc depth[box c]) 0)
                else
                    stack.Push((e, true))

                    for c in cs do
                        if not (depth.ContainsKey(box c)) then stack.Push((c, false))

        depth[box root]

/// The first equation, init or query at which the expanded size passes `maxExpandedSize`.
let private expansionError (cf: CheckedFile) : Diagnostic option =
    let m = cf.Model
    let states = List.toArray m.States
    let instances (s: int) = float states[s].Size
    let measure = Measure()
    let expandedSize = measure.Size

    let targetExprs t =
        match t with
        | TMean e
        | TSeries(e, _)
        | TDensity(e, _, _, _)
        | TVariance e
        | TQuantile(e, _, _, _, _) -> [ e ]
        | TCovariance(a, b)
        | TDensity2(a, b, _, _, _, _, _, _) -> [ a; b ]

    let targetSize t = targetExprs t |> List.sumBy expandedSize

    let items =
        [ for eq in m.Equations -> eq.Pos, (fun () -> instances eq.State * (expandedSize eq.Drift + (eq.Noise |> List.sumBy (fun n -> expandedSize n.Coeff))))
          for ini in m.Inits ->
              ini.Pos,
              (fun () ->
                  instances ini.State
                  * (match ini.Kind with
                     | Deterministic e -> expandedSize e
                     | Normal(a, b)
                     | Uniform(a, b) -> expandedSize a + expandedSize b))
          for q in cf.Queries ->
              q.Pos,
              (fun () ->
                  match q.Query with
                  | QPlain(t, _)
                  | QResponse(t, _, _, _, _) -> targetSize t
                  | QSamples(es, _) -> es |> List.sumBy (fun e -> targetSize (TMean e))
                  | QScore _
                  | QLyapunov _
                  | QAlignment _
                  | QWeight _ -> 0.0) ]

    // a query's observable after its lets are substituted: as deep as the passes may recurse
    let tooDeep =
        cf.Queries
        |> List.tryPick (fun q ->
            match q.Query with
            | QPlain(t, _)
            | QResponse(t, _, _, _, _) ->
                targetExprs t
                |> List.tryPick (fun e ->
                    let d = measure.Depth e
                    if d > maxExprDepth then
                        Some
                            { Pos = q.Pos
                              Message = sprintf "this query's observable, its lets substituted, is %d levels deep; at most %d" d maxExprDepth }
                    else None)
            | QSamples(es, _) ->
                es
                |> List.tryPick (fun e ->
                    let d = measure.Depth e
                    if d > maxExprDepth then
                        Some
                            { Pos = q.Pos
                              Message = sprintf "this query's observable, its lets substituted, is %d levels deep; at most %d" d maxExprDepth }
                    else None)
            | QLyapunov _
            | QScore _
            | QAlignment _
            | QWeight _ -> None)

    let rec go (total: float) items =
        match items with
        | [] -> None
        | (p, size: unit -> float) :: rest ->
            let total = total + size ()

            if total > float maxExpandedSize then
                Some
                    { Pos = p
                      Message =
                        sprintf "the model expands to %s scalar operations up to here (equations and inits unrolled over their index, sum and avg over their range); at most %d" (shortNumber total) maxExpandedSize }
            else
                go total rest

    match tooDeep with
    | Some d -> Some d
    | None -> go 0.0 items

/// What a checked file does that is legal but probably not meant: no queries (a run that computes
/// nothing), a brownian that no equation's `dW` term uses (noise declared but never applied).
let warnings (model: CheckedModel) (queries: CheckedQuery list) (queryBlock: Pos option) : Diagnostic list =
    let used = model.Equations |> List.collect (fun e -> e.Noise |> List.map (fun n -> n.Brownian)) |> set

    let unused =
        model.Brownians
        |> List.indexed
        |> List.filter (fun (i, _) -> not (used.Contains i))
        |> List.map (fun (_, b) ->
            { Pos = b.Pos
              Message = sprintf "brownian '%s' is declared but no equation has a d%s term; remove it, or add the noise term it was meant for" b.Name b.Name })

    let noQueries =
        if queries.IsEmpty then
            [ { Pos = defaultArg queryBlock model.Pos
                Message =
                  match queryBlock with
                  | Some _ -> "the query block is empty, so a run computes nothing; add a query such as 'mean(...)'"
                  | None -> "the file has no 'query' block, so a run computes nothing; add 'query { mean(...) }'" } ]
        else []

    sortDiags (noQueries @ unused)

/// Checks a parsed file.
let rec check (f: File) : Result<CheckedFile, Diagnostic list> =
    match depthError f with
    | Some d -> Error [ d ]
    | None ->
        match checkShallow f with
        | Ok cf ->
            match expansionError cf with
            | Some d -> Error [ d ]
            | None -> Ok cf
        | errors -> errors

and private checkShallow (f: File) : Result<CheckedFile, Diagnostic list> =
    let models = f.Items |> List.choose (function ModelBlock m -> Some m | _ -> None)
    let sims = f.Items |> List.choose (function SimulateBlock(s, p) -> Some(s, p) | _ -> None)
    let queries = f.Items |> List.choose (function QueryBlock(q, p) -> Some(q, p) | _ -> None)

    let extra what (xs: ('a * Pos) list) =
        xs |> List.skip (min 1 xs.Length) |> List.map (fun (_, p) -> { Pos = p; Message = sprintf "a second '%s' block; a file holds one" what })

    let blockErrs =
        (models |> List.map (fun m -> m, m.Pos) |> extra "model") @ extra "simulate" sims @ extra "query" queries

    match models with
    | [] -> Error [ { Pos = { Line = 1; Col = 1 }; Message = "no 'model' block; a file needs 'model Name { ... }'" } ]
    | m :: _ ->
        let modelR = checkModel m
        let d, _ = declarations m.Items
        let consts = Map.ofList d.Consts

        let env =
            { Names = d.Names
              States = Array.ofList d.States
              Brownians = Array.ofList d.Brownians
              Ctx = InObservable }

        let settingsR = checkSettings consts (List.tryHead sims)
        let setsR = checkSets consts d.Params f.Items

        let queriesR =
            match List.tryHead queries with
            | None -> Ok []
            | Some(qs, _) ->
                checkQueries env consts d.Params (Result.toOption settingsR) qs

        let errs =
            blockErrs @ errorsOf modelR @ errorsOf settingsR @ errorsOf setsR @ errorsOf queriesR

        match errs, modelR, settingsR, setsR, queriesR with
        | [], Ok model, Ok st, Ok sets, Ok qs ->
            Ok
                { Model = model
                  Sets = sets
                  Settings = st
                  Queries = qs
                  // a file that only fits (`dsl fit`) needs no query block
                  Warnings =
                    let ws = warnings model qs (List.tryHead queries |> Option.map snd)
                    if f.Items |> List.exists (function FitBlock _ -> true | _ -> false) && qs.IsEmpty then
                        ws |> List.filter (fun w -> not (w.Message.Contains "computes nothing"))
                    else ws
                  Weight = None }
        | es, _, _, _, _ -> Error(sortDiags es)
