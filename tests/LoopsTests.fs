/// Vector equations compiled to loops over their index (issue 10: discretised SPDEs with 10^5–10^6
/// states). The claim the loops rest on: a loop template at index i is exactly the tree the unrolled
/// lowering builds for component Target + i, so the emitted code computes the same bits. Checked
/// three ways against the unrolled lowering of the same model: the trees (every component), the
/// emitted methods on random inputs (bit for bit), and whole runs through the engine (bit for bit).
module Sde.Tests.LoopsTests

// FS0009: the method tests pin arrays and hand the emitted code raw pointers, as the engine does
#nowarn "9"

open System
open System.Diagnostics
open Expecto
open Sde
open Sde.Core
open Sde.Lang
open Sde.Lang.Ir

let private fileWith (paths: int) (body: string) (query: string) =
    sprintf "model M {\n%s\n}\nsimulate { paths = %d; dt = 0.01; T = 0.05; seed = 7 }\nquery {\n  %s\n}\n" body paths query

let private file = fileWith 64

let private checkedModel (src: string) =
    match Frontend.compileText "loops.sde" src with
    | Ok cf -> cf.Model
    | Error ds -> failtestf "%A" ds

let private lorenz96 n =
    sprintf "  const N = %d\n  param F = 8\n  param sigma = 0.5\n  state x[N] periodic\n  brownian W[N]\n  init x[i] ~ normal(F, 1)\n  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]" n

/// A discretised stochastic heat equation on a ring (κ/h² = k).
let private heat n =
    sprintf "  const N = %d\n  param k = 20\n  param s = 0.3\n  state u[N] periodic\n  brownian W[N]\n  init u[i] ~ uniform(-1, 1)\n  d u[i] = k * (u[i+1] - 2 * u[i] + u[i-1]) dt + s dW[i]" n

/// A dense mean-field coupling: every equation reads every state through the average.
let private meanField n =
    sprintf "  const N = %d\n  param s = 0.5\n  state x[N]\n  brownian W[N]\n  init x[i] ~ normal(0, 1)\n  d x[i] = (sum(j, x[j]) / N - x[i]) dt + s dW[i]" n

/// Parts of the template that coincide with constant references at some i: x[i]·x[3] (a power at
/// i = 3), dW[0] next to dW[i] (one diffusion entry at i = 0), an `if` whose branches meet at i = 5.
let private colliding n =
    sprintf "  const N = %d\n  state x[N] periodic\n  brownian W[N]\n  d x[i] = (-x[i] * x[3] + x[i] * x[i] + (if t < 1 then x[i] else x[5])) dt + (0.1 + x[0]) dW[i] + 0.2 dW[0]" n

/// Two coupled rings, a noise lane shifted by N, a deterministic vector init, a state without init.
let private coupled n =
    sprintf "  const N = %d\n  param a = 0.7\n  state x[N] periodic\n  state y[N] periodic\n  state z[N]\n  brownian W[2*N]\n  init x[i] = a\n  d x[i] = (y[i+1] - x[i] * a) dt + dW[i]\n  d y[i] = (x[i-1] * y[i] - sin(y[i])) dt + 0.3 * exp(-x[i]) dW[i + N]\n  d z[i] = -z[i] dt" n

/// (name, model body, a query)
let private models n =
    [ "Lorenz-96", lorenz96 n, "mean(x[0])"
      "stochastic heat", heat n, "mean(u[0])"
      "mean field", meanField n, "mean(x[0])"
      "colliding references", colliding n, "mean(x[0])"
      "coupled rings", coupled n, "mean(x[0])" ]

