/// The numbers docs/discretisation.md quotes (issue 19), read back from the page. Quick tier: the
/// closed forms it quotes recomputed, every ratio the ratio of the columns it names, the measured
/// slopes within ±0.15 of the orders the page states. Exhaustive tier (SDE_SLOW=1): the slopes
/// recomputed as docs/scripts/scheme_errors.fsx computes them, and the runs the page quotes rerun (GBM at
/// dt = 0.1 with its bias and with Richardson, the Milstein example, the anneal runs, the bias's
/// 30-seed z-scores).
/// Sections added later to the page (tables of their own) do not disturb the parsing: every table is
/// found by its header.
module Sde.Tests.DiscretisationClaimsTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.CliTests
open Sde.Tests.DocsNumbers

let private name = "discretisation.md"
let private text () = page name
let private quote pattern = quoted name (text ()) pattern

let private compile (src: string) =
    match SdeCompiler.Compile(src, "doc.sde") with
    | Ok p -> p
    | Error ds -> failtestf "%A" (ds |> List.map (fun d -> d.Rendered))

let private results (src: string) = ((compile src).Run(threads = 2, backend = "cpu").Sets.Head.Results) |> List.toArray

/// The page's complete file that starts with `model NAME {`.
let private docFile (modelLine: string) =
    let t = text ()
    let i = t.IndexOf("```\n" + modelLine)
    if i < 0 then failtestf "docs/%s: the file `%s` is gone" name modelLine
    let start = i + 4
    t.Substring(start, t.IndexOf("```", start) - start)

/// The step the warning names: dt (se/|b|)^(1/p) rounded down to 5, 2 or 1 × 10^k dividing T.
let private suggestedDt (dt: float) (se: float) (b: float) (p: float) (t: float) =
    let target = dt * Math.Pow(se / abs b, 1.0 / p)
    seq {
        for k in 0 .. -1 .. -12 do
            for m in [ 5.0; 2.0; 1.0 ] -> m * Math.Pow(10.0, float k)
    }
    |> Seq.find (fun c -> c <= target * (1.0 + 1e-12) && abs (t / c - Math.Round(t / c)) < 1e-9)

/// E[(X_N − S_T)²] between a chain X_{n+1} = X_n (1 + μΔt + σΔW + m σ²/2 (ΔW² − Δt)) (m = 0: Euler,
/// 1: Milstein) and the exact GBM S_T = S0 exp((μ − σ²/2)T + σW_T) on the same path, in closed form:
/// E X_N² = S0² A^N with A = (1 + μΔt)² + σ²Δt + m σ⁴Δt²/2; E X_N S_T = S0² B^N with
/// B = e^{μΔt} (1 + μΔt + σ²Δt + m σ⁴Δt²/2) (ΔW ~ N(σΔt, Δt) under the exponential tilt);
/// E S_T² = S0² e^{(2μ + σ²)T}.
let gbmMeanSquareDistance (milstein: bool) (s0: float) (mu: float) (sigma: float) (dt: float) (t: float) =
    let n = Math.Round(t / dt)
    let m = if milstein then 1.0 else 0.0
    let a = (1.0 + mu * dt) ** 2.0 + sigma * sigma * dt + m * sigma ** 4.0 * dt * dt / 2.0
    let b = exp (mu * dt) * (1.0 + mu * dt + sigma * sigma * dt + m * sigma ** 4.0 * dt * dt / 2.0)
    s0 * s0 * (a ** n - 2.0 * b ** n + exp ((2.0 * mu + sigma * sigma) * t))

/// log(∫ exp(−2 (x² − 1)²) dx / √(2π)) by the trapezoid rule on [−6, 6] (examples/anneal.sde's log Z).
let annealLogZ () =
    let n = 400000
    let h = 12.0 / float n
    let f i = let x = -6.0 + float i * h in exp (-2.0 * (x * x - 1.0) ** 2.0)
    let s = (Seq.sum (Seq.init (n - 1) (fun i -> f (i + 1)))) + 0.5 * (f 0 + f n)
    log (s * h / sqrt (2.0 * Math.PI))

