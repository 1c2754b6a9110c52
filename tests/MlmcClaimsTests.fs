/// The numbers docs/mlmc.md quotes (issue 19), read back from the page. Quick tier: the level table of
/// the example is consistent (work, costs, standard error, bias, error, optimal samples); the work table's slopes, error estimates and plain-Euler steps follow from its
/// columns and the quoted bias constant; the gains are the ratios of their columns; the target ε of
/// the call payoff is 1e-3 of its closed form. Exhaustive tier (SDE_SLOW=1): the example's file and the work
/// table's multilevel runs (tests/perf/mlmc.fsx's files) rerun.
module Sde.Tests.MlmcClaimsTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.CliTests
open Sde.Tests.DocsNumbers

let private name = "mlmc.md"
let private text () = page name
let private quote pattern = quoted name (text ()) pattern

/// Least-squares slope of log y against log x.
let private logSlope (xs: float[]) (ys: float[]) =
    let lx, ly = Array.map log xs, Array.map log ys
    let mx, my = Array.average lx, Array.average ly
    Array.fold2 (fun a x y -> a + (x - mx) * (y - my)) 0.0 lx ly / (lx |> Array.sumBy (fun x -> (x - mx) ** 2.0))

let private phi = normalCdf

/// E[max(S_T − K, 0)] for GBM with drift μ (no discounting): S0 e^{μT} Φ(d1) − K Φ(d2).
let callPayoff (s0: float) (k: float) (mu: float) (sigma: float) (t: float) =
    let d1 = (log (s0 / k) + (mu + sigma * sigma / 2.0) * t) / (sigma * sqrt t)
    s0 * exp (mu * t) * phi d1 - k * phi (d1 - sigma * sqrt t)

/// The work table: ε, levels, multilevel path-steps, error estimate, plain path-steps, plain dt.
let private workTable () =
    let header, rows = table name (text ()) "| ε | levels | multilevel path-steps |"
    Expect.equal header.Length 6 "the work table's columns"
    rows

/// The plain-Euler steps tests/perf/mlmc.fsx chooses: ⌈T / (ε / (√3 c))⌉ (bias² = ε²/3).
let private plainSteps (c: float) (eps: float) = max 1.0 (ceil (1.0 / (eps / (sqrt 3.0 * c))))

/// The example's level table, as the page prints it.
type private LevelRow = { Level: int; Dt: float; Paths: float; Cost: float; MeanY: string; VarY: float; VarP: float }

let private levelTable () =
    let t = text ()
    let head = quote @"multilevel Monte Carlo, set default \(accuracy ([0-9.]+), [^)]*\): ([0-9]+) levels, ([0-9.eE+]+) path-steps, converged"
    let line = quote @"mean\(S\) = ([0-9.]+)  error ([0-9.]+) \(target ([0-9.]+); stderr ([0-9.]+), bias ([0-9.]+)\)  alpha ([-0-9.]+)  beta ([0-9.]+)"
    let start = t.IndexOf "    level          dt"
    let rows =
        t.Substring(start).Split('\n')
        |> Array.skip 1
        |> Array.takeWhile (fun l -> Regex.IsMatch(l, @"^\s+[0-9]"))
        |> Array.map (fun l ->
            let c = l.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            { Level = int c[0]; Dt = num c[1]; Paths = num c[2]; Cost = num c[3]; MeanY = c[4]; VarY = num c[5]; VarP = num c[6] })
    head, line, rows

