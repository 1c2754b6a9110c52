/// Weighted (Feynman–Kac) models and their samplers (issue 14, docs/weighted.md): the Euler chain of
/// an OU process with the quadratic potential weight d log w = −c x² dt against its exact Gaussian
/// recursion, for every resampling scheme; the schemes themselves on fixed weight vectors; the
/// genealogy standard errors by z-scores over seeds; thread independence; the binned density
/// estimate against the exact sum; and the located errors. Tolerances: 4.5 standard errors.
module Sde.Tests.WeightedTests

#nowarn "9" // pointers into pinned arrays for the density estimate

open System
open System.IO
open Expecto
open Sde
open Sde.Core
open Sde.Lang

/// The OU chain x_{n+1} = (1 − θΔt) x_n + σ√Δt ξ_n with log w_{n+1} = log w_n − c x_n² Δt, x_0 ~ N(m0, s0²):
/// the measure E[w_n; x_n ∈ dx] stays Z_n N(m_n, v_n). Multiplying by exp(−cΔt x²) and propagating are
/// both Gaussian operations, so Z_N = E[w_N], m_N = E[w x]/E[w] and v_N + m_N² = E[w x²]/E[w] are exact
/// for the chain. Returns log Z_N, and the normalised mean and second moment at every n (index n).
let exactChain (theta: float) (sigma: float) (c: float) (m0: float) (s0: float) (dt: float) (steps: int) =
    let mutable m = m0
    let mutable v = s0 * s0
    let mutable logZ = 0.0
    let means = Array.zeroCreate (steps + 1)
    let seconds = Array.zeroCreate (steps + 1)
    means[0] <- m
    seconds[0] <- v + m * m
    for n in 1..steps do
        let p = 1.0 / v + 2.0 * c * dt
        let v2 = 1.0 / p
        let m2 = v2 * m / v
        logZ <- logZ + 0.5 * log (v2 / v) - m * m / (2.0 * v) + m2 * m2 / (2.0 * v2)
        let a = 1.0 - theta * dt
        m <- a * m2
        v <- a * a * v2 + sigma * sigma * dt
        means[n] <- m
        seconds[n] <- v + m * m
    logZ, means, seconds

let private ouFormat: Printf.StringFormat<int -> int -> string -> float -> string> =
    """model OUW {
  param theta = 1
  param sigma = 0.8
  param c = 0.5
  state x
  brownian W
  weight w
  init x ~ normal(0.5, 0.7)
  d x = -theta * x dt + sigma dW
  d log w = -c * x^2 dt
}
simulate { paths = %d; dt = 0.05; T = 2; seed = %d; resample = %s; ess = %g }
query {
  mean(x)
  mean(x^2)
  mean(x) over [1, 2]
  log_normalizer
  ess
}
"""

let private ouSource (resample: string) (ess: float) (paths: int) (seed: int) = sprintf ouFormat paths seed resample ess

let private exact = exactChain 1.0 0.8 0.5 0.5 0.7 0.05 40

let private compile (src: string) =
    match SdeCompiler.Compile(src, "w.sde") with
    | Error ds -> failwithf "compile errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")
    | Ok p -> p

let private results (r: Report.RunReport) =
    (List.head r.Sets).Results |> List.map (fun q -> q.Query, q) |> Map.ofList

let private runText (src: string) (threads: int) =
    let p = compile src
    results (p.Run(threads = threads))

let private within (k: float) (name: string) (est: float) (se: float) (exact: float) =
    Expect.isTrue (Double.IsFinite est && Double.IsFinite se && se > 0.0) (sprintf "%s: finite (%g ± %g)" name est se)
    Expect.isLessThanOrEqual (abs (est - exact)) (k * se) (sprintf "%s: %g ± %g vs exact %g" name est se exact)

/// The diagnostics of a source that must not compile.
let private errorsOf (src: string) =
    match SdeCompiler.Compile(src, "w.sde") with
    | Ok _ -> failwith "compiled, but an error was expected"
    | Error ds -> ds

let private expectError (src: string) (line: int) (fragment: string) =
    let ds = errorsOf src
    Expect.exists ds (fun d -> d.Line = line && d.Message.Contains fragment)
        (sprintf "an error at line %d containing '%s'; got: %s" line fragment (ds |> List.map (fun d -> d.Rendered) |> String.concat " | "))

let private schemes = [ "none"; "systematic"; "stratified"; "multinomial"; "residual"; "birth_death" ]

let private fixedWeights (n: int) =
    let raw = Array.init n (fun i -> exp (1.5 * sin (float i * 1.7) + 0.3 * float (i % 3)))
    let s = Array.sum raw
    raw |> Array.map (fun w -> w / s)

/// Offspring counts of `scheme` on `w` over `reps` independent draws (distinct step keys).
let private offspring (scheme: ResampleScheme) (w: float[]) (reps: int) =
    let n = w.Length
    let anc = Array.zeroCreate<int> n
    let scratch = Array.zeroCreate<float> (2 * n + 2)
    Array.init reps (fun r ->
        Resampling.Ancestors(scheme, ReadOnlySpan<float>(w), 77UL, uint64 r, Span<int>(anc), Span<float>(scratch))
        Resampling.Counts(ReadOnlySpan<int>(anc), n))

