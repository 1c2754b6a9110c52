/// The `.sde` grammar (FParsec, lexer-free). Every node carries the position where it starts.
/// Statements end at a newline or `;`; inside `( )` and `[ ]` newlines are free.
module Sde.Lang.Parser

open System
open System.Globalization
open System.Text
open FParsec
open Sde.Lang.Syntax

/// Parser state: how many `(`/`[` are open (newlines are white space inside them) and how deep
/// the expression nesting is (capped so that no input can exhaust the stack).
type UState = { Parens: int; Depth: int }

type P<'a> = Parser<'a, UState>

/// Deepest expression nesting accepted.
let maxDepth = Limits.parseDepth

/// Most operands in one chain of `+`/`*`/`and`/`or`.
let maxChain = Limits.chainTerms

/// Longest name accepted (a name becomes a .NET type or field name, and longer ones only slow the
/// did-you-mean search).
let maxIdent = Limits.nameLength

/// A message starting with `@LINE:COL|` is reported at that position instead of the failure point.
let private atPos (p: Pos) (msg: string) = sprintf "@%d:%d|%s" p.Line p.Col msg

let private pos: P<Pos> =
    getPosition |>> fun p -> { Line = int p.Line; Col = int p.Column }

// ---------------------------------------------------------------------------------- white space

let private lineComment: P<unit> = skipString "//" >>. skipRestOfLine false

let private blockComment: P<unit> =
    skipString "/*"
    >>. (skipCharsTillString "*/" true Int32.MaxValue <?> "'*/' closing the comment")

let private blank: P<unit> = skipMany1SatisfyL (fun c -> c = ' ' || c = '\t' || c = '\r') "space"

let private newlineInParens: P<unit> =
    userStateSatisfies (fun u -> u.Parens > 0) >>. skipNewline

/// White space and comments; newlines too when inside parentheses or brackets.
let ws: P<unit> = skipMany (blank <|> lineComment <|> blockComment <|> newlineInParens)

/// White space, comments, newlines and `;` between statements.
let private wsnl: P<unit> =
    skipMany (blank <|> lineComment <|> blockComment <|> skipNewline <|> skipChar ';')

/// The end of a statement: a newline, `;`, a closing `}` or the end of the file.
let private eos: P<unit> =
    (skipNewline <|> skipChar ';' <|> followedBy (skipChar '}') <|> eof)
    <?> "end of statement (newline or ';')"
    >>. wsnl

// ---------------------------------------------------------------------------------- tokens

/// Names: a letter (any script: `σ`, `θ`, per Char.IsLetter) or `_`, then letters, digits (per
/// Char.IsLetterOrDigit) and `_`.
let private isIdStart c = Char.IsLetter c || c = '_'
let private isIdChar c = Char.IsLetterOrDigit c || c = '_'

let keywords = set [ "if"; "then"; "else"; "and"; "or"; "not"; "inf" ]

/// A name of at most `maxIdent` characters; a longer one is an error at its start.
let private identRaw: P<string> =
    fun stream ->
        let p = { Line = int stream.Line; Col = int stream.Column }
        let r = (many1Satisfy2L isIdStart isIdChar "name") stream

        if r.Status = Ok && r.Result.Length > maxIdent then
            // fatal, after the name (a label such as "expression" would replace an error at its start)
            Reply(FatalError, messageError (atPos p (sprintf "name of %d characters; names are at most %d characters long" r.Result.Length maxIdent)))
        else
            r

/// A name that is not a keyword, followed by white space.
let private identNoKw: P<string> =
    fun stream ->
        let st = stream.State
        let r = identRaw stream

        if r.Status = Ok && keywords.Contains r.Result then
            stream.BacktrackTo(st)
            Reply(Error, expected "name")
        else
            r

/// A name that is not a keyword, followed by white space.
let ident: P<string> = identNoKw .>> ws

let private kw (s: string) : P<unit> =
    (skipString s >>? notFollowedBy (satisfy isIdChar)) .>> ws <?> sprintf "'%s'" s

let private sym (s: string) : P<unit> = skipString s .>> ws <?> sprintf "'%s'" s

