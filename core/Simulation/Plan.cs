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
    /// <summary>The coupled pairs keep this query's coarse and fine sums per block of pairs as well
    /// (<see cref="Estimate.PairBlockC"/>): a result derived from several sums (a variance, a quantile)
    /// gets its bias's standard error by a jackknife over the blocks. Changes no other number.</summary>
    public bool PairBlocks { get; init; }
    /// <summary>The model instance whose coupled pairs sample this query: 0 the run's model, k ≥ 1 the
    /// twin <see cref="RunSettings.PairTwins"/>[k − 1] (a finite-difference response's twin, whose bias is
    /// the difference of its twins' coupled biases). The main paths sample the run's model whatever it
    /// is (a value nobody reports).</summary>
    public int PairTwin { get; init; }
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
    /// <summary>Called now and then, at most ten times a second, with the fraction of path-steps done (from worker threads; the GPU backends report per batch of paths).</summary>
    public Action<double>? Progress { get; init; }
    public CancellationToken Cancel { get; init; }
    /// <summary>Memory the run may use, in bytes; 0 means what the GC reports as available on this machine.</summary>
    public long MemoryLimit { get; init; }
    /// <summary>
    /// Paths per step on the plain CPU engine: 0 chooses (four paths in the vector lanes where the model has
    /// a lane step and it pays, else one; the environment variable SDE_LANES = 1 or 4 overrides the choice),
    /// 1 one path at a time, 4 four paths wherever the model has a lane step. The results are the same bits.
    /// </summary>
    public int Lanes { get; init; }
    /// <summary>The discretisation-error estimate (<see cref="BiasMode"/>); Off unless asked (the plain engine only).</summary>
    public BiasMode Bias { get; init; }
    /// <summary>The whole run's number of paths, of which this run is FirstPath .. FirstPath + Paths − 1 (a shard):
    /// the coupled pairs of the bias estimate are spread over the whole run by global index. 0: FirstPath + Paths.</summary>
    public long TotalPaths { get; init; }
    /// <summary>The model's twins (of the model type, parameters shifted) that the coupled pairs also run,
    /// on the same init draw and Brownian path, for the plans with <see cref="QueryPlan.PairTwin"/> ≥ 1.</summary>
    public object[]? PairTwins { get; init; }
    /// <summary>The scheme's weak order p (Euler–Maruyama 1): b = (Q(dt) − Q(dt/2)) / (1 − 2^−p).</summary>
    public int WeakOrder { get; init; } = 1;
    /// <summary>True when the second half of a step's normals are the ζ of the scheme's integrals
    /// I_(1,0) = Δt^{3/2} (ξ + ζ/√3) / 2 (SRA): the coupled pairs then build the coarse step's ζ from the
    /// two fine steps' ξ and ζ, so that both chains see the same ∫ W ds.</summary>
    public bool IntegralNormals { get; init; }

    /// <summary>Number of steps N = T / dt; see <see cref="StepsOf"/> (throws when T is not a whole number of steps).</summary>
    public long Steps => StepsOf(T, Dt);

    /// <summary>
    /// The whole number of steps of <paramref name="dt"/> in <paramref name="t"/>, or −1 when t/dt is not
    /// one. The engine lands on T exactly: a horizon rounded to the grid would silently simulate to
    /// another time (dt = 0.3, T = 2 would end at 2.1). The tolerance, 1e-9 relative, absorbs the
    /// rounding of decimal inputs (T = 1, dt = 0.1 gives 9.999999999999998 steps).
    /// </summary>
    public static long WholeSteps(double t, double dt)
    {
        double r = t / dt, n = Math.Round(r);
        return double.IsFinite(r) && Math.Abs(r - n) <= 1e-9 * Math.Max(r, 1) ? (long)n : -1;
    }

    /// <summary><see cref="WholeSteps"/>, or an <see cref="ArgumentException"/> that says so.</summary>
    public static long StepsOf(double t, double dt)
    {
        long n = WholeSteps(t, dt);
        if (n < 0) throw new ArgumentException($"T = {t:R} is not a whole number of steps dt = {dt:R} (T/dt = {t / dt:G10}); the engine does not round the horizon");
        return n;
    }
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
    /// <summary>
    /// Samples where the observable was NaN or ±∞ although the state was finite (log of a negative,
    /// 0/0, ...): for a mean, the paths whose sample (φ at T, or its window average) is not finite, which
    /// make the value NaN or infinite; for a plain density, the NaN samples, which fall in no bin (±∞
    /// count as below / above). Not a blow-up of the paths: the run goes on, and the front end warns.
    /// </summary>
    public long NonFinite { get; init; }
    /// <summary>Kernel estimators: the kurtosis n Σℓ⁴ / (Σℓ²)² of the per-path weights ℓ (3 for Gaussian
    /// weights; of order n when a few paths carry the variance; +∞ when they overflowed). NaN otherwise.</summary>
    public double WeightKurtosis { get; init; } = double.NaN;
    /// <summary>Kernel estimators: the largest path's share max ℓ² / Σℓ² of the weights' sum of squares. NaN otherwise.</summary>
    public double WeightMaxShare { get; init; } = double.NaN;
    /// <summary>A kernel mean with a pathwise control variate: the coefficient κ used (0: the kernel alone,
    /// 1: the pathwise estimate alone). NaN when there was no control, or it was not usable (a control
    /// sample not finite: the pathwise tangent overflowed).</summary>
    public double ControlCoefficient { get; init; } = double.NaN;
    /// <summary>The estimated distance of the value from the dt → 0 limit, b = mean(Q_dt − Q_dt/2) / (1 − 2^−p)
    /// over coupled pairs (scalars; NaN when not estimated), and its standard error.</summary>
    public double Bias { get; set; } = double.NaN;
    public double BiasStdErr { get; set; } = double.NaN;
    /// <summary>Densities: the bias per bin and its standard errors (null when not estimated).</summary>
    public double[]? Biases { get; set; }
    public double[]? BiasStdErrs { get; set; }
    /// <summary>The coupled pairs behind the bias (or, extrapolated, behind the value); 0 when none.</summary>
    public long BiasPairs { get; set; }
    /// <summary>The value is the Richardson extrapolation 2 Q(dt/2) − Q(dt) of coupled pairs.</summary>
    public bool Extrapolated { get; set; }
    /// <summary>Plans with <see cref="QueryPlan.PairBlocks"/>: the coupled pairs' sums of the coarse (C) and
    /// fine (F) per-pair values, per slot and block (index slot · <see cref="PairBlockN"/>.Length + block;
    /// a density's slots are its bins, then the fraction below its range), rounded from exact sums.</summary>
    public double[]? PairBlockC { get; set; }
    public double[]? PairBlockF { get; set; }
    /// <summary>The pairs in each block (pair j is in block j mod B).</summary>
    public long[]? PairBlockN { get; set; }
    /// <summary>1 / (1 − 2^−p), which turns Q(dt) − Q(dt/2) into the bias (NaN when there are no pairs).</summary>
    public double BiasFactor { get; set; } = double.NaN;
}

