/// The numbers docs/responses.md's study table quotes (issue 19: a doc cannot go stale).
///
/// Quick tier, from the doc alone: every ratio column is the ratio of the columns it names; every
/// estimate lies within 4.5 of its standard errors of the row's reference; OU's references are the
/// Euler chain's moments, recomputed here by a forward recursion (independent of the study script's
/// closed-form sums).
///
/// Exhaustive tier (SDE_SLOW=1): the double well's references by a forward-mode quadrature of the
/// chain's transition density (the script differences two quadratures), and a rerun of every row
/// but Lorenz-96's: the default, the kernel estimate at the quoted rate and finite differences agree
/// with the quoted values within 4.5 combined standard errors, and their standard errors within 25%.
module Sde.Tests.DocsClaimsTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto
open Sde
open Sde.Tests.CliTests

let private inv = Globalization.CultureInfo.InvariantCulture

/// The study table: its header cells and its rows' cells (trimmed, without the outer bars).
let studyTable () =
    let lines = File.ReadAllLines(Path.Combine(repoRoot, "docs", "responses.md"))
    let cells (l: string) = l.Trim().Trim('|').Split('|') |> Array.map (fun c -> c.Trim())

    match lines |> Array.tryFindIndex (fun l -> l.StartsWith "| model | paths | λ_cov") with
    | None -> failtest "docs/responses.md: the study table (| model | paths | λ_cov ...) is gone"
    | Some i ->
        let header = cells lines[i]
        let rows = lines[i + 2 ..] |> Array.takeWhile (fun l -> l.StartsWith "|") |> Array.map cells
        header, rows

let private num (s: string) = Double.Parse(s.Replace("−", "-"), inv)

/// `v ± se` → (v, se).
let private pm (cell: string) =
    let m = Regex.Match(cell, @"^([-−0-9.e+]+) ± ([0-9.e+-]+)$")
    if not m.Success then failtestf "not `value ± se`: %s" cell
    num m.Groups[1].Value, num m.Groups[2].Value

/// `20 (0.0574)` → 0.0574 (the best fixed rate's standard error).
let private parenthesised (cell: string) =
    let m = Regex.Match(cell, @"\(([0-9.e+-]+)\)")
    if not m.Success then failtestf "no `(se)` in %s" cell
    num m.Groups[1].Value

/// A reference cell `-0.3858 (quadrature)` → Some -0.3858; `–` → None.
let private reference (cell: string) =
    let m = Regex.Match(cell, @"^([-−0-9.e+]+) \(")
    if m.Success then Some(num m.Groups[1].Value) else None

/// A quoted ratio rounded to two decimals, against the ratio of two quoted three-digit numbers.
let private ratioAgrees (quoted: float) (computed: float) = abs (quoted - computed) <= 0.006 + 0.01 * computed

let private column (header: string[]) (name: string) =
    match Array.tryFindIndex ((=) name) header with
    | Some i -> i
    | None -> failtestf "docs/responses.md's study table has no column %s" name

/// OU's Euler chain x_{n+1} = (1 − θΔt) x_n + σ√Δt z from x_0 = 1: d E[x_N²] / dθ and / dσ by a
/// forward recursion of the second moment and its derivatives (θ = 1, σ = 0.5, Δt = 0.01, N = 200).
let ouChainDerivatives () =
    let theta, sigma, dt = 1.0, 0.5, 0.01
    let a = 1.0 - theta * dt
    let mutable s, dsTheta, dsSigma = 1.0, 0.0, 0.0 // E[x_n²] and its derivatives

    for _ in 1..200 do
        // s' = a² s + σ² Δt
        dsTheta <- 2.0 * a * (-dt) * s + a * a * dsTheta
        dsSigma <- a * a * dsSigma + 2.0 * sigma * dt
        s <- a * a * s + sigma * sigma * dt

    dsTheta, dsSigma

