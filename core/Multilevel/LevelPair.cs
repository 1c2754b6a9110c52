using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Sde.Core;

/// <summary>
/// One level's exact sums over its samples (pairs of a fine and a coarse path): per sampled quantity k
/// (a plan: an observable at T or its window average), Σ Y_k and Σ Y_k Y_j (j ≤ k) of the correction
/// Y = P_fine − P_coarse (on level 0, Y = P_fine), and Σ P_k, Σ P_k² of the fine value alone. Exact, so
/// the sums (and every decision taken from them) do not depend on the thread count.
/// </summary>
public sealed class LevelSums
{
    public readonly int K;
    public long N;
    internal readonly ExactSum[] SY, SYY, SP, SPP;
    public long NonFinite;
    /// <summary>The pairs (i ≥ j) whose Σ Y_i Y_j is kept: within each group of quantities that one target combines
    /// (a density's bins are separate targets, so their k² cross-products are not computed); Map[(i, j)] (i ≥ j) is the pair's index
    /// (a dictionary: a density of many bins would make a dense k² map large).</summary>
    internal readonly int[] PI, PJ;
    internal readonly Dictionary<(int, int), int> Map;

    /// <param name="groups">The groups of quantities whose covariances are needed; null: every pair.</param>
    public LevelSums(int k, int[][]? groups = null)
    {
        K = k;
        Map = new Dictionary<(int, int), int>();
        var pi = new List<int>(); var pj = new List<int>();
        void Pair(int i, int j)
        {
            if (i < j) (i, j) = (j, i);
            if (!Map.TryAdd((i, j), pi.Count)) return;
            pi.Add(i); pj.Add(j);
        }
        if (groups == null) { for (int i = 0; i < k; i++) for (int j = 0; j <= i; j++) Pair(i, j); }
        else
        {
            for (int i = 0; i < k; i++) Pair(i, i);
            foreach (var g in groups) foreach (int i in g) foreach (int j in g) Pair(i, j);
        }
        PI = pi.ToArray(); PJ = pj.ToArray();
        SY = New(k); SYY = New(PI.Length); SP = New(k); SPP = New(k);
    }

    static ExactSum[] New(int n) { var a = new ExactSum[n]; for (int i = 0; i < n; i++) a[i] = new ExactSum(4); return a; }

    /// <summary>Empty sums with the same quantities and pairs.</summary>
    public LevelSums EmptyLike() => new(this);

    LevelSums(LevelSums like)
    {
        K = like.K; PI = like.PI; PJ = like.PJ; Map = like.Map;
        SY = New(K); SYY = New(PI.Length); SP = New(K); SPP = New(K);
    }

    /// <summary>Adds one chunk's plain sums (Σy, Σyyᵀ, Σp, Σp² over its samples, in sample order) exactly.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal void AddChunk(Chunk c)
    {
        if (c.N == 0) return;
        for (int i = 0; i < K; i++) { SY[i].Add(c.Y[i]); SP[i].Add(c.P[i]); SPP[i].Add(c.PP[i]); }
        for (int i = 0; i < SYY.Length; i++) SYY[i].Add(c.YY[i]);
        N += c.N; NonFinite += c.NonFinite;
        c.Clear();
    }