/// A model's strong order under a scheme, from the page's schemes table ("1/2 (1 for additive noise)",
/// "1.5 (2 for a linear drift)"), given whether its noise is additive and its drift linear.
let private strongTheory (schemes: string[][]) (scheme: string) (additive: bool) (linearDrift: bool) =
    let cell = (schemes |> Array.find (fun r -> r[0].StartsWith("`" + scheme + "`")))[2]
    let order (s: string) = match s.Split '/' with [| a; b |] -> num a / num b | _ -> num s
    let m = Regex.Match(cell, @"^(\S+)(?: \((\S+) for (additive noise|a linear drift)\))?$")
    if not m.Success then failtestf "the schemes table's strong order for %s: %s" scheme cell
    let special = m.Groups[2].Success && ((m.Groups[3].Value = "additive noise" && additive) || (m.Groups[3].Value = "a linear drift" && linearDrift))
    if special then order m.Groups[2].Value else order m.Groups[1].Value

/// The models of the measured-orders table: (additive noise, linear drift).
let private modelKind =
    dict [ "GBM", (false, true); "OU", (true, true); "2-D linear", (true, true); "sine drift", (true, false) ]

let private richardsonPattern =
    @"extrapolated mean is `([0-9.]+) ± ([0-9.]+)` against\s+`e = ([0-9.]+)` \(the chain alone: `([0-9.]+) ± ([0-9.]+)`\)"

let private milsteinPattern =
    @"exact solution on the same path is ([0-9.]+) ± ([0-9.]+) with Milstein and ([0-9.]+) ± ([0-9.]+) with Euler"

let private ordersTable () = table name (text ()) "| model | scheme | weak slope"

