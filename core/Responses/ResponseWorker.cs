using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Sde.Core;

/// <summary>
/// One worker thread of the response engine: its buffers (allocated once), the forward recursion of
/// every estimator for one path at a time, and its share of the exact sums.
/// </summary>
internal sealed unsafe class Worker<TModel> where TModel : struct, ISdeTangentModel
{
    readonly ResponseEngine.Setup U;
    TModel _m;
    readonly TModel[] _variants;
    public readonly ResponseEngine.Sums Sums;
    public long Paths;

    // chain and noise
    readonly double[] x, y, w, zn, zu, obs, ell0, v0;
    readonly double[][] xv, yv, obsV;
    // derivative values
    readonly double[] jv, ev, hv, sv, gradV;
    readonly double[][] chi, dchi, dg;
    readonly double[] chiTot;
    // dense linear algebra (exact mode and fallbacks)
    readonly double[] col, tmp, tmp2, s1, s2, cvec;
    double[] jd, jinv; // dense J and J⁻¹: exact mode, and the iterative mode's fallback (allocated when first needed)
    readonly double[] piv; // pivot rows (as doubles: see Dense)
    // noise: σ⁺ᵀw, and the general case σ⁺ (m×d), Π (d×d)
    readonly double[] spw, sig, amat, sp, pi, svPrev;
    bool piIsI, noiseReady;
    // per DK group
    readonly double[][] nu, nuNew, sel;
    readonly double[][] ell;   // [group][which]
    // pathwise tangents per which
    readonly double[][] v;
    // per plan, per path
    readonly double[][] acc, accC;   // per plan, per path: A (φ·ω or ω in a bin) and C (φ or the bin indicator)
    // per density plan, per path: the bins touched (first-touch order), their count and marks; a path's commit
    // and reset visit only these, so binning costs O(1) per sample whatever the number of bins
    readonly int[][] touched;
    readonly int[] nTouched;
    readonly bool[][] marked;
    readonly double[] accW;          // per plan, per path: B = Σ ω (centred plans)
    readonly long[] cnt;
    readonly double[][] ring;
    // stationary recording (the fit's kl stationary window): whether there is one, and the next recorded time
    readonly bool recording;
    int _recNext;
    // Lyapunov alignment: the top Lyapunov vector q_n (and the product J q), from the fixed initial frame
    readonly double[] lyq, lyz, lyq0;

    public Worker(TModel model, TModel[] variants, ResponseEngine.Setup setup)
    {
        U = setup; _m = model; _variants = variants;
        int d = U.D, m = Math.Max(1, U.M), np = U.NParams;
        var st = U.St;
        Sums = new ResponseEngine.Sums(U.Plans);
        // pinned: the step phases keep raw pointers to these between calls
        x = Pinned(d); y = Pinned(d); w = Pinned(m); zn = Pinned(d); zu = Pinned(d);
        _pairs = new StepNormals(m);
        obs = Pinned(Math.Max(1, U.NObs)); ell0 = Pinned(Math.Max(1, np)); v0 = Pinned(Math.Max(1, np * d));
        xv = new double[variants.Length][]; yv = new double[variants.Length][]; obsV = new double[variants.Length][];
        foreach (int k in U.Variants) { xv[k] = new double[d]; yv[k] = new double[d]; obsV[k] = new double[Math.Max(1, U.NObs)]; }
        jv = Pinned(Math.Max(1, st.JRow.Length)); ev = new double[jv.Length];
        hv = Pinned(Math.Max(1, st.HRow.Length)); sv = Pinned(Math.Max(1, st.GRow.Length));
        svPrev = new double[sv.Length];
        gradV = Pinned(Math.Max(1, st.ObsGradObs.Length));
        chi = new double[np][]; dchi = new double[np][]; dg = new double[np][];
        for (int k = 0; k < np; k++) { chi[k] = new double[d]; dchi[k] = new double[Math.Max(1, st.DChiRow[k].Length)]; dg[k] = new double[Math.Max(1, st.DgRow[k].Length)]; }
        chiTot = new double[d];
        jd = U.AnyExact ? new double[d * d] : Array.Empty<double>();
        jinv = U.AnyExact ? new double[d * d] : Array.Empty<double>();
        LuSel = new double[U.Lu != null ? Math.Max(1, U.SelJ.Length) : 0];
        cvec = new double[d];
        s1 = new double[d]; s2 = new double[d];
        piv = new double[d]; col = new double[d]; tmp = new double[d]; tmp2 = new double[d];
        spw = new double[d];
        bool general = !U.DiagonalNoise && U.NeedDk;
        sig = general ? new double[d * m] : Array.Empty<double>();
        amat = general ? new double[Math.Max(d, m) * Math.Max(d, m)] : Array.Empty<double>();
        sp = general ? new double[m * d] : Array.Empty<double>();
        pi = general ? new double[d * d] : Array.Empty<double>();
        int ng = U.Groups.Length;
        nu = new double[ng][]; nuNew = new double[ng][]; sel = new double[ng][]; ell = new double[ng][];
        for (int g = 0; g < ng; g++)
        {
            nu[g] = new double[d]; nuNew[g] = new double[d];
            sel[g] = new double[Math.Max(1, U.SelJ.Length)]; ell[g] = new double[Math.Max(1, np)];
        }
        v = new double[np][];
        foreach (int k in U.PathwiseWhich) v[k] = new double[d];
        acc = new double[U.Plans.Length][]; accC = new double[U.Plans.Length][]; accW = new double[U.Plans.Length];
        cnt = new long[U.Plans.Length]; ring = new double[U.Plans.Length][];
        touched = new int[U.Plans.Length][]; nTouched = new int[U.Plans.Length]; marked = new bool[U.Plans.Length][];
        for (int i = 0; i < U.Plans.Length; i++)
        {
            var p = U.Plans[i];
            acc[i] = new double[p.Kind == EstimateKind.Density ? p.Bins : 1];
            accC[i] = new double[acc[i].Length];
            touched[i] = new int[p.Kind == EstimateKind.Density && p.Bins > 1 ? p.Bins : 0]; // (one bin: as a mean)
            marked[i] = new bool[touched[i].Length];
            // the ring of ℓ over the last K + 1 steps: a stationary window's, or the stationary recording's
            // (whose plans have no window of their own)
            long w = U.WindowSteps[i] > 0 ? U.WindowSteps[i] : U.Record?.Steps != null ? U.Record.WindowSteps : 0;
            if (w > 0) ring[i] = new double[checked((int)(w + 1))];
        }
        recording = U.Record?.Steps != null;
        lyq0 = U.NeedAlign ? LyapunovEngine.InitialFrame(d, 1) : Array.Empty<double>();
        lyq = new double[lyq0.Length]; lyz = new double[lyq0.Length];
    }

