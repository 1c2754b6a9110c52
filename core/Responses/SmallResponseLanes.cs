using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>
/// The response engine's lanes over paths for small models: four paths per step in the lanes of a
/// <see cref="Vector256{T}"/>, for the runs the one-path worker handles in exact mode (the default up to
/// ten states) with noise of any structure. Such a run spends most of its time in the worker's per-path
/// bookkeeping around a few scalar operations per step (the Ornstein–Uhlenbeck response ran below a numpy
/// script of the same recursion); here the step, the derivatives (the model's emitted
/// <see cref="ISdeLaneModel.TangentLanes4"/>), the dense LU with partial pivoting (each lane its own
/// pivots, rows exchanged by selects) and the DK recursion run four paths per operation. Each lane makes
/// the one-path worker's operations in its order (<see cref="Worker{TModel}"/>'s <c>Pre</c>, <c>DkBegin</c>,
/// <c>DkEnd</c> and <c>Post</c>, <see cref="Dense.Lu"/> and <see cref="Dense.Inverse"/>, the projected forms under
/// degenerate noise), so each lane has the bits of that path run alone; the workers still start the paths, take
/// their samples and keep their sums.
/// </summary>
public static class SmallResponseLanes
{
    /// <summary>The largest state dimension the lanes take (the compiler emits <see cref="ISdeLaneModel.TangentLanes4"/> up to it).</summary>
    public const int MaxDim = 10;

    /// <summary>
    /// Is the run of the shape the lanes take: at most <see cref="MaxDim"/> states with noise (of any structure:
    /// diagonal, additive, degenerate, multiplicative), DK groups in exact mode (any number; pathwise and
    /// finite-difference plans, stationary windows and the fit's recordings included), no alignment? Such a
    /// run's path blocks are multiples of four whether the lanes run or not, so that a failure's count of the
    /// paths that ran is the same both ways.
    /// </summary>
    internal static bool Shape(ResponseEngine.Setup u) =>
        u.D <= MaxDim && u.M >= 1 && u.Groups.All(g => g.Mode == DkMode.Exact)
        && !u.NeedAlign;

    /// <summary>Runs started on this thread that the lanes took (a test's evidence that they ran).</summary>
    [ThreadStatic] internal static long RunsOnThisThread;

    /// <summary>Do the lanes take this run: its shape, the model's lane methods, and the lanes chosen (hardware, settings, SDE_LANES)?</summary>
    internal static bool Takes<TModel>(TModel model, ResponseEngine.Setup u) where TModel : struct, ISdeTangentModel =>
        Shape(u) && model is ISdeLaneModel { LaneWidth: 4, TangentLaneWidth: 4 } && Engine.ChooseLanes(u.S, 4, u.D, MinAutoPathSteps);

    /// <summary>
    /// Smallest run (paths × steps) for which the automatic choice takes the lanes: a tenth of the plain engine's
    /// (<see cref="Engine.MinAutoLanePathSteps"/>), since one path at a time a response step costs about ten plain
    /// ones (the 1-D OU: 1.4e7 against 7.8e7 path-steps/s), while the lane code's compile costs about the same.
    /// </summary>
    public const long MinAutoPathSteps = 100_000;
}

/// <summary>The lane run of <see cref="SmallResponseLanes"/> for a model type (created where the type has the lane methods).</summary>
internal abstract class SmallLanes<TModel> where TModel : struct, ISdeTangentModel
{
    public abstract void RunBlock(Worker<TModel>[] lanes, ulong first, long count, Action<long> fail);

    /// <summary>The lanes for a run that <see cref="SmallResponseLanes.Takes{TModel}"/> (so the model type has the lane methods).</summary>
    public static SmallLanes<TModel> Create(TModel model, TModel[] variants, ResponseEngine.Setup u, StepProgress progress)
    {
        var t = typeof(SmallLanesOf<>).MakeGenericType(typeof(TModel));
        return (SmallLanes<TModel>)Activator.CreateInstance(t, model, variants, u, progress)!;
    }
}

