/// Standard errors of weighted runs that say what they are (issue 19, docs/weighted.md "Standard
/// errors"): seed repeats of the log_density replicas' batch-means errors, of the normaliser's
/// genealogy (multinomial) and independent-weights (no resampling) errors; the null errors, with their
/// reasons, where no valid estimate exists; and collapsed weights that warn instead of pretending.
module Sde.Tests.WeightedErrorTests

#nowarn "9" // pointers into pinned arrays for the density estimate

open System
open System.IO
open Expecto
open Sde
open Sde.Core
open Sde.Lang

let private compile (src: string) =
    match SdeCompiler.Compile(src, "w.sde") with
    | Error ds -> failwithf "compile errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")
    | Ok p -> p

let private run (src: string) =
    let p = compile src
    (List.head (p.Run().Sets)).Results |> List.map (fun q -> q.Query, q) |> Map.ofList

/// A 1-D WFR sampler of a two-mode target (masses 0.7 at −2, 0.3 at +2, sd 0.5) from N(0, 1.5²): the
/// reaction term's feedback through log_density couples every path of a population.
let private wfrSource (resample: string) (paths: int) (seed: int) =
    sprintf
        "model Wfr {\n  state x\n  brownian W\n  weight w\n  let e1 = 0.7 * exp(-(x + 2)^2 / 0.5)\n  let e2 = 0.3 * exp(-(x - 2)^2 / 0.5)\n  let U = -log(e1 + e2)\n  init x ~ normal(0, 1.5)\n  d x = ((-(x + 2) * e1 - (x - 2) * e2) / (0.25 * (e1 + e2))) dt + sqrt(2) dW\n  d log w = -(log_density(x) + U) dt\n}\nsimulate { paths = %d; dt = 0.01; T = 1; seed = %d; resample = %s }\nquery {\n  mean(if x > 0 then 1 else 0)\n  mean(x)\n  log_normalizer\n}\n"
        paths seed resample

/// The OU chain of WeightedTests with d log w = −c x² dt (exact log Z by its Gaussian recursion).
let private ouSource (resample: string) (ess: float) (paths: int) (seed: int) =
    sprintf
        "model OUW {\n  param theta = 1\n  param sigma = 0.8\n  param c = 0.5\n  state x\n  brownian W\n  weight w\n  init x ~ normal(0.5, 0.7)\n  d x = -theta * x dt + sigma dW\n  d log w = -c * x^2 dt\n}\nsimulate { paths = %d; dt = 0.05; T = 2; seed = %d; resample = %s; ess = %g }\nquery {\n  mean(x)\n  log_normalizer\n}\n"
        paths seed resample ess

let private rms (xs: float[]) = sqrt (Array.averageBy (fun z -> z * z) xs)

let private sd (xs: float[]) =
    let m = Array.average xs
    sqrt ((xs |> Array.sumBy (fun x -> (x - m) ** 2.0)) / float (xs.Length - 1))

/// The binned estimate at every member of a flat (n × k) population, at grid spacing `spacing` h.
let private evaluateKde (k: int) (spacing: float) (flat: float[]) (w: float[]) (h: float[]) =
    let n = w.Length
    let out = Array.zeroCreate<float> n
    let kde = BinnedKde(k, Spacing = spacing)
    use px = fixed flat
    use pw = fixed w
    use po = fixed out
    kde.Evaluate(px, int64 k, Array.init k id, pw, n, h, po, 1L)
    out