/// <summary>How a run treats the distance of its Euler chain from the SDE (the dt → 0 limit).</summary>
public enum BiasMode
{
    /// <summary>No estimate.</summary>
    Off,
    /// <summary>The main paths as with Off (same bits), plus coupled (dt, dt/2) pairs on a share of the path indices, on streams of their own: b = mean(Q_dt − Q_dt/2) / (1 − 2^−p).</summary>
    Estimate,
    /// <summary>Every path a coupled pair; the value 2 Q(dt/2) − Q(dt) (Richardson, weak order 2 from Euler).</summary>
    Richardson,
}

/// <summary>A path produced NaN or infinity: the run stops (exit code 3 in the CLI).</summary>
/// <remarks>
/// The engines stop handing out paths at the first failure (a doomed run should not run to the end),
/// so the failed paths are counted among the paths simulated until then. When every path was
/// simulated the count is exact; otherwise the message says "at least" and how many paths ran.
/// </remarks>
public sealed class SimulationFailedException : Exception
{
    /// <summary>Earliest failing step among the failed paths seen.</summary>
    public long Step { get; }
    public double Time { get; }
    /// <summary>Failed paths among the <see cref="SimulatedPaths"/> that ran.</summary>
    public long FailedPaths { get; }
    /// <summary>Paths that ran (completed or failed) before the run stopped; −1 when not known.</summary>
    public long SimulatedPaths { get; }
    /// <summary>Paths the run was asked for; −1 when not known.</summary>
    public long TotalPaths { get; }
    /// <summary>True when every path ran, so that <see cref="FailedPaths"/> is the exact count.</summary>
    public bool Exact => TotalPaths >= 0 && SimulatedPaths == TotalPaths;

    /// <summary>A failure whose count is a lower bound (the simulated and total paths unknown).</summary>
    public SimulationFailedException(long step, double time, long failedPaths) : this(step, time, failedPaths, -1, -1) { }

    public SimulationFailedException(long step, double time, long failedPaths, long simulatedPaths, long totalPaths)
        : base(Describe(step, time, failedPaths, simulatedPaths, totalPaths))
    { Step = step; Time = time; FailedPaths = failedPaths; SimulatedPaths = simulatedPaths; TotalPaths = totalPaths; }

    static string Describe(long step, double time, long failed, long simulated, long total)
    {
        static string paths(long n) => n == 1 ? "path" : "paths";
        string at = $"at step {step} (t = {time:G6})";
        if (total >= 0 && simulated == total)
            return failed == total
                ? $"the simulation blew up: {(total == 1 ? "its one path" : $"all {total} paths")} reached NaN or infinity, the first {at}"
                : $"the simulation blew up: {failed} of {total} {paths(total)} reached NaN or infinity, the first {at}";
        string ran = simulated >= 0 && total >= 0
            ? $" (the run stopped at the first failures, after {simulated} of {total} paths, so more may fail)"
            : " (the run stopped at the first failures, so more may fail)";
        return $"the simulation blew up: at least {failed} {paths(failed)} reached NaN or infinity{ran}, the earliest seen {at}";
    }
}

/// <summary>The run would need more memory than the machine has: refused before allocating.</summary>
public sealed class RunTooLargeException : Exception
{
    public RunTooLargeException(string message) : base(message) { }
}
