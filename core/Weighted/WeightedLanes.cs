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

    /// <summary>Doubles of scratch that <see cref="StepGroups"/> needs: per group of four (two at most) the lanes of
    /// x and y and a batch of steps' normals.</summary>
    public static int Scratch(int d, int nw) => 2 * (8 * Math.Max(d, 1) + 4 * Math.Max(nw, 1) * Engine.BatchSteps(nw));

    /// <summary>
    /// Steps seg0 → seg1 the rows p0, p0 + 1, ... of <paramref name="x"/> (row-major, d per row, row p
    /// the path of global index path0 + p) four at a time while a whole group remains before p1. Returns the
    /// first row of a group in which a lane's state stopped being finite (its rows left as they were, for
    /// the one-path step to redo and report), or, when none did, the first row not stepped (p1 − p < 4).
    /// A segment whose last step is even (and not the second of a pair it steps) draws that step's pair and keeps the odd step in
    /// <paramref name="odd"/> (group p's at odd + p·nw, its step in oddStep[p / 4]) for the next segment,
    /// when <paramref name="odd"/> is not null. With <paramref name="rec"/> (not null), the log weight (component
    /// <paramref name="lw"/>) of row p after step k goes to rec[(k − seg0)·recStride + p − recP0]: the engine's
    /// multi-step segments look for the first step whose ESS may call for a resampling.
    /// </summary>
    public abstract int StepGroups(ref TModel m, double* x, int d, int nw, int p0, int p1, ulong path0, ulong seed,
        long seg0, long seg1, double dt, double sqdt, double* scratch, double* odd, long* oddStep,
        double* rec, int recStride, int recP0, int lw);
}

sealed unsafe class WeightedLanesOf<TModel> : WeightedLanes<TModel> where TModel : struct, ISdeModel, ISdeLaneModel
{
    public override int LaneWidth(in TModel m) => m.LaneWidth;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override int StepGroups(ref TModel m, double* x, int d, int nw, int p0, int p1, ulong path0, ulong seed,
        long seg0, long seg1, double dt, double sqdt, double* scratch, double* odd, long* oddStep,
        double* rec, int recStride, int recP0, int lw)
    {
        int d4 = 4 * d, dd = 4 * Math.Max(d, 1), batch = Engine.BatchSteps(nw), wstep = 4 * nw;
        // per group: the states x, y in lanes and `batch` steps of normals (as the plain engine's groups)
        double* a = scratch, b = a + dd, w = b + dd;
        double* a2 = w + 4 * Math.Max(nw, 1) * batch, b2 = a2 + dd, w2 = b2 + dd;
        // a model of a few states steps two groups side by side (their dependency chains overlap)
        bool two = d <= Engine.MaxTwoGroupDim;
        int p = p0;
        while (p + 4 <= p1)
        {
            bool pair = two && p + 8 <= p1;
            Gather(x + (long)p * d, d, a);
            if (pair) Gather(x + (long)(p + 4) * d, d, a2);
            double* u = a, v = b, u2 = a2, v2 = b2;
            ulong gp = path0 + (ulong)p;
            long n = seg0;
            // an odd first step alone (a one-step segment's even step too): from the pair kept by the
            // segment before, or drawn with its partner and kept for the next segment
            if ((n & 1) != 0 || seg1 - seg0 == 1)
            {
                if (!Alone(ref m, seed, gp, n, nw, w, w2, odd, oddStep, p, pair, d4, dt, sqdt, ref u, ref v, ref u2, ref v2)) return p;
                if (rec != null) Record(rec + (n - seg0) * recStride + (p - recP0), u, u2, lw, pair);
                n++;
            }
            // the rest from even steps in batches of step pairs; a last even step alone (a segment of odd length)
            // draws its pair too and keeps the odd step for the next segment, where it can
            bool keepLast = odd != null && nw > 0 && ((seg1 - n) & 1) != 0;
            long batched = keepLast ? seg1 - 1 : seg1;
            for (long n0 = n; n0 < batched; n0 += batch)
            {
                long nEnd = Math.Min(n0 + batch, batched);
                if (nw > 0)
                {
                    Normals.FillAcrossPaths4Steps(seed, gp, (ulong)n0, (int)(nEnd - n0), Philox.TagStep, w, nw);
                    if (pair) Normals.FillAcrossPaths4Steps(seed, gp + 4, (ulong)n0, (int)(nEnd - n0), Philox.TagStep, w2, nw);
                }
                double* wn = w, wn2 = w2;
                for (long k = n0; k < nEnd; k++, wn += wstep, wn2 += wstep)
                {
                    m.StepLanes4(u, v, wn, k * dt, dt, sqdt);
                    if (pair) m.StepLanes4(u2, v2, wn2, k * dt, dt, sqdt);
                    if (!AllFinite(v, d4) || (pair && !AllFinite(v2, d4))) return p;
                    double* t = u; u = v; v = t;
                    t = u2; u2 = v2; v2 = t;
                    if (rec != null) Record(rec + (k - seg0) * recStride + (p - recP0), u, u2, lw, pair);
                }
            }
            if (keepLast)
            {
                long k = seg1 - 1;
                if (!Alone(ref m, seed, gp, k, nw, w, w2, odd, oddStep, p, pair, d4, dt, sqdt, ref u, ref v, ref u2, ref v2)) return p;
                if (rec != null) Record(rec + (k - seg0) * recStride + (p - recP0), u, u2, lw, pair);
            }
            Scatter(u, d, x + (long)p * d);
            if (pair) Scatter(u2, d, x + (long)(p + 4) * d);
            p += pair ? 8 : 4;
        }
        return p;
    }

