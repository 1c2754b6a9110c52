/// Outputs that must not mislead (issue 9, "smaller wrong or misleading outputs"): every stationary
/// window shown, T on the grid of dt, honest blow-up counts, NaN observables and one-path standard
/// errors said out loud.
module Sde.Tests.HonestOutputTests

open System
open System.IO
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open Expecto
open Sde
open Sde.Core
open Sde.Lang
open Sde.Lang.Report
open Sde.Tests.CliTests

let private compile (name: string) (text: string) =
    match SdeCompiler.Compile(text, name) with
    | Ok p -> p
    | Error ds -> failtestf "unexpected diagnostics: %A" (ds |> List.map string)

let private diagnostics (text: string) =
    match SdeCompiler.Compile(text, "m.sde") with
    | Ok _ -> failtest "expected a located error"
    | Error ds -> ds

/// An OU process with a state-dependent observable; `simulate` and `query` filled in per test.
let private ou (simulate: string) (queries: string) =
    sprintf
        """model O {
  param a = 1 in (0, inf)
  state x
  brownian W
  init x ~ normal(0, 1)
  d x = -a * x dt + 0.5 dW
}
simulate { %s }
query {
%s
}
"""
        simulate
        queries

let private results (r: RunReport) = r.Sets.Head.Results

// ------------------------------------------------------------------------------------ 1. windows

let private windowsModel =
    ou "paths = 1500; dt = 0.01; T = 6; seed = 2; burnin = 2"
        "  d mean(x^2) / d a stationary window 1, 2\n  d mean(x^2) / d a stationary window 2, 1\n  d density(x) / d a on [-1, 1] bins 8 stationary window 0.5, 1"

let private windowTests =
    testList "windows" [
        test "Honest several stationary windows: the top-level value is the largest window's, value_window says so, every window is kept" {
            let r = (compile "w.sde" windowsModel).Run(threads = 1)
            let q12, q21, qd = match results r with [ a; b; c ] -> a, b, c | _ -> failtest "three results"

            for q in [ q12; q21 ] do
                Expect.equal (q.Windows |> List.map (fun w -> w.Window)) (if q = q12 then [ 1.0; 2.0 ] else [ 2.0; 1.0 ]) "every window, as written"
                Expect.equal q.ValueWindow (Some 2.0) "the largest window, whatever the order"
                let w2 = q.Windows |> List.find (fun w -> w.Window = 2.0)
                Expect.equal q.Value w2.Value "top-level value = window 2's"
                Expect.equal q.StdErr w2.StdErr "top-level stderr = window 2's"

            // the same estimates whatever the order in which the windows are written
            Expect.equal q12.Value q21.Value "order does not matter"
            let w1 = q12.Windows.Head
            Expect.notEqual w1.Value q12.Value "window 1 differs from window 2 (so the test can tell them apart)"

            // density responses: every window's values, top level = the largest
            Expect.equal qd.ValueWindow (Some 1.0) "density: largest window"
            Expect.equal qd.Values (qd.Windows |> List.find (fun w -> w.Window = 1.0)).Values "density: top-level values are window 1's"
            Expect.isTrue (qd.Windows |> List.forall (fun w -> w.Values.Length = 8 && w.StdErrs.Length = 8)) "density: every window has its bins"

            // the JSON: value_window, windows with every value; the top level not the first window
            let j = JsonNode.Parse(Output.toJson r)
            let jr = j.["sets"].[0].["results"]
            Expect.equal (jr.[0].["value_window"].GetValue<float>()) 2.0 "value_window"
            Expect.equal (jr.[0].["value"].GetValue<float>()) q12.Value "JSON value"
            Expect.notEqual (jr.[0].["value"].GetValue<float>()) (jr.[0].["windows"].[0].["value"].GetValue<float>()) "top-level value is not the first window's"
            Expect.equal (jr.[0].["windows"].AsArray().Count) 2 "two windows"
            Expect.equal (jr.[0].["windows"].[0].["window"].GetValue<float>()) 1.0 "windows as written"
            Expect.equal (jr.[2].["windows"].[0].["values"].AsArray().Count) 8 "density windows carry their values"
            Expect.equal (jr.[2].["value_window"].GetValue<float>()) 1.0 "density value_window"
        }

        test "Honest several stationary windows: the table shows every window and which one is reported" {
            let r = (compile "w.sde" windowsModel).Run(threads = 1)
            let q12 = (results r).Head
            let t = Output.table r

            for w in q12.Windows do
                Expect.stringContains t (sprintf "window %s: %s" (Output.num w.Window) (Output.valueWithError w.Value w.StdErr)) (sprintf "window %g in the table\n%s" w.Window t)

            Expect.stringContains t (Output.valueWithError q12.Value q12.StdErr + "  (window 2, the largest)") "the reported value and its window"
            Expect.stringContains t "2 windows; the reported values are window 1's (the largest)" "density response: which window"
            Expect.stringContains t "window 0.5\n" "density response: window 0.5 shown"
        }
    ]

