/// Weighted (Feynman–Kac) models on the ILGPU backends: the weighted step kernel against the CPU
/// engine, bit for bit (the population operations are the same host code, the steps the same
/// arithmetic on the same normals), and the located refusals of what the GPU backends do not run.
module Sde.Tests.GpuWeightedTests

open System
open System.IO
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open Expecto
open Sde
open Sde.Core
open Sde.Core.Gpu
open Sde.Lang

/// The examples whose model declares a weight (`weight NAME` on a line of its own).
let private weightedExamples () =
    Directory.GetFiles(GpuTests.examplesDir.Value, "*.sde")
    |> Array.sort
    |> Array.filter (fun f -> Regex.IsMatch(File.ReadAllText f, @"(?m)^\s*weight\s+\w+\s*$"))

let private compile (text: string) (file: string) (o: Frontend.Overrides) =
    match SdeCompiler.Compile(text, file, o) with
    | Ok p -> p
    | Error ds -> failwithf "%s does not compile: %A" file ds

/// The JSON of a report without what differs between two runs of the same results: the timing and
/// the backend's name.
let private resultsJson (r: Report.RunReport) =
    let doc = JsonNode.Parse(SdeCompiler.ToJson r).AsObject()
    for key in [ "timing"; "seconds"; "path_steps_per_second" ] do doc.Remove key |> ignore
    (doc["settings"].AsObject()).Remove "backend" |> ignore
    doc

/// The same file on cpu and ilgpu-cpu: identical JSON (every value, standard error, bias, warning), and
/// the weighted step kernel ran.
let private sameOnBoth (p: CompiledProgram) =
    let cpu = p.Run(1, backend = "cpu")
    let launches = GpuWeighted.Launches
    let gpu = p.Run(1, backend = "ilgpu-cpu")
    Expect.equal gpu.Settings.Backend "ilgpu-cpu" "backend recorded"
    Expect.isGreaterThan GpuWeighted.Launches launches "the steps ran on the weighted step kernel"
    let a, b = resultsJson cpu, resultsJson gpu
    if not (JsonNode.DeepEquals(a, b)) then
        failtestf "cpu and ilgpu-cpu differ:\ncpu:   %s\ngpu:   %s" (a.ToJsonString()) (b.ToJsonString())
    gpu

let private birthDeath =
    """
model Bd {
  state x
  brownian W
  weight w
  let V = 4 * (x^2 - 1)^2 + 0.5 * x
  init x ~ normal(-1, 0.3)
  d x = -(16 * x * (x^2 - 1) + 0.5) dt + sqrt(2) dW
  d log w = -(log_density(x) + V) dt
}
simulate { paths = 300; dt = 0.002; T = 0.2; seed = 5; resample = birth_death; bandwidth = 0.1 }
query {
  mean(x)
  mean(if x > 0 then 1 else 0)
  density(x) on [-2, 2] bins 20
  log_normalizer
  ess
}
"""

/// Every resampling scheme on a weight without log_density (the genealogy standard errors, log Ẑ).
let private schemes =
    """
model Tilt {
  param a = 3
  state x
  brownian W
  weight w
  init x ~ normal(0, 1)
  d x = -x dt + dW
  d log w = -a * x^2 dt
}
simulate { paths = 300; dt = 0.01; T = 0.3; seed = 3; resample = RESAMPLE; ess = 0.9 }
query {
  mean(x^2)
  mean(x) over [0.1, 0.3]
  density(x) on [-2, 2] bins 16
  log_normalizer
  ess
}
"""

let private blowUp =
    """
model Boom {
  state x
  brownian W
  weight w
  init x ~ normal(0, 1)
  d x = x^3 dt + 0.1 dW
  d log w = -x^2 dt
}
simulate { paths = 64; dt = 0.05; T = 5; seed = 2; resample = systematic }
query { mean(x) }
"""

let private degenerate =
    """
model Osc {
  param g = 0.5
  state x
  state v
  brownian W
  init x ~ normal(0, 1)
  init v ~ normal(0, 1)
  d x = v dt
  d v = (-x - g * v) dt + 0.5 dW
}
simulate { paths = 8; dt = 0.01; T = 0.5; seed = 1 }
query {
  mean(x^2)
  d mean(x^2) / d g with divergence_kernel
}
"""

let private quick = { Frontend.noOverrides with Paths = Some 300L }

