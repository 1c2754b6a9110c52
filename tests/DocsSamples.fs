/// The F# snippets of the docs that are not whole scripts, compiled with the tests: each region
/// between `// docs: FILE` and `// end docs` is, line for line (indentation removed), the fenced
/// block of FILE that tests/DocsTests.fs checks it against, and the tests call the functions that
/// hold them. A snippet that stops compiling (a renamed member, a missing `open`) fails the build.
module Sde.Tests.DocsSamples

open Sde
open Sde.Lang

/// docs/fitting.md, "Embedding API": fit the params of a file's fit block from F#.
let fitFromFSharp (text: string) (dataDir: string) (outDir: string) : int =
    // docs: docs/fitting.md
    match SdeCompiler.Compile(text, "model.sde") with
    | Ok program when program.HasFit ->
        match program.Fit(dataDir = dataDir) with          // also ?threads, ?progress: Action<Fit.FitStep>
        | Ok report ->
            printfn "%A" report.Fitted
            Fit.write outDir report |> ignore               // fit.json and the plots
            0
        | Error diagnostics ->
            for d in diagnostics do eprintfn "%s" d.Rendered
            3
    | Ok _ ->
        eprintfn "no fit block"
        2
    | Error diagnostics ->
        for d in diagnostics do eprintfn "%s" d.Rendered   // FILE:LINE:COL: error: ... with a caret
        2
    // end docs