[<Tests>]
let quickTests =
    testList
        "Docs discretisation claims"
        [ test "Docs docs/discretisation.md's measured slopes are within ±0.15 of the orders its schemes table states" {
              let _, schemes = table name (text ()) "| scheme | one step |"
              let header, rows = ordersTable ()
              let col = column name header
              Expect.isGreaterThanOrEqual rows.Length 8 "the rows"
              for r in rows do
                  let model, scheme = r[0], r[1].Trim('`')
                  let additive, linear = modelKind[model]
                  let weak = num (schemes |> Array.find (fun s -> s[0].StartsWith("`" + scheme + "`"))).[3]
                  let strong = strongTheory schemes scheme additive linear
                  let w = r[col "weak slope (E X_T)"]
                  if w <> "—" then
                      Expect.isLessThanOrEqual (abs (num w - weak)) 0.15 (sprintf "%s, %s: weak slope %s, order %g" model scheme w weak)
                  let s = (r[col "strong slope"].Split ' ')[0]
                  Expect.isLessThanOrEqual (abs (num s - strong)) 0.15 (sprintf "%s, %s: strong slope %s, order %g" model scheme s strong)
          }

          test "Docs docs/discretisation.md's GBM bias example: the closed forms, and the printed value, bias and warning agree with them and with each other" {
              agreesToDigits "the chain's mean 1.1^10" (quote @"1\.1\^10 = ([0-9.]+)`").[0] (1.1 ** 10.0)
              agreesToDigits "the SDE's mean e" (quote @"e\^\{μT\} = ([0-9.]+)`").[0] (exp 1.0)
              agreesToDigits "the true bias" (quote @"true bias is `([−-][0-9.]+)`").[0] (1.1 ** 10.0 - exp 1.0)
              agreesToDigits "what the estimator estimates" (quote @"1\.05\^20\) = ([−-][0-9.]+)`").[0] (2.0 * (1.1 ** 10.0 - 1.05 ** 20.0))
              let g = quote @"mean\(x\)  ([0-9.]+) ± ([0-9.]+)  \(bias ([−-][0-9.]+) ± ([0-9.]+)\)"
              let v, se, b, bse = num g[0], num g[1], num g[2], num g[3]
              within45 "the printed value against the chain's 1.1^10" v se (1.1 ** 10.0) 0.0
              within45 "the printed bias against 2 (1.1^10 − 1.05^20)" b bse (2.0 * (1.1 ** 10.0 - 1.05 ** 20.0)) 0.0
              let w = quote @"discretisation bias ([−-][0-9.]+) ± ([0-9.]+) is ([0-9.]+) standard errors: .*?dt = ([0-9.]+) would bring"
              sameNumber "the warning's bias" w[0] g[2]
              sameNumber "the warning's bias stderr" w[1] g[3]
              Expect.isTrue (ratioCanBe w[2] (g[2].TrimStart('−', '-')) g[1]) (sprintf "%s standard errors = |%s| / %s" w[2] g[2] g[1])
              Expect.equal (num w[3]) (suggestedDt 0.1 se b 1.0 1.0) "the step the warning names"
          }

          test "Docs docs/discretisation.md's Richardson value on GBM is the chain's exact 2·1.05^20 − 1.1^10 (4.5 se)" {
              let g = quote @"mean\(x\)  ([0-9.]+) ± ([0-9.]+)  \(bias"
              let r = quote richardsonPattern
              agreesToDigits "e" r[2] (exp 1.0)
              Expect.equal (r[3], r[4]) (g[0], g[1]) "the chain alone is the printed value"
              within45 "the extrapolated value against the chain's 2·1.05^20 − 1.1^10" (num r[0]) (num r[1]) (2.0 * 1.05 ** 20.0 - 1.1 ** 10.0) 0.0
          }

          test "Docs docs/discretisation.md's mean-square distances of examples/gbm_milstein.sde are the closed forms' (4.5 se)" {
              let q = quote milsteinPattern
              let src = File.ReadAllText(Path.Combine(repoRoot, "examples", "gbm_milstein.sde"))
              Expect.stringContains src "init S = 100" "S0"
              Expect.stringContains src "param mu = 0.05" "mu"
              Expect.stringContains src "param sigma = 0.5" "sigma"
              let dt, t = setting src "dt", setting src "T"
              within45 "Milstein" (num q[0]) (num q[1]) (gbmMeanSquareDistance true 100.0 0.05 0.5 dt t) 0.0
              within45 "Euler" (num q[2]) (num q[3]) (gbmMeanSquareDistance false 100.0 0.05 0.5 dt t) 0.0
          }

          test "Docs docs/discretisation.md's cost table: each ratio is its columns' ratio, each example's paths and steps its file's" {
              let header, rows = table name (text ()) "| example | off (s) |"
              Expect.equal header[3] "ratio" "the estimate's ratio column"
              Expect.equal header[5] "ratio" "Richardson's ratio column"
              Expect.isGreaterThanOrEqual rows.Length 5 "the rows"
              for r in rows do
                  Expect.isTrue (ratioCanBe r[3] r[2] r[1]) (sprintf "%s: estimate/off = %s/%s, quoted %s" r[0] r[2] r[1] r[3])
                  Expect.isTrue (ratioCanBe r[5] r[4] r[1]) (sprintf "%s: richardson/off = %s/%s, quoted %s" r[0] r[4] r[1] r[5])
                  let m = Regex.Match(r[0], @"^`(\w+)` \((?:weighted, )?([0-9]+) paths, ([0-9]+) steps")
                  Expect.isTrue m.Success (sprintf "the example cell %s" r[0])
                  let src = File.ReadAllText(Path.Combine(repoRoot, "examples", m.Groups[1].Value + ".sde"))
                  Expect.equal (setting src "paths") (num m.Groups[2].Value) (sprintf "%s: paths" r[0])
                  Expect.equal (Math.Round(setting src "T" / setting src "dt")) (num m.Groups[3].Value) (sprintf "%s: steps" r[0])
          }

          test "Docs docs/discretisation.md's anneal figures: the quadrature value recomputed, and the standard errors it counts" {
              let q = quote @"`log_normalizer` at `dt = 0.01` is `([−-][0-9.]+) ± ([0-9.]+)`, fifteen\s+standard errors from the quadrature value `([−-][0-9.]+)`, adding `extrapolate = richardson` gives\s+`([−-][0-9.]+) ± ([0-9.]+)`: ([0-9.]+) standard errors from it \(the default run's bias line already says\s+`\(bias ([−-][0-9.]+) ± ([0-9.]+)\)`"
              let logZ = annealLogZ ()
              agreesToDigits "the quadrature value" q[2] logZ
              let v, se, x, xse, b, bse = num q[0], num q[1], num q[3], num q[4], num q[6], num q[7]
              let zPlain = abs (v - logZ) / se
              Expect.isTrue (zPlain >= 14.5 && zPlain < 15.5) (sprintf "fifteen standard errors: %.2f" zPlain)
              Expect.isLessThanOrEqual (abs (abs (x - logZ) / xse - num q[5])) (0.05 + 0.0005 / xse) (sprintf "%s standard errors: %.2f" q[5] (abs (x - logZ) / xse))
              // the bias estimates value − (dt → 0 limit)
              within45 "the bias line against value − quadrature" b bse (v - logZ) se
          } ]

