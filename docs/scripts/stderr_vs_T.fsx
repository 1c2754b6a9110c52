// Regenerates docs/img/stderr_vs_T.svg: the standard error of d mean(avg(i, x[i])) / d F on noisy
// Lorenz-96 (N = 40) against the horizon T, for pathwise, likelihood ratio and divergence kernel.
//
//   dotnet build dsl/cli -c Release
//   dotnet fsi docs/scripts/stderr_vs_T.fsx [paths]
//
// Every point is one run of the engine through the embedding API (same seed for every method).
#r "../../dsl/cli/bin/Release/net10.0/Sde.Core.dll"
#r "../../dsl/cli/bin/Release/net10.0/Sde.Lang.dll"
#r "../../dsl/cli/bin/Release/net10.0/OxyPlot.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsec.dll"
#r "../../dsl/cli/bin/Release/net10.0/FParsecCS.dll"

open System
open System.IO
open Sde
open Sde.Lang

let paths = match fsi.CommandLineArgs with [| _; p |] -> int p | _ -> 1000
let horizons = [| 0.25; 0.5; 1.0; 1.5; 2.0; 3.0; 4.0 |]

let methods =
    [ "pathwise", "pathwise"
      "likelihood ratio", "likelihood_ratio"
      "divergence kernel", "divergence_kernel(mode = iterative)" ]

let source (T: float) (meth: string) =
    sprintf """model Lorenz96 {
  const N = 40
  param F = 8
  param sigma = 0.5
  state x[N] periodic
  brownian W[N]
  init x[i] ~ normal(8, 1)
  d x[i] = ((x[i+1] - x[i-2]) * x[i-1] - x[i] + F) dt + sigma dW[i]
}
simulate { paths = %d; dt = 0.005; T = %g; seed = 1 }
query { d mean(avg(i, x[i])) / d F with %s }""" paths T meth

let series =
    methods
    |> List.map (fun (name, meth) ->
        let ses =
            horizons
            |> Array.map (fun T ->
                match SdeCompiler.Compile(source T meth, "l96.sde") with
                | Ok p ->
                    let q = p.Run().Sets.Head.Results.Head
                    printfn "%-28s T = %-5g  %g ± %g" name T q.Value q.StdErr
                    q.StdErr
                | Error ds -> failwithf "%A" ds)
        // log10 so that the orders of magnitude are visible
        name, horizons, ses |> Array.map (fun s -> Math.Log10 s), [||])

// the table docs/responses.md quotes (tests/DocsClaimsTests.fs reads its prose back against it)
printfn "\n| T | %s |" (methods |> List.map fst |> String.concat " | ")
printfn "|---|%s" (methods |> List.map (fun _ -> "---|") |> String.concat "")
horizons
|> Array.iteri (fun i T ->
    printfn "| %g | %s |" T (series |> List.map (fun (_, _, ys, _) -> (10.0 ** ys[i]).ToString("G3", Globalization.CultureInfo.InvariantCulture)) |> String.concat " | "))

let out = Path.Combine(__SOURCE_DIRECTORY__, "..", "img", "stderr_vs_T.svg")
Directory.CreateDirectory(Path.GetDirectoryName out) |> ignore
// the title names the plot, the subtitle the estimate (a title wrapped across lines broke its expression)
Plot.writeSeriesWith out "Lorenz-96 (N = 40): standard error against the horizon T" (sprintf "d E[avg x] / d F, %d paths, the same seed for every method" paths) false "T" "log10 standard error" series
printfn "wrote %s" out
