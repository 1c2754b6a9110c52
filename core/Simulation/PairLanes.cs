using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

public static partial class Engine
{
    /// <summary>
    /// Four consecutive coupled pairs (j0 .. j0 + 3) side by side in the vector lanes of the model's lane step
    /// (<see cref="ISdeLaneModel"/>), for <see cref="RunPairs{TModel}"/>: each pair's 2m normals per coarse
    /// step from one four-path Philox call (<see cref="Normals.FillAcrossPaths4"/>, the bits of each pair's own
    /// draw), the coarse normals combined lane by lane with <see cref="Pair{TModel}"/>'s operations, and the
    /// emitted lane step for both chains. A lane gives the scalar step's bits, so every pair's values, and so
    /// the sums, are those of one pair at a time: the results do not depend on which ran a pair. Without lanes
    /// a pair costs about 4.4 plain paths of the four-lane engine (three chain steps per coarse step, one
    /// path at a time); in lanes about three.
    /// </summary>
    abstract unsafe class PairLanes<TModel> where TModel : struct, ISdeModel
    {
        /// <summary>The lanes for this model type, or null when it has none (no lane step, no AVX2, a model wider
        /// than <see cref="MaxAutoLaneDim"/>, or turned off with Lanes = 1, <see cref="LanesOnThisThread"/> or
        /// SDE_LANES=1, as for plain runs). Unlike the main paths no size threshold: the bits are the same.</summary>
        public static PairLanes<TModel>? For(TModel model, RunSettings s)
        {
            if (Instance == null) return null;
            if (((ISdeLaneModel)model).LaneWidth != 4 || !Vector256.IsHardwareAccelerated || !Avx2.IsSupported) return null;
            int want = s.Lanes;
            if (want == 0) want = LanesOnThisThread;
            if (want == 0 && int.TryParse(Environment.GetEnvironmentVariable("SDE_LANES"), out int env)) want = env;
            if (want == 1 || model.Dim > MaxAutoLaneDim) return null;
            return Instance;
        }

        static readonly PairLanes<TModel>? Instance = Make();

        static PairLanes<TModel>? Make()
        {
            if (!typeof(ISdeLaneModel).IsAssignableFrom(typeof(TModel))) return null;
            var t = typeof(PairLanesOf<>).MakeGenericType(typeof(TModel));
            // compiled now, on first use (the driver's untimed warm-up of two pairs, which fill no group of four),
            // not in the middle of the run it would add tens of milliseconds to
            RuntimeHelpers.PrepareMethod(t.GetMethod(nameof(Run))!.MethodHandle, new[] { typeof(TModel).TypeHandle });
            // and the four-path normals it calls (a large AVX2 method, compiled at its first call: some milliseconds)
            RuntimeHelpers.PrepareMethod(typeof(Normals).GetMethod(nameof(Normals.FillAcrossPaths4), new[] { typeof(ulong), typeof(ulong), typeof(ulong), typeof(uint), typeof(double*), typeof(int) })!.MethodHandle);
            return (PairLanes<TModel>)Activator.CreateInstance(t)!;
        }

        /// <summary>
        /// Pairs j0 .. j0 + 3 on one model instance, recorded into lane j's workers <paramref name="wc"/>[j] (at dt)
        /// and <paramref name="wf"/>[j] (at dt/2), not committed: false when a chain of the four left the finite
        /// numbers (the caller then runs the four one at a time, which reports the failure exactly).
        /// </summary>
        public abstract bool Run(ref TModel model, RunSettings s, long steps, ulong j0, PairLaneBuffers b, Worker[] wc, Worker[] wf);
    }

