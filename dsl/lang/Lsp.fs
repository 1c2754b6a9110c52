/// `dsl lsp`: a Language Server Protocol server for `.sde` files on a pair of streams (stdio for the
/// command). JSON-RPC 2.0 with LSP's `Content-Length` framing, written here over System.Text.Json
/// (the mirror serves no LSP library): every malformed message gets a JSON-RPC error answer (or is
/// dropped, for a notification) and the server reads on. Features: diagnostics on open and change
/// (errors and warnings, located), hover, completion, go to definition, document symbols and
/// formatting (`Format.format`). Positions: LSP lines and characters are 0-based UTF-16 units, the
/// compiler's 1-based lines and columns count UTF-16 units too.
module Sde.Lang.Lsp

open System
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open Sde.Lang.Syntax

// ---------------------------------------------------------------------------------- framing

/// Largest message body accepted (a model is at most `Limits.sourceChars` characters).
let maxBody = 4 * Limits.sourceChars + 65536

/// One message read from the stream: its body, a framing error (the stream goes on), or the end.
type Incoming =
    | Body of string
    | BadFrame of string
    | Closed

/// Reads one header block and its body. A header block without a valid `Content-Length` is a
/// framing error; the bytes of an over-long body are skipped.
let readMessage (input: Stream) : Incoming =
    // the header: bytes up to an empty line (CR LF CR LF, or LF LF from a careless client)
    let header = Collections.Generic.List<byte>()
    let mutable ended = false
    let mutable closed = false

    while not ended && not closed do
        let b = input.ReadByte()

        if b < 0 then
            closed <- true
        else
            header.Add(byte b)
            let n = header.Count

            if (n >= 4 && header[n - 4] = 13uy && header[n - 3] = 10uy && header[n - 2] = 13uy && header[n - 1] = 10uy)
               || (n >= 2 && header[n - 2] = 10uy && header[n - 1] = 10uy) then
                ended <- true
            elif n > 8192 then
                ended <- true

    if closed && header |> Seq.forall (fun b -> b = 10uy || b = 13uy || b = 32uy) then
        Closed
    elif closed then
        Closed
    else
        let text = Encoding.ASCII.GetString(header.ToArray())

        let length =
            text.Split([| '\r'; '\n' |], StringSplitOptions.RemoveEmptyEntries)
            |> Array.tryPick (fun line ->
                let i = line.IndexOf ':'

                if i > 0 && line.Substring(0, i).Trim().Equals("Content-Length", StringComparison.OrdinalIgnoreCase) then
                    match Int32.TryParse(line.Substring(i + 1).Trim()) with
                    | true, v -> Some v
                    | _ -> Some -1
                else
                    None)

        match length with
        | None -> BadFrame "no Content-Length header"
        | Some v when v < 0 -> BadFrame "Content-Length is not a non-negative integer"
        | Some v ->
            let buffer = Array.zeroCreate<byte> (min v maxBody)
            let mutable got = 0
            let mutable eof = false

            while got < v && not eof do
                let n =
                    if got < buffer.Length then input.Read(buffer, got, buffer.Length - got)
                    else input.Read(Array.zeroCreate<byte> (min 65536 (v - got)), 0, min 65536 (v - got))

                if n = 0 then eof <- true else got <- got + n

            if eof then Closed
            elif v > maxBody then BadFrame(sprintf "message of %d bytes; at most %d" v maxBody)
            else Body(Encoding.UTF8.GetString(buffer, 0, v))

/// JSON as written: `'` and non-ASCII letters (`σ`) as themselves, not escaped.
let private jsonOptions = JsonSerializerOptions(Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping)

/// Writes one message with its `Content-Length` header.
let writeMessage (output: Stream) (node: JsonNode) =
    let body = Encoding.UTF8.GetBytes(node.ToJsonString(jsonOptions))
    let header = Encoding.ASCII.GetBytes(sprintf "Content-Length: %d\r\n\r\n" body.Length)
    lock output (fun () ->
        output.Write(header, 0, header.Length)
        output.Write(body, 0, body.Length)
        output.Flush())

// ---------------------------------------------------------------------------------- JSON helpers

let private obj (pairs: (string * JsonNode) list) : JsonNode =
    let o = JsonObject()
    for k, v in pairs do o[k] <- v
    o :> JsonNode