/// The double well's Euler chain (dx = −(4x³ − 4x) dt + √(2 temp) dW, x_0 ~ N(1, 0.3²), Δt = 0.01,
/// N = 500): d E[x_N²] / d temp by propagating the density p_n and its derivative q_n = ∂p_n/∂temp on
/// a grid (x ∈ [−3, 3], spacing 0.004): with K the Gaussian kernel of mean m(x) and variance
/// v = 2 temp Δt, ∂K/∂temp = K (u² − 1) / (2 temp), u = (y − m)/√v.
let doubleWellChainDerivative (temp: float) =
    let h, dt = 0.004, 0.01
    let n = int (Math.Round(6.0 / h)) + 1
    let xs = Array.init n (fun i -> -3.0 + float i * h)
    let sd = sqrt (2.0 * temp * dt)
    let norm0 = h / (sd * sqrt (2.0 * Math.PI))
    let mutable p = xs |> Array.map (fun x -> exp (-0.5 * ((x - 1.0) / 0.3) ** 2.0) / (0.3 * sqrt (2.0 * Math.PI)))
    let mutable q = Array.zeroCreate<float> n
    let band = int (ceil (10.0 * sd / h))
    let delta = h / sd
    let decay = exp (-delta * delta)

    for _ in 1..500 do
        let p1 = Array.zeroCreate<float> n
        let q1 = Array.zeroCreate<float> n

        for i in 0 .. n - 1 do
            if p[i] > 1e-300 || abs q[i] > 1e-300 then
                let x = xs[i]
                let m = x - (4.0 * x * x * x - 4.0 * x) * dt
                let c = int (Math.Round((m + 3.0) / h))
                let j0 = max 0 (c - band)
                let j1 = min (n - 1) (c + band)

                if j0 <= j1 then
                    // K_j = norm0 · exp(−u_j²/2) by the recurrence e_{j+1} = e_j r_j, r_{j+1} = r_j e^{−δ²}
                    let mutable u = (xs[j0] - m) / sd
                    let mutable e = norm0 * exp (-0.5 * u * u)
                    let mutable r = exp (-delta * (u + 0.5 * delta))
                    let pi, qi = p[i], q[i]

                    for j in j0..j1 do
                        p1[j] <- p1[j] + pi * e
                        q1[j] <- q1[j] + (qi + pi * (u * u - 1.0) / (2.0 * temp)) * e
                        e <- e * r
                        r <- r * decay
                        u <- u + delta

        p <- p1
        q <- q1

    Array.fold2 (fun acc x qi -> acc + qi * x * x * h) 0.0 xs q

