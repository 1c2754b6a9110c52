// The variance study behind the adaptive default schedule (docs/responses.md, "Choosing α"):
// for each model, the standard error of a response by the divergence kernel at a sweep of fixed
// rates, at the adaptive default, and by finite differences (h = 0.01), all on the same paths (one
// run per case); the measured covector growth rate λ_cov and its variance rate s²; a reference value
// (the double well's chain by quadrature, OU's chain in closed form, otherwise finite differences).
// Prints the markdown table of docs/responses.md and writes docs/img/schedule_study.svg.
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi docs/scripts/schedule_study.fsx [scale]      (scale multiplies the paths; default 1)
//
// About three minutes on two cores at scale 1 (20000 paths, 2000 for Lorenz-96).
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/OxyPlot.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"

open System
open System.IO
open Sde
open Sde.Core
open Sde.Lang

let scale = match fsi.CommandLineArgs with [| _; s |] -> float s | _ -> 1.0
let rates = [| 1.0; 2.0; 3.0; 5.0; 7.0; 10.0; 15.0; 20.0; 30.0; 50.0; 100.0 |]

/// The overdamped double well V(x) = (x² − 1)², dx = −V'(x) dt + √(2 temp) dW, x_0 ~ N(1, 0.3²).
let doubleWell (temp: float) =
    sprintf """model DoubleWell {
  param temp = %g in (0, inf)
  state x
  brownian W
  init x ~ normal(1, 0.3)
  d x = -(4*x^3 - 4*x) dt + sqrt(2*temp) dW
}
simulate { paths = %%d; dt = 0.01; T = 5; seed = 1 }""" temp

let ou =
    """model OU {
  param theta = 1
  param sigma = 0.5
  state x
  brownian W
  init x = 1
  d x = -theta * x dt + sigma dW
}
simulate { paths = %d; dt = 0.01; T = 2; seed = 7 }"""

let coupled2d =
    """model Coupled2D {
  param a = 0.8
  param s = 0.4
  state x
  state y
  brownian W[2]
  init x = 0.5
  init y = -0.3
  d x = (-x + a * y - 0.2 * x^3) dt + s * (1 + 0.3 * y^2) dW[0] + 0.2 * x dW[1]
  d y = (-a * x - y) dt + 0.3 * sin(x) dW[0] + s * (1 + 0.1 * x^2) dW[1]
}
simulate { paths = %d; dt = 0.01; T = 1; seed = 5 }"""

let lorenz96 =
    """model Lorenz96 {
  const N = 40
  param F = 8
  param sigma = 0.5
  state x[N] periodic
  brownian W[N]
  init x[i] ~ normal(8, 1)
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]
}
simulate { paths = %d; dt = 0.005; T = 2; seed = 2 }"""

/// E[x_N²] of the double well's Euler chain by quadrature of its transition density on a grid
/// (x ∈ [−3, 3], spacing 0.004; the Gaussian kernel spans ≥ 17 grid points per standard deviation).
let dwSecondMoment (temp: float) =
    let h = 0.004
    let n = int (6.0 / h) + 1
    let xs = Array.init n (fun i -> -3.0 + float i * h)
    let dt = 0.01
    let sd = sqrt (2.0 * temp * dt)
    let norm x m s = exp (-0.5 * ((x - m) / s) ** 2.0) / (s * sqrt (2.0 * Math.PI))
    let mutable p = xs |> Array.map (fun x -> norm x 1.0 0.3)
    let band = int (ceil (10.0 * sd / h))
    for _ in 1..500 do
        let q = Array.zeroCreate n
        for i in 0 .. n - 1 do
            if p[i] > 1e-300 then
                let x = xs[i]
                let m = x - (4.0 * x * x * x - 4.0 * x) * dt
                let c = int (Math.Round((m + 3.0) / h))
                for j in max 0 (c - band) .. min (n - 1) (c + band) do
                    q[j] <- q[j] + p[i] * h * norm xs[j] m sd
        p <- q
    Array.fold2 (fun acc x pi -> acc + pi * x * x * h) 0.0 xs p

let dwReference temp = (dwSecondMoment (temp + 1e-3) - dwSecondMoment (temp - 1e-3)) / 2e-3

/// OU's chain (x_0 = 1, θ = 1, σ = 0.5, Δt = 0.01, N = 200): d E[x_N²] / dθ and / dσ in closed form.
let ouReference (wrt: string) =
    let th, sg, dt, nn = 1.0, 0.5, 0.01, 200
    let a = 1.0 - th * dt
    let m = a ** float nn
    let s = Seq.sum (seq { for k in 0 .. nn - 1 -> a ** (2.0 * float k) })
    let dm = float nn * a ** float (nn - 1) * (-dt)
    let dsda = Seq.sum (seq { for k in 1 .. nn - 1 -> 2.0 * float k * a ** (2.0 * float k - 1.0) })
    if wrt = "theta" then 2.0 * m * dm + sg * sg * dt * dsda * (-dt) else 2.0 * sg * dt * s

