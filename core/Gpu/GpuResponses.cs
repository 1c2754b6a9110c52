using ILGPU;
using ILGPU.Runtime;

namespace Sde.Core.Gpu;

/// <summary>A finite-difference response plan on the device.</summary>
public struct FdPlanDev
{
    public int Kind;          // 0 mean, 1 density
    public int Observable;
    public long From, To;
    public int Bins;
    public double Lo, Hi;
    public int Plus, Minus;   // variant indices
    public double Inv;        // 1 / (2h)
    public int Slot;          // first row of the per-path accumulator buffer
}

/// <summary>Scalars of one chunk of the finite-difference kernel.</summary>
public struct FdArgs
{
    public ulong Seed;
    public long FirstPath, Count, Steps;
    public double Dt, SqDt;
    public int D, M, NObs, NPlans, NVariants;
    public long ObsFrom, ObsTo;
}

/// <summary>
/// Response queries on an ILGPU accelerator. Finite differences run here: every variant model (γ ± h)
/// is simulated on the same Philox numbers as on the CPU response engine, per path and per plan the
/// same running sums are formed in the same order, and the per-path samples go into the same exact
/// sums. Pathwise and divergence-kernel plans (likelihood ratio included) go to <see cref="GpuTangent"/>;
/// Lyapunov alignment (a DK plan) runs in the tangent kernel too.
/// </summary>
public static class GpuResponses
{
    static class Cache<TModel> where TModel : unmanaged, ISdeModel
    {
        public static Action<Index1D, ArrayView<TModel>, FdArgs, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<double>,
            ArrayView<FdPlanDev>, ArrayView<double>, ArrayView<long>>? Fd;
        public static Accelerator? For;
    }

    public static Estimate[] Run<TModel>(GpuBackend backend, TModel model, TModel[] variants, TangentStructure st, RunSettings s, ResponsePlan[] plans)
        where TModel : unmanaged, ISdeTangentModel
    {
        foreach (var p in plans)
            if (!GpuRunner.Supports(p))
                throw new NotSupportedException($"the {p.Method} response method has no GPU kernel yet; use --backend cpu for it");
        if (s.Paths < 1 || s.Steps < 1) throw new ArgumentException("a response run needs at least one path and one step");
        // finite differences in their kernel, pathwise and divergence kernel in the tangent kernel
        // (independent per-path samples and sums per plan: splitting the plans changes no number)
        var fd = Enumerable.Range(0, plans.Length).Where(i => plans[i].Method == ResponseMethod.FiniteDifference).ToArray();
        var tan = Enumerable.Range(0, plans.Length).Where(i => plans[i].Method != ResponseMethod.FiniteDifference).ToArray();
        var r = new Estimate[plans.Length];
        if (fd.Length > 0)
        {
            var e = RunFd(backend, model, variants, st, s, fd.Select(i => plans[i]).ToArray());
            for (int j = 0; j < fd.Length; j++) r[fd[j]] = e[j];
        }
        if (tan.Length > 0)
        {
            // a control variate's index is into all plans: renumber it into the tangent kernel's (a control is pathwise, never FD)
            var e = GpuTangent.Run(backend, model, st, s, tan.Select(i => plans[i].Control >= 0 ? plans[i].WithControl(Array.IndexOf(tan, plans[i].Control)) : plans[i]).ToArray());
            for (int j = 0; j < tan.Length; j++) r[tan[j]] = e[j];
        }
        return r;
    }