let private arr (xs: JsonNode seq) : JsonNode = JsonArray(Seq.toArray xs) :> JsonNode
let private str (s: string) : JsonNode = JsonValue.Create s :> JsonNode
let private num (n: int) : JsonNode = JsonValue.Create n :> JsonNode
let private bool (b: bool) : JsonNode = JsonValue.Create b :> JsonNode

let private field (name: string) (n: JsonNode) : JsonNode option =
    match n with
    | :? JsonObject as o ->
        let mutable v: JsonNode = null
        if o.TryGetPropertyValue(name, &v) && not (isNull v) then Some v else None
    | _ -> None

let private path (names: string list) (n: JsonNode) = names |> List.fold (fun acc k -> acc |> Option.bind (field k)) (Some n)

let private asString (n: JsonNode option) =
    match n with
    | Some(:? JsonValue as v) ->
        match v.TryGetValue<string>() with
        | true, s -> Some s
        | _ -> None
    | _ -> None

let private asInt (n: JsonNode option) =
    match n with
    | Some(:? JsonValue as v) ->
        match v.TryGetValue<int>() with
        | true, i -> Some i
        | _ ->
            match v.TryGetValue<double>() with
            | true, d when d = Math.Floor d && abs d < 1e9 -> Some(int d)
            | _ -> None
    | _ -> None

/// A position in a document (0-based line and UTF-16 character).
type Position = { Line: int; Character: int }

let private position (p: Position) = obj [ "line", num p.Line; "character", num p.Character ]
let private range (a: Position) (b: Position) = obj [ "start", position a; "end", position b ]

// ---------------------------------------------------------------------------------- documents

/// The lines of a text (CR LF, CR and LF each end a line, as for the parser).
let lines (text: string) = text.Split([| "\r\n"; "\r"; "\n" |], StringSplitOptions.None)

/// The offset of an LSP position in a text (clamped to the text).
let offsetOf (text: string) (p: Position) =
    let mutable line = 0
    let mutable i = 0

    while line < p.Line && i < text.Length do
        if text[i] = '\n' then line <- line + 1
        elif text[i] = '\r' then
            if i + 1 < text.Length && text[i + 1] = '\n' then i <- i + 1
            line <- line + 1

        i <- i + 1

    let mutable c = 0

    while c < p.Character && i < text.Length && text[i] <> '\n' && text[i] <> '\r' do
        i <- i + 1
        c <- c + 1

    i

let private isIdChar (c: char) = Char.IsLetterOrDigit c || c = '_'

/// The name under (or just before) an LSP position, with its start character.
let wordAt (text: string) (p: Position) : (string * int) option =
    let ls = lines text

    if p.Line < 0 || p.Line >= ls.Length then
        None
    else
        let l = ls[p.Line]
        let c = max 0 (min p.Character l.Length)
        let c = if c < l.Length && isIdChar l[c] then c elif c > 0 && isIdChar l[c - 1] then c - 1 else -1

        if c < 0 then
            None
        else
            let mutable a = c
            while a > 0 && isIdChar l[a - 1] do a <- a - 1
            let mutable b = c
            while b < l.Length && isIdChar l[b] do b <- b + 1
            Some(l.Substring(a, b - a), a)

/// The end of the token at a compiler position (a name, a number, or one character): the range
/// a diagnostic underlines.
let private tokenEnd (ls: string[]) (line: int) (col: int) =
    if line < 1 || line > ls.Length then
        col
    else
        let l = ls[line - 1]
        let i = col - 1

        if i >= l.Length then col
        elif isIdChar l[i] || l[i] = '.' then
            let mutable j = i
            while j < l.Length && (isIdChar l[j] || l[j] = '.') do j <- j + 1
            j + 1
        else
            col + 1

// ---------------------------------------------------------------------------------- analysis

/// What a name is: its kind, the declaration as the printer writes it, where it is declared.
type Symbol =
    { Name: string
      Kind: string
      Detail: string
      Line: int
      Col: int }

/// A document's analysis: its diagnostics and, from its last text that parsed, its declarations
/// and the checked file (when it checks).
type Analysis =
    { Diagnostics: (string * Diagnostic) list
      Parsed: File option
      Checked: Checked.CheckedFile option }

