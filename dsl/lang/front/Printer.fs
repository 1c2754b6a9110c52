/// Prints an AST back to `.sde` source. Compound subexpressions are parenthesised, so that
/// `Parser.parseFile (printFile f) = Ok f` for every well-formed tree.
module Sde.Lang.Printer

open System
open System.Globalization
open Sde.Lang.Syntax

/// A number as source text: shortest round-trip form, `inf` for infinity.
let number (v: float) =
    if Double.IsPositiveInfinity v then "inf"
    elif Double.IsNegativeInfinity v then "-inf"
    elif Double.IsNaN v then "nan"
    else
        let s = v.ToString("R", CultureInfo.InvariantCulture)
        if s.StartsWith "-" then "(" + s + ")" else s

let binOp =
    function
    | Add -> "+"
    | Sub -> "-"
    | Mul -> "*"
    | Div -> "/"
    | Pow -> "^"

let cmpOp =
    function
    | Eq -> "=="
    | Ne -> "!="
    | Lt -> "<"
    | Le -> "<="
    | Gt -> ">"
    | Ge -> ">="

let private isAtomic (e: Expr) =
    match e.Kind with
    | Num v -> v >= 0.0
    | Var _
    | Index _
    | Call _
    | Reduce _ -> true
    | _ -> false

/// An expression; operands that are not atoms are parenthesised.
let rec expr (e: Expr) : string =
    match e.Kind with
    | Num v -> number v
    | Var n -> n
    | Index(n, i) -> sprintf "%s[%s]" n (expr i)
    | ExprKind.Neg a -> "-" + sub a
    | Bin(op, a, b) -> sprintf "%s %s %s" (sub a) (binOp op) (sub b)
    | Call(f, args) when f = listValue -> sprintf "[%s]" (String.Join(", ", List.map expr args))
    | Call(f, args) -> sprintf "%s(%s)" f (String.Join(", ", List.map expr args))
    | If(c, a, b) -> sprintf "if %s then %s else %s" (sub c) (sub a) (sub b)
    | Cmp(op, a, b) -> sprintf "%s %s %s" (sub a) (cmpOp op) (sub b)
    | And(a, b) -> sprintf "%s and %s" (sub a) (sub b)
    | Or(a, b) -> sprintf "%s or %s" (sub a) (sub b)
    | Not a -> "not " + sub a
    | Reduce(op, v, body) -> sprintf "%s(%s, %s)" (if op = Sum then "sum" else "avg") v (expr body)

and private sub (e: Expr) = if isAtomic e then expr e else "(" + expr e + ")"

let private bound (b: Bound) = number b.Value |> fun s -> s.Trim('(', ')')

let private domain (lo: Bound, hi: Bound) =
    sprintf " in %s%s, %s%s" (if lo.Closed then "[" else "(") (bound lo) (bound hi) (if hi.Closed then "]" else ")")

let private size =
    function
    | Some e -> sprintf "[%s]" (expr e)
    | None -> ""

let private lhs name (index: string option) =
    match index with
    | Some i -> sprintf "%s[%s]" name i
    | None -> name

let modelItem (item: ModelItem) =
    match item with
    | ConstDecl(n, e, _) -> sprintf "const %s = %s" n (expr e)
    | ParamDecl(n, s, e, d, _) ->
        sprintf "param %s%s = %s%s" n (s |> Option.map (fun s -> sprintf "[%s]" (expr s)) |> Option.defaultValue "") (expr e) (d |> Option.map domain |> Option.defaultValue "")
    | StateDecl(n, s, per, _) -> sprintf "state %s%s%s" n (size s) (if per then " periodic" else "")
    | BrownianDecl(n, s, _) -> sprintf "brownian %s%s" n (size s)
    | LetDecl(n, e, _) -> sprintf "let %s = %s" n (expr e)
    | InitDecl(n, i, rhs, _) ->
        let r =
            match rhs with
            | InitValue e -> "= " + expr e
            | InitNormal(m, s) -> sprintf "~ normal(%s, %s)" (expr m) (expr s)
            | InitUniform(a, b) -> sprintf "~ uniform(%s, %s)" (expr a) (expr b)

        sprintf "init %s %s" (lhs n i) r
    | Equation(n, i, e, _) -> sprintf "d %s = %s" (lhs n i) (expr e)
    | WeightDecl(n, _) -> sprintf "weight %s" n
    | CalculusDecl(c, _) -> sprintf "calculus %s" c
    | LogWeightEquation(n, e, _) -> sprintf "d log %s = %s" n (expr e)

let private window (w: Window) = sprintf "[%s, %s]" (expr w.T0) (expr w.T1)

