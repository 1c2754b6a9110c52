/// The fuzz harness (issues 10 and 19): inputs from four strategies — generated well-formed models (ParserTests'
/// AST generators, printed with the printer), token-level and byte-level mutations of examples/*.sde, and data
/// files (the fit examples' data files, mutated by lines and bytes, and a shard's partial file mutated with its
/// checksum recomputed) — each compiled or read in-process (`SdeCompiler.Compile`, the fit data readers, the
/// merge's partial-file reader; no simulation) under a time and a memory budget. A failure is an exception
/// escaping, a diagnostic that is not located (Line < 1, Col < 1) or whose message is empty or says "internal"
/// (for a data file: a message that is empty, internal or over 2,000 characters), or an input over budget. A
/// failing input is minimised (lines, then tokens, then characters) and written to
/// tests/fuzz/corpus/<hash>.sde; the corpus test checks every file there (tests/fuzz/corpus/known/ holds
/// findings not fixed yet: reported, not asserted).
///
/// The "Fuzz run" test runs FUZZ_SECONDS (default 4, so the suite stays under 5 minutes; CI runs it again for
/// 60 s) split over the strategies, seed FUZZ_SEED (default 1).
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

/// Runs `f` under the budgets; None when it behaved (f's own verdict otherwise, or over time / memory).
let budgeted (f: unit -> Failure option) : Failure option =
    let before = GC.GetTotalAllocatedBytes false

    let work =
        Task.Run(fun () ->
            try
                f ()
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

/// Compile one input under the budgets; None when the compiler behaved.
let check (text: string) : Failure option =
    budgeted (fun () ->
        match SdeCompiler.Compile(text, "fuzz.sde") with
        | Ok p ->
            match p.Warnings |> List.tryFind badDiagnostic with
            | Some d -> Some { Kind = "unlocated warning"; Detail = sprintf "%A" d }
            | None -> None
        | Error ds ->
            match ds |> List.tryFind badDiagnostic with
            | Some d -> Some { Kind = "unlocated error"; Detail = sprintf "%A" d }
            | None when List.isEmpty ds -> Some { Kind = "no diagnostics"; Detail = "Error []" }
            | None -> None)

/// Longest message a data file may cause: a message that quotes the input quotes a bounded piece of it.
let maxMessage = 2000

/// A message about a data file: not empty, not internal, bounded.
let private badMessage (m: string) =
    if String.IsNullOrWhiteSpace m then Some { Kind = "empty message"; Detail = "" }
    elif m.Contains("internal", StringComparison.OrdinalIgnoreCase) then Some { Kind = "internal message"; Detail = m }
    elif m.Length > maxMessage then Some { Kind = "long message"; Detail = sprintf "%d characters: %s..." m.Length (m.Substring(0, 200)) }
    else None

// ------------------------------------------------------------------ strategies

let private tokenRx =
    Regex(@"\s+|//[^\n]*|[\p{L}_][\p{L}\p{N}_]*|\d+(\.\d*)?([eE][+-]?\d+)?|[<>=!]=|&&|\|\||.", RegexOptions.Compiled)

let tokens (s: string) = [| for m in tokenRx.Matches s -> m.Value |]

let vocabulary =
    [| // keywords and names of the language
       "model"; "const"; "param"; "state"; "brownian"; "let"; "init"; "d"; "dt"; "periodic"; "in"; "params"; "sweep"
       "simulate"; "query"; "mean"; "density"; "variance"; "covariance"; "quantile"; "on"; "bins"; "over"; "window"
       // fits, weights, samples and their settings
       "fit"; "to"; "objective"; "kl"; "at"; "optimizer"; "adam"; "lbfgs"; "lr"; "iterations"; "tolerance"; "bandwidth"
       "rate"; "law"; "joint"; "marginals"; "times"; "jacobian_matching"; "lambda"; "\"data.csv\""; "\"\""; "\"/dev/zero\""
       "weight"; "ess"; "log_normalizer"; "samples"; "every"; "log_density"; "score"; "divergence_kernel"; "pathwise"
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

// ------------------------------------------------------------------ data files

/// The fit examples' data files with the model each belongs to (the .sde whose fit block names it).
let private fitData =
    lazy
        [| for sde in CliTests.examples () do
               let text = File.ReadAllText sde
               let m = Regex.Match(text, "fit [^\n]* to \"([^\"]+)\"")

               if m.Success then
                   match SdeCompiler.Compile(text, Path.GetFileName sde) with
                   | Ok p when p.FitSpec.IsSome ->
                       yield p.Program.File.Model, File.ReadAllText(Path.Combine(Path.GetDirectoryName sde, m.Groups[1].Value))
                   | _ -> () |]

/// A data file's text mutated by lines (dropped, repeated, a cell made huge or odd, line ends changed) and bytes.
let mutateData (rnd: Random) (text: string) =
    let lines = ResizeArray(text.Split('\n') |> Array.truncate 60)
    let odd = [| ""; "nan"; "1e308"; "-1e309"; "1e101"; "0x1"; "\"1\""; "∞"; "1,2"; String('9', 400); "t"; "path"; "x[0]"; "dx/dy"; "#" |]

    for _ in 1 .. 1 + rnd.Next 4 do
        if lines.Count > 0 then
            let i = rnd.Next lines.Count

            match rnd.Next 6 with
            | 0 -> lines.RemoveAt i
            | 1 -> lines.InsertRange(i, List.replicate (1 + rnd.Next 50) lines[i])
            | 2 ->
                let cells = lines[i].Split(',')
                cells[rnd.Next cells.Length] <- odd[rnd.Next odd.Length]
                lines[i] <- String.Join(",", cells)
            | 3 -> lines[i] <- lines[i] + String.replicate (1 + rnd.Next 3) ","
            | 4 -> lines[i] <- String('x', [| 41; 5000; 200000 |][rnd.Next 3])
            | _ -> lines[i] <- lines[i].Replace("0", odd[rnd.Next odd.Length])

    let sep = [| "\n"; "\r\n"; "\r"; "\n\n" |][rnd.Next 4]
    let joined = String.Join(sep, lines)
    if rnd.Next 3 = 0 then mutateBytes rnd joined else joined

/// A fit data file against the model it belongs to: read as kl data, as Jacobian-matching data and as a
/// trajectory file; each an Ok or a message that is bounded, within the budgets.
let checkData (m: Sde.Lang.Checked.CheckedModel) (text: string) : Failure option =
    budgeted (fun () ->
        let messages =
            [ match Sde.Lang.Fit.parseData "fuzz.csv" m text with Error e -> e | Ok _ -> ()
              match Sde.Lang.Fit.parseDataWith (Sde.Lang.Fit.fieldColumns m) "fuzz.csv" text with Error e -> e | Ok _ -> ()
              match Sde.Lang.Fit.trajectoryData m "fuzz.csv" text with Some(Error e) -> e | _ -> () ]

        messages |> List.tryPick badMessage)

/// A run with a density, a mean and a response, written as one shard's partial file: the file the partial
/// strategy mutates (its body, with the checksum recomputed, so that the reader gets past it).
let private partialFile =
    lazy
        (let source =
            "model OU {\n  param theta = 1 in (0, inf)\n  state x\n  brownian W\n  init x ~ normal(0, 1)\n  d x = -theta * x dt + 0.5 dW\n}\n"
            + "simulate { paths = 40; dt = 0.1; T = 0.2; seed = 3 }\nquery {\n  mean(x)\n  density(x) on [-2, 2] bins 4\n  d mean(x) / d theta\n}\n"
         let p = match SdeCompiler.Compile(source, "fuzz.sde") with Ok p -> p | Error ds -> failwithf "%A" ds
         let dir = Path.Combine(Path.GetTempPath(), "sde-fuzz-partial-" + string (Diagnostics.Process.GetCurrentProcess().Id))
         Directory.CreateDirectory dir |> ignore
         let spec = { Sde.Lang.Shards.K = 0; Sde.Lang.Shards.N = 2 }
         let h = Sde.Lang.Shards.headerOf p.Program "fuzz.sde" source Sde.Lang.Frontend.noOverrides spec
         Sde.Lang.Shards.runShard p.Program h { Sde.Lang.Driver.defaultOptions with Threads = 1 } dir true |> ignore
         let bytes = File.ReadAllBytes(Path.Combine(dir, Sde.Lang.Shards.fileName spec))
         Directory.Delete(dir, true)
         bytes)

/// A partial file's body mutated by bytes (flips, inserted and deleted bytes, a 32-bit count made huge or
/// negative), the checksum recomputed; Base64 so that it travels as the strategies' text.
let mutatePartial (rnd: Random) =
    let b = partialFile.Value
    let magicLength = 8
    let body = ResizeArray(b[magicLength .. b.Length - 33])

    for _ in 1 .. 1 + rnd.Next 3 do
        if body.Count > 4 then
            let i = rnd.Next(body.Count - 4)

            match rnd.Next 4 with
            | 0 -> body[i] <- body[i] ^^^ (1uy <<< rnd.Next 8)
            | 1 -> body.RemoveRange(i, 1 + rnd.Next(min 16 (body.Count - i)))
            | 2 -> body.InsertRange(i, Array.init (1 + rnd.Next 8) (fun _ -> byte (rnd.Next 256)))
            | _ ->
                let v = [| Int32.MaxValue; -1; Int32.MinValue; 1 <<< 24; 0 |][rnd.Next 5]
                let bs = BitConverter.GetBytes v
                for k in 0..3 do body[i + k] <- bs[k]

    let whole = Array.append b[.. magicLength - 1] (body.ToArray())
    Convert.ToBase64String(Array.append whole (Security.Cryptography.SHA256.HashData whole))

/// A mutated partial file (Base64) through the merge's reader: read, its source compiled, its sums read; each
/// an Ok or a message that is bounded, within the budgets.
let checkPartial (encoded: string) : Failure option =
    let bytes = try Some(Convert.FromBase64String encoded) with _ -> None

    match bytes with
    | None -> None // (minimising cuts the text: not a partial file any more)
    | Some bytes ->
        let path = Path.Combine(Path.GetTempPath(), sprintf "sde-fuzz-%d-%d.partial" (Diagnostics.Process.GetCurrentProcess().Id) Environment.CurrentManagedThreadId)
        File.WriteAllBytes(path, bytes)

        try
            budgeted (fun () ->
                match Sde.Lang.Shards.readPartial path with
                | Error e -> badMessage e
                | Ok f ->
                    match Sde.Lang.Shards.compileHeader f.Header with
                    | Error e -> badMessage e
                    | Ok p ->
                        match Sde.Lang.Shards.readSums p f with
                        | Error e -> badMessage e
                        | Ok _ -> None)
        finally
            File.Delete path

/// What a strategy's input is and how it is checked: a model source (compiled), a data file of a fit example's
/// model (prefix `data N\n`), or a partial file (prefix `partial\n`, then Base64).
let checkInput (input: string) : Failure option =
    if input.StartsWith "partial\n" then checkPartial (input.Substring 8)
    elif input.StartsWith "data " then
        let nl = input.IndexOf '\n'
        match (if nl > 5 then Int32.TryParse(input.Substring(5, nl - 5)) else (false, 0)) with
        | true, i when i >= 0 && i < fitData.Value.Length -> checkData (fst fitData.Value[i]) (input.Substring(nl + 1))
        | _ -> None
    else check input

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
        Next = fun rnd -> mutateBytes rnd examples.Value[rnd.Next examples.Value.Length] }
      { Name = "data"
        Next =
          fun rnd ->
              // fit data files (against their model) and partial files, in equal shares
              if rnd.Next 2 = 0 then
                  let i = rnd.Next fitData.Value.Length
                  sprintf "data %d\n%s" i (mutateData rnd (snd fitData.Value[i]))
              else "partial\n" + mutatePartial rnd } ]