/// The column of `name` on a source line at or after `col` (the name of a query's `let`).
let private nameCol (ls: string[]) (line: int) (col: int) (name: string) =
    if line < 1 || line > ls.Length then
        col
    else
        let l = ls[line - 1]
        let rec find from =
            let i = if from < l.Length then l.IndexOf(name, from, StringComparison.Ordinal) else -1
            if i < 0 then col
            elif (i = 0 || not (isIdChar l[i - 1])) && (i + name.Length >= l.Length || not (isIdChar l[i + name.Length])) then i + 1
            else find (i + 1)
        find (max 0 (col - 1))

/// The declarations of a parsed file (printed on a large stack: a chain of 10,000 terms is a tree
/// 10,000 deep).
let rec symbols (text: string) (f: File) : Symbol list = Frontend.onLargeStack (fun () -> symbolsHere text f)

and private symbolsHere (text: string) (f: File) : Symbol list =
    let ls = lines text
    let sym n k d (p: Pos) = { Name = n; Kind = k; Detail = d; Line = p.Line; Col = p.Col }

    f.Items
    |> List.collect (fun item ->
        match item with
        | ModelBlock m ->
            sym m.Name "model" ("model " + m.Name) { Line = m.Pos.Line; Col = nameCol ls m.Pos.Line m.Pos.Col m.Name }
            :: (m.Items
                |> List.choose (fun i ->
                    let d = Format.modelItem i

                    match i with
                    | ConstDecl(n, _, p) -> Some(sym n "const" d p)
                    | ParamDecl(n, _, _, _, p) -> Some(sym n "param" d p)
                    | StateDecl(n, _, _, p) -> Some(sym n "state" d p)
                    | BrownianDecl(n, _, p) -> Some(sym n "brownian" d p)
                    | LetDecl(n, _, p) -> Some(sym n "let" d p)
                    | WeightDecl(n, p) -> Some(sym n "weight" d p)
                    | _ -> None))
        | ParamsBlock(n, _, p) -> [ sym n "parameter set" ("params " + n) p ]
        | QueryBlock(qs, _) ->
            qs
            |> List.choose (fun q ->
                match q.Kind with
                | Let(n, _) -> Some(sym n "let (query)" (Format.queryKind q.Kind) { Line = q.Pos.Line; Col = nameCol ls q.Pos.Line (q.Pos.Col + 3) n })
                | _ -> None)
        | _ -> [])

/// The declarations of a text that does not parse (and never did): the names after `const`,
/// `param`, `state`, `brownian`, `let` and `weight` at the start of a statement, as written.
let lexicalSymbols (text: string) : Symbol list =
    let re = Text.RegularExpressions.Regex(@"(?m)(^|;|\{)[ \t]*(const|param|state|brownian|let|weight)[ \t]+([\p{L}_][\p{L}\p{Nd}_]*)")
    let ls = lines text

    re.Matches(text)
    |> Seq.truncate 10000
    |> Seq.map (fun m ->
        let g = m.Groups[3]
        let before = text.Substring(0, g.Index)
        let line = before |> Seq.filter (fun c -> c = '\n') |> Seq.length
        let col = g.Index - (before.LastIndexOf '\n' + 1)
        { Name = g.Value
          Kind = m.Groups[2].Value
          Detail = (if line < ls.Length then ls[line].Trim() else g.Value)
          Line = line + 1
          Col = col + 1 })
    |> List.ofSeq

// what the language's own words mean, for hover and completion
let private settingDocs =
    [ "paths", "Number of independent paths (integer ≥ 1; default 1000)."
      "dt", "Time step (> 0; default 0.01)."
      "T", "Final time: a whole number of steps of dt (default 1)."
      "seed", "Random seed (integer ≥ 0; default 1)."
      "scheme", "The time-stepping scheme: euler_maruyama."
      "burnin", "Start of the stationary and Lyapunov averages (0 ≤ burnin < T; default 0)."
      "resample", "Weighted models: systematic, stratified, multinomial, residual, birth_death or none (default systematic)."
      "ess", "Weighted models: resample when ESS/paths falls below it, in (0, 1] (default 0.5)."
      "bandwidth", "Weighted models: the kernel's standard deviation of log_density (default: Silverman's rule)." ]