/// The loops of `Loops.lowerModel` against the unrolled lowering, component by component.
let private sameTrees (m: Checked.CheckedModel) =
    let looped = Loops.lowerModel 1 m
    let plain = Lower.lowerModel m
    let rows = Lower.loopedRows looped
    let inits = Lower.loopedInits looped
    let gwL, gwP = Lower.diffusionApplied looped, Lower.diffusionApplied plain
    let stepL, stepP = Lower.stepExpressions looped, Lower.stepExpressions plain
    let initL, initP = Lower.initExpressions looped, Lower.initExpressions plain
    Expect.equal looped.Init plain.Init "every component's init law"

    for k in 0 .. m.Dim - 1 do
        if not rows[k] then
            Expect.equal looped.Drift[k] plain.Drift[k] (sprintf "unrolled drift %d" k)
            Expect.equal gwL[k] gwP[k] (sprintf "unrolled diffusion %d" k)
            Expect.equal stepL[k] stepP[k] (sprintf "unrolled step %d" k)

        if not inits[k] then
            Expect.equal initL[k] initP[k] (sprintf "unrolled init %d" k)

    for l in looped.Loops do
        let step = Lower.eulerStep (stateAt l.Target) l.Drift l.Gw

        for lo, hi in l.Ranges do
            for i in lo .. hi - 1 do
                let k = l.Target + i
                Expect.equal (atIndex i l.Drift) plain.Drift[k] (sprintf "drift of %s" plain.ComponentNames[k])
                Expect.equal (atIndex i l.Gw) gwP[k] (sprintf "diffusion of %s" plain.ComponentNames[k])
                Expect.equal (atIndex i step) stepP[k] (sprintf "step of %s" plain.ComponentNames[k])

    for l in looped.InitLoops do
        for lo, hi in l.Ranges do
            for i in lo .. hi - 1 do
                Expect.equal (atIndex i l.Value) initP[l.Target + i] (sprintf "init of %s" plain.ComponentNames[l.Target + i])

    looped