let private over =
    function
    | Some w -> " over " + window w
    | None -> ""

let methodText (m: Method) =
    match m.Args with
    | [] -> m.Name
    | args ->
        let arg =
            function
            | ArgNum(n, e, _) -> sprintf "%s = %s" n (expr e)
            | ArgName(n, v, _) -> sprintf "%s = %s" n v

        sprintf "%s(%s)" m.Name (String.Join(", ", List.map arg args))

let queryKind (k: QueryKind) =
    let onBins lo hi n = sprintf " on [%s, %s] bins %s" (expr lo) (expr hi) (expr n)
    let onBins2 a b c d n m = sprintf " on [%s, %s] x [%s, %s] bins %s x %s" (expr a) (expr b) (expr c) (expr d) (expr n) (expr m)

    // the head (`mean(e)`) and what follows the parameter of a response (`on ... bins n`)
    let parts (t: Target) =
        match t with
        | MeanOf e -> sprintf "mean(%s)" (expr e), ""
        | SeriesOf(e, d) -> sprintf "mean(%s)" (expr e), sprintf " every %s" (expr d)
        | DensityOf(e, lo, hi, n) -> sprintf "density(%s)" (expr e), onBins lo hi n
        | VarianceOf e -> sprintf "variance(%s)" (expr e), ""
        | CovarianceOf(a, b) -> sprintf "covariance(%s, %s)" (expr a) (expr b), ""
        | QuantileOf(e, p, lo, hi, n) -> sprintf "quantile(%s, %s)" (expr e) (expr p), onBins lo hi n
        | Density2Of(a, b, lo1, hi1, lo2, hi2, n, m) -> sprintf "density(%s, %s)" (expr a) (expr b), onBins2 lo1 hi1 lo2 hi2 n m

    match k with
    | Plain(t, o) -> let h, r = parts t in h + r + over o
    | Response(target, p, o, st, m) ->
        let head = let h, r = parts target in sprintf "d %s / d %s%s" h p r

        let stat =
            match st with
            | Some ws -> " stationary window " + String.Join(", ", List.map expr ws)
            | None -> ""

        let meth =
            match m with
            | Some m -> " with " + methodText m
            | None -> ""

        head + over o + stat + meth
    | Lyapunov k -> sprintf "lyapunov(%s)" (expr k)
    | Alignment(lo, hi, n) -> "alignment" + onBins lo hi n
    | Let(n, e) -> sprintf "let %s = %s" n (expr e)
    | Score(e, lo, hi, n) -> sprintf "score(%s)" (expr e) + onBins lo hi n
    | Samples(es, every) ->
        sprintf "samples(%s)%s" (String.Join(", ", List.map expr es)) (every |> Option.map (fun e -> " every " + expr e) |> Option.defaultValue "")
    | WeightQuery n -> n

let private settings (xs: Setting list) =
    xs |> List.map (fun s -> sprintf "  %s = %s\n" s.Key (expr s.Value)) |> String.concat ""

let topItem (item: TopItem) =
    match item with
    | ModelBlock m ->
        let body = m.Items |> List.map (fun i -> "  " + modelItem i + "\n") |> String.concat ""
        sprintf "model %s {\n%s}\n" m.Name body
    | ParamsBlock(n, xs, _) -> sprintf "params %s {\n%s}\n" n (settings xs)
    | SweepDecl(p, a, b, s, _) -> sprintf "sweep %s from %s to %s step %s\n" p (expr a) (expr b) (expr s)
    | SimulateBlock(xs, _) -> sprintf "simulate {\n%s}\n" (settings xs)
    | QueryBlock(qs, _) ->
        let body = qs |> List.map (fun q -> "  " + queryKind q.Kind + "\n") |> String.concat ""
        sprintf "query {\n%s}\n" body
    | FitBlock(ps, data, _, xs, _) ->
        let value v =
            match v with
            | FitExpr e -> expr e
            | FitMethod m -> methodText m
            | FitKl(at, w) ->
                "kl"
                + (at |> Option.map (fun e -> " at " + expr e) |> Option.defaultValue "")
                + (w |> Option.map (fun e -> " stationary window " + expr e) |> Option.defaultValue "")

        let body = xs |> List.map (fun s -> sprintf "  %s = %s\n" s.FitKey (value s.FitArg)) |> String.concat ""
        sprintf "fit %s to \"%s\" {\n%s}\n" (ps |> List.map fst |> String.concat ", ") data body

/// A whole file as source text.
let printFile (f: File) : string =
    f.Items |> List.map topItem |> String.concat "\n"