internal sealed unsafe class SmallLanesOf<TModel> : SmallLanes<TModel> where TModel : struct, ISdeTangentModel, ISdeLaneModel
{
    const int L = 4;
    readonly ResponseEngine.Setup U;
    TModel _m;
    readonly TModel[] _variants;
    readonly StepProgress _progress;
    readonly int _batch;
    // One pinned buffer of rows of four lanes (row r at _p + 4r): the state (two halves, swapped each step), a
    // batch of step normals, the derivative values, the dense J, its inverse, the pivots and a column,
    // the covectors, u = J⁻ᵀc, c, σ⁺ᵀw, a product, the pathwise tangents, ∂_γx₀, the variants' states.
    readonly double[] _buf;
    readonly double* _p;
    readonly int _x0, _w, _v, _jd, _ji, _piv, _col, _nu, _u, _c, _spw, _tmp, _tan, _v0, _xv;
    // rows of the derivative values: the J entries, the Hessian entries, σ's entries, and per parameter χ, Dχ and ∂σ
    readonly int _nJ, _h0, _g0;
    readonly int[] _chi, _dchi, _dg;
    readonly Vector256<double>[][] _ell;     // per group, per parameter
    readonly long _sampleFrom, _sampleTo;
    int _half; // which half of the state rows (and the variants') holds the current state
    // noise that is not diagonal: σ⁺ (m×d) and Π (d×d) per lane (rows _spr, _pir), computed lane by lane as the worker
    // computes them (Dense.NoisePseudoInverse; additive noise: once for all lanes, again when σ changes with t), and
    // the lanes where Π = I (full row rank)
    readonly double[] _sv, _svPrev, _sig, _amat, _sp, _pi, _ncol, _nz;
    readonly int _spr, _pir;
    bool _noiseReady;
    Vector256<double> _piI = Vector256<double>.AllBitsSet;

    public SmallLanesOf(TModel model, TModel[] variants, ResponseEngine.Setup u, StepProgress progress)
    {
        U = u; _m = model; _variants = variants; _progress = progress;
        var st = u.St;
        int d = u.D, np = u.NParams, ng = u.Groups.Length;
        _batch = Engine.BatchSteps(u.M);
        _nJ = st.JRow.Length; _h0 = _nJ; _g0 = _h0 + st.HRow.Length;
        _chi = new int[np]; _dchi = new int[np]; _dg = new int[np];
        int row = _g0 + st.GRow.Length;
        for (int k = 0; k < np; k++)
        {
            _chi[k] = row; row += d;
            _dchi[k] = row; row += st.DChiRow[k].Length;
            _dg[k] = row; row += st.DgRow[k].Length;
        }
        int rows = 0;
        int Take(int n) { int at = rows; rows += n; return at; }
        _x0 = Take(2 * d); _w = Take(_batch * u.M); _v = Take(Math.Max(1, row));
        _jd = Take(d * d); _ji = Take(d * d); _piv = Take(d); _col = Take(d);
        _nu = Take(ng * d); _u = Take(d); _c = Take(d); _spw = Take(d); _tmp = Take(d);
        _tan = Take(np * d); _v0 = Take(np * d); _xv = Take(variants.Length * 2 * d);
        _spr = Take(u.DiagonalNoise ? 0 : u.M * d); _pir = Take(u.DiagonalNoise ? 0 : d * d);
        _buf = GC.AllocateArray<double>(rows * L + L, pinned: true);
        _p = (double*)Unsafe.AsPointer(ref _buf[0]);
        int mm = Math.Max(d, u.M);
        bool general = !u.DiagonalNoise;
        _sv = new double[st.GRow.Length]; _svPrev = new double[st.GRow.Length];
        _sig = general ? new double[d * u.M] : Array.Empty<double>();
        _amat = general ? new double[mm * mm] : Array.Empty<double>();
        _sp = general ? new double[u.M * d] : Array.Empty<double>();
        _pi = general ? new double[d * d] : Array.Empty<double>();
        _ncol = new double[d]; _nz = new double[d];
        _ell = new Vector256<double>[ng][];
        for (int g = 0; g < ng; g++) _ell[g] = new Vector256<double>[Math.Max(1, np)];
        _sampleFrom = long.MaxValue; _sampleTo = long.MinValue;
        for (int i = 0; i < u.Plans.Length; i++)
            if (u.From[i] <= u.To[i]) { _sampleFrom = Math.Min(_sampleFrom, u.From[i]); _sampleTo = Math.Max(_sampleTo, u.To[i]); }
        // a stationary window's ring of ℓ takes every step's value (the worker's Sample writes it at each step), and
        // so do a stationary recording's, and a trajectory's samples every Δ
        if (u.WindowSteps.Any(w => w > 0) || u.Record?.Steps != null || u.Record?.Trajectory != null) { _sampleFrom = 0; _sampleTo = u.Steps; }
    }

    double* R(int row) => _p + row * L;

    // (through a local base pointer: the JIT reloads a field after every store through a pointer)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> Get(double* p, int row) => Vector256.Load(p + row * L);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Set(double* p, int row, Vector256<double> v) => v.Store(p + row * L);

