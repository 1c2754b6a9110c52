using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace Sde.Core.Gpu;

/// <summary>
/// Scalars of one chunk of the Lyapunov kernel and the first scratch row of every per-path array
/// (scratch row r of path p is at r·P + p). The Jacobian pattern is ints[0 .. NJ) (rows) and ints[NJ .. 2NJ) (columns).
/// </summary>
public struct LyaArgs
{
    public ulong Seed;
    public long FirstPath, Count, Steps, Burnin;
    public double Dt, SqDt;
    public int D, M, K, NJ, LogDet;
    // scratch rows
    public long X, Y, W, W2, ZN, ZU, JV, QA, QB, JD, Piv, LogR;
}

/// <summary>
/// The Lyapunov engine (core/Lyapunov/Lyapunov.cs, <c>LyapunovWorker.RunPath</c>) on one path per thread, transcribed
/// operation by operation in the same order: the fixed frame Q_0 (computed on the host by
/// <see cref="LyapunovEngine.InitialFrame"/>), Z = J Q column by column through the sparse pattern, modified
/// Gram–Schmidt, log R_cc summed from the burn-in step, and with LogDet the dense LU of J per step and
/// Σ log|U_ii|. The per-path sums Σ log R_cc (and Σ log|det J|) are written to rows c·P + p of
/// <c>sums</c>; the host scales them and adds them to the same exact sums as the CPU engine.
/// flags[0]: failed paths, flags[1]: first failing step (non-finite state, collapsed frame, singular J).
/// Keep in step with the CPU worker: a change of its arithmetic must be mirrored here (tests Gpu.*).
/// </summary>
public static class LyapunovKernels
{
    public static void Lyapunov<TModel>(Index1D index, TModel model, LyaArgs a, ArrayView<int> ints, ArrayView<double> frame,
        ArrayView<double> scratch, ArrayView<double> sums, ArrayView<long> flags)
        where TModel : unmanaged, ISdeTangentModel
    {
        long i = (int)index;
        if (i >= a.Count) return;
        long P = a.Count;
        int d = a.D, M = a.M, K = a.K, nnz = a.NJ;
        ulong gp = (ulong)(a.FirstPath + i);
        double dt = a.Dt, sq = a.SqDt;
        var x = new SoaVec(scratch, a.X * P + i, P);
        var y = new SoaVec(scratch, a.Y * P + i, P);
        var w = new SoaVec(scratch, a.W * P + i, P);
        var w2 = new SoaVec(scratch, a.W2 * P + i, P); // the odd step of a pair
        var zn = new SoaVec(scratch, a.ZN * P + i, P);
        var zu = new SoaVec(scratch, a.ZU * P + i, P);
        var jv = new SoaVec(scratch, a.JV * P + i, P);
        var qa = new SoaVec(scratch, a.QA * P + i, P);
        var qb = new SoaVec(scratch, a.QB * P + i, P);
        var jd = new SoaVec(scratch, a.JD * P + i, P);
        var piv = new SoaVec(scratch, a.Piv * P + i, P);
        var logR = new SoaVec(scratch, a.LogR * P + i, P);

        for (int e = 0; e < d * K; e++) qa[e] = frame[e];
        for (int c = 0; c <= K; c++) logR[c] = 0.0;
        KernelNormals.Fill(a.Seed, gp, 0, Philox.TagInitNormal, zn, d);
        KernelNormals.FillUniform(a.Seed, gp, 0, Philox.TagInitUniform, zu, d);
        model.Init(x, zn, zu);
        long parity = 0;
        for (long n = 0; n < a.Steps; n++)
        {
            double t = n * dt;
            var xa = parity == 0 ? x : y;
            var xb = parity == 0 ? y : x;
            var za = parity == 0 ? qa : qb;
            var zb = parity == 0 ? qb : qa;
            if (M > 0) KernelNormals.FillStep(a.Seed, gp, n, 0, a.Steps, Philox.TagStep, w, w2, M);
            model.Jacobian(xa, w, t, dt, sq, jv);
            // Z = J Q, column by column through the sparsity pattern
            for (int e = 0; e < d * K; e++) zb[e] = 0.0;
            for (int c = 0; c < K; c++)
            {
                int o = c * d;
                for (int e = 0; e < nnz; e++)
                {
                    int at = o + ints[e];
                    zb[at] = zb[at] + jv[e] * za[o + ints[nnz + e]];
                }
            }
            bool average = n >= a.Burnin;
            for (int c = 0; c < K; c++)
            {
                double r = Orthonormalise(zb, d, c);
                if (!(r > 0) || !(r < double.PositiveInfinity)) { Fail(flags, n + 1); return; }
                if (average) logR[c] = logR[c] + Math.Log(r);
            }
            if (a.LogDet != 0 && average)
            {
                for (int e = 0; e < d * d; e++) jd[e] = 0.0;
                for (int e = 0; e < nnz; e++) { int at = ints[e] * d + ints[nnz + e]; jd[at] = jd[at] + jv[e]; }
                if (!Dense.Lu(jd, piv, d)) { Fail(flags, n + 1); return; }
                double ld = 0;
                for (int r = 0; r < d; r++) ld += Math.Log(Math.Abs(jd[r * d + r]));
                logR[K] = logR[K] + ld;
            }
            model.Step(xa, xb, w, t, dt, sq);
            if (!Kernels.AllFinite(xb, d)) { Fail(flags, n + 1); return; }
            parity = 1 - parity;
        }
        for (int c = 0; c <= K; c++) sums[c * P + i] = logR[c];
    }