    /// <summary>
    /// Plain sums over a chunk of consecutive samples (<see cref="LevelPair.ChunkSize"/>, aligned on the
    /// batch's first sample): an exact sum per sample would cost more than a coarse level's few steps.
    /// The chunks are the same whatever the thread count (blocks are multiples of the chunk), and their
    /// sums are added exactly, so the result still does not depend on the threads.
    /// </summary>
    internal sealed class Chunk
    {
        public readonly double[] Y, YY, P, PP;
        readonly int[] _pi, _pj;
        public long N, NonFinite;
        public Chunk(LevelSums like)
        {
            int k = like.K;
            _pi = like.PI; _pj = like.PJ;
            Y = new double[k]; YY = new double[_pi.Length]; P = new double[k]; PP = new double[k];
            _y = new double[LevelPair.ChunkSize * Math.Max(k, 1)];
        }
        /// <summary>A chunk's corrections, plan by plan (for the products of pairs).</summary>
        readonly double[] _y;
        /// <summary>
        /// Adds <paramref name="rows"/> samples, given as their window sums (sample j's plan i at [j·K + i], fine in f,
        /// coarse in c): P = f/window, Y = P − c/window (level 0: Y = P). Each sum takes the samples in order, so the
        /// bits are those of adding one sample at a time; the loops run per quantity over the samples (no per-sample calls).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public unsafe void AddRows(double* f, double* c, int rows, double[] winF, double[] winC, bool coupled)
        {
            int k = Y.Length;
            if (rows == 0) return;
            fixed (double* y = _y) AddRows(f, c, rows, winF, winC, coupled, y, k);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        unsafe void AddRows(double* f, double* c, int rows, double[] winF, double[] winC, bool coupled, double* y, int k)
        {
            for (int i = 0; i < k; i++)
            {
                double wf = winF[i], wc = winC[i], sy = Y[i], sp = P[i], spp = PP[i];
                long bad = 0;
                for (int j = 0; j < rows; j++)
                {
                    double pf = f[j * k + i] / wf;
                    double yi = coupled ? pf - c[j * k + i] / wc : pf;
                    y[i * rows + j] = yi;
                    if (!double.IsFinite(yi) || !double.IsFinite(pf)) bad++;
                    sy += yi; sp += pf; spp += pf * pf;
                }
                Y[i] = sy; P[i] = sp; PP[i] = spp; NonFinite += bad;
            }
            for (int q = 0; q < _pi.Length; q++)
            {
                double* a = y + _pi[q] * rows, b = y + _pj[q] * rows;
                double s = YY[q];
                for (int j = 0; j < rows; j++) s += a[j] * b[j];
                YY[q] = s;
            }
            N += rows;
        }
        public void Clear() { Array.Clear(Y); Array.Clear(YY); Array.Clear(P); Array.Clear(PP); N = 0; NonFinite = 0; }
    }

    public void Merge(LevelSums o)
    {
        if (o.K != K || o.PI.Length != PI.Length) throw new ArgumentException("level sums of other quantities");
        for (int i = 0; i < SY.Length; i++) { SY[i].Add(o.SY[i]); SP[i].Add(o.SP[i]); SPP[i].Add(o.SPP[i]); }
        // pair by pair (exact sums: the order of the additions does not matter)
        for (int q = 0; q < o.PI.Length; q++)
        {
            if (!Map.TryGetValue((o.PI[q], o.PJ[q]), out int at)) throw new ArgumentException("level sums of other covariance pairs");
            SYY[at].Add(o.SYY[q]);
        }
        N += o.N; NonFinite += o.NonFinite;
    }

    /// <summary>The exact state (for the partial files of a sharded fixed-plan run): merged, it gives the unsplit run's bits.</summary>
    public void Write(BinaryWriter w)
    {
        w.Write(K); w.Write(N); w.Write(NonFinite);
        w.Write(PI.Length);
        for (int p = 0; p < PI.Length; p++) { w.Write(PI[p]); w.Write(PJ[p]); }
        foreach (var a in new[] { SY, SYY, SP, SPP }) foreach (var e in a) e.Write(w);
    }

    public static LevelSums Read(BinaryReader r, int k)
    {
        int kk = r.ReadInt32();
        if (kk != k) throw new InvalidDataException($"level sums of {kk} quantities, the run samples {k}");
        long n = r.ReadInt64(), bad = r.ReadInt64();
        int np = r.ReadInt32();
        if (np < k || np > (long)k * (k + 1) / 2) throw new InvalidDataException($"{np} covariance pairs of {k} quantities");
        var groups = new int[np][];
        for (int p = 0; p < np; p++)
        {
            int i = r.ReadInt32(), j = r.ReadInt32();
            if (i < 0 || j < 0 || i >= k || j >= k) throw new InvalidDataException($"a covariance pair ({i}, {j}) outside 0..{k - 1}");
            groups[p] = new[] { i, j };
        }
        var s = new LevelSums(k, groups) { N = n, NonFinite = bad };
        if (s.PI.Length != np) throw new InvalidDataException("repeated covariance pairs");
        for (int i = 0; i < k; i++) s.SY[i] = ExactSum.Read(r);
        // the file's pairs in its order: each to its place here
        foreach (var g in groups) s.SYY[s.Map[(Math.Max(g[0], g[1]), Math.Min(g[0], g[1]))]] = ExactSum.Read(r);
        for (int i = 0; i < k; i++) s.SP[i] = ExactSum.Read(r);
        for (int i = 0; i < k; i++) s.SPP[i] = ExactSum.Read(r);
        if (s.N < 0 || s.NonFinite < 0 || s.NonFinite > s.N * k) throw new InvalidDataException($"impossible counts ({s.N} samples, {s.NonFinite} non-finite)");
        return s;
    }

