using ILGPU;
using ILGPU.Runtime;

namespace Sde.Core.Gpu;

/// <summary>Scalars of one launch of the weighted step kernel.</summary>
public struct WeightedStepArgs
{
    public ulong Seed;
    public long FirstPath;   // global index of the launch's first path
    public long Count;       // paths in the launch (= the SoA stride of the working rows)
    public long Seg0, Seg1;  // steps Seg0 → Seg1; Seg0 < 0: the init
    public double Dt, SqDt;
    public int D, M;
}

/// <summary>
/// The weighted (Feynman–Kac) engine's per-path work as a kernel: the step of the state and, with it,
/// of log w (a component of the state: the compiler's hidden weight state, so its increment is part of
/// the model's step) from one point where the population is seen whole to the next, one thread per
/// path, one launch per such interval (and per chunk of paths that fits the device).
/// </summary>
public static class WeightedKernels
{
    /// <summary>
    /// Path i: its row of the population (row-major, n × d: what the host's population operations use)
    /// is read into struct-of-arrays working rows, stepped Seg0 → Seg1 with the plain engine's normals
    /// (path, step) and written back; with Seg0 &lt; 0 it is initialised instead. flags[0]: failed paths,
    /// flags[1]: the first failing step (a failed path stops there, as on the CPU).
    /// </summary>
    public static void WeightedStep<TModel>(Index1D index, TModel model, WeightedStepArgs a,
        ArrayView<double> pop, ArrayView<double> work, ArrayView<double> noise, ArrayView<double> unif, ArrayView<long> flags)
        where TModel : unmanaged, ISdeModel
    {
        long i = (int)index;
        long P = a.Count;
        if (i >= P) return;
        int d = a.D, m = a.M;
        ulong gp = (ulong)(a.FirstPath + i);
        var row = new SoaVec(pop, i * d, 1);
        var w = new SoaVec(noise, i, P);
        var w2 = new SoaVec(noise, i + Math.Max(Math.Max(d, m), 1) * P, P); // the odd step of a pair within the segment
        if (a.Seg0 < 0)
        {
            var zu = new SoaVec(unif, i, P);
            KernelNormals.Fill(a.Seed, gp, 0, Philox.TagInitNormal, w, d);
            KernelNormals.FillUniform(a.Seed, gp, 0, Philox.TagInitUniform, zu, d);
            model.Init(row, w, zu);
            if (!Kernels.AllFinite(row, d)) Fail(flags, 0);
            return;
        }
        var x = new SoaVec(work, i, P);
        var y = new SoaVec(work, i + d * P, P);
        for (int k = 0; k < d; k++) x[k] = row[k];
        for (long n = a.Seg0; n < a.Seg1; n++)
        {
            if (m > 0) KernelNormals.FillStep(a.Seed, gp, n, a.Seg0, a.Seg1, Philox.TagStep, w, w2, m);
            model.Step(x, y, w, n * a.Dt, a.Dt, a.SqDt);
            var t = x; x = y; y = t;
            if (!Kernels.AllFinite(x, d)) { Fail(flags, n + 1); break; }
        }
        for (int k = 0; k < d; k++) row[k] = x[k];
    }

    static void Fail(ArrayView<long> flags, long step)
    {
        Atomic.Add(ref flags[0], 1L);
        Atomic.Min(ref flags[1], step);
    }
}

/// <summary>
/// <see cref="IPopulationStepper"/> on an ILGPU accelerator: the population's rows go to the device,
/// one kernel launch steps them, they come back, and the weighted engine's host code does the rest
/// (weights, resampling, birth–death, log_density, observations) exactly as for the CPU steps. The
/// normals are the plain engine's (<see cref="KernelNormals"/>) and the step is the model's own code, so
/// the population is the CPU engine's bit for bit, and so is every result.
/// </summary>
public sealed unsafe class GpuPopulationStepper<TModel> : IPopulationStepper, IDisposable where TModel : unmanaged, ISdeModel
{
    static class KernelCache
    {
        public static Action<Index1D, TModel, WeightedStepArgs, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<long>>? Step;
        public static Accelerator? For;
    }

    static readonly object gate = new();

    readonly GpuDevice _dev;
    readonly TModel _model;
    readonly RunSettings _s;
    readonly long _chunk;
    readonly int _d, _m;
    readonly MemoryBuffer1D<double, Stride1D.Dense> _pop, _work, _noise, _unif;
    readonly MemoryBuffer1D<long, Stride1D.Dense> _flags;
    readonly long[] _hostFlags = new long[2];
    readonly Action<Index1D, TModel, WeightedStepArgs, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<long>> _kernel;

    /// <summary>Bytes of device memory one path needs: its row, two working rows, its normals and uniforms.</summary>
    public static long BytesPerPath(int d, int m) => 8L * (d + 2L * d + GpuEngine.NoiseRows(d, m) + d);

