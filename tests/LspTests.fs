/// `dsl lsp` (issue 23): the protocol from the test suite, in process (`Lsp.serve` on memory
/// streams) and once through the command; Neovim's client in tests/editors/ (list "Editors Slow").
module Sde.Tests.LspTests

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open Sde.Lang

let private getI (n: JsonNode) = n.GetValue<int>()
let private getS (n: JsonNode) = n.GetValue<string>()
let private elements (n: JsonNode) = n.AsArray() |> List.ofSeq

let private frame (body: string) =
    let b = Encoding.UTF8.GetBytes body
    Array.append (Encoding.ASCII.GetBytes(sprintf "Content-Length: %d\r\n\r\n" b.Length)) b

let private json (o: obj) = Text.Json.JsonSerializer.Serialize o

let private request (id: int) (m: string) (pars: obj) = json {| jsonrpc = "2.0"; id = id; ``method`` = m; ``params`` = pars |}
let private notify (m: string) (pars: obj) = json {| jsonrpc = "2.0"; ``method`` = m; ``params`` = pars |}

/// Runs the server on the framed messages; its exit code and every message it wrote, in order.
let session (raw: byte[] list) : int * JsonNode list =
    use input = new MemoryStream(Array.concat raw)
    use output = new MemoryStream()
    let code = Lsp.serve input output
    let bytes = output.ToArray()
    // split the output at its Content-Length headers
    let rec read (i: int) acc =
        if i >= bytes.Length then
            List.rev acc
        else
            let text = Encoding.ASCII.GetString(bytes, i, min 64 (bytes.Length - i))
            let headerEnd = text.IndexOf "\r\n\r\n"
            let length = int (text.Substring(16, headerEnd - 16))
            let start = i + headerEnd + 4
            read (start + length) (JsonNode.Parse(Encoding.UTF8.GetString(bytes, start, length)) :: acc)

    code, read 0 []

let private uri = "file:///models/ou.sde"
let private doc = {| uri = uri |}
let private at (line: int) (character: int) = {| textDocument = doc; position = {| line = line; character = character |} |}
let private initialize = frame (request 1 "initialize" {| capabilities = {| |} |})
let private shutdownExit = [ frame (request 99 "shutdown" null); frame (notify "exit" null) ]
let private opened (text: string) = frame (notify "textDocument/didOpen" {| textDocument = {| uri = uri; languageId = "sde"; version = 1; text = text |} |})

let private ou = File.ReadAllText(Path.Combine(CliTests.repoRoot, "examples", "ou_response.sde"))
/// The example with a misspelt name in its equation.
let private mistaken = ou.Replace("d x = -theta * x dt", "d x = -thetta * x dt")

/// The (0-based) line and character where `needle` first occurs in `text`.
let private locate (text: string) (needle: string) =
    let lines = text.Split('\n')
    let l = lines |> Array.findIndex (fun l -> l.Contains needle)
    l, lines[l].IndexOf needle

/// The line of the first line holding `lineNeedle`, and the character where `needle` starts on it.
let private locateOn (text: string) (lineNeedle: string) (needle: string) =
    let lines = text.Split('\n')
    let l = lines |> Array.findIndex (fun l -> l.Contains lineNeedle)
    l, lines.[l].IndexOf needle

let private answer (id: int) (msgs: JsonNode list) =
    msgs |> List.find (fun m -> not (isNull m.["id"]) && m.["id"].GetValueKind() = Text.Json.JsonValueKind.Number && (getI m.["id"]) = id)

let private diagnostics (msgs: JsonNode list) =
    msgs |> List.filter (fun m -> not (isNull m.["method"]) && (getS m.["method"]) = "textDocument/publishDiagnostics")

let private errorCode (m: JsonNode) = getI m.["error"].["code"]

