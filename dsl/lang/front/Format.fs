/// `dsl format`: a source text in the canonical layout, comments kept. The file is parsed (the
/// parser drops comments), printed item by item with the fewest parentheses that keep the tree, and
/// the comments, collected by a separate scan with their positions, are put back: a comment alone on
/// its line before the item that follows it, a comment after code at the end of that item's line.
/// `Parser.parseFile (format s) = Parser.parseFile s` (positions aside) for every file that parses.
module Sde.Lang.Format

open System
open Sde.Lang.Syntax

// ---------------------------------------------------------------------------------- comments

/// A comment as written, where it starts, whether code precedes it on its line, and how many `{`
/// are open around it (0: between top-level items).
type Comment =
    { Text: string
      Line: int
      Trailing: bool
      Depth: int }

/// The comments of a source text, and the lines of the `}` that close top-level blocks. Strings
/// (`"data.csv"`, one line) are skipped, so that `//` or `{` inside them count for nothing.
let scan (text: string) : Comment list * int list =
    let comments = Collections.Generic.List<Comment>()
    let closes = Collections.Generic.List<int>()
    let mutable i = 0
    let mutable line = 1
    let mutable codeOnLine = false
    let mutable depth = 0
    let n = text.Length

    let newline () =
        line <- line + 1
        codeOnLine <- false

    while i < n do
        let c = text[i]

        if c = '\n' then
            newline ()
            i <- i + 1
        elif c = '\r' then
            // CR LF and a lone CR end a line, as for the parser
            if i + 1 < n && text[i + 1] = '\n' then i <- i + 1
            newline ()
            i <- i + 1
        elif c = '/' && i + 1 < n && text[i + 1] = '/' then
            let j = text.IndexOfAny([| '\n'; '\r' |], i)
            let e = if j < 0 then n else j
            comments.Add { Text = text.Substring(i, e - i).TrimEnd(); Line = line; Trailing = codeOnLine; Depth = depth }
            i <- e
        elif c = '/' && i + 1 < n && text[i + 1] = '*' then
            let j = text.IndexOf("*/", i + 2, StringComparison.Ordinal)
            let e = if j < 0 then n else j + 2
            let body = text.Substring(i, e - i)
            comments.Add { Text = body; Line = line; Trailing = codeOnLine; Depth = depth }
            // lines inside the comment
            for k in i .. e - 1 do
                if text[k] = '\n' || (text[k] = '\r' && (k + 1 >= n || text[k + 1] <> '\n')) then line <- line + 1

            i <- e
        elif c = '"' then
            let j = text.IndexOfAny([| '"'; '\n'; '\r' |], i + 1)
            i <- if j < 0 then n elif text[j] = '"' then j + 1 else j
            codeOnLine <- true
        else
            if c = '{' then depth <- depth + 1
            elif c = '}' then
                depth <- max 0 (depth - 1)
                if depth = 0 then closes.Add line

            if c <> ' ' && c <> '\t' then codeOnLine <- true
            i <- i + 1

    List.ofSeq comments, List.ofSeq closes

// ---------------------------------------------------------------------------------- expressions

// Binding strength, as the parser reads it: or 1, and 2, not 3, comparison 4, + - 5, * / 6,
// unary - 7, ^ 8, atoms 9. `if` is an atom that takes everything after `else`: 0.
let private level (e: Expr) =
    match e.Kind with
    | Num v when v < 0.0 -> 9 // printed in parentheses
    | Num _
    | Var _
    | Index _
    | Call _
    | Reduce _ -> 9
    | Bin(Pow, _, _) -> 8
    | ExprKind.Neg _ -> 7
    | Bin((Mul | Div), _, _) -> 6
    | Bin((Add | Sub), _, _) -> 5
    | Cmp _ -> 4
    | Not _ -> 3
    | And _ -> 2
    | Or _ -> 1
    | If _ -> 0

/// `dt`, `dW`, `dW[i]`: a differential, written after its coefficient without `*` (`sigma dW`).
let private isDifferential (e: Expr) =
    let name n = n = "dt" || (String.length n > 1 && n[0] = 'd' && Char.IsUpper n[1])

    match e.Kind with
    | Var n -> name n
    | Index(n, _) -> name n
    | _ -> false

