using System.Runtime.CompilerServices;

namespace Sde.Core;

/// <summary>
/// Lyapunov exponents of the simulated chain: per path, k orthonormal vectors are pushed through the
/// tangent map J_n = D_x G(x_n, w_n) of the Euler step (the noise terms of multiplicative noise
/// included) and re-orthonormalised by modified Gram–Schmidt each step (Z = J_n Q_n = Q_{n+1} R_n).
/// The per-path exponents are λ_c = (1 / ((N − n_b) Δt)) Σ_{n ≥ n_b} log R_n[c, c]; they are the
/// samples behind the mean and standard error across paths. Optionally the same paths also give
/// (1 / ((N − n_b) Δt)) Σ_{n ≥ n_b} log|det J_n| (dense LU), which equals Σ_c λ_c exactly when k = d.
/// The paths use the same RNG streams as the other engines; sums are exact (thread-count independent).
/// </summary>
public static class LyapunovEngine
{
    /// <summary>Seed of the fixed, generic initial frame Q_0 (the same on every path and in every engine).</summary>
    const ulong FrameSeed = 0x4C59_4150_554E_4F56UL;

    /// <summary>
    /// The initial frame Q_0 (d × k, column c at [c·d, c·d + d)): fixed pseudo-random columns,
    /// orthonormalised. Generic (almost surely not inside an invariant subspace), so the columns
    /// converge to the backward Lyapunov vectors in order.
    /// </summary>
    public static double[] InitialFrame(int d, int k)
    {
        var q = new double[d * k];
        Normals.FillScalar(FrameSeed, 0, 0, Philox.TagStep, q);
        for (int c = 0; c < k; c++) Orthonormalise(q, d, c);
        return q;
    }

    /// <summary>Modified Gram–Schmidt on column c of z against columns 0..c−1; returns its norm before normalising.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static double Orthonormalise(double[] z, int d, int c)
    {
        int oc = c * d;
        for (int p = 0; p < c; p++)
        {
            int op = p * d;
            double r = 0;
            for (int i = 0; i < d; i++) r += z[op + i] * z[oc + i];
            for (int i = 0; i < d; i++) z[oc + i] -= r * z[op + i];
        }
        double s = 0;
        for (int i = 0; i < d; i++) s += z[oc + i] * z[oc + i];
        double norm = Math.Sqrt(s);
        double inv = 1.0 / norm;
        for (int i = 0; i < d; i++) z[oc + i] *= inv;
        return norm;
    }

    /// <summary>
    /// Runs the paths and returns the top <paramref name="k"/> exponents averaged over steps n with
    /// n·Δt ≥ <paramref name="burnin"/>. <paramref name="logDet"/>: also accumulate log|det J_n|.
    /// </summary>
    public static LyapunovResult Run<TModel>(in TModel model, TangentStructure st, RunSettings s, int k, double burnin, bool logDet)
        where TModel : struct, ISdeTangentModel
        => RunPartial(model, st, s, k, burnin, logDet).ToResult();