/// PathNormals.FillFirstLanes4 and Normals.Fill into managed arrays.
let private fill4 (seed: uint64) (path0: uint64) (step: uint64) (z: float[]) =
    use pz = fixed z
    PathNormals.FillFirstLanes4(seed, path0, step, Philox.TagStep, pz)

let private fill1 (seed: uint64) (path: uint64) (step: uint64) (z: float[]) =
    Normals.Fill(seed, path, step, Philox.TagStep, Span<float>(z))

/// The binned estimate at every member of a flat (n × k) population.
let private evaluateKde (k: int) (flat: float[]) (w: float[]) (h: float[]) =
    let n = w.Length
    let out = Array.zeroCreate<float> n
    let kde = BinnedKde k
    use px = fixed flat
    use pw = fixed w
    use po = fixed out
    kde.Evaluate(px, int64 k, Array.init k id, pw, n, h, po, 1L)
    out

let private repoRoot =
    let rec up (d: IO.DirectoryInfo) =
        if isNull d then failwith "Dsl.sln not found above the test assembly"
        elif IO.File.Exists(IO.Path.Combine(d.FullName, "Dsl.sln")) then d.FullName
        else up d.Parent
    up (IO.DirectoryInfo AppContext.BaseDirectory)

/// examples/NAME.sde with overrides; the results by set name, then by query text.
let private runExample (name: string) (ov: Frontend.Overrides) =
    let text = IO.File.ReadAllText(IO.Path.Combine(repoRoot, "examples", name + ".sde"))
    match SdeCompiler.Compile(text, name + ".sde", ov) with
    | Error ds -> failwithf "compile errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")
    | Ok p ->
        let r = p.Run()
        r.Sets |> List.map (fun s -> s.Name, s.Results |> List.map (fun q -> q.Query, q) |> Map.ofList) |> Map.ofList

/// ∫_a^b f by the trapezoid rule on n intervals.
let private trapezoid (f: float -> float) (a: float) (b: float) (n: int) =
    let h = (b - a) / float n
    h * (0.5 * (f a + f b) + Seq.sum (seq { for i in 1 .. n - 1 -> f (a + float i * h) }))

