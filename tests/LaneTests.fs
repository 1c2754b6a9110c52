/// Lanes over paths (core/Simulation/EngineLanes.cs, dsl/lang/back/LaneEmit.fs): the plain engine's four
/// paths per step in the lanes of a Vector256 give every number of one path at a time bit for bit
/// (means, densities, windows, `if`, the functions, periodic indices, reductions, several sets, a path
/// count that is not a multiple of 4, two threads), a failure is reported in the same words, and the
/// normals of four paths are each path's normals.
module Sde.Tests.LaneTests

#nowarn "9" // a pinned array as a pointer for Normals.FillAcrossPaths4

open System
open Expecto
open Sde
open Sde.Core
open Sde.Lang

let private compile (src: string) =
    match SdeCompiler.Compile(src, "lanes.sde") with
    | Ok p -> p
    | Error ds -> failtestf "%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let private bitsOf (x: float) = BitConverter.DoubleToInt64Bits x
let private arrBits (xs: float[]) = if isNull xs then [||] else Array.map bitsOf xs

/// The report of a run with `lanes` paths per step (1 or 4) on `threads` threads.
let private runWith (p: CompiledProgram) (lanes: int) (threads: int) =
    let saved = Engine.LanesOnThisThread
    Engine.LanesOnThisThread <- lanes
    try Driver.run p.Program { Driver.defaultOptions with Threads = threads }
    finally Engine.LanesOnThisThread <- saved

/// As `runWith`, keeping the sets that failed: the report and the failures' messages.
let private runKeepingWith (p: CompiledProgram) (lanes: int) =
    let saved = Engine.LanesOnThisThread
    Engine.LanesOnThisThread <- lanes
    try
        let r, es = Driver.runKeeping p.Program { Driver.defaultOptions with Threads = 1 }
        r, es |> List.map (fun e -> e.Message)
    finally Engine.LanesOnThisThread <- saved

let private sameReports (a: Report.RunReport) (b: Report.RunReport) =
    Expect.equal a.Sets.Length b.Sets.Length "sets"
    for s1, s2 in List.zip a.Sets b.Sets do
        Expect.equal s1.Failure s2.Failure (sprintf "set %s: failure" s1.Name)
        Expect.equal s1.Results.Length s2.Results.Length "results"
        for q1, q2 in List.zip s1.Results s2.Results do
            let what = sprintf "set %s, %s" s1.Name q1.Query
            Expect.equal (bitsOf q1.Value) (bitsOf q2.Value) (what + ": value bits")
            Expect.equal (bitsOf q1.StdErr) (bitsOf q2.StdErr) (what + ": stderr bits")
            Expect.equal (arrBits q1.Values) (arrBits q2.Values) (what + ": bin value bits")
            Expect.equal (arrBits q1.StdErrs) (arrBits q2.StdErrs) (what + ": bin stderr bits")
            Expect.equal (q1.Count, q1.Below, q1.Above, q1.NonFinite) (q2.Count, q2.Below, q2.Above, q2.NonFinite) (what + ": counts")
            Expect.equal q1.Warnings q2.Warnings (what + ": warnings")

/// The program's model has a lane step, and a run of it chooses the lanes.
let private hasLanes (p: CompiledProgram) =
    let c = p.Program.Compiled
    let m = c.Instance(Array.zeroCreate c.Ir.ParamNames.Length) :?> ISdeLaneModel
    Expect.equal m.LaneWidth 4 "the model has a lane step"
    Expect.isTrue (Engine.ChooseLanes(RunSettings(Paths = 100L, Dt = 0.1, T = 1.0, Lanes = 4), m.LaneWidth, c.Ir.Dim) || not Runtime.Intrinsics.X86.Avx2.IsSupported) "lanes are chosen"

let private ou =
    """
model OU {
  param theta = 1 in (0, inf)
  param sigma = 0.5 in (0, inf)
  param x0 = 1
  state x
  brownian W
  init x = x0
  d x = -theta * x dt + sigma dW
}

simulate { paths = 203; dt = 0.01; T = 0.3; seed = 7 }

params base {}
params fast { theta = 3 }

query {
  mean(x)
  mean(x^2)
  mean(x) over [0.1, 0.3]
  density(x) on [-1.5, 2] bins 35
  density(x) on [-0.5, 0.5] bins 7 over [0, 0.3]
}
"""