    /// <summary>
    /// Runs paths FirstPath .. FirstPath + Paths − 1 and returns their exact sums, to be merged with those
    /// of other path ranges (<see cref="LyapunovAccumulators.Merge"/>) before <see cref="LyapunovAccumulators.ToResult"/>.
    /// </summary>
    public static LyapunovAccumulators RunPartial<TModel>(in TModel model, TangentStructure st, RunSettings s, int k, double burnin, bool logDet)
        where TModel : struct, ISdeTangentModel
    {
        ArgumentNullException.ThrowIfNull(st);
        long steps = Engine.CheckSettings(s);
        TModel m0 = model;
        int d = m0.Dim;
        if (k < 1 || k > d) throw new ArgumentException($"the number of exponents must be in 1..{d} (got {k})");
        if (s.Paths < 1) throw new ArgumentException("a Lyapunov run needs at least one path");
        long nb = (long)Math.Ceiling(burnin / s.Dt - 1e-9);
        if (burnin < 0 || nb >= steps) throw new ArgumentException($"the averaging window [burnin, T] holds no step (burnin = {burnin}, T = {s.T}, dt = {s.Dt})");

        var q0 = InitialFrame(d, k);
        var progress = new StepProgress(s.Progress, s.Paths, steps);
        var workers = PathBlocks.Run(s, 64, "lyapunov",
            () => new LyapunovWorker<TModel>(m0, st, s, k, nb, steps, logDet, q0, progress),
            (wk, gp) => wk.RunPath(gp));

        // merge exactly: k exponents and the log-det rate, sums and sums of squares
        var acc = LyapunovAccumulators.Create(k, logDet);
        foreach (var w in workers)
        {
            for (int c = 0; c <= k; c++) { acc.Sum[c].Add(w.S[c]); acc.Sum2[c].Add(w.S2[c]); }
            acc.Paths += w.Paths;
        }
        s.Progress?.Invoke(1.0);
        return acc;
    }
}

/// <summary>
/// The Lyapunov engine's exact sums over some paths (per-path exponents 0..k−1 and, at index k, the
/// log-det rate; sums and sums of squares): merging those of disjoint path ranges in any order gives
/// the same bits as one run.
/// </summary>
public sealed class LyapunovAccumulators
{
    internal readonly ExactSum[] Sum, Sum2;
    public int K { get; }
    public bool LogDet { get; }
    public long Paths { get; internal set; }

    LyapunovAccumulators(int k, bool logDet)
    {
        K = k; LogDet = logDet;
        Sum = new ExactSum[k + 1]; Sum2 = new ExactSum[k + 1];
        for (int c = 0; c <= k; c++) { Sum[c] = new ExactSum(); Sum2[c] = new ExactSum(); }
    }

    /// <summary>Empty sums for the top <paramref name="k"/> exponents (to merge shards into).</summary>
    public static LyapunovAccumulators Create(int k, bool logDet)
    {
        if (k < 1) throw new ArgumentException($"the number of exponents must be positive (got {k})");
        return new LyapunovAccumulators(k, logDet);
    }

    public void Merge(LyapunovAccumulators other)
    {
        if (other.K != K || other.LogDet != LogDet)
            throw new ArgumentException("Lyapunov sums of different runs (k or the log-det flag differ) cannot be merged");
        for (int c = 0; c <= K; c++) { Sum[c].Add(other.Sum[c]); Sum2[c].Add(other.Sum2[c]); }
        Paths += other.Paths;
    }

    /// <summary>Rounds the exact sums into exponents with standard errors (once, at the end).</summary>
    public LyapunovResult ToResult() => LyapunovResult.FromSums(Sum, Sum2, K, LogDet, Paths);

    /// <summary>"LSUM": the format tag of the Lyapunov sums.</summary>
    const int FormatTag = 0x4D55534C;

    public void Write(BinaryWriter w)
    {
        w.Write(FormatTag); w.Write(K); w.Write(LogDet); w.Write(Paths);
        for (int c = 0; c <= K; c++) { Sum[c].Write(w); Sum2[c].Write(w); }
    }

    /// <summary>Reads what <see cref="Write"/> wrote; <paramref name="k"/> and <paramref name="logDet"/> must match.</summary>
    public static LyapunovAccumulators Read(BinaryReader r, int k, bool logDet)
    {
        if (r.ReadInt32() != FormatTag) throw new InvalidDataException("not Lyapunov sums of this version");
        if (r.ReadInt32() != k || r.ReadBoolean() != logDet) throw new InvalidDataException("the Lyapunov sums were written for another query");
        var a = Create(k, logDet);
        a.Paths = r.ReadInt64();
        for (int c = 0; c <= k; c++) { a.Sum[c].Add(ExactSum.Read(r)); a.Sum2[c].Add(ExactSum.Read(r)); }
        return a;
    }
}

