using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>
/// The response engine's lanes over paths for one-state models: four paths per step in the lanes of a
/// <see cref="Vector256{T}"/>, for the runs the one-path worker handles in exact mode (a 1-D model's default)
/// with divergence-kernel plans only. Such a run spends most of its time in the worker's per-path
/// bookkeeping around a few scalar operations per step (the Ornstein–Uhlenbeck response ran below a numpy
/// script of the same recursion); here the step, the derivatives (the model's emitted
/// <see cref="ISdeLaneModel.TangentLanes4"/>) and the DK recursion run four paths per operation.
/// Each lane makes the one-path worker's operations in its order (<see cref="Worker{TModel}"/>'s
/// <c>Pre</c>, <c>DkBegin</c>, <c>DkEnd</c> and <c>Post</c> for d = 1 and diagonal noise), so each lane has the
/// bits of that path run alone; the workers still start the paths, take their samples and keep their sums.
/// </summary>
public static class ResponseLanes1
{
    /// <summary>The largest state dimension the lanes take (the compiler emits <see cref="ISdeLaneModel.TangentLanes4"/> up to it).</summary>
    public const int MaxDim = 1;

    /// <summary>
    /// Is the run of the shape the lanes take: one state, one noise, exact DK groups (any number, with
    /// pathwise and finite-difference plans beside them), no stationary windows, alignment or recording?
    /// Such a run's path blocks are multiples of four whether the lanes run or not, so that a failure's
    /// count of the paths that ran is the same both ways.
    /// </summary>
    internal static bool Shape(ResponseEngine.Setup u) =>
        u.D == 1 && u.M == 1 && u.DiagonalNoise && u.Groups.All(g => g.Mode == DkMode.Exact)
        && !u.NeedAlign && u.Record == null && u.WindowSteps.All(w => w == 0);

    /// <summary>Do the lanes take this run: its shape, the model's lane methods, and the lanes chosen (hardware, settings, SDE_LANES)?</summary>
    internal static bool Takes<TModel>(TModel model, ResponseEngine.Setup u) where TModel : struct, ISdeTangentModel =>
        Shape(u) && model is ISdeLaneModel { LaneWidth: 4, TangentLaneWidth: 4 } && Engine.ChooseLanes(u.S, 4, u.D);
}

/// <summary>The lane run of <see cref="ResponseLanes1"/> for a model type (created where the type has the lane methods).</summary>
internal abstract class OneStateLanes<TModel> where TModel : struct, ISdeTangentModel
{
    public abstract void RunBlock(Worker<TModel>[] lanes, ulong first, long count, Action<long> fail);

    public static OneStateLanes<TModel>? For(TModel model, TModel[] variants, ResponseEngine.Setup u, StepProgress progress)
    {
        if (!ResponseLanes1.Takes(model, u)) return null;
        var t = typeof(OneStateLanesOf<>).MakeGenericType(typeof(TModel));
        return (OneStateLanes<TModel>)Activator.CreateInstance(t, model, variants, u, progress)!;
    }
}

internal sealed unsafe class OneStateLanesOf<TModel> : OneStateLanes<TModel> where TModel : struct, ISdeTangentModel, ISdeLaneModel
{
    const int L = 4;
    readonly ResponseEngine.Setup U;
    TModel _m;
    readonly TModel[] _variants;
    readonly StepProgress _progress;
    readonly int _batch;
    // pinned, rows of four lanes: the state (two buffers), a batch of step normals, the derivative values
    readonly double[] _xBuf, _wBuf, _vBuf;
    readonly double* _x0, _x1, _w, _v;
    // rows of _v: the J entries, the Hessian entries, σ's entry, and per parameter χ, Dχ and ∂σ
    readonly int _nJ, _h0, _g0;
    readonly int[] _chi, _dchi, _dg;
    readonly Vector256<double>[][] _nu;      // per group
    readonly Vector256<double>[][] _ell;     // per group, per parameter
    readonly Vector256<double>[] _v0;        // per parameter: ∂_γx₀ (a point init's first step)
    readonly Vector256<double>[] _tan;       // per pathwise parameter: the tangent v
    // per finite-difference variant in use: its state (two rows of four lanes, swapped each step)
    readonly double[][] _xvBuf;
    int _half; // which row of each variant's buffer holds its current state
    readonly long _sampleFrom, _sampleTo;