let private methodDocs =
    [ "divergence_kernel",
      "divergence_kernel(rate = r | alpha = a, mode = exact | iterative | first_order, control = none | pathwise)",
      "The default response method: a forward covector and a weight per path; the observable is never differentiated (if, indicators and densities are fine). Adaptive rate by default."
      "likelihood_ratio", "likelihood_ratio", "The divergence kernel with alpha = 1: each step's kernel is differentiated; variance grows with the number of steps."
      "pathwise", "pathwise", "Transports the tangent: smallest variance on stable systems, explodes in chaotic ones. Means of differentiable observables only."
      "finite_difference", "finite_difference(h = 0.01)", "Runs the model at p + h and p - h with the same random numbers (h > 0, default 0.01); answers every query." ]

let private queryDocs =
    [ "mean", "mean(e) [over [t0, t1]] [every Δ]: the mean of e over paths at T (or averaged over a window, or a time series)."
      "density", "density(e) on [a, b] bins n: a histogram of e at T (density(e1, e2) on [a, b] x [c, d] bins n x m: 2-D)."
      "variance", "variance(e): the unbiased sample variance over paths at T."
      "covariance", "covariance(e1, e2): the unbiased sample covariance at T."
      "quantile", "quantile(e, p) on [a, b] bins n: the p-quantile, read off a histogram."
      "lyapunov", "lyapunov(k): the top k Lyapunov exponents, averaged over [burnin, T]."
      "alignment", "alignment on [a, b] bins n: histogram of |cos| between the top Lyapunov vector and the score estimate."
      "samples", "samples(e1, ..., ek): each path's values at T, written to a CSV file."
      "score", "score(x[i]) on [a, b] bins n: the marginal score ∂ log ρ_T / ∂x_i per bin."
      "log_normalizer", "log_normalizer: the log of the weighted population's normaliser (weighted models)."
      "ess", "ess: the effective sample size of the weighted population (weighted models)." ]

let private functionNames = [ "exp"; "log"; "sqrt"; "sin"; "cos"; "tan"; "tanh"; "abs"; "pow"; "min"; "max"; "sigmoid"; "sum"; "avg"; "normal"; "uniform" ]

let private modelKeywords = [ "const"; "param"; "state"; "brownian"; "init"; "d"; "let"; "weight"; "calculus"; "periodic"; "in"; "if"; "then"; "else"; "and"; "or"; "not"; "inf" ]
let private topKeywords = [ "model"; "params"; "sweep"; "simulate"; "query"; "fit" ]

/// Checks a text: its diagnostics, errors or (for a file that checks) warnings, and the checked file.
let check (text: string) : (string * Diagnostic) list * Checked.CheckedFile option =
    match Frontend.compileText "" text with
    | Ok cf -> cf.Warnings |> Diagnostics.sort |> List.map (fun d -> "warning", d), Some cf
    | Error ds -> ds |> Diagnostics.sort |> List.map (fun d -> "error", d), None

/// The syntax tree of a text for hover, completion and definition: a text that does not parse keeps
/// the tree of the last one that did.
let parse (previous: File option) (text: string) : File option =
    match (try Frontend.onLargeStack (fun () -> Parser.parseFile text) |> Result.toOption with _ -> None) with
    | Some f -> Some f
    | None -> previous

/// Parses and checks a text.
let analyse (previous: Analysis option) (text: string) : Analysis =
    let diagnostics, cf = check text

    { Diagnostics = diagnostics
      Parsed = parse (previous |> Option.bind (fun a -> a.Parsed)) text
      Checked = cf }

/// The LSP diagnostics of an analysis.
let diagnosticsJson (text: string) (a: Analysis) : JsonNode =
    let ls = lines text

    a.Diagnostics
    |> List.map (fun (severity, d) ->
        let line, col = max 1 d.Pos.Line, max 1 d.Pos.Col
        let start = { Line = line - 1; Character = col - 1 }
        let stop = { Line = line - 1; Character = tokenEnd ls line col - 1 }
        obj [ "range", range start stop
              "severity", num (if severity = "error" then 1 else 2)
              "source", str "dsl"
              "message", str d.Message ])
    |> arr

/// The declarations of a document: from its last text that parsed, else as written.
let private symbolsOf (text: string) (a: Analysis) =
    match a.Parsed with
    | Some f -> symbols text f
    | None -> lexicalSymbols text