    static Estimate[] RunFd<TModel>(GpuBackend backend, TModel model, TModel[] variants, TangentStructure st, RunSettings s, ResponsePlan[] plans)
        where TModel : unmanaged, ISdeTangentModel
    {
        long steps = s.Steps;
        if (s.Paths < 1 || steps < 1) throw new ArgumentException("a response run needs at least one path and one step");
        var dev = GpuDevice.Get(backend);
        var acc = dev.Accelerator;
        var setup = new ResponseEngine.Setup(model, st, s, plans);
        int d = model.Dim, m = model.NoiseDim, nobs = model.ObservableCount, nv = variants.Length;
        if (nv == 0) throw new ArgumentException("finite differences need their variant models");

        var pd = new FdPlanDev[plans.Length];
        int rows = 0;
        long obsFrom = long.MaxValue, obsTo = -1;
        for (int i = 0; i < plans.Length; i++)
        {
            var p = plans[i];
            int nb = p.Kind == EstimateKind.Density ? p.Bins : 1;
            pd[i] = new FdPlanDev
            {
                Kind = p.Kind == EstimateKind.Density ? 1 : 0, Observable = p.Observable, From = setup.From[i], To = setup.To[i],
                Bins = p.Bins, Lo = p.Lo, Hi = p.Hi, Plus = p.VariantPlus, Minus = p.VariantMinus, Inv = 1.0 / (2 * p.H), Slot = rows,
            };
            rows += nb;
            obsFrom = Math.Min(obsFrom, setup.From[i]); obsTo = Math.Max(obsTo, setup.To[i]);
        }

        long perPath = 8L * (2L * d * nv + GpuEngine.NoiseRows(d, m) + d + (long)Math.Max(nobs, 1) * nv + rows);
        long chunk = dev.Chunk(perPath, s, " for the finite-difference responses", $"{nv} variant model(s) of dimension {d}, {rows} accumulator(s)", "use fewer bins or the CPU backend");

        Action<Index1D, ArrayView<TModel>, FdArgs, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<double>,
            ArrayView<FdPlanDev>, ArrayView<double>, ArrayView<long>> kernel;
        lock (typeof(Cache<TModel>))
        {
            if (Cache<TModel>.Fd == null || Cache<TModel>.For != acc)
            {
                Cache<TModel>.Fd = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<TModel>, FdArgs, ArrayView<double>, ArrayView<double>,
                    ArrayView<double>, ArrayView<double>, ArrayView<FdPlanDev>, ArrayView<double>, ArrayView<long>>(FdKernels.FiniteDifference<TModel>);
                Cache<TModel>.For = acc;
            }
            kernel = Cache<TModel>.Fd;
        }

        long nFlags = 2 + 3L * plans.Length; // failed paths, first failing step; per plan below, above, NaN
        using var vbuf = acc.Allocate1D(variants);
        using var state = acc.Allocate1D<double>(2L * d * nv * chunk);
        using var noise = acc.Allocate1D<double>(GpuEngine.NoiseRows(d, m) * chunk);
        using var unif = acc.Allocate1D<double>((long)d * chunk);
        using var obs = acc.Allocate1D<double>((long)Math.Max(nobs, 1) * nv * chunk);
        using var pbuf = acc.Allocate1D(pd);
        using var accs = acc.Allocate1D<double>(Math.Max(rows, 1) * chunk);
        using var flags = acc.Allocate1D<long>(nFlags);
        var host = new double[Math.Max(rows, 1) * chunk];
        var hostFlags = new long[nFlags];
        var sums = new ResponseEngine.Sums(plans);

        var launches = new LaunchSizer(dev, chunk, steps);
        for (long p0 = 0, pc = 0; p0 < s.Paths; p0 += pc)
        {
            s.Cancel.ThrowIfCancellationRequested();
            pc = launches.Next(s.Paths - p0);
            var args = new FdArgs
            {
                Seed = s.Seed, FirstPath = s.FirstPath + p0, Count = pc, Steps = steps, Dt = s.Dt, SqDt = Math.Sqrt(s.Dt),
                D = d, M = m, NObs = nobs, NPlans = plans.Length, NVariants = nv, ObsFrom = obsFrom, ObsTo = obsTo,
            };
            hostFlags[0] = 0; hostFlags[1] = long.MaxValue;
            for (int k = 2; k < nFlags; k++) hostFlags[k] = 0;
            flags.View.CopyFromCPU(hostFlags);
            kernel((int)pc, vbuf.View, args, state.View, noise.View, unif.View, obs.View, pbuf.View, accs.View, flags.View);
            acc.Synchronize();
            launches.Done(pc);
            flags.View.CopyToCPU(hostFlags);
            if (hostFlags[0] > 0)
                throw new SimulationFailedException(hostFlags[1], hostFlags[1] * s.Dt, hostFlags[0], p0 + pc, s.Paths); // every path of the chunk ran
            // per-path samples back to the host, into the response engine's exact sums (see GpuEngine for why)
            ((ArrayView<double>)accs.View).SubView(0, rows * pc).CopyToCPU(host.AsSpan(0, (int)(rows * pc)));
            for (int i = 0; i < plans.Length; i++)
            {
                var p = plans[i];
                long cnt = Math.Max(0, pd[i].To - pd[i].From + 1);
                double scale = 1.0 / Math.Max(1, cnt);
                if (p.Kind == EstimateKind.Density) scale /= (p.Hi - p.Lo) / p.Bins;
                sums.AddRows(i, false, host, pd[i].Slot, pc, scale, 0.0);
                sums.Below[i] += hostFlags[2 + 3 * i];
                sums.Above[i] += hostFlags[3 + 3 * i];
                if (p.Kind == EstimateKind.Density) sums.NonFinite[i] += hostFlags[4 + 3 * i];
            }
            s.Progress?.Invoke((double)(p0 + pc) / s.Paths);
        }
        return sums.ToEstimates(plans, s.Paths);
    }
}

