/// The fuzz harness (issue 10): inputs from three strategies — generated well-formed models (ParserTests'
/// AST generators, printed with the printer), token-level and byte-level mutations of examples/*.sde — each
/// compiled in-process (`SdeCompiler.Compile`, no simulation) under a time and a memory budget. A failure is
/// an exception escaping Compile, a diagnostic that is not located (Line < 1, Col < 1) or whose message is
/// empty or says "internal", or an input over budget. A failing input is minimised (lines, then tokens,
/// then characters) and written to tests/fuzz/corpus/<hash>.sde; the corpus test compiles every file there
/// (tests/fuzz/corpus/known/ holds findings not fixed yet: reported, not asserted).
///
/// CI: the "Fuzz" test runs FUZZ_SECONDS (default 60) split over the strategies, seed FUZZ_SEED (default 1).
/// For hours: `FUZZ_SECONDS=3600 FUZZ_SEED=$RANDOM dotnet run --project tests -c Release -- --filter Fuzz`.
module Sde.Tests.Fuzz

open System
open System.IO
open System.Text
open System.Text.RegularExpressions
open System.Threading.Tasks
open Expecto
open FsCheck
open FsCheck.FSharp
open Sde

let timeBudget = TimeSpan.FromSeconds 2.0
let memoryBudget = 500L * 1024L * 1024L

let corpusDir = Path.Combine(CliTests.repoRoot, "tests", "fuzz", "corpus")

/// What went wrong with one input: a kind (kept while minimising) and a description.
type Failure = { Kind: string; Detail: string }

let private badDiagnostic (d: SourceDiagnostic) =
    d.Line < 1 || d.Col < 1 || String.IsNullOrWhiteSpace d.Message
    || d.Message.Contains("internal", StringComparison.OrdinalIgnoreCase)

/// Compile one input under the budgets; None when the compiler behaved.
let check (text: string) : Failure option =
    let before = GC.GetTotalAllocatedBytes false

    let work =
        Task.Run(fun () ->
            try
                match SdeCompiler.Compile(text, "fuzz.sde") with
                | Ok p ->
                    match p.Warnings |> List.tryFind badDiagnostic with
                    | Some d -> Some { Kind = "unlocated warning"; Detail = sprintf "%A" d }
                    | None -> None
                | Error ds ->
                    match ds |> List.tryFind badDiagnostic with
                    | Some d -> Some { Kind = "unlocated error"; Detail = sprintf "%A" d }
                    | None when List.isEmpty ds -> Some { Kind = "no diagnostics"; Detail = "Error []" }
                    | None -> None
            with ex ->
                Some { Kind = "exception " + ex.GetType().Name; Detail = ex.ToString() })

    if not (work.Wait timeBudget) then
        // the compile keeps running on its thread (a thread cannot be aborted); the input is reported
        Some { Kind = "over time"; Detail = sprintf "no result within %.1f s" timeBudget.TotalSeconds }
    else
        let allocated = GC.GetTotalAllocatedBytes false - before

        match work.Result with
        | Some f -> Some f
        | None when allocated > memoryBudget ->
            Some { Kind = "over memory"; Detail = sprintf "%d MB allocated" (allocated / 1024L / 1024L) }
        | None -> None

// ------------------------------------------------------------------ strategies

let private tokenRx =
    Regex(@"\s+|//[^\n]*|[\p{L}_][\p{L}\p{N}_]*|\d+(\.\d*)?([eE][+-]?\d+)?|[<>=!]=|&&|\|\||.", RegexOptions.Compiled)

let tokens (s: string) = [| for m in tokenRx.Matches s -> m.Value |]

let vocabulary =
    [| // keywords and names of the language
       "model"; "const"; "param"; "state"; "brownian"; "let"; "init"; "d"; "dt"; "periodic"; "in"; "params"; "sweep"
       "simulate"; "query"; "mean"; "density"; "variance"; "covariance"; "quantile"; "on"; "bins"; "over"; "window"
       "stationary"; "with"; "lyapunov"; "alignment"; "normal"; "uniform"; "sum"; "avg"; "if"; "then"; "else"; "exp"
       "max"; "min"; "sqrt"; "log"; "sin"; "paths"; "T"; "seed"; "burnin"; "x"; "i"; "N"; "F"; "sigma"; "dW"; "W"
       "calculus"; "stratonovich"; "ito"; "weight"
       // operators and punctuation
       "+"; "-"; "*"; "/"; "^"; "("; ")"; "["; "]"; "{"; "}"; ","; ";"; "="; "=="; "!="; "<"; "<="; ">"; ">="
       "&&"; "||"; "!"; "~"; ":"; "."; "|"; "'"; "\""; "#"; "\n"; " "
       // numbers: huge, tiny, NaN-like, odd forms
       "0"; "1"; "-1"; "1e308"; "1e309"; "-1e309"; "1e-320"; "5e-324"; "4.9e-324"; "inf"; "-inf"; "nan"; "NaN"
       "Infinity"; "0.0"; "1e"; "1e+"; ".5"; "5."; "2147483647"; "2147483648"; "99999999999999999999"; "1000000"
       "1e9"; "-0"; "0x10"; "1_000"
       // identifiers: long, Unicode
       String('a', 5000); "σ"; "θ_2"; "x̄"; "𝑥"; "名前"; "_"; "__"; "a1"; "\u200B"; "é" |]

