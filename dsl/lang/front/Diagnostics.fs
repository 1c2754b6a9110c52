/// Formatting of located diagnostics: `FILE:LINE:COL: error: MESSAGE`, the source line and a caret.
module Sde.Lang.Diagnostics

open System
open Sde.Lang.Syntax

/// The edit distance of a and b if it is at most `limit`, else None: insertions, deletions,
/// substitutions and transpositions of neighbours ('modle' is one edit from 'model'; the optimal string
/// alignment distance). Only the band of cells within `limit` of the diagonal is computed (a cell
/// outside it is above the limit), three rows at a time,
/// stopping as soon as a row is above the limit: O(length × limit) per candidate.
let private editDistanceWithin (limit: int) (a: string) (b: string) : int option =
    if abs (a.Length - b.Length) > limit then
        None
    else
        let over = limit + 1
        let mutable prev = Array.init (b.Length + 1) (fun j -> if j <= limit then j else over)
        let mutable cur = Array.create (b.Length + 1) over
        let mutable prev2 = Array.create (b.Length + 1) over
        let mutable stopped = false
        let mutable i = 1

        while not stopped && i <= a.Length do
            let lo = max 1 (i - limit)
            let hi = min b.Length (i + limit)
            cur[0] <- if i <= limit then i else over
            if lo > 1 then cur[lo - 1] <- over
            let mutable rowMin = cur[0]

            for j in lo..hi do
                let cost = if a[i - 1] = b[j - 1] then 0 else 1
                let v = min (min (prev[j] + 1) (cur[j - 1] + 1)) (prev[j - 1] + cost)
                let v = if i > 1 && j > 1 && a[i - 1] = b[j - 2] && a[i - 2] = b[j - 1] then min v (prev2[j - 2] + 1) else v
                cur[j] <- min v over
                rowMin <- min rowMin cur[j]

            if hi < b.Length then cur[hi + 1] <- over
            stopped <- rowMin > limit
            let t = prev2
            prev2 <- prev
            prev <- cur
            cur <- t
            i <- i + 1

        if stopped || prev[b.Length] > limit then None else Some prev[b.Length]

/// `; did you mean 'x'?` when a candidate is within a third of the name's length in edits, and at
/// most 3 (which bounds the work per candidate for long names). A name of one or two letters is one
/// edit from too many others to guess: only a change of case is suggested for it.
let suggest (name: string) (candidates: string seq) =
    let limit = if name.Length <= 2 then 0 else min 3 (max 1 (name.Length / 3))
    let lower = name.ToLowerInvariant()

    candidates
    |> Seq.filter (fun c -> c <> name)
    |> Seq.choose (fun c -> editDistanceWithin limit lower (c.ToLowerInvariant()) |> Option.map (fun d -> c, d))
    |> Seq.sortBy snd
    |> Seq.tryHead
    |> Option.map (fun (c, _) -> sprintf "; did you mean '%s'?" c)
    |> Option.defaultValue ""

/// Lines longer than this are shown as a window around the column.
let maxShown = 200

/// The source split into lines once per source text (a file with thousands of errors formats each
/// against the same split). CR LF, a lone CR and LF each end a line, as they do for the parser.
let private linesOf =
    let cache = Runtime.CompilerServices.ConditionalWeakTable<string, string[]>()
    fun (source: string) -> cache.GetValue(source, fun s -> s.Split([| "\r\n"; "\r"; "\n" |], StringSplitOptions.None))

let private sourceLine (source: string) (line: int) =
    let lines = linesOf source
    if line >= 1 && line <= lines.Length then Some lines[line - 1] else None

/// Replaces control characters other than tab, so that the terminal shows the line as it is.
let private printable (s: string) =
    String(s |> Seq.map (fun c -> if c <> '\t' && Char.IsControl c then '?' else c) |> Seq.toArray)

/// The diagnostic as the command line prints it, as `severity` ("error" or "warning").
let formatAs (severity: string) (file: string) (source: string) (d: Diagnostic) : string =
    let header = sprintf "%s:%d:%d: %s: %s" file d.Pos.Line d.Pos.Col severity d.Message

    match sourceLine source d.Pos.Line with
    | None -> header
    | Some line ->
        let col = max 1 d.Pos.Col
        let idx = min (col - 1) line.Length

        let shown, caretIdx, pre, post =
            if line.Length <= maxShown then
                line, idx, "", ""
            else
                let start = max 0 (min (idx - maxShown / 2) (line.Length - maxShown))
                let len = min maxShown (line.Length - start)
                line.Substring(start, len), idx - start, (if start > 0 then "..." else ""), (if start + len < line.Length then "..." else "")

        let shownLine = pre + printable shown + post
        // keep tabs so that the caret lines up under the same column
        let padding =
            String(shown.Substring(0, min caretIdx shown.Length) |> Seq.map (fun c -> if c = '\t' then '\t' else ' ') |> Seq.toArray)

        sprintf "%s\n%s\n%s%s^" header shownLine (String(' ', pre.Length)) padding

/// The error as the command line prints it.
let format (file: string) (source: string) (d: Diagnostic) : string = formatAs "error" file source d

/// The warning as the command line prints it.
let formatWarning (file: string) (source: string) (d: Diagnostic) : string = formatAs "warning" file source d

/// `FILE:LINE:COL: warning: MESSAGE` on one line (the JSON's top-level `warnings`).
let warningLine (file: string) (d: Diagnostic) = sprintf "%s:%d:%d: warning: %s" file d.Pos.Line d.Pos.Col d.Message

/// `LINE:COL: MESSAGE` without the file or the source line (for tests and logs).
let short (d: Diagnostic) = sprintf "%d:%d: %s" d.Pos.Line d.Pos.Col d.Message

/// Sorts diagnostics by position and removes exact duplicates.
let sort (ds: Diagnostic list) =
    ds |> List.distinctBy (fun d -> d.Pos.Line, d.Pos.Col, d.Message) |> List.sortBy (fun d -> d.Pos.Line, d.Pos.Col)
