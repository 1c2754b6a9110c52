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
    // no colour codes when the output goes to a file or a pipe (CI logs, `| tee`)
    let colours = if System.Console.IsOutputRedirected then [ CLIArguments.Colours 0 ] else []
    let code = runTestsInAssemblyWithCLIArgs (CLIArguments.Printer(counted summary) :: colours) argv

    match summary.Value with
    | Some s ->
        // A closing line that scripts (CI) can read: `Tests: N passed, N failed`.
        // On a line of its own, after whatever the progress display left on the current one.
        printfn ""
        printfn "Tests: %d passed, %d failed" s.passed.Length (s.failed.Length + s.errored.Length)
    | None -> ()

    code