let private examples =
    lazy (CliTests.examples () |> Array.map File.ReadAllText)

let private mutateTokens (rnd: Random) (text: string) =
    let ts = ResizeArray(tokens text)
    let n = 1 + rnd.Next 4

    for _ in 1..n do
        if ts.Count > 0 then
            let i = rnd.Next ts.Count

            match rnd.Next 5 with
            | 0 -> ts.RemoveAt i
            | 1 -> ts.Insert(i, ts[i])
            | 4 ->
                // a run of one token or a short span repeated: nesting and length limits
                let span = ts.GetRange(i, min (1 + rnd.Next 3) (ts.Count - i)) |> List.ofSeq
                let k = [| 10; 100; 1000; 5000 |][rnd.Next 4]
                ts.InsertRange(i, List.replicate k span |> List.concat)
            | 2 ->
                let j = rnd.Next ts.Count
                let t = ts[i]
                ts[i] <- ts[j]
                ts[j] <- t
            | _ -> ts[i] <- vocabulary[rnd.Next vocabulary.Length]

    String.Concat ts

let private mutateBytes (rnd: Random) (text: string) =
    let bs = ResizeArray(Encoding.UTF8.GetBytes text)
    let special = [| 0uy; 10uy; 13uy; 0xFFuy; 0xC3uy; 0x80uy; 0xEDuy; 0xA0uy; 0xF0uy; 0x09uy; 0x22uy; 0x7Buy |]
    let n = 1 + rnd.Next 4

    for _ in 1..n do
        if bs.Count > 0 then
            let i = rnd.Next bs.Count

            match rnd.Next 4 with
            | 0 -> bs[i] <- bs[i] ^^^ (1uy <<< rnd.Next 8)
            | 1 -> bs.Insert(i, special[rnd.Next special.Length])
            | 2 -> bs.RemoveAt i
            | _ -> bs[i] <- byte (rnd.Next 256)

    // decoded as a file would be (invalid sequences become U+FFFD), plus the raw NULs and CRs kept
    Encoding.UTF8.GetString(bs.ToArray())

type Strategy =
    { Name: string
      Next: Random -> string }

let strategies (seed: int) =
    let genRnd = ref (Rnd(uint64 seed))

    [ { Name = "generated"
        Next =
          fun rnd ->
              let size = 1 + rnd.Next 20
              let sample = Gen.sampleWithSeed genRnd.Value size 1 ParserTests.genFile
              genRnd.Value <- Rnd(uint64 (rnd.NextInt64()))
              Sde.Lang.Printer.printFile sample[0] }
      { Name = "tokens"
        Next = fun rnd -> mutateTokens rnd examples.Value[rnd.Next examples.Value.Length] }
      { Name = "bytes"
        Next = fun rnd -> mutateBytes rnd examples.Value[rnd.Next examples.Value.Length] } ]

// ------------------------------------------------------------------ minimisation

/// Shrink while the failure (its kind) persists: delete line chunks, then tokens, then characters;
/// bounded in time (an over-time input costs the budget per try).
let minimise (text: string) (kind: string) =
    let deadline = DateTime.UtcNow + TimeSpan.FromSeconds 30.0
    let fails (s: string) = DateTime.UtcNow < deadline && (match check s with Some f -> f.Kind = kind | None -> false)

    let shrink (split: string -> string[]) (join: string[] -> string) (current: string) =
        let mutable parts = split current
        let mutable chunk = max 1 (parts.Length / 2)

        while chunk >= 1 && DateTime.UtcNow < deadline do
            let mutable i = 0
            let mutable progressed = false

            while i < parts.Length && DateTime.UtcNow < deadline do
                let candidate = Array.append parts[.. i - 1] parts[i + chunk ..]

                if candidate.Length < parts.Length && fails (join candidate) then
                    parts <- candidate
                    progressed <- true
                else
                    i <- i + chunk

            if not progressed then chunk <- chunk / 2

        join parts

    text
    |> shrink (fun s -> Regex.Split(s, @"(?<=\n)") |> Array.filter (fun l -> l <> "")) String.Concat
    |> shrink tokens String.Concat
    |> shrink (fun s -> [| for c in s -> string c |]) String.Concat

let hashOf (s: string) =
    let h = Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes s)
    Convert.ToHexString(h).Substring(0, 16).ToLowerInvariant()

// ------------------------------------------------------------------ the run