/// Hover text for the name at a position (markdown), if it names anything.
let hover (text: string) (a: Analysis) (p: Position) : string option =
    match wordAt text p with
    | None -> None
    | Some(word, _) ->
        let syms = symbolsOf text a
        // `dW` is the differential of the brownian `W`
        let find n = syms |> List.tryFind (fun s -> s.Name = n)
        let declared = match find word with Some s -> Some s | None when word.StartsWith "d" && word.Length > 1 -> find (word.Substring 1) |> Option.filter (fun s -> s.Kind = "brownian") | None -> None

        match declared with
        | Some s ->
            let values =
                match s.Kind, a.Checked with
                | "param", Some cf ->
                    let ps = cf.Model.Params |> List.mapi (fun i q -> i, q) |> List.filter (fun (_, q) -> Checked.paramBase q.Name = s.Name)

                    cf.Sets
                    |> List.truncate 4
                    |> List.map (fun set ->
                        let vs = ps |> List.map (fun (i, _) -> Checker.shortNumber set.Values[i]) |> String.concat ", "
                        sprintf "\n\nvalue in set `%s`: %s" set.Name (if ps.Length > 1 then "[" + vs + "]" else vs))
                    |> String.concat ""
                | _ -> ""

            let prefix = if word <> s.Name then sprintf "`%s`: the differential of " word else ""
            Some(sprintf "%s%s `%s` (line %d)\n\n```sde\n%s\n```%s" prefix s.Kind s.Name s.Line s.Detail values)
        | None ->
            match methodDocs |> List.tryFind (fun (n, _, _) -> n = word) with
            | Some(_, signature, doc) -> Some(sprintf "response method\n\n```sde\n%s\n```\n\n%s" signature doc)
            | None ->
                match queryDocs |> List.tryFind (fun (n, _) -> n = word), settingDocs |> List.tryFind (fun (n, _) -> n = word) with
                | Some(_, d), _ -> Some(sprintf "query `%s`\n\n%s" word d)
                | None, Some(_, d) -> Some(sprintf "simulate setting `%s`\n\n%s" word d)
                | None, None when List.contains word functionNames -> Some(sprintf "built-in function `%s`" word)
                | None, None when word = "t" -> Some "`t`: the time"
                | None, None when word = "dt" -> Some "`dt`: the time step's differential"
                | None, None -> None

/// The declaration of the name at a position: (line, column) 1-based.
let definition (text: string) (a: Analysis) (p: Position) : (int * int * int) option =
    match wordAt text p with
    | Some(word, _) ->
        let syms = symbolsOf text a
        let find n = syms |> List.tryFind (fun s -> s.Name = n && s.Kind <> "model")

        match find word with
        | Some s -> Some(s.Line, s.Col, s.Name.Length)
        | None when word.StartsWith "d" && word.Length > 1 ->
            find (word.Substring 1) |> Option.filter (fun s -> s.Kind = "brownian") |> Option.map (fun s -> s.Line, s.Col, s.Name.Length)
        | None -> None
    | _ -> None

/// The top-level block around an offset (`model`, `simulate`, ...), by the braces before it.
let private blockAt (text: string) (offset: int) : string option =
    let before = text.Substring(0, min offset text.Length)
    let opened = before.LastIndexOf '{'
    let closed = before.LastIndexOf '}'

    if opened < 0 || closed > opened then
        None
    else
        let head = before.Substring(0, opened)
        let start = max 0 (head.LastIndexOfAny([| '\n'; '}' |]) + 1)
        let words = head.Substring(start).Trim().Split([| ' '; '\t' |], StringSplitOptions.RemoveEmptyEntries)
        words |> Array.tryHead

