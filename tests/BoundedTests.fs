/// Memory and time bounded up front, and fits that never print an untrue number (issue 19): binning that costs
/// O(1) per sample whatever the number of bins, the run's result size checked before it starts, samples files
/// written row by row, fit data read line by line (any line end, bounded messages), and fits whose objective is
/// not finite, whose data or bandwidth would overflow the kernel, or whose optimiser runs onto a domain's bound.
/// Timing checks compare two runs of the same test (a ratio), so the machine's load cancels.
module Sde.Tests.BoundedTests

open System
open System.Diagnostics
open System.IO
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.FitTests

let private inv = Globalization.CultureInfo.InvariantCulture

let private ou (paths: int) (extra: string) (query: string) =
    sprintf
        "model OU {\n  param theta = 1 in (0, inf)\n  state x\n  brownian W\n  init x ~ normal(0, 1)\n  d x = -theta * x dt + 0.5 dW\n}\nsimulate { paths = %d; dt = 0.1; T = 0.1; seed = 3 }\n%s\nquery {\n  %s\n}\n"
        paths extra query

/// Seconds of a single-threaded run of `src` (after a warm-up run of the same, so the JIT is not timed).
let private runSeconds (src: string) =
    let p = compile src
    p.Run(threads = 1) |> ignore
    let sw = Stopwatch.StartNew()
    p.Run(threads = 1) |> ignore
    sw.Elapsed.TotalSeconds

/// A TextWriter that keeps the text and the longest piece written at once.
type private ChunkWriter() =
    inherit StringWriter()
    member val Longest = 0 with get, set
    override w.Write(c: char) = base.Write c; w.Longest <- max w.Longest 1
    override w.Write(s: string) = base.Write s; w.Longest <- max w.Longest (if isNull s then 0 else s.Length)
    override w.Write(b: char[], i: int, n: int) = base.Write(b, i, n); w.Longest <- max w.Longest n
    override w.Write(s: ReadOnlySpan<char>) = base.Write s; w.Longest <- max w.Longest s.Length

let private binning =
    // sequenced: run apart from the parallel tests, whose load on two cores made the cheaper run's time the
    // noise (CI once measured 0.97 s against 0.41 s with the bound at 0.91)
    testSequenced <| testList "binning" [
        // before, a path's commit visited every bin: 20,000 paths x 2·10^5 bins took seconds against milliseconds
        test "a plain density costs O(1) per sample: 20,000 paths on 2·10^5 bins cost about what 200 do" {
            // the same bins in both runs, so the arrays set up once per bin (about 0.5 s here, more on a loaded
            // machine: it failed CI once compared with a run of 10 bins) cancel; a commit that visited every bin
            // would cost 20,000 x 2·10^5 = 4·10^9 visits, seconds more than 200 paths' 4·10^7
            // (the best of three interleaved runs each: a suite's run once measured 1.03 s against 0.34 s, a load spike)
            let q = "density(x) on [-3, 3] bins 200000"
            let times = List.init 3 (fun _ -> runSeconds (ou 200 "" q), runSeconds (ou 20000 "" q))
            let few, many = times |> List.map fst |> List.min, times |> List.map snd |> List.min
            Expect.isLessThan many (2.0 * few + 0.3) (sprintf "20,000 paths %.2f s, 200 paths %.2f s (best of three)" many few)
        }
        test "a density response costs O(1) per sample: 20,000 paths on 5·10^4 bins cost about what 2,000 do" {
            // (its exact sums are set up once per bin, so the comparison is of path counts on the same bins)
            let q = "d density(x) / d theta on [-3, 3] bins 50000 with divergence_kernel(rate = 1)"
            let few = runSeconds (ou 2000 "" q)
            let many = runSeconds (ou 20000 "" q)
            Expect.isLessThan many (2.0 * few + 0.3) (sprintf "20,000 paths %.2f s, 2,000 paths %.2f s" many few)
        }
    ]

let private resultSize =
    testList "result size" [
        test "1,000 sets x a 10^7-bin density is refused before the run, at the query, naming the limit" {
            let ds = compileErrors (ou 100 "sweep theta from 0.001 to 1 step 0.001" "density(x) on [-3, 3] bins 10000000")
            let d = List.head ds
            Expect.equal (d.Line, d.Col) (11, 3) d.Message
            Expect.stringContains d.Message "limit of 1e+07" "names the limit"
            Expect.stringContains d.Message "1000 parameter sets" "says why"
        }
        test "two 10^7-bin densities in one set pass the limit (their JSON would pass 2^30 characters); one does not" {
            let ds = compileErrors (ou 100 "" "density(x) on [-3, 3] bins 10000000\n  density(x^2) on [0, 3] bins 10000000")
            Expect.equal ((List.head ds).Line, (List.head ds).Col) (12, 3) (List.head ds).Message
            compile (ou 100 "" "density(x) on [-3, 3] bins 10000000") |> ignore
        }
        test "samples over sets are bounded in all: 2 sets x 6·10^7 paths is refused" {
            let ds = compileErrors (ou 60000000 "sweep theta from 1 to 2 step 1" "samples(x)")
            Expect.stringContains (List.head ds).Message "limit of 1e+08 per run" (List.head ds).Message
        }
        test "a samples file is written row by row (a 6·10^7-row file as one string passed 2^30 characters)" {
            let r = (compile (ou 500 "" "samples(x, x^2)")).Run(threads = 1)
            let q = r.Sets.Head.Results.Head
            use w = new ChunkWriter()
            Output.writeSamplesCsv w q
            Expect.isLessThan w.Longest 100 "no write is longer than a row"
            let lines = w.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 501 "header and a row per path"
            Expect.equal (Double.Parse(lines[1].Split(',')[0], inv)) q.Values[0] "the first value"
        }
    ]

