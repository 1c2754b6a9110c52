/// Trajectories (docs/language.md §6.8, docs/fitting.md "From a trajectory file"): `samples(...) every Δ`
/// writes each path's observables at t = 0, Δ, ..., T, the same paths as the other queries; Jacobian
/// matching estimates the field (three-point differences) and its Jacobian (local linear fits) from such
/// a file. The estimates on a Lorenz-63 trajectory are checked against the exact field and Jacobian within
/// bounds derived from the estimators' leading error terms; the fit from a wrong start recovers (10, 28, 8/3)
/// within the bound those errors imply for a linear least-squares problem.
module Sde.Tests.FitTrajectoryTests

open System
open System.IO
open Expecto
open Sde
open Sde.Lang
open Sde.Tests.CliTests
open Sde.Tests.FitTests

let private inv = Globalization.CultureInfo.InvariantCulture

let private compile (text: string) =
    match SdeCompiler.Compile(text, "traj.sde") with
    | Ok p -> p
    | Error ds -> failwithf "compile errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

let private compileErrors (text: string) =
    match SdeCompiler.Compile(text, "traj.sde") with
    | Ok _ -> failwith "expected a compile error"
    | Error ds -> ds

let private oneLine (d: SourceDiagnostic) = sprintf "%d:%d %s" d.Line d.Col d.Message

let private twoStates (paths: int) (queries: string) =
    sprintf
        """model Two {
  param theta = 1
  state x
  state y
  brownian W
  init x = 1
  init y = 2
  d x = -theta * x dt + 0.5 dW
  d y = (x - y) dt + 0.2 * x dW
}
simulate { paths = %d; dt = 0.01; T = 1; seed = 11 }
query {
%s
}
"""
        paths
        queries