[<Tests>]
let quickTests =
    testList
        "Docs claims"
        [ test "Docs docs/responses.md's study table: every ratio column is the ratio of the columns it names" {
              let header, rows = studyTable ()
              let col = column header
              Expect.isGreaterThanOrEqual rows.Length 8 "the table's rows"

              for r in rows do
                  let adSe = snd (pm r[col "adaptive: value ± se"])
                  let fdSe = snd (pm r[col "finite differences: value ± se"])
                  let defSe = snd (pm r[col "default (with control): value ± se"])
                  let best = parenthesised r[col "best fixed rate (se)"]

                  for name, quoted, computed in
                      [ "se / best", num r[col "se / best"], adSe / best
                        "adaptive se / FD's", num r[col "adaptive se / FD's"], adSe / fdSe
                        "default se / FD's", num r[col "default se / FD's"], defSe / fdSe ] do
                      Expect.isTrue (ratioAgrees quoted computed) (sprintf "%s, %s: quoted %g, the columns give %.4f" r[0] name quoted computed)

          }

          test "Docs docs/responses.md's study table: every estimate is within 4.5 standard errors of its row's reference" {
              let header, rows = studyTable ()
              let col = column header
              let withRef = rows |> Array.choose (fun r -> reference r[col "reference"] |> Option.map (fun v -> r, v))
              Expect.equal withRef.Length 5 "rows with a reference (three double wells, two OU)"

              for r, v in withRef do
                  for c in [ "adaptive: value ± se"; "finite differences: value ± se"; "default (with control): value ± se" ] do
                      let x, se = pm r[col c]
                      Expect.isLessThanOrEqual (abs (x - v) / se) 4.5 (sprintf "%s, %s: %g ± %g against %g" r[0] c x se v)
          }

          test "Docs docs/responses.md's prose under the study table quotes the table's extremes" {
              let header, rows = studyTable ()
              let col = column header
              let text = File.ReadAllText(Path.Combine(repoRoot, "docs", "responses.md"))
              let values name (pick: string[] -> bool) = rows |> Array.filter pick |> Array.map (fun r -> num r[col name])
              let round2 (x: float) = Math.Round(x, 2)
              let quoted (pattern: string) =
                  let m = Regex.Match(text, pattern)
                  if not m.Success then failtestf "docs/responses.md no longer says /%s/" pattern
                  m.Groups |> Seq.skip 1 |> Seq.map (fun g -> num g.Value) |> Array.ofSeq

              let all _ = true
              let seBest = values "se / best" all
              Expect.equal (quoted @"within \*\*([0-9.]+)x\*\* of the best fixed rate") [| round2 (Array.max seBest) |] "the adaptive rate's worst se / best"

              let defFd = values "default se / FD's" all
              Expect.equal
                  (quoted @"within\s+\*\*([0-9.]+)x–([0-9.]+)x\*\* of finite differences")
                  [| round2 (Array.min defFd); round2 (Array.max defFd) |]
                  "the default's range of se / FD's"

              let adFd = values "adaptive se / FD's" (fun r -> r[0].StartsWith "double well" || r[0].StartsWith "Lorenz")
              Expect.equal
                  (quoted @"the kernel estimate alone: ([0-9.]+)x–([0-9.]+)x on the double")
                  [| round2 (Array.min adFd); round2 (Array.max adFd) |]
                  "the kernel estimate's range of se / FD's on the double well and Lorenz-96"
          }

          test "Docs docs/responses.md's OU references are the Euler chain's d E[x_N²] / dθ and / dσ (a forward recursion)" {
              let header, rows = studyTable ()
              let col = column header
              let dTheta, dSigma = ouChainDerivatives ()

              for name, exact in [ "OU, d/dtheta", dTheta; "OU, d/dsigma", dSigma ] do
                  let r = rows |> Array.find (fun r -> r[0] = name)
                  let quoted = reference r[col "reference"] |> Option.get
                  // quoted to four decimals
                  Expect.isLessThanOrEqual (abs (quoted - exact)) 0.6e-4 (sprintf "%s: quoted %g, the chain's %.6f" name quoted exact)
          } ]

/// docs/responses.md's "Standard error against T" table: per T (rows) the standard error of each method.
let stderrVsT () =
    let header, rows = DocsNumbers.table "responses.md" (File.ReadAllText(Path.Combine(repoRoot, "docs", "responses.md"))) "| T | pathwise |"
    let col = DocsNumbers.column "responses.md" header
    let series name = rows |> Array.map (fun r -> num r[0], r[col name])
    series "pathwise", series "likelihood ratio", series "divergence kernel"

