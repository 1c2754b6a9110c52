using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>
/// The lane entry of <see cref="Engine.RunPartial{TModel}"/> for a model type: null when the type has no lane
/// step (<see cref="ISdeLaneModel"/>), else the lane run, which returns null when one path at a time is chosen.
/// Built once per type by reflection, so that the engine's generic code needs no constraint on it.
/// </summary>
static class LaneRun<TModel> where TModel : struct, ISdeModel
{
    public static readonly Func<TModel, RunSettings, QueryPlan[], Accumulators?>? Run = Make();

    static Func<TModel, RunSettings, QueryPlan[], Accumulators?>? Make()
    {
        if (!typeof(ISdeLaneModel).IsAssignableFrom(typeof(TModel))) return null;
        var mi = typeof(Engine).GetMethod(nameof(Engine.RunLanes), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(typeof(TModel));
        return mi.CreateDelegate<Func<TModel, RunSettings, QueryPlan[], Accumulators?>>();
    }
}

public static partial class Engine
{
    /// <summary>
    /// Largest state dimension for which the automatic choice runs four paths per step. Measured (one
    /// thread, tests/perf/lanes.sh): lanes win on every model size tried, from 1 to 40 components.
    /// Above this the lane step's method body grows with the model and the JIT would optimise it less.
    /// </summary>
    public const int MaxAutoLaneDim = 256;

    /// <summary>
    /// Smallest run (paths × steps) for which the automatic choice runs four paths per step: the lane
    /// engine's code is compiled per model on first use (tens of milliseconds), which a run of fewer
    /// path-steps than this does not win back (one path at a time runs 10^6 path-steps in about 0.2 s).
    /// </summary>
    public const long MinAutoLanePathSteps = 1_000_000;

    /// <summary>
    /// Largest state dimension for which a thread steps two groups of four paths side by side. A small
    /// model's step is one short dependency chain per group (load, a few operations, store, the next step
    /// reads it back): one group leaves the core waiting on that latency, two fill it. Measured
    /// (tests/perf/lanes.sh): Ornstein–Uhlenbeck and Lorenz-63 gain; a wide model's step is already many
    /// independent components.
    /// </summary>
    public const int MaxTwoGroupDim = 8;

    /// <summary>
    /// Overrides the automatic choice for runs started on the current thread only (0: no override, 1: one
    /// path at a time, 4: lanes wherever the model has them), below <see cref="RunSettings.Lanes"/>: lets tests
    /// compare both ways in-process without touching other threads' runs.
    /// </summary>
    [ThreadStatic] public static int LanesOnThisThread;

    /// <summary>Does a run with settings <paramref name="s"/> of a model with this lane width and dimension use lanes?</summary>
    /// <param name="minPathSteps">The smallest run for the automatic choice (<see cref="MinAutoLanePathSteps"/> unless given).</param>
    internal static bool ChooseLanes(RunSettings s, int laneWidth, int dim, long minPathSteps = MinAutoLanePathSteps)
    {
        if (laneWidth != 4 || !Vector256.IsHardwareAccelerated || !Avx2.IsSupported) return false;
        int want = s.Lanes;
        if (want == 0) want = LanesOnThisThread;
        if (want == 0 && int.TryParse(Environment.GetEnvironmentVariable("SDE_LANES"), out int env)) want = env;
        return want switch
        {
            1 => false,
            4 => true,
            _ => s.Paths >= 4 && dim <= MaxAutoLaneDim && (double)s.Paths * s.Steps >= minPathSteps,
        };
    }