    /// <param name="maxPaths">at most this many paths per launch (0: as many as fit the device)</param>
    public GpuPopulationStepper(GpuDevice dev, in TModel model, RunSettings s, long maxPaths = 0)
    {
        _dev = dev; _model = model; _s = s;
        _d = model.Dim; _m = model.NoiseDim;
        _chunk = dev.Chunk(BytesPerPath(_d, _m), s, " in the weighted step kernel", $"state dimension {_d}, noise {_m}", "use --backend cpu");
        // one copy moves at most int.MaxValue doubles
        _chunk = Math.Max(1, Math.Min(_chunk, int.MaxValue / Math.Max(_d, 1)));
        if (maxPaths > 0) _chunk = Math.Min(_chunk, maxPaths);
        var acc = dev.Accelerator;
        lock (gate)
        {
            if (KernelCache.Step == null || KernelCache.For != acc)
            {
                KernelCache.Step = acc.LoadAutoGroupedStreamKernel<Index1D, TModel, WeightedStepArgs, ArrayView<double>, ArrayView<double>,
                    ArrayView<double>, ArrayView<double>, ArrayView<long>>(WeightedKernels.WeightedStep<TModel>);
                KernelCache.For = acc;
            }
            _kernel = KernelCache.Step;
        }
        _pop = acc.Allocate1D<double>(_d * _chunk);
        _work = acc.Allocate1D<double>(2L * _d * _chunk);
        _noise = acc.Allocate1D<double>(GpuEngine.NoiseRows(_d, _m) * _chunk);
        _unif = acc.Allocate1D<double>(_d * _chunk);
        _flags = acc.Allocate1D<long>(2);
    }

    public (long Failed, long FirstStep) Step(double* x, int n, int d, long seg0, long seg1)
    {
        if (d != _d) throw new ArgumentException($"the population has dimension {d}, the model {_d}");
        long failed = 0, first = long.MaxValue;
        for (long p0 = 0; p0 < n; p0 += _chunk)
        {
            int pc = (int)Math.Min(_chunk, n - p0);
            var rows = new Span<double>(x + p0 * d, pc * d);
            var dst = ((ArrayView<double>)_pop.View).SubView(0, (long)pc * d);
            dst.CopyFromCPU(rows);
            _hostFlags[0] = 0; _hostFlags[1] = long.MaxValue;
            _flags.View.CopyFromCPU(_hostFlags);
            var args = new WeightedStepArgs
            {
                Seed = _s.Seed, FirstPath = _s.FirstPath + p0, Count = pc, Seg0 = seg0, Seg1 = seg1,
                Dt = _s.Dt, SqDt = Math.Sqrt(_s.Dt), D = d, M = _m,
            };
            _kernel(pc, _model, args, _pop.View, _work.View, _noise.View, _unif.View, _flags.View);
            _dev.Accelerator.Synchronize();
            Interlocked.Increment(ref GpuWeighted.Launches);
            dst.CopyToCPU(rows);
            _flags.View.CopyToCPU(_hostFlags);
            failed += _hostFlags[0];
            first = Math.Min(first, _hostFlags[1]);
        }
        return (failed, first);
    }

    public void Dispose()
    {
        _pop.Dispose(); _work.Dispose(); _noise.Dispose(); _unif.Dispose(); _flags.Dispose();
    }
}

/// <summary>The weighted engine with its steps on an ILGPU backend.</summary>
public static class GpuWeighted
{
    /// <summary>Launches of the weighted step kernel in this process (the tests check that a weighted run used it).</summary>
    public static long Launches;

    /// <param name="maxPaths">at most this many paths per launch (0: as many as fit the device; the
    /// results do not depend on it)</param>
    public static WeightedResult Run<TModel>(GpuBackend backend, in TModel model, RunSettings s, WeightPlan wp, QueryPlan[] plans, long maxPaths = 0)
        where TModel : unmanaged, ISdeModel
    {
        ArgumentNullException.ThrowIfNull(s);
        if (s.Paths <= 0) return WeightedEngine.Run(model, s, wp, plans);
        using var stepper = new GpuPopulationStepper<TModel>(GpuDevice.Get(backend), model, s, maxPaths);
        return WeightedEngine.Run(model, s, wp, plans, stepper);
    }
}

/// <summary><see cref="IWeightedRunner"/> on an ILGPU backend.</summary>
public sealed class GpuWeightedRunner<TModel> : IWeightedRunner where TModel : unmanaged, ISdeModel
{
    readonly GpuBackend _backend;
    public GpuWeightedRunner(GpuBackend backend) { _backend = backend; }

    public WeightedResult Run(object model, RunSettings settings, WeightPlan weight, QueryPlan[] plans)
    {
        var m = (TModel)model;
        return GpuWeighted.Run(_backend, in m, settings, weight, plans);
    }
}
