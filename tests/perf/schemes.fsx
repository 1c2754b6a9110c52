// The equal-error scheme benchmark (issue 21 §4, docs/discretisation.md "Which scheme at equal
// error"). For each model and each way to compute its query (Euler–Maruyama, Milstein, SRA,
// Richardson from Euler) it
//   1. measures the bias constant c (bias(dt) ≈ c·dt^p, p the weak order) and the variance per path
//      V at a few dt, on coupled paths: every scheme and dt driven by the same Brownian path, the bias
//      against the exact solution on that path (GBM) or SRA on 2048 steps of it (Lorenz-96), so that
//      the per-path differences are small and a few thousand paths resolve the bias;
//   2. picks the dt and paths that reach the total error sqrt(bias² + se²) = ε = 1e-3·|Q| at least
//      cost: bias² = ε²/(2p+1) (the optimum of paths·steps under V/paths + c²dt^(2p) = ε²), dt rounded
//      down to divide T, paths = V / (ε² − c²dt^(2p));
//   3. runs each plan through the engine (`dsl run`'s code path, `bias = off`: the bias was measured in
//      step 1), interleaved, REPS times, and prints the medians of the simulation's wall time and of
//      the process's CPU time, and their ratios against Euler in the same run; then the values reached
//      against the exact value (GBM) or against the most precise run (Lorenz-96), in units of ε.
// The coupled paths of step 1 step the compiler's emitted `Step` of each scheme (the same code the
// engine runs) on normals drawn here (System.Random, Box–Muller), not the engine's generator.
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi tests/perf/schemes.fsx [REPS] [THREADS] [BUDGET] [CALIBRATION_PATHS]
//
// A timed Lorenz-96 run simulates at most BUDGET chain steps (paths × steps, a Richardson pair counting
// three; default 1e7; GBM's plans run whole): a plan above it runs fewer paths (at least 64) and its time is scaled up to all of its
// paths (the simulation's time is linear in the paths; the table says which were scaled). The values'
// check then uses the standard error of the paths that ran. Output: the calibration lines, then one
// table per model in the format docs/discretisation.md quotes (lines starting with `|`).
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"

open System
open Sde
open Sde.Core
open Sde.Lang

let args = fsi.CommandLineArgs
let reps = if args.Length > 1 then int args[1] else 3
let threads = if args.Length > 2 then int args[2] else 1
let budget = if args.Length > 3 then float args[3] else 1e7
let calPathsArg = if args.Length > 4 then Some(int args[4]) else None
let relTarget = 1e-3

// ---------------------------------------------------------------------------------- the models

type Bench =
    { Name: string
      Model: string
      Query: string
      T: float
      Lanes: int
      /// Q of a state vector (the query's observable, computed here for the coupled paths).
      Observable: float[] -> float
      /// A path's initial state from its own random source (the same for every scheme and dt).
      Init: Random -> float[]
      /// The schemes the model accepts (SRA needs additive noise).
      Schemes: string list
      /// The step counts of the calibration per scheme, coarsest first (Richardson from Euler uses
      /// Euler's but its last, which it needs at twice the steps).
      Levels: string -> int list
      /// The exact solution on the path (W_T per lane), or None: then SRA on `Fine` steps of the path.
      Exact: (float[] -> float[] -> float) option
      ExactValue: float option
      /// The chain's exact E[Q] at n steps, from the emitted step (None: measured on the coupled paths).
      ChainMean: (ISdeModel -> int -> float) option
      Fine: int
      CalPaths: int
      /// The most chain steps of a timed run (see BUDGET): GBM's plans run whole.
      Budget: float }

let mu, sigma = 0.5, 0.5