    static void Fail(ArrayView<long> flags, long step)
    {
        Atomic.Add(ref flags[0], 1L);
        Atomic.Min(ref flags[1], step);
    }

    /// <summary>Modified Gram–Schmidt on column c of z against columns 0..c−1 (<see cref="LyapunovEngine.Orthonormalise"/>); returns the norm before normalising.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static double Orthonormalise(SoaVec z, int d, int c)
    {
        int oc = c * d;
        for (int p = 0; p < c; p++)
        {
            int op = p * d;
            double r = 0;
            for (int i = 0; i < d; i++) r += z[op + i] * z[oc + i];
            for (int i = 0; i < d; i++) z[oc + i] = z[oc + i] - r * z[op + i];
        }
        double s = 0;
        for (int i = 0; i < d; i++) s += z[oc + i] * z[oc + i];
        double norm = Math.Sqrt(s);
        double inv = 1.0 / norm;
        for (int i = 0; i < d; i++) z[oc + i] = z[oc + i] * inv;
        return norm;
    }
}

/// <summary>Host side of the Lyapunov kernel: checks as <see cref="LyapunovEngine.Run{TModel}"/>, scratch layout, chunks, exact sums.</summary>
public static class GpuLyapunov
{
    static class Cache<TModel> where TModel : unmanaged, ISdeTangentModel
    {
        public static Action<Index1D, TModel, LyaArgs, ArrayView<int>, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<long>>? Kernel;
        public static Accelerator? For;
    }

    static long _launches;
    /// <summary>Kernel launches so far in this process (tests: a Lyapunov query ran on the kernel, not on the CPU engine).</summary>
    public static long Launches => Interlocked.Read(ref _launches);

