/// Recorded runs on the ILGPU backends (the tangent kernel writes each path's values): `samples(...)`,
/// `score(...)` and `dsl fit` give the CPU engine's numbers bit for bit on ilgpu-cpu, and what the GPU
/// cannot record is a located refusal, not a CPU run under the GPU's name.
module Sde.Tests.GpuRecordTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Sde
open Sde.Core.Gpu
open Sde.Lang

let private compile (text: string) =
    match SdeCompiler.Compile(text, "rec.sde") with
    | Ok p -> p
    | Error ds -> failwithf "does not compile: %A" ds

let private bits (xs: float[]) = Array.map BitConverter.DoubleToInt64Bits xs

/// The JSON of a report without the timing and the backend's name (what differs between the two runs).
let private withoutRunFacts (json: string) =
    let doc = JsonNode.Parse(json).AsObject()
    for key in [ "timing"; "seconds"; "path_steps_per_second" ] do doc.Remove key |> ignore
    (doc["settings"].AsObject()).Remove "backend" |> ignore
    doc

/// cpu and ilgpu-cpu on the same file: identical JSON, every samples / score value the same bits, and the
/// record came from the tangent kernel.
let private sameRecord (text: string) =
    let p = compile text
    let cpu = p.Run(1, backend = "cpu")
    let before = GpuTangent.RecordedRuns
    let gpu = p.Run(1, backend = "ilgpu-cpu")
    Expect.isGreaterThan GpuTangent.RecordedRuns before "the record ran on the tangent kernel, not on the CPU engine"
    Expect.equal gpu.Settings.Backend "ilgpu-cpu" "backend"
    let a, b = withoutRunFacts (SdeCompiler.ToJson cpu), withoutRunFacts (SdeCompiler.ToJson gpu)
    if not (JsonNode.DeepEquals(a, b)) then failtestf "JSON differs:\ncpu: %s\ngpu: %s" (a.ToJsonString()) (b.ToJsonString())
    for sa, sb in List.zip cpu.Sets gpu.Sets do
        for ra, rb in List.zip sa.Results sb.Results do
            Expect.isGreaterThan ra.Values.Length 0 (sprintf "%s: values" ra.Query)
            Expect.equal (bits rb.Values) (bits ra.Values) (sprintf "%s: values, bit for bit" ra.Query)
            Expect.equal (bits rb.StdErrs) (bits ra.StdErrs) (sprintf "%s: standard errors, bit for bit" ra.Query)
            Expect.equal (bits rb.Grid) (bits ra.Grid) (sprintf "%s: grid" ra.Query)

// OU with a normal init and a parameter in the drift: samples at T, a trajectory, the score
let private ou =
    """
model OU {
  param theta = 1 in (0, inf)
  param mu = 0.3
  state x
  brownian W
  init x ~ normal(1, 0.5)
  d x = -theta * (x - mu) dt + 0.5 dW
}
simulate { paths = 300; dt = 0.01; T = 0.5; seed = 7 }
query {
  samples(x, x^2)
  samples(x) every 0.1
  score(x) on [-1, 2] bins 10
}
"""

// two states, a parameter in the drift, state-dependent (multiplicative) noise on two lanes
let private twoD =
    """
model Two {
  param a = 0.7
  param b = 0.4 in (0, inf)
  state x
  state y
  brownian W1
  brownian W2
  init x ~ normal(0, 1)
  init y = 0.5
  d x = (a * y - x) dt + 0.3 * (1 + 0.1 * y^2) dW1
  d y = (-b * y + 0.2 * x) dt + 0.4 dW2
}
simulate { paths = 200; dt = 0.02; T = 0.4; seed = 3 }
query {
  samples(x, y, x * y)
  samples(x, y) every 0.1
  score(y) on [-1, 2] bins 6
}
"""

// one noise lane for two states: the divergence kernel's Π ≠ I branch (σ⁺ = (σᵀσ)⁻¹σᵀ, Π = σσ⁺)
let private degenerate =
    """
model Osc {
  state x
  state v
  brownian W
  init x ~ normal(1, 0.2)
  init v ~ normal(0, 0.2)
  d x = v dt
  d v = -x dt + 0.3 dW
}
simulate { paths = 100; dt = 0.01; T = 0.2; seed = 1 }
query {
  samples(x)
  score(v) on [-1, 1] bins 4
}
"""