/// Completion items (label, LSP kind, detail) for a position.
let completion (text: string) (a: Analysis) (p: Position) : (string * int * string) list =
    let offset = offsetOf text p
    let lineStart = max 0 (text.LastIndexOf('\n', max 0 (offset - 1)) + 1)
    let lineText = text.Substring(lineStart, max 0 (offset - lineStart))
    let syms = symbolsOf text a
    // LSP kinds: 3 function, 6 variable, 10 property, 14 keyword, 21 constant, 2 method
    let kindOf (s: Symbol) =
        match s.Kind with
        | "const" -> 21
        | "param" -> 21
        | "parameter set" -> 7
        | "model" -> 7
        | _ -> 6

    let names = syms |> List.filter (fun s -> s.Kind <> "model" && s.Kind <> "parameter set") |> List.map (fun s -> s.Name, kindOf s, s.Detail)
    let differentials = syms |> List.filter (fun s -> s.Kind = "brownian") |> List.map (fun s -> "d" + s.Name, 6, "differential of brownian " + s.Name)
    let functions = functionNames |> List.map (fun f -> f, 3, "built-in function")
    let methods = methodDocs |> List.map (fun (n, signature, _) -> n, 2, signature)

    if Text.RegularExpressions.Regex.IsMatch(lineText, @"\bwith\s+\w*$") then
        methods
    else
        match blockAt text offset with
        | Some "simulate" -> settingDocs |> List.map (fun (k, d) -> k, 10, d)
        | Some "query" ->
            (queryDocs |> List.map (fun (k, d) -> k, 14, d)) @ [ "d", 14, "d mean(e) / d p: a linear response"; "let", 14, "let name = e"; "over", 14, "over [t0, t1]"; "with", 14, "with METHOD" ] @ names @ functions @ [ "t", 6, "the time" ]
        | Some "model" ->
            (modelKeywords |> List.map (fun k -> k, 14, "keyword")) @ names @ differentials @ functions @ [ "t", 6, "the time"; "dt", 6, "the time step's differential" ]
        | Some "fit" -> FitCheck.keys |> List.map (fun k -> k, 10, "fit setting")
        | Some "params" -> syms |> List.filter (fun s -> s.Kind = "param") |> List.map (fun s -> s.Name, 21, s.Detail)
        | _ -> topKeywords |> List.map (fun k -> k, 14, "top-level item")

/// Document symbols: each top-level item, a model's declarations as its children.
let documentSymbols (text: string) (a: Analysis) : JsonNode =
    let _, closes = Format.scan text
    let ls = lines text
    let lineEnd l = if l >= 1 && l <= ls.Length then ls[l - 1].Length else 0
    let at (l: int) (c: int) = { Line = max 0 (l - 1); Character = max 0 (c - 1) }

    let symbol (name: string) (kind: int) (detail: string) (l: int) (c: int) (stop: int) (children: JsonNode list) =
        let name = if String.IsNullOrEmpty name then "?" else name
        obj [ "name", str name
              "detail", str detail
              "kind", num kind
              "range", range (at l 1) { Line = max 0 (stop - 1); Character = lineEnd stop }
              "selectionRange", range (at l c) (at l (c + name.Length))
              "children", arr children ]

    match a.Parsed with
    | None -> arr []
    | Some f ->
        let syms = symbols text f
        let closing l = closes |> List.tryFind (fun c -> c >= l) |> Option.defaultValue l
        // kinds: 2 module, 13 variable, 14 constant, 5 class, 8 field, 12 function
        let kindOf k =
            match k with
            | "const" | "param" -> 14
            | "state" | "brownian" | "weight" -> 13
            | _ -> 12

        f.Items
        |> List.map (fun item ->
            let l = Format.topLine item

            match item with
            | ModelBlock m ->
                let children =
                    syms
                    |> List.filter (fun s -> s.Kind <> "model" && s.Kind <> "parameter set" && s.Kind <> "let (query)" && s.Line >= l && s.Line <= closing l)
                    |> List.map (fun s -> symbol s.Name (kindOf s.Kind) s.Kind s.Line s.Col s.Line [])

                symbol m.Name 2 "model" l 1 (closing l) children
            | ParamsBlock(n, _, p) -> symbol n 5 "params" l p.Col (closing l) []
            | SweepDecl(n, _, _, _, p) -> symbol n 8 "sweep" l p.Col l []
            | SimulateBlock _ -> symbol "simulate" 5 "settings" l 1 (closing l) []
            | QueryBlock(qs, _) ->
                let children = qs |> List.map (fun q -> symbol q.Text.Value 12 "query" q.Pos.Line q.Pos.Col q.Pos.Line [])
                symbol "query" 5 "queries" l 1 (closing l) children
            | FitBlock(ps, _, _, _, _) -> symbol ("fit " + (ps |> List.map fst |> String.concat ", ")) 5 "fit" l 1 (closing l) [])
        |> arr

// ---------------------------------------------------------------------------------- the server