type Case =
    { Name: string; Source: string; Query: string; Mode: string; Paths: int; Reference: (unit -> float) option; RefName: string }

let cases =
    [ for t in [ 0.25; 0.5; 1.0 ] ->
          { Name = sprintf "double well, temp = %g" t; Source = doubleWell t; Query = "d mean(x^2) / d temp"; Mode = ""; Paths = 20000
            Reference = Some(fun () -> dwReference t); RefName = "quadrature" }
      for w in [ "theta"; "sigma" ] ->
          { Name = sprintf "OU, d/d%s" w; Source = ou; Query = sprintf "d mean(x^2) / d %s" w; Mode = ""; Paths = 20000
            Reference = Some(fun () -> ouReference w); RefName = "closed form" }
      for w in [ "a"; "s" ] ->
          { Name = sprintf "2-D multiplicative, d/d%s" w; Source = coupled2d; Query = sprintf "d mean(y + x * y + x^2) / d %s" w; Mode = ""
            Paths = 20000; Reference = None; RefName = "" }
      yield { Name = "Lorenz-96 (N = 40), d/dF"; Source = lorenz96; Query = "d mean(avg(i, x[i])) / d F"; Mode = ", mode = iterative"; Paths = 2000
              Reference = None; RefName = "" } ]

let growthOf (src: string) =
    match Frontend.compileText "study.sde" src with
    | Error ds -> failwithf "%A" ds
    | Ok cf ->
        match Driver.prepare "study.sde" cf with
        | Error ds -> failwithf "%A" ds
        | Ok p ->
            let s = cf.Settings
            let model = p.Compiled.Instance (cf.Sets.Head.Values)
            ModelRunner.CovectorGrowth(p.Compiled.Type, model, p.Compiled.Structure, RunSettings(Paths = s.Paths, Dt = s.Dt, T = s.T, Seed = s.Seed))

let inv = Globalization.CultureInfo.InvariantCulture
let g3 (x: float) = if Double.IsNaN x then "–" elif abs x < 1e-12 then "0" elif Double.IsFinite x then (sprintf "%.3g" x) else "∞"

type Row =
    { Case: Case; Lambda: float; S2: float; Adaptive: float; AdSe: float; AdValue: float; AdKurt: float; AdShare: float; AdWarn: bool
      /// the default's result, with its pathwise control variate where pathwise applies (κ its coefficient)
      DefSe: float; DefValue: float; Kappa: float; TanT: float
      FixedSe: float[]; FixedKurt: float[]; FixedOk: bool[]; FdSe: float; FdValue: float; Ref: float }

let rows =
    cases
    |> List.map (fun c ->
        let paths = max 100 (int (float c.Paths * scale))
        let head = sprintf (Printf.StringFormat<int -> string>(c.Source)) paths
        // with its response query: a file of means only is compiled without derivatives (no tangent
        // structure), whose growth measures as 0
        let g = growthOf (head + "\nquery {\n" + c.Query + "\n}\n")
        let adaptiveRate = CovectorGrowth.RateFor g
        let qs =
            [ yield c.Query + (if c.Mode = "" then "" else sprintf " with divergence_kernel(%s)" (c.Mode.TrimStart(',', ' ')))
              // the adaptive rate as an explicit one: the kernel estimate alone, without the default's control variate
              yield sprintf "%s with divergence_kernel(rate = %s%s)" c.Query (adaptiveRate.ToString("R", inv)) c.Mode
              for r in rates -> sprintf "%s with divergence_kernel(rate = %g%s)" c.Query r c.Mode
              yield c.Query + " with finite_difference(h = 0.01)" ]
        let src = head + "\nquery {\n" + String.Join("\n", qs) + "\n}\n"
        let sw = Diagnostics.Stopwatch.StartNew()
        let res =
            match SdeCompiler.Compile(src, "study.sde") with
            | Ok p -> p.Run().Sets.Head.Results |> List.toArray
            | Error ds -> failwithf "%A" ds
        let def = res[0]
        let ad = res[1]
        let fd = res[res.Length - 1]
        let fixedR = res[2 .. rates.Length + 1]
        let row =
            { Case = c; Lambda = g.Rate; S2 = g.VarianceRate; Adaptive = adaptiveRate; AdSe = ad.StdErr; AdValue = ad.Value
              DefSe = def.StdErr; DefValue = def.Value; Kappa = defaultArg def.ControlCoefficient nan
              TanT = g.TangentRate * (match Frontend.compileText "study.sde" head with Ok cf -> cf.Settings.T | Error _ -> nan)
              AdKurt = defaultArg ad.WeightKurtosis nan; AdShare = defaultArg ad.WeightMaxShare nan; AdWarn = not ad.Warnings.IsEmpty
              FixedSe = fixedR |> Array.map (fun q -> q.StdErr); FixedKurt = fixedR |> Array.map (fun q -> defaultArg q.WeightKurtosis nan)
              FixedOk = fixedR |> Array.map (fun q -> q.Warnings.IsEmpty)
              FdSe = fd.StdErr; FdValue = fd.Value; Ref = (match c.Reference with Some f -> f () | None -> nan) }
        eprintfn "%-32s λ_cov %s s² %s adaptive rate %s: %s ± %s, default %s ± %s (κ %s) (FD %s ± %s, ref %s) [%.1f s]" c.Name (g3 row.Lambda) (g3 row.S2) (g3 row.Adaptive)
            (g3 ad.Value) (g3 ad.StdErr) (g3 def.Value) (g3 def.StdErr) (g3 row.Kappa) (g3 fd.Value) (g3 fd.StdErr) (g3 row.Ref) sw.Elapsed.TotalSeconds
        for i in 0 .. rates.Length - 1 do
            eprintfn "    rate %5g: %s ± %s  kurtosis %s, largest share %s%s" rates[i] (g3 fixedR[i].Value) (g3 fixedR[i].StdErr) (g3 row.FixedKurt[i])
                (g3 (defaultArg fixedR[i].WeightMaxShare nan))
                (if fixedR[i].Warnings.IsEmpty then "" else "  (warning)")
        row)