    /// <summary>E[Y_k] (rounded once).</summary>
    public double MeanY(int k) => N == 0 ? double.NaN : SY[k].Round() / N;
    /// <summary>The sample covariance of Y_i and Y_j (N − 1 in the denominator).</summary>
    public double CovY(int i, int j)
    {
        if (N < 2) return double.NaN;
        double mi = MeanY(i), mj = MeanY(j);
        if (!Map.TryGetValue((Math.Max(i, j), Math.Min(i, j)), out int q)) throw new InvalidOperationException($"the covariance of quantities {i} and {j} is not kept");
        return (SYY[q].Round() / N - mi * mj) * N / (N - 1.0);
    }
    public double MeanP(int k) => N == 0 ? double.NaN : SP[k].Round() / N;
    public double VarP(int k) => N < 2 ? double.NaN : (SPP[k].Round() / N - MeanP(k) * MeanP(k)) * N / (N - 1.0);
}

/// <summary>
/// The coupled simulation of one level of multilevel Monte Carlo (Giles 2008): on level ℓ ≥ 1 a fine
/// path with step dt₀ 2^−ℓ and a coarse path with step dt₀ 2^−(ℓ−1), started from the same init draw and
/// driven by the same Brownian path: each coarse step takes the sum of the two fine increments,
/// z_c = (z₁ + z₂)/√2. Level 0 is a plain Euler–Maruyama path with step dt₀. Sample p of level ℓ draws
/// its normals from path index (ℓ + 1)·2⁴⁰ + p, so the levels are independent of each other and of a
/// plain run of the same seed, and a sample's numbers do not depend on the batch or thread that ran it.
/// </summary>
public static class LevelPair
{
    /// <summary>Path-index offset of level ℓ's samples (2⁴⁰ apart: Philox's path word holds 2⁴⁸ per level).</summary>
    public static ulong LevelBase(int level) => (ulong)(level + 1) << 40;

    /// <summary>Samples per chunk of plain sums (see <see cref="LevelSums.Chunk"/>).</summary>
    public const int ChunkSize = 64;

    /// <summary>The samples' window layout on a grid of <paramref name="steps"/> steps of <paramref name="dt"/>.</summary>
    internal static QueryLayout[] Layout(QueryPlan[] plans, long steps, double dt, int nobs) => QueryLayout.Build(plans, steps, dt, nobs);

    /// <summary>
    /// Runs samples First .. First + Paths − 1 of level <paramref name="level"/> (step dt₀ 2^−level on the fine
    /// path; <paramref name="s"/>.Dt is dt₀ and <paramref name="s"/>.T the horizon) and returns their exact sums.
    /// </summary>
    public static LevelSums Run<TModel>(in TModel model, RunSettings s, QueryPlan[] plans, int level)
        where TModel : struct, ISdeModel
    {
        return Run(new[] { model }, new int[plans.Length], s, plans, level, null);
    }

