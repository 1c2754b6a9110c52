module Sde.Tests.Main

open Expecto
open Expecto.Impl

/// A test's full name as Expecto's filters spell it (`list/name`).
let private nameOf (t: FlatTest) = String.concat "/" t.name

/// At most `n` lines of a failure message (an Expect.equal of two long arrays prints pages).
let private firstLines (n: int) (text: string) =
    let lines = text.Trim().Split('\n') |> Array.map (fun l -> l.TrimEnd '\r')

    if lines.Length <= n then lines
    else Array.append lines[.. n - 1] [| sprintf "... (%d more lines)" (lines.Length - n) |]

let private seconds (t: System.TimeSpan) = sprintf "%.1f s" t.TotalSeconds

/// The closing summary: counts, each failure with its message, and the slowest tests. Expecto's own
/// `--summary` lists every test by name (509 lines), which hides the few lines that matter.
let summaryLines (s: TestRunSummary) : string list =
    let failures =
        (s.failed @ s.errored)
        |> List.map (fun (t, r) ->
            let message =
                match r.result with
                | TestResult.Failed m -> m
                | TestResult.Error e -> sprintf "%s: %s" (e.GetType().Name) e.Message
                | other -> string other

            sprintf "  FAILED %s (%s)" (nameOf t) (seconds r.duration)
            :: (firstLines 8 message |> Array.map (fun l -> "      " + l) |> List.ofArray))
        |> List.concat

    let slowest =
        s.results
        |> List.filter (fun (_, r) ->
            match r.result with
            | TestResult.Ignored _ -> false
            | _ -> true)
        |> List.sortByDescending (fun (_, r) -> r.duration)
        |> List.truncate 10
        |> List.map (fun (t, r) -> sprintf "  %8s  %s" (seconds r.duration) (nameOf t))

    [ yield ""
      yield
          sprintf
              "%d tests in %s: %d passed, %d failed, %d errored, %d ignored"
              s.results.Length
              (seconds s.duration)
              s.passed.Length
              s.failed.Length
              s.errored.Length
              s.ignored.Length
      if not failures.IsEmpty then
          yield "Failures:"
          yield! failures
      if not slowest.IsEmpty then
          yield sprintf "Slowest %d:" slowest.Length
          yield! slowest ]

[<Tests>]
let summaryTests =
    test "Main: the summary counts, gives each failure's first lines and the 10 slowest, not every name" {
        let flat name =
            { name = [ "list"; name ]
              test = Sync ignore
              state = FocusState.Normal
              focusOn = false
              sequenced = InParallel }

        let result r (seconds: float) =
            { result = r; count = 1; meanDuration = seconds * 1000.0; maxDuration = seconds * 1000.0 }

        let passed = [ for i in 1..12 -> flat (sprintf "p%02d" i), result TestResult.Passed (float i) ]
        let message = String.concat "\n" [ for i in 1..20 -> sprintf "line %d" i ]
        let failed = flat "bad", result (TestResult.Failed message) 0.5

        let s =
            { results = failed :: passed
              duration = System.TimeSpan.FromSeconds 78.0
              maxMemory = 0L
              memoryLimit = 0L
              timedOut = [] }

        let lines = summaryLines s
        let text = String.concat "\n" lines
        Expect.stringContains text "13 tests in 78.0 s: 12 passed, 1 failed, 0 errored, 0 ignored" text
        Expect.stringContains text "FAILED list/bad" text
        Expect.stringContains text "line 8\n      ... (12 more lines)" "the message's first 8 lines"
        Expect.isFalse (text.Contains "line 9") "not the rest"
        let slow = lines |> List.skipWhile (fun l -> not (l.StartsWith "Slowest")) |> List.tail
        Expect.equal (slow |> List.map (fun l -> l.Trim().Split("  ").[1])) [ for i in 12..-1..3 -> sprintf "list/p%02d" i ] "the 10 slowest, slowest first"
        Expect.isFalse (text.Contains "list/p02") "the other passing tests unnamed"
    }

/// The default printer, except the summary: ours (see `summaryLines`), recorded for the closing line.
let private counted (summary: TestRunSummary option ref) =
    { TestPrinters.defaultPrinter with
        summary =
            fun _ s ->
                async {
                    summary.Value <- Some s
                    summaryLines s |> List.iter (printfn "%s")
                } }

[<EntryPoint>]
let main argv =
    let summary = ref None
    // no colour or cursor codes when the output goes to a file or a pipe (CI logs, `| tee`): no colours,
    // and no spinner (it hides and moves the cursor)
    let colours = if System.Console.IsOutputRedirected then [ CLIArguments.Colours 0; CLIArguments.No_Spinner ] else []

    // and the log lines through a plain text writer (the console target appends a colour reset to each)
    if System.Console.IsOutputRedirected then
        Logging.Global.initialise
            { Logging.Global.defaultConfig with
                getLogger = fun name -> Logging.TextWriterTarget(name, Logging.LogLevel.Info, System.Console.Out) :> Logging.Logger }

    // `--summary` (the README's command) is accepted and means our summary, which is always printed:
    // Expecto's would wrap our printer and list every test's name
    let argv = argv |> Array.filter (fun a -> a <> "--summary")
    let code = runTestsInAssemblyWithCLIArgs (CLIArguments.Printer(counted summary) :: colours) argv

    match summary.Value with
    | Some s ->
        // A closing line that scripts (CI) can read: `Tests: N passed, N failed`.
        // On a line of its own, after whatever the progress display left on the current one.
        printfn ""
        printfn "Tests: %d passed, %d failed" s.passed.Length (s.failed.Length + s.errored.Length)
        // SDE_TEST_TIMES=FILE: every test's wall time, slowest first (to find what to trim)
        match System.Environment.GetEnvironmentVariable "SDE_TEST_TIMES" with
        | null
        | "" -> ()
        | path ->
            s.results
            |> List.sortByDescending (fun (_, r) -> r.duration)
            |> List.map (fun (t, r) -> sprintf "%8.2f  %s" r.duration.TotalSeconds (nameOf t))
            |> fun lines -> System.IO.File.WriteAllLines(path, lines)
    | None -> ()

    code