/// The 30-seed z-scores of the bias (BiasTests' "Slow bias" runs, recomputed for the page's figures).
let private gbmBias (seed: int) =
    sprintf "model Gbm {\n  param mu = 1\n  param sigma = 0.5\n  state x\n  brownian W\n  init x = 1\n  d x = mu * x dt + sigma * x dW\n}\nsimulate { paths = 4000; dt = 0.02; T = 1; seed = %d }\nquery {\n  mean(x)\n}\n" seed

[<Tests>]
let slowTests =
    testList
        "Slow docs discretisation claims"
        [ test "Docs docs/discretisation.md's measured slopes are docs/scripts/scheme_errors.fsx's (recomputed: weak to the digits, strong within 0.02)" {
              Tier.requireSlow "quadratures over six grids and strong errors on 2000 and 300 coupled paths"
              let header, rows = ordersTable ()
              let col = column name header
              let quotedSlope model scheme c =
                  (rows |> Array.find (fun r -> r[0] = model && r[1] = "`" + scheme + "`")).[col c]
              let ns = [ 8; 16; 32; 64; 128; 256 ]
              let dts = ns |> List.map (fun n -> 1.0 / float n)
              let lm, _ = SchemeTests.linearMoments SchemeTests.linear2A SchemeTests.linear2B [| 1.0; -0.5 |] 1.0
              for model, text, scheme, x0, exact in
                  [ "GBM", SchemeTests.gbmModel, "euler_maruyama", [| 1.0 |], exp 0.5
                    "GBM", SchemeTests.gbmModel, "milstein", [| 1.0 |], exp 0.5
                    "OU", SchemeTests.ouModel, "euler_maruyama", [| 1.0 |], exp -1.5
                    "OU", SchemeTests.ouModel, "sra", [| 1.0 |], exp -1.5
                    "2-D linear", SchemeTests.linear2Model, "euler_maruyama", [| 1.0; -0.5 |], lm[0]
                    "2-D linear", SchemeTests.linear2Model, "sra", [| 1.0; -0.5 |], lm[0] ] do
                  let m, _ = SchemeTests.modelOf text scheme
                  let errs = ns |> List.map (fun n -> let mean, _ = SchemeTests.chainMoments m x0 1.0 n in abs (mean[0] - exact))
                  let s = SchemeTests.slope (List.skip 1 dts) (List.skip 1 errs)
                  agreesToDigits (sprintf "weak slope, %s, %s" model scheme) (quotedSlope model scheme "weak slope (E X_T)") s
              let sraSine, _ = SchemeTests.modelOf SchemeTests.sineModel "sra"
              let sineRef (bp: SchemeTests.BrownianPath) = SchemeTests.run sraSine [| 0.5 |] (bp.Level 8192 true) 1.0
              for model, text, scheme, x0, levels, fine, reference in
                  [ "GBM", SchemeTests.gbmStrongModel, "euler_maruyama", [| 1.0 |], [ 16; 32; 64; 128 ], 128, SchemeTests.gbmExact
                    "GBM", SchemeTests.gbmStrongModel, "milstein", [| 1.0 |], [ 16; 32; 64; 128 ], 128, SchemeTests.gbmExact
                    "sine drift", SchemeTests.sineModel, "euler_maruyama", [| 0.5 |], [ 16; 32; 64; 128; 256 ], 8192, sineRef
                    "sine drift", SchemeTests.sineModel, "sra", [| 0.5 |], [ 16; 32; 64; 128; 256 ], 8192, sineRef ] do
                  let m, _ = SchemeTests.modelOf text scheme
                  let paths = if fine <= 128 then 2000 else 300
                  let errs = SchemeTests.strongErrors m (scheme = "sra") 1 x0 1.0 levels fine paths 17 reference |> Array.toList
                  let s = SchemeTests.slope (levels |> List.map (fun n -> 1.0 / float n)) errs
                  let q = quotedSlope model scheme "strong slope"
                  Expect.isLessThanOrEqual (abs (num q - s)) 0.02 (sprintf "strong slope, %s, %s: quoted %s, recomputed %.3f" model scheme q s)
          }

          test "Docs docs/discretisation.md's GBM file at dt = 0.1 rerun: the value, the bias and the Richardson value the page quotes, within 4.5 combined se" {
              Tier.requireSlow "two runs of 20000 paths (one of them coupled pairs)"
              let file = docFile "model Gbm {"
              let g = quote @"mean\(x\)  ([0-9.]+) ± ([0-9.]+)  \(bias ([−-][0-9.]+) ± ([0-9.]+)\)"
              let m = (results file)[0]
              within45 "mean(x)" m.Value m.StdErr (num g[0]) (num g[1])
              let b = m.Bias.Value
              within45 "its bias" b.Value b.StdErr (num g[2]) (num g[3])
              let ratio = m.StdErr / num g[1]
              Expect.isTrue (ratio > 0.8 && ratio < 1.25) (sprintf "the standard error %g against the quoted %s" m.StdErr g[1])
              let r = quote richardsonPattern
              let x = (results (file.Replace("seed = 3 }", "seed = 3; extrapolate = richardson }")))[0]
              Expect.isTrue x.Extrapolated "the rerun extrapolates"
              within45 "the extrapolated rerun" x.Value x.StdErr (num r[0]) (num r[1])
          }

          test "Docs docs/discretisation.md's mean-square distances: examples/gbm_milstein.sde rerun under both schemes, within 4.5 combined se" {
              Tier.requireSlow "two runs of 10^4 paths × 100 steps"
              let q = quote milsteinPattern
              let src = File.ReadAllText(Path.Combine(repoRoot, "examples", "gbm_milstein.sde"))
              for scheme, v, se in [ "milstein", q[0], q[1]; "euler_maruyama", q[2], q[3] ] do
                  let d = (results (src.Replace("scheme = milstein", "scheme = " + scheme)))[3]
                  within45 (sprintf "the rerun, %s" scheme) d.Value d.StdErr (num v) (num se)
          }

          test "Docs docs/discretisation.md's anneal runs (default and richardson) rerun: within 4.5 combined se" {
              Tier.requireSlow "two weighted runs of 20000 paths (and their half-step runs)"
              let q = quote @"`log_normalizer` at `dt = 0.01` is `([−-][0-9.]+) ± ([0-9.]+)`[\s\S]*?gives\s+`([−-][0-9.]+) ± ([0-9.]+)`[\s\S]*?`\(bias ([−-][0-9.]+) ± ([0-9.]+)\)`"
              let src = File.ReadAllText(Path.Combine(repoRoot, "examples", "anneal.sde"))
              let main = "simulate { paths = 20000; dt = 0.01; T = 5; seed = 11; resample = systematic; ess = 0.5 }"
              Expect.stringContains src main "the example's simulate line"
              let z = (results src) |> Array.find (fun r -> r.Kind = "log_normalizer")
              within45 "log_normalizer" z.Value z.StdErr (num q[0]) (num q[1])
              within45 "its bias" z.Bias.Value.Value z.Bias.Value.StdErr (num q[4]) (num q[5])
              let x = (results (src.Replace(main, main.Replace(" }", "; extrapolate = richardson }")))) |> Array.find (fun r -> r.Kind = "log_normalizer")
              within45 "log_normalizer with richardson" x.Value x.StdErr (num q[2]) (num q[3])
          }

          test "Docs docs/discretisation.md's 30-seed z-score RMS and mean of the bias are those of the seeds 1-30" {
              Tier.requireSlow "30 runs of 4000 paths"
              let q = quote @"current normal generator: RMS ([0-9.]+), mean z ([−-]?[0-9.]+)"
              let truth = 1.02 ** 50.0 - exp 1.0
              let zs =
                  [| for seed in 1..30 ->
                         let rs = results (gbmBias seed)
                         let b = rs[0].Bias.Value
                         (b.Value - truth) / b.StdErr |]
              let rms = sqrt (Array.averageBy (fun z -> z * z) zs)
              printfn "bias z-scores over seeds 1-30: RMS %.3f, mean %.3f" rms (Array.average zs)
              agreesToDigits "the RMS" q[0] rms
              agreesToDigits "the mean z" q[1] (Array.average zs)
          } ]
