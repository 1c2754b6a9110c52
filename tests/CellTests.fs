/// The response audit: every cell of (init kind × noise kind × parameter place × target × schedule ×
/// mode × method) is either right — it agrees with central finite differences on the same random
/// numbers, within 4.5 combined standard errors — or refused with a located error whose suggested
/// methods are accepted for the same query (no suggestion goes in a circle). The expected refusals
/// are written out here from the mathematics (docs/estimators.md), independently of the driver's code.
module Sde.Tests.CellTests

open System
open Expecto
open Sde
open Sde.Lang

type Noise =
    | DiagonalAdditive
    | DiagonalMultiplicative
    | NonDiagonal
    /// Langevin: noise on the momentum only, additive.
    | DegenerateAdditive
    /// One noise, state-dependent, driving one of two states.
    | DegenerateMultiplicative

type InitKind =
    | Point
    | NormalInit
    | UniformInit

/// Where the parameter differentiated enters the model.
type Place =
    | Drift
    /// In the drift of x, the equation without noise under degenerate noise (`d q = (p + e) dt`).
    | XDrift
    | Diffusion
    | Init
    /// Only in the observable (the explicit term E[∂_γφ] is then the whole answer).
    | Observable
    /// In the drift and in the observable.
    | DriftAndObservable

let private equations noise =
    match noise with
    | DiagonalAdditive -> "brownian W[2]", "d x = (-a * x + 0.5 * y + e) dt + b dW[0]", "d y = (x - y) dt + 0.4 dW[1]"
    | DiagonalMultiplicative ->
        "brownian W[2]", "d x = (-a * x + 0.5 * y + e) dt + b * sqrt(1 + x^2) dW[0]", "d y = (x - y) dt + 0.3 * sqrt(1 + y^2) dW[1]"
    | NonDiagonal -> "brownian W[2]", "d x = (-a * x + 0.5 * y + e) dt + b dW[0] + 0.3 dW[1]", "d y = (x - y) dt + 0.2 dW[0] + 0.5 dW[1]"
    | DegenerateAdditive -> "brownian W", "d x = (y + e) dt", "d y = (-a * x - y) dt + b dW"
    | DegenerateMultiplicative -> "brownian W", "d x = -a * x dt + b * x dW", "d y = (x - y + e) dt"

let private inits kind =
    match kind with
    | Point -> "init x = m", "init y = 0.5"
    | NormalInit -> "init x ~ normal(m, 0.2 + 0.3 * m)", "init y ~ normal(0.5, 0.5)"
    | UniformInit -> "init x ~ uniform(m - 0.5, m + 0.5)", "init y ~ uniform(0, 1)"

let private modelText noise init (queries: string list) =
    let br, ex, ey = equations noise
    let ix, iy = inits init

    sprintf
        """model Cell {
  param a = 1
  param b = 0.5 in (0, inf)
  param m = 1
  param c = 0.3
  param e = 0.2
  state x
  state y
  %s
  %s
  %s
  %s
  %s
}
simulate { paths = 20000; dt = 0.02; T = 1; seed = 11 }
query {
%s
}"""
        br ix iy ex ey (String.Join("\n", queries))

let private wrtOf place =
    match place with
    | Drift | DriftAndObservable -> "a"
    | XDrift -> "e"
    | Diffusion -> "b"
    | Init -> "m"
    | Observable -> "c"

/// The observable of a mean and of a density for each place.
let private observables place =
    match place with
    | Observable -> "(x - c)^2 + y", "x - c"
    | DriftAndObservable -> "a * x^2 + y", "a * x"
    | _ -> "x^2 + y", "x"

let private methods =
    [ "", "divergence_kernel (default)"
      " with divergence_kernel(mode = iterative)", "divergence_kernel(mode = iterative)"
      // an explicit rate: the kernel estimate alone (the default of a mean carries a pathwise control variate)
      " with divergence_kernel(rate = 15)", "divergence_kernel(rate = 15)"
      " with divergence_kernel(alpha = 0.5)", "divergence_kernel(alpha = 0.5)"
      " with divergence_kernel(alpha = 0)", "divergence_kernel(alpha = 0)"
      " with likelihood_ratio", "likelihood_ratio"
      " with pathwise", "pathwise" ]

let private reference = " with finite_difference(h = 0.01)"

