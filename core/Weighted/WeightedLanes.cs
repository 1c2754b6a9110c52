using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>
/// The weighted engine's steps four paths at a time, through the model's lane step
/// (<see cref="ISdeLaneModel.StepLanes4"/>, whose lanes give the bits of the one-path step) with the four
/// paths' normals from one vectorised Philox (<see cref="Normals.FillAcrossPaths4"/>, each path's own
/// stream). The log weight is a state component, so the lane step advances it with the rest. The
/// population stays row-major (one path per row, as resampling copies it); a group of four rows is
/// gathered into lanes at the start of a segment and scattered back at its end.
/// Built once per model type by reflection, so that the engine's generic code needs no constraint on it.
/// </summary>
abstract unsafe class WeightedLanes<TModel> where TModel : struct, ISdeModel
{
    /// <summary>The lane stepping of the model type; null when it has no lane step.</summary>
    public static readonly WeightedLanes<TModel>? ForType =
        typeof(ISdeLaneModel).IsAssignableFrom(typeof(TModel))
            ? (WeightedLanes<TModel>)Activator.CreateInstance(typeof(WeightedLanesOf<>).MakeGenericType(typeof(TModel)))!
            : null;

    public abstract int LaneWidth(in TModel m);

    /// <summary>Doubles of scratch that <see cref="StepGroups"/> needs: the lanes of x, y and w.</summary>
    public static int Scratch(int d, int nw) => 8 * Math.Max(d, 1) + 8 * Math.Max(nw, 1);

    /// <summary>
    /// Steps seg0 → seg1 the rows p0, p0 + 1, ... of <paramref name="x"/> (row-major, d per row, row p
    /// the path of global index path0 + p) four at a time while a whole group remains before p1. Returns the
    /// first row of a group in which a lane's state stopped being finite (its rows left as they were, for
    /// the one-path step to redo and report), or, when none did, the first row not stepped (p1 − p < 4).
    /// </summary>
    public abstract int StepGroups(ref TModel m, double* x, int d, int nw, int p0, int p1, ulong path0, ulong seed,
        long seg0, long seg1, double dt, double sqdt, double* scratch);
}

sealed unsafe class WeightedLanesOf<TModel> : WeightedLanes<TModel> where TModel : struct, ISdeModel, ISdeLaneModel
{
    public override int LaneWidth(in TModel m) => m.LaneWidth;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override int StepGroups(ref TModel m, double* x, int d, int nw, int p0, int p1, ulong path0, ulong seed,
        long seg0, long seg1, double dt, double sqdt, double* scratch)
    {
        int d4 = 4 * d;
        double* a = scratch, b = a + 4 * Math.Max(d, 1), w = b + 4 * Math.Max(d, 1), w2 = w + 4 * Math.Max(nw, 1);
        int p = p0;
        for (; p + 4 <= p1; p += 4)
        {
            double* rows = x + (long)p * d;
            for (int i = 0; i < d; i++)
                for (int j = 0; j < 4; j++) a[i * 4 + j] = rows[j * d + i];
            double* u = a, v = b;
            ulong gp = path0 + (ulong)p;
            for (long n = seg0; n < seg1; n++)
            {
                // an even step draws its pair when the segment holds the odd one too (one block, two steps)
                double* wn = w;
                if (nw > 0)
                {
                    if ((n & 1) != 0 && n > seg0) wn = w2;
                    else if ((n & 1) == 0 && n + 1 < seg1) Normals.FillAcrossPaths4Pair(seed, gp, (ulong)n >> 1, Philox.TagStep, w, w2, nw);
                    else Normals.FillAcrossPaths4(seed, gp, (ulong)n, Philox.TagStep, w, nw);
                }
                m.StepLanes4(u, v, wn, n * dt, dt, sqdt);
                if (!AllFinite(v, d4)) return p;
                double* t = u; u = v; v = t;
            }
            for (int i = 0; i < d; i++)
                for (int j = 0; j < 4; j++) rows[j * d + i] = u[i * 4 + j];
        }
        return p;
    }

    /// <summary>True if no entry is ±∞ or NaN: v·0 is 0 for finite v and NaN otherwise, and NaN sticks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool AllFinite(double* p, int n)
    {
        var acc = Vector256<double>.Zero;
        for (int i = 0; i < n; i += 4) acc += Vector256.Load(p + i) * Vector256<double>.Zero;
        return Vector256.Sum(acc) == 0.0;
    }
}
