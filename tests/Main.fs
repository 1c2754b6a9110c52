module Sde.Tests.Main

open Expecto
open Expecto.Impl

/// The default printer, plus a record of the run's summary for the closing line.
let private counted (summary: TestRunSummary option ref) =
    { TestPrinters.defaultPrinter with
        summary =
            fun config s ->
                async {
                    summary.Value <- Some s
                    do! TestPrinters.defaultPrinter.summary config s
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

    let code = runTestsInAssemblyWithCLIArgs (CLIArguments.Printer(counted summary) :: colours) argv

    match summary.Value with
    | Some s ->
        // A closing line that scripts (CI) can read: `Tests: N passed, N failed`.
        // On a line of its own, after whatever the progress display left on the current one.
        printfn ""
        printfn "Tests: %d passed, %d failed" s.passed.Length (s.failed.Length + s.errored.Length)
    | None -> ()

    code
