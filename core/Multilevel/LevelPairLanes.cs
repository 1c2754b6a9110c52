using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>
/// Four consecutive samples of a level side by side in the vector lanes (the engine's lanes,
/// <see cref="ISdeLaneModel"/>): the fine increments of the four paths from one vectorised Philox call
/// (<see cref="Normals.FillAcrossPaths4"/>, the bits of each path's own draw), the coarse increment their
/// sum, and the emitted four-lane step for the fine and the coarse paths. A lane gives the scalar bits
/// (single IEEE operations per lane, transcendentals per lane by the scalar code), so a sample's values are
/// those of <see cref="LevelPair"/>'s one-sample path: the results do not depend on which ran it.
/// </summary>
internal abstract unsafe class CoupledLanes<TModel> where TModel : struct, ISdeModel
{
    /// <summary>The lanes for this model type, or null when it has none (no lane step, no AVX2, or turned off
    /// with Lanes = 1, <see cref="Engine.LanesOnThisThread"/> or SDE_LANES=1, as for plain runs).</summary>
    public static CoupledLanes<TModel>? For(TModel model, RunSettings s)
    {
        if (!typeof(ISdeLaneModel).IsAssignableFrom(typeof(TModel))) return null;
        if (((ISdeLaneModel)model).LaneWidth != 4 || !Vector256.IsHardwareAccelerated || !Avx2.IsSupported) return null;
        int want = s.Lanes;
        if (want == 0) want = Engine.LanesOnThisThread;
        if (want == 0 && int.TryParse(Environment.GetEnvironmentVariable("SDE_LANES"), out int env)) want = env;
        if (want == 1 || model.Dim > Engine.MaxAutoLaneDim) return null;
        return Instance;
    }

    static readonly CoupledLanes<TModel>? Instance =
        typeof(ISdeLaneModel).IsAssignableFrom(typeof(TModel))
            ? (CoupledLanes<TModel>)Activator.CreateInstance(typeof(CoupledLanesOf<>).MakeGenericType(typeof(TModel)))!
            : null;

    /// <summary>
    /// Samples p .. p + 3 of the level on model instance <paramref name="who"/>, their plans' window sums into
    /// lane j's row of <paramref name="sumF"/> and <paramref name="sumC"/> (plan i of lane j at [j·k + i]): false when a path of the four is not
    /// finite (the caller runs the four one at a time, which reports the failure exactly).
    /// </summary>
    public abstract bool Run(ref TModel model, LevelPair.Ctx c, LaneBuffers b, ulong p, int who, double* sumF, double* sumC, int stride);
}

