using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>
/// The CPU engine: Euler–Maruyama on every path, paths handed out in fixed blocks to worker threads,
/// per-thread exact accumulators merged at the end. Generic over the model struct so that the JIT
/// specialises and inlines the model's methods into the step loop.
/// </summary>
public static partial class Engine
{
    /// <summary>Runs <paramref name="plans"/> on <paramref name="model"/> and returns one estimate per plan.</summary>
    public static Estimate[] Run<TModel>(in TModel model, RunSettings s, QueryPlan[] plans)
        where TModel : struct, ISdeModel
        => RunPartial(model, s, plans).ToEstimates();

    /// <summary>
    /// Runs paths FirstPath .. FirstPath + Paths − 1 and returns their exact sums, to be merged with those
    /// of other path ranges (<see cref="Accumulators.Merge"/>) before <see cref="Accumulators.ToEstimates"/>.
    /// </summary>
    public static unsafe Accumulators RunPartial<TModel>(in TModel model, RunSettings s, QueryPlan[] plans)
        where TModel : struct, ISdeModel
    {
        ArgumentNullException.ThrowIfNull(s);
        ArgumentNullException.ThrowIfNull(plans);
        long steps = CheckSettings(s);
        TModel m = model;
        int d = m.Dim, nw = m.NoiseDim, nobs = m.ObservableCount;
        if (d <= 0 || nw < 0 || nobs < 0) throw new ArgumentException($"invalid model sizes (dim {d}, noise {nw}, observables {nobs})");
        var layout = QueryLayout.Build(plans, steps, s.Dt, nobs);
        // Four paths per step in the vector lanes where the model has a lane step and it pays (EngineLanes.cs).
        // Richardson runs every path as a coupled pair (RunRichardson), one path at a time.
        int threads = s.Threads > 0 ? s.Threads : Environment.ProcessorCount;
        if (s.Bias == BiasMode.Estimate && plans.Length > 0 && Array.TrueForAll(plans, q => q.PairTwin > 0))
            return RunPairsOnly(m, s, plans, layout, steps, threads);
        long blockSize = Math.Clamp(s.Paths / ((long)threads * 16), 1, 256);
        long blocks = s.Paths == 0 ? 0 : (s.Paths + blockSize - 1) / blockSize;
        threads = (int)Math.Max(1, Math.Min(threads, blocks));
        if (s.Bias != BiasMode.Richardson && LaneRun<TModel>.Run is { } lanes && lanes(m, s, plans) is { } laneResult)
        {
            // the bias pairs run after the main paths on streams of their own, whichever engine ran those
            if (s.Bias == BiasMode.Estimate) RunBias(m, s, plans, laneResult, steps, threads);
            return laneResult;
        }

        long need = Memory.Estimate(d, nw, nobs, plans, threads);
        long avail = s.MemoryLimit > 0 ? s.MemoryLimit : Memory.Available();
        Memory.Check(need, avail, $"{threads} worker(s) on a model of dimension {d} with {plans.Length} quer{(plans.Length == 1 ? "y" : "ies")}");

        if (s.Bias == BiasMode.Richardson) return RunRichardson(m, s, plans, layout, steps, threads);
        var sh = new Shared(s, steps, blockSize, blocks, layout);
        var result = new Accumulators(plans, layout, steps, s.Dt);
        var workers = new Worker[threads];
        try
        {
            for (int i = 0; i < threads; i++) workers[i] = new Worker(d, nw, nobs, plans, layout, steps, s.Dt);
            if (threads == 1)
            {
                RunWorker(m, sh, workers[0]);
            }
            else
            {
                var ts = new Thread[threads - 1];
                for (int i = 1; i < threads; i++)
                {
                    var wk = workers[i];
                    ts[i - 1] = new Thread(() => RunWorker(m, sh, wk), (int)Memory.WorkerStack) { IsBackground = true, Name = $"sde-worker-{i}" };
                    ts[i - 1].Start();
                }
                RunWorker(m, sh, workers[0]);
                foreach (var t in ts) t.Join();
            }
            if (sh.Error != null) sh.Error.Throw();
            s.Cancel.ThrowIfCancellationRequested();
            if (sh.FailedPaths > 0)
                throw new SimulationFailedException(sh.FailStep, sh.FailStep * s.Dt, sh.FailedPaths, workers.Sum(w => w.Ran), s.Paths);
            foreach (var w in workers) result.Merge(w.Acc);
        }
        finally
        {
            foreach (var w in workers) w?.Dispose();
        }
        // the discretisation-error estimate: coupled (dt, dt/2) pairs on streams of their own, after the
        // main paths, whose values they leave untouched (see Coupled.cs)
        if (s.Bias == BiasMode.Estimate) RunBias(m, s, plans, result, steps, threads);
        s.Progress?.Invoke(1.0);
        return result;
    }