[<Tests>]
let tests =
    testList "Weighted" [
        test "OU with d log w = -c x^2 dt: every scheme matches the Euler chain's exact E[w x]/E[w], E[w x^2]/E[w] and the window mean" {
            let _, means, seconds = exact
            let windowMean = Array.average means[20..40]
            for scheme in schemes do
                for ess in [ 0.5; 1.0 ] do
                    if not (scheme = "none" && ess = 1.0) then
                        let r = runText (ouSource scheme ess 20000 11) 0
                        let tag = sprintf "%s, ess %g" scheme ess
                        Expect.isTrue r["mean(x)"].Weighted (tag + ": weighted")
                        within 4.5 (tag + ": mean(x)") r["mean(x)"].Value r["mean(x)"].StdErr means[40]
                        within 4.5 (tag + ": mean(x^2)") r["mean(x^2)"].Value r["mean(x^2)"].StdErr seconds[40]
                        within 4.5 (tag + ": mean(x) over [1, 2]") r["mean(x) over [1, 2]"].Value r["mean(x) over [1, 2]"].StdErr windowMean
                        let resamplings = r["ess"].Resamplings.Value
                        if scheme = "none" then Expect.equal resamplings 0L (tag + ": no resampling")
                        elif ess = 1.0 || scheme = "birth_death" then Expect.equal resamplings 39L (tag + ": every step but the last")
        }

        test "a Girsanov weight d log w = b dW - b^2/2 dt: E[w_T] = 1 and the weighted chain drifts by sigma b dt per step (exact for the chain)" {
            let src = (ouSource "multinomial" 0.5 20000 21).Replace("d log w = -c * x^2 dt", "d log w = 0.6 dW - 0.18 dt")
            let r = runText src 0
            // under the tilt exp(b √Δt ξ − b²Δt/2) the normal ξ has mean b √Δt: m ← (1 − θΔt) m + σ b Δt
            let mutable m = 0.5
            for _ in 1..40 do m <- (1.0 - 0.05) * m + 0.8 * 0.6 * 0.05
            within 4.5 "mean(x)" r["mean(x)"].Value r["mean(x)"].StdErr m
            within 4.5 "log_normalizer" r["log_normalizer"].Value r["log_normalizer"].StdErr 0.0
        }

        test "log_normalizer: log E[w_T] of the chain, over 10 independent populations per scheme (and by its own standard error without resampling)" {
            let logZ, _, _ = exact
            let r0 = runText (ouSource "none" 0.5 20000 5) 0
            within 4.5 "none: log_normalizer" r0["log_normalizer"].Value r0["log_normalizer"].StdErr logZ
            for scheme in schemes do
                let xs =
                    [| for seed in 1..10 ->
                           let r = runText (ouSource scheme 1.0 4000 (100 + seed)) 0
                           r["log_normalizer"].Value |]
                let m = Array.average xs
                let se = sqrt ((xs |> Array.sumBy (fun x -> (x - m) ** 2.0)) / 9.0 / 10.0)
                within 4.5 (scheme + ": mean log_normalizer over seeds") m se logZ
        }

        test "genealogy standard errors: z-scores of mean(x) over 40 seeds have RMS near 1 (multinomial and systematic, resampling every step) [slow tier]" {
            Tier.requireSlow "80 weighted runs (6 s)"
            let _, means, _ = exact
            for scheme in [ "multinomial"; "systematic" ] do
                let zs =
                    [| for seed in 1..40 ->
                           let all = runText (ouSource scheme 1.0 2000 (1000 + seed)) 0
                           let r = all["mean(x)"]
                           (r.Value - means[40]) / r.StdErr |]
                let rms = sqrt (Array.averageBy (fun z -> z * z) zs)
                printfn "z-score RMS of mean(x), %s: %.3f" scheme rms
                // 40 z-scores: the RMS of standard normals has sd about 0.11
                Expect.isGreaterThan rms 0.6 (sprintf "%s: RMS %g not far below 1" scheme rms)
                Expect.isLessThan rms 1.45 (sprintf "%s: RMS %g not far above 1" scheme rms)
        }

        test "resampling schemes are unbiased (E count = N W) and stratified, residual have no larger count variance than multinomial" {
            let n = 40
            let w = fixedWeights n
            let reps = 4000
            let var (counts: int[][]) i =
                let xs = counts |> Array.map (fun c -> float c[i])
                let m = Array.average xs
                (xs |> Array.sumBy (fun x -> (x - m) ** 2.0)) / float (reps - 1)
            let totals = Collections.Generic.Dictionary<ResampleScheme, float>()
            for scheme in [ ResampleScheme.Systematic; ResampleScheme.Stratified; ResampleScheme.Multinomial; ResampleScheme.Residual ] do
                let counts = offspring scheme w reps
                Expect.isTrue (counts |> Array.forall (fun c -> Array.sum c = n)) (sprintf "%A keeps N" scheme)
                for i in 0 .. n - 1 do
                    let m = counts |> Array.averageBy (fun c -> float c[i])
                    // the sd of the mean; at least the multinomial's bound / 100 (zero-variance indices)
                    let se = sqrt (max (var counts i) 1e-4 / float reps)
                    Expect.isLessThanOrEqual (abs (m - float n * w[i])) (4.5 * se + 1e-9) (sprintf "%A: E count of %d = %g vs N W = %g" scheme i m (float n * w[i]))
                totals[scheme] <- [ 0 .. n - 1 ] |> List.sumBy (var counts)
            let multinomial = w |> Array.sumBy (fun wi -> float n * wi * (1.0 - wi))
            printfn "Σ Var(count): multinomial %.3f (exact %.3f), stratified %.3f, residual %.3f, systematic %.3f"
                totals[ResampleScheme.Multinomial] multinomial totals[ResampleScheme.Stratified] totals[ResampleScheme.Residual] totals[ResampleScheme.Systematic]
            // the multinomial estimate agrees with its exact value (sampling error of a variance: a few %)
            Expect.isLessThan (abs (totals[ResampleScheme.Multinomial] / multinomial - 1.0)) 0.1 "multinomial's variance"
            Expect.isLessThanOrEqual totals[ResampleScheme.Stratified] multinomial "stratified ≤ multinomial"
            Expect.isLessThanOrEqual totals[ResampleScheme.Residual] multinomial "residual ≤ multinomial"
        }

        test "birth-death: a path with centred rate β Δt dies (β < 0) or duplicates (β > 0) with probability 1 − exp(−|β Δt|), onto a uniform other path" {
            let n = 1000
            for rate in [ 0.3; -0.3; 0.05; -1.2 ] do
                let mutable events = 0
                let mutable wrongSign = 0
                let partners = Array.zeroCreate<int> n
                let reps = 20
                for r in 0 .. reps - 1 do
                    for i in 0 .. n - 1 do
                        let mutable j = 0
                        let e = Resampling.BirthDeathEvent(rate, 5UL, i, uint64 r, n, &j)
                        if e <> 0 then
                            events <- events + 1
                            if e <> sign rate then wrongSign <- wrongSign + 1
                            Expect.notEqual j i "the partner is another path"
                            partners[j] <- partners[j] + 1
                let p = 1.0 - exp (-(abs rate))
                let trials = float (reps * n)
                let se = sqrt (p * (1.0 - p) / trials)
                Expect.equal wrongSign 0 "a positive rate duplicates, a negative one kills"
                Expect.isLessThanOrEqual (abs (float events / trials - p)) (4.5 * se) (sprintf "rate %g: frequency %g vs %g" rate (float events / trials) p)
        }

        test "four paths' first two normals in one vector are bit for bit those of each path's own stream" {
            if PathNormals.Usable then
                let z = Array.zeroCreate<float> 8
                let one = Array.zeroCreate<float> 2
                for path0 in [ 0UL; 5UL; 4294967294UL; 123456789012UL ] do
                    for step in [ 0UL; 7UL; 5000000000UL ] do
                        fill4 42UL path0 step z
                        for k in 0..3 do
                            fill1 42UL (path0 + uint64 k) step one
                            Expect.equal (BitConverter.DoubleToInt64Bits z[2 * k]) (BitConverter.DoubleToInt64Bits one[0]) (sprintf "path %d step %d lane 0" (path0 + uint64 k) step)
                            Expect.equal (BitConverter.DoubleToInt64Bits z[2 * k + 1]) (BitConverter.DoubleToInt64Bits one[1]) (sprintf "path %d step %d lane 1" (path0 + uint64 k) step)
        }

        test "a weight that stays 1 leaves the paths of the unweighted model (same means to rounding, lockstep or not)" {
            let plain = "model P {\n  state x\n  brownian W\n  init x ~ normal(0.3, 1)\n  d x = -x^3 dt + 0.7 dW\n}\nsimulate { paths = 3001; dt = 0.01; T = 1; seed = 8 }\nquery {\n  mean(x)\n  mean(x^2)\n}\n"
            let weighted (resample: string) =
                plain.Replace("  d x = -x^3 dt + 0.7 dW\n", "  d x = -x^3 dt + 0.7 dW\n  weight w\n  d log w = 0 dt\n").Replace("seed = 8 }", sprintf "seed = 8; resample = %s }" resample)
            let a = runText plain 0
            for resample in [ "none"; "systematic" ] do
                let b = runText (weighted resample) 0
                for q in [ "mean(x)"; "mean(x^2)" ] do
                    Expect.floatClose { absolute = 1e-13; relative = 1e-12 } b[q].Value a[q].Value (sprintf "%s, resample = %s" q resample)
                Expect.equal b["mean(x)"].Count a["mean(x)"].Count "paths"
        }

        test "the same numbers with 1 thread and with all threads (resampling and log_density)" {
            let src = (ouSource "systematic" 0.7 3000 9).Replace("d log w = -c * x^2 dt", "d log w = -(log_density(x) + x^2) dt")
            for s in [ ouSource "stratified" 0.7 3000 9; src; src.Replace("ess = 0.7", "ess = 0.7; bandwidth = 0.2") ] do
                let a = runText s 1
                let b = runText s 3
                for KeyValue(k, q) in a do
                    Expect.equal (b[k].Value.ToString "R") (q.Value.ToString "R") (sprintf "%s: value" k)
                    Expect.equal (b[k].StdErr.ToString "R") (q.StdErr.ToString "R") (sprintf "%s: stderr" k)
        }

        test "binned log_density agrees with the exact kernel sum: 1% in 1 and 2 coordinates, 2% in 3 (the grid is capped at 72 nodes per axis)" {
            let rng = Random 3
            for k in 1..3 do
                let n = 3000
                let pts = Array.init n (fun i -> Array.init k (fun a -> (if i % 2 = 0 then -1.0 else 1.5) + 0.6 * (rng.NextDouble() + rng.NextDouble() - 1.0) * float (a + 1)))
                let raw = Array.init n (fun i -> 0.5 + rng.NextDouble())
                let w = raw |> Array.map (fun x -> x / Array.sum raw)
                let h = Array.create k 0.25
                let out = evaluateKde k (Array.concat pts) w h
                for i in [ 0; 1; 17; 500; 2999 ] do
                    let e = BinnedKde.Exact(pts, w, pts[i], h)
                    Expect.isLessThan (abs (exp (out[i] - e) - 1.0)) (if k = 3 then 0.02 else 0.01) (sprintf "k = %d, member %d: %g vs exact %g" k i out[i] e)
        }

        test "located errors: several d log w, ess outside (0, 1], log_density of no state, weights with responses and Lyapunov" {
            let base_ (extraModel: string) (sim: string) (queries: string) =
                sprintf "model M {\n  param a = 1\n  state x\n  brownian W\n  weight w\n  init x = 0\n  d x = -a * x dt + dW\n  d log w = -x^2 dt\n%s}\nsimulate { paths = 10; dt = 0.1; T = 1%s }\nquery {\n  mean(x)\n%s}\n" extraModel sim queries
            expectError (base_ "  d log w = x dt\n" "" "") 9 "a second equation for the weight"
            expectError (base_ "" "; ess = 1.5" "") 10 "outside (0, 1]"
            expectError (base_ "" "; ess = 0" "") 10 "outside (0, 1]"
            expectError (base_ "" "; resample = sometimes" "") 10 "resample must be one of"
            expectError (base_ "" "" "  d mean(x) / d a\n") 13 "not available yet"
            expectError (base_ "" "" "  lyapunov(1)\n") 13 "not available yet"
            expectError (base_ "" "" "  mean(w)\n") 13 "cannot appear in expressions"
            expectError ((base_ "" "" "").Replace("d log w = -x^2 dt", "d log w = -log_density(z) dt")) 8 "no such state"
            expectError ((base_ "" "" "").Replace("d x = -a * x dt + dW", "d x = -log_density(x) dt + dW")) 7 "only in the weight's equation"
            expectError (base_ "  init w = 1\n" "" "") 9 "has no init"
            expectError (base_ "  d w = x dt\n" "" "") 9 "written for its log"
            let noWeight = "model M {\n  state x\n  brownian W\n  init x = 0\n  d x = -x dt + dW\n}\nsimulate { paths = 10; dt = 0.1; T = 1; resample = systematic }\nquery {\n  log_normalizer\n}\n"
            expectError noWeight 7 "applies to weighted models"
            expectError noWeight 9 "property of a weighted population"
        }

        test "the JSON says weighted: true, gives log_normalizer and ess their kinds and the resamplings; coalesced genealogies are flagged" {
            let p = compile (ouSource "multinomial" 1.0 200 3)
            let r = p.Run()
            let json = SdeCompiler.ToJson r
            let doc = Text.Json.JsonDocument.Parse(json)
            let sets = doc.RootElement.GetProperty("sets")
            let res = sets[0].GetProperty("results")
            let byQuery = [ for q in res.EnumerateArray() -> (q.GetProperty("query").GetString(), q) ] |> Map.ofList
            Expect.isTrue (byQuery["mean(x)"].GetProperty("weighted").GetBoolean()) "mean weighted"
            Expect.equal (byQuery["log_normalizer"].GetProperty("kind").GetString()) "log_normalizer" "kind"
            Expect.equal (byQuery["ess"].GetProperty("kind").GetString()) "ess" "kind"
            Expect.equal (byQuery["ess"].GetProperty("resamplings").GetInt64()) 39L "resamplings"
            // 200 paths resampled 39 times (multinomial): the lines coalesce to a few starting paths
            let q = (results r)["mean(x)"]
            Expect.exists q.Warnings (fun w -> w.Contains "descend from only") "coalescence warning"
            let none = (runText (ouSource "none" 0.5 200 3) 0)["mean(x)"]
            Expect.isEmpty none.Warnings "no warning without resampling"
        }

        test "a weighted model runs on ilgpu-cpu (the CPU engine's values); cuda refuses it with a located error" {
            let p = compile (ouSource "systematic" 0.5 100 1)
            let bits (x: float) = BitConverter.DoubleToInt64Bits x
            let values (r: Report.RunReport) = r.Sets.Head.Results |> List.map (fun q -> bits q.Value, bits q.StdErr)
            Expect.equal (values (p.Run(1, backend = "ilgpu-cpu"))) (values (p.Run(1, backend = "cpu"))) "ilgpu-cpu: the CPU engine's values"
            Expect.throwsT<NotSupportedException> (fun () -> p.Run(1, null, "cuda") |> ignore) "cuda refused (no device has checked the kernel)"
        }

        test "weight and d log w print and parse back (round trip)" {
            match Parser.parseFile (ouSource "systematic" 0.5 100 1) with
            | Error d -> failwithf "%A" d
            | Ok f -> Expect.equal (Parser.parseFile (Printer.printFile f)) (Ok f) "round trip"
        }

        test "examples/anneal.sde: log Z1/Z0 and E[x^2] against quadrature, within the time-step bias measured at dt and dt/2" {
            let z1 = trapezoid (fun x -> exp (-2.0 * (x * x - 1.0) ** 2.0)) -6.0 6.0 200000
            let logZ = log (z1 / sqrt (2.0 * Math.PI))
            let x2 = trapezoid (fun x -> x * x * exp (-2.0 * (x * x - 1.0) ** 2.0)) -6.0 6.0 200000 / z1
            Expect.floatClose Accuracy.medium logZ -0.57470 "the comment's log Z1/Z0"
            Expect.floatClose Accuracy.medium x2 0.85214 "the comment's E[x^2]"
            let at dt = (runExample "anneal" { Frontend.noOverrides with Paths = Some 20000L; Dt = Some dt })["default"]
            let a, b = at 0.01, at 0.005
            for q, exact in [ "log_normalizer", logZ; "mean(x^2)", x2 ] do
                let ea, eb = a[q], b[q]
                // an O(dt) bias halves with dt: the estimate at dt/2 lies within the difference of the two
                // (the bias left at dt/2) plus 4.5 combined standard errors
                let se = sqrt (ea.StdErr ** 2.0 + eb.StdErr ** 2.0)
                printfn "anneal %s: %.5f (dt 0.01), %.5f (dt 0.005), exact %.5f" q ea.Value eb.Value exact
                Expect.isLessThanOrEqual (abs (eb.Value - exact)) (abs (ea.Value - eb.Value) + 4.5 * se) (sprintf "%s at dt/2" q)
                Expect.isLessThanOrEqual (abs (eb.Value - exact)) (abs (ea.Value - exact) + 4.5 * se) (sprintf "%s: the bias does not grow as dt falls" q)
        }

        test "examples/wfr_double_well.sde: the WFR sampler reaches the target's mass right of 0, plain Langevin is measurably short of it" {
            let v x = 4.0 * (x * x - 1.0) ** 2.0 + 0.5 * x
            let target = trapezoid (fun x -> exp (-(v x))) 0.0 6.0 200000 / trapezoid (fun x -> exp (-(v x))) -6.0 6.0 400000
            Expect.floatClose { absolute = 1e-5; relative = 0.0 } target 0.28243 "the comment's mass"
            let r = runExample "wfr_double_well" { Frontend.noOverrides with Paths = Some 10000L }
            let wfr, lang = r["wfr"]["mean(right)"], r["langevin"]["mean(right)"]
            printfn "double well: mass right of 0 at T: WFR %.4f ± %.4f, Langevin %.4f ± %.4f, target %.4f" wfr.Value wfr.StdErr lang.Value lang.StdErr target
            // WFR: within 4.5 standard errors plus 0.03 for the flow not yet at equilibrium at T = 4 and the
            // kernel estimate's smoothing (h ≈ 0.1 against wells of width about 0.2)
            Expect.isLessThanOrEqual (abs (wfr.Value - target)) (4.5 * wfr.StdErr + 0.03) "WFR reaches the target mass"
            Expect.isLessThan (lang.Value + 4.5 * lang.StdErr) (target - 0.1) "Langevin is short of it"
        }

        test "examples/wfr_mixture2d.sde: WFR finds the four masses (0.4, 0.3, 0.2, 0.1), Langevin stays near 1/4 each" {
            let r = runExample "wfr_mixture2d" Frontend.noOverrides
            let queries =
                [ "mean(if x > 0 and y > 0 then 1 else 0)", 0.4
                  "mean(if x < 0 and y > 0 then 1 else 0)", 0.3
                  "mean(if x < 0 and y < 0 then 1 else 0)", 0.2
                  "mean(if x > 0 and y < 0 then 1 else 0)", 0.1 ]
            // the quadrant masses of the target: π_k, up to tails beyond 5 standard deviations of a mode
            for q, pi in queries do
                let w = r["wfr"][q]
                printfn "four Gaussians, WFR: %s = %.4f ± %.4f (mass %g)" q w.Value w.StdErr pi
                within 4.5 ("WFR " + q) w.Value w.StdErr pi
            // Langevin keeps the start's quadrant shares: the heaviest mode measurably short, the lightest far over
            let heavy, light = r["langevin"][fst queries[0]], r["langevin"][fst queries[3]]
            Expect.isLessThan (heavy.Value + 4.5 * heavy.StdErr) 0.35 "Langevin misses the heaviest mode's mass"
            Expect.isGreaterThan (light.Value - 4.5 * light.StdErr) 0.15 "Langevin overweights the lightest mode"
        }

        test "the embedding API counts the user's state components; ModelDimension the emitted model's (with log w and log_density)" {
            let src = File.ReadAllText(Path.Combine(CliTests.repoRoot, "examples", "wfr_double_well.sde"))
            match SdeCompiler.Compile(src, "wfr_double_well.sde") with
            | Ok p ->
                Expect.equal p.Dimension 1 "one state, x"
                Expect.equal p.ModelDimension 3 "x, log w and log_density"
            | Error ds -> failtestf "%A" ds
        }

        test "dsl slurm refuses a weighted model before writing any script (located at the weight), as --shard does" {
            let out = Path.Combine(Path.GetTempPath(), sprintf "dsl-wslurm-%d" Environment.ProcessId)
            let o = CliTests.dsl [ "slurm"; "examples/anneal.sde"; "--shards"; "2"; "--out"; out ]
            Expect.equal o.Code 2 (sprintf "exit 2 (%s)" o.Err)
            Expect.stringContains o.Err "anneal.sde:17:10: error: 'weight w' makes a weighted model" "located at the weight"
            Expect.isFalse (Directory.Exists out) "no scripts written"
        }
    ]