// ------------------------------------------------------------------------------------ 2. the grid

let private gridTests =
    testList "grid" [
        test "Honest T not a whole number of steps of dt is a located error at T with a dt that divides T" {
            let text = ou "paths = 10; dt = 0.3; T = 2; seed = 1" "  mean(x)"
            let d = (diagnostics text).Head
            let line = text.Split('\n') |> Array.findIndex (fun l -> l.StartsWith "simulate")
            Expect.equal d.Line (line + 1) "the simulate line"
            Expect.equal d.Col (text.Split('\n').[line].IndexOf("T = 2") + 5) "at T's value"
            Expect.stringContains d.Message "not a whole number of steps" "says what"
            Expect.stringContains d.Message "dt = 0.25 (8 steps)" "a short dt that divides T"
            Expect.stringContains d.Message "(7 steps)" "the nearest dt that divides T"
            Expect.stringContains d.Message "T = 2.1" "the nearest T on the grid"
        }

        test "Honest T on the grid up to rounding passes (dt = 0.1, T = 1; dt = 0.005, T = 20; dt = 0.01, T = 2.5; dt = 2/7, T = 2)" {
            for dt, t in [ "0.1", "1"; "0.005", "20"; "0.01", "2.5"; "2/7", "2"; "0.001", "0.3" ] do
                let p = compile "g.sde" (ou (sprintf "paths = 10; dt = %s; T = %s; seed = 1" dt t) "  mean(x)")
                Expect.isTrue (p.Settings.T > 0.0) (sprintf "dt = %s, T = %s compiles" dt t)

            Expect.equal (RunSettings.WholeSteps(20.0, 0.005)) 4000L "4000 steps"
            Expect.equal (RunSettings.WholeSteps(1.0, 0.1)) 10L "10 steps"
            Expect.equal (RunSettings.WholeSteps(2.0, 0.3)) -1L "not whole"
        }

        test "Honest the engine refuses a T off the grid instead of rounding it" {
            let s = RunSettings(Paths = 1L, Dt = 0.3, T = 2.0)
            Expect.throwsT<ArgumentException> (fun () -> s.Steps |> ignore) "RunSettings.Steps"
            let ex = try RunSettings.StepsOf(2.0, 0.3) |> ignore; "" with :? ArgumentException as e -> e.Message
            Expect.stringContains ex "not a whole number of steps" "message"
        }

        test "Honest stationary windows off the grid and windows with no grid time are located errors" {
            let d = (diagnostics (ou "paths = 10; dt = 0.1; T = 4; seed = 1; burnin = 1" "  d mean(x) / d a stationary window 0.25")).Head
            Expect.stringContains d.Message "stationary window 0.25 is not a whole number of steps" "stationary window"
            Expect.isGreaterThan d.Line 1 "located at the query"
            let d = (diagnostics (ou "paths = 10; dt = 0.1; T = 4; seed = 1" "  mean(x) over [0.31, 0.35]")).Head
            Expect.stringContains d.Message "holds no time step" "empty window"
            // a window with edges between grid times averages over the grid times inside it: allowed
            compile "w.sde" (ou "paths = 10; dt = 0.1; T = 4; seed = 1" "  mean(x) over [0.25, 0.95]") |> ignore
        }

        test "Honest every example has T on the grid of dt" {
            for f in examples () do
                match SdeCompiler.Compile(File.ReadAllText f, f) with
                | Ok p -> Expect.isGreaterThanOrEqual (RunSettings.WholeSteps(p.Settings.T, p.Settings.Dt)) 1L f
                | Error ds -> failtestf "%s: %A" f (ds |> List.map string)
        }

        test "Honest --dt and --T off the grid: an error naming the option, exit 2" {
            use tmp = new TempDir()
            let f = tmp.File "g.sde" goodModel

            for opt, v in [ "--dt", "0.3"; "--T", "1.005" ] do
                let args = [ "run"; f; opt; v; "--quiet" ]
                let o = dsl args
                expectUnlocatedError opt (f + ": error: " + opt + ": T = ") args o
                Expect.stringContains o.Err "not a whole number of steps" (describe args o)

            Expect.equal (dsl [ "run"; f; "--dt"; "0.005"; "--T"; "0.5"; "--quiet"; "--json" ]).Code 0 "on the grid: runs"
        }
    ]