    /// <inheritdoc cref="Run{TModel}(in TModel, RunSettings, QueryPlan[], int)"/>
    /// <param name="progress">Counts the path-steps done (fine plus coarse steps), now and then.</param>
    /// <param name="models">The set's model and its finite-difference twins; plan i is sampled on models[planModel[i]].</param>
    internal static LevelSums Run<TModel>(TModel[] models, int[] planModel, RunSettings s, QueryPlan[] plans, int level, StepProgress? progress,
                                          int[][]? groups = null)
        where TModel : struct, ISdeModel
    {
        if (planModel.Length != plans.Length) throw new ArgumentException("one model index per plan");
        foreach (int k in planModel) if (k < 0 || k >= models.Length) throw new ArgumentException($"model index {k} out of range");
        var model = models[0];
        var used = planModel.Distinct().OrderBy(k => k).ToArray();
        long n0 = Engine.CheckSettings(s);
        if (level < 0 || level > 30) throw new ArgumentOutOfRangeException(nameof(level));
        TModel m = model;
        int d = m.Dim, nw = m.NoiseDim, nobs = m.ObservableCount;
        foreach (var q in plans)
            if (q.Kind != EstimateKind.Mean && !(q.Kind == EstimateKind.Density && q.Bins == 1 && q.Hi > q.Lo))
                throw new ArgumentException("multilevel Monte Carlo estimates means and smoothed density bins only");
        long nf = n0 << level;
        double dtf = s.Dt / (1L << level);
        var lf = Layout(plans, nf, dtf, nobs);
        var lc = level > 0 ? Layout(plans, nf / 2, 2 * dtf, nobs) : lf;
        var ctx = new Ctx(s, level, nf, dtf, lf, lc, planModel, plans) { InitDraws = used.Any(k => ReadsInitDraws(models[k])) };
        if (!ctx.InitDraws) ctx.X0 = models.Select(InitState).ToArray();
        long perSample = level == 0 ? nf : nf + nf / 2; // path-steps of a sample, for the progress (counted per chunk)
        var total = new LevelSums(plans.Length, groups);
        if (s.Paths == 0) return total;
        // four samples side by side where the model has a lane step (the same bits: CoupledLanes)
        var lanes = CoupledLanes<TModel>.For(model, s);
        int kq = plans.Length;
        var workers = PathBlocks.RunBlocks(s, 16 * ChunkSize, ChunkSize, "mlmc",
            () => new Worker(d, nw, nobs, total, lanes != null),
            (wk, first, count, fail) => Block(models, used, ctx, lanes, wk, first, count, fail, s.Cancel, progress, perSample));
        try { foreach (var w in workers) total.Merge(w.Acc); }
        finally { foreach (var w in workers) w.Dispose(); }
        return total;
    }

    /// <summary>
    /// A block of samples, a chunk of <see cref="ChunkSize"/> at a time: the chunk's samples are simulated (four side by
    /// side where the model has lanes) into the worker's rows of window sums, then summed in sample order by one tight
    /// loop (<see cref="LevelSums.Chunk.AddRows"/>). A sample's fixed cost is what sets the wall time of the coarse levels
    /// (level 0 of a one-step dt₀ is a step per sample), so nothing here is per sample that can be per chunk.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Block<TModel>(TModel[] models, int[] used, Ctx ctx, CoupledLanes<TModel>? lanes, Worker wk, ulong first, long count,
                                     Action<long> fail, CancellationToken cancel, StepProgress? progress, long perSample)
        where TModel : struct, ISdeModel
    {
        var ms = (TModel[])models.Clone();
        int k = wk.K;
        for (long c0 = 0; c0 < count; c0 += ChunkSize)
        {
            if (cancel.IsCancellationRequested) return;
            int cn = (int)Math.Min(ChunkSize, count - c0);
            ulong p0 = first + (ulong)c0;
            new Span<double>(wk.F, cn * k).Clear();
            new Span<double>(wk.C, cn * k).Clear();
            int rows = 0; // rows filled (failed samples are left out, as one at a time)
            int j = 0;
            if (lanes != null)
                for (; j + 4 <= cn; j += 4)
                {
                    double* f = wk.F + rows * k, c = wk.C + rows * k;
                    if (rows != j) { new Span<double>(f, 4 * k).Clear(); new Span<double>(c, 4 * k).Clear(); } // after a failed sample's row
                    bool ok = true;
                    foreach (int who in used)
                        if (!lanes.Run(ref ms[who], ctx, wk.Lanes!, p0 + (ulong)j, who, f, c, k)) { ok = false; break; }
                    if (ok) { rows += 4; continue; }
                    // a path of the four not finite: the four one at a time, which reports the failure exactly
                    new Span<double>(f, 4 * k).Clear();
                    new Span<double>(c, 4 * k).Clear();
                    for (int jj = 0; jj < 4; jj++)
                        if (One(ms, used, ctx, wk, p0 + (ulong)(j + jj), wk.F + rows * k, wk.C + rows * k, fail)) rows++;
                }
            for (; j < cn; j++)
                if (One(ms, used, ctx, wk, p0 + (ulong)j, wk.F + rows * k, wk.C + rows * k, fail)) rows++;
            wk.Chunk.AddRows(wk.F, wk.C, rows, ctx.WinF, ctx.WinC, ctx.Level > 0);
            progress?.Add(cn * perSample);
            wk.Acc.AddChunk(wk.Chunk);
        }
    }