    /// <summary>
    /// <see cref="RunPartial{TModel}"/> with four paths per step in the lanes of a <see cref="Vector256{T}"/>,
    /// or null when one path at a time is chosen. The same path blocks, accumulators and failure record
    /// as the one-path engine; each lane records into a worker of its own (merged at the end: the sums
    /// are exact, so the order does not matter).
    /// </summary>
    internal static unsafe Accumulators? RunLanes<TModel>(TModel m, RunSettings s, QueryPlan[] plans)
        where TModel : struct, ISdeModel, ISdeLaneModel
    {
        long steps = CheckSettings(s);
        int d = m.Dim, nw = m.NoiseDim, nobs = m.ObservableCount;
        if (!ChooseLanes(s, m.LaneWidth, d)) return null;
        var layout = QueryLayout.Build(plans, steps, s.Dt, nobs);
        bool two = d <= MaxTwoGroupDim;
        int perThread = two ? 8 : 4;

        int threads = s.Threads > 0 ? s.Threads : Environment.ProcessorCount;
        // blocks of whole lane groups where there are enough paths (a partial group runs one path at a time)
        long blockSize = Math.Clamp(s.Paths / ((long)threads * 16), perThread, 256) & ~(perThread - 1L);
        long blocks = s.Paths == 0 ? 0 : (s.Paths + blockSize - 1) / blockSize;
        threads = (int)Math.Max(1, Math.Min(threads, blocks));

        long need = Memory.Estimate(d, nw, nobs, plans, perThread * threads) + threads * 8L * perThread * (2 * (d + 4) + BatchSteps(nw) * nw + 4);
        long avail = s.MemoryLimit > 0 ? s.MemoryLimit : Memory.Available();
        // four lanes keep four paths' records (a density's bins four times): where that does not fit, one
        // path at a time, which checks its own need and says so in its words
        if (avail > 0 && need > avail) return null;

        var sh = new Shared(s, steps, blockSize, blocks, layout);
        var result = new Accumulators(plans, layout, steps, s.Dt);
        var groups = new LaneGroup[threads];
        try
        {
            for (int i = 0; i < threads; i++) groups[i] = new LaneGroup(d, nw, nobs, plans, layout, steps, s.Dt, two ? 2 : 1);
            if (threads == 1)
            {
                RunLaneWorker(m, sh, groups[0]);
            }
            else
            {
                var ts = new Thread[threads - 1];
                for (int i = 1; i < threads; i++)
                {
                    var g = groups[i];
                    ts[i - 1] = new Thread(() => RunLaneWorker(m, sh, g), (int)Memory.WorkerStack) { IsBackground = true, Name = $"sde-worker-{i}" };
                    ts[i - 1].Start();
                }
                RunLaneWorker(m, sh, groups[0]);
                foreach (var t in ts) t.Join();
            }
            if (sh.Error != null) sh.Error.Throw();
            s.Cancel.ThrowIfCancellationRequested();
            if (sh.FailedPaths > 0)
                throw new SimulationFailedException(sh.FailStep, sh.FailStep * s.Dt, sh.FailedPaths, groups.Sum(g => g.Lanes.Sum(w => w.Ran)), s.Paths);
            foreach (var g in groups) foreach (var w in g.Lanes) result.Merge(w.Acc);
        }
        finally
        {
            foreach (var g in groups) g?.Dispose();
        }
        s.Progress?.Invoke(1.0);
        return result;
    }

    /// <summary>
    /// Steps whose normals a lane group draws at once (<see cref="Normals.FillAcrossPaths4Steps"/>): enough for
    /// the generator to keep many independent chains in flight with one to a few noises, and at most about
    /// 16 KiB of normals (four paths × noises × steps), which stay in the L1 cache until the steps use them
    /// (measured against 8 KiB: 14% more path-steps per second with 40 noises, tests/perf/lanes.sh);
    /// even, so each batch is whole step pairs (a lane's block gives two steps).
    /// </summary>
    internal static int BatchSteps(int noises)
    {
        // (on the hardware, not on Normals.ForceNarrow: buffers sized by one call serve later calls)
        if (!Vector512.IsHardwareAccelerated) return Math.Clamp(2048 / (4 * Math.Max(noises, 1)), 2, 32) & ~1;
        // the 512-bit generator draws four step pairs per pass of two chains: whole multiples of eight
        // steps where they fit in about 20 KiB (40 noises: 16 steps, where 12 left a pass of one chain)
        int b = Math.Clamp(2560 / (4 * Math.Max(noises, 1)), 2, 32);
        return b >= 8 ? b & ~7 : b & ~1;
    }