/// A JSON-RPC error code and message.
exception RpcError of code: int * message: string

let private invalidParams m = RpcError(-32602, m)

/// The server's state between messages: the open documents and their analyses.
type State =
    { Documents: Map<string, string * Analysis>
      Initialized: bool
      ShutDown: bool }

let private uriOf (pars: JsonNode) =
    match path [ "textDocument"; "uri" ] pars |> asString with
    | Some u -> u
    | None -> raise (invalidParams "textDocument.uri is missing")

let private positionOf (pars: JsonNode) =
    match path [ "position"; "line" ] pars |> asInt, path [ "position"; "character" ] pars |> asInt with
    | Some l, Some c -> { Line = l; Character = c }
    | _ -> raise (invalidParams "position.line and position.character are required")

/// Applies one `contentChanges` entry: a whole text, or a range and its replacement.
let applyChange (text: string) (change: JsonNode) =
    match field "text" change |> asString, field "range" change with
    | None, _ -> raise (invalidParams "a content change has no text")
    | Some t, None -> t
    | Some t, Some r ->
        let pos k =
            match path [ k; "line" ] r |> asInt, path [ k; "character" ] r |> asInt with
            | Some l, Some c -> { Line = l; Character = c }
            | _ -> raise (invalidParams "a change's range is malformed")

        let a, b = offsetOf text (pos "start"), offsetOf text (pos "end")
        let a, b = min a b, max a b
        text.Substring(0, a) + t + text.Substring(b)

/// The result of one request (or None for a notification) and the next state. `publish` sends a
/// notification (the diagnostics).
let handle (publish: JsonNode -> unit) (state: State) (methodName: string) (pars: JsonNode) : JsonNode * State =
    let docText uri =
        match state.Documents.TryFind uri with
        | Some(t, a) -> t, a
        | None -> raise (RpcError(-32602, sprintf "document not open: %s" uri))

    // the diagnostics go out as soon as the text is checked; the tree for hover and completion after
    let update uri text =
        let previous = state.Documents.TryFind uri |> Option.bind (fun (_, a) -> a.Parsed)
        let diagnostics, cf = check text
        let a = { Diagnostics = diagnostics; Parsed = None; Checked = cf }
        publish (obj [ "jsonrpc", str "2.0"; "method", str "textDocument/publishDiagnostics"; "params", obj [ "uri", str uri; "diagnostics", diagnosticsJson text a ] ])
        { state with Documents = state.Documents.Add(uri, (text, { a with Parsed = parse previous text })) }

    match methodName with
    | "initialize" ->
        let caps =
            obj [ "textDocumentSync", obj [ "openClose", bool true; "change", num 1 ]
                  "hoverProvider", bool true
                  "completionProvider", obj [ "triggerCharacters", arr [ str " "; str "(" ] ]
                  "definitionProvider", bool true
                  "documentSymbolProvider", bool true
                  "documentFormattingProvider", bool true ]

        obj [ "capabilities", caps; "serverInfo", obj [ "name", str "dsl"; "version", str "0.1.0" ] ], { state with Initialized = true }
    | "shutdown" -> null, { state with ShutDown = true }
    | "textDocument/didOpen" ->
        let uri = uriOf pars
        let text = path [ "textDocument"; "text" ] pars |> asString |> Option.defaultValue ""
        null, update uri text
    | "textDocument/didChange" ->
        let uri = uriOf pars
        let text, _ = docText uri

        let changes =
            match field "contentChanges" pars with
            | Some(:? JsonArray as xs) -> xs |> Seq.toList
            | _ -> raise (invalidParams "contentChanges is missing")

        null, update uri (changes |> List.fold applyChange text)
    | "textDocument/didClose" ->
        let uri = uriOf pars
        publish (obj [ "jsonrpc", str "2.0"; "method", str "textDocument/publishDiagnostics"; "params", obj [ "uri", str uri; "diagnostics", arr [] ] ])
        null, { state with Documents = state.Documents.Remove uri }
    | "textDocument/didSave" -> null, state
    | "textDocument/hover" ->
        let text, a = docText (uriOf pars)

        match hover text a (positionOf pars) with
        | Some md -> obj [ "contents", obj [ "kind", str "markdown"; "value", str md ] ], state
        | None -> null, state
    | "textDocument/completion" ->
        let text, a = docText (uriOf pars)
        let items = completion text a (positionOf pars) |> List.distinctBy (fun (l, _, _) -> l)
        obj [ "isIncomplete", bool false
              "items", items |> List.map (fun (label, kind, detail) -> obj [ "label", str label; "kind", num kind; "detail", str detail ]) |> arr ],
        state
    | "textDocument/definition" ->
        let uri = uriOf pars
        let text, a = docText uri

        match definition text a (positionOf pars) with
        | Some(l, c, n) ->
            let s = { Line = l - 1; Character = c - 1 }
            obj [ "uri", str uri; "range", range s { s with Character = s.Character + n } ], state
        | None -> null, state
    | "textDocument/documentSymbol" ->
        let text, a = docText (uriOf pars)
        documentSymbols text a, state
    | "textDocument/formatting" ->
        let text, _ = docText (uriOf pars)

        match Format.format text with
        | Error d -> raise (RpcError(-32803, sprintf "cannot format: %d:%d: %s" d.Pos.Line d.Pos.Col d.Message))
        | Ok formatted when formatted = text -> arr [], state
        | Ok formatted ->
            let ls = lines text
            let stop = { Line = ls.Length - 1; Character = ls[ls.Length - 1].Length }
            arr [ obj [ "range", range { Line = 0; Character = 0 } stop; "newText", str formatted ] ], state
    | m when m.StartsWith "$/" -> null, state
    | "initialized"
    | "workspace/didChangeConfiguration" -> null, state
    | m -> raise (RpcError(-32601, sprintf "method not found: %s" m))