[<Tests>]
let quickTests =
    testList
        "Docs mlmc claims"
        [ test "Docs docs/mlmc.md's level table: work, costs, standard error, rates, bias, error and samples follow from its columns" {
              let head, line, rows = levelTable ()
              Expect.equal rows.Length (int head[1]) "the levels"
              let work = rows |> Array.sumBy (fun r -> r.Paths * r.Cost)
              agreesToDigits "the path-steps" head[2] work
              for r in rows do
                  Expect.equal r.Dt (0.25 / float (1 <<< r.Level)) (sprintf "level %d: dt" r.Level)
                  let cost = 1.0 / r.Dt + (if r.Level = 0 then 0.0 else 0.5 / r.Dt)
                  Expect.equal r.Cost cost (sprintf "level %d: cost = T/dt_l + T/dt_(l-1)" r.Level)
              let se = sqrt (rows |> Array.sumBy (fun r -> r.VarY / r.Paths))
              agreesToDigits "stderr = √(Σ V_l / N_l)" line[3] se
              // the α used: the fitted one within [½, 1]
              let alpha = min 1.0 (max 0.5 (num line[5]))
              let corrections = rows |> Array.filter (fun r -> r.Level >= 1) |> Array.rev |> Array.truncate 3
              let bias = corrections |> Array.mapi (fun i r -> abs (num r.MeanY) * 2.0 ** (-float i * alpha)) |> Array.max |> fun b -> b / (2.0 ** alpha - 1.0)
              Expect.isLessThanOrEqual (abs (bias - num line[4])) (halfUnit line[4] + bias * 5e-4) (sprintf "bias: quoted %s, from the corrections %.5g" line[4] bias)
              agreesToDigits "error = √(stderr² + bias²)" line[1] (sqrt (num line[3] ** 2.0 + num line[4] ** 2.0))
              Expect.isLessThan (num line[1]) (num line[2]) "the error is under its target"
              Expect.equal line[2] head[0] "the target is the accuracy"
              agreesToDigits "the value is the sum of the corrections" line[0] (rows |> Array.sumBy (fun r -> num r.MeanY))
              // the rates: least-squares slopes over levels ≥ 1 of −log2 |E Y_l| (α), −log2 V_l (β), log2 C_l (γ)
              // (the page's means and variances have four digits: the rates then agree to about 0.01)
              let upper = rows |> Array.filter (fun r -> r.Level >= 1)
              let rate (f: LevelRow -> float) =
                  let xs = upper |> Array.map (fun r -> float r.Level)
                  let ys = upper |> Array.map (fun r -> Math.Log2(f r))
                  let mx, my = Array.average xs, Array.average ys
                  Array.fold2 (fun a x y -> a + (x - mx) * (y - my)) 0.0 xs ys / (xs |> Array.sumBy (fun x -> (x - mx) ** 2.0))
              let g = quote @"alpha ([-0-9.]+)  beta ([0-9.]+)  gamma ([0-9.]+)"
              Expect.isLessThan (abs (-rate (fun r -> abs (num r.MeanY)) - num g[0])) 0.01 (sprintf "alpha %s" g[0])
              Expect.isLessThan (abs (-rate (fun r -> r.VarY) - num g[1])) 0.01 (sprintf "beta %s" g[1])
              agreesToDigits "gamma" g[2] (rate (fun r -> r.Cost))
              // the samples are the optimal N_l = √(V_l/C_l) Σ √(V_k C_k) / (share ε²), the variance's share of ε² being what
              // the bias leaves (1 − bias²/ε², within [0.5, 0.85]), from variances the page rounds to four digits; the run
              // stops when no level needs more, so a level has at least its optimum, and at most a few percent more (its
              // samples were allocated from the estimates of the time) unless it holds only the pilot's samples
              let eps = num head[0]
              let share = min 0.85 (max 0.5 (1.0 - (num line[4] / eps) ** 2.0))
              let pilot = quote @"accuracy = 0.1; dt = 0.25; paths = ([0-9]+); T = 1; seed = 3 }"
              let s = rows |> Array.sumBy (fun r -> sqrt (r.VarY * r.Cost))
              for r in rows do
                  let n = 1.0 / (share * eps * eps) * sqrt (r.VarY / r.Cost) * s
                  Expect.isGreaterThan (r.Paths / n) 0.99 (sprintf "level %d: %g paths, the optimum %.0f" r.Level r.Paths n)
                  Expect.isTrue (r.Paths / n < 1.05 || r.Paths = num pilot[0]) (sprintf "level %d: %g paths, the optimum %.0f" r.Level r.Paths n)
          }

          test "Docs docs/mlmc.md's work table: errors under ε, the slopes it quotes, plain Euler's steps from the quoted bias constant" {
              let rows = workTable ()
              Expect.isGreaterThanOrEqual rows.Length 5 "the rows"
              let eps = rows |> Array.map (fun r -> num r[0])
              for r in rows do
                  Expect.isLessThan (num r[3]) (num r[0]) (sprintf "ε = %s: the error estimate %s" r[0] r[3])
              let s = quote @"log ε is ([−-][0-9.]+) for the multilevel runs and ([−-][0-9.]+) for plain Euler"
              agreesToDigits "multilevel's slope" s[0] (logSlope eps (rows |> Array.map (fun r -> num r[2])))
              agreesToDigits "plain Euler's slope" s[1] (logSlope eps (rows |> Array.map (fun r -> num r[4])))
              // plain dt = 1/⌈√3 c / ε⌉ for one bias constant c that the quoted |bias| ≈ c·dt rounds to
              let c = quote @"\|bias\| ≈ ([0-9.]+)·dt"
              let steps = rows |> Array.map (fun r -> let d = r[5] in if d.StartsWith "1/" then num (d.Substring 2) else 1.0 / num d)
              let fits c = Array.forall2 (fun e n -> plainSteps c e = n) eps steps
              let lo, hi = num c[0] - halfUnit c[0], num c[0] + halfUnit c[0]
              Expect.isTrue (Seq.init 1001 (fun i -> lo + (hi - lo) * float i / 1000.0) |> Seq.exists fits) (sprintf "no c in [%g, %g] gives the steps %A" lo hi steps)
              let n = quote @"plain Euler needs only ([0-9]+) steps at ε = 1e-4"
              Expect.equal (num n[0]) (steps |> Array.last) "the steps at 1e-4"
              // the Milstein paragraph's Euler figure is the table's
              let m = quote @"against Euler's ([0-9.e]+);"
              agreesToDigits "Euler's work at 1e-4" m[0] (num (rows |> Array.find (fun r -> r[0] = "1e-4")).[2])
          }

          test "Docs docs/mlmc.md's relative-accuracy table: the gains are its columns' ratios, the plain work its paths × steps, ε 1e-3 of the payoff" {
              let header, rows = table name (text ()) "| model | ε | multilevel | plain Euler |"
              Expect.equal rows.Length 4 "GBM and Ring10, each with euler_maruyama and milstein"
              // a row's plain Euler cell may say "as above": the previous row's plain run
              let plainCells = rows |> Array.scan (fun prev (r: string[]) -> if r[3] = "as above" then prev else r[3]) "" |> Array.tail
              for r, plainCell in Array.zip rows plainCells do
                  let ml = Regex.Match(r[2], @"([0-9]+) levels, ([0-9.e]+) path-steps, ([0-9.]+) s")
                  let pl = Regex.Match(plainCell, @"dt = 1/([0-9]+), ([0-9.e ]+) paths: ([0-9.e]+) path-steps, ([0-9.]+) s")
                  Expect.isTrue (ml.Success && pl.Success) (sprintf "the cells of %s" r[0])
                  let plainWork = num pl.Groups[2].Value * num pl.Groups[1].Value
                  Expect.isLessThanOrEqual (abs (plainWork - num pl.Groups[3].Value)) (halfUnit pl.Groups[3].Value + halfUnit pl.Groups[2].Value * num pl.Groups[1].Value) (sprintf "%s: paths × steps = %g" r[0] plainWork)
                  Expect.isTrue (ratioCanBe (r[4].TrimEnd 'x') pl.Groups[3].Value ml.Groups[2].Value) (sprintf "%s: the gain in work %s" r[0] r[4])
                  Expect.isTrue (ratioCanBe (r[5].TrimEnd 'x') pl.Groups[4].Value ml.Groups[3].Value) (sprintf "%s: the gain in wall time %s" r[0] r[5])
              let gbm = rows |> Array.find (fun r -> r[0].StartsWith "GBM")
              agreesToDigits "ε = 1e-3 × E[max(S_T − 1, 0)]" gbm[1] (1e-3 * callPayoff 1.0 1.0 0.05 0.2 1.0)
          } ]