    public OneStateLanesOf(TModel model, TModel[] variants, ResponseEngine.Setup u, StepProgress progress)
    {
        U = u; _m = model; _variants = variants; _progress = progress;
        var st = u.St;
        _batch = Engine.BatchSteps(1);
        _xBuf = GC.AllocateArray<double>(2 * L, pinned: true);
        _wBuf = GC.AllocateArray<double>(_batch * L, pinned: true);
        _nJ = st.JRow.Length; _h0 = _nJ; _g0 = _h0 + st.HRow.Length;
        int np = u.NParams;
        _chi = new int[np]; _dchi = new int[np]; _dg = new int[np];
        int row = _g0 + st.GRow.Length;
        for (int k = 0; k < np; k++)
        {
            _chi[k] = row; row += u.D;
            _dchi[k] = row; row += st.DChiRow[k].Length;
            _dg[k] = row; row += st.DgRow[k].Length;
        }
        _vBuf = GC.AllocateArray<double>(Math.Max(1, row) * L, pinned: true);
        _x0 = P(_xBuf); _x1 = _x0 + L; _w = P(_wBuf); _v = P(_vBuf);
        _nu = new Vector256<double>[u.Groups.Length][];
        _ell = new Vector256<double>[u.Groups.Length][];
        for (int g = 0; g < _nu.Length; g++) { _nu[g] = new Vector256<double>[1]; _ell[g] = new Vector256<double>[Math.Max(1, np)]; }
        _v0 = new Vector256<double>[Math.Max(1, np)];
        _tan = new Vector256<double>[Math.Max(1, np)];
        _xvBuf = new double[variants.Length][];
        foreach (int q in u.Variants) _xvBuf[q] = GC.AllocateArray<double>(2 * L, pinned: true);
        _sampleFrom = long.MaxValue; _sampleTo = long.MinValue;
        for (int i = 0; i < u.Plans.Length; i++)
            if (u.From[i] <= u.To[i]) { _sampleFrom = Math.Min(_sampleFrom, u.From[i]); _sampleTo = Math.Max(_sampleTo, u.To[i]); }
    }

    static double* P(double[] a) => (double*)Unsafe.AsPointer(ref a[0]);

    static Vector256<double> Row(double* p, int r) => Vector256.Load(p + r * L);

    /// <summary>Blocks run (a test's evidence that the lanes ran).</summary>
    internal static long Blocks;

    public override void RunBlock(Worker<TModel>[] lanes, ulong first, long count, Action<long> fail)
    {
        Interlocked.Increment(ref Blocks);
        for (long p0 = 0; p0 < count; p0 += L)
        {
            int k = (int)Math.Min(L, count - p0);
            for (int i = 0; i < k; i++) lanes[i].Begin(first + (ulong)(p0 + i));
            Gather(lanes, k);
            int live = (1 << k) - 1;
            RunPaths(lanes, first + (ulong)p0, k, ref live, fail);
            for (int i = 0; i < k; i++) if ((live >> i & 1) != 0) lanes[i].End();
        }
    }