/// A number as the printer writes it, exponents as `1e-5` rather than `1E-05`.
let number (v: float) =
    (Printer.number v).Replace("E+", "e").Replace("E-0", "e-").Replace("E-", "e-").Replace("E", "e")

/// An expression with the parentheses its tree needs and no more.
let rec expr (e: Expr) : string =
    match e.Kind with
    | Num v -> number v
    | Var n -> n
    | Index(n, i) -> sprintf "%s[%s]" n (expr i)
    | ExprKind.Neg a ->
        match a.Kind with
        | ExprKind.Neg _ -> "-(" + expr a + ")"
        | _ -> "-" + at 7 a
    | Bin(Pow, a, b) -> sprintf "%s^%s" (at 9 a) (right 7 b)
    | Bin(Mul, a, b) when isDifferential b -> sprintf "%s %s" (at 6 a) (expr b)
    | Bin(op, a, b) ->
        let l = if op = Add || op = Sub then 5 else 6
        sprintf "%s %s %s" (at l a) (Printer.binOp op) (right (l + 1) b)
    | Call(f, args) when f = listValue -> sprintf "[%s]" (String.Join(", ", List.map expr args))
    | Call(f, args) -> sprintf "%s(%s)" f (String.Join(", ", List.map expr args))
    | If(c, a, b) -> sprintf "if %s then %s else %s" (at 1 c) (at 1 a) (expr b)
    | Cmp(op, a, b) -> sprintf "%s %s %s" (at 5 a) (Printer.cmpOp op) (at 5 b)
    | And(a, b) -> sprintf "%s and %s" (at 2 a) (at 3 b)
    | Or(a, b) -> sprintf "%s or %s" (at 1 a) (at 2 b)
    | Not a -> "not " + at 3 a
    | Reduce(op, v, body) -> sprintf "%s(%s, %s)" (if op = Sum then "sum" else "avg") v (expr body)

/// `e` where the grammar wants binding strength `l` at least.
and private at (l: int) (e: Expr) = if level e >= l then expr e else "(" + expr e + ")"

/// A right operand: a negation is parenthesised (`a - (-b)`, not `a - -b`).
and private right (l: int) (e: Expr) =
    match e.Kind with
    | ExprKind.Neg _ -> "(" + expr e + ")"
    | _ -> at l e

// ---------------------------------------------------------------------------------- items

let private bound (b: Bound) = (number b.Value).Trim('(', ')')

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
        let dom =
            match d with
            | Some(lo, hi) -> sprintf " in %s%s, %s%s" (if lo.Closed then "[" else "(") (bound lo) (bound hi) (if hi.Closed then "]" else ")")
            | None -> ""

        sprintf "param %s%s = %s%s" n (size s) (expr e) dom
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
    | LogWeightEquation(n, e, _) -> sprintf "d log %s = %s" n (expr e)
    | other -> Printer.modelItem other

let private window (a: Expr) (b: Expr) = sprintf "[%s, %s]" (expr a) (expr b)

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
    let onBins lo hi n = sprintf " on %s bins %s" (window lo hi) (expr n)
    let over = Option.map (fun (w: Window) -> " over " + window w.T0 w.T1) >> Option.defaultValue ""

    let parts (t: Target) =
        match t with
        | MeanOf e -> sprintf "mean(%s)" (expr e), ""
        | SeriesOf(e, d) -> sprintf "mean(%s)" (expr e), sprintf " every %s" (expr d)
        | DensityOf(e, lo, hi, n) -> sprintf "density(%s)" (expr e), onBins lo hi n
        | VarianceOf e -> sprintf "variance(%s)" (expr e), ""
        | CovarianceOf(a, b) -> sprintf "covariance(%s, %s)" (expr a) (expr b), ""
        | QuantileOf(e, p, lo, hi, n) -> sprintf "quantile(%s, %s)" (expr e) (expr p), onBins lo hi n
        | Density2Of(a, b, lo1, hi1, lo2, hi2, n, m) ->
            sprintf "density(%s, %s)" (expr a) (expr b), sprintf " on %s x %s bins %s x %s" (window lo1 hi1) (window lo2 hi2) (expr n) (expr m)

    match k with
    | Plain(t, o) -> let h, r = parts t in h + r + over o
    | Response(t, p, o, st, m) ->
        let h, r = parts t
        let stat = st |> Option.map (fun ws -> " stationary window " + String.Join(", ", List.map expr ws)) |> Option.defaultValue ""
        let meth = m |> Option.map (fun m -> " with " + methodText m) |> Option.defaultValue ""
        sprintf "d %s / d %s%s" h p r + over o + stat + meth
    | Lyapunov k -> sprintf "lyapunov(%s)" (expr k)
    | Alignment(lo, hi, n) -> "alignment" + onBins lo hi n
    | Let(n, e) -> sprintf "let %s = %s" n (expr e)
    | Score(e, lo, hi, n) -> sprintf "score(%s)" (expr e) + onBins lo hi n
    | Samples(es, every) ->
        sprintf "samples(%s)%s" (String.Join(", ", List.map expr es)) (every |> Option.map (fun e -> " every " + expr e) |> Option.defaultValue "")
    | other -> Printer.queryKind other