/// `dsl fit` of an example (few paths, few iterations) on `backend`: fit.json without the timing and backend.
let private fitJson (file: string) (paths: int64) (iterations: int) (backend: string) =
    let dir = GpuTests.examplesDir.Value
    let path = Path.Combine(dir, file)
    let p =
        match SdeCompiler.Compile(File.ReadAllText path, path) with
        | Ok p -> p
        | Error ds -> failwithf "%s does not compile: %A" file ds
    let spec = { p.FitSpec.Value with Paths = Some paths; Iterations = iterations }
    match Fit.fit file p.Program.File spec { Fit.defaultFitOptions with BaseDir = dir; Threads = 1; Backend = backend } with
    | Ok r ->
        Expect.equal r.Backend backend "the report names the backend"
        let doc = JsonNode.Parse(Fit.toJson r).AsObject()
        doc.Remove "timing" |> ignore
        (doc["settings"].AsObject()).Remove "backend" |> ignore
        doc
    | Error e -> failtestf "%s on %s: %A" file backend e.Diagnostics

let private sameFit (file: string) (paths: int64) (iterations: int) =
    let cpu = fitJson file paths iterations "cpu"
    let before = GpuTangent.RecordedRuns
    let gpu = fitJson file paths iterations "ilgpu-cpu"
    Expect.isGreaterThan GpuTangent.RecordedRuns before "the fit's simulations ran on the tangent kernel"
    // fitted values, standard errors, loss, history: the same bits (JSON numbers are written round-trip)
    if not (JsonNode.DeepEquals(cpu, gpu)) then failtestf "fit.json differs:\ncpu: %s\ngpu: %s" (cpu.ToJsonString()) (gpu.ToJsonString())

[<Tests>]
let gpuRecordTests =
    testSequenced <| testList "Gpu record" [
        test "samples and score of OU (normal init, parameter in the drift): ilgpu-cpu equals cpu bit for bit" { sameRecord ou }
        test "samples and score of a 2-D model with multiplicative noise: ilgpu-cpu equals cpu bit for bit" { sameRecord twoD }
        test "dsl fit examples/fit_ou.sde (kl at T): ilgpu-cpu gives cpu's fit bit for bit" { sameFit "fit_ou.sde" 300L 3 }
        test "dsl fit examples/fit_ou_stationary.sde (stationary recording): ilgpu-cpu gives cpu's fit bit for bit" { sameFit "fit_ou_stationary.sde" 100L 2 }
        test "samples and score of a model with degenerate noise (one noise lane, two states: the kernel's Π ≠ I branch): ilgpu-cpu equals cpu bit for bit" { sameRecord degenerate }
        test "recorded queries and fits on cuda: a located refusal until the tangent kernel is checked on a device" {
            if Environment.GetEnvironmentVariable "DSL_CUDA_TANGENT" <> "1" then
                let e = Expect.throwsC (fun () -> (compile ou).Run(1, backend = "cuda") |> ignore) id
                Expect.isTrue (e :? NotSupportedException) "NotSupportedException (exit 2)"
                Expect.stringStarts e.Message "12:3: 'samples(x, x^2)': per-path values are recorded by the tangent kernel" "located at the first recorded query"
                let dir = GpuTests.examplesDir.Value
                let path = Path.Combine(dir, "fit_ou.sde")
                match SdeCompiler.Compile(File.ReadAllText path, path) with
                | Error ds -> failtestf "%A" ds
                | Ok p ->
                    match Fit.fit "fit_ou.sde" p.Program.File p.FitSpec.Value { Fit.defaultFitOptions with BaseDir = dir; Backend = "cuda" } with
                    | Ok _ -> failtest "a fit on cuda ran"
                    | Error e ->
                        Expect.isFalse e.RunFailed "an input error (exit 2)"
                        Expect.stringContains e.Diagnostics.Head.Message "the cuda backend does not run yet" "says why"
                        Expect.equal e.Diagnostics.Head.Pos p.FitSpec.Value.Pos "located at the fit block"
        }
    ]