// every function, `if` on time, min/max/abs, periodic indices, reductions in the drift and in an
// observable, multiplicative noise, normal and uniform initial laws
let private mix =
    """
model Mix {
  const N = 6
  param a = 0.7 in (0, inf)
  param s = 0.3 in (0, inf)
  state x[N] periodic
  state y
  brownian W[N]
  brownian B
  init x[i] ~ normal(a, 0.5)
  init y ~ uniform(-1, 1)
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] * 0.1 - a * x[i] + (if t < 0.05 then sin(x[i]) else cos(y)) + exp(-x[i]^2) * tanh(y) + log(1 + x[i]^2) / 3 + pow(1 + y^2, 0.3) - sqrt(1 + abs(y)) + min(x[i], 1) - max(y, -1) + sigmoid(y) + sum(j, x[j]) / N) dt + s * (1 + 0.1 * sin(x[i])) dW[i]
  d y = (sum(j, x[j] * x[j]) / N - y^3 + tan(0.1 * y) - x[0] / (1 + y^2) + x[2]^-2 * 1e-3) dt + s dB
}

simulate { paths = 103; dt = 0.01; T = 0.1; seed = 3 }

query {
  mean(x[0])
  mean(y^2) over [0.05, 0.1]
  density(y) on [-2, 2] bins 20
  density(x[1]) on [-1, 2] bins 15 over [0, 0.1]
  mean(if x[0] > 0 and not y < 0 or t > 5 then 1 else 0)
  mean(avg(i, x[i]^2))
}
"""

let private l96 =
    """
model L96 {
  const N = 12
  param F = 8
  param sigma = 0.5 in (0, inf)
  state x[N] periodic
  brownian W[N]
  init x[i] = F + if i == 0 then 0.01 else 0
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]
}

simulate { paths = 66; dt = 0.005; T = 0.5; seed = 11 }

query {
  mean(x[0])
  density(x[3]) on [-10, 15] bins 25
}
"""

// an ODE (no noise): the lane step without normals
let private ode =
    """
model Decay {
  param k = 2
  state x
  init x ~ normal(1, 0.2)
  d x = -k * x dt
}

simulate { paths = 9; dt = 0.01; T = 0.5; seed = 1 }

query {
  mean(x)
}
"""

// blows up: the 8th path leaves every double (the second group of four, its last lane)
let private blowup =
    """
model Blow {
  param c = 0.05
  state x
  brownian W
  init x = 0
  d x = c * x^3 dt + dW
}

simulate { paths = 57; dt = 0.05; T = 3; seed = 5 }

query {
  mean(x)
}
"""

// the lanes draw the normals of Engine.BatchSteps steps at once: 77 steps are two batches of 32 and a
// partial one of 13 (one noise; an odd batch ends with a step drawn alone, not as a pair), observation
// windows span the batches' ends; three noises, 45 steps
let private batches =
    """
model Batches {
  param theta = 1 in (0, inf)
  state x
  state y
  state z
  brownian W[3]
  init x = 1
  init y ~ normal(0, 1)
  init z = 0
  d x = -theta * x dt + 0.5 dW[0]
  d y = (x - y) dt + 0.3 dW[1]
  d z = (x * y - z) dt + 0.2 dW[2]
}

simulate { paths = 42; dt = 0.01; T = 0.45; seed = 13 }

query {
  mean(x)
  mean(y * z) over [0.1, 0.4]
  density(z) on [-1, 1] bins 9 over [0.3, 0.45]
}
"""