let private gbmText (simulate: string) =
    sprintf "model GBM {\n  param mu = 0.05\n  param sigma = 0.2\n  state S\n  brownian W\n  init S = 1\n  d S = mu * S dt + sigma * S dW\n}\nsimulate { %s }\nquery {\n  mean(max(S - 1, 0))\n}\n" simulate

[<Tests>]
let slowTests =
    testList
        "Slow docs mlmc claims"
        [ test "Docs docs/mlmc.md's level table is a run of examples/gbm_mlmc.sde (rerun: levels, value within 4.5 combined se, work within 10%)" {
              Tier.requireSlow "a multilevel run of 5·10^5 path-steps (its compile and JIT: several seconds on a loaded machine)"
              let head, line, rows = levelTable ()
              let src = File.ReadAllText(Path.Combine(repoRoot, "examples", "gbm_mlmc.sde"))
              let p =
                  match SdeCompiler.Compile(src, "gbm_mlmc.sde") with
                  | Ok p -> p
                  | Error ds -> failtestf "%A" (ds |> List.map (fun d -> d.Rendered))
              match Multilevel.run p.Program { Driver.defaultOptions with Threads = 2 } with
              | _, info, [] ->
                  let res = Option.get (List.head info.Sets).Result
                  Expect.equal res.Levels.Length rows.Length "the levels"
                  let t = res.Targets[0]
                  within45 "mean(S)" t.Value t.StdErr (num line[0]) (num line[3])
                  Expect.isLessThan (abs (res.Work / num head[2] - 1.0)) 0.1 (sprintf "work: the run's %g, quoted %s" res.Work head[2])
                  // the closed form the example's comment quotes
                  within45 "E[S_T] = 100 e^0.05" t.Value t.StdErr (100.0 * exp 0.05) 0.0
              | _, _, e :: _ -> raise e
          }

          test "Docs docs/mlmc.md's work table rerun (tests/perf/mlmc.fsx's files): levels, work within 10%, error estimate under ε, plain Euler's steps" {
              Tier.requireSlow "seven multilevel runs, 2·10^7 path-steps in all"
              let rows = workTable ()
              let runs =
                  [| for r in rows ->
                         let p =
                             match SdeCompiler.Compile(gbmText (sprintf "accuracy = %s; dt = 1; paths = 200; T = 1; seed = 1" r[0]), "bench.sde") with
                             | Ok p -> p
                             | Error ds -> failtestf "%A" (ds |> List.map (fun d -> d.Rendered))
                         match Multilevel.run p.Program { Driver.defaultOptions with Threads = 2 } with
                         | _, info, [] -> r, Option.get (List.head info.Sets).Result
                         | _, _, e :: _ -> raise e |]
              for r, res in runs do
                  Expect.equal res.Levels.Length (int r[1]) (sprintf "ε = %s: levels" r[0])
                  Expect.isLessThan (abs (res.Work / num r[2] - 1.0)) 0.1 (sprintf "ε = %s: work %g, quoted %s" r[0] res.Work r[2])
                  Expect.isLessThan res.Targets[0].Error (num r[0]) (sprintf "ε = %s: error estimate" r[0])
              // plain Euler's plan from the finest run's bias constant (median of |E Y_l| / dt_l over l ≥ 1)
              let _, finest = runs |> Array.last
              let cs = finest.Levels |> Array.filter (fun l -> l.Level >= 1) |> Array.map (fun l -> abs l.Mean[0] / l.Dt) |> Array.sort
              let c = cs[cs.Length / 2]
              let q = quote @"\|bias\| ≈ ([0-9.]+)·dt"
              agreesToDigits "the bias constant" q[0] c
              for r, _ in runs do
                  let d = r[5]
                  let steps = if d.StartsWith "1/" then num (d.Substring 2) else 1.0 / num d
                  Expect.equal (plainSteps c (num r[0])) steps (sprintf "ε = %s: plain Euler's steps" r[0])
          } ]