[<Tests>]
let tests =
    testSequenced <| testList "Gpu weighted" [
        testList "ilgpu-cpu gives the cpu JSON on every weighted example (300 paths)" [
            for file in weightedExamples () ->
                let name = Path.GetFileName file
                // the WFR examples run their population through a kernel estimate every step: at 300 paths
                // and their own horizons many seconds on the CPU accelerator (CI's exhaustive tier); the quick
                // tier runs 80 steps of dt = 0.025 to T = 2 (every step still a launch, a density and a resampling)
                testList name [
                    test "80 steps to T = 2" {
                        sameOnBoth (compile (File.ReadAllText file) file { quick with T = Some 2.0; Dt = Some 0.025 }) |> ignore
                    }
                    test "the file's horizon [slow tier]" {
                        Tier.requireSlow "a weighted example to its own T on ILGPU's CPU accelerator (up to about 10 s)"
                        sameOnBoth (compile (File.ReadAllText file) file quick) |> ignore
                    }
                ]
        ]

        test "every resampling scheme: ilgpu-cpu gives the cpu JSON" {
            for scheme in [ "none"; "multinomial"; "systematic"; "stratified"; "residual" ] do
                let text = schemes.Replace("RESAMPLE", scheme)
                let gpu = sameOnBoth (compile text (scheme + ".sde") Frontend.noOverrides)
                let ess = (List.head gpu.Sets).Results |> List.find (fun r -> r.Query = "ess")
                if scheme <> "none" then Expect.isGreaterThan (defaultArg ess.Resamplings 0L) 0L (sprintf "%s resampled" scheme)
        }

        test "WFR birth-death: ilgpu-cpu gives the cpu JSON" {
            sameOnBoth (compile birthDeath "bd.sde" Frontend.noOverrides) |> ignore
        }

        test "WFR with independent replicas (1024 paths): ilgpu-cpu gives the cpu JSON" {
            let p = compile birthDeath "bd_replicas.sde" { Frontend.noOverrides with Paths = Some 1024L; T = Some 0.05 }
            let gpu = sameOnBoth p
            let m = (List.head gpu.Sets).Results |> List.find (fun r -> r.Query = "mean(x)")
            Expect.isTrue (Double.IsFinite m.StdErr) "replicas give a standard error"
        }

        test "launches in chunks give the same bits as one launch and as the CPU engine" {
            let text = schemes.Replace("RESAMPLE", "systematic")
            let p = compile text "chunks.sde" Frontend.noOverrides
            let prog = p.Program
            let plans = Driver.plainPlans prog
            let wp = Weighted.weightPlan prog.File prog.File.Weight.Value
            let model = prog.Compiled.Instance prog.File.Sets.Head.Values
            let st () = RunSettings(Paths = 300L, Dt = 0.01, T = 0.3, Seed = 3UL, Threads = 1)
            let cpu = WeightedRunner.For(prog.Compiled.Type).Run(model, st (), wp, plans)
            let run (maxPaths: int64) =
                let mi = typeof<GpuWeighted>.GetMethod("Run").MakeGenericMethod(prog.Compiled.Type)
                mi.Invoke(null, [| box GpuBackend.IlgpuCpu; model; box (st ()); box wp; box plans; box maxPaths |]) :?> WeightedResult
            let bits (x: float) = BitConverter.DoubleToInt64Bits x
            for r in [ run 0L; run 37L ] do
                Expect.equal (bits r.LogNormalizer) (bits cpu.LogNormalizer) "log Z"
                Expect.equal (bits r.FinalEss) (bits cpu.FinalEss) "ess"
                Expect.equal r.Resamplings cpu.Resamplings "resamplings"
                for e, f in Array.zip cpu.Estimates r.Estimates do
                    Expect.equal (bits f.Value) (bits e.Value) "value"
                    Expect.equal (bits f.StdErr) (bits e.StdErr) "stderr"
                    if not (isNull e.Values) then Expect.equal (Array.map bits f.Values) (Array.map bits e.Values) "bins"
        }

        test "a weighted population that blows up fails the same way on both backends" {
            let p = compile blowUp "boom.sde" Frontend.noOverrides
            let message backend =
                try
                    p.Run(1, backend = backend) |> ignore
                    failtestf "%s: expected the run to fail" backend
                with :? SimulationFailedException as e -> e.Message
            let cpu = message "cpu"
            Expect.equal (message "ilgpu-cpu") cpu "the same step, time and count"
        }

        test "cuda refuses a weighted model with a located error, before looking for a device" {
            let file = (weightedExamples ()).[0]
            let p = compile (File.ReadAllText file) file { quick with Paths = Some 4L }
            try
                p.Run(1, backend = "cuda") |> ignore
                failtest "expected NotSupportedException"
            with :? NotSupportedException as e ->
                Expect.isMatch e.Message @"^\d+:\d+: 'weight \w+' makes a weighted .*cuda backend cannot run yet.*DSL_CUDA_WEIGHTED=1" "located refusal"
        }

        test "the divergence-kernel method with degenerate noise runs on ilgpu-cpu with the cpu's numbers (it was refused until 2026-12-07)" {
            let p = compile degenerate "osc.sde" Frontend.noOverrides
            let cpu = p.Run(1, backend = "cpu")
            let gpu = p.Run(1, backend = "ilgpu-cpu")
            Expect.equal gpu.Settings.Backend "ilgpu-cpu" "backend"
            for a, b in List.zip (List.head cpu.Sets).Results (List.head gpu.Sets).Results do
                // the default mode at d = 2 is exact (dense LU on both): the same operations
                Expect.equal (BitConverter.DoubleToInt64Bits b.Value) (BitConverter.DoubleToInt64Bits a.Value) (sprintf "%s: value" a.Query)
                Expect.equal (BitConverter.DoubleToInt64Bits b.StdErr) (BitConverter.DoubleToInt64Bits a.StdErr) (sprintf "%s: standard error" a.Query)
        }

        testList "every weighted example's step kernel compiles to PTX (no GPU needed)" [
            for file in weightedExamples () ->
                test (Path.GetFileName file) {
                    let p = compile (File.ReadAllText file) file { quick with Paths = Some 1L }
                    let ptx = Ptx.Compile(p.ModelType, Ptx.ParseArch "sm_70", true)
                    Expect.equal (ptx |> Array.map (fun struct (n, _) -> n)) [| "weighted_step" |] "kernels"
                    for struct (name, text) in ptx do
                        Expect.stringContains text ".entry" (sprintf "%s has an entry point" name)
                        Expect.isFalse (text.Contains ".extern .func") (sprintf "%s calls no undefined function" name)
                }
        ]
    ]