// responses of one-state models (core/Responses/SmallResponseLanes.cs): DK in exact mode with the default schedule,
// a constant α, the likelihood ratio and a rate; a parameter in the drift, the diffusion (multiplicative noise),
// the init (a point and a normal law) and the observable; pathwise and finite differences beside them; densities,
// time windows and the score; every function and `if`; 203 paths, two parameter sets
let private responses1 =
    """
model R1 {
  param theta = 1 in (0, inf)
  param s = 0.4 in (0, inf)
  param x0 = 0.8
  state x
  brownian W
  init x = x0
  d x = (-theta * x + 0.2 * sin(x) - 0.1 * tanh(x) * exp(-x^2) + (if t > 0.3 then -0.3 else 0.1) + min(x, 0.5) * 0.05 - max(x, -0.5) * 0.05) dt + s * (1 + 0.2 * cos(x)) * sqrt(1 + 0.1 * x^2) dW
}

simulate { paths = 203; dt = 0.01; T = 0.6; seed = 17 }

params base {}
params stiff { theta = 3 }

query {
  d mean(x^2) / d theta
  d mean(x) / d s
  d mean(x) / d x0 with pathwise
  d mean(log(1 + x^2)) / d s with divergence_kernel(alpha = 0.5)
  d mean(x) / d theta with likelihood_ratio
  d mean(x^2) / d s with divergence_kernel(rate = 3)
  d density(x) / d theta on [-1, 2] bins 9
  d mean(x^2) / d theta over [0.2, 0.5]
  d density(x) / d s on [-1, 2] bins 5 over [0.1, 0.6]
  d mean(x^2) / d theta with pathwise
  d mean(x) / d s with finite_difference(h = 0.01)
  score(x) on [-1, 2] bins 4
}
"""

// a normal init whose mean is the parameter (an initial score), additive noise
let private responsesNormalInit =
    """
model R2 {
  param m = 0.3
  param k = 1.5 in (0, inf)
  state x
  brownian W
  init x ~ normal(m, 0.2)
  d x = (x - k * x^3) dt + 0.6 dW
}

simulate { paths = 101; dt = 0.02; T = 0.5; seed = 4 }

query {
  d mean(x) / d m
  d mean(x^2) / d k
  d density(x) / d m on [-1.5, 1.5] bins 6
}
"""

// stationary windows: the rings of ℓ take every step's value
let private responsesStationary =
    """
model DW {
  param s = 0.7 in (0, inf)
  param a = 1
  state x
  brownian W
  init x ~ normal(0, 0.1)
  d x = (a * x - x^3) dt + s dW
}

simulate { paths = 103; dt = 0.01; T = 1.5; seed = 11; burnin = 0.5 }

query {
  d mean(x^2) / d s stationary window 0.2
  d mean(x^2) / d a stationary window 0.1, 0.3
  d density(x) / d a on [-2, 2] bins 6 stationary window 0.2
  d mean(x) / d a
}
"""

// a point init that is the parameter (the first step's perturbation χ + J ∂x₀), additive noise, the parameter in
// the observable too
let private responsesPointInit =
    """
model R3 {
  param x0 = 0.8
  state x
  brownian W
  init x = x0
  d x = -x * abs(x) dt + 0.5 dW
}

simulate { paths = 97; dt = 0.02; T = 0.4; seed = 8 }

query {
  d mean(x) / d x0
  d mean((x - x0)^2) / d x0
  d mean(x) / d x0 with divergence_kernel(alpha = 0.3)
}
"""

// three states, diagonal noise (multiplicative on y): a strong coupling (J₁₀ = 1 + k cos x cos y Δt, up to 3) makes
// the dense LU exchange rows in some lanes of a step and not in others; a point init that moves with the parameter
// (the first step's χ + J ∂x₀) under additive noise
let private responsesPivot =
    """
model Piv {
  param k = 20
  param c = 0.5
  param s = 0.3 in (0, inf)
  state x
  state y
  state z
  brownian W[3]
  init x ~ normal(0, 1)
  init y ~ normal(0.5, 1)
  init z = 0.5
  d x = (-x + c * y) dt + s dW[0]
  d y = (k * sin(x) * cos(y) - y + 0.1 * z^2) dt + s * (1 + 0.2 * sin(y)) dW[1]
  d z = (x * y - z) dt + s dW[2]
}

simulate { paths = 203; dt = 0.1; T = 2; seed = 21 }

query {
  d mean(y) / d k
  d mean(x * y) / d s
  d mean(z) / d c with divergence_kernel(alpha = 0.4)
  d density(y) / d k on [-20, 20] bins 5 over [1, 2]
  d mean(x) / d c with pathwise
  d mean(y^2) / d k with finite_difference(h = 0.01)
}
"""

