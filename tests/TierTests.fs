/// CI's exhaustive tier runs `SDE_SLOW=1` with two filters: the lists whose name contains "Slow", and the tests
/// whose name contains "[slow tier]" (.ci/run). A test that calls `Tier.requireSlow` and matches neither is skipped
/// everywhere, silently: that is how a stale table in docs/responses.md went unnoticed for half a day. This
/// reads the suite's sources and finds every such call's test and the lists around it.
module Sde.Tests.TierTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto

let private testRx =
    Regex(@"^\s*(\[|;|<\|)?\s*(f|p)?(test|testCase|testCaseAsync|testAsync|testProperty|testPropertyWithConfig)\b\s*(\(?\s*""(?<n>[^""]*)"")?")

let private listRx = Regex(@"^\s*(\[|;|<\|)?\s*(f|p)?testList\b\s*(""(?<n>[^""]*)"")?")

let private indent (l: string) = l.Length - l.TrimStart().Length

/// A list's name: on its line, or (Fantomas's layout) alone on the next.
let private listName (lines: string[]) (k: int) =
    let m = listRx.Match lines[k]
    if m.Groups["n"].Success then m.Groups["n"].Value
    elif k + 1 < lines.Length then lines[k + 1].Trim()
    else ""

/// The `requireSlow` calls of a source file that CI's exhaustive tier would not run: (line, test) for each whose
/// test's name has no "[slow tier]" and no enclosing list's name has "Slow". The test is the nearest one opened
/// above the call; its lists are the `testList`s above it at smaller indentation, or, for a test whose name is
/// computed (a helper's `test name { ... }`), every list of the same top-level binding.
let unmarked (lines: string[]) =
    [ for i in 0 .. lines.Length - 1 do
          if lines[i].Contains "requireSlow" && not (lines[i].Contains "let requireSlow") && not (lines[i].TrimStart().StartsWith "//") then
              let mutable j = i - 1
              while j >= 0 && not (testRx.IsMatch lines[j]) do
                  j <- j - 1
              if j < 0 then
                  yield i + 1, "(no test above the call)"
              else
                  let m = testRx.Match lines[j]
                  let name = if m.Groups["n"].Success then m.Groups["n"].Value else lines[j].Trim()
                  let lists = ResizeArray()
                  let mutable level = indent lines[j]
                  for k in j - 1 .. -1 .. 0 do
                      if lines[k].Trim() <> "" && indent lines[k] < level then
                          if listRx.IsMatch lines[k] then lists.Add(listName lines k)
                          level <- indent lines[k]
                  if not m.Groups["n"].Success then
                      let mutable b0 = j
                      while b0 > 0 && not (lines[b0].StartsWith "let ") do
                          b0 <- b0 - 1
                      let mutable b1 = j + 1
                      while b1 < lines.Length && not (lines[b1].StartsWith "let " || lines[b1].StartsWith "[<") do
                          b1 <- b1 + 1
                      for k in b0 .. b1 - 1 do
                          if listRx.IsMatch lines[k] then lists.Add(listName lines k)
                  if not (name.Contains "[slow tier]" || lists |> Seq.exists (fun l -> l.Contains "Slow")) then
                      yield i + 1, name ]

[<Tests>]
let tests =
    testList "Tier" [
        test "the scan finds a requireSlow test outside CI's filters, and passes one marked, one in a Slow list and one built by a helper in a Slow list" {
            let src =
                [| "let a ="
                   "    testList \"Plain\" ["
                   "        test \"marked [slow tier]\" {"
                   "            Tier.requireSlow \"many seeds\""
                   "        }"
                   "        test \"forgotten\" {"
                   "            Tier.requireSlow \"many seeds\""
                   "        } ]"
                   "let b ="
                   "    testList"
                   "        \"Slow things\""
                   "        [ test \"in a Slow list\" {"
                   "              Tier.requireSlow \"x\""
                   "          } ]"
                   "let c ="
                   "    let make name = test name {"
                   "                        Tier.requireSlow \"x\""
                   "                    }"
                   "    testList \"Helpers Slow\" [ make \"one\" ]" |]
            Expect.equal (unmarked src) [ 7, "forgotten" ] "only the forgotten test"
        }

        test "every test of the suite that calls Tier.requireSlow runs in CI's exhaustive tier ('[slow tier]' in its name or 'Slow' in a list's)" {
            let dir = Path.Combine(CliTests.repoRoot, "tests")
            let found =
                [ for f in Directory.GetFiles(dir, "*.fs") do
                      if Path.GetFileName f <> "TierTests.fs" then
                          for line, name in unmarked (File.ReadAllLines f) do
                              yield sprintf "%s:%d %s" (Path.GetFileName f) line name ]
            Expect.isEmpty found "tests that no tier runs: add [slow tier] to the name"
            // the scan sees the calls (55 on 2026-12-07): a scan that finds none checks nothing
            let calls = Directory.GetFiles(dir, "*.fs") |> Array.sumBy (fun f -> File.ReadAllLines f |> Array.filter (fun l -> l.Contains "Tier.requireSlow") |> Array.length)
            Expect.isGreaterThan calls 20 "requireSlow calls seen"
        }
    ]