// ------------------------------------------------------------------ minimisation

/// Shrink while the failure (its kind) persists: delete line chunks, then tokens, then characters;
/// bounded in time (an over-time input costs the budget per try).
let minimise (text: string) (kind: string) =
    let deadline = DateTime.UtcNow + TimeSpan.FromSeconds 30.0
    let fails (s: string) = DateTime.UtcNow < deadline && (match checkInput s with Some f -> f.Kind = kind | None -> false)

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

/// Compiles every example once outside the budgets: the first compile of a process JITs the compiler, which on
/// a loaded machine alone took more than the time budget (a finding that was not the input's).
let warmUp () =
    for text in examples.Value do
        SdeCompiler.Compile(text, "warm-up.sde") |> ignore

let run (seconds: float) (seed: int) (log: string -> unit) =
    warmUp ()
    let rnd = Random seed
    let findings = ResizeArray<Finding>()
    let seen = Collections.Generic.HashSet<string>()
    let sw = Diagnostics.Stopwatch.StartNew()

    let tried =
        strategies seed
        |> List.map (fun s ->
            let share = seconds / 4.0
            // each strategy its own share, even after a finding's minimisation took time from the previous one
            let until = sw.Elapsed.TotalSeconds + share
            let mutable count = 0

            while sw.Elapsed.TotalSeconds < until do
                let input = s.Next rnd
                count <- count + 1

                match checkInput input with
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
              warmUp ()

              for path in corpusFiles () do
                  match checkInput (File.ReadAllText path) with
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
          <| test "Fuzz run (FUZZ_SECONDS, default 4; FUZZ_SEED, default 1)" {
              let seconds = envInt "FUZZ_SECONDS" 4
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