let private fitValue (v: FitValue) =
    match v with
    | FitExpr e -> expr e
    | FitMethod m -> methodText m
    | FitKl(a, w) ->
        "kl"
        + (a |> Option.map (fun e -> " at " + expr e) |> Option.defaultValue "")
        + (w |> Option.map (fun e -> " stationary window " + expr e) |> Option.defaultValue "")

/// Where a model item starts.
let itemPos (i: ModelItem) =
    match i with
    | ConstDecl(_, _, p)
    | ParamDecl(_, _, _, _, p)
    | StateDecl(_, _, _, p)
    | BrownianDecl(_, _, p)
    | InitDecl(_, _, _, p)
    | Equation(_, _, _, p)
    | LetDecl(_, _, p)
    | WeightDecl(_, p)
    | LogWeightEquation(_, _, p)
    | CalculusDecl(_, p) -> p

/// A top-level item as its first line, its children (each one line, with its source line) and
/// whether it is a block (closed by `}`).
let private layout (item: TopItem) : string * (string * int) list * bool =
    let settings (xs: Setting list) = xs |> List.map (fun s -> sprintf "%s = %s" s.Key (expr s.Value), s.Pos.Line)

    match item with
    | ModelBlock m -> sprintf "model %s {" m.Name, m.Items |> List.map (fun i -> modelItem i, (itemPos i).Line), true
    | ParamsBlock(n, xs, _) -> sprintf "params %s {" n, settings xs, true
    | SweepDecl(p, a, b, s, _) -> sprintf "sweep %s from %s to %s step %s" p (expr a) (expr b) (expr s), [], false
    | SimulateBlock(xs, _) -> "simulate {", settings xs, true
    | QueryBlock(qs, _) -> "query {", qs |> List.map (fun q -> queryKind q.Kind, q.Pos.Line), true
    | FitBlock(ps, data, _, xs, _) ->
        sprintf "fit %s to \"%s\" {" (ps |> List.map fst |> String.concat ", ") data,
        xs |> List.map (fun s -> sprintf "%s = %s" s.FitKey (fitValue s.FitArg), s.FitPos.Line),
        true

/// The source line where a top-level item starts.
let topLine (item: TopItem) =
    match item with
    | ModelBlock m -> m.Pos.Line
    | ParamsBlock(_, _, p)
    | SweepDecl(_, _, _, _, p)
    | SimulateBlock(_, p)
    | QueryBlock(_, p)
    | FitBlock(_, _, _, _, p) -> p.Line

// ---------------------------------------------------------------------------------- the file

let private indent = "  "