// ------------------------------------------------------------------------------------ 3. blow-ups

/// dx = a x³ dt from x = 1: every path blows up at the same step (an ODE).
let private exploding (paths: int) (query: string) =
    sprintf
        """model E {
  param a = 1
  state x
  init x = 1
  d x = a * x^3 dt
}
simulate { paths = %d; dt = 0.01; T = 1; seed = 1 }
query { %s }
"""
        paths
        query

let private failure (p: CompiledProgram) =
    try
        p.Run(threads = 1) |> ignore
        failtest "expected a blow-up"
    with :? SimulationFailedException as e -> e

let private blowUpTests =
    testList "blow-ups" [
        test "Honest blow-up: a run stopped at the first failure says 'at least' and how many paths ran" {
            for q in [ "mean(x)"; "d mean(x) / d a with pathwise"; "lyapunov(1)" ] do
                let e = failure (compile "e.sde" (exploding 200 q))
                Expect.equal e.TotalPaths 200L (q + ": paths asked for")
                Expect.isGreaterThanOrEqual e.SimulatedPaths 1L (q + ": paths that ran")
                Expect.isLessThan e.SimulatedPaths 200L (q + ": stopped early")
                // the model is deterministic: every path that ran failed, and all are counted
                Expect.equal e.FailedPaths e.SimulatedPaths (q + ": every path that ran is counted")
                Expect.isFalse e.Exact (q + ": not exact")
                Expect.stringContains e.Message (sprintf "at least %d path" e.FailedPaths) (q + ": at least")
                Expect.stringContains e.Message (sprintf "after %d of 200 paths" e.SimulatedPaths) (q + ": how many ran")
                Expect.equal e.Step 60L (q + ": the step")
        }

        test "Honest blow-up: when every path ran, every failed path is counted" {
            // one block of four response lanes (first_order advances four paths side by side) holds all four paths
            let noisy = (exploding 4 "d mean(x) / d a with divergence_kernel(mode = first_order)").Replace("d x = a * x^3 dt", "brownian W\n  d x = a * x^3 dt + 0.01 dW")
            let e = failure (compile "e.sde" noisy)
            Expect.isTrue e.Exact "every path ran"
            Expect.equal e.FailedPaths 4L "all four counted"
            Expect.stringContains e.Message "all 4 paths reached NaN or infinity" "message"
            let e1 = failure (compile "e.sde" (exploding 1 "mean(x)"))
            Expect.stringContains e1.Message "its one path reached NaN or infinity" "one path"
            let m = SimulationFailedException(5L, 0.05, 3L, 10L, 10L).Message
            Expect.stringContains m "3 of 10 paths" "exact partial count"
        }
    ]

// ------------------------------------------------------------------------------------ 4. NaN and one path

let private nanModel =
    ou "paths = 2000; dt = 0.01; T = 1; seed = 3"
        "  mean(log(x))\n  density(sqrt(x)) on [0, 2] bins 10\n  d mean(log(x)) / d a with finite_difference(h = 0.01)\n  mean(x)"