// the table
printfn "| model | paths | λ_cov | s² | adaptive rate | adaptive: value ± se | adaptive: largest share | best fixed rate (se) | se / best | rate 10 (old default) se | finite differences: value ± se | adaptive se / FD's | λ_tan·T | default (with control): value ± se | κ | default se / FD's | reference |"
printfn "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in rows do
    let finite = r.FixedSe |> Array.mapi (fun i s -> i, s) |> Array.filter (fun (i, s) -> Double.IsFinite s && r.FixedOk[i])
    let bi, bse = finite |> Array.minBy snd
    let i10 = Array.IndexOf(rates, 10.0)
    let paths = max 100 (int (float r.Case.Paths * scale))
    printfn "| %s | %d | %s | %s | %s | %s ± %s | %s%s | %g (%s) | %.2f | %s%s | %s ± %s | %.2f | %s | %s ± %s | %s | %.2f | %s |" r.Case.Name paths (g3 r.Lambda) (g3 r.S2) (g3 r.Adaptive)
        (g3 r.AdValue) (g3 r.AdSe) (g3 r.AdShare) (if r.AdWarn then " (warning)" else "") rates[bi] (g3 bse) (r.AdSe / bse) (g3 r.FixedSe[i10])
        (if r.FixedOk[i10] then "" else " (warning)")
        (g3 r.FdValue) (g3 r.FdSe) (r.AdSe / r.FdSe) (g3 r.TanT) (g3 r.DefValue) (g3 r.DefSe) (g3 r.Kappa) (r.DefSe / r.FdSe)
        (if Double.IsNaN r.Ref then "–" else sprintf "%s (%s)" (r.Ref.ToString("F4", inv)) r.Case.RefName)

// the plot: log10 of the standard error relative to the best fixed rate, against log10(rate / λ_cov)
let series =
    [ for r in rows do
          let best = r.FixedSe |> Array.mapi (fun i s -> i, s) |> Array.filter (fun (i, s) -> Double.IsFinite s && r.FixedOk[i]) |> Array.map snd |> Array.min
          let xs = rates |> Array.map (fun q -> Math.Log10(q / r.Lambda))
          // a blown-up rate is drawn at the top (clipped at 10x the best)
          let ys = r.FixedSe |> Array.map (fun s -> if Double.IsFinite s then min 1.0 (Math.Log10(s / best)) else 1.0)
          yield r.Case.Name, xs, ys, [||]
      // separate markers (a NaN between points breaks the line)
      yield "adaptive default", rows |> List.collect (fun r -> [ Math.Log10(r.Adaptive / r.Lambda); nan ]) |> List.toArray,
            rows |> List.collect (fun r ->
                let best = r.FixedSe |> Array.mapi (fun i s -> i, s) |> Array.filter (fun (i, s) -> Double.IsFinite s && r.FixedOk[i]) |> Array.map snd |> Array.min
                [ Math.Log10(r.AdSe / best); nan ]) |> List.toArray, [||] ]

let out = Path.Combine(__SOURCE_DIRECTORY__, "..", "img", "schedule_study.svg")
Plot.writeSeriesWith out "divergence kernel: standard error against the rate" "relative to the best fixed rate of each case; clipped at 10x" false "log10(rate / λ_cov)" "log10(se / best se)" series
eprintfn "wrote %s" out