internal sealed unsafe class CoupledLanesOf<TModel> : CoupledLanes<TModel> where TModel : struct, ISdeModel, ISdeLaneModel
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override bool Run(ref TModel model, LevelPair.Ctx c, LaneBuffers b, ulong p, int who, double* sumF, double* sumC, int stride)
    {
        int d = model.Dim, m = model.NoiseDim, d4 = 4 * d;
        ulong gp = c.Base + p, seed = c.Seed;
        double* xf = b.Xf, yf = b.Yf, xc = b.Xc, yc = b.Yc, w1 = b.W1, w2 = b.W2, wc = b.Wc, obs = b.Obs;
        if (c.X0 is double[][] x0s)
        {
            // an init without draws: its state, computed once, in the four lanes
            var x0 = x0s[who];
            for (int i = 0; i < d; i++) { double v = x0[i]; xf[4 * i] = v; xf[4 * i + 1] = v; xf[4 * i + 2] = v; xf[4 * i + 3] = v; }
        }
        else
        {
            for (int j = 0; j < 4; j++)
            {
                Normals.Fill(seed, gp + (ulong)j, 0, Philox.TagInitNormal, b.Zn, d);
                Normals.FillUniform(seed, gp + (ulong)j, 0, Philox.TagInitUniform, b.Zu, d);
                model.Init(new StrideVec(xf + j, 4), new StrideVec(b.Zn, 1), new StrideVec(b.Zu, 1));
            }
            if (!Finite(xf, d4)) return false;
        }
        for (int i = 0; i < d4; i++) xc[i] = xf[i];
        bool coupled = c.Level > 0;
        if (c.FFrom == 0) Observe(ref model, c, c.Lf, who, xf, obs, 0, 0.0, sumF, stride);
        if (coupled && c.CFrom == 0) Observe(ref model, c, c.Lc, who, xc, obs, 0, 0.0, sumC, stride);
        double dtf = c.Dtf, sqf = c.SqDtf, dtc = c.Dtc, sqc = c.SqDtc;
        const double InvSqrt2 = 0.70710678118654752440;
        long nf = c.Nf;
        if (!coupled)
        {
            for (long n = 0; n < nf; n++)
            {
                if (m > 0) b.Pairs.FillAcrossPaths4(seed, gp, (ulong)n, Philox.TagStep, w1, m);
                model.StepLanes4(xf, yf, w1, n * dtf, dtf, sqf);
                if (!Finite(yf, d4)) return false;
                { double* t = xf; xf = yf; yf = t; }
                long n1 = n + 1;
                if (n1 >= c.FFrom && n1 <= c.FTo) Observe(ref model, c, c.Lf, who, xf, obs, n1, n1 * dtf, sumF, stride);
            }
        }
        else
        {
            int m4 = 4 * m;
            for (long k = 0; k < nf / 2; k++)
            {
                long n = 2 * k;
                // the fine steps n, n + 1 are one step pair: one draw for both (w2 waits for the second)
                if (m > 0) Normals.FillAcrossPaths4Pair(seed, gp, (ulong)k, Philox.TagStep, w1, w2, m);
                model.StepLanes4(xf, yf, w1, n * dtf, dtf, sqf);
                if (!Finite(yf, d4)) return false;
                { double* t = xf; xf = yf; yf = t; }
                if (n + 1 >= c.FFrom && n + 1 <= c.FTo) Observe(ref model, c, c.Lf, who, xf, obs, n + 1, (n + 1) * dtf, sumF, stride);
                model.StepLanes4(xf, yf, w2, (n + 1) * dtf, dtf, sqf);
                if (!Finite(yf, d4)) return false;
                { double* t = xf; xf = yf; yf = t; }
                if (n + 2 >= c.FFrom && n + 2 <= c.FTo) Observe(ref model, c, c.Lf, who, xf, obs, n + 2, (n + 2) * dtf, sumF, stride);
                // the coarse step on the same Brownian increment, lane by lane as the one-sample path
                for (int j = 0; j < m4; j++) wc[j] = (w1[j] + w2[j]) * InvSqrt2;
                model.StepLanes4(xc, yc, wc, k * dtc, dtc, sqc);
                if (!Finite(yc, d4)) return false;
                { double* t = xc; xc = yc; yc = t; }
                if (k + 1 >= c.CFrom && k + 1 <= c.CTo) Observe(ref model, c, c.Lc, who, xc, obs, k + 1, (k + 1) * dtc, sumC, stride);
            }
        }
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Observe(ref TModel model, LevelPair.Ctx c, QueryLayout[] lay, int who, double* x4, double* obs, long n, double t, double* sums, int stride)
    {
        for (int j = 0; j < 4; j++)
        {
            model.Observe(new StrideVec(x4 + j, 4), t, new StrideVec(obs, 1));
            LevelPair.Record(c, lay, who, obs, n, sums + j * stride);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool Finite(double* p, int n)
    {
        double r = 0;
        for (int i = 0; i < n; i++) r += p[i] * 0.0;
        return r == 0.0;
    }
}

/// <summary>The four paths' states and increments, interleaved (component i of lane j at [4i + j]).</summary>
internal sealed unsafe class LaneBuffers : IDisposable
{
    public double* Xf, Yf, Xc, Yc, W1, W2, Wc, Zn, Zu, Obs;
    /// <summary>A level-0 group's step normals, two steps per draw.</summary>
    public readonly StepNormals Pairs;
    void* _mem;
    public LaneBuffers(int d, int m, int nobs)
    {
        Pairs = new StepNormals(4 * m);
        long d4 = 4L * Math.Max(d, 1), m4 = 4L * Math.Max(m, 1), dp = Math.Max(d, 1), op = Math.Max(nobs, 1);
        long total = 4 * d4 + 3 * m4 + 2 * dp + op;
        _mem = NativeMemory.AlignedAlloc((nuint)(total * 8), 64);
        double* q = (double*)_mem;
        NativeMemory.Clear(q, (nuint)(total * 8));
        Xf = q; Yf = Xf + d4; Xc = Yf + d4; Yc = Xc + d4; W1 = Yc + d4; W2 = W1 + m4; Wc = W2 + m4; Zn = Wc + m4; Zu = Zn + dp; Obs = Zu + dp;
    }
    public void Dispose() { if (_mem != null) { NativeMemory.AlignedFree(_mem); _mem = null; } }
}