let private fitModel (theta: string) (paths: int) (fitBody: string) =
    sprintf
        "model OU {\n  param theta = %s\n  state x\n  brownian W\n  init x = 1\n  d x = -theta * x dt + 0.5 dW\n}\nsimulate { paths = %d; dt = 0.05; T = 1; seed = 5 }\nfit theta to \"data.csv\" { %s }\n"
        theta paths fitBody

/// Fit.fit of `src` with its data in `dir`: the report, or the error and whether the run failed (exit 3).
let private runFit (src: string) (dir: string) =
    let p = compile src
    Fit.fit "fit.sde" p.Program.File p.FitSpec.Value { Fit.defaultFitOptions with BaseDir = dir; Threads = 1 }

let private withData (text: string) (f: string -> unit) =
    let dir = Path.Combine(Path.GetTempPath(), "sde-bounded-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore

    try
        File.WriteAllText(Path.Combine(dir, "data.csv"), text)
        f dir
    finally
        Directory.Delete(dir, true)

let private gaussianData (mean: float) (sd: float) (n: int) =
    let z = normals 11
    "x\n" + String.concat "" (Seq.init n (fun _ -> (mean + sd * z ()).ToString("R", inv) + "\n"))

let private fits =
    testList "fits" [
        test "data with lone CR line ends read as their lines, like LF and CR LF" {
            let p = compile (fitModel "1 in (0, inf)" 10 "objective = kl at T")
            let parse t = Fit.parseData "d.csv" p.Program.File.Model t

            match parse "x\r1\r2.5\r\r# c\r3\r", parse "x\n1\n2.5\n\n# c\n3\n", parse "x\r\n1\r\n2.5\r\n\r\n# c\r\n3" with
            | Ok a, Ok b, Ok c ->
                Expect.equal a.Values [| 1.0; 2.5; 3.0 |] "CR"
                Expect.equal b.Values a.Values "LF"
                Expect.equal c.Values a.Values "CR LF"
            | r -> failtestf "%A" r

            // and a bad row after lone CRs is named by its line
            match parse "x\r1\r2,3\r" with
            | Error e -> Expect.stringContains e "line 3" e
            | Ok _ -> failtest "expected an error"
        }
        test "a message that quotes the data is bounded: a 500,000-character header cell, a file with no line ends" {
            let p = compile (fitModel "1 in (0, inf)" 10 "objective = kl at T")

            match Fit.parseData "d.csv" p.Program.File.Model (String('y', 500000) + "\n1\n2\n") with
            | Error e -> Expect.isLessThan e.Length 300 e
            | Ok _ -> failtest "expected an error"

            match Fit.parseData "d.csv" p.Program.File.Model ("x\r" + String.replicate 200000 "1,\r") with
            | Error e -> Expect.isLessThan e.Length 300 e
            | Ok _ -> failtest "expected an error"

            match Fit.parseData "d.csv" p.Program.File.Model (String('1', 3_000_000)) with
            | Error e -> Expect.stringContains e "limit of a data line" e
            | Ok _ -> failtest "expected an error"
        }
        test "a constant column is a located error at the data file (the bandwidth rule gives 0), not a fit of NaN" {
            withData ("x\n" + String.replicate 50 "1\n") (fun dir ->
                match runFit (fitModel "1 in (0, inf)" 100 "objective = kl at T; iterations = 3") dir with
                | Error e ->
                    Expect.isFalse e.RunFailed "an input error (exit 2)"
                    Expect.equal (e.Diagnostics.Head.Pos.Line, e.Diagnostics.Head.Pos.Col) (9, 14) "at the data file's name"
                    Expect.stringContains e.Diagnostics.Head.Message "constant" e.Diagnostics.Head.Message
                | Ok r -> failtestf "fitted %A, loss %g" r.Fitted r.FinalLoss)
        }
        test "data of 1e308 and bandwidths of 1e308 or 1e-310 are located errors naming the limit" {
            withData ("x\n1\n1e308\n2\n") (fun dir ->
                match runFit (fitModel "1 in (0, inf)" 100 "objective = kl at T; iterations = 3") dir with
                | Error e ->
                    Expect.isFalse e.RunFailed "an input error"
                    Expect.stringContains e.Diagnostics.Head.Message "line 3" e.Diagnostics.Head.Message
                    Expect.stringContains e.Diagnostics.Head.Message "limit of a data value" e.Diagnostics.Head.Message
                | Ok r -> failtestf "fitted %A" r.Fitted)

            for bw in [ "1e308"; "1e-310"; "1e-300" ] do
                let ds = compileErrors (fitModel "1 in (0, inf)" 100 (sprintf "objective = kl at T; bandwidth = %s" bw))
                Expect.stringContains (List.head ds).Message "bandwidth must be from 1e-100 to 1e100" bw
        }
        test "an objective that is not finite ends the fit (exit 3) saying why, at the first evaluation" {
            // paths at 1e200 against data at 0 on a bandwidth of 1e-50: the kernel's squares overflow
            let src = (fitModel "1 in (0, inf)" 50 "objective = kl at T; bandwidth = 1e-50; iterations = 3").Replace("-theta * x dt", "theta * 1e200 dt")

            withData (gaussianData 0.0 1.0 50) (fun dir ->
                match runFit src dir with
                | Error e ->
                    Expect.isTrue e.RunFailed "a failed run (exit 3)"
                    Expect.stringContains e.Diagnostics.Head.Message "the objective is NaN" e.Diagnostics.Head.Message
                | Ok r -> failtestf "a fit of a NaN objective: fitted %A, loss %g" r.Fitted r.FinalLoss)
        }
        test "adam at a large rate never reports a closed bound; the pasted params block stays inside the domain" {
            // data from theta = 3 on (0, 1): the optimum is beyond the bound, and lr = 5 runs u past 37 (sigmoid = 1.0)
            // (the SDE's law at T from x0 = 1: mean e^-3, variance 0.25 (1 - e^-6) / 6)
            withData (gaussianData (exp -3.0) (sqrt (0.25 * (1.0 - exp -6.0) / 6.0)) 200) (fun dir ->
                match runFit (fitModel "0.5 in (0, 1)" 200 "objective = kl at T; optimizer = adam(lr = 5); iterations = 20") dir with
                | Ok r ->
                    Expect.isLessThan r.Fitted[0] 1.0 "strictly inside"
                    let block = Fit.paramsBlock r [ "theta", 0.5 ]
                    let text = block.Substring(block.IndexOf "= " + 2).TrimEnd(' ', '}')
                    Expect.isLessThan (Double.Parse(text, inv)) 1.0 block
                    Expect.exists r.Warnings (fun w -> w.Contains "on the bound 1 of its domain") (String.Join("\n", r.Warnings))
                | Error e -> failtestf "%A" e.Diagnostics)
        }
        test "a value whose error is larger than itself is printed to 6 digits, not rounded to the error's precision" {
            Expect.equal (Fit.fittedText 4.886123 2.7e7) "4.88612 ± 2.7e+07" "as fit.json holds it"
            Expect.equal (Fit.fittedText 4.886123 0.01) (Output.valueWithError 4.886123 0.01) "a small error: to its precision"
        }
        test "dsl fit --json on data of 1e308: a located error and exit 2, never the JSON serializer's text" {
            withData ("x\n1\n1e308\n2\n") (fun dir ->
                File.WriteAllText(Path.Combine(dir, "fit.sde"), fitModel "1 in (0, inf)" 20 "objective = kl at T; iterations = 2")
                let o = CliTests.dslIn dir [ "fit"; "fit.sde"; "--json"; "--quiet" ]
                Expect.equal o.Code 2 (o.Out + o.Err)
                Expect.stringStarts o.Err "fit.sde:9:14: error: data.csv, line 3" o.Err
                Expect.isFalse (o.Err.Contains "http") o.Err
                Expect.equal o.Out "" "no JSON")
        }
        test "fit.json writes a non-finite number as null, never through the serializer's exception" {
            withData (gaussianData 0.1 0.5 40) (fun dir ->
                match runFit (fitModel "1 in (0, inf)" 50 "objective = kl at T; iterations = 2; optimizer = adam(lr = 0.1)") dir with
                | Ok r ->
                    let json = Fit.toJson { r with Bandwidth = [| nan |]; FinalLoss = infinity }
                    use doc = Text.Json.JsonDocument.Parse json
                    let bw = doc.RootElement.GetProperty("data").GetProperty("bandwidth")
                    Expect.equal (bw[0].ValueKind) Text.Json.JsonValueKind.Null "null"
                | Error e -> failtestf "%A" e.Diagnostics)
        }
    ]

[<Tests>]
let tests = testList "bounded" [ binning; resultSize; fits ]
