// Regenerates docs/img/scheme_weak_errors.svg and docs/img/scheme_strong_errors.svg: the error of
// each scheme against dt on the models of tests/SchemeTests.fs, and prints the fitted slopes
// (the measured orders quoted in docs/discretisation.md, Schemes).
//
//   dotnet build tests -c Release
//   dotnet fsi docs/scripts/scheme_errors.fsx
//
// Weak: |E[X_T] of the chain − E[X_T] of the SDE|, the chain's moment exact (three-point
// Gauss–Hermite quadrature of the emitted step over each step's normals: the linear models' steps
// are polynomials of degree ≤ 2 in the normals). Strong: the RMS distance at T = 1 between the
// chain and the exact solution (GBM, 2000 paths) or SRA on 8192 steps of the same Brownian path
// (sine drift, 300 paths).
#r "../../tests/bin/Release/net10.0/Sde.Core.dll"
#r "../../tests/bin/Release/net10.0/Sde.Lang.dll"
#r "../../tests/bin/Release/net10.0/OxyPlot.dll"
#r "../../tests/bin/Release/net10.0/FParsec.dll"
#r "../../tests/bin/Release/net10.0/FParsecCS.dll"
#r "../../tests/bin/Release/net10.0/Expecto.dll"
#r "../../tests/bin/Release/net10.0/Sde.Tests.dll"

open System
open System.IO
open Sde.Lang
open Sde.Tests.SchemeTests

let ns = [ 8; 16; 32; 64; 128; 256 ]
let dts = ns |> List.map (fun n -> 1.0 / float n)

let weak name modelText scheme (x0: float[]) (exact: float) =
    let m, _ = modelOf modelText scheme
    let errs = ns |> List.map (fun n -> let mean, _ = chainMoments m x0 1.0 n in abs (mean[0] - exact))
    printfn "weak   %-22s %-15s slope %.2f (dt %g..%g)  errors %s" name scheme (slope (List.skip 1 dts) (List.skip 1 errs)) dts[1] (List.last dts)
        (errs |> List.map (sprintf "%.3g") |> String.concat " ")
    sprintf "%s, %s" name scheme, dts |> List.map log10 |> Array.ofList, errs |> List.map log10 |> Array.ofList, [||]

let lm, _ = linearMoments linear2A linear2B [| 1.0; -0.5 |] 1.0
let weakSeries =
    [ weak "GBM" gbmModel "euler_maruyama" [| 1.0 |] (exp 0.5)
      weak "GBM" gbmModel "milstein" [| 1.0 |] (exp 0.5)
      weak "OU" ouModel "euler_maruyama" [| 1.0 |] (exp -1.5)
      weak "OU" ouModel "sra" [| 1.0 |] (exp -1.5)
      weak "2-D linear, x" linear2Model "euler_maruyama" [| 1.0; -0.5 |] lm[0]
      weak "2-D linear, x" linear2Model "sra" [| 1.0; -0.5 |] lm[0] ]

let strong name modelText scheme (x0: float[]) levels fine (reference: BrownianPath -> float[]) =
    let m, _ = modelOf modelText scheme
    let paths = if fine <= 128 then 2000 else 300
    let errs = strongErrors m (scheme = "sra") 1 x0 1.0 levels fine paths 17 reference |> Array.toList
    let hs = levels |> List.map (fun n -> 1.0 / float n)
    printfn "strong %-22s %-15s slope %.2f  errors %s" name scheme (slope hs errs) (errs |> List.map (sprintf "%.3g") |> String.concat " ")
    sprintf "%s, %s" name scheme, hs |> List.map log10 |> Array.ofList, errs |> List.map log10 |> Array.ofList, [||]

let sraSine, _ = modelOf sineModel "sra"
let sineRef (bp: BrownianPath) = run sraSine [| 0.5 |] (bp.Level 8192 true) 1.0
let strongSeries =
    [ strong "GBM" gbmStrongModel "euler_maruyama" [| 1.0 |] [ 16; 32; 64; 128 ] 128 gbmExact
      strong "GBM" gbmStrongModel "milstein" [| 1.0 |] [ 16; 32; 64; 128 ] 128 gbmExact
      strong "sine drift" sineModel "euler_maruyama" [| 0.5 |] [ 16; 32; 64; 128; 256 ] 8192 sineRef
      strong "sine drift" sineModel "sra" [| 0.5 |] [ 16; 32; 64; 128; 256 ] 8192 sineRef ]

let img = Path.Combine(__SOURCE_DIRECTORY__, "..", "img")
Directory.CreateDirectory img |> ignore
Plot.writeSeriesWith (Path.Combine(img, "scheme_weak_errors.svg")) "Weak error |E[X_T] chain - E[X_T] SDE| against dt, T = 1"
    "exact chain moments (quadrature of the emitted step); slopes: Euler and Milstein 1, SRA 2" false "log10 dt" "log10 weak error" weakSeries
Plot.writeSeriesWith (Path.Combine(img, "scheme_strong_errors.svg")) "Strong error (RMS at T = 1, same Brownian path) against dt"
    "slopes: GBM Euler 1/2, Milstein 1; additive noise (sine drift) Euler 1, SRA 1.5" false "log10 dt" "log10 strong error" strongSeries
printfn "wrote %s" img