[<Tests>]
let samplesEvery =
    testList
        "FitTrajectory.SamplesEvery"
        [ test "samples(...) every Δ: a row per path and grid time; t = 0 is the init, t = T the plain samples' value of the same path" {
              let p = compile (twoStates 50 "  samples(x, y, x * y) every 0.1\n  samples(x, y)\n  mean(y)")
              let r = p.Run()
              let res = (List.head r.Sets).Results
              let tr, at = res[0], res[1]
              Expect.equal tr.Kind "samples_every" "kind"
              Expect.equal tr.Count 50L "paths"
              Expect.equal tr.Grid.Length 11 "t = 0, 0.1, ..., 1"
              Expect.sequenceEqual tr.Grid [| for i in 0 .. 10 -> Math.Round(0.1 * float i, 12) |] "the grid"
              Expect.equal tr.Values.Length (50 * 11 * 3) "paths x times x observables"
              Expect.equal (Output.samplesColumns tr) [ "x"; "y"; "x * y" ] "columns as written"
              let v p i c = tr.Values[(p * 11 + i) * 3 + c]

              for p in 0 .. 49 do
                  Expect.equal (v p 0 0, v p 0 1) (1.0, 2.0) "t = 0: the init"
                  Expect.equal (v p 10 0) at.Values[p * 2] "t = T: x as samples(x, y) (the same path, bit for bit)"
                  Expect.equal (v p 10 1) at.Values[p * 2 + 1] "t = T: y as samples(x, y)"
                  Expect.equal (v p 5 2) (v p 5 0 * v p 5 1) "x * y row by row"

              // the mean of y at T over the trajectories' last rows is the mean(y) query's value (same paths)
              Expect.floatClose Accuracy.veryHigh (Array.average [| for p in 0 .. 49 -> v p 10 1 |]) res[2].Value "mean(y)"

              withTemp (fun dir ->
                  let files = Output.writeSamples dir r |> List.map Path.GetFileName
                  Expect.equal (List.sort files) [ "samples.csv"; "samples_every.csv" ] "both files"
                  let lines = File.ReadAllLines(Path.Combine(dir, "samples_every.csv"))
                  Expect.equal lines[0] "path,t,x,y,x * y" "header"
                  Expect.equal lines.Length (1 + 50 * 11) "a row per path and time"
                  Expect.stringStarts lines[1] "0,0,1,2," "path 0 at t = 0"
                  Expect.stringStarts lines[11] "0,1," "path 0 at t = 1"
                  Expect.stringStarts lines[12] "1,0,1,2," "path 1 at t = 0")

              let json = Output.toJson r
              Expect.stringContains json "\"file\": \"samples_every.csv\"" "the file in the JSON"
              Expect.stringContains json "\"times\": 11" "the times in the JSON"
          }

          test "samples every Δ: Δ off the grid, longer than T, not positive, and too many values are located errors" {
              let d = compileErrors (twoStates 50 "  samples(x) every 0.015") |> List.head
              Expect.equal (d.Line, d.Col) (13, 3) (oneLine d)
              Expect.stringContains d.Message "not a whole number of steps of dt = 0.01" (oneLine d)
              Expect.stringContains d.Message "take every 0.02" (oneLine d)
              let d2 = compileErrors (twoStates 50 "  samples(x) every 2") |> List.head
              Expect.equal d2.Line 13 (oneLine d2)
              Expect.stringContains d2.Message "longer than T = 1" (oneLine d2)
              let d3 = compileErrors (twoStates 50 "  samples(x) every -0.1") |> List.head
              Expect.equal d3.Line 13 (oneLine d3)
              Expect.stringContains d3.Message "needs Δ > 0" (oneLine d3)
              // 10^6 paths x 101 times x 1 observable = 1.01e8 values > 5e7
              let d4 = compileErrors (twoStates 1000000 "  samples(x) every 0.01") |> List.head
              Expect.equal (d4.Line, d4.Col) (13, 3) (oneLine d4)
              Expect.stringContains d4.Message "1000000 paths x 101 times x 1 = 1.01e+08 values" (oneLine d4)
              Expect.stringContains d4.Message "use fewer paths (--paths) or a larger step" (oneLine d4)
              // the same at every 0.02: 51 times, 5.1e7 values, still refused; at 0.05 (21 times) accepted
              Expect.isNonEmpty (compileErrors (twoStates 1000000 "  samples(x) every 0.02")) "5.1e7 refused"
              compile (twoStates 1000000 "  samples(x) every 0.05") |> ignore
          }

          test "samples every Δ refuses --shard, located" {
              withTemp (fun dir ->
                  let f = Path.Combine(dir, "s.sde")
                  File.WriteAllText(f, twoStates 50 "  samples(x) every 0.1")
                  let o = dsl [ "run"; f; "--shard"; "0/2"; "--out"; Path.Combine(dir, "sh") ]
                  Expect.equal o.Code 2 (describe [ "run --shard" ] o)
                  Expect.stringContains o.Err "s.sde:13:3: error:" "located"
                  Expect.stringContains o.Err "a shard cannot do yet" "says why")
          } ]

// ------------------------------------------------------------------------------------- Lorenz-63

let private s0, r0, b0 = 10.0, 28.0, 8.0 / 3.0

let private lorenzField (s: float) (r: float) (b: float) (x: float[]) =
    [| s * (x[1] - x[0]); x[0] * (r - x[2]) - x[1]; x[0] * x[1] - b * x[2] |]

let private lorenzJacobian (s: float) (r: float) (b: float) (x: float[]) =
    [| -s; s; 0.0; r - x[2]; -1.0; -x[0]; x[1]; x[0]; -b |]

let private matVec (j: float[]) (v: float[]) = Array.init 3 (fun i -> j[3 * i] * v[0] + j[3 * i + 1] * v[1] + j[3 * i + 2] * v[2])

let private norm (v: float[]) = sqrt (Array.sumBy (fun a -> a * a) v)

/// Lorenz-63 (an ODE: no brownian), 20 paths from spread-out starts (so that the transients fill a
/// three-dimensional region and the local fits are well posed), Euler with dt = 0.001, recorded every 0.01.
let private lorenzGen =
    """model L63 {
  param s = 10
  param r = 28
  param b = 8/3
  state x
  state y
  state z
  init x ~ normal(0, 10)
  init y ~ normal(0, 10)
  init z ~ normal(25, 10)
  d x = s * (y - x) dt
  d y = (x * (r - z) - y) dt
  d z = (x * y - b * z) dt
}
simulate { paths = 50; dt = 0.001; T = 1; seed = 3 }
query {
  samples(x, y, z) every 0.01
}
"""