/// <summary>The result of a Lyapunov run: exponents (descending in expectation) with standard errors across paths.</summary>
public sealed class LyapunovResult
{
    public required double[] Exponents { get; init; }
    public required double[] StdErrs { get; init; }
    /// <summary>Mean over paths of the time average of log|det J_n| / Δt on the same window (NaN when not asked).</summary>
    public double LogDetRate { get; init; }
    public double LogDetStdErr { get; init; }
    public long Paths { get; init; }

    /// <summary>Means and standard errors from the exact sums (and sums of squares) of the per-path
    /// exponents 0..k−1 and, at index k, of the log-det rate; one rounding each (every backend merges here).</summary>
    internal static LyapunovResult FromSums(ExactSum[] sum, ExactSum[] sum2, int k, bool logDet, long paths)
    {
        (double mean, double se) At(int c)
        {
            double n = paths;
            double mu = sum[c].Round() / n;
            double v = Math.Max(0, sum2[c].Round() / n - mu * mu) * n / Math.Max(1, n - 1);
            return (mu, Math.Sqrt(v / n));
        }
        var vals = new double[k]; var ses = new double[k];
        for (int c = 0; c < k; c++) (vals[c], ses[c]) = At(c);
        var (ld, ldse) = logDet ? At(k) : (double.NaN, double.NaN);
        return new LyapunovResult { Exponents = vals, StdErrs = ses, LogDetRate = ld, LogDetStdErr = ldse, Paths = paths };
    }
}

/// <summary>One worker thread of the Lyapunov engine: buffers allocated once, one path at a time.</summary>
internal sealed unsafe class LyapunovWorker<TModel> where TModel : struct, ISdeTangentModel
{
    TModel _m;
    readonly TangentStructure _st;
    readonly int d, M, K;
    readonly long N, Nb;
    readonly ulong _seed;
    readonly double _dt, _sq;
    readonly bool _logDet;
    readonly double[] x, y, w, zn, zu, jv, q, z, q0, logR, jd;
    /// <summary>The step normals two steps per draw.</summary>
    readonly StepNormals _pairs;
    readonly double[] piv; // pivot rows (as doubles: see Dense)
    readonly StepProgress _progress;
    public readonly ExactSum[] S, S2;
    public long Paths;

    public LyapunovWorker(TModel model, TangentStructure st, RunSettings s, int k, long nb, long steps, bool logDet, double[] frame, StepProgress progress)
    {
        _m = model; _st = st; d = model.Dim; M = model.NoiseDim; K = k; N = steps; Nb = nb;
        _seed = s.Seed; _dt = s.Dt; _sq = Math.Sqrt(s.Dt); _logDet = logDet; _progress = progress;
        x = new double[d]; y = new double[d]; w = new double[Math.Max(1, M)]; zn = new double[d]; zu = new double[d];
        _pairs = new StepNormals(M);
        jv = new double[Math.Max(1, st.JRow.Length)];
        q = new double[d * k]; z = new double[d * k]; q0 = frame; logR = new double[k + 1];
        jd = logDet ? new double[d * d] : Array.Empty<double>();
        piv = new double[d];
        S = new ExactSum[k + 1]; S2 = new ExactSum[k + 1];
        for (int c = 0; c <= k; c++) { S[c] = new ExactSum(); S2[c] = new ExactSum(); }
    }

    static PtrVec V(double* p) => new PtrVec(p);