    public static LyapunovResult Run<TModel>(GpuBackend backend, TModel model, TangentStructure st, RunSettings s, int k, double burnin, bool logDet)
        where TModel : unmanaged, ISdeTangentModel
    {
        ArgumentNullException.ThrowIfNull(st);
        // the CPU engine's checks and messages
        long steps = Engine.CheckSettings(s);
        int d = model.Dim, m = model.NoiseDim;
        if (k < 1 || k > d) throw new ArgumentException($"the number of exponents must be in 1..{d} (got {k})");
        if (s.Paths < 1) throw new ArgumentException("a Lyapunov run needs at least one path");
        long nb = (long)Math.Ceiling(burnin / s.Dt - 1e-9);
        if (burnin < 0 || nb >= steps) throw new ArgumentException($"the averaging window [burnin, T] holds no step (burnin = {burnin}, T = {s.T}, dt = {s.Dt})");

        int nnz = st.JRow.Length;
        var ints = st.JRow.Concat(st.JCol).ToArray();
        if (ints.Length == 0) ints = new int[1];
        var q0 = LyapunovEngine.InitialFrame(d, k);

        long R = 0;
        long Take(long n) { long r = R; R += Math.Max(1, n); return r; }
        var a = new LyaArgs
        {
            Seed = s.Seed, Steps = steps, Burnin = nb, Dt = s.Dt, SqDt = Math.Sqrt(s.Dt), D = d, M = m, K = k, NJ = nnz, LogDet = logDet ? 1 : 0,
        };
        a.X = Take(d); a.Y = Take(d); a.W = Take(m); a.W2 = Take(m); a.ZN = Take(d); a.ZU = Take(d); a.JV = Take(nnz);
        a.QA = Take((long)d * k); a.QB = Take((long)d * k); a.JD = Take(logDet ? (long)d * d : 1); a.Piv = Take(d); a.LogR = Take(k + 1);
        int rows = k + 1;

        var dev = GpuDevice.Get(backend);
        var acc = dev.Accelerator;
        long perPath = 8L * (R + rows);
        long chunk = dev.Chunk(perPath, s, $" for lyapunov({k})", $"dimension {d}, {R} scratch values", "ask for fewer exponents or use the CPU backend");

        Action<Index1D, TModel, LyaArgs, ArrayView<int>, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<long>> kernel;
        lock (typeof(Cache<TModel>))
        {
            if (Cache<TModel>.Kernel == null || Cache<TModel>.For != acc)
            {
                Cache<TModel>.Kernel = acc.LoadAutoGroupedStreamKernel<Index1D, TModel, LyaArgs, ArrayView<int>, ArrayView<double>,
                    ArrayView<double>, ArrayView<double>, ArrayView<long>>(LyapunovKernels.Lyapunov<TModel>);
                Cache<TModel>.For = acc;
            }
            kernel = Cache<TModel>.Kernel;
        }

        using var ibuf = acc.Allocate1D(ints);
        using var fbuf = acc.Allocate1D(q0);
        using var scratch = acc.Allocate1D<double>(R * chunk);
        using var sbuf = acc.Allocate1D<double>(rows * chunk);
        using var flags = acc.Allocate1D<long>(2);
        var host = new double[rows * chunk];
        var hostFlags = new long[2];
        var sum = new ExactSum[rows]; var sum2 = new ExactSum[rows];
        for (int c = 0; c < rows; c++) { sum[c] = new ExactSum(); sum2[c] = new ExactSum(); }
        double scale = 1.0 / ((steps - nb) * s.Dt);
        long paths = 0;

        var launches = new LaunchSizer(dev, chunk, steps);
        for (long p0 = 0, pc = 0; p0 < s.Paths; p0 += pc)
        {
            s.Cancel.ThrowIfCancellationRequested();
            pc = launches.Next(s.Paths - p0);
            a.FirstPath = s.FirstPath + p0; a.Count = pc;
            hostFlags[0] = 0; hostFlags[1] = long.MaxValue;
            flags.View.CopyFromCPU(hostFlags);
            kernel((int)pc, model, a, ibuf.View, fbuf.View, scratch.View, sbuf.View, flags.View);
            Interlocked.Increment(ref _launches);
            acc.Synchronize();
            launches.Done(pc);
            flags.View.CopyToCPU(hostFlags);
            if (hostFlags[0] > 0) throw new SimulationFailedException(hostFlags[1], hostFlags[1] * s.Dt, hostFlags[0], p0 + pc, s.Paths); // every path of the chunk ran
            ((ArrayView<double>)sbuf.View).SubView(0, rows * pc).CopyToCPU(host.AsSpan(0, (int)(rows * pc)));
            // as LyapunovWorker.RunPath's end: v = Σ log R_cc · scale into S, v² into S2
            for (int c = 0; c < rows; c++)
            {
                if (c == k && !logDet) break;
                for (long q = 0; q < pc; q++)
                {
                    double v = host[c * pc + q] * scale;
                    sum[c].Add(v); sum2[c].Add(v * v);
                }
            }
            paths += pc;
            s.Progress?.Invoke((double)(p0 + pc) / s.Paths);
        }

        return LyapunovResult.FromSums(sum, sum2, k, logDet, paths);
    }
}

/// <summary><see cref="ILyapunovRunner"/> on an ILGPU backend: <see cref="GpuLyapunov.Run{TModel}"/>.</summary>
public sealed class GpuLyapunovRunner<TModel> : ILyapunovRunner where TModel : unmanaged, ISdeTangentModel
{
    readonly GpuBackend _backend;
    public GpuLyapunovRunner(GpuBackend backend) { _backend = backend; }

    public LyapunovResult Run(object model, TangentStructure structure, RunSettings settings, int k, double burnin, bool logDet)
    {
        var m = (TModel)model;
        return GpuLyapunov.Run(_backend, m, structure, settings, k, burnin, logDet);
    }
}
