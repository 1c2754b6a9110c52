module Sde.Tests.ParserTests

open Expecto
open FsCheck
open FsCheck.FSharp
open Sde.Lang
open Sde.Lang.Syntax

let private p = noPos
let private e k : Expr = { Kind = k; Pos = p }
let private num v = e (Num v)
let private var n = e (Var n)
let private bin op a b = e (Bin(op, a, b))

let private parseE (s: string) =
    match Parser.parseExpr s with
    | Ok x -> x
    | Error d -> failwithf "parse error %s in %s" (Diagnostics.short d) s

let private parseF (s: string) =
    match Parser.parseFile s with
    | Ok f -> f
    | Error d -> failwithf "parse error %s" (Diagnostics.short d)

let private modelItems (f: File) =
    f.Items |> List.pick (function ModelBlock m -> Some m.Items | _ -> None)

let private queriesOf (f: File) =
    f.Items |> List.pick (function QueryBlock(q, _) -> Some q | _ -> None)

let lorenz96 =
    """model Lorenz96 {
  const N = 40                          // integer, compile time; sizes and index arithmetic
  param F = 8.0                         // real, differentiable; default value
  param sigma = 0.5 in (0, inf)         // optional domain, checked whenever a value is set
  state x[N] periodic                   // vector state; `periodic` wraps indices mod N
  brownian W[N]                         // independent standard Brownian motions
  init x[i] ~ normal(F, 1)              // or: init x[i] = F + if i == 0 then 0.01 else 0
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]
}

params base {}                          // defaults
params strong { F = 10; sigma = 1 }     // overrides
sweep F from 6 to 10 step 0.5           // one set per value, named F=6, F=6.5, ...

simulate {
  paths  = 100000
  dt     = 0.005
  T      = 20          // final time
  seed   = 42
  scheme = euler_maruyama
  burnin = 10          // start of the averaging window for `over` / `stationary` queries
}

query {
  mean(x[0])                                        // E[x_0(T)], with standard error
  mean(avg(i, x[i]^2))
  mean(x[0]) over [10, 20]                          // time average on the window, then over paths
  density(x[0]) on [-10, 15] bins 60                // histogram estimate of the marginal density at T
  d mean(x[0]) / d F                                // linear response of an averaged observable
  d mean(x[0]^2) / d sigma with likelihood_ratio
  d mean(x[0]) / d F with finite_difference(h = 0.01)
  d density(x[0]) / d F on [-10, 15] bins 30 with divergence_kernel(alpha = 0.2)
  d mean(x[0]) / d F stationary window 5            // stationary response, ergodic estimator
}
"""

// ------------------------------------------------------------------ generator of well-formed ASTs

let private names = [ "x"; "y"; "F"; "sigma"; "dW"; "dt"; "t"; "a_1"; "N"; "W2"; "σ"; "θ_2" ]
let private genName = Gen.elements names
let private genNum = Gen.elements [ 0.0; 1.0; 2.5; 1e-5; 1e20; 0.1; 123456.789; infinity; 40.0 ]
let private genPos = Gen.constant p

let rec private genExpr (size: int) : Gen<Expr> =
    let leaf =
        Gen.oneof [ Gen.map (Num >> e) genNum; Gen.map (Var >> e) genName ]

    if size <= 0 then
        leaf
    else
        let sub = genExpr (size / 2)

        Gen.oneof
            [ leaf
              Gen.map2 (fun n i -> e (Index(n, i))) genName sub
              Gen.map (ExprKind.Neg >> e) sub
              Gen.map3 (fun op a b -> e (Bin(op, a, b))) (Gen.elements [ Add; Sub; Mul; Div; Pow ]) sub sub
              Gen.map2 (fun f args -> e (Call(f, args))) (Gen.elements [ "exp"; "max"; "foo" ]) (Gen.listOfLength 2 sub)
              Gen.map3 (fun c a b -> e (If(c, a, b))) sub sub sub
              Gen.map3 (fun op a b -> e (Cmp(op, a, b))) (Gen.elements [ Eq; Ne; Lt; Le; Gt; Ge ]) sub sub
              Gen.map2 (fun a b -> e (And(a, b))) sub sub
              Gen.map2 (fun a b -> e (Or(a, b))) sub sub
              Gen.map (Not >> e) sub
              Gen.map3 (fun op v b -> e (Reduce(op, v, b))) (Gen.elements [ Sum; Avg ]) genName sub ]