    /// <summary>
    /// One thread's lane workers (lane j's records and accumulators; four per group of four paths, one or
    /// two groups) and the lane-major buffers of each group.
    /// </summary>
    sealed unsafe class LaneGroup : IDisposable
    {
        public readonly Worker[] Lanes;
        /// <summary>The workers of group 0 and of group 1 (lanes 0..3 and 4..7).</summary>
        public readonly Worker[][] Quads;
        /// <summary>Group 0's states x and y (component i of lane j at [i·4 + j]) and the normals of <see cref="Batch"/> steps (step s at W4 + s·4m); group 1's the same.</summary>
        public double* X4, Y4, W4, X4b, Y4b, W4b;
        public readonly int Batch;
        void* _mem;

        public LaneGroup(int d, int m, int nobs, QueryPlan[] plans, QueryLayout[] layout, long steps, double dt, int groups)
        {
            Lanes = new Worker[4 * groups];
            for (int j = 0; j < Lanes.Length; j++) Lanes[j] = new Worker(d, m, nobs, plans, layout, steps, dt);
            Quads = new Worker[groups][];
            for (int q = 0; q < groups; q++) Quads[q] = Lanes[(4 * q)..(4 * q + 4)];
            Batch = BatchSteps(m);
            long dp = 4L * Math.Max(d, 1), mp = 4L * Math.Max(m, 1) * Batch;
            long total = groups * (2 * dp + mp);
            _mem = NativeMemory.AlignedAlloc((nuint)(total * 8), 64);
            NativeMemory.Clear(_mem, (nuint)(total * 8));
            X4 = (double*)_mem; Y4 = X4 + dp; W4 = Y4 + dp;
            if (groups == 2) { X4b = W4 + mp; Y4b = X4b + dp; W4b = Y4b + dp; }
        }

        public void Dispose()
        {
            foreach (var w in Lanes) w?.Dispose();
            if (_mem != null) { NativeMemory.AlignedFree(_mem); _mem = null; }
        }
    }