/// The refusals the mathematics calls for (see the module comment).
let private expectRefusal noise init place density (meth: string) =
    let kernelLike = meth.StartsWith "divergence_kernel" || meth = "likelihood_ratio"
    let injecting = kernelLike && meth <> "divergence_kernel(alpha = 0)"
    let degenerate = noise = DegenerateAdditive || noise = DegenerateMultiplicative
    let multiplicative = noise = DiagonalMultiplicative || noise = DegenerateMultiplicative
    let observableHasParam = place = Observable || place = DriftAndObservable

    (meth = "pathwise" && density)
    || (density && observableHasParam)
    || (kernelLike && degenerate && init <> NormalInit)
    || (injecting && noise = DegenerateMultiplicative)
    || (kernelLike && init = UniformInit && place = Init)
    || (kernelLike && init = Point && place = Init && multiplicative)

type private Cell =
    { Place: Place
      Density: bool
      Method: string
      Query: string
      Reference: string
      Refused: bool }

let private cellsOf noise init =
    [ for place in [ Drift; XDrift; Diffusion; Init; Observable; DriftAndObservable ] do
          let wrt = wrtOf place
          let meanObs, densObs = observables place

          // at T, a density at T, a time average over a window
          for target in [ "mean"; "density"; "over" ] do
              let density = target = "density"

              let q suffix =
                  match target with
                  | "density" -> sprintf "  d density(%s) / d %s on [-1, 3] bins 4%s" densObs wrt suffix
                  | "mean" -> sprintf "  d mean(%s) / d %s%s" meanObs wrt suffix
                  | _ -> sprintf "  d mean(%s) / d %s over [0.5, 1]%s" meanObs wrt suffix

              for (suffix, name) in methods ->
                  { Place = place
                    Density = density
                    Method = name
                    Query = q suffix
                    Reference = q reference
                    Refused = expectRefusal noise init place density (if name.StartsWith "divergence_kernel (" then "divergence_kernel" else name) } ]

let private compile src =
    SdeCompiler.Compile(src, "cell.sde")

/// The alternative queries an error suggests (finite_difference with h = 0.01).
let private suggestions (cell: Cell) (message: string) =
    let i = message.LastIndexOf "; use "
    Expect.isGreaterThanOrEqual i 0 (sprintf "%s: the refusal names a method that works: %s" cell.Query message)
    let tail = message.Substring(i + 6)
    let tail = match tail.IndexOf " (or" with -1 -> tail | j -> tail.Substring(0, j)

    tail.Replace(" or ", ", ").Split(", ")
    |> Array.map (fun m ->
        let m = m.Replace("finite_difference(h = ...)", "finite_difference(h = 0.01)")
        let baseQuery = cell.Query.Substring(0, match cell.Query.IndexOf " with " with -1 -> cell.Query.Length | j -> j)
        if m = "divergence_kernel" then baseQuery else baseQuery + " with " + m)
    |> List.ofArray