let private genE = Gen.sized (fun s -> genExpr (min s 12))

let private genBound =
    Gen.map2 (fun v c -> { Value = v; Closed = c }) (Gen.elements [ 0.0; -1.5; 2.0; infinity; -infinity ]) (Gen.elements [ true; false ])

let private genItem: Gen<ModelItem> =
    Gen.oneof
        [ Gen.map2 (fun n v -> ConstDecl(n, v, p)) genName genE
          Gen.map4 (fun n s v d -> ParamDecl(n, s, v, d, p)) genName (Gen.optionOf genE) genE (Gen.optionOf (Gen.zip genBound genBound))
          Gen.map3 (fun n s per -> StateDecl(n, s, per, p)) genName (Gen.optionOf genE) (Gen.elements [ true; false ])
          Gen.map2 (fun n s -> BrownianDecl(n, s, p)) genName (Gen.optionOf genE)
          Gen.map2 (fun n v -> LetDecl(n, v, p)) genName genE
          Gen.map3
              (fun n i r -> InitDecl(n, i, r, p))
              genName
              (Gen.optionOf genName)
              (Gen.oneof
                  [ Gen.map InitValue genE
                    Gen.map2 (fun a b -> InitNormal(a, b)) genE genE
                    Gen.map2 (fun a b -> InitUniform(a, b)) genE genE ])
          Gen.map3 (fun n i r -> Equation(n, i, r, p)) genName (Gen.optionOf genName) genE ]

let private genSetting = Gen.map2 (fun k v -> { Key = k; Value = v; Pos = p }) genName genE

let private genNumExpr = Gen.map (Num >> e) genNum

let private genMethod: Gen<Method> =
    let arg =
        Gen.oneof
            [ Gen.map2 (fun n v -> ArgNum(n, v, p)) (Gen.elements [ "alpha"; "rate"; "h" ]) genNumExpr
              Gen.map2 (fun n v -> ArgName(n, v, p)) (Gen.elements [ "mode" ]) (Gen.elements [ "exact"; "iterative" ]) ]

    Gen.map2
        (fun n args -> { Name = n; Args = args; Pos = p })
        (Gen.elements [ "divergence_kernel"; "pathwise"; "finite_difference" ])
        (Gen.oneof [ Gen.constant []; Gen.listOfLength 1 arg; Gen.listOfLength 2 arg ])

let private genWindow = Gen.map2 (fun a b -> { T0 = a; T1 = b }) genE genE

let private genQuery: Gen<Query> =
    let target =
        Gen.oneof
            [ Gen.map MeanOf genE
              Gen.map2 (fun x (lo, hi, n) -> DensityOf(x, lo, hi, n)) genE (Gen.zip3 genE genE genE)
              Gen.map VarianceOf genE
              Gen.map2 (fun a b -> CovarianceOf(a, b)) genE genE
              Gen.map3 (fun x q (lo, hi, n) -> QuantileOf(x, q, lo, hi, n)) genE genE (Gen.zip3 genE genE genE)
              Gen.map4 (fun (a, b) (lo1, hi1) (lo2, hi2) (n, m) -> Density2Of(a, b, lo1, hi1, lo2, hi2, n, m))
                  (Gen.zip genE genE) (Gen.zip genE genE) (Gen.zip genE genE) (Gen.zip genE genE) ]

    let kind =
        Gen.oneof
            [ Gen.map2 (fun t o -> Plain(t, o)) target (Gen.optionOf genWindow)
              gen {
                  let! t = target
                  let! w = genName
                  let! o = Gen.optionOf genWindow
                  let! s = Gen.optionOf (Gen.listOfLength 2 genE)
                  let! m = Gen.optionOf genMethod
                  return Response(t, w, o, s, m)
              }
              Gen.map Lyapunov genE
              Gen.map (fun (lo, hi, n) -> Alignment(lo, hi, n)) (Gen.zip3 genE genE genE)
              Gen.map2 (fun n x -> Let(n, x)) genName genE ]

    Gen.map (fun k -> { Kind = k; Text = QueryText ""; Pos = p }) kind