    /// <summary>The started paths' state, covectors, weights and initial tangents into the lanes (idle lanes copy lane 0).</summary>
    void Gather(Worker<TModel>[] lanes, int k)
    {
        var t = _scratch;
        Vector256<double> Lanes(Func<Worker<TModel>, double> f)
        {
            for (int i = 0; i < L; i++) t[i] = f(lanes[i < k ? i : 0]);
            return Vector256.Create(t[0], t[1], t[2], t[3]);
        }
        Lanes(w => w.State[0]).Store(_x0);
        for (int g = 0; g < _nu.Length; g++)
        {
            int gg = g;
            _nu[g][0] = Lanes(w => w.Nu(gg)[0]);
            for (int q = 0; q < U.NParams; q++) { int qq = q; _ell[g][q] = Lanes(w => w.Ell(gg)[qq]); }
        }
        for (int q = 0; q < U.NParams; q++) { int qq = q; _v0[q] = Lanes(w => w.InitTangent(qq)); }
        foreach (int q in U.PathwiseWhich) { int qq = q; _tan[q] = Lanes(w => w.Tangent(qq)[0]); }
        foreach (int q in U.Variants) { int qq = q; Lanes(w => w.VariantState(qq)[0]).Store(P(_xvBuf[q])); }
    }
    readonly double[] _scratch = new double[L];