// ---- lanes over paths (issue 20): the weighted engine steps four paths at once where the model has a lane step ----

/// The double-well Langevin sampler of tests/perf/weighted_cost.sde, `paths` × 1000 steps, with the weight
/// `d log w = weight` and the resampling settings `sim`; a window mean (the population observed at every
/// step of [0.9, 1]) and a density at T beside the means at T.
let private wellFormat: Printf.StringFormat<string -> int -> string -> string> =
    """model Well {
  state x
  brownian W
  weight w
  init x ~ normal(-1, 0.3)
  d x = -(16 * x * (x^2 - 1) + 0.5) dt + sqrt(2) dW
  d log w = %s
}
simulate { paths = %d; dt = 0.001; T = 1; seed = 5; bias = off; %s }
query {
  mean(x^2)
  mean(x) over [0.9, 1]
  density(x) on [-2, 2] bins 20
  log_normalizer
  ess
}
"""

let private wellSource (weight: string) (paths: int) (sim: string) = sprintf wellFormat weight paths sim

/// Birth-death Langevin with the binned log_density (tests/perf/wfr_bd.sde): 16 replicas from 1024 paths.
let private bdSource (paths: int) (steps: int) =
    sprintf "model WfrBd {\n  state x\n  brownian W\n  weight w\n  let V = 4 * (x^2 - 1)^2 + 0.5 * x\n  init x = -1\n  d x = -(16 * x * (x^2 - 1) + 0.5) dt + sqrt(2) dW\n  d log w = -(log_density(x) + V) dt\n}\nsimulate { paths = %d; dt = 0.002; T = %g; seed = 5; bias = off; resample = birth_death; bandwidth = 0.1 }\nquery {\n  mean(if x > 0 then 1 else 0)\n  log_normalizer\n  ess\n}\n" paths (0.002 * float steps)