let private lorenzData () =
    let r = (compile lorenzGen).Run()
    let q = (List.head r.Sets).Results.Head
    let paths, times = int q.Count, q.Grid.Length
    let states = q.Values
    let time = Array.init (paths * times) (fun i -> q.Grid[i % times])
    let path = Array.init (paths * times) (fun i -> int64 (i / times))
    r, states, time, path

[<Tests>]
let estimation =
    testList
        "FitTrajectory.Estimate"
        [ test "the field and Jacobian estimated from a Lorenz-63 trajectory, against the exact ones, within their derived error" {
              let _, states, time, path = lorenzData ()
              let k = Sde.Core.TrajectoryField.DefaultNeighbours 3
              let e = Sde.Core.TrajectoryField.Run(states, time, path, 3, true, k, k, 5000)
              Expect.isTrue e.HasJacobian "a Jacobian"
              Expect.equal e.InteriorPoints (50 * 99) "every interior point"
              Expect.equal e.Rows e.InteriorPoints "below the row limit: every interior point a row"
              // the spread-out starts fill a 3-D region early on; later points lie on the attractor's thin sheets,
              // where the neighbours span fewer than 3 directions: those rows carry no Jacobian (NaN)
              printfn "trajectory: %d rows, %d without a Jacobian (thin neighbourhoods)" e.Rows e.Degenerate
              Expect.isLessThan e.Degenerate (e.Rows / 2) "most rows carry a Jacobian"
              let dt, h = 0.001, 0.01
              // Field. The path is the Euler chain x_{n+1} = x_n + f(x_n) dt, sampled every h = 10 dt. Its
              // central difference over [t − h, t + h] is the mean of f at the left ends of the 20 Euler steps:
              // f + (h²/6) x''' − (dt/2) x'' + O(h³, h·dt), with x'' = J f and x''' = J'(f) f + J J f
              // (J' = dJ/dt: its entries −ż, −ẋ, ẏ, ẋ). Per row the leading term, summed in absolute value,
              // is a bound up to the higher orders: the test asks the RMS error below 1.5 × the RMS of the bound.
              let mutable se, sb, seJ, sbJ, n = 0.0, 0.0, 0.0, 0.0, 0
              let mutable worstRel = 0.0
              let rowsJ = Collections.Generic.List<float>()

              for row in 0 .. e.Rows - 1 do
                  let x = Array.sub e.States (row * 3) 3
                  let f = lorenzField s0 r0 b0 x
                  let j = lorenzJacobian s0 r0 b0 x
                  let x2 = matVec j f
                  let jdot = [| 0.0; 0.0; 0.0; -f[2]; 0.0; -f[0]; f[1]; f[0]; 0.0 |]
                  let x3 = Array.map2 (+) (matVec jdot f) (matVec j x2)
                  let bound = Array.init 3 (fun i -> h * h / 6.0 * abs x3[i] + dt / 2.0 * abs x2[i])
                  let err = Array.init 3 (fun i -> e.Field[row * 3 + i] - f[i])
                  se <- se + Array.sumBy (fun a -> a * a) err
                  sb <- sb + Array.sumBy (fun a -> a * a) bound
                  worstRel <- max worstRel (norm err / norm f)
                  let ej = Array.init 9 (fun i -> e.Jacobian[row * 9 + i] - j[i])
                  n <- n + 1

                  if not (Double.IsNaN ej[0]) then
                      seJ <- seJ + Array.sumBy (fun a -> a * a) ej
                      rowsJ.Add(sqrt (Array.sumBy (fun a -> a * a) ej / 9.0))

              let rmsField, rmsBound = sqrt (se / float n), sqrt (sb / float n)
              printfn "trajectory field: RMS error %.4g, RMS leading-order bound %.4g (largest relative error %.3g)" rmsField rmsBound worstRel
              Expect.isLessThan rmsField (1.5 * rmsBound) "the field's RMS error within 1.5 x its leading-order bound"
              // Jacobian. Lorenz-63 is quadratic (∂²f_y/∂x∂z = −1, ∂²f_z/∂x∂y = 1, the rest 0): across neighbours within
              // radius ρ (original units) the gradient of f_y and of f_z varies by up to ρ per entry, so a linear
              // fit's slope is off by O(ρ) in those two rows (6 of the 9 entries): an RMS over the entries of about
              // √(6/9)·ρ. The field's errors ε (RMS rmsField) enter the slope divided by the neighbours' spread,
              // about ρ/2 (at least MinSpread of it in the thinnest direction, which the conditioning test enforces):
              // about 2·rmsField/ρ. The bound is the sum of the two.
              let sd i =
                  let xs = Array.init (states.Length / 3) (fun p -> states[p * 3 + i])
                  MathNet.Numerics.Statistics.Statistics.PopulationStandardDeviation xs
              let rho = e.MedianRadius * (Array.init 3 sd |> Array.max)
              let nj = rowsJ.Count
              let rmsJ = sqrt (seJ / float nj / 9.0)
              let sorted = rowsJ.ToArray() |> Array.sort
              printfn "trajectory Jacobian: per-row RMS entry error, median %.3g, 90%% %.3g, 99%% %.3g" sorted[nj / 2] sorted[nj * 9 / 10] sorted[nj * 99 / 100]
              let boundJ = sqrt (6.0 / 9.0) * rho + 2.0 * rmsField / rho
              printfn "trajectory Jacobian: RMS entry error %.4g, radius %.4g, bound %.4g" rmsJ rho boundJ
              Expect.isLessThan rmsJ boundJ "the Jacobian's RMS entry error within the curvature and field-error bound"
          } ]

