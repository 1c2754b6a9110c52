using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace Sde.Core;

/// <summary>
/// One query's exact sums over coupled pairs: per pair the coarse value c (the chain at dt), the fine
/// value f (at dt/2, on the same Brownian path: two fine increments sum to the coarse one, and the same
/// initial draw), d = c − f and r the Richardson extrapolation (2^p f − c) / (2^p − 1) for a scheme of
/// weak order p: 2f − c for Euler and Milstein, (4f − c)/3 for SRA, whose error has no dt term for
/// 2f − c to cancel. Means have one slot; densities one per bin (the per-path fraction of the window's
/// samples in the bin; divided by the bin width when rounded). With blocks
/// (<see cref="QueryPlan.PairBlocks"/>) each slot also keeps Σc and Σf per block of pairs (pair j in
/// block j mod <see cref="Blocks"/>), and a density one more slot: the fraction of samples below its range.
/// </summary>
internal sealed class PairAcc
{
    /// <summary>Blocks of the jackknife of a derived result (a variance, a quantile): 32 leave-one-block-out
    /// estimates give its standard error with 31 degrees of freedom (t-distributed z, RMS √(31/29) ≈ 1.03).</summary>
    public const int Blocks = 32;

    /// <summary>One slot's sums: d, d², r, r², c, c²; with blocks, Σc and Σf per block.</summary>
    internal sealed class Cell
    {
        public readonly ExactSum D1 = new(4), D2 = new(4), R1 = new(4), R2 = new(4), C1 = new(4), C2 = new(4);
        public readonly ExactSum[] BC, BF;
        public Cell(int blocks)
        {
            BC = new ExactSum[blocks]; BF = new ExactSum[blocks];
            for (int b = 0; b < blocks; b++) { BC[b] = new ExactSum(2); BF[b] = new ExactSum(2); }
        }
        public IEnumerable<ExactSum> All()
        {
            yield return D1; yield return D2; yield return R1; yield return R2; yield return C1; yield return C2;
            foreach (var e in BC) yield return e;
            foreach (var e in BF) yield return e;
        }
    }

    // a slot's sums are made when a pair first touches it: a density of 10^5 bins costs one array of
    // references, not 6·10^5 accumulators (pairs touch few bins); an untouched slot's sums are zero
    readonly Cell?[] _cells;
    readonly Cell _zero;
    /// <summary>The number of blocks (0: none kept).</summary>
    public readonly int BlockCount;
    /// <summary>The slots that are values (a density's bins; the slot after them is the fraction below).</summary>
    public readonly int ValueSlots;

    readonly double _twoP;

    public PairAcc(int slots, int order = 1, bool blocks = false, bool density = false)
    {
        ValueSlots = slots;
        BlockCount = blocks ? Blocks : 0;
        _cells = new Cell?[blocks && density ? slots + 1 : slots];
        _zero = new Cell(BlockCount);
        _twoP = Math.Pow(2, order);
    }

    public int Slots => _cells.Length;