let private numLit: P<float> =
    numberLiteral (NumberLiteralOptions.AllowFraction ||| NumberLiteralOptions.AllowExponent) "number"
    |>> fun n -> Double.Parse(n.String, NumberStyles.Float, CultureInfo.InvariantCulture)
    .>> ws

/// Runs `p` one nesting level deeper (after an opening token has been consumed), failing with a
/// located message when the nesting cap is reached. `parens` also makes newlines white space.
let private deeper (parens: bool) (p: P<'a>) : P<'a> =
    fun stream ->
        let u = stream.UserState

        if u.Depth >= maxDepth then
            Reply(
                FatalError,
                messageError (sprintf "expression nested too deeply (more than %d levels); simplify it" maxDepth)
            )
        else
            stream.UserState <-
                { Depth = u.Depth + 1
                  Parens = if parens then u.Parens + 1 else u.Parens }

            let r = p stream

            if r.Status = Ok then
                let v = stream.UserState

                stream.UserState <-
                    { Depth = v.Depth - 1
                      Parens = if parens then v.Parens - 1 else v.Parens }

            r

/// The closing bracket `c` of one opened at `openPos`; at the end of the file the error points
/// at the opening bracket.
let private closing (openCh: char) (c: char) (openPos: Pos) : P<unit> =
    fun stream ->
        if stream.Skip c then
            Reply(())
        elif stream.IsEndOfStream || (c <> '}' && stream.Peek() = '}') then
            Reply(FatalError, messageError (atPos openPos (sprintf "unclosed '%c'; add '%c'" openCh c)))
        else
            Reply(Error, expected (sprintf "'%c'" c))

/// `open p close` with newlines free inside, then white space.
let private group (o: char) (c: char) (p: P<'a>) : P<'a> =
    pos .>> skipChar o >>= fun op -> deeper true (ws >>. p .>> closing o c op) .>> ws

// ---------------------------------------------------------------------------------- expressions

let private mk p k : Expr = { Kind = k; Pos = p }

let expr, private exprRef = createParserForwardedToRef<Expr, UState> ()

let private reduceOp name =
    match name with
    | "sum" -> Some Sum
    | "avg" -> Some Avg
    | _ -> None

let private nameAtom: P<Expr> =
    pos .>>. ident
    >>= fun (p, name) ->
        match reduceOp name with
        | Some op ->
            group '(' ')' (ident .>> sym "," .>>. expr)
            |>> fun (v, body) -> mk p (Reduce(op, v, body))
            <|> preturn (mk p (Var name))
        | None ->
            (group '(' ')' (sepBy expr (sym ",")) |>> fun args -> mk p (Call(name, args)))
            <|> (group '[' ']' expr |>> fun ix -> mk p (Index(name, ix)))
            <|> preturn (mk p (Var name))

let private ifExpr: P<Expr> =
    pos .>> kw "if"
    >>= fun p ->
        deeper false (expr .>> kw "then" .>>. expr .>> kw "else" .>>. expr)
        |>> fun ((c, a), b) -> mk p (If(c, a, b))

let private atom: P<Expr> =
    choice
        [ pos .>>. numLit |>> fun (p, v) -> mk p (Num v)
          pos .>> kw "inf" |>> fun p -> mk p (Num Double.PositiveInfinity)
          group '(' ')' expr
          ifExpr
          nameAtom ]
    <?> "expression"

let private unary, private unaryRef = createParserForwardedToRef<Expr, UState> ()

let private powExpr: P<Expr> =
    atom
    >>= fun a ->
        (sym "^" >>. deeper false unary |>> fun b -> mk a.Pos (Bin(Pow, a, b)))
        <|> preturn a

unaryRef.Value <-
    (pos .>> sym "-" >>= fun p -> deeper false unary |>> fun e -> mk p (ExprKind.Neg e))
    <|> powExpr

/// A left-associative chain `first (op operand)*`, built iteratively, at most `maxChain` operands.
let private chain (operand: P<Expr>) (op: P<Expr -> Expr -> ExprKind>) : P<Expr> =
    fun stream ->
        let first = operand stream

        if first.Status <> Ok then
            first
        else
            let mutable acc = first.Result
            let mutable count = 1
            let mutable result = None

            while result.IsNone do
                let st = stream.State
                let tag = stream.StateTag
                let o = op stream

                if o.Status = Ok then
                    let r = operand stream

                    if r.Status = Ok then
                        count <- count + 1

                        if count > maxChain then
                            result <-
                                Some(
                                    Reply(
                                        FatalError,
                                        messageError (
                                            sprintf "expression has more than %d terms; split it" maxChain
                                        )
                                    )
                                )
                        else
                            acc <- mk acc.Pos (o.Result acc r.Result)
                    else
                        result <- Some(Reply(r.Status, r.Error))
                elif o.Status = Error && stream.StateTag = tag then
                    stream.BacktrackTo st
                    result <- Some(Reply(Ok, acc, mergeErrors first.Error o.Error))
                else
                    result <- Some(Reply(o.Status, o.Error))

            result.Value

/// A juxtaposed name starting with `d` (`dt`, `dW`): implicit multiplication.
let private differentialAhead: P<unit> =
    followedBy (skipChar 'd' >>. skipSatisfy isIdChar) <?> "operator"

let private mulOp: P<Expr -> Expr -> ExprKind> =
    (sym "*" >>% fun a b -> Bin(Mul, a, b))
    <|> (notFollowedByString "//" >>? notFollowedByString "/*" >>? sym "/" >>% fun a b -> Bin(Div, a, b))
    <|> (differentialAhead >>% fun a b -> Bin(Mul, a, b))
    <?> "operator"

let private addOp: P<Expr -> Expr -> ExprKind> =
    (sym "+" >>% fun a b -> Bin(Add, a, b)) <|> (sym "-" >>% fun a b -> Bin(Sub, a, b))
    <?> "operator"

let private mulExpr = chain unary mulOp
let private addExpr = chain mulExpr addOp

let private cmpOp: P<CmpOp> =
    choice
        [ skipString "==" >>% Eq
          skipString "!=" >>% Ne
          skipString "<=" >>% Le
          skipString ">=" >>% Ge
          skipString "<" >>% Lt
          skipString ">" >>% Gt ]
    .>> ws
    <?> "operator"

let private cmpExpr: P<Expr> =
    addExpr
    >>= fun a -> (cmpOp .>>. addExpr |>> fun (op, b) -> mk a.Pos (Cmp(op, a, b))) <|> preturn a

let private notExpr, private notRef = createParserForwardedToRef<Expr, UState> ()

notRef.Value <-
    (pos .>> kw "not" >>= fun p -> deeper false notExpr |>> fun e -> mk p (Not e))
    <|> cmpExpr

let private andExpr = chain notExpr (kw "and" >>% fun a b -> And(a, b))
let private orExpr = chain andExpr (kw "or" >>% fun a b -> Or(a, b))

exprRef.Value <- orExpr

// ---------------------------------------------------------------------------------- model

let private bound: P<float> =
    (sym "-" >>. ((kw "inf" >>% Double.NegativeInfinity) <|> (numLit |>> fun v -> -v)))
    <|> (kw "inf" >>% Double.PositiveInfinity)
    <|> numLit
    <?> "number or inf"

let private domain: P<Bound * Bound> =
    let lo = (sym "(" >>% false) <|> (sym "[" >>% true) <?> "'(' or '['"
    let hi = (sym ")" >>% false) <|> (sym "]" >>% true) <?> "')' or ']'"

    pipe5 lo bound (sym ",") bound hi (fun lc l _ h hc ->
        { Value = l; Closed = lc }, { Value = h; Closed = hc })

let private nameAt: P<Pos * string> = pos .>>. ident

let private size: P<Expr option> = opt (group '[' ']' expr)

let private lhsIndex: P<string option> =
    opt (group '[' ']' (ident <?> "index variable name"))

let private initRhs: P<InitRhs> =
    (sym "=" >>. expr |>> InitValue)
    <|> (sym "~"
         >>. ((kw "normal" >>. group '(' ')' (expr .>> sym "," .>>. expr) |>> InitNormal)
              <|> (kw "uniform" >>. group '(' ')' (expr .>> sym "," .>>. expr) |>> InitUniform)
              <?> "'normal(mean, sd)' or 'uniform(lo, hi)'"))
    <?> "'=' or '~'"

let private modelItem: P<ModelItem> =
    choice
        [ kw "const" >>. nameAt .>> sym "=" .>>. expr |>> fun ((p, n), e) -> ConstDecl(n, e, p)
          kw "param" >>. nameAt .>>. size .>> sym "=" .>>. expr .>>. opt (kw "in" >>. domain)
          |>> fun ((((p, n), s), e), d) -> ParamDecl(n, s, e, d, p)
          kw "state" >>. nameAt .>>. size .>>. (kw "periodic" >>% true <|> preturn false)
          |>> fun (((p, n), s), per) -> StateDecl(n, s, per, p)
          kw "brownian" >>. nameAt .>>. size |>> fun ((p, n), s) -> BrownianDecl(n, s, p)
          pos .>> kw "init" .>>. ident .>>. lhsIndex .>>. initRhs
          |>> fun (((p, n), i), r) -> InitDecl(n, i, r, p)
          attempt (pos .>> kw "d" .>> kw "log" .>>. ident .>> sym "=") .>>. expr
          |>> fun ((p, n), e) -> LogWeightEquation(n, e, p)
          pos .>> kw "d" .>>. ident .>>. lhsIndex .>> sym "=" .>>. expr
          |>> fun (((p, n), i), e) -> Equation(n, i, e, p)
          kw "weight" >>. nameAt |>> fun (p, n) -> WeightDecl(n, p)
          kw "calculus" >>. (nameAt <?> "'ito' or 'stratonovich'") |>> fun (p, n) -> CalculusDecl(n, p)
          kw "let" >>. nameAt .>> sym "=" .>>. expr |>> fun ((p, n), e) -> LetDecl(n, e, p) ]
    <?> "model item (const, param, state, brownian, weight, init, d, let or calculus)"

/// The start of a top-level item (`model M {`, `params P {`, `simulate {`, `query {`, `sweep F from`,
/// `fit a to` or `fit a, b`), which no block item starts with: seen where a block's next item or
/// `}` belongs, it means that the block's `}` is missing.
let private topItemAhead: P<unit> =
    let name = ident .>> opt (group '[' ']' expr)

    followedBy (
        choice
            [ kw "model" >>. ident >>. skipChar '{'
              kw "params" >>. ident >>. skipChar '{'
              kw "simulate" >>. skipChar '{'
              kw "query" >>. skipChar '{'
              kw "sweep" >>. name >>. kw "from"
              kw "fit" >>. name >>. (sym "," <|> kw "to") ]
    )

/// The error for a block opened at `op` whose `}` is missing, at `at`: the end of its last item
/// (or of its `{`), after the white space and comment that end the item's line: where the `}` belongs.
let private missingBrace (what: string) (op: Pos) (at: Pos) : P<'a> =
    failFatally (atPos at (sprintf "missing '}' closing the '%s' block opened at %d:%d" what op.Line op.Col))

/// The `}` of the block `what` opened at `op`, whose last item ends at `last`; where the end of the
/// file or a top-level item comes instead, the error says that the `}` is missing.
let private closeBlock (what: string) (op: Pos) (last: Pos) : P<unit> =
    ((skipChar '}' <?> "'}'") >>. ws) <|> (followedBy (eof <|> topItemAhead) >>. missingBrace what op last)

/// `{ item* }` with statements separated by newlines or `;` (`what` names the block in errors). A
/// top-level item where an item or the `}` belongs (on the last item's line too) ends the block
/// with the error that its `}` is missing.
let private block (what: string) (item: P<'a>) : P<'a list> =
    let itemEnd = notFollowedBy topItemAhead >>. item .>>. pos .>> (eos <|> topItemAhead)

    pos .>> skipChar '{' .>>. (ws >>. pos) .>> wsnl .>>. many itemEnd
    >>= fun ((op, start), items) ->
        let last = items |> List.tryLast |> Option.map snd |> Option.defaultValue start
        closeBlock what op last >>% List.map fst items

let private setting: P<Setting> =
    nameAt .>> sym "=" .>>. expr |>> fun ((p, k), v) -> { Key = k; Value = v; Pos = p }

/// A param or one component of a vector param: `F`, `a[2]` (an integer literal index), as the name
/// `a[2]` that the checker gives the component.
let private paramName: P<string> =
    ident .>>. opt (preturn () .>>. group '[' ']' expr)
    >>= fun (n, ix) ->
        match ix with
        | None -> preturn n
        | Some(_, { Kind = Num v }) when Math.Floor v = v && abs v < 1e9 -> preturn (sprintf "%s[%d]" n (int v))
        | Some(_, { Kind = Neg { Kind = Num v } }) when Math.Floor v = v && abs v < 1e9 -> preturn (sprintf "%s[%d]" n (-(int v)))
        | Some(_, e) -> failFatally (atPos e.Pos (sprintf "a component of a vector param is named by an integer literal, e.g. %s[0]" n))

let private paramAt: P<Pos * string> = pos .>>. paramName

/// A vector param's whole value in a params block: `[e0, e1, ...]`, as a `Call(listValue, items)`.
let private listLiteral: P<Expr> =
    pos .>>. group '[' ']' (sepBy1 expr (sym ",")) |>> fun (p, es) -> mk p (Call(listValue, es))

let private paramSetting: P<Setting> =
    paramAt .>> sym "=" .>>. (listLiteral <|> expr) |>> fun ((p, k), v) -> { Key = k; Value = v; Pos = p }

// ---------------------------------------------------------------------------------- queries

let private window: P<Window> =
    group '[' ']' (expr .>> sym "," .>>. expr) |>> fun (a, b) -> { T0 = a; T1 = b }

let private over: P<Window option> = opt (kw "over" >>. window)

let private onBins: P<Expr * Expr * Expr> =
    kw "on" >>. window .>> kw "bins" .>>. expr |>> fun (w, n) -> (w.T0, w.T1, n)

let private methodArg: P<MethodArg> =
    nameAt .>> sym "=" .>>. expr
    |>> fun ((p, n), e) ->
        match e.Kind with
        | Var v -> ArgName(n, v, p)
        | _ -> ArgNum(n, e, p)

let private methodP: P<Method> =
    pos .>>. ident .>>. opt (group '(' ')' (sepBy methodArg (sym ",")))
    |>> fun ((p, n), args) -> { Name = n; Args = defaultArg args []; Pos = p }

let private observable: P<Expr> = group '(' ')' expr

/// `density(e) on [a, b] bins n` or `density(e1, e2) on [a, b] x [c, d] bins n x m`.
let private densityTarget: P<Target> =
    let two = sym "," >>. expr
    pos .>>. group '(' ')' (expr .>>. opt two) .>> kw "on" .>>. window .>>. opt (kw "x" >>. window)
    .>> kw "bins" .>>. expr .>>. opt (kw "x" >>. expr)
    >>= fun (((((p, (e1, e2)), w1), w2), n1), n2) ->
        match e2, w2, n2 with
        | None, None, None -> preturn (DensityOf(e1, w1.T0, w1.T1, n1))
        | Some e2, Some w2, Some n2 -> preturn (Density2Of(e1, e2, w1.T0, w1.T1, w2.T0, w2.T1, n1, n2))
        | Some _, _, _ ->
            failFatally (atPos p "a density of two observables needs two ranges and two bin counts: density(x, y) on [a, b] x [c, d] bins n x m")
        | None, _, _ ->
            failFatally (atPos p "a density of one observable has one range and one bin count: density(x) on [a, b] bins n")

/// What `mean`, `density`, `variance`, `covariance` and `quantile` estimate (without `over`).
let private target: P<Target> =
    let pair = group '(' ')' (expr .>> sym "," .>>. expr)
    (kw "mean" >>. observable .>>. opt (kw "every" >>. expr) |>> fun (e, every) -> match every with Some d -> SeriesOf(e, d) | None -> MeanOf e)
    <|> (kw "density" >>. densityTarget)
    <|> (kw "variance" >>. observable |>> VarianceOf)
    <|> (kw "covariance" >>. pair |>> CovarianceOf)
    <|> (kw "quantile" >>. pair .>>. onBins |>> fun ((e, p), (lo, hi, n)) -> QuantileOf(e, p, lo, hi, n))

let private plainQuery: P<QueryKind> =
    target .>>. over |>> fun (t, o) -> Plain(t, o)

let private responseQuery: P<QueryKind> =
    let tail = over .>>. opt (kw "stationary" >>. kw "window" >>. sepBy1 expr (sym ",")) .>>. opt (kw "with" >>. methodP)
    let wrt = sym "/" >>. kw "d" >>. paramName
    let pair = group '(' ')' (expr .>> sym "," .>>. expr)
    // the ranges of a density (or quantile) follow the parameter: `d density(x) / d F on [a, b] bins n`
    let onTwo =
        kw "on" >>. window .>>. opt (kw "x" >>. window) .>> kw "bins" .>>. expr .>>. opt (kw "x" >>. expr)

    kw "d"
    >>. ((kw "mean" >>. observable .>>. wrt .>>. tail
          |>> fun ((e, p), ((o, s), m)) -> Response(MeanOf e, p, o, s, m))
         <|> (kw "density" >>. pos .>>. group '(' ')' (expr .>>. opt (sym "," >>. expr)) .>>. wrt .>>. onTwo .>>. tail
              >>= fun ((((at, (e1, e2)), p), (((w1, w2), n1), n2)), ((o, s), m)) ->
                  match e2, w2, n2 with
                  | None, None, None -> preturn (Response(DensityOf(e1, w1.T0, w1.T1, n1), p, o, s, m))
                  | Some e2, Some w2, Some n2 -> preturn (Response(Density2Of(e1, e2, w1.T0, w1.T1, w2.T0, w2.T1, n1, n2), p, o, s, m))
                  | _ -> failFatally (atPos at "the ranges and bin counts must match the observables: density(x) on [a, b] bins n or density(x, y) on [a, b] x [c, d] bins n x m"))
         <|> (kw "variance" >>. observable .>>. wrt .>>. tail |>> fun ((e, p), ((o, s), m)) -> Response(VarianceOf e, p, o, s, m))
         <|> (kw "covariance" >>. pair .>>. wrt .>>. tail |>> fun ((e, p), ((o, s), m)) -> Response(CovarianceOf e, p, o, s, m))
         <|> (kw "quantile" >>. pair .>>. wrt .>>. onBins .>>. tail
              |>> fun ((((e, q), p), (lo, hi, n)), ((o, s), m)) -> Response(QuantileOf(e, q, lo, hi, n), p, o, s, m))
         <?> "'mean(...)' or 'density(...)'")

/// `lyapunov(k)` and `alignment on [a, b] bins n`.
let private lyapunovQuery: P<QueryKind> =
    (kw "lyapunov" >>. group '(' ')' expr |>> Lyapunov)
    <|> (kw "alignment" >>. onBins |>> fun (lo, hi, n) -> Alignment(lo, hi, n))

/// `samples(e1, ..., ek) [every Δ]`: per-path values at T.
let private samplesQuery: P<QueryKind> =
    kw "samples" >>. group '(' ')' (sepBy1 expr (sym ",")) .>>. opt (kw "every" >>. expr) |>> Samples

/// `score(x[i]) on [a, b] bins n`: the marginal score per bin.
let private scoreQuery: P<QueryKind> =
    kw "score" >>. observable .>>. onBins |>> fun (e, (lo, hi, n)) -> Score(e, lo, hi, n)
/// `log_normalizer` and `ess` (weighted models).
let private weightQuery: P<QueryKind> =
    (kw "log_normalizer" >>% WeightQuery "log_normalizer") <|> (kw "ess" >>% WeightQuery "ess")

/// `let name = e`: a named observable.
let private letItem: P<QueryKind> =
    kw "let" >>. ident .>> sym "=" .>>. expr |>> Let

/// Removes comments and collapses white space: the query text as the JSON reports it.
let normalizeQueryText (s: string) =
    let noBlock = Text.RegularExpressions.Regex.Replace(s, @"/\*[\s\S]*?(\*/|$)", " ")
    let noLine = Text.RegularExpressions.Regex.Replace(noBlock, @"//[^\n]*", " ")
    Text.RegularExpressions.Regex.Replace(noLine, @"\s+", " ").Trim()

let private query: P<Query> =
    pos
    .>>. withSkippedString (fun s k -> (s, k)) (plainQuery <|> responseQuery <|> lyapunovQuery <|> weightQuery <|> samplesQuery <|> scoreQuery <|> letItem <?> "query (mean, density, variance, covariance, quantile, d ..., lyapunov, alignment, log_normalizer, ess, samples or score) or 'let name = e'")
    |>> fun (p, (s, k)) ->
        { Kind = k
          Text = QueryText(normalizeQueryText s)
          Pos = p }

// ---------------------------------------------------------------------------------- fit

/// `"file.csv"`: a file name on one line (no escapes).
let private stringLit: P<string> =
    skipChar '"' >>. manySatisfy (fun c -> c <> '"' && c <> '\n' && c <> '\r') .>> (skipChar '"' <?> "'\"' closing the file name") .>> ws
    <?> "a file name in double quotes"

/// `objective = kl at T`, `optimizer = adam(lr = 0.05)`, `iterations = 300`.
let private fitSetting: P<FitSetting> =
    nameAt .>> sym "=" >>= fun (p, k) ->
        let kl =
            kw "kl"
            >>. choice
                    [ kw "at" >>. expr |>> fun e -> FitKl(Some e, None)
                      kw "stationary" >>. kw "window" >>. expr |>> fun w -> FitKl(None, Some w)
                      preturn (FitKl(None, None)) ]

        let value = if k = "objective" || k = "optimizer" then kl <|> (methodP |>> FitMethod) else expr |>> FitExpr
        value |>> fun v -> { FitKey = k; FitArg = v; FitPos = p }

let private fitBlock: P<TopItem> =
    pos .>> kw "fit" .>>. sepBy1 paramAt (sym ",") .>> kw "to" .>>. (pos .>>. stringLit) .>>. block "fit" fitSetting
    |>> fun (((p, ps), (dp, data)), settings) -> FitBlock(ps |> List.map (fun (q, n) -> n, q), data, dp, settings, p)

// ---------------------------------------------------------------------------------- file

let private topItem: P<TopItem> =
    choice
        [ pos .>> kw "model" .>>. ident .>>. block "model" modelItem
          |>> fun ((p, n), items) -> ModelBlock { Name = n; Items = items; Pos = p }
          kw "params" >>. nameAt .>>. block "params" paramSetting |>> fun ((p, n), s) -> ParamsBlock(n, s, p)
          kw "sweep" >>. paramAt .>> kw "from" .>>. expr .>> kw "to" .>>. expr .>> kw "step" .>>. expr .>> eos
          |>> fun ((((p, n), a), b), s) -> SweepDecl(n, a, b, s, p)
          pos .>> kw "simulate" .>>. block "simulate" setting |>> fun (p, s) -> SimulateBlock(s, p)
          pos .>> kw "query" .>>. block "query" query |>> fun (p, q) -> QueryBlock(q, p)
          fitBlock ]
    <?> "'model', 'params', 'sweep', 'simulate', 'query' or 'fit'"

let private fileP: P<File> =
    ws >>. wsnl >>. many (topItem .>> wsnl) .>> eof |>> fun items -> { Items = items }

// ---------------------------------------------------------------------------------- errors

/// What the source holds at a position, for "but found ..." (a name, a number or one character).
let private foundAt (text: string) (line: int) (col: int) =
    let lines = text.Split('\n')

    if line < 1 || line > lines.Length then
        "end of file"
    else
        let l = lines[line - 1].TrimEnd('\r')
        let i = col - 1

        if i >= l.Length then
            (if line = lines.Length then "end of file" else "end of line")
        else
            let c = l[i]

            if isIdChar c then
                // the first 40 characters of the name (a loop that stops there: a name of millions of
                // characters, a fuzz finding, was walked through a boxed sequence at 190 bytes a character)
                let mutable j = i
                while j < l.Length && j - i < 40 && isIdChar l[j] do
                    j <- j + 1
                sprintf "'%s'" (l.Substring(i, j - i))
            elif Char.IsControl c || c = '\uFFFD' then
                sprintf "character U+%04X" (int c)
            else
                sprintf "'%c'" c

let private orList (xs: string list) =
    match List.rev xs with
    | [] -> ""
    | [ x ] -> x
    | last :: rest -> String.Join(", ", List.rev rest) + " or " + last

/// `; did you mean 'param'?` when the word found is a misspelling of a keyword the parser expected
/// there: one of the quoted labels, or of the keywords a label lists in parentheses
/// ("model item (const, param, ...)").
let private misspelledKeyword (expecteds: string list) (found: string) =
    if found.Length > 2 && found.StartsWith "'" && found.EndsWith "'" then
        let word = found.Substring(1, found.Length - 2)
        let keywords =
            expecteds
            |> List.collect (fun l ->
                // quoted keywords anywhere in a label ("'model', 'params' ..."), and the list a label
                // gives in parentheses
                let quoted = [ for m in RegularExpressions.Regex.Matches(l, @"'([A-Za-z_]+)'") -> m.Groups[1].Value ]
                let o = l.IndexOf '('
                let listed =
                    if o >= 0 && l.EndsWith ")" then
                        l.Substring(o + 1, l.Length - o - 2).Replace(" or ", ", ").Split(',') |> Array.map (fun k -> k.Trim()) |> List.ofArray
                    else []
                quoted @ listed)
            |> List.filter (fun k -> k.Length > 0 && k |> Seq.forall (fun c -> Char.IsLetter c || c = '_'))
        Diagnostics.suggest word keywords
    else ""

let rec private describe (text: string) (epos: Position) (msgs: ErrorMessageList) : Pos * string =
    let all = ErrorMessageList.ToSortedArray msgs |> Array.toList
    let p = { Line = int epos.Line; Col = int epos.Column }

    let custom =
        all
        |> List.choose (function
            | :? ErrorMessage.Message as m -> Some m.String
            | _ -> None)

    let expecteds =
        all
        |> List.choose (function
            | :? ErrorMessage.Expected as e -> Some e.Label
            | :? ErrorMessage.ExpectedString as e -> Some(sprintf "'%s'" e.String)
            | _ -> None)
        |> List.map (fun l ->
            match l with
            | "'^'" | "'and'" | "'or'" | "'*'" | "'/'" | "'+'" -> "operator"
            | _ -> l)
        |> List.distinct
        |> fun es ->
            let noise = set [ "space"; "newline"; "'/*'"; "'//'"; "';'"; "end of input" ]
            let kept = es |> List.filter (fun l -> not (noise.Contains l))
            let kept = if kept.IsEmpty then es |> List.filter (fun l -> l = "end of input") else kept
            if List.contains "expression" kept then List.filter (fun l -> l <> "'-'" && l <> "'not'") kept else kept

    let nested =
        all
        |> List.choose (function
            | :? ErrorMessage.NestedError as n -> Some(n.Position, n.Messages)
            | :? ErrorMessage.CompoundError as c -> Some(c.NestedErrorPosition, c.NestedErrorMessages)
            | _ -> None)

    match custom with
    | m :: _ when m.StartsWith "@" && m.Contains "|" ->
        let bar = m.IndexOf '|'
        let lc = m.Substring(1, bar - 1).Split(':')
        { Line = int lc[0]; Col = int lc[1] }, m.Substring(bar + 1)
    | m :: _ -> p, m
    | [] ->
        match expecteds, nested with
        | [], (np, nm) :: _ -> describe text np nm
        | [], [] -> p, "syntax error"
        | es, _ ->
            let found = foundAt text p.Line p.Col
            p, sprintf "expected %s but found %s%s" (orList es) found (misspelledKeyword es found)

/// Parses a whole file.
let parseFile (text: string) : Result<File, Diagnostic> =
    match runParserOnString fileP { Parens = 0; Depth = 0 } "" text with
    | Success(f, _, _) -> Result.Ok f
    | Failure(_, err, _) ->
        let p, m = describe text err.Position err.Messages
        Result.Error { Pos = p; Message = m }

/// Parses one expression (for tests and the embedding API).
let parseExpr (text: string) : Result<Expr, Diagnostic> =
    match runParserOnString (ws >>. expr .>> eof) { Parens = 0; Depth = 0 } "" text with
    | Success(e, _, _) -> Result.Ok e
    | Failure(_, err, _) ->
        let p, m = describe text err.Position err.Messages
        Result.Error { Pos = p; Message = m }