let private lorenzFit (data: string) =
    sprintf
        """model L63 {
  param s = 5
  param r = 20
  param b = 1
  state x
  state y
  state z
  init x = 1
  init y = 1
  init z = 20
  d x = s * (y - x) dt
  d y = (x * (r - z) - y) dt
  d z = (x * y - b * z) dt
}
simulate { paths = 8; dt = 0.005; T = 1; seed = 5 }
fit s, r, b to "%s" { objective = jacobian_matching(lambda = 1); tolerance = 1e-9; iterations = 300 }
"""
        data

[<Tests>]
let fitting =
    testList
        "FitTrajectory.Fit"
        [ test "Lorenz-63's (s, r, b) from a wrong start by Jacobian matching on a trajectory file, within the estimates' error" {
              withTemp (fun dir ->
                  let run, states, time, path = lorenzData ()
                  Output.writeSamples dir run |> ignore
                  let p = compile (lorenzFit "samples_every.csv")
                  let sw = Diagnostics.Stopwatch.StartNew()

                  let rep =
                      match p.Fit(dataDir = dir) with
                      | Ok r -> r
                      | Error ds -> failwithf "fit errors:\n%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

                  let seconds = sw.Elapsed.TotalSeconds
                  Expect.isTrue rep.Converged rep.Stop
                  let est = dict rep.Estimated
                  Expect.equal est["points"] (50.0 * 101.0) "points recorded"
                  Expect.equal est["rows"] (50.0 * 99.0) "rows: the interior points"
                  Expect.equal est["neighbours"] 16.0 "4(d + 1) neighbours"
                  Expect.stringContains (Fit.toJson rep) "\"estimated\"" "fit.json says what was estimated"
                  // The same rows as the fit estimated (the file holds the values to the last bit).
                  let k = Sde.Core.TrajectoryField.DefaultNeighbours 3
                  let e = Sde.Core.TrajectoryField.Run(states, time, path, 3, true, k, k, 5000)
                  // The drift is linear in γ = (s, r, b): f_γ(x) = f_γ*(x) + A(x)(γ − γ*), and so is its Jacobian; so
                  // the minimiser is γ* + δ with δ = (AᵀA)⁻¹Aᵀρ, ρ the estimates' errors (field and, λ = 1, Jacobian
                  // entries; rows without a Jacobian give the field only). The test asks (1) the fit to reach
                  // γ* + δ (to the optimiser's precision) and (2) |δ_j| within its bound from the errors' sizes:
                  // |δ_j| ≤ ‖row j of (AᵀA)⁻¹Aᵀ‖·‖ρ‖ (Cauchy–Schwarz), with ‖ρ‖ the derived bounds of the estimation
                  // test: 1.5 × the field's leading-order error per row and the Jacobian's curvature + field bound.
                  let aRows = Collections.Generic.List<float[]>()
                  let resid = Collections.Generic.List<float>()
                  let mutable fieldBound2, nJ = 0.0, 0

                  for row in 0 .. e.Rows - 1 do
                      let x = Array.sub e.States (row * 3) 3
                      let f = lorenzField s0 r0 b0 x
                      let j = lorenzJacobian s0 r0 b0 x
                      aRows.Add [| x[1] - x[0]; 0.0; 0.0 |]
                      aRows.Add [| 0.0; x[0]; 0.0 |]
                      aRows.Add [| 0.0; 0.0; -x[2] |]
                      for i in 0 .. 2 do resid.Add(e.Field[row * 3 + i] - f[i])
                      let x2 = matVec j f
                      let jdot = [| 0.0; 0.0; 0.0; -f[2]; 0.0; -f[0]; f[1]; f[0]; 0.0 |]
                      let x3 = Array.map2 (+) (matVec jdot f) (matVec j x2)
                      for i in 0 .. 2 do fieldBound2 <- fieldBound2 + (1.5 * (0.01 * 0.01 / 6.0 * abs x3[i] + 0.001 / 2.0 * abs x2[i])) ** 2.0

                      if not (Double.IsNaN e.Jacobian[row * 9]) then
                          nJ <- nJ + 1
                          let dJ = [| [| -1.0; 0.0; 0.0 |]; [| 1.0; 0.0; 0.0 |]; [| 0.0; 0.0; 0.0 |]; [| 0.0; 1.0; 0.0 |]; [| 0.0; 0.0; 0.0 |]; [| 0.0; 0.0; 0.0 |]
                                      [| 0.0; 0.0; 0.0 |]; [| 0.0; 0.0; 0.0 |]; [| 0.0; 0.0; -1.0 |] |]
                          for q in 0 .. 8 do
                              aRows.Add dJ[q]
                              resid.Add(e.Jacobian[row * 9 + q] - j[q])

                  let a = MathNet.Numerics.LinearAlgebra.Matrix<float>.Build.DenseOfRowArrays(aRows)
                  let rho = MathNet.Numerics.LinearAlgebra.Vector<float>.Build.DenseOfEnumerable(resid)
                  let pinv = (a.TransposeThisAndMultiply a).Inverse() * a.Transpose()
                  let delta = pinv * rho
                  // the Jacobian bound of the estimation test, per entry, over the rows that carry one
                  let sd i = MathNet.Numerics.Statistics.Statistics.PopulationStandardDeviation(Array.init (states.Length / 3) (fun p -> states[p * 3 + i]))
                  let radius = e.MedianRadius * (Array.init 3 sd |> Array.max)
                  let fieldRms = sqrt (fieldBound2 / float (3 * e.Rows))
                  let jacBound2 = float (9 * nJ) * (sqrt (6.0 / 9.0) * radius + 2.0 * fieldRms / radius) ** 2.0
                  let rhoBound = sqrt (fieldBound2 + jacBound2)
                  let truth = [| s0; r0; b0 |]

                  for jx in 0 .. 2 do
                      let fitted = rep.Fitted[jx]
                      let bound = pinv.Row(jx).L2Norm() * rhoBound
                      printfn "trajectory fit: %s = %.6g (truth %.6g, predicted %.6g, bound ±%.3g)" rep.Names[jx] fitted truth[jx] (truth[jx] + delta[jx]) bound
                      Expect.floatClose { absolute = 1e-4; relative = 1e-4 } fitted (truth[jx] + delta[jx]) "the fit reaches the least-squares optimum of the estimates"
                      Expect.isLessThan (abs (fitted - truth[jx])) bound "within the bound the estimates' errors imply"

                  printfn "trajectory fit: %d evaluations, %.2f s (with the estimation)" rep.History.Length seconds)
          } ]