    /// <summary>The slot's sums (zero sums when no pair touched it; not to be added to).</summary>
    public Cell this[int k] => _cells[k] ?? _zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int k, double c, double f, long pair)
    {
        var x = _cells[k] ??= new Cell(BlockCount);
        double d = c - f, r = _twoP == 2 ? 2 * f - c : (_twoP * f - c) / (_twoP - 1);
        x.D1.Add(d); x.D2.AddProduct(d, d);
        x.R1.Add(r); x.R2.AddProduct(r, r);
        x.C1.Add(c); x.C2.AddProduct(c, c);
        if (BlockCount > 0)
        {
            int b = (int)(pair % BlockCount);
            x.BC[b].Add(c); x.BF[b].Add(f);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // once per thread and run, over every cell: never at tier 0 in a short run
    public void Merge(PairAcc o)
    {
        for (int k = 0; k < _cells.Length; k++)
        {
            var y = o._cells[k];
            if (y == null) continue;
            var x = _cells[k] ??= new Cell(BlockCount);
            using var a = x.All().GetEnumerator();
            using var b = y.All().GetEnumerator();
            while (a.MoveNext() && b.MoveNext()) a.Current.Add(b.Current);
        }
    }

    public void Write(BinaryWriter w)
    {
        w.Write(Slots); w.Write(BlockCount);
        for (int k = 0; k < _cells.Length; k++)
        {
            var x = _cells[k];
            w.Write(x != null);
            if (x != null) foreach (var e in x.All()) e.Write(w);
        }
    }

    public void Read(BinaryReader r)
    {
        if (r.ReadInt32() != Slots || r.ReadInt32() != BlockCount) throw new InvalidDataException("the coupled pairs' bins differ");
        for (int k = 0; k < _cells.Length; k++)
        {
            if (!r.ReadBoolean()) { _cells[k] = null; continue; }
            var x = _cells[k] = new Cell(BlockCount);
            foreach (var e in x.All()) e.Add(ExactSum.Read(r));
        }
    }

    /// <summary>Mean and standard error of the mean of n samples from their exact Σv and Σv² (as QueryAcc does for a mean).</summary>
    public static (double Mean, double StdErr) MeanSe(ExactSum s1, ExactSum s2, long n)
    {
        if (n <= 0) return (double.NaN, double.NaN);
        // untouched bins: no work, no allocation (a density may have 10^5 of them)
        if (s1.Partials.Length == 0 && s2.Partials.Length == 0 && !s1.IsSpecial && !s2.IsSpecial) return (0, n < 2 ? double.NaN : 0);
        double mean = s1.Round() / n;
        if (n < 2 || s1.IsSpecial || s2.IsSpecial) return (mean, double.NaN);
        var ss = new ExactSum(16);
        ss.Add(s2);
        foreach (double p in s1.Partials) ss.AddProduct(-2 * mean, p);
        double m2 = mean * mean, m2e = Math.FusedMultiplyAdd(mean, mean, -m2);
        ss.AddProduct(n, m2); ss.AddProduct(n, m2e);
        double var = Math.Max(ss.Round(), 0) / (n - 1);
        return (mean, Math.Sqrt(var / n));
    }
}

/// <summary>The coupled pairs of a run: how many, how many were planned for the whole run, and their sums per query.</summary>
internal sealed class PairSums
{
    public readonly BiasMode Mode;
    public readonly int Order;
    public long Pairs;
    /// <summary>Estimate: the pairs of the whole run (chosen from the pilot; the same in every shard). Richardson: the run's paths.</summary>
    public long Planned;
    public readonly PairAcc[] Q;
    /// <summary>The pairs per block (pair j in block j mod <see cref="PairAcc.Blocks"/>), for the jackknife of derived results.</summary>
    public readonly long[] BlockPairs = new long[PairAcc.Blocks];
    // per density query: the worker's running counts below the range at the last pair committed (the
    // workers count below per run, a pair's own count is the difference); transient, never merged
    readonly long[] _belowC, _belowF;

    public PairSums(BiasMode mode, int order, QueryPlan[] plans, QueryLayout[] layout)
    {
        Mode = mode; Order = order;
        Q = new PairAcc[layout.Length];
        for (int i = 0; i < layout.Length; i++)
            Q[i] = new PairAcc(layout[i].Kind == EstimateKind.Density ? layout[i].Bins : 1, order, plans[i].PairBlocks && mode == BiasMode.Estimate,
                               layout[i].Kind == EstimateKind.Density);
        _belowC = new long[layout.Length]; _belowF = new long[layout.Length];
    }

    /// <summary>The pair's count below a density's range in each chain, from the workers' running counts.</summary>
    internal (long C, long F) BelowOfPair(int i, long runningC, long runningF)
    {
        long c = runningC - _belowC[i], f = runningF - _belowF[i];
        _belowC[i] = runningC; _belowF[i] = runningF;
        return (c, f);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // once per thread and run, over every cell: never at tier 0 in a short run
    public void Merge(PairSums o)
    {
        if (o.Mode != Mode || o.Order != Order || o.Planned != Planned)
            throw new ArgumentException("the coupled pairs of the accumulators being merged differ (bias mode, order or planned pairs)");
        Pairs += o.Pairs;
        for (int b = 0; b < BlockPairs.Length; b++) BlockPairs[b] += o.BlockPairs[b];
        for (int i = 0; i < Q.Length; i++) Q[i].Merge(o.Q[i]);
    }

    public void Write(BinaryWriter w)
    {
        w.Write((int)Mode); w.Write(Order); w.Write(Pairs); w.Write(Planned);
        foreach (long n in BlockPairs) w.Write(n);
        foreach (var q in Q) q.Write(w);
    }

    public void Read(BinaryReader r)
    {
        if (r.ReadInt32() != (int)Mode || r.ReadInt32() != Order) throw new InvalidDataException("the accumulators were written with another bias setting");
        Pairs = r.ReadInt64(); Planned = r.ReadInt64();
        for (int b = 0; b < BlockPairs.Length; b++) BlockPairs[b] = r.ReadInt64();
        foreach (var q in Q) q.Read(r);
    }

    /// <summary>1 / (1 − 2^−p): turns Q(dt) − Q(dt/2) into the estimate of Q(dt) − Q(0).</summary>
    public double Factor => 1 / (1 - Math.Pow(2, -Order));

    /// <summary>Fills the bias of <paramref name="e"/> (Estimate), or replaces its value by the extrapolation (Richardson).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // once per thread and run, over every cell: never at tier 0 in a short run
    public Estimate Apply(Estimate e, int i, in QueryLayout l)
    {
        var q = Q[i];
        long n = Pairs;
        if (l.Kind == EstimateKind.Mean)
        {
            if (Mode == BiasMode.Richardson)
            {
                var (v, se) = PairAcc.MeanSe(q[0].R1, q[0].R2, n);
                return new Estimate { Value = v, StdErr = se, Count = n, NonFinite = e.NonFinite, Extrapolated = true, BiasPairs = n };
            }
            var (b, sb) = PairAcc.MeanSe(q[0].D1, q[0].D2, n);
            e.Bias = b * Factor; e.BiasStdErr = sb * Factor; e.BiasPairs = n;
            Blocks(e, q);
            return e;
        }
        double width = (l.Hi - l.Lo) / l.Bins;
        var vals = new double[l.Bins]; var ses = new double[l.Bins];
        for (int k = 0; k < l.Bins; k++)
        {
            var (v, se) = Mode == BiasMode.Richardson ? PairAcc.MeanSe(q[k].R1, q[k].R2, n) : PairAcc.MeanSe(q[k].D1, q[k].D2, n);
            double f = Mode == BiasMode.Richardson ? 1 : Factor;
            // a bin where no pair's coarse and fine samples differed: its bias reads 0, but its standard
            // error is not 0 (the pairs did not resolve it). No difference in n pairs bounds the chance of
            // one below 3/n (95%, the rule of three), and a difference is at most 1, so var(D) <= 3/n:
            // the bound √3/n (finite, so that results compare equal and the JSON keeps a number)
            if (Mode == BiasMode.Estimate && se == 0 && n > 0) se = Math.Sqrt(3.0) / n;
            vals[k] = v * f / width; ses[k] = se * f / width;
        }
        if (Mode == BiasMode.Richardson)
            return new Estimate { Grid = e.Grid, Values = vals, StdErrs = ses, Below = e.Below, Above = e.Above, Count = n,
                                  NonFinite = e.NonFinite, Extrapolated = true, BiasPairs = n };
        e.Biases = vals; e.BiasStdErrs = ses; e.BiasPairs = n;
        Blocks(e, q);
        return e;
    }

    /// <summary>The per-block coarse and fine sums of a plan that keeps them, rounded (for the jackknife of a derived result).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // once per thread and run, over every cell: never at tier 0 in a short run
    void Blocks(Estimate e, PairAcc q)
    {
        e.BiasFactor = Factor;
        if (q.BlockCount == 0) return;
        int nb = q.BlockCount;
        var c = new double[q.Slots * nb]; var f = new double[q.Slots * nb];
        for (int k = 0; k < q.Slots; k++)
        {
            var x = q[k];
            for (int b = 0; b < nb; b++) { c[k * nb + b] = x.BC[b].Round(); f[k * nb + b] = x.BF[b].Round(); }
        }
        e.PairBlockC = c; e.PairBlockF = f; e.PairBlockN = (long[])BlockPairs.Clone();
    }
}

public static partial class Engine
{
    /// <summary>Philox streams of the coupled pairs (pair j: the fine step's 2m normals, the initial draw), apart from the main paths'.</summary>
    public const uint TagPairStep = 40, TagPairInitNormal = 41, TagPairInitUniform = 42;

    /// <summary>Pairs of the pilot that sizes the share.</summary>
    public const int PilotPairs = 32;

    /// <summary>
    /// The pilot's pairs are PilotPairIndex + 0 .. m − 1: streams of their own, apart from the estimate's pairs
    /// 0 .. J − 1, so that J does not depend on the pairs it then averages. (When the pilot's pairs were the
    /// estimate's first ones, a pilot that had missed a heavy tail asked for few pairs and those few were part
    /// of the estimate: GBM's variance bias had z RMS 2.28 over the runs with the fewest pairs, 1.18 over the
    /// others; docs/discretisation.md.) The pilot costs its m pairs once more per shard.
    /// </summary>
    public const long PilotPairIndex = 1L << 56;

    /// <summary>
    /// The cost of a coupled pair in paths of the plain engine, as the cap counts it: three chain steps (one at
    /// dt, two at dt/2) and 2m normals per coarse step, where a path takes one step and m normals; measured
    /// (docs/discretisation.md, tests/perf/bias.sh) 1.6 to 3.4 paths of the four-lane engine with the pairs in
    /// the lanes (<see cref="PairLanes{TModel}"/>), the most where the observables are recorded at every step.
    /// A constant, not a timing: the pairs' share, and so the results, must not depend on the machine or its load.
    /// </summary>
    public const int PairCostInPaths = 4;

    /// <summary>The share of the run's work the pairs may add, pilot included: the default costs at most 1 + 1/4 of
    /// bias = off where the pilot asks for more pairs than that (docs/discretisation.md).</summary>
    public const int MaxCostShareInverse = 4;

    /// <summary>The most pairs the estimate may run, pilot included: P / (4 · 4), so that pairs of at most
    /// <see cref="PairCostInPaths"/> paths each add at most a quarter of the run's work.</summary>
    public static long MaxPairs(long totalPaths) => MaxPairs(totalPaths, 1);

    /// <summary>As <see cref="MaxPairs(long)"/> when each pair runs <paramref name="instances"/> model instances (the
    /// run's model and the finite-difference twins of <see cref="QueryPlan.PairTwin"/>): a pair then costs that many times more.</summary>
    public static long MaxPairs(long totalPaths, int instances) =>
        Math.Max(2, totalPaths / ((long)PairCostInPaths * MaxCostShareInverse * Math.Max(1, instances)));

    static int Instances(QueryPlan[] plans) => plans.Select(q => q.PairTwin).Append(0).Distinct().Count();

    /// <summary>
    /// A run whose plans are all finite-difference twins of the coupled pairs (<see cref="QueryPlan.PairTwin"/>):
    /// their main-path values are nobody's, so the main paths are not simulated; only the pairs run. The
    /// accumulators count the range's paths, as a run of them would (the shards' checks compare counts).
    /// </summary>
    static Accumulators RunPairsOnly<TModel>(TModel m, RunSettings s, QueryPlan[] plans, QueryLayout[] layout, long steps, int threads)
        where TModel : struct, ISdeModel
    {
        var result = new Accumulators(plans, layout, steps, s.Dt) { Paths = s.Paths };
        RunBias(m, s, plans, result, steps, threads);
        s.Progress?.Invoke(1.0);
        return result;
    }

    /// <summary>
    /// The number of pairs J for the whole run, from the pilot's variances: the bias's standard error
    /// var(D)^½ / (1 − 2^−p) / √J is about the value's var(Q)^½ / √P when J = P var(D) / (var(Q) (1 − 2^−p)²);
    /// at least the pilot's count, at most <see cref="MaxPairs"/> less the pilot (which every shard runs).
    /// </summary>
    internal static long ChoosePairs(PairSums pilot, long m, long total, int instances = 1)
    {
        double ratio = 0;
        foreach (var q in pilot.Q)
        {
            double vd = 0, vc = 0;
            for (int k = 0; k < q.ValueSlots; k++)
            {
                vd += PairAcc.MeanSe(q[k].D1, q[k].D2, m).StdErr is var a && double.IsFinite(a) ? a * a * m : double.PositiveInfinity;
                vc += PairAcc.MeanSe(q[k].C1, q[k].C2, m).StdErr is var c && double.IsFinite(c) ? c * c * m : 0;
            }
            // a density whose pilot pairs never left a bin together has an unknown var(D), not a zero one
            // (pairs cross a bin edge rarely): it takes the most pairs
            double r = vd == 0 ? (q.Slots > 1 ? double.PositiveInfinity : 0) : vc > 0 ? vd / vc : double.PositiveInfinity;
            ratio = Math.Max(ratio, r);
        }
        double f = pilot.Factor;
        double want = Math.Ceiling(ratio * f * f * total);
        long hi = Math.Max(m, MaxPairs(total, instances) - m);
        return double.IsFinite(want) ? (long)Math.Clamp(want, m, hi) : hi;
    }

    static void RunBias<TModel>(TModel m, RunSettings s, QueryPlan[] plans, Accumulators result, long steps, int threads)
        where TModel : struct, ISdeModel
    {
        long total = s.TotalPaths > 0 ? s.TotalPaths : s.FirstPath + s.Paths;
        int instances = Instances(plans);
        long pilotN = Math.Min(PilotPairs, Math.Max(2, MaxPairs(total, instances) / 3));
        var pilot = new PairSums(BiasMode.Estimate, s.WeakOrder, plans, result.Layout);
        RunPairs(m, s, plans, result.Layout, steps, PilotPairIndex, PilotPairIndex + pilotN, pilot, threads, null);
        long j = ChoosePairs(pilot, pilotN, total, instances);
        var sums = new PairSums(BiasMode.Estimate, s.WeakOrder, plans, result.Layout) { Planned = j };
        // pair i's home is path ⌊i P / J⌋: the shard holding that path runs it
        long lo = (long)(((Int128)s.FirstPath * j + total - 1) / total);
        long hi = (long)(((Int128)(s.FirstPath + s.Paths) * j + total - 1) / total);
        RunPairs(m, s, plans, result.Layout, steps, lo, Math.Min(hi, j), sums, threads, null);
        result.Pairs = sums;
    }

    static Accumulators RunRichardson<TModel>(TModel m, RunSettings s, QueryPlan[] plans, QueryLayout[] layout, long steps, int threads)
        where TModel : struct, ISdeModel
    {
        var result = new Accumulators(plans, layout, steps, s.Dt);
        var sums = new PairSums(BiasMode.Richardson, s.WeakOrder, plans, layout) { Planned = s.TotalPaths > 0 ? s.TotalPaths : s.FirstPath + s.Paths };
        RunPairs(m, s, plans, layout, steps, s.FirstPath, s.FirstPath + s.Paths, sums, threads, result);
        result.Pairs = sums;
        result.Paths = sums.Pairs;
        return result;
    }

    /// <summary>
    /// Runs the coupled pairs j0 .. j1 − 1 into <paramref name="sums"/>. Per coarse step the fine chain
    /// takes two steps of dt/2 on normals z1, z2 and the coarse one step of dt on (z1 + z2)/√2: the same
    /// Brownian increment. <paramref name="outside"/>, when given, receives the coarse chain's samples
    /// outside the densities' ranges (Richardson, where the pairs are the run).
    /// </summary>
    static unsafe void RunPairs<TModel>(TModel model, RunSettings s, QueryPlan[] plans, QueryLayout[] layoutC, long steps,
                                        long j0, long j1, PairSums sums, int threads, Accumulators? outside)
        where TModel : struct, ISdeModel
    {
        if (j1 <= j0) return;
        int d = model.Dim, nw = model.NoiseDim, nobs = model.ObservableCount;
        var layoutF = QueryLayout.Build(plans, 2 * steps, s.Dt / 2, nobs);
        // the model instances the plans sample (0: the run's model; k: twin k − 1), each with the layouts of
        // its own plans only (the others' windows emptied, so that it neither observes nor records them)
        var twins = s.PairTwins ?? Array.Empty<object>();
        var models = new TModel[1 + twins.Length];
        models[0] = model;
        for (int i = 0; i < twins.Length; i++) models[i + 1] = (TModel)twins[i];
        var planModel = new int[plans.Length];
        for (int i = 0; i < plans.Length; i++)
        {
            planModel[i] = plans[i].PairTwin;
            if (planModel[i] < 0 || planModel[i] >= models.Length) throw new ArgumentException($"query {i}: pair twin {planModel[i]} out of range ({twins.Length} twins)");
        }
        var used = planModel.Append(0).Distinct().OrderBy(k => k).ToArray();
        QueryLayout[] own(QueryLayout[] l, int who) =>
            used.Length == 1 ? l : l.Select((x, i) => planModel[i] == who ? x : new QueryLayout(x.Kind, x.Observable, long.MaxValue, -1, x.Bins, x.Lo, x.Hi)).ToArray();
        long count = j1 - j0;
        threads = (int)Math.Max(1, Math.Min(threads, count));
        long next = 0;
        long failed = 0, failStep = long.MaxValue;
        ExceptionDispatchInfo? error = null;
        var local = new PairSums[threads];
        var coarse = new Worker[threads, used.Length];
        var fine = new Worker[threads, used.Length];
        // four pairs at a time in the lanes where the model has a lane step: per thread, instance and lane a
        // coarse and a fine worker, and per lane sums of its own (their running counts below a range are per worker)
        var lanes = PairLanes<TModel>.For(model, s);
        var laneLocal = new PairSums[lanes != null ? threads : 0][];
        var laneC = new Worker[lanes != null ? threads : 0][][];
        var laneF = new Worker[lanes != null ? threads : 0][][];
        var laneBuf = new PairLaneBuffers[lanes != null ? threads : 0];
        try
        {
            for (int i = 0; i < threads; i++)
            {
                local[i] = new PairSums(sums.Mode, sums.Order, plans, layoutC) { Planned = sums.Planned };
                for (int u = 0; u < used.Length; u++)
                {
                    coarse[i, u] = new Worker(d, nw, nobs, plans, own(layoutC, used[u]), steps, s.Dt);
                    // the fine worker's normals buffer holds 2m numbers: its W is allocated for 2m (see Pad)
                    fine[i, u] = new Worker(d, 2 * nw, nobs, plans, own(layoutF, used[u]), 2 * steps, s.Dt / 2);
                }
                if (lanes == null) continue;
                laneBuf[i] = new PairLaneBuffers(d, nw);
                laneLocal[i] = new PairSums[4];
                laneC[i] = new Worker[used.Length][];
                laneF[i] = new Worker[used.Length][];
                for (int j = 0; j < 4; j++) laneLocal[i][j] = new PairSums(sums.Mode, sums.Order, plans, layoutC) { Planned = sums.Planned };
                for (int u = 0; u < used.Length; u++)
                {
                    laneC[i][u] = new Worker[4]; laneF[i][u] = new Worker[4];
                    for (int j = 0; j < 4; j++)
                    {
                        laneC[i][u][j] = new Worker(d, nw, nobs, plans, own(layoutC, used[u]), steps, s.Dt);
                        laneF[i][u][j] = new Worker(d, nw, nobs, plans, own(layoutF, used[u]), 2 * steps, s.Dt / 2);
                    }
                }
            }
            // the pair loop and the per-pair commit run optimised at once, as the plain engine's path
            // loop does: at tier 0 (until the background re-JIT, which a loaded machine delays) a
            // Richardson run of GBM on 8 steps cost 5x its optimised time in a fresh process
            [MethodImpl(MethodImplOptions.AggressiveOptimization)]
            void work(int t)
            {
                try
                {
                    var ms = (TModel[])models.Clone();
                    int group = lanes != null ? 4 : 1;
                    while (!s.Cancel.IsCancellationRequested && Volatile.Read(ref failed) == 0)
                    {
                        long k = Interlocked.Add(ref next, group) - group;
                        if (k >= count) break;
                        long kEnd = Math.Min(k + group, count);
                        if (kEnd - k == 4 && lanes != null)
                        {
                            ulong jl = (ulong)(j0 + k);
                            bool ok = true;
                            for (int u = 0; u < used.Length && ok; u++)
                                ok = lanes.Run(ref ms[used[u]], s, steps, jl, laneBuf[t], laneC[t][u], laneF[t][u]);
                            if (ok)
                            {
                                for (int lane = 0; lane < 4; lane++)
                                {
                                    var acc = laneLocal[t][lane];
                                    for (int u = 0; u < used.Length; u++) CommitPair(laneC[t][u][lane], laneF[t][u][lane], acc, jl + (ulong)lane, used[u], planModel);
                                    acc.Pairs++; acc.BlockPairs[(jl + (ulong)lane) % PairAcc.Blocks]++;
                                }
                                continue;
                            }
                            // a chain left the finite numbers: the four again one at a time (same bits), which report it
                            for (int u = 0; u < used.Length; u++)
                                for (int lane = 0; lane < 4; lane++) { laneC[t][u][lane].Discard(); laneF[t][u][lane].Discard(); }
                        }
                        for (; k < kEnd; k++)
                        {
                            ulong j = (ulong)(j0 + k);
                            long at = -1;
                            // every instance on the same init draw and Brownian path (the pair's streams)
                            for (int u = 0; u < used.Length && at < 0; u++)
                                at = Pair(ref ms[used[u]], s, steps, j, coarse[t, u], fine[t, u], local[t], used[u], planModel);
                            if (at < 0) { local[t].Pairs++; local[t].BlockPairs[j % PairAcc.Blocks]++; continue; }
                            Interlocked.Increment(ref failed);
                            long cur;
                            while (at < (cur = Volatile.Read(ref failStep)) && Interlocked.CompareExchange(ref failStep, at, cur) != cur) { }
                            break;
                        }
                    }
                }
                catch (Exception e) { Interlocked.CompareExchange(ref error, ExceptionDispatchInfo.Capture(e), null); Interlocked.Increment(ref failed); }
            }
            if (threads == 1) work(0);
            else
            {
                var ts = new Thread[threads - 1];
                for (int i = 1; i < threads; i++)
                {
                    int t = i;
                    ts[i - 1] = new Thread(() => work(t), (int)Memory.WorkerStack) { IsBackground = true, Name = $"sde-pairs-{i}" };
                    ts[i - 1].Start();
                }
                work(0);
                foreach (var t in ts) t.Join();
            }
            error?.Throw();
            s.Cancel.ThrowIfCancellationRequested();
            if (failed > 0) throw new SimulationFailedException(failStep, failStep * s.Dt, failed);
            void outsideOf(Worker w)
            {
                for (int q = 0; q < layoutC.Length; q++)
                {
                    var a = outside!.Q[q]; var b = w.Acc.Q[q];
                    a.Below += b.Below; a.Above += b.Above; a.NonFinite += b.NonFinite;
                }
            }
            for (int i = 0; i < threads; i++)
            {
                sums.Merge(local[i]);
                if (outside != null)
                    for (int u = 0; u < used.Length; u++) outsideOf(coarse[i, u]);
                if (lanes == null) continue;
                foreach (var l in laneLocal[i]) sums.Merge(l);
                if (outside != null)
                    foreach (var ws in laneC[i]) foreach (var w in ws) outsideOf(w);
            }
        }
        finally
        {
            foreach (var w in coarse) w?.Dispose();
            foreach (var w in fine) w?.Dispose();
            foreach (var ws in laneC.Concat(laneF)) if (ws != null) foreach (var wl in ws) if (wl != null) foreach (var w in wl) w?.Dispose();
            foreach (var b in laneBuf) b?.Dispose();
        }
    }

    /// <summary>One coupled pair; returns −1, or the coarse step at which a chain left the finite numbers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe long Pair<TModel>(ref TModel model, RunSettings s, long steps, ulong j, Worker wc, Worker wf, PairSums acc, int who, int[] planModel)
        where TModel : struct, ISdeModel
    {
        int d = model.Dim, m = model.NoiseDim;
        double dt = s.Dt, sqdt = Math.Sqrt(dt), h = dt / 2, sqh = Math.Sqrt(h);
        ulong seed = s.Seed;
        double* z = wf.W, zc = wc.W;
        var cv = new PtrVec(zc);
        var z1 = new PtrVec(z);
        var z2 = new PtrVec(z + m);

        // the same initial draw for both chains
        Normals.Fill(seed, j, 0, TagPairInitNormal, wc.Zn, d);
        Normals.FillUniform(seed, j, 0, TagPairInitUniform, wc.Zu, d);
        double* a = wc.X, b = wc.Y, fa = wf.X, fb = wf.Y;
        model.Init(new PtrVec(a), new PtrVec(wc.Zn), new PtrVec(wc.Zu));
        for (int i = 0; i < d; i++) fa[i] = a[i];
        long failAt = Finite(a, d) ? -1 : 0;
        var ovc = new PtrVec(wc.Obs);
        var ovf = new PtrVec(wf.Obs);
        if (failAt < 0)
        {
            if (wc.NeedsObserve(0)) { model.Observe(new PtrVec(a), 0.0, ovc); wc.Record(0); }
            if (wf.NeedsObserve(0)) { model.Observe(new PtrVec(fa), 0.0, ovf); wf.Record(0); }
        }
        double inv = 1 / Math.Sqrt(2);
        // SRA: lanes 0 .. m/2 − 1 are ξ (ΔW = √Δt ξ), lanes m/2 .. m − 1 the ζ of I_(1,0) = Δt^{3/2} (ξ + ζ/√3) / 2.
        // Over the coarse step, ∫ W ds = I_a + h ΔW_a + I_b gives ζ_c = (√3 (ξ_a − ξ_b) + ζ_a + ζ_b) / (2√2),
        // a standard normal independent of ξ_c = (ξ_a + ξ_b)/√2: the coarse chain's own integral of the fine path
        int mi = s.IntegralNormals ? m / 2 : m;
        double s3 = Math.Sqrt(3), inv8 = 1 / Math.Sqrt(8);
        for (long n = 0; n < steps && failAt < 0; n++)
        {
            if (m > 0)
            {
                wf.Pairs.Fill(seed, j, (ulong)n, TagPairStep, z, 2 * m);
                for (int k = 0; k < mi; k++) zc[k] = (z[k] + z[m + k]) * inv;
                for (int k = mi; k < m; k++) zc[k] = (s3 * (z[k - mi] - z[m + k - mi]) + z[k] + z[m + k]) * inv8;
            }
            model.Step(new PtrVec(a), new PtrVec(b), cv, n * dt, dt, sqdt);
            model.Step(new PtrVec(fa), new PtrVec(fb), z1, (2 * n) * h, h, sqh);
            if (!Finite(fb, d)) { failAt = n + 1; break; }
            if (wf.NeedsObserve(2 * n + 1)) { model.Observe(new PtrVec(fb), (2 * n + 1) * h, ovf); wf.Record(2 * n + 1); }
            model.Step(new PtrVec(fb), new PtrVec(fa), z2, (2 * n + 1) * h, h, sqh);
            if (!Finite(b, d) || !Finite(fa, d)) { failAt = n + 1; break; }
            double* t = a; a = b; b = t;
            if (wc.NeedsObserve(n + 1)) { model.Observe(new PtrVec(a), (n + 1) * dt, ovc); wc.Record(n + 1); }
            if (wf.NeedsObserve(2 * n + 2)) { model.Observe(new PtrVec(fa), (2 * n + 2) * h, ovf); wf.Record(2 * n + 2); }
        }
        if (failAt >= 0) { wc.Discard(); wf.Discard(); return failAt; }
        CommitPair(wc, wf, acc, j, who, planModel);
        return -1;
    }

    static unsafe bool Finite(double* p, int n)
    {
        double r = 0;
        for (int i = 0; i < n; i++) r += p[i] * 0.0;
        return r == 0.0;
    }

    /// <summary>Adds the pair's values (coarse c, fine f) of the queries that model instance <paramref name="who"/>
    /// samples to the sums and clears both workers for the next pair (the caller counts the pair once all its instances ran).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void CommitPair(Worker wc, Worker wf, PairSums acc, ulong pair, int who, int[] planModel)
    {
        var lc = wc.Layout; var lf = wf.Layout;
        long j = (long)pair;
        for (int i = 0; i < lc.Length; i++)
        {
            if (planModel[i] != who) continue;
            var q = acc.Q[i];
            if (lc[i].Kind == EstimateKind.Mean)
            {
                q.Add(0, wc.QSum[i] / lc[i].Window, wf.QSum[i] / lf[i].Window, j);
                wc.QSum[i] = 0; wf.QSum[i] = 0;
                continue;
            }
            int[] cc = wc.Counts[i], cf = wf.Counts[i];
            double ic = 1.0 / lc[i].Window, jf = 1.0 / lf[i].Window;
            // every bin either chain touched, once: the coarse's, then the fine's that the coarse left empty
            int[] tc = wc._touched[i], tf = wf._touched[i];
            for (int k = 0; k < wc._nTouched[i]; k++) { int b = tc[k]; q.Add(b, cc[b] * ic, cf[b] * jf, j); }
            for (int k = 0; k < wf._nTouched[i]; k++) { int b = tf[k]; if (cc[b] == 0) q.Add(b, 0, cf[b] * jf, j); }
            if (q.Slots > q.ValueSlots)
            {
                var (bc, bf) = acc.BelowOfPair(i, wc.Acc.Q[i].Below, wf.Acc.Q[i].Below);
                if (bc != 0 || bf != 0) q.Add(q.ValueSlots, bc * ic, bf * jf, j);
            }
            for (int k = 0; k < wc._nTouched[i]; k++) cc[tc[k]] = 0;
            for (int k = 0; k < wf._nTouched[i]; k++) cf[tf[k]] = 0;
            wc._nTouched[i] = 0; wf._nTouched[i] = 0;
        }
    }
}