let gbm =
    { Name = "GBM"
      Model = sprintf "model Gbm {\n  param mu = %g\n  param sigma = %g\n  state x\n  brownian W\n  init x = 1\n  d x = mu * x dt + sigma * x dW\n}" mu sigma
      Query = "mean(x)"
      T = 1.0
      Lanes = 1
      Observable = fun x -> x[0]
      Init = fun _ -> [| 1.0 |]
      Schemes = [ "euler_maruyama"; "milstein" ]
      Levels = fun _ -> [ 8; 16; 32; 64; 128; 256 ]
      // x_T = x_0 exp((mu - sigma^2/2) T + sigma W_T)
      Exact = Some(fun x0 wT -> x0[0] * exp ((mu - sigma * sigma / 2.0) + sigma * wT[0]))
      ExactValue = Some(exp mu)
      // the step is x·G(1, w), a polynomial of degree 2 in w: E[X_n] = (E_w G(1, w))^n by three-point
      // Gauss–Hermite quadrature, exact (so is the bias of Richardson, which the coupled paths cannot
      // resolve: it is ~1e-4 at dt = 1/8, their standard error ~1e-3)
      ChainMean =
          Some(fun m n ->
              let dt = 1.0 / float n
              let g =
                  [ -sqrt 3.0, 1.0 / 6.0; 0.0, 2.0 / 3.0; sqrt 3.0, 1.0 / 6.0 ]
                  |> List.sumBy (fun (z, p) ->
                      let y = [| 0.0 |]
                      m.Step(ArrayVec [| 1.0 |], ArrayVec y, ArrayVec [| z |], 0.0, dt, sqrt dt)
                      p * y[0])
              g ** float n)
      Fine = 256
      CalPaths = 4000
      Budget = 2e8 }

let normal (rng: Random) =
    let u1 = 1.0 - rng.NextDouble()
    let u2 = rng.NextDouble()
    sqrt (-2.0 * log u1) * cos (2.0 * Math.PI * u2)

let l96 =
    { Name = "Lorenz-96"
      Model = "model L96 {\n  const N = 40\n  param F = 8\n  param sigma = 0.5\n  state x[N] periodic\n  brownian W[N]\n  init x[i] ~ normal(F, 1)\n  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]\n}"
      Query = "mean(avg(i, x[i]^2))"
      T = 1.0
      Lanes = 40
      Observable = fun x -> Array.averageBy (fun v -> v * v) x
      Init = fun rng -> Array.init 40 (fun _ -> 8.0 + normal rng)
      Schemes = [ "euler_maruyama"; "milstein"; "sra" ]
      // Euler blows up at dt = 1/64 on some paths (an oscillation of frequency ~16 grows by
      // sqrt(1 + (16 dt)^2) a step) and is far from its asymptotic order at 1/128
      Levels = function "sra" -> [ 16; 32; 64; 128; 256 ] | _ -> [ 128; 256; 512; 1024; 2048 ]
      Exact = None
      ExactValue = None
      ChainMean = None
      Fine = 2048
      CalPaths = 2000
      Budget = budget }

// ---------------------------------------------------------------------------------- compiled steps

let compile (text: string) =
    match SdeCompiler.Compile(text, "bench.sde") with
    | Ok p -> p
    | Error ds -> failwithf "%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let fileOf (b: Bench) (settings: string) = sprintf "%s\nsimulate { %s }\nquery {\n  %s\n}\n" b.Model settings b.Query

let stepper (b: Bench) (scheme: string) =
    let p = compile (fileOf b (sprintf "paths = 10; dt = 0.1; T = 1; scheme = %s" scheme))
    p.Program.Compiled.Instance((List.head p.Program.File.Sets).Values) :?> ISdeModel

/// One Brownian path on `fine` steps: per step and lane ΔW and I_(1,0) = ∫ (W_s − W_a) ds. `level n`
/// gives each of n steps' normals as the schemes read them (w_l = ΔW/√h; SRA's w_(m+l) = ΔZ/√h with
/// I_(1,0)/h = ½ (ΔW + ΔZ/√3)).
type BrownianPath(rng: Random, lanes: int, fine: int, T: float) =
    let h = T / float fine
    let dw = Array.init fine (fun _ -> Array.init lanes (fun _ -> sqrt h * normal rng))
    let i10 = Array.init fine (fun i -> Array.init lanes (fun l -> 0.5 * h * (dw[i][l] + sqrt h * normal rng / sqrt 3.0)))

    member _.Level(n: int) : float[][] =
        let k = fine / n
        let hc = T / float n
        Array.init n (fun s ->
            let w = Array.zeroCreate (2 * lanes)
            for l in 0 .. lanes - 1 do
                let mutable dW = 0.0
                let mutable i = 0.0
                for j in s * k .. s * k + k - 1 do
                    i <- i + dW * h + i10[j][l]
                    dW <- dW + dw[j][l]
                w[l] <- dW / sqrt hc
                w[lanes + l] <- sqrt 3.0 * (2.0 * i / hc - dW) / sqrt hc
            w)

    member _.WT = Array.init lanes (fun l -> dw |> Array.sumBy (fun d -> d[l]))