    public override void RunBlock(Worker<TModel>[] lanes, ulong first, long count, Action<long> fail)
    {
        for (long p0 = 0; p0 < count; p0 += L)
        {
            int k = (int)Math.Min(L, count - p0);
            for (int i = 0; i < k; i++) lanes[i].Begin(first + (ulong)(p0 + i));
            Gather(lanes, k);
            int live = (1 << k) - 1;
            if (U.D == 1 && U.DiagonalNoise) RunPaths1(lanes, first + (ulong)p0, k, ref live, fail);
            else RunPaths(lanes, first + (ulong)p0, k, ref live, fail);
            for (int i = 0; i < k; i++) if ((live >> i & 1) != 0) { WriteBack(lanes[i], i); lanes[i].End(); }
        }
    }

    /// <summary>The started paths' state, covectors, weights and tangents into the lanes (idle lanes copy lane 0).</summary>
    void Gather(Worker<TModel>[] lanes, int k)
    {
        int d = U.D;
        _half = 0;
        for (int j = 0; j < L; j++)
        {
            var w = lanes[j < k ? j : 0];
            for (int i = 0; i < d; i++)
            {
                R(_x0 + i)[j] = w.State[i];
                for (int g = 0; g < _ell.Length; g++) R(_nu + g * d + i)[j] = w.Nu(g)[i];
                for (int q = 0; q < U.NParams; q++) R(_v0 + q * d + i)[j] = w.InitTangent(q, i);
                foreach (int q in U.PathwiseWhich) R(_tan + q * d + i)[j] = w.Tangent(q)[i];
                foreach (int q in U.Variants) R(_xv + q * 2 * d + i)[j] = w.VariantState(q)[i];
            }
        }
        var e = stackalloc double[L];
        for (int g = 0; g < _ell.Length; g++)
            for (int q = 0; q < U.NParams; q++)
            {
                for (int j = 0; j < L; j++) e[j] = lanes[j < k ? j : 0].Ell(g)[q];
                _ell[g][q] = Vector256.Load(e);
            }
    }

    /// <summary>Lane j's state, covectors, weights and tangents into its worker, which samples at step n.</summary>
    void Sample(Worker<TModel> w, int j, long n)
    {
        WriteBack(w, j);
        w.SampleAt(n);
    }

    /// <summary>Lane j's state, covectors, weights and tangents into its worker (for its samples, and for the record it
    /// writes at the path's end).</summary>
    void WriteBack(Worker<TModel> w, int j)
    {
        int d = U.D, x = _x0 + _half * d;
        for (int i = 0; i < d; i++)
        {
            w.State[i] = R(x + i)[j];
            for (int g = 0; g < _ell.Length; g++) w.Nu(g)[i] = R(_nu + g * d + i)[j];
            foreach (int q in U.PathwiseWhich) w.Tangent(q)[i] = R(_tan + q * d + i)[j];
            foreach (int q in U.Variants) w.VariantState(q)[i] = R(_xv + (2 * q + _half) * d + i)[j];
        }
        for (int g = 0; g < _ell.Length; g++)
        {
            var e = w.Ell(g);
            for (int q = 0; q < U.NParams; q++) e[q] = _ell[g][q].GetElement(j);
        }
    }