    /// <summary>Validates the settings and returns the number of steps.</summary>
    internal static long CheckSettings(RunSettings s)
    {
        if (s.Paths < 0) throw new ArgumentException($"paths must be non-negative (got {s.Paths})");
        if (s.FirstPath < 0) throw new ArgumentException($"the first path index must be non-negative (got {s.FirstPath})");
        if (!(s.Dt > 0) || !double.IsFinite(s.Dt)) throw new ArgumentException($"dt must be positive (got {s.Dt})");
        if (!(s.T >= 0) || !double.IsFinite(s.T)) throw new ArgumentException($"T must be non-negative (got {s.T})");
        if (s.Threads < 0) throw new ArgumentException($"threads must be non-negative (got {s.Threads})");
        double n = Math.Round(s.T / s.Dt);
        if (n > (1L << 44)) throw new ArgumentException($"too many steps ({n})");
        return RunSettings.StepsOf(s.T, s.Dt);
    }

    /// <summary>State shared by the workers: the block counter, the failure record, progress throttling.</summary>
    sealed class Shared
    {
        public readonly ulong Seed;
        public readonly long FirstPath, Paths, Steps, BlockSize, Blocks;
        public readonly double Dt, SqDt;
        public readonly long ObsFrom, ObsTo;
        public readonly CancellationToken Cancel;
        public readonly StepProgress Progress;
        public long NextBlock;
        public long FailedPaths, FailStep = long.MaxValue;
        public volatile bool Stop;
        public ExceptionDispatchInfo? Error;

        public Shared(RunSettings s, long steps, long blockSize, long blocks, QueryLayout[] layout)
        {
            Seed = s.Seed; FirstPath = s.FirstPath; Paths = s.Paths; Steps = steps;
            BlockSize = blockSize; Blocks = blocks; Dt = s.Dt; SqDt = Math.Sqrt(s.Dt);
            Cancel = s.Cancel; Progress = new StepProgress(s.Progress, s.Paths, steps);
            ObsFrom = long.MaxValue; ObsTo = -1;
            foreach (var l in layout) { ObsFrom = Math.Min(ObsFrom, l.From); ObsTo = Math.Max(ObsTo, l.To); }
        }

        public void Fail(long step)
        {
            Interlocked.Increment(ref FailedPaths);
            long cur = Volatile.Read(ref FailStep);
            while (step < cur)
            {
                long seen = Interlocked.CompareExchange(ref FailStep, step, cur);
                if (seen == cur) break;
                cur = seen;
            }
            Stop = true;
        }

    }

    /// <summary>One worker's buffers (native, aligned, allocated once) and accumulators.</summary>
    sealed unsafe class Worker : IDisposable
    {
        public double* X, Y, W, Zn, Zu, Obs;
        public readonly Accumulators Acc;
        /// <summary>The step normals two steps per draw (the odd step's kept here).</summary>
        public readonly StepNormals Pairs;
        public readonly QueryLayout[] Layout;
        public readonly double[] QSum;   // per query: the path's running Σφ over its window
        public readonly int[][] Counts;  // per density query: the path's counts per bin
        // per density query: the bins the path has touched (in first-touch order) and how many; a path's
        // commit and reset visit only these, so binning costs O(1) per sample whatever the number of bins
        internal readonly int[][] _touched;
        internal readonly int[] _nTouched;
        public long Ran;                 // paths this worker simulated (completed or failed): a failure's count is among these
        void* _mem;

        public Worker(int d, int m, int nobs, QueryPlan[] plans, QueryLayout[] layout, long steps, double dt)
        {
            long dp = Pad(d), mp = Pad(m), op = Pad(nobs);
            long total = 4 * dp + mp + op;
            _mem = NativeMemory.AlignedAlloc((nuint)(total * 8), 64);
            double* p = (double*)_mem;
            NativeMemory.Clear(p, (nuint)(total * 8));
            X = p; Y = X + dp; Zn = Y + dp; Zu = Zn + dp; W = Zu + dp; Obs = W + mp;
            Acc = new Accumulators(plans, layout, steps, dt);
            Pairs = new StepNormals(m);
            Layout = layout;
            QSum = new double[layout.Length];
            Counts = new int[layout.Length][];
            _touched = new int[layout.Length][];
            _nTouched = new int[layout.Length];
            for (int i = 0; i < layout.Length; i++) { Counts[i] = new int[layout[i].Bins]; _touched[i] = new int[layout[i].Bins]; }
        }

