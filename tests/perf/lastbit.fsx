// How often the language's functions (core/Simulation/Elementary.cs) differ from the C library's in the
// last bit: the rates docs/language.md quotes ("Functions"). The tests (tests/ElementaryTests.fs) check
// the bound, within one ulp of glibc (two of the exact value for tanh); this script measures how often
// the last bit differs, on N random arguments per function (System.Random, fixed seed), with each
// rate's binomial standard error. Math.* is the C library's on Linux (.NET calls libm).
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi tests/perf/lastbit.fsx [N]        (default 1000000)
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"

open System
open Sde.Core

let n = match fsi.CommandLineArgs with [| _; s |] -> int s | _ -> 1_000_000
let rng = Random 2026

let rate (name: string) (range: string) (draw: unit -> 'a) (ours: 'a -> float) (libm: 'a -> float) =
    let mutable differ = 0
    for _ in 1..n do
        let a = draw ()
        if BitConverter.DoubleToInt64Bits(ours a) <> BitConverter.DoubleToInt64Bits(libm a) then differ <- differ + 1
    let p = float differ / float n
    printfn "%-5s %-34s %8.3f%%  ± %.3f%%" name range (100.0 * p) (100.0 * sqrt (p * (1.0 - p) / float n))

let uniform a b = fun () -> a + (b - a) * rng.NextDouble()
printfn "last-bit differences from the C library on %d arguments each (percent ± standard error)" n
rate "exp" "x uniform on [-50, 50]" (uniform -50.0 50.0) Elementary.Exp Math.Exp
rate "log" "x uniform on (0, 100)" (uniform 0.0 100.0) Elementary.Log Math.Log
rate "sin" "x uniform on [-10, 10]" (uniform -10.0 10.0) Elementary.Sin Math.Sin
rate "cos" "x uniform on [-10, 10]" (uniform -10.0 10.0) Elementary.Cos Math.Cos
rate "tan" "x uniform on [-10, 10]" (uniform -10.0 10.0) Elementary.Tan Math.Tan
rate "tanh" "x uniform on [-3, 3]" (uniform -3.0 3.0) Elementary.Tanh Math.Tanh
rate "pow" "x on (0, 10), y on [-10, 10]" (fun () -> (10.0 * rng.NextDouble(), uniform -10.0 10.0 ())) (fun (x, y) -> Elementary.Pow(x, y)) Math.Pow