/// A parsed file and its source in the canonical layout: two spaces of indentation, one item a line,
/// one blank line between top-level items, a blank line inside a block kept where the source has one,
/// comments where they were (relative to the items).
let layoutFile (source: string) (f: File) : string =
    let comments, _ = scan source
    let lines = source.Split([| "\r\n"; "\r"; "\n" |], StringSplitOptions.None)
    let blank l = l >= 1 && l <= lines.Length && String.IsNullOrWhiteSpace lines[l - 1]
    let out = Text.StringBuilder()
    let emit (s: string) = out.Append(s.TrimEnd()).Append('\n') |> ignore
    let items = f.Items |> List.sortBy topLine |> List.toArray
    // which item (by index) a top-level comment belongs to: a trailing one to the item whose span holds its line
    // (printed after the item), one alone on its line to the next item (printed before it); None: the end
    let owner (c: Comment) =
        if c.Depth > 0 || c.Trailing then
            items |> Array.tryFindIndexBack (fun it -> topLine it <= c.Line) |> Option.map (fun i -> i, true)
        else
            items |> Array.tryFindIndex (fun it -> topLine it >= c.Line) |> Option.map (fun i -> i, false)

    let owned = comments |> List.map (fun c -> c, owner c)
    let tail = owned |> List.filter (fun (_, o) -> o.IsNone) |> List.map fst
    let endLine (c: Comment) = c.Line + (c.Text |> Seq.filter (fun ch -> ch = '\n') |> Seq.length)
    let trailingText (cs: Comment list) = cs |> List.map (fun c -> c.Text) |> String.concat " "

    items
    |> Array.iteri (fun k it ->
        if k > 0 then out.Append('\n') |> ignore
        let mine = owned |> List.choose (fun (c, o) -> match o with Some(i, inside) when i = k -> Some(c, inside) | _ -> None)
        let before = mine |> List.filter (fun (_, inside) -> not inside) |> List.map fst
        let within = mine |> List.filter snd |> List.map fst
        before |> List.iter (fun c -> emit c.Text; if blank (endLine c + 1) then out.Append('\n') |> ignore)
        let head, children, isBlock = layout it
        let start = topLine it
        // the comments in its span: on the first line (trailing), then by child; after its end: trailing
        let inSpan, after = within |> List.partition (fun c -> c.Depth > 0)
        let onHead = inSpan |> List.filter (fun c -> c.Trailing && c.Line = start && not (children |> List.exists (fun (_, l) -> l = start)))

        let suffix (cs: Comment list) = if cs.IsEmpty then "" else "  " + trailingText cs

        if not isBlock then
            emit (head + suffix (inSpan @ after))
        else
            emit (head + suffix onHead)
            let rest = inSpan |> List.filter (fun c -> not (List.contains c onHead))
            let childLines = children |> List.map snd |> List.toArray

            // a comment's child: trailing, the last child starting at or before it; alone, the next child
            let childOf (c: Comment) =
                if c.Trailing then childLines |> Array.tryFindIndexBack (fun l -> l <= c.Line)
                else childLines |> Array.tryFindIndex (fun l -> l >= c.Line)

            let placed = rest |> List.map (fun c -> c, childOf c)

            children
            |> List.iteri (fun j (text, line) ->
                let lead = placed |> List.filter (fun (c, o) -> o = Some j && not c.Trailing) |> List.map fst
                let trail = placed |> List.filter (fun (c, o) -> o = Some j && c.Trailing) |> List.map fst
                let first = lead |> List.tryHead |> Option.map (fun c -> c.Line) |> Option.defaultValue line
                if j > 0 && childLines[j - 1] < first - 1 && blank (first - 1) then out.Append('\n') |> ignore
                lead |> List.iter (fun c -> emit (indent + c.Text); if blank (endLine c + 1) then out.Append('\n') |> ignore)
                emit (indent + text + suffix trail))

            // comments after the last child (alone on their lines), before the `}`
            placed |> List.filter (fun (_, o) -> o.IsNone) |> List.iter (fun (c, _) -> emit (indent + c.Text))
            emit ("}" + suffix after))

    if not tail.IsEmpty then
        if items.Length > 0 then out.Append('\n') |> ignore
        tail |> List.iteri (fun j c -> (if j > 0 && blank (c.Line - 1) then out.Append('\n') |> ignore); emit c.Text)

    out.ToString()

/// A source text in the canonical layout, or the parser's error (the text changes only if it parses).
let format (source: string) : Result<string, Diagnostic> =
    let source = if isNull source then "" else source

    if source.Length > Limits.sourceChars then
        Error { Pos = { Line = 1; Col = 1 }; Message = sprintf "the source has %d characters; at most %d" source.Length Limits.sourceChars }
    else
        try
            Frontend.onLargeStack (fun () -> Parser.parseFile source |> Result.map (layoutFile source))
        with ex ->
            Error { Pos = { Line = 1; Col = 1 }; Message = sprintf "cannot format: %s" ex.Message }