let private vec (a: float[]) (f: PtrVec -> 'r) : 'r =
    let h = Runtime.InteropServices.GCHandle.Alloc(a, Runtime.InteropServices.GCHandleType.Pinned)

    try
        f (PtrVec(NativeInterop.NativePtr.ofNativeInt<float> (h.AddrOfPinnedObject())))
    finally
        h.Free()

let private bits (a: float[]) = Array.map BitConverter.DoubleToInt64Bits a

/// The emitted Init, Step, Drift and Diffuse of the looped and the unrolled model, bit for bit on
/// random inputs.
let private sameMethods (m: Checked.CheckedModel) (minSize: int) =
    let looped = Loops.lowerModel minSize m
    Expect.isNonEmpty looped.Loops "the model has loops"
    let plain = Lower.lowerModel m
    let compiled ir = Compile.compileWith false ir [||] [||]
    let values = m.Params |> List.map (fun p -> p.Default) |> List.toArray
    let a = (compiled looped).Instance values :?> ISdeModel
    let b = (compiled plain).Instance values :?> ISdeModel
    let rng = Random(11)
    let d, nd = m.Dim, m.NoiseDim

    for _ in 1..5 do
        let x = Array.init d (fun _ -> rng.NextDouble() * 4.0 - 2.0)
        let w = Array.init (max nd 1) (fun _ -> rng.NextDouble() * 2.0 - 1.0)
        let zn = Array.init d (fun _ -> rng.NextDouble() * 2.0 - 1.0)
        let zu = Array.init d (fun _ -> rng.NextDouble())
        let t = rng.NextDouble() * 2.0

        let run (model: ISdeModel) =
            let y, f, gw, x0 = Array.zeroCreate d, Array.zeroCreate d, Array.zeroCreate d, Array.zeroCreate d
            vec x (fun xv -> vec y (fun yv -> vec w (fun wv -> model.Step(xv, yv, wv, t, 0.01, 0.1))))
            vec x (fun xv -> vec f (fun fv -> model.Drift(xv, t, fv)))
            vec x (fun xv -> vec w (fun wv -> vec gw (fun gv -> model.Diffuse(xv, t, wv, gv))))
            vec x0 (fun xv -> vec zn (fun nv -> vec zu (fun uv -> model.Init(xv, nv, uv))))
            y, f, gw, x0

        let (y1, f1, g1, i1), (y2, f2, g2, i2) = run a, run b
        Expect.equal (bits y1) (bits y2) "Step"
        Expect.equal (bits f1) (bits f2) "Drift"
        Expect.equal (bits g1) (bits g2) "Diffuse"
        Expect.equal (bits i1) (bits i2) "Init"

/// An observable with its loop sums written out term by term (`sumAll` of the template at each index).
let rec private expand (e: Sym) : Sym =
    match e.Op, e.Args with
    | SumLoop n, [ t ] -> sumAll [ for j in 0 .. n - 1 -> atIndex j t ]
    | _, [] -> e
    | _, args -> withArgs e (List.map expand args)

let rec private loopSums (e: Sym) : int =
    match e.Op with
    | SumLoop _ -> 1
    | _ -> List.sumBy loopSums e.Args

let private compile src =
    match SdeCompiler.Compile(src, "loops.sde") with
    | Ok p -> p
    | Error ds -> failtestf "%s" (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

/// A run of the program as compiled (with loops) and of the same program with its model unrolled:
/// every number bit for bit.
let private sameRuns (src: string) =
    let p = compile src
    Expect.isNonEmpty p.Program.Compiled.Ir.Loops "the program runs loops"
    let c = p.Program.Compiled
    let m = p.Program.File.Model

    // the observables' loop sums, written out, are the unrolled lowering of the queries
    for q in p.Program.File.Queries do
        match q.Query with
        | Checked.QPlain (Checked.TMean e, _)
        | Checked.QPlain (Checked.TDensity (e, _, _, _), _) ->
            Expect.equal (expand (Loops.observable Loops.defaultMinLoopSize m e)) (Lower.observable m e) q.Text
        | _ -> ()

    let unrolled = { p.Program with Compiled = Compile.compileWith false (Lower.lowerModel m) (Array.map expand c.Observables) [||] }
    Expect.isEmpty unrolled.Compiled.Ir.Loops "the twin is unrolled"
    let r1 = Driver.run p.Program Driver.defaultOptions
    let r2 = Driver.run unrolled Driver.defaultOptions

    for s1, s2 in List.zip r1.Sets r2.Sets do
        for q1, q2 in List.zip s1.Results s2.Results do
            Expect.equal (BitConverter.DoubleToInt64Bits q1.Value) (BitConverter.DoubleToInt64Bits q2.Value) (sprintf "%s value" q1.Query)
            Expect.equal (BitConverter.DoubleToInt64Bits q1.StdErr) (BitConverter.DoubleToInt64Bits q2.StdErr) (sprintf "%s stderr" q1.Query)

            if not (isNull q1.Values) then
                Expect.equal (bits q1.Values) (bits q2.Values) (sprintf "%s values" q1.Query)
                Expect.equal (bits q1.StdErrs) (bits q2.StdErrs) (sprintf "%s standard errors" q1.Query)

[<Tests>]
let tests =
    testList "Loops" [
        testList "a loop template at i is the unrolled tree of component Target + i" [
            for name, body, query in models 24 ->
                test name {
                    let ir = sameTrees (checkedModel (file body query))
                    Expect.isNonEmpty ir.Loops "loops"
                }
        ]
        test "the peeled components: the wrapped ends of a ring, the indices where references collide" {
            // Lorenz-96 reads x[i-2] .. x[i+1]: i = 0, 1 and N-1 wrap
            let l96 = Loops.lowerModel 1 (checkedModel (file (lorenz96 50) "mean(x[0])"))
            Expect.equal (l96.Loops |> List.map (fun l -> l.Ranges)) [ [ 2, 49 ] ] "Lorenz-96"
            Expect.equal (l96.InitLoops |> List.map (fun l -> l.Ranges)) [ [ 0, 50 ] ] "its init"
            // x[i]·x[3] is x[3]^2 at i = 3, dW[i] and dW[0] one entry at i = 0, the branches x[i] and x[5] equal at i = 5
            let c = Loops.lowerModel 1 (checkedModel (file (colliding 30) "mean(x[0])"))
            Expect.equal (c.Loops |> List.map (fun l -> l.Ranges)) [ [ 1, 3; 4, 5; 6, 30 ] ] "colliding"
            Expect.equal (Lower.lowerModel (checkedModel (file (colliding 30) "mean(x[0])"))).Drift[3] c.Drift[3] "peeled row 3 is the unrolled one"
            Expect.stringContains (show c.Drift[3]) "x3^2" "with its power"
        }
        test "an equation that uses its index as a number, or a small one, stays unrolled" {
            let m = checkedModel (file "  const N = 3000\n  state x[N]\n  brownian W[N]\n  d x[i] = (0.001 * i - x[i]) dt + dW[i]" "mean(x[0])")
            Expect.isEmpty (Loops.lowerModel 1 m).Loops "index as a number"
            Expect.isEmpty (Loops.lowerModel Loops.defaultMinLoopSize (checkedModel (file (lorenz96 100) "mean(x[0])"))).Loops "below the size"
        }
        testList "emitted loops compute the unrolled code's bits" [
            yield test "Lorenz-96, N = 2048" { sameMethods (checkedModel (file (lorenz96 2048) "mean(x[0])")) Loops.defaultMinLoopSize }
            yield test "stochastic heat equation, N = 2048" { sameMethods (checkedModel (file (heat 2048) "mean(u[0])")) Loops.defaultMinLoopSize }
            for name, body, query in models 40 ->
                test (name + ", N = 40, loops from 1") { sameMethods (checkedModel (file body query)) 1 }
        ]
        testList "runs with loops equal the unrolled runs bit for bit" [
            test "Lorenz-96, N = 2500" {
                sameRuns (file (lorenz96 2500) "mean(x[0])\n  mean(avg(i, x[i]^2))\n  density(x[7]) on [-10, 15] bins 20\n  mean(x[1]) over [0.02, 0.05]")
            }
            test "Lorenz-96, N = 2500, observables with loop sums and with sums the loops leave alone" {
                let qs =
                    [ "mean(avg(i, x[i]^2))"              // a loop sum
                      "mean(sqrt(avg(i, -x[i] * F) + 100))" // a loop sum inside, a negated term
                      "mean(avg(i, x[i] * x[i+1]))"       // wraps at the end: unrolled
                      "mean(sum(i, x[i] * x[3]))"         // x[3]^2 at i = 3: unrolled
                      "mean(avg(i, x[i] + 1))"            // the unrolled sum is flat: unrolled
                      "density(avg(i, exp(-x[i]^2))) on [0, 1] bins 10" ]

                let p = compile (file (lorenz96 2500) (String.concat "\n  " qs))
                Expect.equal (p.Program.Compiled.Observables |> Array.map loopSums) [| 1; 1; 0; 0; 0; 1 |] "which became loop sums"
                sameRuns (file (lorenz96 2500) (String.concat "\n  " qs))
            }
            test "stochastic heat equation, N = 2500" {
                sameRuns (file (heat 2500) "mean(u[0])\n  mean(avg(i, u[i]^2))\n  density(u[2499]) on [-2, 2] bins 20")
            }
            test "mean field, N = 2500" { sameRuns (file (meanField 2500) "mean(x[0])\n  mean(avg(i, x[i]))") }
        ]
        test "examples/heat_spde.sde runs its equation as one loop, the two wrapped ends unrolled" {
            let rec up (d: IO.DirectoryInfo) = if IO.File.Exists(IO.Path.Combine(d.FullName, "Dsl.sln")) then d.FullName else up d.Parent
            let path = IO.Path.Combine(up (IO.DirectoryInfo AppContext.BaseDirectory), "examples", "heat_spde.sde")
            let p = compile (IO.File.ReadAllText path)
            Expect.equal (p.Program.Compiled.Ir.Loops |> List.map (fun l -> l.Ranges)) [ [ 1, 2047 ] ] "u[i-1] and u[i+1] wrap at i = 0 and N-1"
            Expect.equal (p.Program.Compiled.Ir.InitLoops |> List.map (fun l -> l.Ranges)) [ [ 0, 2048 ] ] "the init"
        }
        test "a file with a derivative query compiles unrolled, with its derivatives" {
            let p = compile (file (lorenz96 2500) "d mean(x[0]) / d F")
            Expect.isEmpty p.Program.Compiled.Ir.Loops "no loops"
            Expect.isNonEmpty p.Program.Compiled.Tangent.J "the Jacobian"
        }
        test "a derivative query past 100,000 states is a located error naming the limit" {
            match SdeCompiler.Compile(file (lorenz96 100_001) "mean(x[0])\n  d mean(x[0]) / d F", "big.sde") with
            | Ok _ -> failtest "expected an error"
            | Error ds ->
                let d = List.head ds
                Expect.equal (d.Line, d.Col) (13, 3) d.Rendered
                Expect.stringContains d.Message "at most 100000 components" "names the limit"
        }
        test "10^6 states: the ring compiles in seconds and runs; the mean-field coupling of 3,000 states too" {
            let sw = Stopwatch.StartNew()
            let p = compile (fileWith 2 (lorenz96 1_000_000) "mean(x[0])\n  mean(avg(i, x[i]))")
            printfn "loops: Lorenz-96 at 10^6 states compiled in %.1f s" sw.Elapsed.TotalSeconds
            // generous: a guard against unrolling coming back (about 100 s and 14 GB)
            Expect.isLessThan sw.Elapsed.TotalSeconds 60.0 "compile time"
            let r = p.Run()
            let q = r.Sets.Head.Results
            Expect.equal q.Head.Count 2L "ran both paths"
            // x ~ normal(8, 1) at 0, five steps of size 0.01 later: still near 8
            Expect.isTrue (abs (q[1].Value - 8.0) < 0.5) (sprintf "mean of the average %g" q[1].Value)
            let sw = Stopwatch.StartNew()
            compile (file (meanField 3000) "mean(x[0])") |> ignore
            // was over 120 s: the average lowered and differentiated in every equation
            Expect.isLessThan sw.Elapsed.TotalSeconds 30.0 "mean field compile time"
        }
    ]