/// The JSON of a run (without its timing) with `lanes` (0: the engine's own choice, 1: one path at a time,
/// 4: four paths per step, as SDE_LANES sets them) on `threads` threads, and the report.
let private jsonWith (p: CompiledProgram) (lanes: int) (threads: int) =
    let saved = Engine.LanesOnThisThread
    Engine.LanesOnThisThread <- lanes
    try
        let r = Driver.run p.Program { Driver.defaultOptions with Threads = threads }
        let node = Text.Json.Nodes.JsonNode.Parse(SdeCompiler.ToJson r)
        node.AsObject().Remove("timing") |> ignore
        node.ToJsonString(), r
    finally Engine.LanesOnThisThread <- saved

/// The model has a lane step, and the engine's own choice at `paths` × `steps` is four paths per step.
let private choosesLanes (p: CompiledProgram) (paths: int64) (steps: int) =
    let c = p.Program.Compiled
    let m = c.Instance(Array.zeroCreate c.Ir.ParamNames.Length) :?> ISdeLaneModel
    Expect.equal m.LaneWidth 4 "the weighted model has a lane step"
    if Runtime.Intrinsics.X86.Avx2.IsSupported then
        let s = RunSettings(Paths = paths, Dt = 0.001, T = float steps * 0.001)
        Expect.isTrue (Engine.ChooseLanes(s, m.LaneWidth, c.Ir.Dim)) "the default runs four paths per step"

