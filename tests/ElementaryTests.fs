/// The language's own exp, log, sin and cos (Sde.Core.Elementary): within one unit in the last place of the C
/// library's (itself within one of the exact value), and the four-lane forms the bits of the scalar ones.
module Sde.Tests.ElementaryTests

open System
open System.Runtime.Intrinsics
open Expecto
open Sde.Core

/// Units in the last place between two finite doubles of the same sign (0 when both are the same NaN or infinity).
let private ulps (a: float) (b: float) =
    if a = b || (Double.IsNaN a && Double.IsNaN b) then 0L
    elif Double.IsNaN a || Double.IsNaN b || Double.IsInfinity a || Double.IsInfinity b || sign a * sign b < 0 then Int64.MaxValue
    else abs (BitConverter.DoubleToInt64Bits a - BitConverter.DoubleToInt64Bits b)

let private expInputs =
    let rng = Random 11
    [| yield! Array.init 40000 (fun _ -> -745.2 + rng.NextDouble() * (709.9 + 745.2))
       yield! Array.init 40000 (fun _ -> rng.NextDouble() * 4.0 - 2.0)
       yield! Array.init 2000 (fun k -> Math.ScaleB(rng.NextDouble() - 0.5, -k / 40))
       // subnormal results and the edges
       yield! Array.init 4000 (fun _ -> -745.2 + rng.NextDouble() * 38.0)
       yield! [| 0.0; -0.0; 1.0; -1.0; 0.5 * Math.Log 2.0; Math.Log 2.0; 709.78; 709.782712893383973096; 709.7827128933841
                 -745.13; -745.133219101941108420; -745.1332191019412; -708.4; 1e-300; -1e-300; 5e-324
                 Double.Epsilon; Double.MaxValue; -Double.MaxValue; Double.PositiveInfinity; Double.NegativeInfinity; Double.NaN |] |]

let private logInputs =
    let rng = Random 12
    [| yield! Array.init 40000 (fun _ -> Math.ScaleB(1.0 + rng.NextDouble(), rng.Next(-1074, 1024)))
       yield! Array.init 40000 (fun _ -> 0.5 + rng.NextDouble())
       yield! Array.init 2000 (fun k -> 1.0 + float (k - 1000) * 1.1e-16)
       yield! [| 1.0; 2.0; 0.5; Math.E; Math.Sqrt 0.5; Math.Sqrt 2.0; Double.Epsilon; 2.2250738585072014e-308; 2.225073858507201e-308
                 Double.MaxValue; 0.0; -0.0; -1.0; -Double.Epsilon; Double.PositiveInfinity; Double.NegativeInfinity; Double.NaN |] |]

let private trigInputs =
    let rng = Random 13
    [| yield! Array.init 40000 (fun _ -> (rng.NextDouble() - 0.5) * 20.0)
       yield! Array.init 20000 (fun _ -> (rng.NextDouble() - 0.5) * 3.3e6)
       yield! Array.init 2000 (fun k -> Math.ScaleB(rng.NextDouble() - 0.5, -k / 40))
       // next to multiples of π/2, where the reduction cancels most bits
       yield! Array.init 4000 (fun k -> let m = float (k - 2000) * 523.0 in Math.BitIncrement(m * Math.PI / 2.0))
       yield! Array.init 2000 (fun k -> float (k + 1) * Math.PI / 2.0)
       yield! [| 0.0; -0.0; Math.PI; -Math.PI; Math.PI / 4.0; 1e-300; 5e-324; 1647099.0; 1647100.0; 1e7; -1e22
                 Double.MaxValue; Double.PositiveInfinity; Double.NegativeInfinity; Double.NaN |] |]

let private lanes (f: Vector256<float> -> Vector256<float>) (xs: float[]) =
    let padded = Array.append xs (Array.zeroCreate ((4 - xs.Length % 4) % 4))
    Array.init padded.Length (fun i -> (f (Vector256.Create(padded, i / 4 * 4))).GetElement(i % 4)) |> Array.take xs.Length

let private check name (scalar: float -> float) (vector: Vector256<float> -> Vector256<float>) (reference: float -> float) (xs: float[]) =
    let worst = xs |> Array.maxBy (fun x -> ulps (scalar x) (reference x))
    Expect.isLessThanOrEqual (ulps (scalar worst) (reference worst)) 1L
        (sprintf "%s(%.17g) = %.17g, the C library's %.17g: more than one ulp apart" name worst (scalar worst) (reference worst))
    let v = lanes vector xs
    for i in 0 .. xs.Length - 1 do
        if BitConverter.DoubleToInt64Bits v[i] <> BitConverter.DoubleToInt64Bits(scalar xs[i]) then
            failtestf "%s(%.17g): lanes %.17g, one lane %.17g" name xs[i] v[i] (scalar xs[i])

[<Tests>]
let tests =
    testList "Elementary" [
        test "exp: within one ulp of the C library's on [-745.2, 709.9] (subnormal results, overflow, NaN, infinities), and four lanes give the scalar bits" {
            check "exp" Elementary.Exp Elementary.Exp Math.Exp expInputs
        }

        test "log: within one ulp of the C library's from the smallest subnormal to the largest double (0, negatives, NaN, infinities), and four lanes give the scalar bits" {
            check "log" Elementary.Log Elementary.Log Math.Log logInputs
        }

        test "sin and cos: within one ulp of the C library's for |x| up to 1.6e6 (near multiples of pi/2 too), the library's beyond, and four lanes give the scalar bits" {
            check "sin" Elementary.Sin Elementary.Sin Math.Sin trigInputs
            check "cos" Elementary.Cos Elementary.Cos Math.Cos trigInputs
        }

        test "the special values as IEEE 754 and the C library give them" {
            Expect.equal (Elementary.Exp Double.PositiveInfinity) Double.PositiveInfinity "exp(+inf)"
            Expect.equal (Elementary.Exp Double.NegativeInfinity) 0.0 "exp(-inf)"
            Expect.isTrue (Double.IsNaN(Elementary.Exp Double.NaN)) "exp(NaN)"
            Expect.equal (Elementary.Exp 710.0) Double.PositiveInfinity "exp(710) overflows"
            Expect.equal (Elementary.Exp -746.0) 0.0 "exp(-746) underflows"
            Expect.equal (Elementary.Exp 0.0) 1.0 "exp(0)"
            Expect.equal (Elementary.Log 1.0) 0.0 "log(1)"
            Expect.equal (Elementary.Log 0.0) Double.NegativeInfinity "log(0)"
            Expect.equal (Elementary.Log -0.0) Double.NegativeInfinity "log(-0)"
            Expect.isTrue (Double.IsNaN(Elementary.Log -1.0)) "log(-1)"
            Expect.equal (Elementary.Log Double.PositiveInfinity) Double.PositiveInfinity "log(+inf)"
            Expect.equal (Elementary.Log Double.Epsilon) (Math.Log Double.Epsilon) "log of the smallest subnormal"
        }
    ]
