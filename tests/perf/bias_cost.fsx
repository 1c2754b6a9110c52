// The cost of the default discretisation-error estimate (docs/discretisation.md, issue 21) in one
// process: each file with `bias = estimate` (the default) against `bias = off`, interleaved, REPS times
// after one untimed run of each, on THREADS threads (1: the engines run on this thread, so its CPU time
// is the simulation's work, which the load of a shared machine disturbs much less than wall time).
// Prints the pairs run (the bias's samples: a weighted model's half-step paths), the minimum wall times and their ratio, the median of the per-run wall ratios,
// and the median thread CPU times (Linux: clock_gettime(CLOCK_THREAD_CPUTIME_ID)) and their ratio.
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi tests/perf/bias_cost.fsx [REPS] [THREADS] [FILE...]
//       (default 5, 1, examples ou gbm double_well anneal ou_response and tests/perf/bias_kinds.sde)
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/OxyPlot.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"
open System
open System.Runtime.InteropServices
open Sde
open Sde.Lang
[<Struct; StructLayout(LayoutKind.Sequential)>]
type Timespec = val mutable sec: int64; val mutable nsec: int64
[<DllImport("libc")>]
extern int clock_gettime(int clk, Timespec& ts)
let cpu () = let mutable t = Timespec() in clock_gettime(3, &t) |> ignore; float t.sec + 1e-9 * float t.nsec
let args = fsi.CommandLineArgs
let reps = if args.Length > 1 then int args[1] else 5
let threads = if args.Length > 2 then int args[2] else 1
let root = IO.Path.GetFullPath(IO.Path.Combine(__SOURCE_DIRECTORY__, "..", ".."))
let files =
    if args.Length > 3 then args[3..]
    else
        [| for e in [ "ou"; "gbm"; "double_well"; "anneal"; "ou_response" ] -> IO.Path.Combine(root, "examples", e + ".sde")
           yield IO.Path.Combine(root, "tests", "perf", "bias_kinds.sde") |]
let compile (text: string) =
    match SdeCompiler.Compile(text, "bench.sde") with
    | Ok p -> p
    | Error ds -> failwithf "%A" (ds |> List.map (fun d -> d.Rendered))
for f in files do
    let src = IO.File.ReadAllText f
    let variant s = compile (src.Replace("\nsimulate {", "\nsimulate {\n  " + s + "\n"))
    let off = variant "bias = off"
    let est = variant ""
    let run (p: CompiledProgram) =
        let c0 = cpu ()
        let r = Driver.run p.Program { Driver.defaultOptions with Threads = threads }
        // the report's seconds: the simulation's wall time, as the JSON's timing.seconds
        r, r.Seconds, cpu () - c0
    run off |> ignore; run est |> ignore
    let ro = ResizeArray()
    let re = ResizeArray()
    let mutable pairs = 0L
    for i in 1 .. reps do
        let _, w, c = run off
        ro.Add((w, c))
        let r, w2, c2 = run est
        re.Add((w2, c2))
        pairs <- r.Sets |> List.collect (fun s -> s.Results) |> List.choose (fun q -> q.Bias) |> List.map (fun b -> b.Samples) |> List.fold max 0L
    let med (xs: float seq) = let a = Seq.sort xs |> Seq.toArray in a[a.Length / 2]
    let wo = ro |> Seq.map fst |> Seq.min
    let we = re |> Seq.map fst |> Seq.min
    let co = ro |> Seq.map snd |> med
    let ce = re |> Seq.map snd |> med
    let wr = Seq.map2 (fun (a, _) (b, _) -> b / a) ro re |> med
    printfn "%-16s pairs %6d  wall min off %.3f est %.3f ratio %.3f (median of ratios %.3f)  thread-cpu med off %.3f est %.3f ratio %.3f" (IO.Path.GetFileNameWithoutExtension f) pairs wo we (we / wo) wr co ce (ce / co)