        static long Pad(int n) => ((long)Math.Max(n, 1) + 3) & ~3L;

        public void Dispose()
        {
            if (_mem != null) { NativeMemory.AlignedFree(_mem); _mem = null; }
        }

        /// <summary>Feeds the observables of the current state (step n) to the queries whose window holds n.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)] // every step of a coupled pair: never at tier 0
        public void Record(long n)
        {
            var lay = Layout;
            for (int i = 0; i < lay.Length; i++)
            {
                ref readonly var l = ref lay[i];
                if (n < l.From || n > l.To) continue;
                double v = Obs[l.Observable];
                if (l.Kind == EstimateKind.Mean) QSum[i] += v;
                else
                {
                    var qa = Acc.Q[i];
                    if (v < l.Lo) qa.Below++;
                    else if (v >= l.Hi) qa.Above++;
                    else if (v >= l.Lo)
                    {
                        int b = (int)((v - l.Lo) * l.Scale);
                        if (b >= l.Bins) b = l.Bins - 1; // rounding just below Hi
                        if (Counts[i][b]++ == 0) _touched[i][_nTouched[i]++] = b;
                    }
                    else qa.NonFinite++; // NaN: in no bin, neither below nor above; counted for the warning
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called every step by the coupled pairs: never at tier 0
        public bool NeedsObserve(long n)
        {
            var lay = Layout;
            for (int i = 0; i < lay.Length; i++) if (n >= lay[i].From && n <= lay[i].To) return true;
            return false;
        }

        /// <summary>Ends a path: its per-path samples go into the exact sums.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Commit()
        {
            var lay = Layout;
            for (int i = 0; i < lay.Length; i++)
            {
                var qa = Acc.Q[i];
                if (lay[i].Kind == EstimateKind.Mean)
                {
                    double v = QSum[i] / lay[i].Window;
                    if (!double.IsFinite(v)) qa.NonFinite++;
                    qa.S1.Add(v);
                    qa.S2.AddProduct(v, v);
                }
                else
                {
                    int[] c = Counts[i], t = _touched[i];
                    for (int j = 0; j < _nTouched[i]; j++)
                    {
                        int b = t[j];
                        long k = c[b];
                        qa.C[b] += k; qa.C2[b] += k * k; c[b] = 0;
                    }
                    _nTouched[i] = 0;
                }
                QSum[i] = 0;
            }
            Acc.Paths++;
        }

        public void Discard()
        {
            Array.Clear(QSum);
            for (int i = 0; i < Counts.Length; i++)
            {
                for (int j = 0; j < _nTouched[i]; j++) Counts[i][_touched[i][j]] = 0;
                _nTouched[i] = 0;
            }
        }
    }

    static void RunWorker<TModel>(TModel model, Shared sh, Worker wk) where TModel : struct, ISdeModel
    {
        try { RunBlocks(ref model, sh, wk); }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref sh.Error, ExceptionDispatchInfo.Capture(e), null);
            sh.Stop = true;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: optimised at once, not after tier 0
    static void RunBlocks<TModel>(ref TModel model, Shared sh, Worker wk) where TModel : struct, ISdeModel
    {
        while (!sh.Stop)
        {
            long blk = Interlocked.Increment(ref sh.NextBlock) - 1;
            if (blk >= sh.Blocks) break;
            long p0 = blk * sh.BlockSize, p1 = Math.Min(p0 + sh.BlockSize, sh.Paths);
            for (long p = p0; p < p1; p++)
            {
                if (sh.Stop) return;
                if (sh.Cancel.IsCancellationRequested) { sh.Stop = true; return; }
                if (!RunOnePath(ref model, sh, wk, p)) return;
            }
        }
    }

    /// <summary>True if no component is ±∞ or NaN: v·0 is 0 for finite v and NaN otherwise, and NaN sticks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe bool AllFinite(double* p, int n)
    {
        int i = 0;
        var acc = Vector256<double>.Zero;
        for (; i + 4 <= n; i += 4) acc += Vector256.Load(p + i) * Vector256<double>.Zero;
        double r = Vector256.Sum(acc);
        for (; i < n; i++) r += p[i] * 0.0;
        return r == 0.0;
    }
}
