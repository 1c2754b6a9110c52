using System.Diagnostics;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace Sde.Core.Gpu;

/// <summary>Where the ILGPU kernels run.</summary>
public enum GpuBackend
{
    /// <summary>ILGPU's CPU accelerator: the GPU code path, testable on any machine.</summary>
    IlgpuCpu,
    /// <summary>The first CUDA device.</summary>
    Cuda,
}

/// <summary>An ILGPU context with one accelerator, created once per backend and kept for the process.</summary>
public sealed class GpuDevice
{
    public Context Context { get; }
    public Accelerator Accelerator { get; }
    public GpuBackend Backend { get; }

    GpuDevice(GpuBackend backend)
    {
        Backend = backend;
        if (backend == GpuBackend.Cuda)
        {
            Context = Context.Create(b => b.Cuda().EnableAlgorithms().Math(MathMode.Default));
            if (Context.GetCudaDevices().Count == 0)
                throw new InvalidOperationException("no CUDA device found (use --backend cpu or ilgpu-cpu)");
            Accelerator = Context.CreateCudaAccelerator(0);
        }
        else
        {
            Context = Context.Create(b => b.CPU().EnableAlgorithms().Math(MathMode.Default));
            Accelerator = Context.CreateCPUAccelerator(0);
        }
    }

    static readonly Lazy<GpuDevice> cpu = new(() => new GpuDevice(GpuBackend.IlgpuCpu));
    static readonly Lazy<GpuDevice> cuda = new(() => new GpuDevice(GpuBackend.Cuda));

    /// <summary>The process-wide device of a backend (created on first use).</summary>
    public static GpuDevice Get(GpuBackend backend) => backend == GpuBackend.Cuda ? cuda.Value : cpu.Value;

    static readonly Lazy<bool> cudaPresent = new(() =>
    {
        try
        {
            using var c = Context.Create(b => b.Cuda());
            return c.GetCudaDevices().Count > 0;
        }
        catch { return false; }
    });

    /// <summary>True if ILGPU finds a CUDA device (the driver is installed and a device is visible).</summary>
    public static bool CudaAvailable => cudaPresent.Value;

    /// <summary>Bytes of device memory the engine lets itself use for per-path buffers (half of what the device has).</summary>
    public long Budget(long limit)
    {
        long mem = Accelerator.MemorySize;
        if (Backend == GpuBackend.IlgpuCpu || mem <= 0) mem = Math.Max(Memory.Available(), 1L << 30);
        if (limit > 0) mem = Math.Min(mem, limit);
        return mem / 2;
    }

    /// <summary>
    /// Paths per launch for a working set of <paramref name="perPath"/> bytes per path (within the
    /// budget, at most <see cref="GpuEngine.MaxChunk"/>); a <see cref="RunTooLargeException"/> saying
    /// which working set (<paramref name="what"/>, <paramref name="detail"/>) and what to do instead
    /// when one path does not fit.
    /// </summary>
    public long Chunk(long perPath, RunSettings s, string what, string detail, string remedy)
    {
        long budget = Budget(s.MemoryLimit);
        if (perPath > budget)
            throw new RunTooLargeException(
                $"one path's working set{what} ({Memory.Format(perPath)}: {detail}) " +
                $"does not fit in the {Memory.Format(budget)} of device memory the engine may use on {Accelerator.Name}; {remedy}");
        return Math.Max(1, Math.Min(Math.Min(s.Paths, GpuEngine.MaxChunk), budget / perPath));
    }
}

/// <summary>
/// Paths per kernel launch. A launch cannot be interrupted and reports progress only when it ends, so
/// a run goes in launches of about a second each: the first one small, the next sized from the rate the
/// last one measured (growing at most eightfold), never above the chunk the device's memory allows.
/// Ctrl-C then stops a long run within about a second of work, and the progress bar moves. The numbers
/// do not depend on the sizes: every path has its own stream and the per-launch sums are exact.
/// </summary>
public sealed class LaunchSizer
{
    const double TargetSeconds = 1.0;
    readonly long _max, _min;
    long _next;
    readonly Stopwatch _clock = new();

    public LaunchSizer(GpuDevice dev, long maxPaths, long steps)
    {
        bool gpu = dev.Backend == GpuBackend.Cuda;
        _max = Math.Max(1, maxPaths);
        // a GPU needs tens of thousands of threads in flight; ILGPU's CPU accelerator a few per core
        _min = Math.Min(_max, gpu ? 1L << 16 : 16);
        long firstPathSteps = gpu ? 1L << 30 : 1L << 18;
        _next = Math.Clamp(firstPathSteps / Math.Max(1, steps), _min, _max);
    }

    /// <summary>The next launch's paths (at most <paramref name="remaining"/>); starts its clock.</summary>
    public long Next(long remaining)
    {
        _clock.Restart();
        return Math.Min(_next, remaining);
    }

