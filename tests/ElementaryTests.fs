/// The language's own exp, log, sin, cos, tan, tanh, expm1 and pow (Sde.Core.Elementary): within one unit in the last place
/// of the C library's (itself within one of the exact value), and the four-lane forms the bits of the scalar ones;
/// the lanes' min and max give Math.Min's and Math.Max's bits.
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

/// The C library's expm1 (the runtime has none), the reference of the language's.
module private Libm =
    [<Runtime.InteropServices.DllImport("libm.so.6", CallingConvention = Runtime.InteropServices.CallingConvention.Cdecl)>]
    extern double expm1(double x)

let private tanhInputs =
    let rng = Random 14
    [| yield! Array.init 40000 (fun _ -> (rng.NextDouble() - 0.5) * 50.0)
       yield! Array.init 20000 (fun _ -> (rng.NextDouble() - 0.5) * 4.0)
       yield! Array.init 4000 (fun k -> Math.ScaleB(rng.NextDouble() - 0.5, -k / 80))
       // the branch points: 2^-28, 1, 22, and expm1's ln 2 / 2, 1.5 ln 2 and 56 ln 2 (at 2|x|)
       yield! [| for c in [ 3.725290298461914e-09; 1.0; 22.0; 0.1732867951; 0.5198603854; 19.408121 ] do
                   for k in -3 .. 3 do
                       let v = BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits c + int64 k)
                       yield v
                       yield -v |]
       yield! [| 0.0; -0.0; 5e-324; -5e-324; 1e-300; Double.MaxValue; -Double.MaxValue; Double.PositiveInfinity; Double.NegativeInfinity; Double.NaN |] |]

let private expm1Inputs =
    let rng = Random 15
    [| yield! Array.init 40000 (fun _ -> -50.0 + rng.NextDouble() * 760.0)
       yield! Array.init 40000 (fun _ -> (rng.NextDouble() - 0.5) * 4.0)
       yield! Array.init 4000 (fun k -> Math.ScaleB(rng.NextDouble() - 0.5, -k / 60))
       // every k from −56 to 1024 near its centre and edges, and the branch points
       yield! [| for k in -57 .. 1024 do
                   let c = float k * Math.Log 2.0
                   yield c
                   yield c + 0.3466
                   yield c - 0.3466 |]
       yield! [| for c in [ 0.3465735912322998; 1.0397205352783203; 38.81622314453125; 5.551115123125783e-17; 0.25; 709.782712893383973096 ] do
                   for k in -2 .. 2 do
                       let v = BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits c + int64 k)
                       yield v
                       yield -v |]
       yield! [| 0.0; -0.0; 5e-324; -5e-324; 710.0; -745.0; Double.MaxValue; -Double.MaxValue; Double.PositiveInfinity; Double.NegativeInfinity; Double.NaN |] |]

let private lanes (f: Vector256<float> -> Vector256<float>) (xs: float[]) =
    let padded = Array.append xs (Array.zeroCreate ((4 - xs.Length % 4) % 4))
    Array.init padded.Length (fun i -> (f (Vector256.Create(padded, i / 4 * 4))).GetElement(i % 4)) |> Array.take xs.Length

/// Exact values through 28-digit decimal arithmetic, rounded once to a double (Double.Parse rounds correctly).
module private Exact =
    /// A double as a decimal: m·2^p divided out (exact to 28 digits for 1e-6 ≤ |x| < 2^40).
    let toDecimal (x: float) =
        let b = BitConverter.DoubleToInt64Bits x
        let e = int ((b >>> 52) &&& 0x7FFL)
        let mutable d = decimal ((b &&& 0xFFFFFFFFFFFFFL) ||| (1L <<< 52))
        let mutable k = 1075 - e
        while k > 0 do
            let s = min k 62
            d <- d / decimal (1L <<< s)
            k <- k - s
        if x < 0.0 then -d else d

    /// e^y − 1: its series below 1/8, (e^(y/2) − 1)(e^(y/2) + 1) above.
    let rec private em1 (y: decimal) =
        if abs y > 0.125m then
            let h = em1 (y / 2m)
            h * (h + 2m)
        else
            let mutable term, sum, n = y, y, 1m
            while term <> 0m && n < 80m do
                n <- n + 1m
                term <- term * y / n
                sum <- sum + term
            sum

    let private halfPi = 1.5707963267948966192313216916m

    /// sin of a decimal: its series after x − nπ/2 (π/2 to 28 digits: for |x| ≤ 10 the error is below 1e-26).
    let sinOf (x: decimal) =
        let n = Math.Round(x / halfPi)
        let y = x - n * halfPi
        let series (first: decimal) k0 =
            let mutable term, sum, k = first, first, k0
            while term <> 0m do
                term <- -term * y * y / decimal ((k + 1) * (k + 2))
                sum <- sum + term
                k <- k + 2
            sum
        match ((int n % 4) + 4) % 4 with
        | 0 -> series y 1
        | 1 -> series 1m 0
        | 2 -> -(series y 1)
        | _ -> -(series 1m 0)

    /// |v − exact| in units of v's last place, as a fraction (a correctly rounded v is within 0.5).
    let ulpError (v: float) (exact: decimal) =
        let ulp = Math.BitIncrement(abs v) - abs v
        float (abs (toDecimal v - exact)) / ulp

    let sin (x: float) = sinOf (toDecimal x)
    let cos (x: float) = sinOf (toDecimal x + halfPi)

    let tanh (x: float) =
        let y = em1 (2m * toDecimal (abs x))
        let r = Double.Parse((y / (y + 2m)).ToString(Globalization.CultureInfo.InvariantCulture), Globalization.CultureInfo.InvariantCulture)
        if x < 0.0 then -r else r

