/// Formatting of located diagnostics: `FILE:LINE:COL: error: MESSAGE`, the source line and a caret.
module Sde.Lang.Diagnostics

open System
open Sde.Lang.Syntax

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