    static void RunLaneWorker<TModel>(TModel model, Shared sh, LaneGroup g) where TModel : struct, ISdeModel, ISdeLaneModel
    {
        try { RunLaneBlocks(ref model, sh, g); }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref sh.Error, ExceptionDispatchInfo.Capture(e), null);
            sh.Stop = true;
        }
    }

    /// <summary>
    /// The blocks of paths, four at a time; a block's last paths that do not fill a group, and every group in
    /// which a lane fails, run one path at a time (<see cref="RunOnePath"/>): a failure is then found and
    /// reported exactly as the one-path engine reports it (the first failing path in order, its step).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void RunLaneBlocks<TModel>(ref TModel model, Shared sh, LaneGroup g) where TModel : struct, ISdeModel, ISdeLaneModel
    {
        var w0 = g.Lanes[0];
        while (!sh.Stop)
        {
            long blk = Interlocked.Increment(ref sh.NextBlock) - 1;
            if (blk >= sh.Blocks) break;
            long p0 = blk * sh.BlockSize, p1 = Math.Min(p0 + sh.BlockSize, sh.Paths);
            long p = p0;
            while (p + 4 <= p1)
            {
                if (sh.Stop) return;
                if (sh.Cancel.IsCancellationRequested) { sh.Stop = true; return; }
                int size = g.Quads.Length == 2 && p + 8 <= p1 ? 8 : 4;
                if (!RunGroups(ref model, sh, g, p, size == 8))
                {
                    // a lane failed: the group(s) again, one path at a time (same bits), to report as the one-path engine does
                    foreach (var w in g.Lanes) w.Discard();
                    for (long q = p; q < p + size; q++)
                        if (!RunOnePath(ref model, sh, w0, q)) return;
                }
                p += size;
            }
            for (; p < p1; p++)
            {
                if (sh.Stop) return;
                if (sh.Cancel.IsCancellationRequested) { sh.Stop = true; return; }
                if (!RunOnePath(ref model, sh, w0, p)) return;
            }
        }
    }

    /// <summary>
    /// Paths p .. p+3 in the four lanes of group 0, and with <paramref name="two"/> paths p+4 .. p+7 in group 1,
    /// whose steps alternate with group 0's: a small model's step is a dependency chain through its state,
    /// and the core runs the two chains side by side. False (nothing committed, nothing counted) if a lane's
    /// state is not finite.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe bool RunGroups<TModel>(ref TModel model, Shared sh, LaneGroup g, long p, bool two) where TModel : struct, ISdeModel, ISdeLaneModel
    {
        int d = model.Dim, m = model.NoiseDim, paths = two ? 8 : 4;
        long steps = sh.Steps, obsFrom = sh.ObsFrom, obsTo = sh.ObsTo;
        double dt = sh.Dt, sqdt = sh.SqDt;
        ulong seed = sh.Seed;
        var progress = sh.Progress;
        var lanes = g.Lanes;
        Worker[] qa = g.Quads[0], qb = two ? g.Quads[1] : qa;
        var w0 = lanes[0];
        double* a = g.X4, b = g.Y4, w = g.W4, a2 = g.X4b, b2 = g.Y4b, w2 = g.W4b;
        ulong gp = (ulong)(sh.FirstPath + p);
        for (int j = 0; j < paths; j++)
        {
            var wk = lanes[j];
            Normals.Fill(seed, gp + (ulong)j, 0, Philox.TagInitNormal, wk.Zn, d);
            Normals.FillUniform(seed, gp + (ulong)j, 0, Philox.TagInitUniform, wk.Zu, d);
            model.Init(new StrideVec((j < 4 ? a : a2) + (j & 3), 4), new StrideVec(wk.Zn, 1), new StrideVec(wk.Zu, 1));
        }
        if (!LanesFinite(a, d) || (two && !LanesFinite(a2, d))) return false;
        if (obsFrom == 0 && w0.NeedsObserve(0))
        {
            ObserveLanes(ref model, qa, a, 0, 0.0);
            if (two) ObserveLanes(ref model, qb, a2, 0, 0.0);
        }
        // the normals of g.Batch steps at a time (they do not depend on the state): the same bits as step by step
        int batch = g.Batch, wstep = 4 * m;
        for (long n0 = 0; n0 < steps; n0 += batch)
        {
            long nEnd = Math.Min(n0 + batch, steps);
            if (m > 0)
            {
                Normals.FillAcrossPaths4Steps(seed, gp, (ulong)n0, (int)(nEnd - n0), Philox.TagStep, w, m);
                if (two) Normals.FillAcrossPaths4Steps(seed, gp + 4, (ulong)n0, (int)(nEnd - n0), Philox.TagStep, w2, m);
            }
            double* wn = w, wn2 = w2;
            for (long n = n0; n < nEnd; n++, wn += wstep, wn2 += wstep)
            {
                double t = n * dt;
                model.StepLanes4(a, b, wn, t, dt, sqdt);
                if (two) model.StepLanes4(a2, b2, wn2, t, dt, sqdt);
                if (!LanesFinite(b, d) || (two && !LanesFinite(b2, d))) return false;
                double* u = a; a = b; b = u;
                u = a2; a2 = b2; b2 = u;
                long n1 = n + 1;
                if ((n1 & StepProgress.Mask) == 0) progress.Add(paths * StepProgress.Chunk);
                if (n1 >= obsFrom && n1 <= obsTo && w0.NeedsObserve(n1))
                {
                    ObserveLanes(ref model, qa, a, n1, n1 * dt);
                    if (two) ObserveLanes(ref model, qb, a2, n1, n1 * dt);
                }
            }
        }
        progress.Add(paths * (steps & StepProgress.Mask));
        for (int j = 0; j < paths; j++) { lanes[j].Ran++; lanes[j].Commit(); }
        return true;
    }

    /// <summary>Are the d components of four lanes all finite? (x·0 is 0 for a finite x, NaN for ±∞ and NaN.)</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe bool LanesFinite(double* x4, int d)
    {
        var acc = Vector256<double>.Zero;
        for (int i = 0; i < d; i++) acc += Vector256.Load(x4 + 4 * i) * Vector256<double>.Zero;
        return Vector256.EqualsAll(acc, Vector256<double>.Zero);
    }

    /// <summary>Each lane's observables (the one-path Observe on a strided view of its lane) into its own records.</summary>
    static unsafe void ObserveLanes<TModel>(ref TModel model, Worker[] lanes, double* x4, long n, double t) where TModel : struct, ISdeModel
    {
        for (int j = 0; j < 4; j++)
        {
            var wk = lanes[j];
            model.Observe(new StrideVec(x4 + j, 4), t, new StrideVec(wk.Obs, 1));
            wk.Record(n);
        }
    }

    /// <summary>
    /// One path, Euler–Maruyama step by step (the body of <see cref="RunBlocks{TModel}"/> and the lanes' fallback):
    /// false after a failure, which it records in <paramref name="sh"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // the step loop: optimised at once, not after tier 0
    static unsafe bool RunOnePath<TModel>(ref TModel model, Shared sh, Worker wk, long p) where TModel : struct, ISdeModel
    {
        int d = model.Dim, m = model.NoiseDim;
        long steps = sh.Steps, obsFrom = sh.ObsFrom, obsTo = sh.ObsTo;
        double dt = sh.Dt, sqdt = sh.SqDt;
        ulong seed = sh.Seed;
        var progress = sh.Progress;
        double* x = wk.X, y = wk.Y, w = wk.W, obs = wk.Obs;
        var wv = new PtrVec(w);
        var ov = new PtrVec(obs);
        ulong gp = (ulong)(sh.FirstPath + p);

        Normals.Fill(seed, gp, 0, Philox.TagInitNormal, wk.Zn, d);
        Normals.FillUniform(seed, gp, 0, Philox.TagInitUniform, wk.Zu, d);
        double* a = x, b = y;
        model.Init(new PtrVec(a), new PtrVec(wk.Zn), new PtrVec(wk.Zu));
        long failAt = AllFinite(a, d) ? -1 : 0;
        if (failAt < 0 && obsFrom == 0 && wk.NeedsObserve(0))
        {
            model.Observe(new PtrVec(a), 0.0, ov);
            wk.Record(0);
        }
        for (long n = 0; n < steps && failAt < 0; n++)
        {
            if (m > 0) wk.Pairs.Fill(seed, gp, (ulong)n, Philox.TagStep, w, m);
            model.Step(new PtrVec(a), new PtrVec(b), wv, n * dt, dt, sqdt);
            if (!AllFinite(b, d)) { failAt = n + 1; break; }
            double* t = a; a = b; b = t;
            long n1 = n + 1;
            if ((n1 & StepProgress.Mask) == 0) progress.Add(StepProgress.Chunk);
            if (n1 >= obsFrom && n1 <= obsTo && wk.NeedsObserve(n1))
            {
                model.Observe(new PtrVec(a), n1 * dt, ov);
                wk.Record(n1);
            }
        }
        wk.Ran++;
        progress.Add(steps & StepProgress.Mask);
        if (failAt >= 0) { wk.Discard(); sh.Fail(failAt); return false; }
        wk.Commit();
        return true;
    }
}