    static PtrVec V(double* p) => new PtrVec(p);

    static double[] Pinned(int n) => GC.AllocateArray<double>(n, pinned: true);

    // the path in flight: its state pointers (swapped each step) and the pinned buffers behind them
    double* _a, _b, _pw, _pobs, _pgrad, _pjv, _phv, _psv;

    /// <summary>Starts path <paramref name="gp"/>: initial state, scores and tangents, the sample at step 0.</summary>
    public void Begin(ulong gp)
    {
        int d = U.D;
        _gp = gp;
        _a = Ptr(x); _b = Ptr(y); _pw = Ptr(w); _pobs = Ptr(obs); _pgrad = Ptr(gradV); _pjv = Ptr(jv); _phv = Ptr(hv); _psv = Ptr(sv);
        double* pzn = Ptr(zn), pzu = Ptr(zu);
        ulong seed = U.S.Seed;
        Normals.Fill(seed, gp, 0, Philox.TagInitNormal, pzn, d);
        Normals.FillUniform(seed, gp, 0, Philox.TagInitUniform, pzu, d);
        _m.Init(V(_a), V(pzn), V(pzu));
        foreach (int k in U.Variants)
            fixed (double* q = xv[k]) _variants[k].Init(V(q), V(pzn), V(pzu));
        if (U.NeedJ || U.NeedDk) _m.InitParamScore(V(_a), V(pzn), V(pzu), V(Ptr(ell0)), V(Ptr(v0)));
        for (int g = 0; g < U.Groups.Length; g++)
        {
            if (U.St.InitHasScore) fixed (double* q = nu[g]) _m.InitScore(V(_a), V(q));
            else Array.Clear(nu[g]);
            for (int k = 0; k < U.NParams; k++) ell[g][k] = ell0[k];
        }
        foreach (int k in U.PathwiseWhich) Array.Copy(v0, k * d, v[k], 0, d);
        for (int i = 0; i < acc.Length; i++)
        {
            if (touched[i].Length == 0) { acc[i][0] = 0; accC[i][0] = 0; }
            else
            {
                for (int j = 0; j < nTouched[i]; j++) { int b = touched[i][j]; acc[i][b] = 0; accC[i][b] = 0; marked[i][b] = false; }
                nTouched[i] = 0;
            }
            accW[i] = 0; cnt[i] = 0;
        }
        noiseReady = false;
        if (U.NeedAlign) Array.Copy(lyq0, lyq, d);
        _recNext = 0;
        Sample(0, 0.0, _a, _pobs, _pgrad);
    }

    ulong _gp;
    /// <summary>The step normals two steps per draw.</summary>
    readonly StepNormals _pairs;