[<Tests>]
let tests =
    testList
        "Lsp"
        [ test "initialize, didOpen with a mistake: its diagnostic at the line and column; didChange fixes it; shutdown, exit 0" {
              let fixedText = {| contentChanges = [ {| text = ou |} ]; textDocument = {| uri = uri; version = 2 |} |}
              let code, msgs = session ([ initialize; opened mistaken; frame (notify "textDocument/didChange" fixedText) ] @ shutdownExit)
              Expect.equal code 0 "exit after shutdown: 0"
              let caps = (answer 1 msgs).["result"].["capabilities"]
              for c in [ "hoverProvider"; "completionProvider"; "definitionProvider"; "documentSymbolProvider"; "documentFormattingProvider" ] do
                  Expect.isNotNull caps[c] c

              match diagnostics msgs with
              | [ first; second ] ->
                  let d = (elements first.["params"].["diagnostics"]) |> Seq.exactlyOne
                  let line, col = locate mistaken "thetta"
                  Expect.equal ((getI d.["range"].["start"].["line"]), (getI d.["range"].["start"].["character"])) (line, col) "the misspelt name's line and column"
                  Expect.equal ((getI d.["range"].["end"].["character"])) (col + "thetta".Length) "the range covers the name"
                  Expect.equal ((getI d.["severity"])) 1 "an error"
                  Expect.stringContains ((getS d.["message"])) "did you mean 'theta'" "did-you-mean"
                  Expect.isEmpty ((elements second.["params"].["diagnostics"])) "fixed: no diagnostics"
              | other -> failtestf "expected two publishDiagnostics, got %d" other.Length

              Expect.equal ((answer 99 msgs).["result"]) null "shutdown answers null"
          }
          test "a warning is published with severity 2; an incremental change is applied" {
              let noQueries = "model M {\n state x\n brownian W\n init x = 0\n d x = dW\n}\n"
              let change = {| range = {| start = {| line = 4; character = 7 |}; ``end`` = {| line = 4; character = 7 |} |}; text = "0.5 " |}
              let _, msgs = session ([ initialize; opened noQueries; frame (notify "textDocument/didChange" {| textDocument = doc; contentChanges = [ change ] |}); frame (request 2 "textDocument/formatting" {| textDocument = doc |}) ] @ shutdownExit)
              let d = (elements (diagnostics msgs).Head.["params"].["diagnostics"]) |> Seq.head
              Expect.equal ((getI d.["severity"])) 2 ("a warning: " + d.ToJsonString())
              let edit = (elements (answer 2 msgs).["result"]) |> Seq.exactlyOne
              Expect.stringContains ((getS edit.["newText"])) "d x = 0.5 dW" "the change applied at its range"
          }
          test "hover: a param's declaration, domain and value in the default set; a method's documentation" {
              let pl, pc = locateOn ou "d x = " "sigma dW"
              let ml, mc = locateOn ou "with pathwise" "pathwise"
              let _, msgs = session ([ initialize; opened ou; frame (request 2 "textDocument/hover" (at pl (pc + 2))); frame (request 3 "textDocument/hover" (at ml mc)); frame (request 4 "textDocument/hover" (at 0 0)) ] @ shutdownExit)
              let param = (getS (answer 2 msgs).["result"].["contents"].["value"])
              Expect.stringContains param "param `sigma`" "kind and name"
              Expect.stringContains param "param sigma = 0.5 in (0, inf)" "declaration and domain"
              Expect.stringContains param "value in set `default`: 0.5" "value in the default set"
              Expect.stringContains ((getS (answer 3 msgs).["result"].["contents"].["value"])) "response method" "method"
              Expect.isNull ((answer 4 msgs).["result"]) "no name at the position: nothing"
          }
          test "completion: settings in simulate, methods after `with`, names in the model" {
              let sl, _ = locate ou "simulate {"
              let text = ou.Replace("d mean(x^2) / d theta with pathwise", "d mean(x^2) / d theta with ")
              let wl, wc = locate text "theta with "
              let el, _ = locateOn text "d x = " "d x = "
              let _, msgs =
                  session ([ initialize; opened text
                             frame (request 2 "textDocument/completion" (at sl 11))
                             frame (request 3 "textDocument/completion" (at wl (wc + "theta with ".Length)))
                             frame (request 4 "textDocument/completion" (at el 8)) ] @ shutdownExit)
              let labels id = (elements (answer id msgs).["result"].["items"]) |> Seq.map (fun i -> (getS i.["label"])) |> Set.ofSeq
              Expect.containsAll (labels 2) [ "paths"; "dt"; "T"; "seed"; "burnin" ] "settings"
              Expect.containsAll (labels 3) [ "divergence_kernel"; "likelihood_ratio"; "pathwise"; "finite_difference" ] "methods"
              Expect.containsAll (labels 4) [ "theta"; "sigma"; "x"; "dW"; "exp" ] "names in scope, differentials, functions"
          }
          test "definition: a name's declaration, dW's brownian; document symbols; formatting is the printer's" {
              let rl, rc = locateOn ou "d x = " "sigma dW"
              let _, msgs =
                  session ([ initialize; opened ou
                             frame (request 2 "textDocument/definition" (at rl rc))
                             frame (request 3 "textDocument/definition" (at rl (rc + 7)))
                             frame (request 4 "textDocument/documentSymbol" {| textDocument = doc |})
                             frame (request 5 "textDocument/formatting" {| textDocument = doc; options = {| tabSize = 2; insertSpaces = true |} |}) ] @ shutdownExit)
              let start id = let r = (answer id msgs).["result"].["range"].["start"] in (getI r.["line"]), (getI r.["character"])
              let sl, sc = locateOn ou "param sigma" "sigma"
              Expect.equal (start 2) (sl, sc) "sigma's declaration"
              let bl, bc = locateOn ou "brownian W" "brownian W"
              Expect.equal (start 3) (bl, bc + "brownian ".Length) "dW: the brownian W"
              let names = (elements (answer 4 msgs).["result"]) |> Seq.map (fun s -> (getS s.["name"])) |> List.ofSeq
              Expect.equal names [ "OU"; "simulate"; "query" ] "top-level symbols"
              let model = (elements (answer 4 msgs).["result"].[0].["children"]) |> Seq.map (fun s -> (getS s.["name"])) |> List.ofSeq
              Expect.equal model [ "theta"; "sigma"; "x"; "W" ] "the model's declarations"
              let edit = (elements (answer 5 msgs).["result"]) |> Seq.exactlyOne
              Expect.equal ((getS edit.["newText"])) (match Format.format ou with Ok t -> t | Error _ -> "") "Format.format's text"
          }
          test "malformed messages are answered with errors, never a crash; the server reads on" {
              let raw =
                  [ frame (request 1 "textDocument/hover" (at 0 0)) // before initialize
                    initialize
                    frame "{not json"
                    frame "[1, 2]"
                    frame (request 3 "no/such/method" null)
                    frame (request 4 "textDocument/hover" {| textDocument = doc |}) // not open, no position
                    frame (request 5 "textDocument/hover" {| position = {| line = "x" |} |})
                    frame (notify "textDocument/didChange" {| textDocument = doc; contentChanges = 3 |}) // dropped
                    Encoding.ASCII.GetBytes "Content-Type: nothing\r\n\r\n"
                    frame (json {| jsonrpc = "2.0"; id = 6 |})
                    opened "model M {\n  state x\n  d x = 1 dt\n}\n"
                    frame (notify "textDocument/didChange" {| textDocument = doc; contentChanges = [ {| text = "model M {\n  state x\n  d x = 1 +\n}\n" |} ] |})
                    frame (request 7 "textDocument/formatting" {| textDocument = doc |})
                    frame (request 8 "textDocument/hover" (at 1 9)) ]
                  @ shutdownExit

              let code, msgs = session raw
              Expect.equal code 0 "the server ran to the end"
              Expect.equal (errorCode (answer 1 msgs)) -32002 "before initialize"
              let anonymous = msgs |> List.filter (fun m -> not (isNull m.["error"]) && isNull m.["id"]) |> List.map errorCode
              Expect.equal anonymous [ -32700; -32600; -32700 ] "unparseable JSON, not an object, a frame without Content-Length"
              Expect.equal (errorCode (answer 3 msgs)) -32601 "unknown method"
              Expect.equal (errorCode (answer 4 msgs)) -32602 "missing position"
              Expect.equal (errorCode (answer 5 msgs)) -32602 "malformed params"
              Expect.equal (errorCode (answer 6 msgs)) -32600 "no method"
              Expect.stringContains ((getS (answer 7 msgs).["error"].["message"])) "cannot format: 3:12:" "a file that does not parse is not formatted"
              Expect.stringContains ((getS (answer 8 msgs).["result"].["contents"].["value"])) "state `x`" "still answering, with the names of the last text that parsed"
          }
          test "exit without shutdown: exit code 1; end of input: 1" {
              Expect.equal (fst (session [ initialize; frame (notify "exit" null) ])) 1 "exit before shutdown"
              Expect.equal (fst (session [ initialize ])) 1 "input closed"
          } ]