let private nanTests =
    testList "NaN and one path" [
        test "Honest NaN observable values: counted, warned with the cause, shown in the table, JSON valid" {
            let r = (compile "n.sde" nanModel).Run(threads = 1)
            let lg, sq, fd, mx = match results r with [ a; b; c; d ] -> a, b, c, d | _ -> failtest "four results"
            Expect.isTrue (Double.IsNaN lg.Value) "mean(log(x)) is NaN"
            Expect.isGreaterThan lg.NonFinite 500L "about half the paths are negative"
            Expect.isLessThan lg.NonFinite 1500L "about half"
            Expect.equal sq.NonFinite lg.NonFinite "the density counts the same paths (NaN samples)"
            Expect.isGreaterThan fd.NonFinite 500L "the response counts them too (its twins' signs may differ near 0)"
            Expect.equal mx.NonFinite 0L "a finite observable: none"
            Expect.isEmpty mx.Warnings "no warning for a finite observable"
            let w = lg.Warnings |> String.concat "\n"
            Expect.stringContains w (sprintf "%d of 2000 paths" lg.NonFinite) "how many"
            Expect.stringContains w "log of a value <= 0" "why"
            Expect.stringContains (String.concat "\n" sq.Warnings) "sqrt of a negative value" "why (density)"
            Expect.stringContains (String.concat "\n" sq.Warnings) "fall in no bin" "what it does to a density"
            Expect.stringContains (String.concat "\n" fd.Warnings) (sprintf "%d of 2000 paths" fd.NonFinite) "response"

            let t = Output.table r
            Expect.stringContains t ("warning: " + lg.Warnings.Head) "the table shows the warning"
            Expect.stringContains t (sprintf "%d NaN" sq.NonFinite) "the density summary counts the NaN samples"

            let json = Output.toJson r
            let j = JsonNode.Parse json // valid JSON: NaN written as null
            let jr = j.["sets"].[0].["results"]
            Expect.isNull jr.[0].["value"] "NaN value as null"
            Expect.equal (jr.[0].["non_finite"].GetValue<int64>()) lg.NonFinite "non_finite"
            Expect.stringContains (jr.[0].["warnings"].[0].GetValue<string>()) "log of a value <= 0" "warnings in the JSON"
            Expect.isNull jr.[3].["warnings"] "no warnings field without warnings"
        }

        test "Honest NaN observable values: the same counts on ilgpu-cpu" {
            let p =
                compile "n.sde" (ou "paths = 300; dt = 0.01; T = 1; seed = 3"
                                    ("  mean(log(x))\n  density(sqrt(x)) on [0, 2] bins 10\n  d density(sqrt(x)) / d a on [0, 2] bins 5\n"
                                     + "  d density(sqrt(x)) / d a on [0, 2] bins 5 with finite_difference(h = 0.01)\n  d mean(log(x)) / d a"))
            let cpu = (p.Run(threads = 1) |> results) |> List.map (fun q -> q.NonFinite)
            let gpu = (p.Run(1, backend = "ilgpu-cpu") |> results) |> List.map (fun q -> q.NonFinite)
            Expect.equal gpu cpu "NonFinite per query"
            Expect.isTrue (cpu |> List.forall (fun n -> n > 50L)) (sprintf "about half the paths in every query: %A" cpu)
            // density responses: the NaN samples counted once per path (not twice for the FD twins)
            Expect.equal cpu[2] cpu[1] "DK density response: as many as the density"
            Expect.isLessThanOrEqual (abs (cpu[3] - cpu[1])) 5L "FD density response: the plus twin's, about the density's"
        }

        test "Honest paths = 1: the standard error is n/a in the table, null in the JSON, with a warning" {
            let text = ou "paths = 1; dt = 0.01; T = 1; seed = 3" "  mean(x)\n  density(x) on [-2, 2] bins 4\n  d mean(x) / d a"
            let r = (compile "one.sde" text).Run(threads = 1)
            let m, d, resp = match results r with [ a; b; c ] -> a, b, c | _ -> failtest "three results"
            Expect.isTrue (Double.IsFinite m.Value) "a value"
            Expect.isTrue (Double.IsNaN m.StdErr) "no standard error"
            Expect.isTrue (d.StdErrs |> Array.forall Double.IsNaN) "no density standard errors (not a binomial 0)"
            Expect.isTrue (Double.IsNaN resp.StdErr) "no response standard error"

            for q in [ m; d; resp ] do
                Expect.contains q.Warnings "the standard error needs at least 2 paths (this run has 1)" (q.Query + ": warning")

            let t = Output.table r
            Expect.stringContains t (Output.num m.Value + " ± n/a") "n/a in the table"
            Expect.isFalse (t.Contains "± nan") "never ± nan"
            Expect.stringContains t "max stderr n/a" "density summary"
            let j = JsonNode.Parse(Output.toJson r)
            let jr = j.["sets"].[0].["results"]
            Expect.isTrue (jr.[0].AsObject().ContainsKey "stderr") "stderr present"
            Expect.isNull jr.[0].["stderr"] "stderr null"
            Expect.isNull jr.[1].["stderrs"].[0] "density stderr null"
            Expect.equal (Output.valueWithError 1.5 nan) "1.5 ± n/a" "format"
        }

        test "Honest CLI: NaN observables and one path exit 0 with warnings on stderr, also with --json" {
            use tmp = new TempDir()
            let f = tmp.File "n.sde" (ou "paths = 200; dt = 0.01; T = 1; seed = 3" "  mean(log(x))")

            for extra in [ []; [ "--json" ] ] do
                let args = [ "run"; f; "--quiet" ] @ extra
                let o = dsl args
                Expect.equal o.Code 0 (describe args o)
                Expect.isTrue (Regex.IsMatch(o.Err, @"warning: set default, 'mean\(log\(x\)\)': \d+ of 200 paths gave a NaN")) (describe args o)

            let args = [ "run"; f; "--quiet"; "--paths"; "1"; "--seed"; "1"; "--set"; "a=1" ]
            let o = dsl args
            Expect.equal o.Code 0 (describe args o)
            Expect.stringContains o.Err "standard error needs at least 2 paths" (describe args o)
        }
    ]

[<Tests>]
let tests =
    testSequenced <| testList "Honest" [ windowTests; gridTests; blowUpTests; nanTests ]