    sealed unsafe class PairLanesOf<TModel> : PairLanes<TModel> where TModel : struct, ISdeModel, ISdeLaneModel
    {
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override bool Run(ref TModel model, RunSettings s, long steps, ulong j0, PairLaneBuffers b, Worker[] wc, Worker[] wf)
        {
            int d = model.Dim, m = model.NoiseDim, d4 = 4 * d, m4 = 4 * m;
            double dt = s.Dt, sqdt = Math.Sqrt(dt), h = dt / 2, sqh = Math.Sqrt(h);
            ulong seed = s.Seed;
            double* a = b.Xc, y = b.Yc, fa = b.Xf, fb = b.Yf, z1 = b.W, z2 = b.W + m4, zc = b.Wc;
            for (int j = 0; j < 4; j++)
            {
                var w = wc[j];
                Normals.Fill(seed, j0 + (ulong)j, 0, TagPairInitNormal, w.Zn, d);
                Normals.FillUniform(seed, j0 + (ulong)j, 0, TagPairInitUniform, w.Zu, d);
                model.Init(new StrideVec(a + j, 4), new StrideVec(w.Zn, 1), new StrideVec(w.Zu, 1));
            }
            if (!Finite(a, d4)) return false;
            for (int i = 0; i < d4; i++) fa[i] = a[i];
            if (wc[0].NeedsObserve(0)) Observe(ref model, wc, a, 0, 0.0);
            if (wf[0].NeedsObserve(0)) Observe(ref model, wf, fa, 0, 0.0);
            double inv = 1 / Math.Sqrt(2), s3 = Math.Sqrt(3), inv8 = 1 / Math.Sqrt(8);
            // as in Pair: SRA's lanes mi .. m − 1 are the ζ of the integral, combined from both fine steps' ξ and ζ
            int mi4 = 4 * (s.IntegralNormals ? m / 2 : m);
            for (long n = 0; n < steps; n++)
            {
                if (m > 0)
                {
                    // pair j's 2m normals at [l·4 + j]: lanes l < m are z1 of Pair, lanes m .. 2m − 1 its z2
                    b.Pairs.FillAcrossPaths4(seed, j0, (ulong)n, TagPairStep, z1, 2 * m);
                    for (int i = 0; i < mi4; i++) zc[i] = (z1[i] + z2[i]) * inv;
                    for (int i = mi4; i < m4; i++) zc[i] = (s3 * (z1[i - mi4] - z2[i - mi4]) + z1[i] + z2[i]) * inv8;
                }
                model.StepLanes4(a, y, zc, n * dt, dt, sqdt);
                model.StepLanes4(fa, fb, z1, (2 * n) * h, h, sqh);
                if (!Finite(fb, d4)) return false;
                if (wf[0].NeedsObserve(2 * n + 1)) Observe(ref model, wf, fb, 2 * n + 1, (2 * n + 1) * h);
                model.StepLanes4(fb, fa, z2, (2 * n + 1) * h, h, sqh);
                if (!Finite(y, d4) || !Finite(fa, d4)) return false;
                double* t = a; a = y; y = t;
                if (wc[0].NeedsObserve(n + 1)) Observe(ref model, wc, a, n + 1, (n + 1) * dt);
                if (wf[0].NeedsObserve(2 * n + 2)) Observe(ref model, wf, fa, 2 * n + 2, (2 * n + 2) * h);
            }
            return true;
        }

        /// <summary>Each lane's observables (the one-path Observe on a strided view of its lane) into its own worker.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Observe(ref TModel model, Worker[] lanes, double* x4, long n, double t)
        {
            for (int j = 0; j < 4; j++)
            {
                var w = lanes[j];
                model.Observe(new StrideVec(x4 + j, 4), t, new StrideVec(w.Obs, 1));
                w.Record(n);
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

    /// <summary>Four pairs' states and normals, lane-major (component i of lane j at [4i + j]); one per thread.</summary>
    sealed unsafe class PairLaneBuffers : IDisposable
    {
        public double* Xc, Yc, Xf, Yf, W, Wc;
        /// <summary>The four pairs' 2m step normals, two coarse steps per draw.</summary>
        public readonly StepNormals Pairs;
        void* _mem;
        public PairLaneBuffers(int d, int m)
        {
            Pairs = new StepNormals(8 * m);
            long d4 = 4L * Math.Max(d, 1), m4 = 4L * Math.Max(m, 1);
            long total = 4 * d4 + 3 * m4;
            _mem = NativeMemory.AlignedAlloc((nuint)(total * 8), 64);
            NativeMemory.Clear(_mem, (nuint)(total * 8));
            Xc = (double*)_mem; Yc = Xc + d4; Xf = Yc + d4; Yf = Xf + d4; W = Yf + d4; Wc = W + 2 * m4;
        }
        public void Dispose() { if (_mem != null) { NativeMemory.AlignedFree(_mem); _mem = null; } }
    }
}