[<Tests>]
let tests =
    testList "Weighted errors" [
        test "log_density (WFR): over 40 seeds the spread of each estimate is 0.7-1.4 times its reported error (16 replicas' batch means; systematic and birth-death) [slow tier]" {
            Tier.requireSlow "80 WFR runs (11 s)"
            for resample in [ "systematic"; "birth_death" ] do
                let runs = [| for seed in 1..40 -> run (wfrSource resample 1600 (200 + seed)) |]
                for q in [ "mean(if x > 0 then 1 else 0)"; "mean(x)"; "log_normalizer" ] do
                    let values = runs |> Array.map (fun r -> r[q].Value)
                    let errors = runs |> Array.map (fun r -> r[q].StdErr)
                    Expect.all errors (fun e -> Double.IsFinite e && e > 0.0) (sprintf "%s, %s: every error finite" resample q)
                    let ratio = sd values / rms errors
                    printfn "WFR %s, %s: spread over 40 seeds %.4g, reported error (RMS) %.4g, ratio %.3f" resample q (sd values) (rms errors) ratio
                    // the sd of 40 values has a relative sd of about 0.11 (more for these bimodal laws) and the replicas' errors (15 degrees of
                    // freedom each) average out over the seeds: an honest ratio lies well inside [0.7, 1.4]
                    Expect.isGreaterThan ratio 0.7 (sprintf "%s, %s: the error is not too large (ratio %.3f)" resample q ratio)
                    Expect.isLessThan ratio 1.4 (sprintf "%s, %s: the error is not too small (ratio %.3f)" resample q ratio)
        }

        test "log_normalizer: z-scores against the exact log Z over 30 seeds have RMS near 1 with multinomial resampling (genealogy) and without resampling (independent weights)" {
            let logZ, _, _ = WeightedTests.exactChain 1.0 0.8 0.5 0.5 0.7 0.05 40
            // multinomial: the Girsanov weight d log w = b dW - b^2/2 dt has E[w_T] = 1 exactly for the chain
            // (each step multiplies w by exp(b √Δt ξ − b²Δt/2), of mean 1); b = 1.5 resamples about every
            // 0.3 time units at ess = 0.5. The quadratic weight never resamples there, and resampling it every
            // step makes the genealogy's difference of two numbers near 1 negative (null, with the reason).
            let girsanov seed = (ouSource "multinomial" 0.5 2000 seed).Replace("d log w = -c * x^2 dt", "d log w = 1.5 dW - 1.125 dt")
            for resample, source, exact in [ "multinomial", girsanov, 0.0; "none", ouSource "none" 0.5 2000, logZ ] do
                let zs =
                    [| for seed in 1..30 ->
                           let r = (run (source (300 + seed)))["log_normalizer"]
                           Expect.isTrue (Double.IsFinite r.StdErr && r.StdErr > 0.0) (sprintf "%s, seed %d: an error" resample seed)
                           (r.Value - exact) / r.StdErr |]
                printfn "log_normalizer z-score RMS over 30 seeds, resample = %s: %.3f" resample (rms zs)
                Expect.isGreaterThan (rms zs) 0.7 (sprintf "%s: RMS %.3f not far below 1" resample (rms zs))
                Expect.isLessThan (rms zs) 1.4 (sprintf "%s: RMS %.3f not far above 1" resample (rms zs))
        }

        test "log_normalizer under systematic, stratified, residual and birth-death resampling: a null error with the reason, never a number that is too small" {
            for resample in [ "systematic"; "stratified"; "residual"; "birth_death" ] do
                // ess = 1: resampled every step (a run that never resamples has the independent weights' error)
                let r = (run (ouSource resample 1.0 2000 7))["log_normalizer"]
                Expect.isTrue (Double.IsFinite r.Value) (sprintf "%s: a value" resample)
                Expect.isTrue (Double.IsNaN r.StdErr) (sprintf "%s: no error (got %g)" resample r.StdErr)
                Expect.exists r.Warnings (fun w -> w.Contains "holds for multinomial resampling only") (sprintf "%s: the reason (%A)" resample r.Warnings)
        }

        test "resample = none with equal weights: log_normalizer is exact, its error 0, and no warning about resampling" {
            // d log w = 0.3 dt: every weight is exp(0.3 T), so Ẑ = E[w_T] exactly
            let r = (run ((ouSource "none" 0.5 1000 3).Replace("d log w = -c * x^2 dt", "d log w = 0.3 dt")))["log_normalizer"]
            Expect.floatClose { absolute = 1e-12; relative = 1e-12 } r.Value 0.6 "log Z = 0.3 T"
            Expect.equal r.StdErr 0.0 "an exact estimate has error 0"
            Expect.isEmpty r.Warnings "no warning"
        }

        test "weights that collapse without resampling (ESS about 2 of 20000): a warning, no standard error, and --strict exits 3" {
            // x ~ N(0, 1) constant, log w = 5x: the tilted law is N(5, 1), so E[w x]/E[w] = 5, and the
            // effective sample size N exp(-25) is about 1: the estimate is the largest few x (about 4)
            let src = "model Degenerate {\n  state x\n  weight w\n  init x ~ normal(0, 1)\n  d x = 0 dt\n  d log w = 5 * x dt\n}\nsimulate { paths = 20000; dt = 0.1; T = 1; seed = 3; resample = none }\nquery {\n  mean(x)\n  log_normalizer\n}\n"
            let r = run src
            for q in [ "mean(x)"; "log_normalizer" ] do
                Expect.isTrue (Double.IsNaN r[q].StdErr) (sprintf "%s: no error (got %g)" q r[q].StdErr)
                Expect.exists r[q].Warnings (fun w -> w.Contains "the weights degenerated") (sprintf "%s: warned (%A)" q r[q].Warnings)
            let file = Path.Combine(Path.GetTempPath(), sprintf "dsl-degenerate-%d.sde" Environment.ProcessId)
            File.WriteAllText(file, src)
            try
                let o = CliTests.dsl [ "run"; file; "--strict" ]
                Expect.equal o.Code 3 (sprintf "--strict fails the run (%s)" o.Err)
                Expect.stringContains o.Err "the weights degenerated" "the warning on standard error"
            finally
                File.Delete file
        }

        test "a log_density run with fewer than 1024 paths has no standard errors (too few for 16 replicas), and says so" {
            let r = run (wfrSource "systematic" 600 1)
            for q in [ "mean(x)"; "log_normalizer" ] do
                Expect.isTrue (Double.IsNaN r[q].StdErr) (sprintf "%s: no error" q)
                Expect.exists r[q].Warnings (fun w -> w.Contains "16 independent replicas") (sprintf "%s: the reason (%A)" q r[q].Warnings)
        }
    
        test "the replicas' binned log_density at spacing h/2 (2 and 3 coordinates) agrees with the exact kernel sum within 4%" {
            // the binning error grows like (spacing / h)²: 1% at h/4 (WeightedTests) allows 4% at h/2
            let rng = Random 5
            for k in 2..3 do
                let n = 3000
                let pts = Array.init n (fun i -> Array.init k (fun a -> (if i % 2 = 0 then -1.0 else 1.5) + 0.6 * (rng.NextDouble() + rng.NextDouble() - 1.0) * float (a + 1)))
                let raw = Array.init n (fun _ -> 0.5 + rng.NextDouble())
                let w = raw |> Array.map (fun x -> x / Array.sum raw)
                let h = Array.create k 0.25
                let out = evaluateKde k 0.5 (Array.concat pts) w h
                let worst =
                    [ 0; 1; 17; 500; 1001; 2999 ]
                    |> List.map (fun i -> abs (exp (out[i] - BinnedKde.Exact(pts, w, pts[i], h)) - 1.0))
                    |> List.max
                printfn "binned log_density at spacing h/2, k = %d: largest relative error %.4f" k worst
                Expect.isLessThan worst 0.04 (sprintf "k = %d: %g" k worst)
        }
    
        test "replicas in 2 coordinates give the same numbers with 1 thread and with 3 (each replica's density estimate is one fixed computation)" {
            let src =
                "model W2 {\n  state x\n  state y\n  brownian W1\n  brownian W2\n  weight w\n  init x ~ normal(0, 2)\n  init y ~ normal(0, 2)\n  d x = -x dt + dW1\n  d y = -y dt + dW2\n  d log w = -(log_density(x, y) + (x^2 + y^2) / 4) dt\n}\nsimulate { paths = 2048; dt = 0.05; T = 0.5; seed = 4; resample = systematic; ess = 0.9 }\nquery {\n  mean(x^2)\n  log_normalizer\n}\n"
            let p = compile src
            let at (threads: int) = (List.head (p.Run(threads = threads).Sets)).Results
            for a, b in List.zip (at 1) (at 3) do
                Expect.equal (b.Value.ToString "R") (a.Value.ToString "R") (sprintf "%s: value" a.Query)
                Expect.equal (b.StdErr.ToString "R") (a.StdErr.ToString "R") (sprintf "%s: stderr" a.Query)
        }
    ]