let private check noise init =
    let cells = cellsOf noise init
    // 1. every cell alone in one file: the refusals, at the query's line
    let all = modelText noise init (cells |> List.map (fun c -> c.Query))
    let firstQueryLine = (all.Split('\n') |> Array.findIndex (fun l -> l.StartsWith "query {")) + 2

    let errors =
        match compile all with
        | Ok _ -> Map.empty
        | Error ds -> ds |> List.map (fun d -> d.Line - firstQueryLine, d.Message) |> Map.ofList

    for (i, c) in List.indexed cells do
        match Map.tryFind i errors, c.Refused with
        | Some msg, false -> failtestf "%A/%A: %s was refused but should be answered: %s" noise init c.Query msg
        | None, true -> failtestf "%A/%A: %s was answered but must be refused" noise init c.Query
        | _ -> ()

    // 2. what a refusal suggests is accepted (no circles)
    let suggested =
        cells |> List.indexed |> List.collect (fun (i, c) -> match Map.tryFind i errors with Some msg -> suggestions c msg | None -> [])

    if not suggested.IsEmpty then
        match compile (modelText noise init (List.distinct suggested)) with
        | Ok _ -> ()
        | Error ds -> failtestf "%A/%A: a suggested method is refused in turn: %s" noise init (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

    // 3. the answered cells against finite differences on the same paths
    let answered = cells |> List.filter (fun c -> not c.Refused)
    let refs = answered |> List.map (fun c -> c.Reference) |> List.distinct
    let src = modelText noise init ((answered |> List.map (fun c -> c.Query)) @ refs)

    let report =
        match compile src with
        | Ok p -> p.Run()
        | Error ds -> failtestf "%A/%A: %s" noise init (ds |> List.map (fun d -> d.Rendered) |> String.concat "\n")

    let byText = report.Sets.Head.Results |> List.map (fun r -> r.Query, r) |> Map.ofList
    let norm (s: string) = Text.RegularExpressions.Regex.Replace(s.Trim(), @"\s+", " ")

    printfn "cells %A noise, %A init: %d answered and compared with finite differences, %d refused" noise init answered.Length (cells.Length - answered.Length)

    for c in answered do
        let r = byText[norm c.Query]
        let f = byText[norm c.Reference]
        let pairs =
            if c.Density then Array.zip3 (Array.init r.Values.Length id) (Array.zip r.Values r.StdErrs) (Array.zip f.Values f.StdErrs) |> List.ofArray
            else [ 0, (r.Value, r.StdErr), (f.Value, f.StdErr) ]

        for (bin, (v, se), (fv, fse)) in pairs do
            let tol = 4.5 * sqrt (se * se + fse * fse) + 1e-9
            Expect.isTrue (Double.IsFinite v && Double.IsFinite se) (sprintf "%A/%A: %s bin %d finite (%g ± %g)" noise init c.Query bin v se)
            Expect.isLessThanOrEqual (abs (v - fv)) tol
                (sprintf "%A/%A: %s%s: %g ± %g vs finite differences %g ± %g (%.1f combined se)" noise init c.Query
                    (if c.Density then sprintf " bin %d" bin else "") v se fv fse (abs (v - fv) / (tol / 4.5)))

[<Tests>]
let tests =
    testList "response cells: right or refused" [
        for noise in [ DiagonalAdditive; DiagonalMultiplicative; NonDiagonal; DegenerateAdditive; DegenerateMultiplicative ] do
            for init in [ Point; NormalInit; UniformInit ] ->
                test (sprintf "%A noise, %A init" noise init) { check noise init }
    ]

let private ou body = sprintf "model M {\n  state x\n  brownian W\n%s\n}\n" body

/// (name, source, line, col, message substrings): refusals of the driver, located at the method
/// (or at the query when the default method is refused), each naming a method that works.
let private refusals =
    [ "pathwise on a density", ou "  param F = 1\n  d x = F dt + dW" + "query { d density(x) / d F on [0, 1] bins 3 with pathwise }\n", 7, 50,
      [ "cannot differentiate a density"; "use divergence_kernel, divergence_kernel(alpha = 0) or finite_difference" ]
      "pathwise with if", ou "  param F = 1\n  d x = F dt + dW" + "query { d mean(if x > 0 then 1 else 0) / d F with pathwise }\n", 7, 51,
      [ "contains 'if'"; "use divergence_kernel" ]
      "density response under degenerate noise and a point init (no circle through pathwise)",
      "model L {\n  param g = 0.5\n  state q\n  state p\n  brownian W\n  init q = 1\n  d q = p dt\n  d p = (-q - g * p) dt + dW\n}\nquery { d density(q) / d g on [0, 1] bins 3 }\n", 10, 9,
      [ "init of 'q' is not normal"; "use finite_difference(h = ...) (or give every state a normal init)" ]
      "mean response under degenerate state-dependent noise and a point init, alpha = 0",
      "model D {\n  param a = 1\n  state x\n  state y\n  brownian W\n  init x = 1\n  d x = -a * x dt + 0.3 * x dW\n  d y = (x - y) dt\n}\nquery { d mean(y) / d a with divergence_kernel(alpha = 0) }\n", 10, 30,
      [ "init of 'x' is not normal"; "use pathwise or finite_difference" ]
      "state-dependent degenerate noise with normal inits suggests alpha = 0",
      "model D {\n  param a = 1\n  state x\n  state y\n  brownian W\n  init x ~ normal(1, 0.2)\n  init y ~ normal(0, 0.2)\n  d x = -a * x dt + 0.3 * x dW\n  d y = (x - y) dt\n}\nquery { d mean(y) / d a }\n", 11, 9,
      [ "depends on the state"; "use divergence_kernel(alpha = 0), pathwise or finite_difference" ]
      "a density of an observable that depends on the parameter",
      ou "  param c = 1\n  init x ~ normal(0, 1)\n  d x = -x dt + dW" + "query { d density(x - c) / d c on [0, 1] bins 3 }\n", 8, 9,
      [ "depends on 'c' itself"; "use finite_difference" ]
      "the parameter in a condition of the observable",
      ou "  param c = 1\n  init x ~ normal(0, 1)\n  d x = -x dt + dW" + "query { d mean(if x > c then 1 else 0) / d c with likelihood_ratio }\n", 8, 51,
      [ "jumps where 'c' enters a condition"; "use finite_difference" ] ]

[<Tests>]
let refusalTests =
    testList "response refusals: located, with a method that works" [
        for (name, src, line, col, parts) in refusals ->
            test name {
                match compile src with
                | Ok _ -> failtestf "%s: expected a refusal" name
                | Error ds ->
                    let d = List.head ds
                    Expect.equal (d.Line, d.Col) (line, col) (sprintf "%s: position (%s)" name d.Message)
                    for part in parts do
                        Expect.stringContains d.Message part name
            }
    ]