    /// <summary>The launch of <paramref name="paths"/> paths has finished: size the next from its time.</summary>
    public void Done(long paths)
    {
        double seconds = _clock.Elapsed.TotalSeconds;
        long grown = paths >= _max / 8 ? _max : 8 * Math.Max(1, paths);
        long byRate = seconds > 0 ? (long)Math.Min(_max, paths * TargetSeconds / seconds) : _max;
        _next = Math.Clamp(Math.Min(byRate, grown), _min, _max);
    }
}

/// <summary>
/// The plain engine (means and densities, at T or time-averaged) on an ILGPU accelerator. Paths run in
/// chunks that fit the device's memory; each chunk is one kernel launch with one thread per path and
/// struct-of-arrays buffers. Results are accumulated into the CPU engine's <see cref="Accumulators"/>,
/// so they merge with CPU and sharded runs and round the same way.
/// </summary>
public static class GpuEngine
{
    /// <summary>Most paths per launch (bounds the per-path buffers even where memory is plentiful).</summary>
    public const long MaxChunk = 1L << 20;

    static class KernelCache<TModel> where TModel : unmanaged, ISdeModel
    {
        public static Action<Index1D, TModel, PlainArgs, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<double>,
            ArrayView<QueryDev>, ArrayView<double>, ArrayView<int>, ArrayView<long>>? Plain;
        public static Accelerator? For;
    }

    static Action<Index1D, ArrayView<int>, long, ArrayView<long>>? reduce;
    static Accelerator? reduceFor;
    static readonly object gate = new();

    public static Estimate[] Run<TModel>(GpuBackend backend, in TModel model, RunSettings s, QueryPlan[] plans)
        where TModel : unmanaged, ISdeModel
        => RunPartial(GpuDevice.Get(backend), model, s, plans).ToEstimates();

    /// <summary>Bytes of device memory one path needs (its working set) for this model and these queries.</summary>
    /// <summary>Noise rows per path of the plain kernel: the init draw or a step's normals, then the odd step of a pair.</summary>
    internal static long NoiseRows(int d, int m) => Math.Max(Math.Max(d, m), 1) + m;

    public static long BytesPerPath(int d, int m, int nobs, QueryPlan[] plans)
    {
        long doubles = 2L * d + NoiseRows(d, m) + d + Math.Max(nobs, 1);
        long ints = 0;
        foreach (var q in plans)
        {
            if (q.Kind == EstimateKind.Mean) doubles++;
            else ints += q.Bins;
        }
        return 8 * doubles + 4 * ints;
    }

