namespace Sde.Core;

/// <summary>What the engine accumulates for one query.</summary>
public enum EstimateKind
{
    /// <summary>E[φ(x_N)], or with <see cref="QueryPlan.TimeAverage"/> E[(1/|W|) Σ_{n∈W} φ(x_n)].</summary>
    Mean,
    /// <summary>Histogram density of φ(x_N) (or of φ(x_n), n ∈ window, pooled per path) on [Lo, Hi) with Bins bins.</summary>
    Density,
}

/// <summary>What a query samples: which observable, at T or averaged over a window, and a density's bins.</summary>
public abstract class ObservablePlan
{
    public EstimateKind Kind { get; init; }
    /// <summary>Index into the model's observables (<see cref="ISdeModel.Observe{TV}"/>).</summary>
    public int Observable { get; init; }
    /// <summary>Average over the steps n with T0 ≤ n·dt ≤ T1 instead of taking the final state.</summary>
    public bool TimeAverage { get; init; }
    public double T0 { get; init; }
    public double T1 { get; init; }
    public double Lo { get; init; }
    public double Hi { get; init; }
    public int Bins { get; init; }
}

/// <summary>One plain query (a mean or a density) as the engine sees it.</summary>
public sealed class QueryPlan : ObservablePlan
{
}

/// <summary>How to run: number of paths, step, horizon, seed, and the execution knobs.</summary>
public sealed class RunSettings
{
    public long Paths { get; init; }
    public double Dt { get; init; }
    public double T { get; init; }
    public ulong Seed { get; init; }
    /// <summary>Global index of the first path (for split / sharded runs): path p uses the RNG stream of index FirstPath + p.</summary>
    public long FirstPath { get; init; }
    /// <summary>Worker threads; 0 means all cores.</summary>
    public int Threads { get; init; }
    /// <summary>Called now and then with the fraction of paths done (from worker threads).</summary>
    public Action<double>? Progress { get; init; }
    public CancellationToken Cancel { get; init; }
    /// <summary>Memory the run may use, in bytes; 0 means what the GC reports as available on this machine.</summary>
    public long MemoryLimit { get; init; }

    /// <summary>Number of steps N = round(T / dt).</summary>
    public long Steps => (long)Math.Round(T / Dt);
}

/// <summary>
/// An estimate with its standard error: scalar (Value, StdErr) or per bin (Values, StdErrs, with the
/// bin centres in Grid). Below/Above count the samples that fell outside a density's range.
/// The sums behind it are exact (order-independent), so a result does not depend on the thread count
/// or on how the paths were split.
/// </summary>
public sealed class Estimate
{
    public double Value { get; init; }
    public double StdErr { get; init; }
    public double[]? Grid { get; init; }
    public double[]? Values { get; init; }
    public double[]? StdErrs { get; init; }
    public long Below { get; init; }
    public long Above { get; init; }
    /// <summary>Number of samples (paths) behind the estimate.</summary>
    public long Count { get; init; }
    /// <summary>Kernel estimators: the kurtosis n Σℓ⁴ / (Σℓ²)² of the per-path weights ℓ (3 for Gaussian
    /// weights; of order n when a few paths carry the variance; +∞ when they overflowed). NaN otherwise.</summary>
    public double WeightKurtosis { get; init; } = double.NaN;
    /// <summary>Kernel estimators: the largest path's share max ℓ² / Σℓ² of the weights' sum of squares. NaN otherwise.</summary>
    public double WeightMaxShare { get; init; } = double.NaN;
}

/// <summary>A path produced NaN or infinity: the run stops (exit code 3 in the CLI).</summary>
public sealed class SimulationFailedException : Exception
{
    public long Step { get; }
    public double Time { get; }
    public long FailedPaths { get; }
    public SimulationFailedException(long step, double time, long failedPaths)
        : base($"the simulation blew up: {failedPaths} path(s) reached NaN or infinity, first at step {step} (t = {time:G6})")
    { Step = step; Time = time; FailedPaths = failedPaths; }
}

/// <summary>The run would need more memory than the machine has: refused before allocating.</summary>
public sealed class RunTooLargeException : Exception
{
    public RunTooLargeException(string message) : base(message) { }
}
