module Sde.Tests.EngineTests

open System
open Expecto
open MathNet.Numerics.Distributions
open Sde.Core
open Sde.Tests.TestModels

let private tol = 4.5

// Engine.Run takes the model as `in` (a readonly reference): F# passes the address of a local.
let private run<'M when 'M : struct and 'M :> ISdeModel and 'M : (new : unit -> 'M) and 'M :> ValueType> (m: 'M, s: RunSettings, p: QueryPlan[]) =
    let mutable m = m
    Engine.Run(&m, s, p)
let private runPartial<'M when 'M : struct and 'M :> ISdeModel and 'M : (new : unit -> 'M) and 'M :> ValueType> (m: 'M, s: RunSettings, p: QueryPlan[]) =
    let mutable m = m
    Engine.RunPartial(&m, s, p)

let private mean (plan: int) = QueryPlan(Kind = EstimateKind.Mean, Observable = plan)
let private meanOver obs t0 t1 = QueryPlan(Kind = EstimateKind.Mean, Observable = obs, TimeAverage = true, T0 = t0, T1 = t1)
let private density obs lo hi bins = QueryPlan(Kind = EstimateKind.Density, Observable = obs, Lo = lo, Hi = hi, Bins = bins)
let private densityOver obs lo hi bins t0 t1 =
    QueryPlan(Kind = EstimateKind.Density, Observable = obs, Lo = lo, Hi = hi, Bins = bins, TimeAverage = true, T0 = t0, T1 = t1)
let private settings paths dt t seed threads = RunSettings(Paths = paths, Dt = dt, T = t, Seed = seed, Threads = threads)

let private within name (est: float) (se: float) (exact: float) =
    Expect.isTrue (se > 0.0) (sprintf "%s: standard error %g should be positive" name se)
    Expect.isTrue (abs (est - exact) <= tol * se)
        (sprintf "%s: estimate %.6g vs exact %.6g differs by %.2f standard errors (se %.3g)" name est exact ((est - exact) / se) se)

/// Euler chain of OU: mean and variance after n steps from a deterministic x0.
let private ouChain (theta: float) (sigma: float) (x0: float) (dt: float) (n: int) =
    let a = 1.0 - theta * dt
    let m = a ** float n * x0
    let v = sigma * sigma * dt * Seq.sum (seq { for k in 0 .. n - 1 -> a ** (2.0 * float k) })
    m, v

let private sameBits (a: Estimate[]) (b: Estimate[]) =
    Expect.equal a.Length b.Length "same number of estimates"
    for i in 0 .. a.Length - 1 do
        let bits (x: float) = BitConverter.DoubleToInt64Bits x
        Expect.equal (bits a.[i].Value) (bits b.[i].Value) (sprintf "query %d value bits" i)
        Expect.equal (bits a.[i].StdErr) (bits b.[i].StdErr) (sprintf "query %d stderr bits" i)
        Expect.equal a.[i].Count b.[i].Count (sprintf "query %d count" i)
        Expect.equal a.[i].Below b.[i].Below (sprintf "query %d below" i)
        Expect.equal a.[i].Above b.[i].Above (sprintf "query %d above" i)
        if not (isNull a.[i].Values) then
            Expect.equal (Array.map bits a.[i].Values) (Array.map bits b.[i].Values) (sprintf "query %d bin values bits" i)
            Expect.equal (Array.map bits a.[i].StdErrs) (Array.map bits b.[i].StdErrs) (sprintf "query %d bin stderrs bits" i)

let private ksStatistic (xs: float[]) (cdf: float -> float) =
    let s = Array.sort xs
    let n = float s.Length
    s |> Array.mapi (fun i x -> let f = cdf x in max (abs (float (i + 1) / n - f)) (abs (f - float i / n))) |> Array.max

[<Tests>]
let rngTests =
    testList "Engine.Rng" [
        test "Philox4x32-10 known answers (Random123)" {
            let check (c: uint32[]) (k: uint32[]) (e: uint32[]) =
                let r = Philox.Block(c.[0], c.[1], c.[2], c.[3], k.[0], k.[1])
                Expect.equal [| r.X; r.Y; r.Z; r.W |] e (sprintf "philox(%A, %A)" c k)
            check [| 0u; 0u; 0u; 0u |] [| 0u; 0u |] [| 0x6627e8d5u; 0xe169c58du; 0xbc57ac4cu; 0x9b00dbd8u |]
            check [| 0xffffffffu; 0xffffffffu; 0xffffffffu; 0xffffffffu |] [| 0xffffffffu; 0xffffffffu |]
                  [| 0x408f276du; 0x41c83b0eu; 0xa20bc7c6u; 0x6d5451fdu |]
            check [| 0x243f6a88u; 0x85a308d3u; 0x13198a2eu; 0x03707344u |] [| 0xa4093822u; 0x299f31d0u |]
                  [| 0xd16cfe09u; 0x94fdccebu; 0x5001e420u; 0x24126ea1u |]
        }

        test "a lane does not depend on how many lanes were drawn" {
            let a = Array.zeroCreate<float> 5
            let b = Array.zeroCreate<float> 8
            Normals.Fill(7UL, 3UL, 11UL, Philox.TagStep, Span a)
            Normals.Fill(7UL, 3UL, 11UL, Philox.TagStep, Span b)
            Expect.equal a b.[0..4] "normals: first 5 lanes of 8 = 5 lanes"
            Normals.FillUniform(7UL, 3UL, 11UL, Philox.TagInitUniform, Span a)
            Normals.FillUniform(7UL, 3UL, 11UL, Philox.TagInitUniform, Span b)
            Expect.equal a b.[0..4] "uniforms: first 5 lanes of 8 = 5 lanes"
            let c = Array.zeroCreate<float> 8
            Normals.Fill(7UL, 3UL, 11UL, Philox.TagInitNormal, Span c)
            Expect.notEqual c b "init and step streams differ"
        }

        test "vectorised normals are the scalar form's bits" {
            for count in [ 1; 2; 3; 7; 8; 9; 40; 101 ] do
                for (p, st) in [ (0UL, 0UL); (123456789012UL, 5000000000UL); (UInt64.MaxValue >>> 16, 77UL) ] do
                    let v = Array.zeroCreate<float> count
                    let r = Array.zeroCreate<float> count
                    Normals.Fill(0xDEADBEEFCAFEUL, p, st, Philox.TagStep, Span v)
                    Normals.FillScalar(0xDEADBEEFCAFEUL, p, st, Philox.TagStep, Span r)
                    Expect.equal (Array.map BitConverter.DoubleToInt64Bits v) (Array.map BitConverter.DoubleToInt64Bits r) (sprintf "count %d" count)
        }

        test "normals: mean, variance, KS against N(0,1)" {
            // 4 lanes × 50 steps × 500 paths = 100000 draws.
            let n = 100000
            let xs = Array.zeroCreate<float> n
            let buf = Array.zeroCreate<float> 4
            let mutable i = 0
            for p in 0UL .. 499UL do
                for s in 0UL .. 49UL do
                    Normals.Fill(42UL, p, s, Philox.TagStep, Span buf)
                    Array.blit buf 0 xs i 4
                    i <- i + 4
            let m = Array.average xs
            let v = (xs |> Array.sumBy (fun x -> (x - m) ** 2.0)) / float (n - 1)
            Expect.isTrue (abs m < tol / sqrt (float n)) (sprintf "mean %g" m)
            Expect.isTrue (abs (v - 1.0) < tol * sqrt (2.0 / float n)) (sprintf "variance %g" v)
            let d = ksStatistic xs (fun x -> Normal.CDF(0.0, 1.0, x))
            // Kolmogorov: P(√n D > 1.95) ≈ 0.001.
            Expect.isTrue (sqrt (float n) * d < 1.95) (sprintf "KS √n·D = %g" (sqrt (float n) * d))
            // Independence, roughly: correlations between neighbouring lanes, steps and paths.
            let corr (a: float[]) (b: float[]) =
                let ma, mb = Array.average a, Array.average b
                let c = Array.map2 (fun x y -> (x - ma) * (y - mb)) a b |> Array.average
                c / sqrt ((a |> Array.averageBy (fun x -> (x - ma) ** 2.0)) * (b |> Array.averageBy (fun y -> (y - mb) ** 2.0)))
            let k = 20000
            let lane0, lane1, step1, path1, lane2 = Array.zeroCreate k, Array.zeroCreate k, Array.zeroCreate k, Array.zeroCreate k, Array.zeroCreate k
            let b3 = Array.zeroCreate<float> 3
            for j in 0 .. k - 1 do
                Normals.Fill(9UL, uint64 j, 5UL, Philox.TagStep, Span b3)
                lane0.[j] <- b3.[0]; lane1.[j] <- b3.[1]; lane2.[j] <- b3.[2]
                Normals.Fill(9UL, uint64 j, 6UL, Philox.TagStep, Span b3)
                step1.[j] <- b3.[0]
                Normals.Fill(9UL, uint64 j + 1UL, 5UL, Philox.TagStep, Span b3)
                path1.[j] <- b3.[0]
            let lim = tol / sqrt (float k)
            for (name, other) in [ "lane 1", lane1; "lane 2", lane2; "next step", step1; "next path", path1 ] do
                let r = corr lane0 other
                Expect.isTrue (abs r < lim) (sprintf "correlation with %s: %g" name r)
            // Squares of the Box–Muller pair are independent too (r² = −2 log u1 is shared).
            let r2 = corr (Array.map (fun x -> x * x) lane0) (Array.map (fun x -> x * x) lane1)
            Expect.isTrue (abs r2 < lim) (sprintf "correlation of squares within a pair: %g" r2)
        }

        test "uniforms: in (0,1), KS against U(0,1)" {
            let n = 100000
            let xs = Array.zeroCreate<float> n
            let buf = Array.zeroCreate<float> 10
            for p in 0 .. n / 10 - 1 do
                Normals.FillUniform(5UL, uint64 p, 0UL, Philox.TagInitUniform, Span buf)
                Array.blit buf 0 xs (10 * p) 10
            Expect.isTrue (xs |> Array.forall (fun u -> u > 0.0 && u < 1.0)) "all in the open interval"
            let d = ksStatistic xs id
            Expect.isTrue (sqrt (float n) * d < 1.95) (sprintf "KS √n·D = %g" (sqrt (float n) * d))
        }
    ]

[<Tests>]
let exactSumTests =
    testList "Engine.ExactSum" [
        test "exact on classic cases" {
            let sum (xs: float seq) = let s = ExactSum() in (for x in xs do s.Add x); s.Round()
            Expect.equal (sum (Array.create 10 0.1)) 1.0 "ten times 0.1"
            Expect.equal (sum [ 1.0; 1e100; 1.0; -1e100 ]) 2.0 "cancellation"
            Expect.equal (sum [ 1e16; 1.0; 1e-16 ]) 10000000000000002.0 "rounding of the tail"
            Expect.equal (sum [ 1.0; 2.0 ** -53.0; 2.0 ** -106.0 ]) (1.0 + 2.0 ** -52.0) "half-way plus a bit rounds up"
            Expect.equal (sum [ 1.0; 2.0 ** -53.0 ]) 1.0 "exact half-way rounds to even"
            Expect.equal (sum []) 0.0 "empty"
            Expect.isTrue (Double.IsPositiveInfinity(sum [ 1.0; Double.PositiveInfinity ])) "infinity dominates"
            Expect.isTrue (Double.IsNaN(sum [ Double.PositiveInfinity; Double.NegativeInfinity ])) "∞ − ∞ is NaN"
        }

        test "order- and split-independent, bit for bit" {
            let rng = Random(12345)
            let xs = Array.init 20000 (fun _ -> (rng.NextDouble() - 0.5) * 10.0 ** float (rng.Next(-20, 20)))
            let s1 = ExactSum()
            for x in xs do s1.Add x
            let shuffled = xs |> Array.sortBy (fun _ -> rng.Next())
            let s2 = ExactSum()
            for x in shuffled do s2.Add x
            Expect.equal (s2.Round()) (s1.Round()) "shuffled"
            let a, b = ExactSum(), ExactSum()
            shuffled |> Array.iteri (fun i x -> if i % 3 = 0 then a.Add x else b.Add x)
            b.Add a
            Expect.equal (b.Round()) (s1.Round()) "split and merged"
            // Reference: integer arithmetic in units of 2^-1074 is exact; compare the decimal expansions' sign and size.
            let big = xs |> Array.sumBy (fun x -> System.Numerics.BigInteger(x * 2.0 ** 60.0)) // coarse check only
            let approx = float big / 2.0 ** 60.0
            Expect.floatClose Accuracy.medium (s1.Round()) approx "close to a high-precision sum"
        }
    ]

[<Tests>]
let engineTests =
    testList "Engine.Run" [
        test "OU: mean and second moment at T match the Euler chain" {
            let theta, sigma, x0, dt, n = 1.0, 0.5, 1.0, 0.01, 100
            let model = { Theta = theta; Sigma = sigma; X0 = x0 }
            let r = run(model, settings 20000L dt (float n * dt) 1UL 0, [| mean 0; mean 1 |])
            let m, v = ouChain theta sigma x0 dt n
            Expect.equal r.[0].Count 20000L "count"
            within "E[x_N]" r.[0].Value r.[0].StdErr m
            within "E[x_N^2]" r.[1].Value r.[1].StdErr (m * m + v)
        }

        test "GBM: mean and second moment at T match the Euler chain" {
            let mu, sigma, x0, dt, n = 0.3, 0.4, 1.5, 0.02, 50
            let model = { Mu = mu; Sigma = sigma; X0 = x0 }
            let r = run(model, settings 20000L dt (float n * dt) 2UL 0, [| mean 0; mean 1 |])
            within "E[x_N]" r.[0].Value r.[0].StdErr (x0 * (1.0 + mu * dt) ** float n)
            within "E[x_N^2]" r.[1].Value r.[1].StdErr (x0 * x0 * ((1.0 + mu * dt) ** 2.0 + sigma * sigma * dt) ** float n)
        }

        test "2-D linear model with normal and uniform inits: means and cross moment" {
            let model = { B11 = -1.0; B12 = 0.5; B21 = 0.3; B22 = -0.8; S1 = 0.6; S2 = 0.4
                          Mu0 = 1.0; Sd0 = 0.5; A1 = -1.0; B1 = 3.0 }
            let dt, n = 0.05, 20
            let r = run(model, settings 20000L dt (float n * dt) 3UL 0, [| mean 0; mean 1; mean 2 |])
            // Chain: m ← A m, C ← A C Aᵀ + diag(s1², s2²) dt, with A = I + B dt.
            let a = array2D [ [ 1.0 + model.B11 * dt; model.B12 * dt ]; [ model.B21 * dt; 1.0 + model.B22 * dt ] ]
            let mutable m = [| model.Mu0; (model.A1 + model.B1) / 2.0 |]
            let mutable c = array2D [ [ model.Sd0 ** 2.0; 0.0 ]; [ 0.0; (model.B1 - model.A1) ** 2.0 / 12.0 ] ]
            for _ in 1 .. n do
                m <- [| a.[0, 0] * m.[0] + a.[0, 1] * m.[1]; a.[1, 0] * m.[0] + a.[1, 1] * m.[1] |]
                let ac = Array2D.init 2 2 (fun i j -> a.[i, 0] * c.[0, j] + a.[i, 1] * c.[1, j])
                c <- Array2D.init 2 2 (fun i j -> ac.[i, 0] * a.[j, 0] + ac.[i, 1] * a.[j, 1])
                c.[0, 0] <- c.[0, 0] + model.S1 ** 2.0 * dt
                c.[1, 1] <- c.[1, 1] + model.S2 ** 2.0 * dt
            within "E[x0]" r.[0].Value r.[0].StdErr m.[0]
            within "E[x1]" r.[1].Value r.[1].StdErr m.[1]
            within "E[x0 x1]" r.[2].Value r.[2].StdErr (c.[0, 1] + m.[0] * m.[1])
        }

        test "OU: histogram at T matches the Gaussian of the chain" {
            let theta, sigma, x0, dt, n, paths = 1.0, 0.5, 1.0, 0.01, 100, 40000L
            let m, v = ouChain theta sigma x0 dt n
            let lo, hi, bins = -0.5, 1.5, 20
            let r = run({ Theta = theta; Sigma = sigma; X0 = x0 }, settings paths dt (float n * dt) 4UL 0, [| density 0 lo hi bins |])
            let e = r.[0]
            let width = (hi - lo) / float bins
            let cdf x = Normal.CDF(m, sqrt v, x)
            let mutable chi2 = 0.0
            for b in 0 .. bins - 1 do
                let a = lo + float b * width
                Expect.floatClose Accuracy.veryHigh e.Grid.[b] (a + width / 2.0) "bin centre"
                let p = cdf (a + width) - cdf a
                let se = sqrt (p * (1.0 - p) / float paths) / width
                within (sprintf "bin %d" b) e.Values.[b] se (p / width)
                let o = e.Values.[b] * width * float paths
                chi2 <- chi2 + (o - p * float paths) ** 2.0 / (p * float paths)
                if p > 0.01 then
                    let seEst = e.StdErrs.[b]
                    Expect.isTrue (abs (seEst / se - 1.0) < 0.2) (sprintf "bin %d stderr %g vs %g" b seEst se)
            for (name, count, p) in [ "below", e.Below, cdf lo; "above", e.Above, 1.0 - cdf hi ] do
                chi2 <- chi2 + (float count - p * float paths) ** 2.0 / (p * float paths)
                Expect.isTrue (abs (float count - p * float paths) <= tol * sqrt (p * (1.0 - p) * float paths)) name
            let dof = float (bins + 1)
            Expect.isTrue (chi2 < dof + 5.0 * sqrt (2.0 * dof)) (sprintf "chi-square %g with %g dof" chi2 dof)
        }

        test "OU: time averages (mean and density) match the chain averaged over the window" {
            let theta, sigma, x0, dt, n, paths = 1.0, 0.5, 2.0, 0.01, 150, 20000L
            let t0, t1 = 0.5, 1.2
            let model = { Theta = theta; Sigma = sigma; X0 = x0 }
            let lo, hi, bins = -0.5, 2.5, 12
            let r = run(model, settings paths dt (float n * dt) 5UL 0, [| meanOver 0 t0 t1; densityOver 0 lo hi bins t0 t1; mean 0 |])
            let window = [ 50 .. 120 ]
            let chain = window |> List.map (ouChain theta sigma x0 dt)
            let exactMean = chain |> List.averageBy fst
            within "time-averaged mean" r.[0].Value r.[0].StdErr exactMean
            let e = r.[1]
            let width = (hi - lo) / float bins
            let total = (Array.sum e.Values) * width + float (e.Below + e.Above) / (float paths * float window.Length)
            Expect.floatClose Accuracy.high total 1.0 "fractions add up to one"
            for b in 0 .. bins - 1 do
                let a = lo + float b * width
                let p = chain |> List.averageBy (fun (m, v) -> Normal.CDF(m, sqrt v, a + width) - Normal.CDF(m, sqrt v, a))
                if p > 1e-3 then within (sprintf "bin %d" b) e.Values.[b] e.StdErrs.[b] (p / width)
            // Steps 50 .. 120 inclusive: T0 and T1 fall on the grid (within the 1e-9·dt slack).
            let r2 = run(model, settings 100L dt (float n * dt) 5UL 1, [| meanOver 0 0.5000000000001 1.1999999999999 |])
            let r3 = run(model, settings 100L dt (float n * dt) 5UL 1, [| meanOver 0 t0 t1 |])
            Expect.equal r2.[0].Value r3.[0].Value "window ends snap to the grid"
        }

        test "bit-identical across thread counts and path splits" {
            let model = { F = 8.0; Sigma = 0.5 }
            let plans = [| mean 0; mean 1; meanOver 1 0.5 1.0; density 0 -10.0 15.0 25; densityOver 0 -10.0 15.0 10 0.2 1.0 |]
            let s threads first paths = RunSettings(Paths = paths, FirstPath = first, Dt = 0.01, T = 1.0, Seed = 77UL, Threads = threads)
            let one = run(model, s 1 0L 600L, plans)
            let all = run(model, s 0 0L 600L, plans)
            let many = run(model, s 7 0L 600L, plans)
            sameBits one all
            sameBits one many
            let a = runPartial(model, s 3 0L 217L, plans)
            let b = runPartial(model, s 2 217L 383L, plans)
            // Merge in the "wrong" order too, and through serialisation.
            b.Merge a
            sameBits one (b.ToEstimates())
            use ms = new IO.MemoryStream()
            let w = new IO.BinaryWriter(ms)
            b.Write w
            w.Flush()
            ms.Position <- 0L
            let back = Accumulators.Read(new IO.BinaryReader(ms), plans, s 0 0L 600L)
            sameBits one (back.ToEstimates())
            let empty = Accumulators.Create(plans, s 0 0L 600L)
            empty.Merge back
            sameBits one (empty.ToEstimates())
        }

        test "NaN/inf: the exploding model stops with the failing step" {
            let x0, dt = 1.0, 0.01
            // The chain is deterministic: find its first non-finite step by hand.
            let mutable x = x0
            let mutable k = 0
            while Double.IsFinite x do
                x <- x + x * x * x * dt
                k <- k + 1
            let ex =
                Expect.throwsT<SimulationFailedException>
                    (fun () -> run({ Explode.X0 = x0 }, settings 50L dt 10.0 1UL 0, [| mean 0 |]) |> ignore)
                    "should throw"
            let ex = try run({ Explode.X0 = x0 }, settings 50L dt 10.0 1UL 0, [| mean 0 |]) |> ignore; failwith "no exception" with :? SimulationFailedException as e -> e
            Expect.equal ex.Step (int64 k) "earliest failing step"
            Expect.floatClose Accuracy.high ex.Time (float k * dt) "time"
            Expect.isTrue (ex.FailedPaths >= 1L) "failed paths"
            Expect.stringContains ex.Message "NaN or infinity" "message"
        }

        test "memory: a run too large is refused before allocating" {
            let ex = try run({ Huge.Unused = 0.0 }, settings 10L 0.1 1.0 1UL 0, [| mean 0 |]) |> ignore; None with :? RunTooLargeException as e -> Some e
            Expect.isSome ex "huge model refused"
            Expect.stringContains ex.Value.Message "available" "message says what is available"
            let small = RunSettings(Paths = 10L, Dt = 0.1, T = 1.0, Seed = 1UL, MemoryLimit = 1000L)
            Expect.throwsT<RunTooLargeException> (fun () -> run({ Theta = 1.0; Sigma = 1.0; X0 = 0.0 }, small, [| density 0 0.0 1.0 100 |]) |> ignore) "limit hook"
        }

        test "bad queries are rejected" {
            let model = { Theta = 1.0; Sigma = 1.0; X0 = 0.0 }
            Expect.throwsT<ArgumentException> (fun () -> run(model, settings 10L 0.1 1.0 1UL 1, [| mean 5 |]) |> ignore) "observable out of range"
            Expect.throwsT<ArgumentException> (fun () -> run(model, settings 10L 0.1 1.0 1UL 1, [| meanOver 0 2.0 3.0 |]) |> ignore) "empty window"
            Expect.throwsT<ArgumentException> (fun () -> run(model, settings 10L 0.1 1.0 1UL 1, [| density 0 1.0 0.0 10 |]) |> ignore) "empty range"
        }

        test "cancellation stops the run" {
            use cts = new Threading.CancellationTokenSource()
            cts.Cancel()
            let s = RunSettings(Paths = 1000L, Dt = 0.01, T = 1.0, Seed = 1UL, Cancel = cts.Token)
            Expect.throwsT<OperationCanceledException> (fun () -> run({ Theta = 1.0; Sigma = 1.0; X0 = 0.0 }, s, [| mean 0 |]) |> ignore) "cancelled"
        }

        test "progress is reported and ends at 1" {
            let seen = Collections.Concurrent.ConcurrentBag<float>()
            let s = RunSettings(Paths = 2000L, Dt = 0.01, T = 1.0, Seed = 1UL, Progress = (fun f -> seen.Add f))
            run({ Theta = 1.0; Sigma = 1.0; X0 = 0.0 }, s, [| mean 0 |]) |> ignore
            Expect.isTrue (seen.Count >= 1) "called"
            Expect.isTrue (seen |> Seq.forall (fun f -> f >= 0.0 && f <= 1.0)) "fractions"
            Expect.isTrue (seen |> Seq.exists (fun f -> f = 1.0)) "ends at 1"
        }
    ]

[<Tests>]
let engineSequenced =
    testSequenced <| testList "Engine.Perf" [
        test "no allocation per step or per path" {
            let model = { Theta = 1.0; Sigma = 0.5; X0 = 1.0 }
            let plans = [| mean 0; meanOver 1 0.0 0.1; density 0 -2.0 2.0 10 |]
            let run paths steps =
                let s = RunSettings(Paths = paths, Dt = 0.01, T = float steps * 0.01, Seed = 3UL, Threads = 1)
                let before = GC.GetAllocatedBytesForCurrentThread()
                run(model, s, plans) |> ignore
                GC.GetAllocatedBytesForCurrentThread() - before
            run 100L 10 |> ignore // JIT
            run 100L 1000 |> ignore
            run 10000L 10 |> ignore // tiered JIT's re-compilations of the path loop happen here, not in the measurement
            // the least of three: a real allocation per step or path shows in every run, while the
            // runtime's own occasional allocations on this thread (tiered JIT under load) do not
            let least f = List.min [ f (); f (); f () ]
            let a10 = least (fun () -> run 100L 10)
            let a1000 = least (fun () -> run 100L 1000)
            let p10k = least (fun () -> run 10000L 10)
            Expect.isTrue (abs (a1000 - a10) < 512L) (sprintf "10 steps: %d B, 1000 steps: %d B" a10 a1000)
            Expect.isTrue (abs (p10k - a10) < 2048L) (sprintf "100 paths: %d B, 10000 paths: %d B" a10 p10k)
        }
        // (throughput is measured by tests/perf/l96.sh against the peers, not in the suite)
    ]