/// <summary>The finite-difference kernel: one thread per path, every variant model stepped on the same normals.</summary>
public static class FdKernels
{
    public static void FiniteDifference<TModel>(Index1D index, ArrayView<TModel> variants, FdArgs a,
        ArrayView<double> state, ArrayView<double> noise, ArrayView<double> unif, ArrayView<double> obs,
        ArrayView<FdPlanDev> ps, ArrayView<double> accs, ArrayView<long> flags)
        where TModel : unmanaged, ISdeModel
    {
        long i = (int)index;
        long P = a.Count;
        if (i >= P) return;
        int d = a.D, m = a.M, nv = a.NVariants;
        ulong gp = (ulong)(a.FirstPath + i);
        var w = new SoaVec(noise, i, P);
        var w2 = new SoaVec(noise, i + Math.Max(Math.Max(d, m), 1) * P, P); // the odd step of a pair
        var zu = new SoaVec(unif, i, P);
        for (int q = 0; q < a.NPlans; q++)
        {
            var l = ps[q];
            int nb = l.Kind == 1 ? l.Bins : 1;
            for (int b = 0; b < nb; b++) accs[(l.Slot + b) * P + i] = 0.0;
        }
        KernelNormals.Fill(a.Seed, gp, 0, Philox.TagInitNormal, w, d);
        KernelNormals.FillUniform(a.Seed, gp, 0, Philox.TagInitUniform, zu, d);
        for (int k = 0; k < nv; k++)
        {
            var x = new SoaVec(state, i + (2L * k) * d * P, P);
            variants[k].Init(x, w, zu);
        }
        long parity = 0;   // variant k's current state is at rows (2k + parity)·d
        if (a.ObsFrom == 0) Sample(variants, 0, 0.0, state, parity, obs, ps, accs, flags, a, i, P);
        for (long n = 0; n < a.Steps; n++)
        {
            if (m > 0) KernelNormals.FillStep(a.Seed, gp, n, 0, a.Steps, Philox.TagStep, w, w2, m);
            double t = n * a.Dt;
            bool finite = true;
            for (int k = 0; k < nv; k++)
            {
                var x = new SoaVec(state, i + (2L * k + parity) * d * P, P);
                var y = new SoaVec(state, i + (2L * k + 1 - parity) * d * P, P);
                variants[k].Step(x, y, w, t, a.Dt, a.SqDt);
                finite &= Kernels.AllFinite(y, d);
            }
            if (!finite)
            {
                Atomic.Add(ref flags[0], 1L);
                Atomic.Min(ref flags[1], n + 1);
                return;
            }
            parity = 1 - parity;
            long n1 = n + 1;
            if (n1 >= a.ObsFrom && n1 <= a.ObsTo) Sample(variants, n1, n1 * a.Dt, state, parity, obs, ps, accs, flags, a, i, P);
        }
    }

    static void Sample<TModel>(ArrayView<TModel> variants, long n, double t, ArrayView<double> state, long parity, ArrayView<double> obs,
        ArrayView<FdPlanDev> ps, ArrayView<double> accs, ArrayView<long> flags, FdArgs a, long i, long P)
        where TModel : unmanaged, ISdeModel
    {
        bool need = false;
        for (int q = 0; q < a.NPlans; q++) { var l = ps[q]; if (n >= l.From && n <= l.To) need = true; }
        if (!need) return;
        int d = a.D, no = Math.Max(a.NObs, 1);
        for (int k = 0; k < a.NVariants; k++)
        {
            var x = new SoaVec(state, i + (2L * k + parity) * d * P, P);
            variants[k].Observe(x, t, new SoaVec(obs, i + (long)k * no * P, P));
        }
        for (int q = 0; q < a.NPlans; q++)
        {
            var l = ps[q];
            if (n < l.From || n > l.To) continue;
            double fp = obs[((long)l.Plus * no + l.Observable) * P + i];
            double fm = obs[((long)l.Minus * no + l.Observable) * P + i];
            if (l.Kind == 0) accs[l.Slot * P + i] += (fp - fm) * l.Inv;
            else
            {
                Add(l, q, fp, l.Inv, accs, flags, i, P);
                Add(l, q, fm, -l.Inv, accs, flags, i, P);
            }
        }
    }

    static void Add(FdPlanDev l, int q, double phi, double weight, ArrayView<double> accs, ArrayView<long> flags, long i, long P)
    {
        if (Kernels.IsNaN(phi)) { if (weight >= 0) Atomic.Add(ref flags[4 + 3 * q], 1L); return; } // in no bin: counted (once, on the plus twin) for the warning
        if (!(phi >= l.Lo)) { if (weight >= 0) Atomic.Add(ref flags[2 + 3 * q], 1L); return; }
        if (!(phi < l.Hi)) { if (weight >= 0) Atomic.Add(ref flags[3 + 3 * q], 1L); return; }
        int bin = (int)((phi - l.Lo) / (l.Hi - l.Lo) * l.Bins);
        if (bin >= l.Bins) bin = l.Bins - 1;
        accs[(l.Slot + bin) * P + i] += weight;
    }
}