    /// <summary>Step n alone for group p (and p + 4 beside it), its normals by <see cref="OneStep"/>; u, v (u2, v2)
    /// swapped after it. False when a lane's state stopped being finite.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool Alone(ref TModel m, ulong seed, ulong gp, long n, int nw, double* w, double* w2, double* odd, long* oddStep,
        int p, bool pair, int d4, double dt, double sqdt, ref double* u, ref double* v, ref double* u2, ref double* v2)
    {
        double* wn = OneStep(seed, gp, n, nw, w, odd, oddStep, p);
        m.StepLanes4(u, v, wn, n * dt, dt, sqdt);
        if (!AllFinite(v, d4)) return false;
        if (pair)
        {
            double* wn2 = OneStep(seed, gp + 4, n, nw, w2, odd, oddStep, p + 4);
            m.StepLanes4(u2, v2, wn2, n * dt, dt, sqdt);
            if (!AllFinite(v2, d4)) return false;
        }
        double* t = u; u = v; v = t;
        t = u2; u2 = v2; v2 = t;
        return true;
    }

    /// <summary>
    /// The normals of group p's step n alone: kept from the segment before (odd n), or, for an even n
    /// with <paramref name="odd"/> there, drawn with n + 1 and n + 1's kept; else drawn alone into w.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double* OneStep(ulong seed, ulong gp, long n, int nw, double* w, double* odd, long* oddStep, int p)
    {
        if (nw == 0) return w;
        double* kept = odd != null ? odd + (long)p * nw : null;
        if ((n & 1) != 0 && kept != null && oddStep[p >> 2] == n) return kept;
        if ((n & 1) == 0 && kept != null)
        {
            Normals.FillAcrossPaths4Pair(seed, gp, (ulong)n >> 1, Philox.TagStep, w, kept, nw);
            oddStep[p >> 2] = n + 1;
        }
        else Normals.FillAcrossPaths4(seed, gp, (ulong)n, Philox.TagStep, w, nw);
        return w;
    }

    /// <summary>The log weights of a group (and of the second group beside it) after a step, in path order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Record(double* dst, double* u, double* u2, int lw, bool pair)
    {
        Vector256.Load(u + 4 * lw).Store(dst);
        if (pair) Vector256.Load(u2 + 4 * lw).Store(dst + 4);
    }

    /// <summary>Rows r .. r+3 (d each) into lanes: component i of row j at [i·4 + j].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Gather(double* rows, int d, double* lanes)
    {
        for (int i = 0; i < d; i++)
            for (int j = 0; j < 4; j++) lanes[i * 4 + j] = rows[j * d + i];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Scatter(double* lanes, int d, double* rows)
    {
        for (int i = 0; i < d; i++)
            for (int j = 0; j < 4; j++) rows[j * d + i] = lanes[i * 4 + j];
    }

    /// <summary>True if no entry is ±∞ or NaN: v·0 is 0 for finite v and NaN otherwise, and NaN sticks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool AllFinite(double* p, int n)
    {
        var acc = Vector256<double>.Zero;
        for (int i = 0; i < n; i += 4) acc += Vector256.Load(p + i) * Vector256<double>.Zero;
        return Vector256.EqualsAll(acc, Vector256<double>.Zero);
    }
}