    /// <summary>
    /// <see cref="Dense.Lu"/> of the lanes' J (rows at _jd) and <see cref="Dense.Inverse"/> into _ji, operation for
    /// operation in every lane: the pivot search with selects (the first largest, as the scalar test keeps it), the
    /// row exchange by selects over the candidate rows, the elimination kept where the factor is 0 (the scalar
    /// code skips those rows). Returns the lanes whose matrix is singular.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int LuInverse(int n, int live)
    {
        double* P = _p;
        int a = _jd, ji = _ji, piv = _piv;
        if (n == 1)
        {
            // (the general code's operations for one state: the pivot test, then the inverse's 1 / a₀₀)
            int bad1 = Singular(Vector256.Abs(Get(P, a))) & live;
            if (bad1 != 0) return bad1;
            Set(P, ji, Vector256<double>.One / Get(P, a));
            return 0;
        }
        for (int k = 0; k < n; k++)
        {
            var p = Vector256.Create((double)k);
            var max = Vector256.Abs(Get(P, a + k * n + k));
            for (int i = k + 1; i < n; i++)
            {
                var v = Vector256.Abs(Get(P, a + i * n + k));
                var gt = Vector256.GreaterThan(v, max);
                max = Vector256.ConditionalSelect(gt, v, max);
                p = Vector256.ConditionalSelect(gt, Vector256.Create((double)i), p);
            }
            int bad = Singular(max) & live; // (a lane that blew up earlier may hold anything)
            if (bad != 0) return bad;
            Set(P, piv + k, p);
            for (int i = k + 1; i < n; i++)
            {
                var sw = Vector256.Equals(p, Vector256.Create((double)i));
                if (sw == Vector256<double>.Zero) continue;
                for (int j = 0; j < n; j++)
                {
                    var t = Get(P, a + k * n + j); var o = Get(P, a + i * n + j);
                    Set(P, a + k * n + j, Vector256.ConditionalSelect(sw, o, t));
                    Set(P, a + i * n + j, Vector256.ConditionalSelect(sw, t, o));
                }
            }
            var inv = Vector256<double>.One / Get(P, a + k * n + k);
            for (int i = k + 1; i < n; i++)
            {
                var f = Get(P, a + i * n + k) * inv;
                Set(P, a + i * n + k, f);
                var nz = ~Vector256.Equals(f, Vector256<double>.Zero);
                for (int j = k + 1; j < n; j++)
                {
                    var e = Get(P, a + i * n + j);
                    Set(P, a + i * n + j, Vector256.ConditionalSelect(nz, e - f * Get(P, a + k * n + j), e));
                }
            }
        }
        int col = _col;
        for (int c = 0; c < n; c++)
        {
            for (int i = 0; i < n; i++) Set(P, col + i, i == c ? Vector256<double>.One : Vector256<double>.Zero);
            for (int k = 0; k < n; k++)
            {
                var pk = Get(P, piv + k);
                for (int i = k + 1; i < n; i++)
                {
                    var sw = Vector256.Equals(pk, Vector256.Create((double)i));
                    if (sw == Vector256<double>.Zero) continue;
                    var t = Get(P, col + k); var o = Get(P, col + i);
                    Set(P, col + k, Vector256.ConditionalSelect(sw, o, t));
                    Set(P, col + i, Vector256.ConditionalSelect(sw, t, o));
                }
            }
            for (int i = 0; i < n; i++)
            {
                var s = Get(P, col + i);
                for (int j = 0; j < i; j++) s -= Get(P, a + i * n + j) * Get(P, col + j);
                Set(P, col + i, s);
            }
            for (int i = n - 1; i >= 0; i--)
            {
                var s = Get(P, col + i);
                for (int j = i + 1; j < n; j++) s -= Get(P, a + i * n + j) * Get(P, col + j);
                Set(P, col + i, s / Get(P, a + i * n + i));
            }
            for (int i = 0; i < n; i++) Set(P, ji + i * n + c, Get(P, col + i));
        }
        return 0;
    }

    /// <summary>The lanes whose pivot magnitude fails <see cref="Dense.Lu"/>'s test (zero, infinite or NaN), as bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Singular(Vector256<double> max) =>
        (int)(Vector256.Equals(max, Vector256<double>.Zero) | ~Vector256.LessThan(max, Vector256.Create(double.PositiveInfinity))).ExtractMostSignificantBits();

    /// <summary>The worker's error for a singular J (the same words).</summary>
    static InvalidOperationException SingularJacobian() =>
        new("the Jacobian of the Euler step is singular on this path (step too large for the drift?)");

    /// <summary>All bits set in the lanes whose bit is set.</summary>
    static Vector256<double> LaneMask(int bits) =>
        Vector256.Create((bits & 1) != 0 ? -1L : 0L, (bits & 2) != 0 ? -1L : 0L, (bits & 4) != 0 ? -1L : 0L, (bits & 8) != 0 ? -1L : 0L).AsDouble();

