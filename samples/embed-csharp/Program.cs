// Embedding the .sde compiler from C#: compile a model from a string, show the diagnostics of a
// bad one, run a good one and print its mean.
using Sde;

const string good = """
    model OU {
      param theta = 1 in (0, inf)
      param sigma = 0.5 in (0, inf)
      state x
      brownian W
      init x = 1
      d x = -theta * x dt + sigma dW
    }
    simulate { paths = 20000; dt = 0.01; T = 2; seed = 7 }
    query { mean(x) }
    """;

// An unknown name (`thta`) in the drift.
string bad = good.Replace("-theta * x dt", "-thta * x dt");

// 1. The diagnostics of a bad model (C#-friendly: null plus an out array).
var none = SdeCompiler.TryCompile(bad, "bad.sde", out SourceDiagnostic[] diagnostics);
Console.WriteLine($"bad.sde: {(none is null ? "rejected" : "accepted?!")}, {diagnostics.Length} diagnostic(s)");
foreach (var d in diagnostics)
    Console.WriteLine(d.Rendered);

// 2. The F# API works from C# too: Compile returns an F# Result.
var result = SdeCompiler.Compile(good, "ou.sde", null);
if (result.IsError)
{
    foreach (var d in result.ErrorValue) Console.Error.WriteLine(d.Rendered);
    return 2;
}
CompiledProgram program = result.ResultValue;
Console.WriteLine($"compiled model {program.ModelName}: parameters {string.Join(", ", program.Parameters)}");

// 3. Run (all cores) and print the mean.
var report = program.Simulate();
var mean = report.Sets.Head.Results.Head;
Console.WriteLine($"{mean.Query} = {mean.Value:F5} +- {mean.StdErr:F5}  (Euler chain: {Math.Pow(0.99, 200):F5})");

// 4. Overrides from C#: fewer paths, another seed, another sigma.
var overrides = SdeCompiler.MakeOverrides(2000, null, null, 3UL, null, new Dictionary<string, double> { ["sigma"] = 0.25 });
var small = SdeCompiler.TryCompile(good, "ou.sde", overrides, out diagnostics);
var r2 = small.Simulate(threads: 1, progress: null);
Console.WriteLine($"with {r2.Settings.Paths} paths and sigma = 0.25: {r2.Sets.Head.Results.Head.Value:F5}");
return 0;