[<Tests>]
let stderrVsTTests =
    testList
        "Docs claims, stderr against T"
        [ test "Docs docs/responses.md's prose on the standard error against T quotes its table" {
              let text = File.ReadAllText(Path.Combine(repoRoot, "docs", "responses.md"))
              let q = DocsNumbers.quoted "responses.md" text
              let pw, lr, dk = stderrVsT ()
              let at (s: (float * string)[]) t = snd (s |> Array.find (fun (x, _) -> x = t))
              let v s t = num (at s t)
              Expect.equal (pw |> Array.map fst) [| 0.25; 0.5; 1.0; 1.5; 2.0; 3.0; 4.0 |] "the script's horizons"
              // pathwise: two orders of magnitude better at 0.25, its growth rate over T = 1 .. 4, its value at 4
              let p = q @"\*\*pathwise\*\* starts two orders of magnitude better than the others \(([0-9.]+) at T = 0.25\)[\s\S]*?grows about like e\^\{([0-9.]+) T\}[\s\S]*?at T = 4 its standard error is ([0-9.]+);"
              DocsNumbers.agreesToDigits "pathwise at T = 0.25" p[0] (v pw 0.25)
              Expect.isGreaterThanOrEqual (v lr 0.25 / v pw 0.25) 100.0 "two orders of magnitude below the likelihood ratio's"
              let late = pw |> Array.filter (fun (t, _) -> t >= 1.0)
              let ts = late |> Array.map fst
              let ls = late |> Array.map (fun (_, s) -> log (num s))
              let mt, ml = Array.average ts, Array.average ls
              let rate = Array.fold2 (fun a t l -> a + (t - mt) * (l - ml)) 0.0 ts ls / (ts |> Array.sumBy (fun t -> (t - mt) ** 2.0))
              DocsNumbers.agreesToDigits "pathwise's growth rate over T = 1 .. 4" p[1] rate
              DocsNumbers.agreesToDigits "pathwise at T = 4" p[2] (v pw 4.0)
              // the likelihood ratio's range
              let l = q @"\*\*likelihood ratio\*\* stays between ([0-9.]+) and ([0-9.]+) at every T \(([0-9.]+) at T = 4\)"
              let lrs = lr |> Array.map (fun (_, s) -> num s)
              DocsNumbers.agreesToDigits "the likelihood ratio's least" l[0] (Array.min lrs)
              DocsNumbers.agreesToDigits "the likelihood ratio's largest" l[1] (Array.max lrs)
              DocsNumbers.agreesToDigits "the likelihood ratio at T = 4" l[2] (v lr 4.0)
              // the divergence kernel: pathwise's while the control's coefficient is 1, then the kernel's range
              let d = q @"better estimate \(([0-9.]+) at T = 0.25, ([0-9.]+) at T = 0.5:[\s\S]*?the kernel from T = 1 on \(([0-9.]+) to ([0-9.]+), like"
              DocsNumbers.agreesToDigits "the kernel at T = 0.25" d[0] (v dk 0.25)
              DocsNumbers.agreesToDigits "the kernel at T = 0.5" d[1] (v dk 0.5)
              for t in [ 0.25; 0.5 ] do
                  Expect.floatClose Accuracy.low (v dk t) (v pw t) (sprintf "the kernel's default is pathwise's at T = %g" t)
              let dks = dk |> Array.filter (fun (t, _) -> t >= 1.0) |> Array.map (fun (_, s) -> num s)
              DocsNumbers.agreesToDigits "the kernel's least from T = 1" d[2] (Array.min dks)
              DocsNumbers.agreesToDigits "the kernel's largest from T = 1" d[3] (Array.max dks)
          }

          test "Docs docs/responses.md's standard errors against T rerun at T = 0.25, 0.5 and 1 (the script's files): within 25% of the table's [slow tier]" {
              Tier.requireSlow "nine Lorenz-96 runs of 1000 paths (N = 40)"
              let pw, lr, dk = stderrVsT ()
              let at (s: (float * string)[]) t = num (snd (s |> Array.find (fun (x, _) -> x = t)))
              for name, meth, s in [ "pathwise", "pathwise", pw; "likelihood ratio", "likelihood_ratio", lr; "divergence kernel", "divergence_kernel(mode = iterative)", dk ] do
                  for t in [ 0.25; 0.5; 1.0 ] do
                      // docs/scripts/stderr_vs_T.fsx's file
                      let src =
                          sprintf
                              "model Lorenz96 {\n  const N = 40\n  param F = 8\n  param sigma = 0.5\n  state x[N] periodic\n  brownian W[N]\n  init x[i] ~ normal(8, 1)\n  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]\n}\nsimulate { paths = 1000; dt = 0.005; T = %g; seed = 1 }\nquery { d mean(avg(i, x[i])) / d F with %s }"
                              t meth
                      let r =
                          match SdeCompiler.Compile(src, "l96.sde") with
                          | Ok p -> p.Run().Sets.Head.Results.Head
                          | Error ds -> failtestf "%A" (ds |> List.map string)
                      let ratio = r.StdErr / at s t
                      Expect.isTrue (ratio >= 0.8 && ratio <= 1.25) (sprintf "%s at T = %g: the table's %g, the run's %g" name t (at s t) r.StdErr)
          } ]

