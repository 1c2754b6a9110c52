// Embedding the dsl library in an F# script, from its NuGet package.
//
// From the repository root, pack the library (Sde.Lang and the engine Sde.Core it depends on)
// into a local folder, then run the script:
//
//   dotnet pack core -c Release -o nupkg
//   dotnet pack dsl/lang -c Release -o nupkg
//   dotnet fsi samples/embed.fsx
//
// samples/nuget.config, beside this script, adds that folder (../nupkg) as a package source; a
// script elsewhere names it with `#i "nuget: /absolute/path/to/nupkg"` before the `#r` (`#i` takes
// no relative path). tests/CliTests.fs packs the library to a temporary folder under a version of
// its own and runs this script there, with a nuget.config that names that folder.
#r "nuget: Sde.Lang, 0.1.0"

open Sde

let text =
    """
model OU {
  param theta = 1 in (0, inf)
  param sigma = 0.5 in (0, inf)
  state x
  brownian W
  init x = 1
  d x = -theta * x dt + sigma dW
}
simulate { paths = 2000; dt = 0.01; T = 1; seed = 1 }
query {
  mean(x)
  d mean(x) / d theta
  density(x) on [0, 1] bins 4
}
"""

match SdeCompiler.Compile(text, "ou.sde") with
| Ok program ->
    let report = program.Run() // Report.RunReport: the JSON's data
    for q in report.Sets.Head.Results do
        // Points: every kind in one shape, one point for a scalar result, one per bin of a density
        match q.Points() with
        | [| p |] when System.Double.IsNaN p.X -> printfn "%s = %g ± %g" q.Query p.Value p.StdErr
        | points ->
            printfn "%s:" q.Query
            for p in points do
                printfn "  at %g: %g ± %g" p.X p.Value p.StdErr
| Error diagnostics ->
    for d in diagnostics do
        eprintfn "%s" d.Rendered // FILE:LINE:COL: error: ... with the source line and a caret
    exit 2