[<Tests>]
let processTests =
    testList
        "Lsp Slow"
        [ test "dsl lsp: the command speaks the protocol on stdio" {
              Tier.requireSlow "starts the command (its JIT and first compile: a second or two)"
              let psi = System.Diagnostics.ProcessStartInfo("dotnet", [ CliTests.dslDll; "lsp" ])
              psi.RedirectStandardInput <- true
              psi.RedirectStandardOutput <- true
              psi.UseShellExecute <- false
              use p = System.Diagnostics.Process.Start psi
              let stdin = p.StandardInput.BaseStream
              for m in [ initialize; opened mistaken ] @ shutdownExit do stdin.Write(m, 0, m.Length)
              stdin.Flush()
              let out = p.StandardOutput.ReadToEndAsync()
              Expect.isTrue (p.WaitForExit 60000) "exits after exit"
              Expect.equal p.ExitCode 0 "exit code 0 after shutdown"
              Expect.stringContains out.Result "did you mean 'theta'" "the diagnostics"
          } ]

/// The Neovim test: tests/editors/run.sh (Neovim headless, its built-in LSP client on `dsl lsp`).
[<Tests>]
let editorTests =
    testList
        "Editors Slow"
        [ test "Neovim's LSP client: diagnostics at the line and column, completion, hover, formatting" {
              Tier.requireSlow "starts Neovim and the language server (a few seconds)"
              let script = Path.Combine(CliTests.repoRoot, "tests", "editors", "run.sh")
              let psi = System.Diagnostics.ProcessStartInfo("bash", [ script ])
              psi.RedirectStandardOutput <- true
              psi.RedirectStandardError <- true
              psi.UseShellExecute <- false
              psi.Environment.["SDE_DSL_DLL"] <- CliTests.dslDll
              psi.Environment.["SDE_EDITORS_NO_INSTALL"] <- "1"
              use p = System.Diagnostics.Process.Start psi
              let out = p.StandardOutput.ReadToEndAsync()
              let err = p.StandardError.ReadToEndAsync()
              Expect.isTrue (p.WaitForExit 120000) "Neovim finished"
              if p.ExitCode = 77 then skiptest ("Neovim is not installed (apt-get install neovim; .ci/run installs it): " + out.Result.Trim())
              Expect.equal p.ExitCode 0 (out.Result + err.Result)
              Expect.stringContains out.Result "PASS" out.Result
          } ]