    /// <summary>
    /// Whether the model's init reads its draws: an init that gives the same finite state from NaN draws as from
    /// zeros does not (the language's init laws use their draws arithmetically, so a NaN would reach the state).
    /// Then a sample skips its two init draws, which on a one-step level 0 cost as much as the step; the
    /// state, and so every number, is the same.
    /// </summary>
    static unsafe double[] InitState<TModel>(TModel model) where TModel : struct, ISdeModel
    {
        int d = Math.Max(model.Dim, 1);
        var x = new double[d];
        double* z = stackalloc double[d];
        for (int i = 0; i < d; i++) z[i] = 0;
        fixed (double* px = x) model.Init(new PtrVec(px), new PtrVec(z), new PtrVec(z));
        return x;
    }

    static unsafe bool ReadsInitDraws<TModel>(TModel model) where TModel : struct, ISdeModel
    {
        int d = Math.Max(model.Dim, 1);
        double* x0 = stackalloc double[d], x1 = stackalloc double[d], z0 = stackalloc double[d], zn = stackalloc double[d];
        for (int i = 0; i < d; i++) { x0[i] = 0; x1[i] = 0; z0[i] = 0; zn[i] = double.NaN; }
        model.Init(new PtrVec(x0), new PtrVec(z0), new PtrVec(z0));
        model.Init(new PtrVec(x1), new PtrVec(zn), new PtrVec(zn));
        for (int i = 0; i < model.Dim; i++)
            if (!double.IsFinite(x1[i]) || BitConverter.DoubleToInt64Bits(x0[i]) != BitConverter.DoubleToInt64Bits(x1[i])) return true;
        return false;
    }

    /// <summary>One sample on every model instance, one path at a time, into the worker's window sums: false (and the
    /// failure reported) when a path blew up.</summary>
    static unsafe bool One<TModel>(TModel[] ms, int[] used, Ctx ctx, Worker wk, ulong p, double* sumF, double* sumC, Action<long> fail) where TModel : struct, ISdeModel
    {
        // the row may hold a failed sample's partial sums
        new Span<double>(sumF, wk.K).Clear();
        new Span<double>(sumC, wk.K).Clear();
        foreach (int k in used)
        {
            long f = RunPath(ref ms[k], ctx, wk, p, k, sumF, sumC);
            if (f >= 0) { fail(f); return false; }
        }
        return true;
    }

    internal sealed class Ctx
    {
        public readonly ulong Seed, Base;
        /// <summary>Does the model's init read its normal and uniform draws? (<see cref="ReadsInitDraws"/>)</summary>
        public bool InitDraws = true;
        /// <summary>Without init draws, each model instance's init state (the same for every sample: computed once).</summary>
        public double[][]? X0;
        public readonly int Level;
        public readonly long Nf;
        public readonly double Dtf, SqDtf, Dtc, SqDtc;
        public readonly QueryLayout[] Lf, Lc;
        public readonly long FFrom, FTo, CFrom, CTo;
        public readonly int[] PlanModel;
        /// <summary>Per plan: a smoothed density bin [Lo, Hi] (see <see cref="SmoothedBin"/>), else a plain observable.</summary>
        public readonly bool[] Bin;
        public readonly double[] BinLo, BinHi, BinInvH, BinInvW;
        /// <summary>Per plan: the number of grid times in its window, fine and coarse (a sample's value is its window sum over this).</summary>
        public readonly double[] WinF, WinC;
        public Ctx(RunSettings s, int level, long nf, double dtf, QueryLayout[] lf, QueryLayout[] lc, int[] planModel, QueryPlan[] plans)
        {
            PlanModel = planModel;
            int k = plans.Length;
            Bin = new bool[k]; BinLo = new double[k]; BinHi = new double[k]; BinInvH = new double[k]; BinInvW = new double[k];
            for (int i = 0; i < k; i++)
                if (plans[i].Kind == EstimateKind.Density)
                {
                    double w = plans[i].Hi - plans[i].Lo;
                    Bin[i] = true; BinLo[i] = plans[i].Lo; BinHi[i] = plans[i].Hi; BinInvH[i] = SmoothingPerWidth / w; BinInvW[i] = 1.0 / w;
                }
            Seed = s.Seed; Base = LevelBase(level); Level = level; Nf = nf;
            Dtf = dtf; SqDtf = Math.Sqrt(dtf); Dtc = 2 * dtf; SqDtc = Math.Sqrt(2 * dtf);
            Lf = lf; Lc = lc;
            WinF = lf.Select(l => (double)l.Window).ToArray(); WinC = lc.Select(l => (double)l.Window).ToArray();
            FFrom = CFrom = long.MaxValue; FTo = CTo = -1;
            foreach (var l in lf) { FFrom = Math.Min(FFrom, l.From); FTo = Math.Max(FTo, l.To); }
            foreach (var l in lc) { CFrom = Math.Min(CFrom, l.From); CTo = Math.Max(CTo, l.To); }
        }
    }