/// The resamplings that a run's `ess` query reports.
let private resamplingsOf (r: Report.RunReport) = (results r).["ess"].Resamplings.Value

/// Identical JSON one path at a time (SDE_LANES=1) and with `lanes` (0: the engine's choice, 4: forced) on
/// one thread, and with `lanes` on three; the resamplings.
let private sameJson (src: string) (lanes: int) =
    let p = compile src
    let one, r = jsonWith p 1 1
    let laned, _ = jsonWith p lanes 1
    Expect.equal laned one "lanes: the JSON of one path at a time"
    let threads, _ = jsonWith p lanes 3
    Expect.equal threads one "three threads: the JSON of one"
    resamplingsOf r

/// The three workloads of tests/perf/weighted.sh, cut to `paths` (and birth-death to `bdSteps` steps).
let private noWeight paths = wellSource "-x^2 dt" paths "resample = none"
let private systematic paths = wellSource "-x^2 dt + 2 dW" paths "resample = systematic; ess = 0.5"

[<Tests>]
let laneTests =
    testList "Weighted.Lanes" [
        test "lanes give the JSON of one path at a time, on 1 and 3 threads: a weight without resampling (403 paths, a window and a density)" {
            Expect.equal (sameJson (noWeight 403) 4) 0L "no resampling"
        }

        test "lanes give the JSON of one path at a time, on 1 and 3 threads: systematic resampling at ess 0.5 (403 paths)" {
            Expect.isGreaterThan (sameJson (systematic 403) 4) 2L "the population was resampled"
        }

        test "lanes give the JSON of one path at a time, on 1 and 3 threads: WFR birth-death with log_density (1103 paths, 16 replicas)" {
            Expect.equal (sameJson (bdSource 1103 200) 4) 199L "a birth-death step at every step but the last"
        }

        test "lanes give the JSON of one path at a time: stratified, multinomial and residual resampling (403 paths)" {
            for scheme in [ "stratified"; "multinomial"; "residual" ] do
                let p = compile ((wellSource "-x^2 dt + 2 dW" 403 (sprintf "resample = %s; ess = 0.6" scheme)).Replace("T = 1;", "T = 0.4;").Replace("[0.9, 1]", "[0.3, 0.4]"))
                let one, r = jsonWith p 1 1
                let lanes, _ = jsonWith p 4 1
                Expect.equal lanes one (scheme + ": lanes")
                Expect.isGreaterThan (resamplingsOf r) 0L (scheme + ": resampled")
        }

        test "the population shortcuts give the JSON of the phases one by one: the ESS bound and chunk sums (systematic), the fused birth-death phase (16 replicas, given and Silverman bandwidths)" {
            let silverman = (bdSource 1103 200).Replace("; bandwidth = 0.1", "")
            for src in [ systematic 403; wellSource "-20 * x^2 dt" 2003 "resample = multinomial; ess = 0.6"; bdSource 1103 200; silverman ] do
                let p = compile src
                let fast, _ = jsonWith p 4 1
                WeightedEngine.PlainPhasesOnThisThread <- true
                let plain =
                    try fst (jsonWith p 4 1)
                    finally WeightedEngine.PlainPhasesOnThisThread <- false
                Expect.equal fast plain "the same JSON"
        }

        test "multi-step segments give the JSON of the phases one by one: segments of 2, 5, 32 and 400 steps, with resamplings found inside a segment and stepped again to (systematic, multinomial, residual; lanes and one path at a time)" {
            let sources =
                [ systematic 403
                  wellSource "-20 * x^2 dt" 2003 "resample = multinomial; ess = 0.6"
                  (wellSource "-x^2 dt + 2 dW" 403 "resample = residual; ess = 0.7").Replace("[0.9, 1]", "[0.99, 1]") ]
            for src in sources do
                let p = compile src
                WeightedEngine.PlainPhasesOnThisThread <- true
                let plain, r =
                    try jsonWith p 4 1
                    finally WeightedEngine.PlainPhasesOnThisThread <- false
                Expect.isGreaterThan (resamplingsOf r) 1L "the population was resampled"
                let mutable again = 0L
                for len in [ 2; 5; 32; 400 ] do
                    for lanes in [ 1; 4 ] do
                        WeightedEngine.SegmentStepsOnThisThread <- len
                        WeightedEngine.SegmentsOnThisThread <- 0L
                        WeightedEngine.SteppedAgainOnThisThread <- 0L
                        let json =
                            try fst (jsonWith p lanes 1)
                            finally WeightedEngine.SegmentStepsOnThisThread <- 0
                        Expect.isGreaterThan WeightedEngine.SegmentsOnThisThread 0L (sprintf "segments of %d ran" len)
                        again <- again + WeightedEngine.SteppedAgainOnThisThread
                        Expect.equal json plain (sprintf "segments of %d, lanes %d: the JSON of the phases one by one" len lanes)
                Expect.isGreaterThan again 0L "some resampling fell inside a segment, which stepped again to it"
        }

        test "a path that fails inside a multi-step segment fails as in the phases one by one (the segment is stepped again one step at a time)" {
            let src = "model Blow {\n  state x\n  brownian W\n  weight w\n  init x ~ normal(0, 1)\n  d x = x^3 dt + dW\n  d log w = -x^2 dt\n}\nsimulate { paths = 203; dt = 0.05; T = 5; seed = 3; resample = systematic }\nquery {\n  mean(x)\n}\n"
            let p = compile src
            let failure () = snd (Driver.runKeeping p.Program { Driver.defaultOptions with Threads = 1 }) |> List.map (fun e -> e.Message)
            WeightedEngine.PlainPhasesOnThisThread <- true
            let plain =
                try failure ()
                finally WeightedEngine.PlainPhasesOnThisThread <- false
            Expect.isNonEmpty plain "the run fails"
            WeightedEngine.SegmentFailuresOnThisThread <- 0L
            WeightedEngine.SegmentStepsOnThisThread <- 64
            let segmented =
                try failure ()
                finally WeightedEngine.SegmentStepsOnThisThread <- 0
            Expect.isGreaterThan WeightedEngine.SegmentFailuresOnThisThread 0L "the failure fell inside a segment"
            Expect.equal segmented plain "the same failure"
        }

        test "a path that leaves the finite numbers fails in the same words with lanes and one path at a time" {
            let src = "model Blow {\n  state x\n  brownian W\n  weight w\n  init x ~ normal(0, 1)\n  d x = x^3 dt + dW\n  d log w = -x^2 dt\n}\nsimulate { paths = 203; dt = 0.05; T = 5; seed = 3; resample = systematic }\nquery {\n  mean(x)\n}\n"
            let p = compile src
            let failure lanes =
                let saved = Engine.LanesOnThisThread
                Engine.LanesOnThisThread <- lanes
                try snd (Driver.runKeeping p.Program { Driver.defaultOptions with Threads = 1 }) |> List.map (fun e -> e.Message)
                finally Engine.LanesOnThisThread <- saved
            let one = failure 1
            Expect.isNonEmpty one "the run fails"
            Expect.equal (failure 4) one "the same failure"
        }

        test "SDE_LANES=1 and the default give the same JSON at sizes where the default runs lanes: no resampling, systematic, birth-death [slow tier]" {
            Tier.requireSlow "six weighted runs of 10^6 path-steps, three one path at a time (5 s)"
            for src, paths, steps in [ noWeight 1003, 1003L, 1000; systematic 1003, 1003L, 1000; bdSource 2003 500, 2003L, 500 ] do
                let p = compile src
                choosesLanes p paths steps
                let one, _ = jsonWith p 1 0
                let byDefault, _ = jsonWith p 0 0
                Expect.equal byDefault one "the default (lanes): the JSON of one path at a time"
        }
    ]