    public static Accumulators RunPartial<TModel>(GpuDevice dev, in TModel model, RunSettings s, QueryPlan[] plans)
        where TModel : unmanaged, ISdeModel
    {
        ArgumentNullException.ThrowIfNull(s);
        ArgumentNullException.ThrowIfNull(plans);
        long steps = Engine.CheckSettings(s);
        TModel mdl = model;
        int d = mdl.Dim, m = mdl.NoiseDim, nobs = mdl.ObservableCount;
        if (d <= 0 || m < 0 || nobs < 0) throw new ArgumentException($"invalid model sizes (dim {d}, noise {m}, observables {nobs})");
        var layout = QueryLayout.Build(plans, steps, s.Dt, nobs);
        var result = new Accumulators(plans, layout, steps, s.Dt);
        if (s.Paths == 0) return result;

        // queries on the device
        var qd = new QueryDev[Math.Max(1, plans.Length)];
        int meanRows = 0, countRows = 0;
        long obsFrom = long.MaxValue, obsTo = -1, maxDensityWindow = 0;
        for (int q = 0; q < layout.Length; q++)
        {
            var l = layout[q];
            bool mean = l.Kind == EstimateKind.Mean;
            qd[q] = new QueryDev
            {
                Kind = mean ? 0 : 1, Observable = l.Observable, From = l.From, To = l.To, Window = l.Window,
                Bins = l.Bins, Lo = l.Lo, Hi = l.Hi, Scale = l.Scale, Slot = mean ? meanRows : countRows,
            };
            if (mean) meanRows++; else { countRows += l.Bins; maxDensityWindow = Math.Max(maxDensityWindow, l.Window); }
            obsFrom = Math.Min(obsFrom, l.From); obsTo = Math.Max(obsTo, l.To);
        }

        // chunk size: what fits in the device's memory; the per-chunk integer sums Σc² must fit in 64 bits
        long perPath = BytesPerPath(d, m, nobs, plans);
        long chunk = dev.Chunk(perPath, s, "", $"state dimension {d}, noise {m}, {nobs} observable(s), {countRows} density bin(s)", "use fewer bins or the CPU backend");
        if (maxDensityWindow > 0) chunk = Math.Min(chunk, Math.Max(1, (1L << 62) / (maxDensityWindow * maxDensityWindow)));

        var acc = dev.Accelerator;
        Action<Index1D, TModel, PlainArgs, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<double>,
            ArrayView<QueryDev>, ArrayView<double>, ArrayView<int>, ArrayView<long>> kernel;
        Action<Index1D, ArrayView<int>, long, ArrayView<long>> red;
        lock (gate)
        {
            if (KernelCache<TModel>.Plain == null || KernelCache<TModel>.For != acc)
            {
                KernelCache<TModel>.Plain = acc.LoadAutoGroupedStreamKernel<Index1D, TModel, PlainArgs, ArrayView<double>, ArrayView<double>,
                    ArrayView<double>, ArrayView<double>, ArrayView<QueryDev>, ArrayView<double>, ArrayView<int>, ArrayView<long>>(Kernels.Plain<TModel>);
                KernelCache<TModel>.For = acc;
            }
            if (reduce == null || reduceFor != acc)
            {
                reduce = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, long, ArrayView<long>>(Kernels.ReduceCounts);
                reduceFor = acc;
            }
            kernel = KernelCache<TModel>.Plain;
            red = reduce;
        }

        long nFlags = 2 + 2L * plans.Length;
        using var state = acc.Allocate1D<double>(2L * d * chunk);
        using var noise = acc.Allocate1D<double>(NoiseRows(d, m) * chunk);
        using var unif = acc.Allocate1D<double>((long)d * chunk);
        using var obs = acc.Allocate1D<double>(Math.Max(nobs, 1) * chunk);
        using var qbuf = acc.Allocate1D(qd);
        using var samples = acc.Allocate1D<double>(Math.Max(meanRows, 1) * chunk);
        using var counts = acc.Allocate1D<int>(Math.Max(countRows, 1) * chunk);
        using var flags = acc.Allocate1D<long>(nFlags);
        using var sums = acc.Allocate1D<long>(2L * Math.Max(countRows, 1));
        var hostSamples = new double[Math.Max(meanRows, 1) * chunk];
        var hostFlags = new long[nFlags];
        var hostSums = new long[2 * Math.Max(countRows, 1)];

        var launches = new LaunchSizer(dev, chunk, steps);
        for (long p0 = 0, pc = 0; p0 < s.Paths; p0 += pc)
        {
            s.Cancel.ThrowIfCancellationRequested();
            pc = launches.Next(s.Paths - p0);
            var args = new PlainArgs
            {
                Seed = s.Seed, FirstPath = s.FirstPath + p0, Count = pc, Steps = steps, Dt = s.Dt, SqDt = Math.Sqrt(s.Dt),
                D = d, M = m, NObs = nobs, NQ = plans.Length, ObsFrom = obsFrom, ObsTo = obsTo,
            };
            hostFlags[0] = 0; hostFlags[1] = long.MaxValue;
            for (int k = 2; k < nFlags; k++) hostFlags[k] = 0;
            flags.View.CopyFromCPU(hostFlags);
            kernel((int)pc, mdl, args, state.View, noise.View, unif.View, obs.View, qbuf.View, samples.View, counts.View, flags.View);
            if (countRows > 0) red(countRows, counts.View, pc, sums.View);
            acc.Synchronize();
            launches.Done(pc);
            flags.View.CopyToCPU(hostFlags);
            if (hostFlags[0] > 0)
                throw new SimulationFailedException(hostFlags[1], hostFlags[1] * s.Dt, hostFlags[0], p0 + pc, s.Paths); // every path of the chunk ran

            // Means: the per-path samples come back (one double per path and mean query) and go into the
            // same ExactSum expansions as on the CPU. A floating-point reduction on the device would round
            // in an order that depends on the launch and chunk geometry, so its result would neither match
            // the CPU engine bit for bit nor merge exactly with other shards; exact summation on the device
            // would need the expansion arithmetic per block. The traffic is tiny next to the simulation
            // (8 bytes per path against steps × dimension flops). Densities are reduced on the device:
            // integer sums are exact in any order.
            if (meanRows > 0) ((ArrayView<double>)samples.View).SubView(0, meanRows * pc).CopyToCPU(hostSamples.AsSpan(0, (int)(meanRows * pc)));
            if (countRows > 0) sums.View.CopyToCPU(hostSums);
            for (int q = 0; q < plans.Length; q++)
            {
                var qa = result.Q[q];
                var l = qd[q];
                if (l.Kind == 0)
                {
                    long row = l.Slot * pc;
                    for (long p = 0; p < pc; p++)
                    {
                        double v = hostSamples[row + p];
                        if (!double.IsFinite(v)) qa.NonFinite++;
                        qa.S1.Add(v);
                        qa.S2.AddProduct(v, v);
                    }
                }
                else
                {
                    for (int b = 0; b < l.Bins; b++)
                    {
                        qa.C[b] += hostSums[2 * (l.Slot + b)];
                        qa.C2[b] += hostSums[2 * (l.Slot + b) + 1];
                    }
                    qa.Below += hostFlags[2 + 2 * q];
                    qa.Above += hostFlags[3 + 2 * q];
                    // the NaN samples fall in no bin and neither below nor above: what the counts miss
                    long inBins = 0;
                    for (int b = 0; b < l.Bins; b++) inBins += hostSums[2 * (l.Slot + b)];
                    qa.NonFinite += pc * (l.To - l.From + 1) - inBins - hostFlags[2 + 2 * q] - hostFlags[3 + 2 * q];
                }
            }
            result.Paths += pc;
            s.Progress?.Invoke((double)(p0 + pc) / s.Paths);
        }
        return result;
    }
}
