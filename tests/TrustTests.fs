/// Inputs that used to give a silently wrong answer (issue 10's "wrong answers"): each is now
/// right or a located error.
module Sde.Tests.TrustTests

open Expecto
open Sde
open Sde.Lang

let private compile src = SdeCompiler.Compile(src, "trust.sde")

let private firstError src =
    match compile src with
    | Ok _ -> failtest "expected a located error"
    | Error ds -> List.head ds

let private ring queries =
    sprintf "model R {\n  const N = 10\n  state x[N] periodic\n  init x[i] = i\n  d x[i] = 0 dt\n}\nsimulate { paths = 2; dt = 0.1; T = 0.1; seed = 1 }\nquery {\n%s\n}\n" queries

let private oneState inits eqs query =
    sprintf "model B {\n  param F = 1\n  param s = 0.3 in (0, inf)\n  state x\n  brownian W\n%s\n%s\n}\nsimulate { paths = 100; dt = 0.1; T = 1; seed = 1 }\nquery {\n%s\n}\n" inits eqs query

[<Tests>]
let tests =
    testList "trust" [
        test "periodic index arithmetic past 32 bits wraps exactly (64-bit, as the checker computes)" {
            match compile (ring "  mean(x[65536 * 65536 + 6])\n  mean(x[-65536 * 65536 - 3])\n  mean(x[2147483647])") with
            | Error ds -> failtestf "%A" ds
            | Ok p ->
                let r = p.Run().Sets.Head.Results
                // the expected components, from integer arithmetic outside the compiler
                let expected = [ (65536L * 65536L + 6L) % 10L; ((-65536L * 65536L - 3L) % 10L + 10L) % 10L; 2147483647L % 10L ]
                Expect.equal (r |> List.map (fun q -> int64 q.Value)) expected "x[i] = i on a ring of 10"
        }
        test "an index literal past 32 bits is a located error, not a wrapped index" {
            let d = firstError (ring "  mean(x[4294967296])")
            Expect.equal (d.Line, d.Col) (9, 10) d.Message
            Expect.stringContains d.Message "out of range" "message"
        }
        test "a normal init with sd <= 0 is a located error" {
            let d = firstError (oneState "  init x ~ normal(F, F - 1)" "  d x = -x dt + dW" "  mean(x)")
            Expect.equal (d.Line, d.Col) (6, 3) d.Message
            Expect.stringContains d.Message "standard deviation 0" "message"
            let d = firstError (oneState "  init x ~ normal(F, -1)" "  d x = -x dt + dW" "  mean(x)")
            Expect.stringContains d.Message "standard deviation -1" "message"
        }
        test "a uniform init with lo >= hi is a located error" {
            let d = firstError (oneState "  init x ~ uniform(1, 0)" "  d x = -x dt + dW" "  mean(x)")
            Expect.equal (d.Line, d.Col) (6, 3) d.Message
            Expect.stringContains d.Message "lo < hi" "message"
        }
        test "each compiled model lives in a collectible assembly of its own (an embedding tool can compile forever)" {
            let src = oneState "  init x = 1" "  d x = -x dt + dW" "  mean(x)"
            match compile src, compile src with
            | Ok a, Ok b ->
                Expect.isTrue a.ModelType.Assembly.IsCollectible "collectible"
                Expect.notEqual a.ModelType.Assembly b.ModelType.Assembly "one assembly per compile"
                // and a collectible model still runs
                Expect.equal (a.Run().Sets.Head.Results.Head.Count) 100L "ran"
            | _ -> failtest "compile"
        }
        test "a lone CR ends a line for the error renderer as for the parser (the caret's line)" {
            let src = "model M {\r  state x\r  brownian W\r  d x = -x dt + dW\r}\rquery { mean(y) }\r"
            match compile src with
            | Ok _ -> failtest "expected an error"
            | Error ds ->
                let d = List.head ds
                Expect.equal (d.Line, d.Col) (6, 14) d.Message
                Expect.stringContains d.Rendered "\nquery { mean(y) }\n             ^" d.Rendered
        }
        test "a refused simulate block does not make the queries' windows look wrong too" {
            let src = "model M {\n  state x\n  brownian W\n  d x = -x dt + dW\n}\nsimulate { paths = 0; dt = 0.01; T = 2 }\nquery { mean(x) over [1, 2] }\n"
            match compile src with
            | Ok _ -> failtest "expected an error"
            | Error ds -> Expect.equal (ds |> List.map (fun d -> d.Line)) [ 6 ] (sprintf "only the settings' error: %A" (ds |> List.map (fun d -> d.Message)))
        }
        test "a stationary window longer than T, or a density range whose width overflows, is a located error (exit 3 before)" {
            let d = firstError (oneState "  init x ~ normal(0, 1)" "  d x = (F - x) dt + dW" "  d mean(x) / d F stationary window 1e300")
            Expect.equal (d.Line, d.Col) (11, 3) d.Message
            Expect.stringContains d.Message "at most T" "message"
            let d = firstError (oneState "  init x = 1" "  d x = -x dt + dW" "  density(x) on [-1e308, 1e308] bins 10")
            Expect.equal (d.Line, d.Col) (11, 18) d.Message
            Expect.stringContains d.Message "too wide" "message"
        }
        test "a null source is a diagnostic, not an exception (embedding)" {
            match SdeCompiler.Compile(null, "x.sde") with
            | Ok _ -> failtest "compiled null"
            | Error ds -> Expect.stringContains (List.head ds).Message "null" "message"
        }
        test "the sparse LU's symbolic phase on adjacency sets equals the dense elimination, and scales past d = 46,000" {
            // the dense reference: the former d×d table
            let dense (d: int) (rows: int[]) (cols: int[]) =
                let p = Array2D.zeroCreate<bool> d d
                for i in 0 .. d - 1 do p[i, i] <- true
                for e in 0 .. rows.Length - 1 do
                    p[rows[e], cols[e]] <- true
                    p[cols[e], rows[e]] <- true
                for k in 0 .. d - 1 do
                    let nb = [ for r in k + 1 .. d - 1 do if p[r, k] then r ]
                    for r in nb do
                        for c in nb do p[r, c] <- true
                p
            let rng = System.Random 5
            for trial in 1 .. 40 do
                let d = 2 + rng.Next 25
                let m = rng.Next(3 * d)
                let rows = Array.init m (fun _ -> rng.Next d)
                let cols = Array.init m (fun _ -> rng.Next d)
                let plan = Sde.Core.SparseLuPlan(d, rows, cols)
                let p = dense d rows cols
                let mutable slot = 0
                for i in 0 .. d - 1 do
                    Expect.sequenceEqual plan.Lower[i] [| for r in i + 1 .. d - 1 do if p[r, i] then r |] (sprintf "trial %d: L column %d" trial i)
                    Expect.sequenceEqual plan.Upper[i] [| for c in i + 1 .. d - 1 do if p[i, c] then c |] (sprintf "trial %d: U row %d" trial i)
                    for j in 0 .. d - 1 do
                        Expect.equal (plan.Contains(i, j)) p[i, j] (sprintf "trial %d: (%d, %d) in the pattern" trial i j)
                        if p[i, j] then
                            Expect.equal (plan.Slot(i, j)) slot "row-major slots"
                            slot <- slot + 1
                Expect.equal plan.Slots slot "slot count"
            // a ring of 100,000 (Lorenz-96's neighbours): 10^10 pairs, built without a d×d table
            let d = 100000
            let rows = [| for i in 0 .. d - 1 do yield i; yield i; yield i |]
            let cols = [| for i in 0 .. d - 1 do yield (i + 1) % d; yield (i + d - 1) % d; yield (i + d - 2) % d |]
            let plan = Sde.Core.SparseLuPlan(d, rows, cols)
            Expect.isGreaterThan plan.Slots (3 * d) "filled pattern of the ring"
        }
        test "a finite-difference twin outside its parameter's domain is a located error" {
            let d = firstError (oneState "  init x = 1" "  d x = -x dt + sqrt(s) dW" "  d mean(x) / d s with finite_difference(h = 0.5)")
            Expect.equal (d.Line, d.Col) (11, 24) d.Message
            Expect.stringContains d.Message "outside its domain" "message"
            // inside the domain it runs
            Expect.isOk (compile (oneState "  init x = 1" "  d x = -x dt + sqrt(s) dW" "  d mean(x) / d s with finite_difference(h = 0.1)")) "h = 0.1"
        }
    ]