[<Tests>]
let example =
    testList
        "FitTrajectory.Example"
        [ test "dsl fit examples/fit_lorenz63_trajectory.sde reaches what docs/fitting.md says, and its fit.json says what was estimated" {
              let args = [ "fit"; "examples/fit_lorenz63_trajectory.sde"; "--json"; "--quiet" ]
              let o = dsl args
              Expect.equal o.Code 0 (describe args o)
              let j = Text.Json.Nodes.JsonNode.Parse o.Out
              let fitted (n: string) = j["fitted"].[n].GetValue<float>()
              // the values docs/fitting.md quotes (deterministic: no paths in Jacobian matching)
              Expect.floatClose { absolute = 5e-4; relative = 0.0 } (fitted "s") 10.013 "s"
              Expect.floatClose { absolute = 5e-4; relative = 0.0 } (fitted "r") 28.024 "r"
              Expect.floatClose { absolute = 5e-4; relative = 0.0 } (fitted "b") 2.663 "b"
              let e = j["data"].["estimated"]
              Expect.equal (e["from"].GetValue<string>()) "trajectories" "from"
              Expect.equal (e["points"].GetValue<float>()) 3030.0 "30 paths x 101 times"
              Expect.equal (e["rows"].GetValue<float>()) 2970.0 "the interior points"
              Expect.equal (e["degenerate"].GetValue<float>()) 729.0 "rows without a Jacobian, as the docs say"
              Expect.equal (e["neighbours"].GetValue<float>()) 16.0 "k"
              Expect.stringContains (j["warnings"].[0].GetValue<string>()) "729 of 2970 rows carry no Jacobian" "warned"
          } ]