    /// <summary>Lane i's state, covectors and weights into its worker, which samples at step n.</summary>
    void Sample(Worker<TModel> w, int i, double* x, long n)
    {
        w.State[0] = x[i];
        for (int g = 0; g < _nu.Length; g++)
        {
            w.Nu(g)[0] = _nu[g][0].GetElement(i);
            var e = w.Ell(g);
            for (int q = 0; q < U.NParams; q++) e[q] = _ell[g][q].GetElement(i);
        }
        foreach (int q in U.PathwiseWhich) w.Tangent(q)[0] = _tan[q].GetElement(i);
        foreach (int q in U.Variants) w.VariantState(q)[0] = _xvBuf[q][_half * L + i];
        w.SampleAt(n);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    void RunPaths(Worker<TModel>[] lanes, ulong path0, int k, ref int live, Action<long> fail)
    {
        var u = U;
        var st = u.St;
        double dt = u.Dt, sq = u.SqDt;
        var vsq = Vector256.Create(sq);
        double* x = _x0, y = _x1, v = _v;
        int nH = st.HRow.Length;
        int[] hByK = u.HByK;
        int hFrom = u.HStart[0], hTo = u.HStart[1];
        int sigRow = _g0 + u.NoiseIndexOfRow[0];
        bool initScore = st.InitHasScore, detInit = u.DetInitMask[0];
        var groups = u.Groups;
        int[] pathwise = u.PathwiseWhich, variants = u.Variants;
        long steps = u.Steps;
        _half = 0;
        for (long n = 0; n < steps && live != 0; n++)
        {
            long b = n % _batch;
            if (b == 0) Normals.FillAcrossPaths4Steps(u.S.Seed, path0, (ulong)n, (int)Math.Min(_batch, steps - n), Philox.TagStep, _w, 1);
            double* pw = _w + b * L;
            double t = n * dt;
            _m.TangentLanes4(x, pw, t, dt, sq, v);
            // PrepareNoise: σ⁺ᵀw = w / (σ √Δt)
            var sv = Row(v, sigRow);
            var spw = Vector256.Load(pw) / (sv * vsq);
            for (int g = 0; g < groups.Length; g++)
            {
                var grp = groups[g];
                // DkBegin: α, J⁻¹ (Dense.Lu and Inverse of a 1×1 matrix: DenseInverse), c = ν − ∇log|det J|, u = J⁻ᵀc
                double alpha;
                if (grp.ConstantAlpha) alpha = (n == 0 && !initScore) ? 1.0 : grp.Alpha;
                else
                {
                    double a = Math.Min(1.0, grp.Rate * dt);
                    alpha = initScore ? a : Math.Max(1.0 / (n + 1), a);
                }
                var j0 = Vector256<double>.Zero;
                for (int e = 0; e < _nJ; e++) j0 += Row(v, e);
                var m0 = Vector256.Abs(j0);
                int bad = (int)(Vector256.Equals(m0, Vector256<double>.Zero) | ~Vector256.LessThan(m0, Vector256.Create(double.PositiveInfinity))).ExtractMostSignificantBits();
                if ((bad & live) != 0) throw new InvalidOperationException("the Jacobian of the Euler step is singular on this path (step too large for the drift?)");
                var jinv = Vector256<double>.One / j0;
                var s = Vector256<double>.Zero;
                for (int q = hFrom; q < hTo; q++) s += jinv * Row(v, _h0 + hByK[q]);
                var c = _nu[g][0] - s;
                var uu = Vector256<double>.Zero + jinv * c;
                // DkEnd: the weights, then the covector
                var ell = _ell[g];
                foreach (int wh in grp.Whiches)
                {
                    var ch = Row(v, _chi[wh]);
                    if (n == 0 && !initScore && detInit)
                    {
                        // a point (or uniform) init that moves with γ: the first step's perturbation is χ + J ∂_γx₀ (lanes with ∂_γx₀ ≠ 0)
                        var v0 = _v0[wh];
                        var moved = ~Vector256.Equals(v0, Vector256<double>.Zero);
                        if (moved != Vector256<double>.Zero)
                        {
                            var tot = ch;
                            for (int e = 0; e < _nJ; e++) tot += Row(v, e) * v0;
                            ch = Vector256.ConditionalSelect(moved, tot, ch);
                        }
                    }
                    var trJD = Vector256<double>.Zero;
                    int nd = st.DChiRow[wh].Length;
                    for (int e = 0; e < nd; e++) trJD += jinv * Row(v, _dchi[wh] + e);
                    var uc = Vector256<double>.Zero + uu * ch;
                    var term1 = Vector256.Create(1 - alpha) * uc;
                    var term2 = Vector256.Create(1 - alpha) * trJD;
                    var term3 = Vector256<double>.Zero;
                    if (alpha != 0)
                    {
                        var wsc = Vector256<double>.Zero + spw * ch;
                        var ts = Vector256<double>.Zero;
                        var rows = st.DgRow[wh]; var dl = st.DgLane[wh];
                        for (int e = 0; e < rows.Length; e++)
                            if (u.NoiseLaneOfRow[rows[e]] == dl[e]) ts += Row(v, _dg[wh] + e) / sv;
                        term3 = Vector256.Create(alpha) * (wsc - ts);
                    }
                    ell[wh] += -term1 - term2 + term3;
                }
                _nu[g][0] = Vector256.Create(1 - alpha) * uu - Vector256.Create(alpha) * spw;
            }
            // Post: the pathwise tangents v ← J v + χ, the Euler step (and the finite-difference twins'), the
            // blow-up test, the samples at n + 1
            foreach (int q in pathwise)
            {
                var jvq = Vector256<double>.Zero;
                for (int e = 0; e < _nJ; e++) jvq += Row(v, e) * _tan[q];
                _tan[q] = jvq + Row(v, _chi[q]);
            }
            _m.StepLanes4(x, y, pw, t, dt, sq);
            foreach (int q in variants)
            {
                double* xa = P(_xvBuf[q]) + _half * L;
                _variants[q].StepLanes4(xa, xa == P(_xvBuf[q]) ? xa + L : xa - L, pw, t, dt, sq);
            }
            _half ^= 1;
            var yv = Vector256.Load(y);
            var z = yv * Vector256<double>.Zero;
            int blown = (int)(~Vector256.Equals(z, Vector256<double>.Zero)).ExtractMostSignificantBits() & live;
            { var sw = x; x = y; y = sw; }
            if (blown != 0)
                for (int i = 0; i < k; i++)
                    if ((blown >> i & 1) != 0) { live &= ~(1 << i); fail(n + 1); }
            if (n + 1 >= _sampleFrom && n + 1 <= _sampleTo)
                for (int i = 0; i < k; i++) if ((live >> i & 1) != 0) Sample(lanes[i], i, x, n + 1);
            if (((n + 1) & StepProgress.Mask) == 0) _progress.Add(StepProgress.Chunk * k);
        }
        _progress.Add((steps & StepProgress.Mask) * k);
    }
}