let runPath (m: ISdeModel) (x0: float[]) (ws: float[][]) (T: float) =
    let n = ws.Length
    let dt = T / float n
    let mutable x = Array.copy x0
    let mutable y = Array.zeroCreate x0.Length
    for k in 0 .. n - 1 do
        m.Step(ArrayVec x, ArrayVec y, ArrayVec ws[k], float k * dt, dt, sqrt dt)
        let t = x
        x <- y
        y <- t
    x

// ---------------------------------------------------------------------------------- 1. calibration

/// Running mean and variance (Welford).
type Moments() =
    let mutable n = 0
    let mutable mean = 0.0
    let mutable m2 = 0.0
    member _.Add(v: float) =
        n <- n + 1
        let d = v - mean
        mean <- mean + d / float n
        m2 <- m2 + d * (v - mean)
    member _.Mean = mean
    member _.Var = m2 / float (n - 1)
    member _.Se = sqrt (m2 / float (n - 1) / float n)

type Method =
    { Label: string
      Scheme: string
      Richardson: bool
      Order: int }

let methodsOf (b: Bench) =
    [ for s in b.Schemes -> { Label = s; Scheme = s; Richardson = false; Order = (if s = "sra" then 2 else 1) } ]
    @ [ { Label = "richardson (euler)"; Scheme = "euler_maruyama"; Richardson = true; Order = 2 } ]

type Calibration =
    { Method: Method
      /// per level (step count): bias against the reference, its standard error, variance per path of Q
      Rows: (int * float * float * float) list
      C: float
      CFrom: int
      Slope: float
      V: float }

let slope (xs: float list) (ys: float list) =
    let lx = xs |> List.map log
    let ly = ys |> List.map log
    let mx, my = List.average lx, List.average ly
    List.map2 (fun x y -> (x - mx) * (y - my)) lx ly |> List.sum |> fun s -> s / (lx |> List.sumBy (fun x -> (x - mx) ** 2.0))

let calPaths (b: Bench) = defaultArg calPathsArg b.CalPaths

let levelsOf (b: Bench) (meth: Method) =
    let l = b.Levels meth.Scheme
    if meth.Richardson then List.take (l.Length - 1) l else l

let calibrate (b: Bench) =
    let methods = methodsOf b
    let steps = b.Schemes |> List.map (fun s -> s, stepper b s) |> dict
    let reference = if b.Exact.IsNone then Some(stepper b "sra") else None
    let fine = b.Schemes |> List.map (fun s -> List.max (b.Levels s)) |> List.fold max b.Fine
    // per path: the reference and each scheme's Q at each of its levels (one random source per path)
    let perPath =
        Array.Parallel.init (calPaths b) (fun path ->
            // a seed per path, scattered (System.Random's seeded generator on consecutive seeds is not)
            let rng = Random(int ((uint64 (path + 1) * 0x9E3779B97F4A7C15UL) >>> 33))
            let x0 = b.Init rng
            let bp = BrownianPath(rng, b.Lanes, fine, b.T)
            let qRef =
                match b.Exact, reference with
                | Some exact, _ -> exact x0 bp.WT
                | None, Some r -> b.Observable (runPath r x0 (bp.Level b.Fine) b.T)
                | _ -> nan
            let values = Collections.Generic.Dictionary<string * int, float>()
            for s in b.Schemes do
                for n in b.Levels s do
                    values[(s, n)] <- b.Observable (runPath steps[s] x0 (bp.Level n) b.T)
            qRef, values)
    [ for meth in methods ->
          let rows =
              [ for n in levelsOf b meth ->
                    let mq, md = Moments(), Moments()
                    for qRef, values in perPath do
                        let v = if meth.Richardson then 2.0 * values[(meth.Scheme, 2 * n)] - values[(meth.Scheme, n)] else values[(meth.Scheme, n)]
                        mq.Add v
                        md.Add(v - qRef)
                    match b.ChainMean, b.ExactValue with
                    | Some chain, Some exact ->
                        let mean k = chain steps[meth.Scheme] k
                        let q = if meth.Richardson then 2.0 * mean (2 * n) - mean n else mean n
                        n, q - exact, 0.0, mq.Var
                    | _ -> n, md.Mean, md.Se, mq.Var ]
          // c from the finest dt whose bias is resolved (|b| > 5 se), with the scheme's order p
          let resolved = rows |> List.filter (fun (_, bias, se, _) -> abs bias > 5.0 * se)
          let n, bias, _, _ = if resolved.IsEmpty then List.last rows else List.last resolved
          let _, _, _, v = List.last rows
          { Method = meth
            Rows = rows
            C = bias / (b.T / float n) ** float meth.Order
            CFrom = n
            Slope = (if resolved.Length >= 2 then slope (resolved |> List.map (fun (n, _, _, _) -> b.T / float n)) (resolved |> List.map (fun (_, b, _, _) -> abs b)) else nan)
            V = v } ]