let private errorJson (id: JsonNode) (code: int) (message: string) =
    obj [ "jsonrpc", str "2.0"; "id", (if isNull id then null else id.DeepClone()); "error", obj [ "code", num code; "message", str message ] ]

/// One message's answer (None for a notification) and the next state; never throws.
let step (publish: JsonNode -> unit) (state: State) (body: string) : JsonNode option * State =
    let parsed =
        try
            Ok(JsonNode.Parse body)
        with ex ->
            Error ex.Message

    match parsed with
    | Error m -> Some(errorJson null -32700 ("parse error: " + m)), state
    | Ok node ->
        let id = field "id" node
        let methodName = field "method" node |> asString
        let isRequest = id.IsSome

        match node, methodName with
        | :? JsonObject, None when isRequest && (field "result" node).IsNone && (field "error" node).IsNone ->
            Some(errorJson id.Value -32600 "invalid request: no method"), state
        | :? JsonObject, None -> None, state // a response to a request of ours (none are sent), or junk without an id
        | :? JsonObject, Some m ->
            let pars = field "params" node |> Option.defaultValue (JsonObject() :> JsonNode)
            let answer result = if isRequest then Some(obj [ "jsonrpc", str "2.0"; "id", id.Value.DeepClone(); "result", result ]) else None

            try
                if not state.Initialized && m <> "initialize" && isRequest then
                    Some(errorJson id.Value -32002 "server not initialized"), state
                elif state.ShutDown && m <> "exit" && isRequest then
                    Some(errorJson id.Value -32600 "the server is shut down"), state
                else
                    let result, next = handle publish state m pars
                    answer result, next
            with
            | RpcError(code, message) -> (if isRequest then Some(errorJson id.Value code message) else None), state
            | ex -> (if isRequest then Some(errorJson id.Value -32603 ("internal error: " + ex.Message)) else None), state
        | _ -> Some(errorJson (id |> Option.toObj) -32600 "invalid request: not a JSON object"), state

/// Serves one client until `exit` or the end of the input; the exit code (0 after `shutdown`).
let serve (input: Stream) (output: Stream) : int =
    let send node = writeMessage output node

    let rec loop (state: State) =
        match readMessage input with
        | Closed -> if state.ShutDown then 0 else 1
        | BadFrame m ->
            send (errorJson null -32700 ("bad message frame: " + m))
            loop state
        | Body body ->
            let isExit =
                try
                    (JsonNode.Parse body |> field "method" |> asString) = Some "exit"
                with _ ->
                    false

            if isExit then
                if state.ShutDown then 0 else 1
            else
                let answer, next = step send state body
                answer |> Option.iter send
                loop next

    loop { Documents = Map.empty; Initialized = false; ShutDown = false }