    sealed unsafe class Worker : IDisposable
    {
        public double* Xf, Yf, Xc, Yc, W1, W2, Wc, Zn, Zu, Obs;
        /// <summary>A chunk's rows of window sums: sample j's plan i at [j·K + i], fine (F) and coarse (C).</summary>
        public double* F, C;
        public readonly int K;
        public readonly LevelSums Acc;
        public readonly LevelSums.Chunk Chunk;
        void* _mem;
        public readonly LaneBuffers? Lanes;
        /// <summary>A level-0 path's step normals, two steps per draw.</summary>
        public readonly StepNormals Pairs;

        public Worker(int d, int m, int nobs, LevelSums like, bool lanes)
        {
            Pairs = new StepNormals(m);
            int k = K = like.K;
            if (lanes) Lanes = new LaneBuffers(d, m, nobs);
            long dp = Pad(d), mp = Pad(m), op = Pad(nobs), rows = Pad(ChunkSize * Math.Max(k, 1));
            long total = 6 * dp + 3 * mp + op + 2 * rows;
            _mem = NativeMemory.AlignedAlloc((nuint)(total * 8), 64);
            double* p = (double*)_mem;
            NativeMemory.Clear(p, (nuint)(total * 8));
            Xf = p; Yf = Xf + dp; Xc = Yf + dp; Yc = Xc + dp; Zn = Yc + dp; Zu = Zn + dp;
            W1 = Zu + dp; W2 = W1 + mp; Wc = W2 + mp; Obs = Wc + mp; F = Obs + op; C = F + rows;
            Acc = like.EmptyLike();
            Chunk = new LevelSums.Chunk(like);
        }

        static long Pad(int n) => ((long)Math.Max(n, 1) + 3) & ~3L;

        public void Dispose()
        {
            if (_mem != null) { NativeMemory.AlignedFree(_mem); _mem = null; }
            Lanes?.Dispose();
        }
    }

    /// <summary>A density bin's smoothing: the logistic scale h is the bin width over this (w/8: a logistic of standard
    /// deviation 0.23 w, against the bin's own uniform averaging of 0.29 w). docs/mlmc.md, "Densities".</summary>
    public const double SmoothingPerWidth = 8.0;

    /// <summary>The smoothed indicator of the bin [lo, hi] per unit width: (σ((x − lo)/h) − σ((x − hi)/h))/w, σ the
    /// logistic function. Lipschitz (unlike the indicator), so the level corrections' variance decays like dt_ℓ^β with the
    /// scheme's strong rate once dt_ℓ is small against h², not like dt_ℓ^½.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double SmoothedBin(double x, double lo, double hi, double invH, double invW)
    {
        double a = 1.0 / (1.0 + Math.Exp(-(x - lo) * invH)), b = 1.0 / (1.0 + Math.Exp(-(x - hi) * invH));
        return (a - b) * invW;
    }

    /// <summary>Adds the observables (in obs) at step n to the running window sums of instance <paramref name="who"/>'s plans whose window holds n.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void Record(Ctx c, QueryLayout[] lay, int who, double* obs, long n, double* sum)
    {
        var planModel = c.PlanModel;
        for (int i = 0; i < lay.Length; i++)
            if (planModel[i] == who && n >= lay[i].From && n <= lay[i].To)
            {
                double x = obs[lay[i].Observable];
                sum[i] += c.Bin[i] ? SmoothedBin(x, c.BinLo[i], c.BinHi[i], c.BinInvH[i], c.BinInvW[i]) : x;
            }
    }