    /// <summary>Runs one path; returns the step at which it failed (non-finite state or a collapsed frame), or −1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    public long RunPath(ulong gp)
    {
        var jr = _st.JRow; var jc = _st.JCol;
        int nnz = jr.Length;
        double dt = _dt, sq = _sq;
        Array.Copy(q0, q, q.Length);
        Array.Clear(logR);
        var qa = q; var qb = z;
        fixed (double* px = x, py = y, pw = w, pzn = zn, pzu = zu, pjv = jv)
        {
            Normals.Fill(_seed, gp, 0, Philox.TagInitNormal, pzn, d);
            Normals.FillUniform(_seed, gp, 0, Philox.TagInitUniform, pzu, d);
            _m.Init(V(px), V(pzn), V(pzu));
            double* a = px, b = py;
            for (long n = 0; n < N; n++)
            {
                double t = n * dt;
                if (M > 0) _pairs.Fill(_seed, gp, (ulong)n, Philox.TagStep, pw, M);
                _m.Jacobian(V(a), V(pw), t, dt, sq, V(pjv));
                // Z = J Q, column by column through the sparsity pattern
                Array.Clear(qb);
                for (int c = 0; c < K; c++)
                {
                    int o = c * d;
                    for (int e = 0; e < nnz; e++) qb[o + jr[e]] += jv[e] * qa[o + jc[e]];
                }
                bool average = n >= Nb;
                for (int c = 0; c < K; c++)
                {
                    double r = LyapunovEngine.Orthonormalise(qb, d, c);
                    if (!(r > 0) || !double.IsFinite(r)) return n + 1;
                    if (average) logR[c] += Math.Log(r);
                }
                (qa, qb) = (qb, qa);
                if (_logDet && average)
                {
                    Array.Clear(jd);
                    for (int e = 0; e < nnz; e++) jd[jr[e] * d + jc[e]] += jv[e];
                    if (!Dense.Lu(new ArrayVec(jd), new ArrayVec(piv), d)) return n + 1;
                    double ld = 0;
                    for (int i = 0; i < d; i++) ld += Math.Log(Math.Abs(jd[i * d + i]));
                    logR[K] += ld;
                }
                _m.Step(V(a), V(b), V(pw), t, dt, sq);
                double fin = 0;
                for (int i = 0; i < d; i++) fin += b[i] * 0.0;
                if (fin != 0.0 || double.IsNaN(fin)) return n + 1;
                double* tmp = a; a = b; b = tmp;
                if (((n + 1) & StepProgress.Mask) == 0) _progress.Add(StepProgress.Chunk);
            }
        }
        _progress.Add(N & StepProgress.Mask);
        double scale = 1.0 / ((N - Nb) * dt);
        for (int c = 0; c <= K; c++)
        {
            if (c == K && !_logDet) break;
            double v = logR[c] * scale;
            S[c].Add(v); S2[c].Add(v * v);
        }
        Paths++;
        return -1;
    }
}

/// <summary>Reaches <see cref="LyapunovEngine.Run{TModel}"/> from code that only holds the model's <see cref="Type"/>.</summary>
public interface ILyapunovRunner
{
    LyapunovResult Run(object model, TangentStructure structure, RunSettings settings, int k, double burnin, bool logDet);
}

/// <summary>The CPU Lyapunov engine's exact sums over a path range (sharded runs).</summary>
public interface ILyapunovPartialRunner
{
    LyapunovAccumulators RunPartial(object model, TangentStructure structure, RunSettings settings, int k, double burnin, bool logDet);
}

public sealed class LyapunovRunner<TModel> : ILyapunovRunner, ILyapunovPartialRunner where TModel : struct, ISdeTangentModel
{
    public LyapunovAccumulators RunPartial(object model, TangentStructure structure, RunSettings settings, int k, double burnin, bool logDet)
    {
        var m = (TModel)model;
        return LyapunovEngine.RunPartial(in m, structure, settings, k, burnin, logDet);
    }

    public LyapunovResult Run(object model, TangentStructure structure, RunSettings settings, int k, double burnin, bool logDet)
    {
        var m = (TModel)model;
        return LyapunovEngine.Run(in m, structure, settings, k, burnin, logDet);
    }
}

public static class LyapunovRunner
{
    public static ILyapunovRunner For(Type modelType) =>
        (ILyapunovRunner)Activator.CreateInstance(typeof(LyapunovRunner<>).MakeGenericType(modelType))!;
}