/// The study's files (docs/scripts/schedule_study.fsx), with `paths` left open.
let private studyFile (model: string) =
    match model with
    | m when m.StartsWith "double well" ->
        let temp = num (m.Substring(m.IndexOf '=' + 1).Trim())
        sprintf
            "model DoubleWell {\n  param temp = %s in (0, inf)\n  state x\n  brownian W\n  init x ~ normal(1, 0.3)\n  d x = -(4*x^3 - 4*x) dt + sqrt(2*temp) dW\n}\nsimulate { paths = PATHS; dt = 0.01; T = 5; seed = 1 }"
            (temp.ToString("R", inv)),
        "d mean(x^2) / d temp"
    | m when m.StartsWith "OU" ->
        "model OU {\n  param theta = 1\n  param sigma = 0.5\n  state x\n  brownian W\n  init x = 1\n  d x = -theta * x dt + sigma dW\n}\nsimulate { paths = PATHS; dt = 0.01; T = 2; seed = 7 }",
        sprintf "d mean(x^2) / d %s" (m.Substring(m.IndexOf "d/d" + 3))
    | m when m.StartsWith "2-D" ->
        "model Coupled2D {\n  param a = 0.8\n  param s = 0.4\n  state x\n  state y\n  brownian W[2]\n  init x = 0.5\n  init y = -0.3\n  d x = (-x + a * y - 0.2 * x^3) dt + s * (1 + 0.3 * y^2) dW[0] + 0.2 * x dW[1]\n  d y = (-a * x - y) dt + 0.3 * sin(x) dW[0] + s * (1 + 0.1 * x^2) dW[1]\n}\nsimulate { paths = PATHS; dt = 0.01; T = 1; seed = 5 }",
        sprintf "d mean(y + x * y + x^2) / d %s" (m.Substring(m.IndexOf "d/d" + 3))
    | m -> failtestf "no study file for %s" m