let internal genFile: Gen<File> =
    let top =
        Gen.oneof
            [ Gen.map2 (fun n items -> ModelBlock { Name = n; Items = items; Pos = p }) genName (Gen.listOf genItem)
              Gen.map2 (fun n xs -> ParamsBlock(n, xs, p)) genName (Gen.listOf genSetting)
              Gen.map4 (fun n a b s -> SweepDecl(n, a, b, s, p)) genName genE genE genE
              Gen.map (fun xs -> SimulateBlock(xs, p)) (Gen.listOf genSetting)
              Gen.map (fun qs -> QueryBlock(qs, p)) (Gen.listOf genQuery) ]

    Gen.map (fun items -> { Items = items }) (Gen.listOf top)

let private roundTrip (f: File) =
    let text = Printer.printFile f

    match Parser.parseFile text with
    | Ok g -> g = f |> Prop.label text
    | Error d -> false |> Prop.label (sprintf "%s\n%s" (Diagnostics.short d) text)

let private config = { FsCheckConfig.defaultConfig with maxTest = 300 }

// ------------------------------------------------------------------ tests

[<Tests>]
let tests =
    testList
        "Parser"
        [ test "numbers and names" {
              Expect.equal (parseE "2.5") (num 2.5) ""
              Expect.equal (parseE "1e-3") (num 1e-3) ""
              Expect.equal (parseE "inf") (num infinity) ""
              Expect.equal (parseE "sigma") (var "sigma") ""
          }
          test "precedence of + and *" {
              Expect.equal (parseE "1 + 2 * 3") (bin Add (num 1.0) (bin Mul (num 2.0) (num 3.0))) ""
              Expect.equal (parseE "1 - 2 - 3") (bin Sub (bin Sub (num 1.0) (num 2.0)) (num 3.0)) ""
              Expect.equal (parseE "8 / 4 / 2") (bin Div (bin Div (num 8.0) (num 4.0)) (num 2.0)) ""
          }
          test "power is right-associative and binds tighter than unary minus" {
              Expect.equal (parseE "2^3^4") (bin Pow (num 2.0) (bin Pow (num 3.0) (num 4.0))) ""
              Expect.equal (parseE "-x^2") (e (ExprKind.Neg(bin Pow (var "x") (num 2.0)))) ""
              Expect.equal (parseE "2^-x") (bin Pow (num 2.0) (e (ExprKind.Neg(var "x")))) ""
          }
          test "logic: or < and < not < comparison" {
              let c op a b = e (Cmp(op, a, b))

              Expect.equal
                  (parseE "a < 1 or not b >= 2 and c == 3")
                  (e (Or(c Lt (var "a") (num 1.0), e (And(e (Not(c Ge (var "b") (num 2.0))), c Eq (var "c") (num 3.0))))))
                  ""
          }
          test "if extends to the right" {
              Expect.equal
                  (parseE "F + if i == 0 then 0.01 else 0 + 1")
                  (bin Add (var "F") (e (If(e (Cmp(Eq, var "i", num 0.0)), num 0.01, bin Add (num 0.0) (num 1.0)))))
                  ""
          }
          test "implicit multiplication before dt and dW" {
              Expect.equal (parseE "sigma dW[i]") (bin Mul (var "sigma") (e (Index("dW", var "i")))) ""
              Expect.equal (parseE "(x - x^3) dt") (bin Mul (bin Sub (var "x") (bin Pow (var "x") (num 3.0))) (var "dt")) ""
              Expect.equal (parseE "2 dt + 3 dW") (bin Add (bin Mul (num 2.0) (var "dt")) (bin Mul (num 3.0) (var "dW"))) ""
          }
          test "calls, indices and reductions" {
              Expect.equal (parseE "max(x, 1)") (e (Call("max", [ var "x"; num 1.0 ]))) ""
              Expect.equal (parseE "x[i+1]") (e (Index("x", bin Add (var "i") (num 1.0)))) ""
              Expect.equal (parseE "avg(i, x[i])") (e (Reduce(Avg, "i", e (Index("x", var "i"))))) ""
          }
          test "newlines are free inside parentheses" {
              Expect.equal (parseE "(1 +\n 2\n)") (bin Add (num 1.0) (num 2.0)) ""
          }
          test "positions are 1-based line and column" {
              let f = parseF "model M {\n  state x\n  d x = 2 dt\n}"

              match modelItems f with
              | [ StateDecl(_, _, _, p1); Equation(_, _, rhs, p2) ] ->
                  Expect.equal (p1.Line, p1.Col) (2, 9) "state name"
                  Expect.equal (p2.Line, p2.Col) (3, 3) "equation"
                  Expect.equal (rhs.Pos.Line, rhs.Pos.Col) (3, 9) "rhs"
              | other -> failtestf "%A" other
          }
          test "Lorenz-96 example parses" {
              let f = parseF lorenz96
              Expect.equal f.Items.Length 6 "items"
              Expect.equal (modelItems f).Length 7 "model items"
              Expect.equal (queriesOf f).Length 9 "queries"
          }
          test "query texts are the source with white space collapsed and comments removed" {
              let qs = parseF lorenz96 |> queriesOf |> List.map (fun q -> q.Text.Value)
              Expect.equal qs[0] "mean(x[0])" ""
              Expect.equal qs[2] "mean(x[0]) over [10, 20]" ""
              Expect.equal qs[7] "d density(x[0]) / d F on [-10, 15] bins 30 with divergence_kernel(alpha = 0.2)" ""
              let f = parseF "model M {}\nquery {\n  mean(  x\n   + 1)   over [0,\n 1] // c\n}"
              Expect.equal (queriesOf f).Head.Text.Value "mean( x + 1) over [0, 1]" ""
          }
          test "query forms" {
              let qs = parseF lorenz96 |> queriesOf |> List.map (fun q -> q.Kind)

              match qs[4], qs[6], qs[8] with
              | Response(MeanOf _, "F", None, None, None),
                Response(_, "F", None, None, Some { Name = "finite_difference"; Args = [ ArgNum("h", _, _) ] }),
                Response(_, "F", None, Some [ _ ], None) -> ()
              | other -> failtestf "%A" other

              let f = parseF "model M {}\nquery { d mean(x) / d F over [1, 2] stationary window 1, 2 with divergence_kernel(rate = 5, mode = exact) }"

              match (queriesOf f).Head.Kind with
              | Response(_, "F", Some _, Some [ _; _ ], Some { Args = [ ArgNum("rate", _, _); ArgName("mode", "exact", _) ] }) -> ()
              | other -> failtestf "%A" other
          }
          test "model items" {
              let f =
                  parseF
                      "model M {\n const N = 2; param a = 1 in [0, 1]\n state q\n brownian B\n init q ~ uniform(0, 1)\n init z[i] = if i == 0 then 1 else 0\n d q = -q dt + dB\n}"

              match modelItems f with
              | [ ConstDecl("N", _, _)
                  ParamDecl("a", None, _, Some({ Value = 0.0; Closed = true }, { Value = 1.0; Closed = true }), _)
                  StateDecl("q", None, false, _)
                  BrownianDecl("B", None, _)
                  InitDecl("q", None, InitUniform _, _)
                  InitDecl("z", Some "i", InitValue _, _)
                  Equation("q", None, _, _) ] -> ()
              | other -> failtestf "%A" other
          }
          test "comments anywhere" {
              let f = parseF "/* head\n comment */ model M { // c\n state x /* inline */\n d x = /* c */ 1 dt }"
              Expect.equal (modelItems f).Length 2 ""
          }
          test "printer output parses back (Lorenz-96)" {
              let f = parseF lorenz96
              Expect.equal (parseF (Printer.printFile f)) f ""
          }
          testPropertyWithConfig config "print then parse is the identity on ASTs" (fun () ->
              Prop.forAll (Arb.fromGen genFile) roundTrip)
          testPropertyWithConfig config "print then parse is the identity on expressions" (fun () ->
              Prop.forAll (Arb.fromGen genE) (fun x ->
                  match Parser.parseExpr (Printer.expr x) with
                  | Ok y -> y = x |> Prop.label (Printer.expr x)
                  | Error d -> false |> Prop.label (Diagnostics.short d)))
          test "diagnostic format: caret under the column, tabs kept" {
              let src = "model M {\n\tstate x\n\td x = y dt\n}"
              let d = { Pos = { Line = 3; Col = 8 }; Message = "unknown name 'y'" }
              let s = Diagnostics.format "m.sde" src d
              Expect.equal s "m.sde:3:8: error: unknown name 'y'\n\td x = y dt\n\t      ^" ""
          }
          test "diagnostic format: long lines shown as a window" {
              let line = String.replicate 1000 "a" + "X" + String.replicate 1000 "b"
              let s = Diagnostics.format "f" line { Pos = { Line = 1; Col = 1001 }; Message = "m" }
              let lines = s.Split('\n')
              Expect.isLessThan lines[1].Length 220 "window"
              Expect.equal (lines[1].[lines[2].Length - 1]) 'X' "caret under X"
          } ]