let private responsesL63 =
    """
model L63 {
  param sigma = 10
  param rho = 28
  param beta = 2.6667
  state x
  state y
  state z
  brownian W[3]
  init x ~ normal(1, 0.1)
  init y = 1
  init z = rho - 27
  d x = sigma * (y - x) dt + 0.5 dW[0]
  d y = (x * (rho - z) - y) dt + 0.5 dW[1]
  d z = (x * y - beta * z) dt + 0.5 dW[2]
}

simulate { paths = 101; dt = 0.002; T = 0.3; seed = 3 }

query {
  d mean(z) / d rho
  d mean(x^2) / d sigma with divergence_kernel(alpha = 0.5)
  d density(x) / d rho on [-10, 10] bins 8
  d mean(z) / d beta over [0.1, 0.3]
}
"""

// ten states, the largest the lanes take (SmallResponseLanes.MaxDim): Lorenz-96, the LU's pivot search over up to ten rows
let private responsesL96Ten =
    """
model L96 {
  const N = 10
  param F = 8
  param sigma = 0.5 in (0, inf)
  state x[N] periodic
  brownian W[N]
  init x[i] ~ normal(F, 1)
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma * (1 + 0.05 * sin(x[i])) dW[i]
}

simulate { paths = 41; dt = 0.01; T = 0.5; seed = 12 }

query {
  d mean(x[0]) / d F
  d mean(x[1]^2) / d sigma
  d mean(x[2]) / d F with pathwise
}
"""

// additive noise that is not diagonal: Langevin (noise on the momentum only, degenerate: Π ≠ I, with a σ that
// changes with t), correlated noises on two states with a point init that moves (full row rank), one state
// driven by two noises
let private responsesLangevin =
    """
model Langevin {
  param k = 1 in (0, inf)
  param gamma = 0.5 in (0, inf)
  param s = 1 in (0, inf)
  state q
  state p
  brownian W
  init q ~ normal(1, 0.3)
  init p ~ normal(0, 0.5)
  d q = p dt
  d p = (-k * q - gamma * p + 0.1 * sin(q)) dt + s * (1 + 0.5 * t) dW
}

simulate { paths = 103; dt = 0.01; T = 0.5; seed = 5 }

query {
  d mean(q^2) / d k
  d mean(p^2) / d s
  d mean(q) / d gamma with divergence_kernel(alpha = 0.5)
  d density(q) / d k on [-3, 3] bins 6
  d mean(q) / d k with pathwise
  d mean(p^2) / d s with finite_difference(h = 0.01)
}
"""

let private responsesCorrelated =
    """
model Corr {
  param a = 1 in (0, inf)
  param s = 0.4 in (0, inf)
  param x0 = 0.5
  state x
  state y
  brownian W[3]
  init x = x0
  init y ~ normal(0, 0.2)
  d x = (-a * x + y - 0.1 * x^3) dt + s dW[0] + 0.2 dW[1]
  d y = (x - y) dt + 0.3 dW[1] + s * 0.5 dW[2]
}

simulate { paths = 101; dt = 0.01; T = 0.5; seed = 6 }

query {
  d mean(x^2) / d a
  d mean(x * y) / d s
  d mean(x) / d x0
  d density(y) / d a on [-2, 2] bins 5
}
"""

let private responsesTwoNoises =
    """
model One2 {
  param a = 1 in (0, inf)
  param s = 0.4 in (0, inf)
  state x
  brownian W[2]
  init x = 1
  d x = -a * x dt + s dW[0] + 0.3 dW[1]
}

simulate { paths = 99; dt = 0.01; T = 0.5; seed = 6 }

query {
  d mean(x^2) / d a
  d mean(x^2) / d s
}
"""

// multiplicative noise that is not diagonal: Heston (correlated noises, full row rank: σ⁺ per lane), and a GBM
// with its Brownian path as a second state (one noise, degenerate and state-dependent: α = 0, Π per lane)
let private responsesHeston =
    """
model Heston {
  param mu = 0.05
  param kappa = 2 in (0, inf)
  param theta = 0.04 in (0, inf)
  param xi = 0.3 in (0, inf)
  param rho = -0.7
  state S
  state v
  brownian W[2]
  init S = 100
  init v ~ normal(0.04, 0.005)
  d S = mu * S dt + sqrt(abs(v)) * S dW[0]
  d v = kappa * (theta - v) dt + xi * sqrt(abs(v)) * (rho * dW[0] + sqrt(1 - rho^2) * dW[1])
}

simulate { paths = 101; dt = 0.01; T = 0.5; seed = 4 }

query {
  d mean(S) / d mu
  d mean(v) / d kappa
  d mean(log(S)) / d xi
  d density(S) / d theta on [60, 160] bins 5
  d mean(S) / d mu with pathwise
}
"""