    /// <summary>
    /// One sample of the level on model instance <paramref name="who"/> (0: the set's model, k ≥ 1: finite-difference
    /// twin k − 1), recording the plans of that instance: returns the step at which a path blew up, or −1. Every
    /// instance draws the same init and increments (the same path index), so twins are coupled across parameter
    /// and level alike.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe long RunPath<TModel>(ref TModel model, Ctx c, Worker wk, ulong p, int who, double* sumF, double* sumC) where TModel : struct, ISdeModel
    {
        int d = model.Dim, m = model.NoiseDim;
        ulong gp = c.Base + p, seed = c.Seed;
        var lf = c.Lf; var lc = c.Lc;
        double* xf = wk.Xf, yf = wk.Yf, xc = wk.Xc, yc = wk.Yc, w1 = wk.W1, w2 = wk.W2, wc = wk.Wc, obs = wk.Obs;
        var ov = new PtrVec(obs);
        // the same init draw for both paths
        if (c.InitDraws)
        {
            Normals.Fill(seed, gp, 0, Philox.TagInitNormal, wk.Zn, d);
            Normals.FillUniform(seed, gp, 0, Philox.TagInitUniform, wk.Zu, d);
        }
        model.Init(new PtrVec(xf), new PtrVec(wk.Zn), new PtrVec(wk.Zu));
        if (!Finite(xf, d)) return 0;
        for (int i = 0; i < d; i++) xc[i] = xf[i];
        bool coupled = c.Level > 0;
        if (c.FFrom == 0) { model.Observe(new PtrVec(xf), 0.0, ov); Record(c, lf, who, obs, 0, sumF); }
        if (coupled && c.CFrom == 0) { model.Observe(new PtrVec(xc), 0.0, ov); Record(c, lc, who, obs, 0, sumC); }
        double dtf = c.Dtf, sqf = c.SqDtf, dtc = c.Dtc, sqc = c.SqDtc;
        const double InvSqrt2 = 0.70710678118654752440;
        long nf = c.Nf;
        if (!coupled)
        {
            for (long n = 0; n < nf; n++)
            {
                if (m > 0) wk.Pairs.Fill(seed, gp, (ulong)n, Philox.TagStep, w1, m);
                model.Step(new PtrVec(xf), new PtrVec(yf), new PtrVec(w1), n * dtf, dtf, sqf);
                if (!Finite(yf, d)) return n + 1;
                { double* t = xf; xf = yf; yf = t; }
                long n1 = n + 1;
                if (n1 >= c.FFrom && n1 <= c.FTo) { model.Observe(new PtrVec(xf), n1 * dtf, ov); Record(c, lf, who, obs, n1, sumF); }
            }
        }
        else
        {
            for (long k = 0; k < nf / 2; k++)
            {
                long n = 2 * k;
                // the fine steps n, n + 1 are one step pair: one draw for both (w2 waits for the second)
                if (m > 0) Normals.FillPair(seed, gp, (ulong)k, Philox.TagStep, w1, w2, m);
                model.Step(new PtrVec(xf), new PtrVec(yf), new PtrVec(w1), n * dtf, dtf, sqf);
                if (!Finite(yf, d)) return n + 1;
                { double* t = xf; xf = yf; yf = t; }
                if (n + 1 >= c.FFrom && n + 1 <= c.FTo) { model.Observe(new PtrVec(xf), (n + 1) * dtf, ov); Record(c, lf, who, obs, n + 1, sumF); }
                model.Step(new PtrVec(xf), new PtrVec(yf), new PtrVec(w2), (n + 1) * dtf, dtf, sqf);
                if (!Finite(yf, d)) return n + 2;
                { double* t = xf; xf = yf; yf = t; }
                if (n + 2 >= c.FFrom && n + 2 <= c.FTo) { model.Observe(new PtrVec(xf), (n + 2) * dtf, ov); Record(c, lf, who, obs, n + 2, sumF); }
                // the coarse step on the same Brownian increment: ΔW_c = ΔW₁ + ΔW₂, i.e. z_c = (z₁ + z₂)/√2
                for (int j = 0; j < m; j++) wc[j] = (w1[j] + w2[j]) * InvSqrt2;
                model.Step(new PtrVec(xc), new PtrVec(yc), new PtrVec(wc), k * dtc, dtc, sqc);
                if (!Finite(yc, d)) return n + 2;
                { double* t = xc; xc = yc; yc = t; }
                if (k + 1 >= c.CFrom && k + 1 <= c.CTo) { model.Observe(new PtrVec(xc), (k + 1) * dtc, ov); Record(c, lc, who, obs, k + 1, sumC); }
            }
        }
        return -1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe bool Finite(double* p, int n)
    {
        double r = 0;
        for (int i = 0; i < n; i++) r += p[i] * 0.0;
        return r == 0.0;
    }
}
