/// `dsl format` (issue 23): the canonical layout keeps the tree (the formatted file parses to the same
/// AST and checks to the same model), keeps every comment, and is idempotent.
module Sde.Tests.FormatTests

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open Sde.Lang
open Sde.Lang.Syntax

let private formatOk (s: string) =
    match Format.format s with
    | Ok t -> t
    | Error d -> failtestf "format failed: %s" (Diagnostics.short d)

/// The comments of a text, as written, in order.
let commentsOf (s: string) = Format.scan s |> fst |> List.map (fun c -> c.Text)

/// The checked file without what formatting may change: the queries' text as written.
let private checkedModel (s: string) =
    Frontend.compileText "f.sde" s |> Result.map (fun cf -> { cf with Queries = cf.Queries |> List.map (fun q -> { q with Text = "" }) })

/// Formatting `source` keeps its tree, its comments and its checked model, and is idempotent.
let expectFormatKeeps (what: string) (checkModel: bool) (source: string) =
    match Parser.parseFile source with
    | Error _ -> Expect.isError (Format.format source) (what + ": a file that does not parse is refused")
    | Ok tree ->
        let formatted = formatOk source
        Expect.equal (Parser.parseFile formatted) (Ok tree) (what + ": the same tree")
        Expect.equal (formatOk formatted) formatted (what + ": formatting a formatted file changes nothing")
        Expect.equal (commentsOf formatted |> List.map (fun c -> c.Trim())) (commentsOf source |> List.map (fun c -> c.Trim())) (what + ": every comment kept, in order")

        if checkModel then
            match checkedModel source with
            | Ok m -> Expect.equal (checkedModel formatted) (Ok m) (what + ": the same checked model")
            | Error _ -> Expect.isError (checkedModel formatted) (what + ": refused by the checker, before and after")

let private exprCase (input: string) (expected: string) =
    test (sprintf "%s prints as %s" input expected) {
        match Parser.parseExpr input with
        | Error d -> failtestf "%s" (Diagnostics.short d)
        | Ok e ->
            let printed = Format.expr e
            Expect.equal printed expected "the fewest parentheses"
            Expect.equal (Parser.parseExpr printed) (Ok e) "the same tree"
    }

let private commented =
    "// header\n\nmodel M {  // the model\n  param a=1 in (0,inf) // rate\n  // the state\n  state x\n  brownian W\n\n  init x=1\n  d x = -a*x*dt + (a+1)*dW /* noise */\n  // end of model\n}\n// before simulate\nsimulate { paths = 10; dt = 0.1; T = 1 } // short\nquery {\n  mean(x*x)   // second moment\n}\n// the end\n"

// written by hand from the rules in Format.fs: a comment alone on its line stays before the item that
// follows it, one after code stays at the end of its item's line, a blank line inside a block is kept
let private commentedFormatted =
    "// header\n\nmodel M {  // the model\n  param a = 1 in (0, inf)  // rate\n  // the state\n  state x\n  brownian W\n\n  init x = 1\n  d x = -a * x dt + (a + 1) dW  /* noise */\n  // end of model\n}\n\n// before simulate\nsimulate {\n  paths = 10\n  dt = 0.1\n  T = 1\n}  // short\n\nquery {\n  mean(x * x)  // second moment\n}\n\n// the end\n"

let private exampleFiles () = CliTests.examples ()

let private corpusFiles () =
    let dir = Path.Combine(CliTests.repoRoot, "tests", "fuzz", "corpus")
    if Directory.Exists dir then Directory.GetFiles(dir, "*.sde", SearchOption.AllDirectories) |> Array.sort else [||]