// ---------------------------------------------------------------------------------- 2. plans

type Plan =
    { Cal: Calibration
      Steps: int
      Dt: float
      Paths: int64
      Bias: float
      Se: float }

let plan (b: Bench) (eps: float) (cal: Calibration) =
    let p = float cal.Method.Order
    let dtOpt = (eps / (sqrt (2.0 * p + 1.0) * abs cal.C)) ** (1.0 / p)
    let steps = max 1 (int (ceil (b.T / dtOpt - 1e-9)))
    let dt = b.T / float steps
    let bias = cal.C * dt ** p
    let paths = int64 (ceil (cal.V / (eps * eps - bias * bias)))
    { Cal = cal; Steps = steps; Dt = dt; Paths = paths; Bias = bias; Se = sqrt (cal.V / float paths) }

// ---------------------------------------------------------------------------------- 3. timed runs

let median (xs: float list) = let s = List.sort xs in s[s.Length / 2]

let bench (b: Bench) =
    printfn "== %s: %s at T = %g, relative target %g (total error sqrt(bias^2 + se^2)); %d calibration paths" b.Name b.Query b.T relTarget (calPaths b)
    let sw = Diagnostics.Stopwatch.StartNew()
    let cals = calibrate b
    printfn "   calibration (%.1f s): %s"
        sw.Elapsed.TotalSeconds
        (if b.ChainMean.IsSome then "bias = the chain's exact mean (quadrature of the emitted step) minus the SDE's; variance on coupled paths"
         else sprintf "bias against SRA on %d steps of the same Brownian path" b.Fine)
    for c in cals do
        printfn "   %-20s p = %d  c = %+.4g (from dt = 1/%d)  slope of |bias| %.2f  V = %.4g" c.Method.Label c.Method.Order c.C c.CFrom c.Slope c.V
        for n, bias, se, v in c.Rows do
            printfn "      dt = 1/%-4d bias %+.4e ± %.2e   var %.4g" n bias se v
    cals

let runPlans (b: Bench) (eps: float) (plans: Plan list) =
    let programs =
        plans
        |> List.map (fun pl ->
            let chainSteps = float pl.Steps * (if pl.Cal.Method.Richardson then 3.0 else 1.0)
            let paths = min pl.Paths (max 64L (int64 (b.Budget / chainSteps)))
            let settings =
                sprintf "paths = %d; dt = %.17g; T = %g; seed = 11; scheme = %s; bias = off%s" paths pl.Dt b.T pl.Cal.Method.Scheme
                    (if pl.Cal.Method.Richardson then "; extrapolate = richardson" else "")
            pl, paths, compile (fileOf b settings))
    let times = programs |> List.map (fun _ -> Collections.Generic.List<float>())
    let cpus = programs |> List.map (fun _ -> Collections.Generic.List<float>())
    let mutable last = programs |> List.map (fun _ -> nan, nan)
    let me = Diagnostics.Process.GetCurrentProcess()
    for _ in 1 .. reps do
        last <-
            programs
            |> List.mapi (fun i (pl, paths, p) ->
                me.Refresh()
                let cpu0 = me.TotalProcessorTime.TotalSeconds
                let r = p.Run(threads = threads, backend = "cpu")
                me.Refresh()
                // the process's CPU time (every thread; includes the run's untimed two-path warm-up):
                // less sensitive than the wall time to the other jobs on a loaded machine
                cpus[i].Add((me.TotalProcessorTime.TotalSeconds - cpu0) * float pl.Paths / float paths)
                times[i].Add(r.Seconds * float pl.Paths / float paths)
                let q = (List.head r.Sets).Results.Head
                q.Value, q.StdErr)
    let med (xs: Collections.Generic.List<float>) = median (List.ofSeq xs)
    programs, List.map med times, List.map med cpus, last