    static double* Ptr(double[] a) => (double*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a));

    /// <summary>Step n up to the DK recursion: the normals, J, the Hessian terms, the noise, χ.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    public void Pre(long n)
    {
        int d = U.D, M = U.M;
        double dt = U.Dt, sq = U.SqDt, t = n * dt;
        double* a = _a, pw = _pw;
        if (M > 0) _pairs.Fill(U.S.Seed, _gp, (ulong)n, Philox.TagStep, pw, M);
        if (_lane != null)
        {
            // straight into the lane set's batch (nothing else here reads J or the Hessian terms)
            _m.Jacobian(new StrideVec(a, 1), new StrideVec(pw, 1), t, dt, sq, _lane.LaneJ(_laneIndex));
            if (!(U.St.HessianConstant && _hDone)) _m.Hessian(new StrideVec(a, 1), new StrideVec(pw, 1), t, dt, sq, _lane.LaneH(_laneIndex));
            _hDone = true;
            _localStale = true;
            if (M > 0) { _m.Sigma(V(a), t, V(_psv)); PrepareNoise(pw); }
        }
        else if (U.NeedJ)
        {
            _m.Jacobian(V(a), V(pw), t, dt, sq, V(_pjv));
            if (U.NeedE)
            {
                Array.Copy(jv, ev, jv.Length);
                for (int i = 0; i < d; i++) if (U.DiagIndex[i] >= 0) ev[U.DiagIndex[i]] -= 1.0;
            }
        }
        if (U.NeedDk && _lane == null)
        {
            if (U.NeedHessian && !(U.St.HessianConstant && _hDone)) _m.Hessian(V(a), V(pw), t, dt, sq, V(_phv));
            _hDone = true;
            if (M > 0) { _m.Sigma(V(a), t, V(_psv)); PrepareNoise(pw); }
        }
        for (int k = 0; k < U.NParams; k++)
            if (U.NeedChi[k])
                fixed (double* c = chi[k], dc = dchi[k], dgk = dg[k])
                    _m.ParamTangent(k, V(a), V(pw), t, dt, sq, V(c), V(dc), V(dgk));
    }

    /// <summary>The path's current state (the lanes of <see cref="SmallResponseLanes"/> write it before <see cref="SampleAt"/>).</summary>
    public double* State => _a;

    /// <summary>ℓ of group g, per response parameter.</summary>
    public double[] Ell(int g) => ell[g];

    /// <summary>Component i of ∂_γx₀ for response parameter k.</summary>
    public double InitTangent(int k, int i) => v0[k * U.D + i];

    /// <summary>The pathwise tangent v of response parameter k.</summary>
    public double[] Tangent(int k) => v[k];

    /// <summary>The state of finite-difference variant k.</summary>
    public double[] VariantState(int k) => xv[k];

    /// <summary>The samples at step n from the state, covectors and weights the worker holds.</summary>
    public void SampleAt(long n) => Sample(n, n * U.Dt, _a, _pobs, _pgrad);

    /// <summary>This step's J values (for the batched sparse LU).</summary>
    public double[] Jv => jv;

    // Direct mode (iterative DK only): the model writes J and the Hessian terms into lane
    // _laneIndex of the lane set's batch; the per-path fallbacks copy them back first.
    SparseLuBatch? _lane;
    int _laneIndex;
    bool _localStale;
    bool _hDone; // the Hessian terms were computed once (enough when they are constant)

    public void WriteInto(SparseLuBatch batch, int lane) { _lane = batch; _laneIndex = lane; }

    void EnsureLocal()
    {
        if (_lane == null || !_localStale) return;
        _lane.Unstage(_laneIndex, jv, hv);
        _localStale = false;
    }

    /// <summary>Set by the lane set: the sparse LU of this step's J succeeded, and J⁻¹ at the selected pairs.</summary>
    public bool LuOk;
    public readonly double[] LuSel;

    /// <summary>Step n after the DK recursion: the alignment, pathwise tangents, the Euler step, the
    /// finite-difference twins, the samples at n + 1; returns the step at which the path blew up, or −1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    public long Post(long n)
    {
        int d = U.D;
        double dt = U.Dt, sq = U.SqDt, t = n * dt;
        double* a = _a, b = _b, pw = _pw;
        if (U.NeedAlign && !AlignStep()) return n + 1;
        foreach (int k in U.PathwiseWhich)
        {
            // v ← J v + χ
            var vk = v[k];
            JacobianTimes(vk, tmp);
            fixed (double* pv = vk, pt = tmp, pc = chi[k])
                for (int i = 0; i < d; i++) pv[i] = pt[i] + pc[i];
        }
        _m.Step(V(a), V(b), V(pw), t, dt, sq);
        foreach (int k in U.Variants)
            fixed (double* xa = xv[k], xb = yv[k])
            {
                _variants[k].Step(V(xa), V(xb), V(pw), t, dt, sq);
                (xv[k], yv[k]) = (yv[k], xv[k]);
            }
        double s = 0;
        for (int i = 0; i < d; i++) s += b[i] * 0.0;
        if (s != 0.0 || double.IsNaN(s)) return n + 1;
        _a = b; _b = a;
        Sample(n + 1, (n + 1) * dt, _a, _pobs, _pgrad);
        return -1;
    }

    /// <summary>Ends the path: its samples go into the sums.</summary>
    public void End()
    {
        Commit();
        if (U.Record != null && U.Record.Steps == null) // (a stationary recording is written by Sample)
        {
            // one covector for every plan (RunRecorded allows one DK group): group 0
            var r = U.Record;
            long row = (long)_gp - r.FirstPath;
            var xs = r.X.AsSpan((int)(row * r.D), r.D);
            for (int i = 0; i < r.D; i++) xs[i] = _a[i];
            for (int k = 0; k < r.K; k++) r.Ell[row * r.K + k] = ell[U.PlanGroup[k]][U.Plans[k].Which];
            if (r.Nu != null && U.Groups.Length > 0) nu[0].AsSpan().CopyTo(r.Nu.AsSpan((int)(row * r.D), r.D));
            if (r.Obs != null && r.NObs > 0)
            {
                _m.Observe(V(_a), U.Steps * U.Dt, V(_pobs));
                for (int q = 0; q < r.NObs; q++) r.Obs[row * r.NObs + q] = obs[q];
            }
        }
    }

    /// <summary>Records every plan that samples at step n (x = x_n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    void Sample(long n, double t, double* px, double* pobs, double* pgrad)
    {
        var plans = U.Plans;
        bool observed = false, grad = false;
        var tr = U.Record?.Trajectory;
        if (tr != null && n % U.Record!.EverySteps == 0)
        {
            // a trajectory (samples(...) every Δ): this path's observables at the grid time n
            var r = U.Record;
            var which = r.TrajectoryObservables!;
            _m.Observe(V(px), t, V(pobs));
            observed = true;
            long at = (((long)_gp - r.FirstPath) * r.TrajectoryTimes + n / r.EverySteps) * which.Length;
            for (int q = 0; q < which.Length; q++) tr[at + q] = obs[which[q]];
        }
        // ring buffers of the DK weights, every step (stationary windows)
        for (int i = 0; i < plans.Length; i++)
            if (ring[i] != null)
            {
                var r = ring[i];
                r[n % r.Length] = plans[i].Method == ResponseMethod.DivergenceKernel ? ell[U.PlanGroup[i]][plans[i].Which] : 0.0;
            }
        if (recording) RecordStationary(n, px);
        for (int i = 0; i < plans.Length; i++)
        {
            if (n < U.From[i] || n > U.To[i]) continue;
            var p = plans[i];
            cnt[i]++;
            switch (p.Method)
            {
                case ResponseMethod.DivergenceKernel:
                    {
                        if (!observed) { _m.Observe(V(px), t, V(pobs)); observed = true; }
                        int g = U.PlanGroup[i];
                        if (p.Alignment) { Add(i, AlignmentCos(nu[g]), 1.0); break; }
                        double omega;
                        if (p.ScoreComponent >= 0) omega = nu[g][p.ScoreComponent];
                        else
                        {
                            omega = ell[g][p.Which];
                            if (U.WindowSteps[i] > 0)
                            {
                                long back = n - U.WindowSteps[i];
                                omega -= ring[i][(back < 0 ? 0 : back) % ring[i].Length];
                            }
                        }
                        Add(i, pobs[p.Observable], omega);
                        if (p.Explicit >= 0) { Touch(i, 0); acc[i][0] += pobs[p.Explicit]; }
                        break;
                    }
                case ResponseMethod.Pathwise:
                    {
                        if (!grad) { _m.ObservableGradient(V(px), t, V(pgrad)); grad = true; }
                        double sgv = 0;
                        var vk = v[p.Which];
                        foreach (int e in U.ObsGradEntries[p.Observable]) sgv += pgrad[e] * vk[U.St.ObsGradState[e]];
                        if (p.Explicit >= 0)
                        {
                            if (!observed) { _m.Observe(V(px), t, V(pobs)); observed = true; }
                            sgv += pobs[p.Explicit];
                        }
                        acc[i][0] += sgv;
                        break;
                    }
                default:
                    {
                        double fp = ObserveVariant(p.VariantPlus, t, p.Observable);
                        double fm = ObserveVariant(p.VariantMinus, t, p.Observable);
                        double inv = 1.0 / (2 * p.H);
                        if (p.Kind == EstimateKind.Mean) acc[i][0] += (fp - fm) * inv;
                        else { Add(i, fp, inv); Add(i, fm, -inv); }
                        break;
                    }
            }
        }
    }

    /// <summary>
    /// Stationary recording: at a recorded step, the state x_n and the window increments ℓ_n − ℓ_{n−K} (ℓ_{n−K}
    /// read as ℓ_0 when n &lt; K) of every plan, from the plans' rings of ℓ, into the path's row of the record.
    /// </summary>
    void RecordStationary(long n, double* px)
    {
        var r = U.Record!;
        var steps = r.Steps!;
        if (_recNext >= steps.Length || steps[_recNext] != n) return;
        int np = r.K;
        long len = r.WindowSteps + 1, back = n - r.WindowSteps;
        long slot = n % len, from = (back < 0 ? 0 : back) % len;
        long row = ((long)_gp - r.FirstPath) * steps.Length + _recNext;
        for (int i = 0; i < r.D; i++) r.X[row * r.D + i] = px[i];
        for (int k = 0; k < np; k++) r.Ell[row * np + k] = ring[k][slot] - ring[k][from];
        _recNext++;
    }

    double ObserveVariant(int k, double t, int q)
    {
        fixed (double* xa = xv[k], o = obsV[k]) _variants[k].Observe(V(xa), t, V(o));
        return obsV[k][q];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void Add(int i, double phi, double weight)
    {
        var p = U.Plans[i];
        bool centred = p.Centred;
        if (centred) accW[i] += weight;
        if (p.Kind == EstimateKind.Mean)
        {
            acc[i][0] += phi * weight;
            if (centred) accC[i][0] += phi;
            return;
        }
        // a NaN φ falls in no bin: counted for the warning (once per sample: the finite-difference
        // twins' minus sample, of weight < 0, is not counted again)
        if (double.IsNaN(phi)) { if (weight >= 0 || p.Method != ResponseMethod.FiniteDifference) Sums.NonFinite[i]++; return; }
        if (!(phi >= p.Lo)) { if (weight >= 0) Sums.Below[i]++; return; }
        if (!(phi < p.Hi)) { if (weight >= 0) Sums.Above[i]++; return; }
        int bin = (int)((phi - p.Lo) / (p.Hi - p.Lo) * p.Bins);
        if (bin >= p.Bins) bin = p.Bins - 1;
        Touch(i, bin);
        acc[i][bin] += weight;
        if (centred) accC[i][bin] += 1.0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void Touch(int i, int bin)
    {
        var m = marked[i];
        if (m.Length == 0 || m[bin]) return;
        m[bin] = true;
        touched[i][nTouched[i]++] = bin;
    }

    void Commit()
    {
        for (int i = 0; i < acc.Length; i++)
        {
            var p = U.Plans[i];
            double scaleB = 1.0 / Math.Max(1, cnt[i]);
            double scale = p.Kind == EstimateKind.Density ? scaleB / ((p.Hi - p.Lo) / p.Bins) : scaleB;
            int ci = p.Control;
            double control = ci >= 0 ? acc[ci][0] * (1.0 / Math.Max(1, cnt[ci])) : 0.0; // the control plan's own scale (as on the GPU)
            if (touched[i].Length == 0 || ci >= 0) Sums.AddPath(i, p.Centred, acc[i], accC[i], accW[i], scale, scaleB, ci >= 0, control);
            else Sums.AddPathBins(i, p.Centred, acc[i], accC[i], touched[i].AsSpan(0, nTouched[i]), accW[i], scale, scaleB);
        }
        Paths++;
    }

    /// <summary>y ← 0: a loop for the few entries of a small model (Array.Clear's call costs more there, every step).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Zero(double[] y)
    {
        if (y.Length > 16) { Array.Clear(y); return; }
        for (int i = 0; i < y.Length; i++) y[i] = 0;
    }

    /// <summary>y = J x on J's pattern: y cleared, then y[row] += J_e x[col] entry by entry. Where a row's entries are
    /// adjacent (the compiler's order) the row's sum stays in a register: the same additions in the same order,
    /// without a store and a reload of y[row] per entry (a chain through memory that was 44% of a pathwise
    /// Lorenz-96 run).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void JacobianTimes(double[] x, double[] y)
    {
        Zero(y);
        int ne = Math.Min(jv.Length, U.St.JRow.Length);
        if (ne == 0) return;
        fixed (int* rows = U.St.JRow, cols = U.St.JCol)
        fixed (double* pj = jv, px = x, py = y)
        {
            int row = rows[0];
            double acc = py[row];
            for (int e = 0; e < ne; e++)
            {
                int r = rows[e];
                if (r != row) { py[row] = acc; row = r; acc = py[r]; }
                acc += pj[e] * px[cols[e]];
            }
            py[row] = acc;
        }
    }

    // ---------------------------------------------------------------- Lyapunov alignment

    /// <summary>q ← J q / |J q| (the k = 1 case of the Lyapunov engine's QR step); false when it collapses.</summary>
    bool AlignStep()
    {
        JacobianTimes(lyq, lyz);
        double r = LyapunovEngine.Orthonormalise(lyz, U.D, 0);
        if (!(r > 0) || !double.IsFinite(r)) return false;
        Array.Copy(lyz, lyq, U.D);
        return true;
    }

    /// <summary>|cos| of the angle between the top Lyapunov vector and ν (0 when ν = 0).</summary>
    double AlignmentCos(double[] nuG)
    {
        double dot = 0, nn = 0;
        for (int i = 0; i < U.D; i++) { dot += lyq[i] * nuG[i]; nn += nuG[i] * nuG[i]; }
        return nn > 0 ? Math.Min(Math.BitDecrement(1.0), Math.Abs(dot) / Math.Sqrt(nn)) : 0.0; // |cos| = 1 falls in the last bin
    }

    // ---------------------------------------------------------------- noise: σ⁺ᵀw, Π, tr(σ⁺ ∂σ)

    void PrepareNoise(double* pw)
    {
        int d = U.D, m = U.M;
        double sq = U.SqDt;
        if (U.DiagonalNoise)
        {
            piIsI = true;
            if (U.NoiseInOrder)
            {
                // row i's noise is lane i and entry i: four rows at a time (the same divisions)
                var vsq = System.Runtime.Intrinsics.Vector256.Create(sq);
                int i0 = 0;
                fixed (double* ps = sv, pspw = spw)
                    for (; i0 + 4 <= d; i0 += 4)
                        System.Runtime.Intrinsics.Vector256.Store(
                            System.Runtime.Intrinsics.Vector256.Load(pw + i0) / (System.Runtime.Intrinsics.Vector256.Load(ps + i0) * vsq), pspw + i0);
                for (int i = i0; i < d; i++) spw[i] = pw[i] / (sv[i] * sq);
                return;
            }
            for (int i = 0; i < d; i++) spw[i] = pw[U.NoiseLaneOfRow[i]] / (sv[U.NoiseIndexOfRow[i]] * sq);
            return;
        }
        bool same = noiseReady && U.St.AdditiveNoise && sv.AsSpan().SequenceEqual(svPrev);
        if (!same)
        {
            Array.Copy(sv, svPrev, sv.Length);
            Array.Clear(sig);
            for (int e = 0; e < U.St.GRow.Length; e++) sig[U.St.GRow[e] * m + U.St.GLane[e]] += sv[e] * sq;
            // σ⁺ and Π (Dense.NoisePseudoInverse: full row rank, Π = I; else full column rank, Π = σσ⁺)
            int rank = Dense.NoisePseudoInverse(new ArrayVec(sig), new ArrayVec(amat), new ArrayVec(sp), new ArrayVec(pi), new ArrayVec(col), new ArrayVec(tmp2), d, m);
            if (rank < 0)
                throw new InvalidOperationException("the diffusion matrix is rank-deficient both ways (σσᵀ and σᵀσ singular): the kernel part of the divergence-kernel method is not defined; use alpha = 0");
            piIsI = rank == 1;
            noiseReady = true;
        }
        for (int i = 0; i < d; i++)
        {
            double s = 0;
            for (int l = 0; l < m; l++) s += sp[l * d + i] * pw[l];
            spw[i] = s;
        }
    }

    /// <summary>tr(σ⁺ ∂_γσ) for response parameter k (∂_γσ = √Δt ∂_γ g).</summary>
    double TraceSigmaPlusDSigma(int k)
    {
        var rows = U.St.DgRow[k]; var lanes = U.St.DgLane[k];
        double s = 0;
        if (U.DiagonalNoise)
        {
            for (int e = 0; e < rows.Length; e++)
                if (U.NoiseLaneOfRow[rows[e]] == lanes[e]) s += dg[k][e] / sv[U.NoiseIndexOfRow[rows[e]]];
            return s;
        }
        for (int e = 0; e < rows.Length; e++) s += sp[lanes[e] * U.D + rows[e]] * dg[k][e] * U.SqDt;
        return s;
    }

    // ---------------------------------------------------------------- the DK recursion

    // carried from DkBegin to DkEnd of the same group and step
    double _alpha;
    DkMode _mode;
    double[] _sl = Array.Empty<double>();

    /// <summary>
    /// Group g at step n, first half: α, the selected entries of J⁻¹, c = ν − ∇ log|det J|, and
    /// u = J⁻ᵀc — unless the sparse LU of the lane set holds the factors (iterative mode): then the
    /// result is true, and the lane set forms c and solves for every lane at once, putting u into
    /// <see cref="Solution"/> before <see cref="DkEnd"/> (of J⁻¹ it copies only the pairs that
    /// <see cref="DkEnd"/> reads into <see cref="LuSel"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    public bool DkBegin(int g, long n)
    {
        var grp = U.Groups[g];
        int d = U.D;
        double alpha = grp.AlphaAt(n, U.Dt, U.St.InitHasScore, U.M);
        var mode = grp.Mode;
        if (mode == DkMode.Exact) DenseInverse();
        else if (mode == DkMode.Iterative && !LuOk) { EnsureLocal(); mode = DkMode.Exact; DenseInverse(); }
        var sl = mode == DkMode.Iterative ? LuSel : sel[g];
        _alpha = alpha; _sl = sl; _mode = mode;
        // iterative (and first_order when the lane set batches it): the lane set forms c and solves
        // for every lane at once (ResponseLanes)
        if (mode == DkMode.Iterative || (mode == DkMode.FirstOrder && BatchFirstOrder)) return true;
        if (mode == DkMode.Exact) for (int q = 0; q < U.SelJ.Length; q++) sl[q] = jinv[U.SelJ[q] * d + U.SelI[q]];
        else if (mode == DkMode.FirstOrder) SelectedFirstOrder(sl);

        // c = ν − ∇ log|det J|
        // (summed per k in a register, in the order of the Hessian's entries)
        int[] hByK = U.HByK, hStart = U.HStart, hsel = U.HSelByK;
        var c = cvec;
        var nuG = nu[g];
        for (int k = 0; k < d; k++)
        {
            double s = 0;
            for (int q = hStart[k]; q < hStart[k + 1]; q++) s += sl[hsel[q]] * hv[hByK[q]];
            c[k] = nuG[k] - s;
        }
        // u = J⁻ᵀ c
        var u = nuNew[g];
        if (!SolveT(mode, c, u)) { DenseInverse(); mode = DkMode.Exact; SolveT(mode, c, u); }
        _mode = mode;
        return false;
    }

    // u·χ_k and σ⁺ᵀw·χ_k of the group in flight, when the lane set summed them (DkEnd)
    bool _dotsReady;
    double[] _uc = Array.Empty<double>(), _wsc = Array.Empty<double>();

    /// <summary>The lane set's sums u·χ_k and σ⁺ᵀw·χ_k for this group and step (same order of additions).</summary>
    public void SetDots(int k, double uc, double wsc)
    {
        if (_uc.Length < U.NParams) { _uc = new double[U.NParams]; _wsc = new double[U.NParams]; }
        _uc[k] = uc; _wsc[k] = wsc; _dotsReady = true;
    }

    /// <summary>Set by the lane set: it computes first_order's J⁻¹ pairs, c and u for every lane at once.</summary>
    public bool BatchFirstOrder;

    /// <summary>Group g's selected entries of J⁻¹ (where the lane set puts the pairs DkEnd reads).</summary>
    public double[] SelOf(int g) => sel[g];

    /// <summary>χ of response parameter k this step.</summary>
    public double[] Chi(int k) => chi[k];

    /// <summary>σ⁺ᵀw this step.</summary>
    public double[] Spw => spw;

    /// <summary>ν of group g.</summary>
    public double[] Nu(int g) => nu[g];

    /// <summary>This step's Hessian values.</summary>
    public double[] Hv => hv;

    /// <summary>Where u = J⁻ᵀc of group g goes.</summary>
    public double[] Solution(int g) => nuNew[g];

    /// <summary>Group g at step n, second half: the weights ℓ and the covector ν.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    public void DkEnd(int g, long n)
    {
        var grp = U.Groups[g];
        int d = U.D;
        var st = U.St;
        double alpha = _alpha;
        var mode = _mode;
        var sl = _sl;
        var nuG = nu[g];
        var u = nuNew[g];

        // ℓ increments (use u before ν is overwritten)
        foreach (int k in grp.Whiches)
        {
            var ch = chi[k];
            if (n == 0 && !U.St.InitHasScore)
            {
                // a point (or uniform) init that moves with γ: the first step's perturbation is χ + J ∂_γx₀
                bool any = false;
                for (int i = 0; i < d; i++) if (U.DetInitMask[i] && v0[k * d + i] != 0) { any = true; break; }
                if (any)
                {
                    if (!piIsI) throw new InvalidOperationException("a deterministic init that depends on the parameter needs full-rank noise (use a normal init)");
                    EnsureLocal();
                    Array.Copy(ch, chiTot, d);
                    for (int e = 0; e < st.JRow.Length; e++)
                        if (U.DetInitMask[st.JCol[e]]) chiTot[st.JRow[e]] += jv[e] * v0[k * d + st.JCol[e]];
                    ch = chiTot;
                }
            }
            double term1, term2, trJD = 0, wsc = 0;
            var ds = U.DChiSel[k];
            for (int e = 0; e < ds.Length; e++) trJD += sl[ds[e]] * dchi[k][e];
            if (piIsI)
            {
                // u·χ and σ⁺ᵀw·χ in one loop: two independent chains of additions side by side
                double uc = 0;
                if (_dotsReady && ReferenceEquals(ch, chi[k])) { uc = _uc[k]; wsc = _wsc[k]; } // the lane set summed them
                else if (alpha != 0) for (int i = 0; i < d; i++) { uc += u[i] * ch[i]; wsc += spw[i] * ch[i]; }
                else for (int i = 0; i < d; i++) uc += u[i] * ch[i];
                term1 = (1 - alpha) * uc;
                term2 = (1 - alpha) * trJD;
            }
            else
            {
                term1 = Dense.DotProjected(new ArrayVec(u), new ArrayVec(pi), new ArrayVec(ch), alpha, d);
                term2 = trJD - alpha * TraceJinvPiDchi(mode, k);
                wsc = 0;
                if (alpha != 0) for (int i = 0; i < d; i++) wsc += spw[i] * ch[i];
            }
            double term3 = 0;
            if (alpha != 0) term3 = alpha * (wsc - TraceSigmaPlusDSigma(k));
            ell[g][k] += -term1 - term2 + term3;
        }

        _dotsReady = false;

        // ν ← (I − αΠ)ᵀ u − α σ⁺ᵀ w
        if (piIsI) for (int i = 0; i < d; i++) nuG[i] = (1 - alpha) * u[i] - alpha * spw[i];
        else Dense.CovectorProjected(new ArrayVec(u), new ArrayVec(pi), new ArrayVec(spw), alpha, new ArrayVec(nuG), d);
    }

    /// <summary>tr(J⁻¹ Π Dχ) = Σ_e (J⁻¹Π)_{j i} Dχ_e, columns of J⁻¹Π by solves (degenerate noise only).</summary>
    double TraceJinvPiDchi(DkMode mode, int k)
    {
        int d = U.D;
        var rows = U.St.DChiRow[k]; var cols = U.St.DChiCol[k];
        double s = 0;
        for (int e = 0; e < rows.Length; e++)
        {
            int i = rows[e], j = cols[e];
            for (int r = 0; r < d; r++) col[r] = pi[r * d + i];
            var z = tmp2;
            Solve(mode, col, z);
            s += z[j] * dchi[k][e];
        }
        return s;
    }

    void DenseInverse()
    {
        int d = U.D;
        if (jd.Length == 0) { jd = new double[d * d]; jinv = new double[d * d]; }
        if (d == 1)
        {
            // Dense.Lu and Dense.Inverse of a 1×1 matrix, operation for operation: J = 0 + Σ entries, no row
            // swap, J⁻¹ = 1 / J (a 1-D model's exact mode runs this every step; the general loops cost more)
            double j0 = 0.0;
            for (int e = 0; e < U.St.JRow.Length; e++) j0 += jv[e];
            double m0 = Math.Abs(j0);
            if (m0 == 0 || !(m0 < double.PositiveInfinity)) throw new InvalidOperationException("the Jacobian of the Euler step is singular on this path (step too large for the drift?)");
            jd[0] = j0; piv[0] = 0; jinv[0] = 1.0 / j0;
            return;
        }
        Array.Clear(jd);
        for (int e = 0; e < U.St.JRow.Length; e++) jd[U.St.JRow[e] * d + U.St.JCol[e]] += jv[e];
        if (!Dense.Lu(new ArrayVec(jd), new ArrayVec(piv), d)) throw new InvalidOperationException("the Jacobian of the Euler step is singular on this path (step too large for the drift?)");
        Dense.Inverse(new ArrayVec(jd), new ArrayVec(piv), d, new ArrayVec(jinv), new ArrayVec(col));
    }

    const int MaxIter = 200;
    const double Tol = 1e-12;

    /// <summary>J⁻¹ ≈ I − E (+ E² under multiplicative noise, the Itô terms), at the selected entries.</summary>
    void SelectedFirstOrder(double[] sl)
    {
        int[] sj = U.SelJ, si = U.SelI, se = U.SelE;
        var e = ev;
        if (!U.Multiplicative)
        {
            for (int q = 0; q < sj.Length; q++)
            {
                double s = sj[q] == si[q] ? 1.0 : 0.0;
                int k = se[q];
                if (k >= 0) s -= e[k];
                sl[q] = s;
            }
            return;
        }
        for (int q = 0; q < sj.Length; q++)
        {
            double s = sj[q] == si[q] ? 1.0 : 0.0;
            if (se[q] >= 0) s -= e[se[q]];
            var a = U.SelE2A[q]; var b = U.SelE2B[q];
            for (int r = 0; r < a.Length; r++) s += e[a[r]] * e[b[r]];
            sl[q] = s;
        }
    }

    /// <summary>z = b − E z iterated (or the transpose) to relative 1e-12; false when it does not converge.</summary>
    bool Neumann(double[] b, double[] z, bool transpose)
    {
        int d = U.D;
        var st = U.St;
        Array.Copy(b, z, d);
        var nz = tmp;
        for (int it = 0; it < MaxIter; it++)
        {
            Array.Copy(b, nz, d);
            if (transpose) for (int e = 0; e < st.JRow.Length; e++) nz[st.JCol[e]] -= ev[e] * z[st.JRow[e]];
            else for (int e = 0; e < st.JRow.Length; e++) nz[st.JRow[e]] -= ev[e] * z[st.JCol[e]];
            double diff = 0, size = 0;
            for (int i = 0; i < d; i++) { diff = Math.Max(diff, Math.Abs(nz[i] - z[i])); size = Math.Max(size, Math.Abs(nz[i])); z[i] = nz[i]; }
            if (!double.IsFinite(size)) return false;
            if (diff <= Tol * size || size == 0) return true;
        }
        return false;
    }

    /// <summary>z = J⁻¹ b in the given mode (b is not modified).</summary>
    void Solve(DkMode mode, double[] b, double[] z)
    {
        int d = U.D;
        var st = U.St;
        switch (mode)
        {
            case DkMode.Exact:
                for (int i = 0; i < d; i++) { double s = 0; for (int j = 0; j < d; j++) s += jinv[i * d + j] * b[j]; z[i] = s; }
                break;
            case DkMode.Iterative:
                // Neumann reads b and writes z and its scratch (tmp), never b
                if (!Neumann(b, z, false)) { DenseInverse(); Solve(DkMode.Exact, b, z); }
                break;
            default:
                {
                    var e1 = s1; var e2 = s2;
                    Zero(e1);
                    for (int e = 0; e < st.JRow.Length; e++) e1[st.JRow[e]] += ev[e] * b[st.JCol[e]];
                    for (int i = 0; i < d; i++) z[i] = b[i] - e1[i];
                    if (U.Multiplicative)
                    {
                        Zero(e2);
                        for (int e = 0; e < st.JRow.Length; e++) e2[st.JRow[e]] += ev[e] * e1[st.JCol[e]];
                        for (int i = 0; i < d; i++) z[i] += e2[i];
                    }
                    break;
                }
        }
    }

    /// <summary>u = J⁻ᵀ c in the given mode; false when the Neumann series fails (caller falls back to LU).</summary>
    bool SolveT(DkMode mode, double[] c, double[] u)
    {
        int d = U.D;
        var st = U.St;
        switch (mode)
        {
            case DkMode.Exact:
                for (int j = 0; j < d; j++) { double s = 0; for (int i = 0; i < d; i++) s += jinv[i * d + j] * c[i]; u[j] = s; }
                return true;
            case DkMode.Iterative:
                {
                    // (with the sparse factors at hand the lane set solves instead: see DkBegin)
                    Array.Copy(c, col, d);
                    return Neumann(col, u, transpose: true);
                }
            default:
                {
                    // Eᵀc gathered per column (each column's terms in the order of J's entries, from 0)
                    var e1 = tmp2;
                    int[] byCol = U.JByCol, colStart = U.JColStart, rowOf = U.JByColRow;
                    for (int j = 0; j < d; j++)
                    {
                        double s = 0;
                        for (int q = colStart[j]; q < colStart[j + 1]; q++) s += ev[byCol[q]] * c[rowOf[q]];
                        e1[j] = s;
                        u[j] = c[j] - s;
                    }
                    if (U.Multiplicative)
                    {
                        // + EᵀEᵀc
                        for (int j = 0; j < d; j++)
                        {
                            double s = u[j];
                            for (int q = colStart[j]; q < colStart[j + 1]; q++) s += ev[byCol[q]] * e1[rowOf[q]];
                            u[j] = s;
                        }
                    }
                    return true;
                }
        }
    }
}