[<Tests>]
let tests =
    testList
        "Format"
        [ exprCase "-theta*x*dt + sigma*dW" "-theta * x dt + sigma dW"
          exprCase "(a - b) - c" "a - b - c"
          exprCase "a - (b - c)" "a - (b - c)"
          exprCase "a / (b * c)" "a / (b * c)"
          exprCase "-(x^2)" "-x^2"
          exprCase "(-x)^2" "(-x)^2"
          exprCase "2^3^4" "2^3^4"
          exprCase "(2^3)^4" "(2^3)^4"
          exprCase "a * -b" "a * (-b)"
          exprCase "(if x > 0 then 1 else 2) + 1" "(if x > 0 then 1 else 2) + 1"
          exprCase "not (a and b) or c" "not (a and b) or c"
          exprCase "(a or b) and c" "(a or b) and c"
          exprCase "0.00001 * x[i+1]" "1e-5 * x[i + 1]"
          exprCase "sum(j, x[j] * dW[j])" "sum(j, x[j] dW[j])"

          test "comments where they were, the layout canonical" {
              Expect.equal (formatOk commented) commentedFormatted "formatted"
              expectFormatKeeps "commented" true commented
          }
          test "comments in odd places: before a `}`, after the last item, on a block's first line, across lines" {
              let s = "model M { /* a */ state x; brownian W\n init x = 0 // b\n /* c\n spans */ d x = dW\n // d\n}\n\nquery { mean(x) }\n/* e */ // f\n"
              expectFormatKeeps "odd" true s
              Expect.equal (commentsOf (formatOk s)) [ "/* a */"; "// b"; "/* c\n spans */"; "// d"; "/* e */"; "// f" ] "kept, in order"
          }
          test "a file that does not parse: its error, located" {
              match Format.format "model M {\n  state x\n  d x = 1 +\n}\n" with
              | Error d -> Expect.equal (d.Pos.Line, d.Pos.Col) (3, 12) (Diagnostics.short d)
              | Ok t -> failtestf "formatted: %s" t
          }
          test "an empty file and a file of comments only" {
              Expect.equal (formatOk "") "" "empty"
              Expect.equal (formatOk "// just a note\n") "// just a note\n" "a comment"
          }
          test "every example: the same tree, comments, checked model; idempotent" {
              for f in exampleFiles () do
                  expectFormatKeeps (Path.GetFileName f) false (File.ReadAllText f)
          }
          testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 25 } "generated files: format keeps the tree and is idempotent" (fun () ->
              Prop.forAll (Arb.fromGen ParserTests.genFile) (fun f ->
                  let printed = Printer.printFile f
                  let formatted = formatOk printed
                  (Parser.parseFile formatted = Ok f && formatOk formatted = formatted) |> Prop.label formatted))

          test "dsl format: in place, --check; a file that does not parse is left as it is" {
              let dir = Directory.CreateTempSubdirectory("sde-format-")

              try
                  let good = Path.Combine(dir.FullName, "good.sde")
                  let bad = Path.Combine(dir.FullName, "bad.sde")
                  let badText = "model M {\n  state x\n  d x = 1 +\n}\n"
                  File.WriteAllText(good, commented)
                  File.WriteAllText(bad, badText)
                  let check = CliTests.dsl [ "format"; good; "--check" ]
                  Expect.equal check.Code 1 ("--check on a file that would change: exit 1\n" + check.Err)
                  Expect.equal (File.ReadAllText good) commented "--check changes nothing"
                  let both = CliTests.dsl [ "format"; good; bad ]
                  Expect.equal both.Code 2 ("a file that does not parse: exit 2\n" + both.Err)
                  Expect.stringContains both.Err (bad + ":3:12: error: expected expression") "located"
                  Expect.equal (File.ReadAllText bad) badText "left as it is"
                  Expect.equal (File.ReadAllText good) commentedFormatted "the other file formatted in place"
              finally
                  dir.Delete true
          } ]

[<Tests>]
let slowCliTests =
    testList
        "Format CLI Slow"
        [ test "dsl format --check on a formatted file: 0; - reads standard input and writes standard output" {
              Tier.requireSlow "starts the command twice"
              let dir = Directory.CreateTempSubdirectory("sde-format-")

              try
                  let good = Path.Combine(dir.FullName, "good.sde")
                  File.WriteAllText(good, commentedFormatted)
                  let again = CliTests.dsl [ "format"; "--check"; good ]
                  Expect.equal again.Code 0 ("--check on a formatted file: exit 0\n" + again.Err)
                  let psi = System.Diagnostics.ProcessStartInfo("dotnet", [ CliTests.dslDll; "format"; "-" ])
                  psi.RedirectStandardInput <- true
                  psi.RedirectStandardOutput <- true
                  psi.UseShellExecute <- false
                  use p = System.Diagnostics.Process.Start psi
                  p.StandardInput.Write commented
                  p.StandardInput.Close()
                  let out = p.StandardOutput.ReadToEnd()
                  p.WaitForExit()
                  Expect.equal (p.ExitCode, out) (0, commentedFormatted) "- reads standard input and writes standard output"
              finally
                  dir.Delete true
          } ]

[<Tests>]
let slowTests =
    testList
        "Format Slow"
        [ test "the fuzz corpus: formatted where it parses (same tree), refused where it does not" {
              Tier.requireSlow "the corpus holds a 2.8 MB file"

              for f in corpusFiles () do
                  expectFormatKeeps (Path.GetFileName f) false (File.ReadAllText f)
          }
          test "every example and 2,000 generated files: formatted files check to the same model" {
              Tier.requireSlow "checks every example twice and 2,000 generated files"

              for f in exampleFiles () do
                  expectFormatKeeps (Path.GetFileName f) true (File.ReadAllText f)

              let files = Gen.sampleWithSeed (Rnd 7UL) 12 2000 ParserTests.genFile

              for f in files do
                  let printed = Printer.printFile f
                  // the generated trees seldom check; those that do must check to the same model
                  expectFormatKeeps "generated" true printed
          } ]