[<Tests>]
let slowTests =
    testList
        "Slow docs claims"
        [ test "Docs docs/responses.md's double-well references are the Euler chain's (a forward-mode quadrature)" {
              Tier.requireSlow "three quadratures of 500 steps on a 1501-point grid (a few seconds)"
              let header, rows = studyTable ()
              let col = column header

              for temp in [ 0.25; 0.5; 1.0 ] do
                  let name = sprintf "double well, temp = %g" temp
                  let r = rows |> Array.find (fun r -> r[0] = name)
                  let quoted = reference r[col "reference"] |> Option.get
                  let exact = doubleWellChainDerivative temp
                  Expect.isLessThanOrEqual (abs (quoted - exact)) 3e-4 (sprintf "%s: quoted %g, the quadrature's %.5f" name quoted exact)
          }

          test "Docs docs/responses.md's double well at temp = 1: over 40 seeds the default's z-scores against the chain's quadrature have RMS in [0.7, 1.4], however κ moves; the prose's figures are these runs'" {
              Tier.requireSlow "40 runs of 5000 paths with the default, pathwise and the kernel alone, and a quadrature"
              let exact = doubleWellChainDerivative 1.0
              let file, query = studyFile "double well, temp = 1"
              let runs =
                  [| for seed in 1..40 ->
                         let src =
                             (file.Replace("PATHS", "5000").Replace("seed = 1 }", sprintf "seed = %d }" seed))
                             + sprintf "\nquery {\n  %s\n  %s with pathwise\n  %s with divergence_kernel(rate = 23.1)\n}\n" query query query
                         match SdeCompiler.Compile(src, "dw.sde") with
                         | Ok p -> p.Run(threads = 2).Sets.Head.Results |> List.toArray
                         | Error ds -> failtestf "%A" (ds |> List.map string) |]
              let rms (xs: float[]) = sqrt (Array.averageBy (fun z -> z * z) xs)
              let sd (xs: float[]) = let m = Array.average xs in sqrt (Array.sumBy (fun x -> (x - m) ** 2.0) xs / float (xs.Length - 1))
              let zOf i = runs |> Array.map (fun r -> (r[i].Value - exact) / r[i].StdErr)
              let values i = runs |> Array.map (fun r -> r[i].Value)
              let ses i = runs |> Array.map (fun r -> r[i].StdErr)
              let kappas = runs |> Array.map (fun r -> defaultArg r[0].ControlCoefficient nan)
              printfn "double well, temp = 1, 40 seeds: z RMS %.3f (kernel alone %.3f); κ from %.3f to %.3f; se from %.4f to %.4f" (rms (zOf 0)) (rms (zOf 2)) (Array.min kappas) (Array.max kappas) (Array.min (ses 0)) (Array.max (ses 0))
              printfn "  pathwise se %.3g to %.3g, κ %.3g to %.3g (mean %.3g), default se %.3g to %.3g, z RMS %.3g (kernel %.3g), spread %.3g (kernel %.3g)"
                  (Array.min (ses 1)) (Array.max (ses 1)) (Array.min kappas) (Array.max kappas) (Array.average kappas) (Array.min (ses 0)) (Array.max (ses 0))
                  (rms (zOf 0)) (rms (zOf 2)) (sd (values 0)) (sd (values 2))
              Expect.all kappas Double.IsFinite "the control is carried on every run"
              let text = File.ReadAllText(Path.Combine(repoRoot, "docs", "responses.md"))
              let q =
                  DocsNumbers.quoted "responses.md" text
                      @"pathwise's own standard error ranged from ([0-9.]+) to\s+([0-9.]+), κ from ([0-9.]+) to ([0-9.]+) \(mean ([0-9.]+)\) and the default's standard error from ([0-9.]+) to ([0-9.]+),\s+yet\s+the default's z-scores against the quadrature value have RMS ([0-9.]+) \(the kernel alone's ([0-9.]+)\), and\s+its values spread ([0-9.]+) against the kernel alone's ([0-9.]+)"
              for quotedFigure, measured, what in
                  [ q[0], Array.min (ses 1), "pathwise's least se"; q[1], Array.max (ses 1), "pathwise's largest se"
                    q[2], Array.min kappas, "least κ"; q[3], Array.max kappas, "largest κ"; q[4], Array.average kappas, "mean κ"
                    q[5], Array.min (ses 0), "the default's least se"; q[6], Array.max (ses 0), "the default's largest se"
                    q[7], rms (zOf 0), "the default's z RMS"; q[8], rms (zOf 2), "the kernel's z RMS"
                    q[9], sd (values 0), "the default's spread"; q[10], sd (values 2), "the kernel's spread" ] do
                  DocsNumbers.agreesToDigits what quotedFigure measured
              for i, name in [ 0, "the default"; 2, "the kernel alone" ] do
                  Expect.isGreaterThanOrEqual (rms (zOf i)) 0.7 (sprintf "%s: RMS >= 0.7" name)
                  Expect.isLessThanOrEqual (rms (zOf i)) 1.4 (sprintf "%s: RMS <= 1.4" name)
          }

          test "Docs docs/responses.md's study rows (all but Lorenz-96) agree with a rerun: values within 4.5 combined se, errors within 25%" {
              Tier.requireSlow "seven rows of 20000 paths, three estimators each (about 20 s)"
              let header, rows = studyTable ()
              let col = column header

              for r in rows |> Array.filter (fun r -> not (r[0].StartsWith "Lorenz")) do
                  let file, query = studyFile r[0]
                  let rate = r[col "adaptive rate"]

                  let src =
                      file.Replace("PATHS", r[col "paths"])
                      + sprintf "\nquery {\n  %s\n  %s with divergence_kernel(rate = %s)\n  %s with finite_difference(h = 0.01)\n}\n" query query rate query

                  let results =
                      match SdeCompiler.Compile(src, "study.sde") with
                      | Ok p -> p.Run().Sets.Head.Results |> List.toArray
                      | Error ds -> failtestf "%s: %A" r[0] (ds |> List.map string)

                  for (c, res) in
                      [ "default (with control): value ± se", results[0]
                        "adaptive: value ± se", results[1]
                        "finite differences: value ± se", results[2] ] do
                      let v, se = pm r[col c]
                      let z = abs (res.Value - v) / sqrt (se * se + res.StdErr * res.StdErr)
                      Expect.isLessThanOrEqual z 4.5 (sprintf "%s, %s: quoted %g ± %g, the run %g ± %g" r[0] c v se res.Value res.StdErr)
                      let ratio = res.StdErr / se
                      Expect.isTrue (ratio >= 0.8 && ratio <= 1.25) (sprintf "%s, %s: quoted se %g, the run's %g" r[0] c se res.StdErr)
          } ]