[<Tests>]
let malformed =
    let fitLine = 16
    let fitCol = 16 // the data file's name in the fit line

    let check (csv: string) (fragments: string list) =
        withTemp (fun dir ->
            File.WriteAllText(Path.Combine(dir, "traj.csv"), csv)

            match (compile (lorenzFit "traj.csv")).Fit(dataDir = dir) with
            | Ok _ -> failwithf "expected an error for\n%s" csv
            | Error ds ->
                let d = List.head ds
                Expect.equal (d.Line, d.Col) (fitLine, fitCol) (oneLine d)
                for f in fragments do Expect.stringContains d.Message f (oneLine d))

    testList
        "FitTrajectory.Malformed"
        [ test "a trajectory file's errors are located at the file name and name the line and column" {
              check "path,t,x,y,z\n0,0,1,1,20\n0,0.01,1.1,1.2,20\n0,0.01,1.2,1.4,20\n" [ "traj.csv, line 4, column 't'"; "not after t = 0.01 of line 3"; "(path 0)"; "increasing time" ]
              check "t,x,y,z\n0,1,1,20\n0.02,1.1,1.2,20\n0.01,1.2,1.4,20\n" [ "line 4"; "no path column: one path" ]
              check "path,t,x,y,z,dx\n0,0,1,1,20,0\n" [ "traj.csv, line 1: column 'dx' in a trajectory file"; "drop 'dx'" ]
              check "path,t,x,y\n0,0,1,1\n0,0.01,1,1\n0,0.02,1,1\n" [ "no column 'z'"; "whole state" ]
              check "path,t,x,y,z\n0.5,0,1,1,20\n0.5,0.01,1,1,20\n0.5,0.02,1,1,20\n" [ "line 2, column 'path'"; "'0.5' is not a whole number" ]
              check "path,t,x,y,z\n0,0,1,1,20\n0,0.01,1,1,20\n1,0,1,1,20\n1,0.01,1,1,20\n" [ "0 interior points"; "at least two" ]
              check "path,t,x,y,z\n0,0,1,1,20\n0,abc,1,1,20\n0,0.02,1,1,20\n" [ "line 3, column 't': 'abc' is not a number" ]
              check "path,t,x,y,z,w\n0,0,1,1,20,0\n" [ "unknown column 'w'" ]
              // interleaved paths are fine (each in increasing time); the same time in two paths too
              withTemp (fun dir ->
                  let rows =
                      [ for i in 0 .. 5 do
                            for p in 0 .. 1 ->
                                sprintf "%d,%g,%g,%g,%g" p (0.01 * float i) (1.0 + float i + float p) (2.0 * float i) (20.0 + float (i * i)) ]
                  File.WriteAllText(Path.Combine(dir, "traj.csv"), String.Join("\n", "path,t,x,y,z" :: rows) + "\n")

                  match (compile (lorenzFit "traj.csv")).Fit(dataDir = dir) with
                  | Ok r -> Expect.equal ((dict r.Estimated).["interior_points"]) 8.0 "4 interior points per path"
                  | Error ds -> failwithf "%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n"))
          } ]