let report (b: Bench) =
    let cals = bench b
    // ε = 1e-3 |Q|: Q exact, or an SRA run's (ε needs |Q| only to a few per cent)
    let value =
        match b.ExactValue with
        | Some v -> v
        | None ->
            let p = compile (fileOf b "paths = 4000; dt = 0.01; T = 1; seed = 3; scheme = sra; bias = off")
            (List.head (p.Run(threads = threads, backend = "cpu")).Sets).Results.Head.Value
    let eps = relTarget * abs value
    let plans = cals |> List.map (plan b eps)
    printfn "   Q ≈ %.6g, ε = %.4g; plans (bias² = ε²/(2p+1)):" value eps
    let programs, medians, cpuMedians, last = runPlans b eps plans
    let eulerTime = medians[plans |> List.findIndex (fun pl -> pl.Cal.Method.Label = "euler_maruyama")]
    let eulerCpu = cpuMedians[plans |> List.findIndex (fun pl -> pl.Cal.Method.Label = "euler_maruyama")]
    let load = try IO.File.ReadAllText("/proc/loadavg").Split(' ')[0..2] |> String.concat " " with _ -> "?"
    printfn "   %d runs each, interleaved, %d thread(s), at most %g chain steps a run; load average before the table: %s" reps threads b.Budget load
    let rows =
        [ for ((pl, ran, _), t), cpu in List.zip (List.zip programs medians) cpuMedians ->
              let cost = float pl.Paths * float pl.Steps * (if pl.Cal.Method.Richardson then 3.0 else 1.0)
              sprintf "| %s | `%s` | %d | %.3g | %.3g | 1/%d | %d | %.3g | %d | %.3g | %.2f | %.3g | %.2f |" b.Name pl.Cal.Method.Label pl.Cal.Method.Order pl.Cal.C pl.Cal.V pl.Steps pl.Paths cost ran t (eulerTime / t) cpu (eulerCpu / cpu) ]
    rows |> List.iter (printfn "   %s")
    // L96 has no exact value: each value against the run with the smallest standard error
    let refLabel, (refValue, _) = List.zip plans last |> List.minBy (fun (_, (_, se)) -> se) |> fun (pl, v) -> pl.Cal.Method.Label, v
    for pl, (v, se) in List.zip plans last do
        match b.ExactValue with
        | Some exact -> printfn "   %-20s value %.6g ± %.3g: error %.3g ε (predicted bias %.3g ε, se %.3g ε)" pl.Cal.Method.Label v se ((v - exact) / eps) (pl.Bias / eps) (se / eps)
        | None -> printfn "   %-20s value %.6g ± %.3g: minus %s's %.3g ε (predicted bias %.3g ε, se %.3g ε)" pl.Cal.Method.Label v se refLabel ((v - refValue) / eps) (pl.Bias / eps) (se / eps)
    let best, bestIndex = plans |> List.mapi (fun i pl -> pl, i) |> List.minBy (fun (_, i) -> cpuMedians[i])
    printfn "   best: %s, %.2fx faster than Euler in CPU time, %.2fx in wall time (goal: 5x)" best.Cal.Method.Label (eulerCpu / cpuMedians[bestIndex]) (eulerTime / medians[bestIndex])
    printfn ""
    rows

let gbmRows = report gbm
printfn "   SRA on GBM: refused (its diffusion sigma * x reads the state; SRA1 needs additive noise)"
let l96Rows = report l96
printfn "The table (docs/discretisation.md, Which scheme at equal error):"
printfn ""
printfn "| model | scheme | weak order p | bias constant c | variance per path | dt | paths | chain steps | paths timed | wall (s) | Euler / scheme, wall | CPU (s) | Euler / scheme, CPU |"
printfn "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
gbmRows @ [ "| GBM | `sra` | 2 | refused | | | | | | | | | |" ] @ l96Rows |> List.iter (printfn "%s")
