namespace Sde.Core;

/// <summary>
/// Per-path values at T of a recorded response run (<see cref="ResponseEngine.RunRecorded{TModel}"/>): the
/// state x_T, the DK parameter scores ℓ_T (one per plan, E[ℓ | x_T] = ∂_γ log ρ_T(x_T)) and, when asked, the
/// covector ν_T (E[ν | x_T] = ∇ log ρ_T(x_T)). Row-major, one row per path; a path that blew up keeps NaN.
/// Its size is paths × (2d + K) doubles whatever the number of steps: the fit's memory does not grow with T. A
/// stationary recording (<see cref="Steps"/>) holds the state and the DK window increments at R recorded times instead.
/// </summary>
public sealed class PathRecord
{
    /// <summary>Record ν_T as well (the score query; fitting does not need it).</summary>
    public bool WithNu { get; init; }
    /// <summary>Record the model's observables at T (`ISdeModel.Observe`) as well: the `samples(...)` query.</summary>
    public bool WithObservables { get; init; }
    /// <summary>Observables per path (when recorded).</summary>
    public int NObs { get; private set; }
    /// <summary>Paths × NObs observable values at T (when recorded; NaN rows for paths that blew up).</summary>
    public double[]? Obs { get; private set; }
    public long FirstPath { get; private set; }
    public long Paths { get; private set; }
    public int D { get; private set; }
    public int K { get; private set; }
    public double[] X { get; private set; } = Array.Empty<double>();
    public double[] Ell { get; private set; } = Array.Empty<double>();
    public double[]? Nu { get; private set; }
    /// <summary>
    /// Stationary recording (the fit's `kl stationary window`): the grid steps, ascending, at which each path's
    /// state x_n and its DK window increments ℓ_n − ℓ_{n−K} (K = <see cref="WindowSteps"/>, ℓ_{n−K} read as ℓ_0
    /// when n &lt; K) are recorded, instead of x_T and ℓ_T. Null: T only.
    /// </summary>
    public long[]? Steps { get; init; }
    /// <summary>K, the window of the increments in steps (with <see cref="Steps"/>).</summary>
    public long WindowSteps { get; init; }
    /// <summary>Recorded times per path: 1 (T), or the length of <see cref="Steps"/>.</summary>
    public int Times => Steps?.Length ?? 1;
    /// <summary>Rows of <see cref="X"/> and <see cref="Ell"/>: Paths × Times, path-major (path p, time r: row p·Times + r).</summary>
    public long Rows => Paths * Times;

    /// <summary>Trajectories (`samples(...) every Δ`): the observables (indices into `ISdeModel.Observe`) recorded
    /// at every <see cref="EverySteps"/>-th step n = 0, e, 2e, ... ≤ steps; null: none.</summary>
    public int[]? TrajectoryObservables { get; init; }
    /// <summary>The trajectory's step in steps of dt (≥ 1).</summary>
    public long EverySteps { get; init; } = 1;
    /// <summary>Grid times per path of the trajectory (steps / EverySteps + 1).</summary>
    public int TrajectoryTimes { get; private set; }
    /// <summary>Paths × Times × TrajectoryObservables.Length values, path-major then time (NaN after a blow-up).</summary>
    public double[]? Trajectory { get; private set; }

    internal void Reset(long firstPath, long paths, int d, int k, int nobs, long steps)
    {
        if (TrajectoryObservables != null)
        {
            if (EverySteps < 1) throw new ArgumentException("a trajectory's step is at least one step of dt");
            long times = steps / EverySteps + 1, n = paths * times * TrajectoryObservables.Length;
            if (n > Array.MaxLength) throw new RunTooLargeException($"recording {n} trajectory values does not fit in one array; use fewer paths or a larger step");
            TrajectoryTimes = (int)times;
            if (Trajectory == null || Trajectory.Length != n) Trajectory = new double[n];
            Array.Fill(Trajectory, double.NaN);
        }
        Reset(firstPath, paths, d, k, nobs);
    }

    internal void Reset(long firstPath, long paths, int d, int k, int nobs)
    {
        NObs = WithObservables ? nobs : 0;
        if (WithObservables && (Obs == null || Obs.Length != paths * NObs)) Obs = new double[paths * NObs];
        if (Obs != null) Array.Fill(Obs, double.NaN);
        long rows = paths * Times;
        if (rows * Math.Max(d, k) > Array.MaxLength) throw new RunTooLargeException($"recording {paths} paths of {d} states{(Times > 1 ? $" at {Times} times" : "")} does not fit in one array; use fewer paths");
        FirstPath = firstPath; Paths = paths; D = d; K = k;
        // reuse the buffers between the iterations of a fit (same sizes): nothing allocates per iteration
        if (X.Length != rows * d) X = new double[rows * d];
        if (Ell.Length != rows * k) Ell = new double[rows * k];
        if (WithNu && (Nu == null || Nu.Length != paths * d)) Nu = new double[paths * d];
        Array.Fill(X, double.NaN);
        Array.Fill(Ell, double.NaN);
        if (Nu != null) Array.Fill(Nu, double.NaN);
    }

    /// <summary>Paths whose row holds a NaN or an infinity (they blew up, or their weights did).</summary>
    public long NonFinitePaths()
    {
        long bad = 0;
        int times = Times;
        for (long p = 0; p < Paths; p++)
        {
            bool ok = true;
            for (long row = p * times; row < (p + 1) * times && ok; row++)
            {
                for (int i = 0; i < D && ok; i++) ok = double.IsFinite(X[row * D + i]);
                for (int k = 0; k < K && ok; k++) ok = double.IsFinite(Ell[row * K + k]);
            }
            if (!ok) bad++;
        }
        return bad;
    }
}