let private checkWithin (tolerance: int64) name (scalar: float -> float) (vector: Vector256<float> -> Vector256<float>) (reference: float -> float) (xs: float[]) =
    let worst = xs |> Array.maxBy (fun x -> ulps (scalar x) (reference x))
    Expect.isLessThanOrEqual (ulps (scalar worst) (reference worst)) tolerance
        (sprintf "%s(%.17g) = %.17g, the reference %.17g: more than %d ulp apart" name worst (scalar worst) (reference worst) tolerance)
    let v = lanes vector xs
    for i in 0 .. xs.Length - 1 do
        if BitConverter.DoubleToInt64Bits v[i] <> BitConverter.DoubleToInt64Bits(scalar xs[i]) then
            failtestf "%s(%.17g): lanes %.17g, one lane %.17g" name xs[i] v[i] (scalar xs[i])

let private check name scalar vector reference xs = checkWithin 1L name scalar vector reference xs

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

        test "sin, cos and tan are within one ulp of the exact value on [-10, 10] (the reduction keeps its tail: taking all three rounds always gave 1.4 ulps)" {
            let rng = Random 16
            let xs = Array.init 20000 (fun _ -> (rng.NextDouble() - 0.5) * 20.0)
            for x in xs do
                let s, c = Exact.sin x, Exact.cos x
                for name, v, e in [ "sin", Elementary.Sin x, s; "cos", Elementary.Cos x, c; "tan", Elementary.Tan x, s / c ] do
                    let err = Exact.ulpError v e
                    if err >= 1.0 then failtestf "%s(%.17g) = %.17g is %.2f ulps from the exact %O" name x v err e
        }

        test "tan: within one ulp of the C library's for |x| up to 1.6e6 (near multiples of pi/2 too, where it is large), and four lanes give the scalar bits" {
            check "tan" Elementary.Tan Elementary.Tan Math.Tan trigInputs
            // where k_tan reflects (|y| >= 0.6744) and where it does not, in both quadrant parities
            let edges = [| for k in -8 .. 8 do
                             for c in [ 0.6743354797363281; Math.PI / 4.0 ] do
                                 for j in -2 .. 2 do
                                     let v = BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits c + int64 j)
                                     yield float k * Math.PI / 2.0 + v
                                     yield float k * Math.PI / 2.0 - v |]
            check "tan" Elementary.Tan Elementary.Tan Math.Tan edges
            Expect.equal (BitConverter.DoubleToInt64Bits(Elementary.Tan -0.0)) (BitConverter.DoubleToInt64Bits -0.0) "tan(-0) = -0"
        }

        test "tanh within 2 ulps of the exact value (as the C library's), expm1 within one ulp of the C library's (every branch of fdlibm's, the saturation, NaN, infinities), and four lanes give the scalar bits" {
            // fdlibm's tanh is within 2 ulps of the exact value, as the C library's (which differs from it by up to 3):
            // against the exact value (decimal arithmetic) from 1e-6 to 22, against the C library's outside
            let exactRange x = abs x >= 1e-6 && abs x < 22.0
            checkWithin 2L "tanh" Elementary.Tanh Elementary.Tanh Exact.tanh (tanhInputs |> Array.filter exactRange)
            check "tanh" Elementary.Tanh Elementary.Tanh Math.Tanh (tanhInputs |> Array.filter (exactRange >> not))
            check "expm1" Elementary.Expm1 Elementary.Expm1 Libm.expm1 expm1Inputs
            Expect.equal (Elementary.Expm1 -40.0) -1.0 "expm1 saturates at -1"
            Expect.equal (BitConverter.DoubleToInt64Bits(Elementary.Tanh -0.0)) (BitConverter.DoubleToInt64Bits -0.0) "tanh(-0) = -0"
            Expect.equal (Elementary.Tanh 30.0) 1.0 "tanh saturates"
        }

        test "pow: within one ulp of the C library's (C99's special values: zeros, infinities, NaN, negative x with integral y, |y| past 2^31 and 2^64, overflow, underflow and subnormal results), and four lanes give the scalar bits" {
            let rng = Random 17
            let inputs =
                [| for i in 1 .. 60000 do
                       let r = rng.NextDouble()
                       if r < 0.4 then yield rng.NextDouble() * 10.0, (rng.NextDouble() - 0.5) * 20.0
                       elif r < 0.6 then yield exp ((rng.NextDouble() - 0.5) * 1400.0), (rng.NextDouble() - 0.5) * 4.0
                       elif r < 0.8 then yield 0.5 + rng.NextDouble() * 1.5, (rng.NextDouble() - 0.5) * 2000.0
                       else yield -(rng.NextDouble() * 5.0), float (rng.Next(-30, 31))
                   let xs = [| 0.0; -0.0; 1.0; -1.0; 2.0; -2.0; 0.5; -0.5; 3.0; -3.0; infinity; -infinity; nan; 5e-324; -5e-324
                               2.2250738585072014e-308; 1e-310; Double.MaxValue; -Double.MaxValue; 1.0000000000000002
                               0.9999999999999999; 10.0; 1e-300; 1e300; -1e300 |]
                   let ys = [| 0.0; -0.0; 1.0; -1.0; 2.0; -2.0; 0.5; -0.5; 3.0; -3.0; infinity; -infinity; nan; 5e-324; 1e10; -1e10
                               2.0 ** 31.0 + 1.0; 2.0 ** 63.0; 2.0 ** 64.0 + 4096.0; -(2.0 ** 64.0) * 3.0; 1e300; -1e300; 1023.9999
                               1024.0; -1074.0; -1075.0; -1076.0; 1.5; -1.5; 0.3; 7.0; -7.0; 53.0; 1e-20 |]
                   for x in xs do
                       for y in ys do
                           yield x, y
                   // results next to the largest double and in the subnormals
                   for i in 1 .. 20000 do
                       let x = 1.5 + rng.NextDouble() * 1.5
                       let e = [| 1024.0; -1074.0; -1022.0; -1075.0; 1023.0 |][rng.Next 5]
                       yield x, e / Math.Log2 x * (1.0 + (rng.NextDouble() - 0.5) * 2e-3) |]
            let bits (x: float) = BitConverter.DoubleToInt64Bits x
            for (x, y) in inputs do
                let a, b = Elementary.Pow(x, y), Math.Pow(x, y)
                // the same zero (a sign too), NaN for NaN, else one ulp
                let same = bits a = bits b || (Double.IsNaN a && Double.IsNaN b)
                if not same && (a = 0.0 || b = 0.0 || ulps a b > 1L) then
                    failtestf "pow(%.17g, %.17g) = %.17g, the C library's %.17g" x y a b
            for i in 0 .. 4 .. inputs.Length - 4 do
                let vx = Vector256.Create(fst inputs[i], fst inputs[i + 1], fst inputs[i + 2], fst inputs[i + 3])
                let vy = Vector256.Create(snd inputs[i], snd inputs[i + 1], snd inputs[i + 2], snd inputs[i + 3])
                let r = Elementary.Pow(vx, vy)
                for j in 0 .. 3 do
                    let x, y = inputs[i + j]
                    if bits (r.GetElement j) <> bits (Elementary.Pow(x, y)) then
                        failtestf "pow(%.17g, %.17g): lanes %.17g, one lane %.17g" x y (r.GetElement j) (Elementary.Pow(x, y))
        }

        test "the lanes' min and max give Math.Min's and Math.Max's bits (NaN in either place, -0 against +0)" {
            let nan2 = BitConverter.Int64BitsToDouble(0xfff8000000000002UL |> int64)
            let vals = [| 0.0; -0.0; 1.0; -1.0; 2.5; Double.NaN; nan2; Double.PositiveInfinity; Double.NegativeInfinity; 5e-324; -5e-324 |]
            let pairs = [| for a in vals do for b in vals do yield a, b |]
            let bits (x: float) = BitConverter.DoubleToInt64Bits x
            for (f, v, name) in [ (Math.Min: float * float -> float), LaneMath.Min, "min"; Math.Max, LaneMath.Max, "max" ] do
                for i in 0 .. 4 .. pairs.Length - 1 do
                    let pick j = pairs[min (i + j) (pairs.Length - 1)]
                    let va = Vector256.Create(fst (pick 0), fst (pick 1), fst (pick 2), fst (pick 3))
                    let vb = Vector256.Create(snd (pick 0), snd (pick 1), snd (pick 2), snd (pick 3))
                    let r = v (va, vb)
                    for j in 0 .. 3 do
                        let a, b = pick j
                        if bits (r.GetElement j) <> bits (f (a, b)) then
                            failtestf "%s(%x, %x): lanes %x, Math %x" name (bits a) (bits b) (bits (r.GetElement j)) (bits (f (a, b)))
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