let private responsesBrownianState =
    """
model GBMB {
  param mu = 0.05
  param sigma = 0.2 in (0, inf)
  state S
  state B
  brownian W
  init S ~ normal(100, 1)
  init B ~ normal(0, 0.1)
  d S = mu * S dt + sigma * S dW
  d B = dW
}

simulate { paths = 101; dt = 0.01; T = 0.5; seed = 3 }

query {
  d mean(S) / d mu with divergence_kernel(alpha = 0)
  d mean(S^2) / d sigma with divergence_kernel(alpha = 0)
}
"""

/// Response runs started on this thread that the small models' lanes took.
let private responseLaneRuns () = SmallResponseLanes.RunsOnThisThread

/// A response program run with one lane and with four (one thread) gives the same report, and the small models'
/// response lanes ran for it.
let private sameInResponseLanes (src: string) =
    let p = compile src
    let before = responseLaneRuns ()
    sameReports (runWith p 1 1) (runWith p 4 1)
    Expect.isTrue (responseLaneRuns () > before || not Runtime.Intrinsics.X86.Avx2.IsSupported) "the lanes ran"

[<Tests>]
let tests =
    testList "Lanes" [
        test "the normals of four paths are each path's normals, bit for bit" {
            let check (scalar: bool) =
                let saved = Normals.ScalarOnThisThread
                Normals.ScalarOnThisThread <- scalar
                try
                    for path0, step, tag in [ 0UL, 0UL, Philox.TagStep; 4294967294UL, 9UL, Philox.TagStep; 123UL, (1UL <<< 33) + 5UL, Philox.TagInitNormal ] do
                        for count in [ 1; 2; 3; 7; 8; 9; 40; 67 ] do
                            let dst = Array.zeroCreate<float> (4 * count)
                            let one = Array.zeroCreate<float> count
                            let seed = 0x1234_5678_9abc_def0UL

                            (let h = Runtime.InteropServices.GCHandle.Alloc(dst, Runtime.InteropServices.GCHandleType.Pinned)
                             try
                                 Normals.FillAcrossPaths4(seed, path0, step, tag, NativeInterop.NativePtr.ofNativeInt (h.AddrOfPinnedObject()), count)
                             finally
                                 h.Free())

                            for j in 0..3 do
                                Normals.Fill(seed, path0 + uint64 j, step, tag, Span one)
                                let lane = Array.init count (fun k -> dst[k * 4 + j])
                                Expect.equal (arrBits lane) (arrBits one) (sprintf "scalar %b, path %d, step %d, count %d" scalar (path0 + uint64 j) step count)
                finally
                    Normals.ScalarOnThisThread <- saved

            check false
            check true
        }

        test "lanes over paths give the bits of one lane: means, windows, densities, sets, 203 paths" {
            let p = compile ou
            hasLanes p
            sameReports (runWith p 1 1) (runWith p 4 1)
        }

        test "lanes over paths give the bits of one lane: functions, if, min/max, periodic indices, reductions" {
            let p = compile mix
            hasLanes p
            sameReports (runWith p 1 1) (runWith p 4 1)
        }

        test "lanes over paths give the bits of one lane: Lorenz-96, two threads against one" {
            let p = compile l96
            hasLanes p
            sameReports (runWith p 1 1) (runWith p 4 2)
        }

        test "lanes over paths give the bits of one lane: runs that end inside a batch of normals, observations inside batches" {
            Expect.equal (Engine.BatchSteps 1) 32 "one noise: 32 steps per batch"
            Expect.isTrue (45 % Engine.BatchSteps 3 <> 0 && 77 % Engine.BatchSteps 1 <> 0) "the runs end inside a batch"
            let three = compile batches
            hasLanes three
            sameReports (runWith three 1 1) (runWith three 4 1)
            // one noise, 77 steps: windows [0.3, 0.33] and [0.6, 0.77] around the batches' ends at steps 32 and 64
            let one = compile (ou.Replace("T = 0.3", "T = 0.77").Replace("over [0.1, 0.3]", "over [0.3, 0.33]").Replace("over [0, 0.3]", "over [0.6, 0.77]"))
            hasLanes one
            sameReports (runWith one 1 1) (runWith one 4 1)
        }

        test "lanes over paths give the bits of one lane: an ODE, 9 paths" {
            let p = compile ode
            hasLanes p
            sameReports (runWith p 1 1) (runWith p 4 1)
        }

        test "lanes allocate nothing per step or per path" {
            let c = (compile ou).Program.Compiled
            let runner = ModelRunner.For c.Type
            let model = c.Instance [| 1.0; 0.5; 1.0 |]
            let plans = [| QueryPlan(Kind = EstimateKind.Mean, Observable = 0); QueryPlan(Kind = EstimateKind.Density, Observable = 0, Lo = -2.0, Hi = 2.0, Bins = 10) |]
            let run paths steps =
                let s = RunSettings(Paths = paths, Dt = 0.01, T = float steps * 0.01, Seed = 3UL, Threads = 1, Lanes = 4)
                let before = GC.GetAllocatedBytesForCurrentThread()
                runner.Run(model, s, plans) |> ignore
                GC.GetAllocatedBytesForCurrentThread() - before
            run 100L 10 |> ignore // JIT
            run 100L 1000 |> ignore
            run 4000L 10 |> ignore
            let least f = List.min [ f (); f (); f () ]
            let a10 = least (fun () -> run 100L 10)
            let a1000 = least (fun () -> run 100L 1000)
            let p4k = least (fun () -> run 4000L 10)
            Expect.isTrue (abs (a1000 - a10) < 512L) (sprintf "10 steps: %d B, 1000 steps: %d B" a10 a1000)
            Expect.isTrue (abs (p4k - a10) < 2048L) (sprintf "100 paths: %d B, 4000 paths: %d B" a10 p4k)
        }

        test "where four lanes' records do not fit in the memory limit, one path at a time runs" {
            let c = (compile ou).Program.Compiled
            let runner = ModelRunner.For c.Type
            let model = c.Instance [| 1.0; 0.5; 1.0 |]
            // a million bins: about 33 MB of records per path slot, so 1 slot fits in 100 MB and 4 do not
            let plans = [| QueryPlan(Kind = EstimateKind.Density, Observable = 0, Lo = -2.0, Hi = 2.0, Bins = 1_000_000) |]
            let limit = 100L <<< 20
            Expect.isTrue (Memory.Estimate(1, 1, 1, plans, 1) < limit && Memory.Estimate(1, 1, 1, plans, 4) > limit) "the limit lies between"
            let run lanes = runner.Run(model, RunSettings(Paths = 40L, Dt = 0.01, T = 0.05, Seed = 3UL, Threads = 1, Lanes = lanes, MemoryLimit = limit), plans)
            let a, b = run 1, run 4
            Expect.equal (arrBits b[0].Values) (arrBits a[0].Values) "the same bins"
        }

        test "a run that blows up fails in the same words with lanes" {
            let p = compile blowup
            hasLanes p
            let failure lanes =
                try
                    runWith p lanes 1 |> ignore
                    failtest "the run should fail"
                    ""
                with :? SimulationFailedException as e -> e.Message
            let a = failure 1
            // the first failing path, independently: the fewest paths whose run fails (path j draws the same
            // noise in every run), found one path at a time
            let fails k =
                try runWith (compile (blowup.Replace("paths = 57", sprintf "paths = %d" k))) 1 1 |> ignore; false
                with :? SimulationFailedException -> true
            let first = seq { 1..57 } |> Seq.find fails
            Expect.stringContains a (sprintf "after %d of 57 paths" first) "the one-lane run stops at the first failing path"
            Expect.equal (failure 4) a "the same failure, word for word"
            // with several sets the failure is the set's, in the report
            let two = compile (blowup.Replace("simulate", "params base {}\nparams calm { c = 0 }\nsimulate"))
            let (r1, e1), (r4, e4) = runKeepingWith two 1, runKeepingWith two 4
            Expect.equal e4 e1 "the failures"
            Expect.equal (r1.Sets |> List.map (fun s -> s.Failure.IsSome)) [ true; false ] "the first set fails, the second runs"
            sameReports r1 r4
        }

        test "responses of a one-state model in lanes give the bits of one path at a time: every kind of plan, 203 paths, two sets, two threads" {
            let p = compile responses1
            let before = responseLaneRuns ()
            let one = runWith p 1 1
            Expect.equal (responseLaneRuns ()) before "one lane: the lanes do not run"
            sameReports one (runWith p 4 1)
            Expect.isTrue (responseLaneRuns () > before || not Runtime.Intrinsics.X86.Avx2.IsSupported) "the lanes ran"
            let before2 = responseLaneRuns ()
            sameReports one (runWith p 4 2)
            Expect.isTrue (responseLaneRuns () > before2 || not Runtime.Intrinsics.X86.Avx2.IsSupported) "the lanes ran on two threads"
        }

        test "responses of a one-state model in lanes give the bits of one path at a time: the parameter in a normal init, in a point init, stationary windows" {
            for src in [ responsesNormalInit; responsesPointInit; responsesStationary ] do
                sameInResponseLanes src
        }

        test "responses under noise that is not diagonal in lanes give the bits of one path at a time: Langevin (degenerate, σ with t), correlated noises, two noises on one state, Heston, a Brownian state" {
            for src in [ responsesLangevin; responsesCorrelated; responsesTwoNoises; responsesHeston; responsesBrownianState ] do
                sameInResponseLanes src
        }

        test "responses of three- and ten-state models in lanes give the bits of one path at a time: row exchanges in some lanes, a point init that moves, Lorenz-63, Lorenz-96 with ten states" {
            for src in [ responsesPivot; responsesL63; responsesL96Ten ] do
                sameInResponseLanes src
        }

        test "a fit of a one-state model (kl at T, kl stationary) in lanes gives the bits of one path at a time" {
            // the fit's response runs record each path's state, weights and covector at T (or a stationary window's
            // increments at recorded steps): the lanes hand the workers every step's values, and the final ones
            for name in [ "fit_ou"; "fit_ou_stationary" ] do
                let dir = IO.Path.Combine(CliTests.repoRoot, "examples")
                let src = IO.File.ReadAllText(IO.Path.Combine(dir, name + ".sde")).Replace("iterations = 40", "iterations = 3").Replace("iterations = 60", "iterations = 3")
                let p = compile src
                let fit lanes =
                    let saved = Engine.LanesOnThisThread
                    Engine.LanesOnThisThread <- lanes
                    try
                        match p.Fit(threads = 1, dataDir = dir) with
                        | Ok r -> r
                        | Error ds -> failtestf "%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")
                    finally Engine.LanesOnThisThread <- saved
                let before = responseLaneRuns ()
                let a, b = fit 1, fit 4
                Expect.isTrue (responseLaneRuns () > before || not Runtime.Intrinsics.X86.Avx2.IsSupported) (name + ": the lanes ran")
                Expect.equal (arrBits b.Fitted) (arrBits a.Fitted) (name + ": the fitted values")
                Expect.equal (arrBits b.StdErrs) (arrBits a.StdErrs) (name + ": their standard errors")
                Expect.equal (b.History |> List.map (fun h -> bitsOf h.Loss)) (a.History |> List.map (fun h -> bitsOf h.Loss)) (name + ": the losses")
        }

        test "a response run that blows up fails in the same words with lanes" {
            // x² pushes paths past every double: from 10^154 the drift overflows while the Jacobian 1 + 2 c x dt stays finite
            let p = compile (blowup.Replace("c * x^3 dt + dW", "(c * x^2 - x) dt + 0.8 dW").Replace("c = 0.05", "c = 0.4").Replace("paths = 57; dt = 0.05; T = 3", "paths = 1001; dt = 0.1; T = 5").Replace("mean(x)", "d mean(x) / d c"))
            let failure lanes =
                try
                    runWith p lanes 1 |> ignore
                    failtest "the run should fail"
                    ""
                with :? SimulationFailedException as e -> e.Message
            let a = failure 1
            Expect.stringContains a "blew up" "a blow-up"
            let before = responseLaneRuns ()
            Expect.equal (failure 4) a "the same failure, word for word"
            Expect.isTrue (responseLaneRuns () > before || not Runtime.Intrinsics.X86.Avx2.IsSupported) "the lanes ran"
        }
    ]