    /// <summary>
    /// The worker's PrepareNoise for noise that is not diagonal, lane by lane: σ (d×m) from the lane's entries, σ⁺ and Π
    /// by <see cref="Dense.NoisePseudoInverse"/> (the worker's code, so its bits) into the lane's rows. Additive noise
    /// has the same σ in every lane (it does not depend on the state): computed once, again only when σ changes.
    /// </summary>
    void PrepareNoise(double* v, int live)
    {
        var st = U.St;
        int d = U.D, m = U.M;
        double* P = _p;
        bool additive = st.AdditiveNoise;
        for (int j = 0; j < L; j++)
        {
            for (int e = 0; e < _sv.Length; e++) _sv[e] = v[(_g0 + e) * L + j];
            if (additive && _noiseReady && _sv.AsSpan().SequenceEqual(_svPrev)) return;
            Array.Copy(_sv, _svPrev, _sv.Length);
            Array.Clear(_sig);
            for (int e = 0; e < st.GRow.Length; e++) _sig[st.GRow[e] * m + st.GLane[e]] += _sv[e] * U.SqDt;
            int rank = Dense.NoisePseudoInverse(new ArrayVec(_sig), new ArrayVec(_amat), new ArrayVec(_sp), new ArrayVec(_pi), new ArrayVec(_ncol), new ArrayVec(_nz), d, m);
            if (rank < 0 && (live >> j & 1) != 0)
                throw new InvalidOperationException("the diffusion matrix is rank-deficient both ways (σσᵀ and σᵀσ singular): the kernel part of the divergence-kernel method is not defined; use alpha = 0");
            if (additive)
            {
                // every lane alike
                for (int q = 0; q < m * d; q++) Set(P, _spr + q, Vector256.Create(_sp[q]));
                for (int q = 0; q < d * d; q++) Set(P, _pir + q, Vector256.Create(_pi[q]));
                _piI = rank == 1 ? Vector256<double>.AllBitsSet : Vector256<double>.Zero;
                _noiseReady = true;
                return;
            }
            for (int q = 0; q < m * d; q++) R(_spr + q)[j] = _sp[q];
            for (int q = 0; q < d * d; q++) R(_pir + q)[j] = rank == 1 ? 0.0 : _pi[q];
            _piI = _piI.WithElement(j, rank == 1 ? BitConverter.Int64BitsToDouble(-1) : 0.0);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    void RunPaths(Worker<TModel>[] lanes, ulong path0, int k, ref int live, Action<long> fail)
    {
        var u = U;
        var st = u.St;
        int d = u.D, m = u.M;
        double* P = _p;
        int _jd = this._jd, _ji = this._ji, _v = this._v, _g0 = this._g0, _h0 = this._h0, _nJ = this._nJ, _nu = this._nu, _u = this._u,
            _c = this._c, _spw = this._spw, _tmp = this._tmp, _tan = this._tan, _v0 = this._v0, _xv = this._xv, _x0 = this._x0, _w = this._w;
        int[] _chi = this._chi, _dchi = this._dchi, _dg = this._dg;
        double dt = u.Dt, sq = u.SqDt;
        var vsq = Vector256.Create(sq);
        double* v = P + _v * L;
        int[] jRow = st.JRow, jCol = st.JCol, hByK = u.HByK, hStart = u.HStart, hSel = u.HSelByK, selJ = u.SelJ, selI = u.SelI;
        int[] noiseLane = u.NoiseLaneOfRow, noiseIndex = u.NoiseIndexOfRow;
        bool initScore = st.InitHasScore;
        bool[] detMask = u.DetInitMask;
        var groups = u.Groups;
        int[] pathwise = u.PathwiseWhich, variants = u.Variants;
        long steps = u.Steps;
        bool diag = u.DiagonalNoise;
        bool piAll = true, piNone = false; // Π = I in every live lane (diagonal noise: always), in none
        for (long n = 0; n < steps && live != 0; n++)
        {
            long b = n % _batch;
            if (b == 0) Normals.FillAcrossPaths4Steps(u.S.Seed, path0, (ulong)n, (int)Math.Min(_batch, steps - n), Philox.TagStep, R(_w), m);
            double* pw = R(_w) + b * m * L;
            double t = n * dt;
            double* x = R(_x0 + _half * d), y = R(_x0 + (1 - _half) * d);
            _m.TangentLanes4(x, pw, t, dt, sq, v);
            if (groups.Length == 0) { } // (only the divergence kernel reads σ⁺ᵀw: the worker prepares no noise without it)
            else if (diag)
            {
                // PrepareNoise (diagonal): σ⁺ᵀw = w / (σ √Δt)
                for (int i = 0; i < d; i++)
                    Set(P, _spw + i, Vector256.Load(pw + noiseLane[i] * L) / (Get(P, _v + _g0 + noiseIndex[i]) * vsq));
            }
            else
            {
                // PrepareNoise: σ⁺ and Π from this step's σ, then σ⁺ᵀw
                PrepareNoise(v, live);
                for (int i = 0; i < d; i++)
                {
                    var s = Vector256<double>.Zero;
                    for (int l = 0; l < m; l++) s += Get(P, _spr + l * d + i) * Vector256.Load(pw + l * L);
                    Set(P, _spw + i, s);
                }
                var liveMask = LaneMask(live);
                piAll = (_piI & liveMask) == liveMask;
                piNone = (_piI & liveMask) == Vector256<double>.Zero;
            }
            if (groups.Length > 0)
            {
                // DenseInverse: J = 0 + Σ entries, then Lu and Inverse
                for (int e = 0; e < d * d; e++) Set(P, _jd + e, Vector256<double>.Zero);
                for (int e = 0; e < _nJ; e++) { int at = _jd + jRow[e] * d + jCol[e]; Set(P, at, Get(P, at) + Get(P, _v + e)); }
                if (LuInverse(d, live) != 0) throw SingularJacobian();
            }
            for (int g = 0; g < groups.Length; g++)
            {
                var grp = groups[g];
                // DkBegin: α, c = ν − ∇log|det J| (J⁻¹ at the Hessian's pairs), u = J⁻ᵀc
                double alpha = grp.AlphaAt(n, dt, initScore, m);
                int nu = _nu + g * d;
                for (int kk = 0; kk < d; kk++)
                {
                    var s = Vector256<double>.Zero;
                    for (int q = hStart[kk]; q < hStart[kk + 1]; q++)
                    {
                        int pair = hSel[q];
                        s += Get(P, _ji + selJ[pair] * d + selI[pair]) * Get(P, _v + _h0 + hByK[q]);
                    }
                    Set(P, _c + kk, Get(P, nu + kk) - s);
                }
                for (int j = 0; j < d; j++)
                {
                    var s = Vector256<double>.Zero;
                    for (int i = 0; i < d; i++) s += Get(P, _ji + i * d + j) * Get(P, _c + i);
                    Set(P, _u + j, s);
                }
                // DkEnd: the weights, then the covector
                var ell = _ell[g];
                foreach (int wh in grp.Whiches)
                {
                    int ch = _v + _chi[wh];
                    if (n == 0 && !initScore)
                    {
                        // a point (or uniform) init that moves with γ: the first step's perturbation is χ + J ∂_γx₀,
                        // in the lanes with some deterministic component's ∂_γx₀ ≠ 0
                        var moved = Vector256<double>.Zero;
                        for (int i = 0; i < d; i++)
                            if (detMask[i]) moved |= ~Vector256.Equals(Get(P, _v0 + wh * d + i), Vector256<double>.Zero);
                        if (moved != Vector256<double>.Zero)
                        {
                            if (((moved & ~_piI).ExtractMostSignificantBits() & (uint)live) != 0) throw new InvalidOperationException("a deterministic init that depends on the parameter needs full-rank noise (use a normal init)");
                            for (int i = 0; i < d; i++) Set(P, _tmp + i, Get(P, ch + i));
                            for (int e = 0; e < _nJ; e++)
                                if (detMask[jCol[e]]) Set(P, _tmp + jRow[e], Get(P, _tmp + jRow[e]) + Get(P, _v + e) * Get(P, _v0 + wh * d + jCol[e]));
                            for (int i = 0; i < d; i++) Set(P, _tmp + i, Vector256.ConditionalSelect(moved, Get(P, _tmp + i), Get(P, ch + i)));
                            ch = _tmp;
                        }
                    }
                    var trJD = Vector256<double>.Zero;
                    var ds = u.DChiSel[wh];
                    for (int e = 0; e < ds.Length; e++) trJD += Get(P, _ji + selJ[ds[e]] * d + selI[ds[e]]) * Get(P, _v + _dchi[wh] + e);
                    Vector256<double> term1 = default, term2 = default;
                    var wsc = Vector256<double>.Zero;
                    if (!piNone)
                    {
                        var uc = Vector256<double>.Zero;
                        for (int i = 0; i < d; i++) uc += Get(P, _u + i) * Get(P, ch + i);
                        term1 = Vector256.Create(1 - alpha) * uc;
                        term2 = Vector256.Create(1 - alpha) * trJD;
                    }
                    if (!piAll)
                    {
                        Vector256<double> t1, t2;
                        // Dense.DotProjected: Σ_i u_i (c_i − α (Π c)_i)
                        t1 = Vector256<double>.Zero;
                        for (int i = 0; i < d; i++)
                        {
                            var pc = Vector256<double>.Zero;
                            for (int j = 0; j < d; j++) pc += Get(P, _pir + i * d + j) * Get(P, ch + j);
                            t1 += Get(P, _u + i) * (Get(P, ch + i) - Vector256.Create(alpha) * pc);
                        }
                        // TraceJinvPiDchi: per Dχ entry (i, j), row j of J⁻¹ times column i of Π (the exact solve's sum)
                        var tj = Vector256<double>.Zero;
                        var dr = st.DChiRow[wh]; var dcol = st.DChiCol[wh];
                        for (int e = 0; e < dr.Length; e++)
                        {
                            int i = dr[e], j = dcol[e];
                            var zj = Vector256<double>.Zero;
                            for (int c2 = 0; c2 < d; c2++) zj += Get(P, _ji + j * d + c2) * Get(P, _pir + c2 * d + i);
                            tj += zj * Get(P, _v + _dchi[wh] + e);
                        }
                        t2 = trJD - Vector256.Create(alpha) * tj;
                        term1 = piNone ? t1 : Vector256.ConditionalSelect(_piI, term1, t1);
                        term2 = piNone ? t2 : Vector256.ConditionalSelect(_piI, term2, t2);
                    }
                    var term3 = Vector256<double>.Zero;
                    if (alpha != 0)
                    {
                        for (int i = 0; i < d; i++) wsc += Get(P, _spw + i) * Get(P, ch + i);
                        // tr(σ⁺ ∂_γσ): diagonal, the ∂σ entries on their row's own noise; else Σ σ⁺_{l,i} ∂σ_{i,l} √Δt
                        var ts = Vector256<double>.Zero;
                        var rows = st.DgRow[wh]; var dl = st.DgLane[wh];
                        if (diag)
                        {
                            for (int e = 0; e < rows.Length; e++)
                                if (noiseLane[rows[e]] == dl[e]) ts += Get(P, _v + _dg[wh] + e) / Get(P, _v + _g0 + noiseIndex[rows[e]]);
                        }
                        else
                            for (int e = 0; e < rows.Length; e++) ts += Get(P, _spr + dl[e] * d + rows[e]) * Get(P, _v + _dg[wh] + e) * vsq;
                        term3 = Vector256.Create(alpha) * (wsc - ts);
                    }
                    ell[wh] += -term1 - term2 + term3;
                }
                var a1 = Vector256.Create(1 - alpha); var a0 = Vector256.Create(alpha);
                if (piAll)
                    for (int i = 0; i < d; i++) Set(P, nu + i, a1 * Get(P, _u + i) - a0 * Get(P, _spw + i));
                else
                    for (int i = 0; i < d; i++)
                    {
                        // Dense.CovectorProjected: u_i − α (Πᵀu)_i − α (σ⁺ᵀw)_i (where Π = I: the plain form)
                        var pu = Vector256<double>.Zero;
                        for (int j = 0; j < d; j++) pu += Get(P, _pir + j * d + i) * Get(P, _u + j);
                        var projected = Get(P, _u + i) - a0 * pu - a0 * Get(P, _spw + i);
                        Set(P, nu + i, piNone ? projected : Vector256.ConditionalSelect(_piI, a1 * Get(P, _u + i) - a0 * Get(P, _spw + i), projected));
                    }
            }
            // Post: the pathwise tangents v ← J v + χ, the Euler step (and the finite-difference twins'), the
            // blow-up test, the samples at n + 1
            foreach (int q in pathwise)
            {
                int tq = _tan + q * d;
                for (int i = 0; i < d; i++) Set(P, _tmp + i, Vector256<double>.Zero);
                for (int e = 0; e < _nJ; e++) Set(P, _tmp + jRow[e], Get(P, _tmp + jRow[e]) + Get(P, _v + e) * Get(P, tq + jCol[e]));
                for (int i = 0; i < d; i++) Set(P, tq + i, Get(P, _tmp + i) + Get(P, _v + _chi[q] + i));
            }
            _m.StepLanes4(x, y, pw, t, dt, sq);
            foreach (int q in variants)
                _variants[q].StepLanes4(R(_xv + (2 * q + _half) * d), R(_xv + (2 * q + 1 - _half) * d), pw, t, dt, sq);
            _half ^= 1;
            // the one-path test: Σ_i y_i·0 is 0 unless a component is NaN or infinite
            var z = Vector256<double>.Zero;
            for (int i = 0; i < d; i++) z += Vector256.Load(y + i * L) * Vector256<double>.Zero;
            int blown = (int)(~Vector256.Equals(z, Vector256<double>.Zero)).ExtractMostSignificantBits() & live;
            if (blown != 0)
                for (int i = 0; i < k; i++)
                    if ((blown >> i & 1) != 0) { live &= ~(1 << i); fail(n + 1); }
            if (n + 1 >= _sampleFrom && n + 1 <= _sampleTo)
                for (int i = 0; i < k; i++) if ((live >> i & 1) != 0) Sample(lanes[i], i, n + 1);
            if (((n + 1) & StepProgress.Mask) == 0) _progress.Add(StepProgress.Chunk * k);
        }
        _progress.Add((steps & StepProgress.Mask) * k);
    }

    // one state: the general code with every loop over the state of one trip (values in registers, not rows)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    void RunPaths1(Worker<TModel>[] lanes, ulong path0, int k, ref int live, Action<long> fail)
    {
        var u = U;
        var st = u.St;
        double dt = u.Dt, sq = u.SqDt;
        var vsq = Vector256.Create(sq);
        double* P = _p;
        double* x = P + (_x0 + _half) * L, y = P + (_x0 + 1 - _half) * L, v = P + _v * L, w = P + _w * L;
        int nH = st.HRow.Length;
        int[] hByK = u.HByK;
        int hFrom = u.HStart[0], hTo = u.HStart[1];
        int sigRow = _g0 + u.NoiseIndexOfRow[0];
        bool initScore = st.InitHasScore, detInit = u.DetInitMask[0];
        var groups = u.Groups;
        int[] pathwise = u.PathwiseWhich, variants = u.Variants;
        long steps = u.Steps;
        for (long n = 0; n < steps && live != 0; n++)
        {
            long b = n % _batch;
            if (b == 0) Normals.FillAcrossPaths4Steps(u.S.Seed, path0, (ulong)n, (int)Math.Min(_batch, steps - n), Philox.TagStep, w, 1);
            double* pw = w + b * L;
            double t = n * dt;
            _m.TangentLanes4(x, pw, t, dt, sq, v);
            // PrepareNoise: σ⁺ᵀw = w / (σ √Δt)
            var sv = Row(v, sigRow);
            var spw = Vector256.Load(pw) / (sv * vsq);
            // J⁻¹ (Dense.Lu and Inverse of a 1×1 matrix: DenseInverse), once for every group
            var jinv = Vector256<double>.Zero;
            if (groups.Length > 0)
            {
                var j0 = Vector256<double>.Zero;
                for (int e = 0; e < _nJ; e++) j0 += Row(v, e);
                if ((Singular(Vector256.Abs(j0)) & live) != 0) throw SingularJacobian();
                jinv = Vector256<double>.One / j0;
            }
            for (int g = 0; g < groups.Length; g++)
            {
                var grp = groups[g];
                // DkBegin: α, c = ν − ∇log|det J|, u = J⁻ᵀc
                double alpha = grp.AlphaAt(n, dt, initScore, 1);
                var s = Vector256<double>.Zero;
                for (int q = hFrom; q < hTo; q++) s += jinv * Row(v, _h0 + hByK[q]);
                var c = Get(P, _nu + g) - s;
                var uu = Vector256<double>.Zero + jinv * c;
                // DkEnd: the weights, then the covector
                var ell = _ell[g];
                foreach (int wh in grp.Whiches)
                {
                    var ch = Row(v, _chi[wh]);
                    if (n == 0 && !initScore && detInit)
                    {
                        // a point (or uniform) init that moves with γ: the first step's perturbation is χ + J ∂_γx₀ (lanes with ∂_γx₀ ≠ 0)
                        var v0 = Get(P, _v0 + wh);
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
                Set(P, _nu + g, Vector256.Create(1 - alpha) * uu - Vector256.Create(alpha) * spw);
            }
            // Post: the pathwise tangents v ← J v + χ, the Euler step (and the finite-difference twins'), the
            // blow-up test, the samples at n + 1
            foreach (int q in pathwise)
            {
                var jvq = Vector256<double>.Zero;
                var tq = Get(P, _tan + q);
                for (int e = 0; e < _nJ; e++) jvq += Row(v, e) * tq;
                Set(P, _tan + q, jvq + Row(v, _chi[q]));
            }
            _m.StepLanes4(x, y, pw, t, dt, sq);
            foreach (int q in variants)
                _variants[q].StepLanes4(P + (_xv + 2 * q + _half) * L, P + (_xv + 2 * q + 1 - _half) * L, pw, t, dt, sq);
            _half ^= 1;
            var yv = Vector256.Load(y);
            var z = yv * Vector256<double>.Zero;
            int blown = (int)(~Vector256.Equals(z, Vector256<double>.Zero)).ExtractMostSignificantBits() & live;
            { var sw = x; x = y; y = sw; }
            if (blown != 0)
                for (int i = 0; i < k; i++)
                    if ((blown >> i & 1) != 0) { live &= ~(1 << i); fail(n + 1); }
            if (n + 1 >= _sampleFrom && n + 1 <= _sampleTo)
                for (int i = 0; i < k; i++) if ((live >> i & 1) != 0) Sample(lanes[i], i, n + 1);
            if (((n + 1) & StepProgress.Mask) == 0) _progress.Add(StepProgress.Chunk * k);
        }
        _progress.Add((steps & StepProgress.Mask) * k);
    }

    static Vector256<double> Row(double* p, int r) => Vector256.Load(p + r * L);
}