[<Tests>]
let lanePerf =
    testSequenced <| testList "Weighted.Perf" [
        test "a weighted run in lanes allocates nothing per step (resampling at every step; birth-death with log_density, one population and 16 replicas)" {
            for src in [ wellSource "-x^2 dt" 100 "resample = systematic; ess = 1"; bdSource 100 10; bdSource 2048 10 ] do
                let p = compile src
                let c = p.Program.Compiled
                let runner = WeightedRunner.For c.Type
                let model = c.Instance(Array.zeroCreate c.Ir.ParamNames.Length)
                let wp = Weighted.weightPlan p.Program.File (Option.get p.Program.File.Weight)
                let plans = [| QueryPlan(Kind = EstimateKind.Mean, Observable = 0) |]
                let run steps =
                    let s = RunSettings(Paths = 100L, Dt = 0.001, T = float steps * 0.001, Seed = 3UL, Threads = 1, Lanes = 4)
                    let before = GC.GetAllocatedBytesForCurrentThread()
                    runner.Run(model, s, wp, plans) |> ignore
                    GC.GetAllocatedBytesForCurrentThread() - before
                run 10 |> ignore // JIT
                run 200 |> ignore
                // the least of three: an allocation per step (24 B at least) shows in every run, the runtime's own occasional ones do not
                let least f = List.min [ f (); f (); f () ]
                let a10 = least (fun () -> run 10)
                let a200 = least (fun () -> run 200)
                Expect.isTrue (abs (a200 - a10) < 512L) (sprintf "10 steps: %d B, 200 steps: %d B" a10 a200)
        }
    ]