type Finding =
    { Strategy: string
      Failure: Failure
      Minimised: string
      File: string }

type RunStats =
    { Tried: (string * int) list
      Seconds: float
      Findings: Finding list }

let run (seconds: float) (seed: int) (log: string -> unit) =
    let rnd = Random seed
    let findings = ResizeArray<Finding>()
    let seen = Collections.Generic.HashSet<string>()
    let sw = Diagnostics.Stopwatch.StartNew()

    let tried =
        strategies seed
        |> List.map (fun s ->
            let share = seconds / 3.0
            // each strategy its own share, even after a finding's minimisation took time from the previous one
            let until = sw.Elapsed.TotalSeconds + share
            let mutable count = 0

            while sw.Elapsed.TotalSeconds < until do
                let input = s.Next rnd
                count <- count + 1

                match check input with
                | None -> ()
                | Some f ->
                    // one finding per kind and first stack line, so a single bug does not flood the corpus
                    let key = f.Kind + "|" + (f.Detail.Split('\n') |> Array.truncate 2 |> String.concat "")

                    if seen.Add key then
                        let small = minimise input f.Kind
                        let name = hashOf small + ".sde"
                        let path = Path.Combine(corpusDir, name)
                        Directory.CreateDirectory corpusDir |> ignore

                        if not (File.Exists path || File.Exists(Path.Combine(corpusDir, "known", name))) then
                            File.WriteAllText(path, small)

                        log (sprintf "fuzz: %s finding (%s) -> %s\n%s\n--- minimised:\n%s" s.Name f.Kind path f.Detail small)
                        findings.Add { Strategy = s.Name; Failure = f; Minimised = small; File = path }

            s.Name, count)

    { Tried = tried; Seconds = sw.Elapsed.TotalSeconds; Findings = List.ofSeq findings }

let private envInt (name: string) (d: int) =
    match Environment.GetEnvironmentVariable name with
    | null | "" -> d
    | v -> int v

let corpusFiles () =
    if Directory.Exists corpusDir then Directory.GetFiles(corpusDir, "*.sde") |> Array.sort else [||]

[<Tests>]
let tests =
    testList
        "Fuzz"
        [ testSequenced
          <| test "Fuzz every corpus file compiles to a result or located diagnostics, within budget" {
              for path in corpusFiles () do
                  match check (File.ReadAllText path) with
                  | None -> ()
                  | Some f -> failtestf "%s: %s\n%s" path f.Kind f.Detail
          }
          testSequenced
          <| test "Fuzz a chain of 5000 factors sigma dW dW ... is checked within the budget (was cubic: seconds)" {
              let src = sprintf "model M {\n  state x\n  brownian W\n  d x = -x dt + sigma %s\n}\n" (String.replicate 5000 "dW ")
              Expect.isNone (check src) "located error within budget"
          }
          testSequenced
          <| test "Fuzz the harness catches what it should: an empty message is a failure, a clean example is not" {
              Expect.isNone (check (File.ReadAllText(CliTests.examples().[0]))) "an example compiles"
              Expect.isNone (check "model {") "a syntax error is located"
              Expect.isTrue (badDiagnostic { File = "f"; Line = 0; Col = 1; Message = "m"; Rendered = ""; Severity = "error" }) "line 0"
              Expect.isTrue (badDiagnostic { File = "f"; Line = 1; Col = 1; Message = " "; Rendered = ""; Severity = "error" }) "empty"
              Expect.isTrue (badDiagnostic { File = "f"; Line = 1; Col = 1; Message = "Internal error"; Rendered = ""; Severity = "error" }) "internal"
              let m = minimise "model M {\n  state x\n}\n" "never"
              Expect.equal m "model M {\n  state x\n}\n" "minimising an input that does not fail keeps it"
          }
          testSequenced
          <| test "Fuzz run (FUZZ_SECONDS, default 60; FUZZ_SEED, default 1)" {
              let seconds = envInt "FUZZ_SECONDS" 60
              let seed = envInt "FUZZ_SEED" 1
              let stats = run (float seconds) seed (eprintfn "%s")
              let total = stats.Tried |> List.sumBy snd

              printfn
                  "fuzz: seed %d, %.0f s, %s; %d inputs, %.0f compiles/s; %d findings"
                  seed
                  stats.Seconds
                  (stats.Tried |> List.map (fun (n, c) -> sprintf "%s %d" n c) |> String.concat ", ")
                  total
                  (float total / stats.Seconds)
                  stats.Findings.Length

              if not stats.Findings.IsEmpty then
                  failtestf
                      "%d findings (minimised into %s):\n%s"
                      stats.Findings.Length
                      corpusDir
                      (stats.Findings
                       |> List.map (fun f -> sprintf "[%s] %s %s\n%s" f.Strategy f.Failure.Kind f.File f.Minimised)
                       |> String.concat "\n\n")
          } ]
