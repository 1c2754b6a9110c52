using System.Runtime.CompilerServices;

namespace Sde.Core;

public enum ResponseMethod
{
    /// <summary>Divergence-kernel recursion (docs/estimators.md); likelihood ratio is α ≡ 1.</summary>
    DivergenceKernel,
    /// <summary>Tangent v_{n+1} = J_n v_n + χ_n; E[∇φ · v_N].</summary>
    Pathwise,
    /// <summary>Central differences with common random numbers.</summary>
    FiniteDifference,
}

/// <summary>How J⁻¹, ∇ log|det J| and tr(J⁻¹ Dχ) are evaluated in the DK recursion.</summary>
public enum DkMode
{
    /// <summary>Dense LU of J per step: O(d³), the reference.</summary>
    Exact,
    /// <summary>Neumann series with sparse products to 1e-12, LU fallback when it does not converge.</summary>
    Iterative,
    /// <summary>One term of each series (two under multiplicative noise, for the Itô terms): biased at O(Δt).</summary>
    FirstOrder,
}

/// <summary>One response query as the response engine sees it.</summary>
public sealed class ResponsePlan : ObservablePlan
{
    /// <summary>Response parameter number (index into <see cref="TangentStructure.Params"/>).</summary>
    public int Which { get; init; }
    public ResponseMethod Method { get; init; }
    /// <summary>DK schedule: constant per-step α, or α_n = min(1, Rate·Δt) with the harmonic start.</summary>
    public bool ConstantAlpha { get; init; }
    public double Alpha { get; init; }
    public double Rate { get => _rate; init => _rate = value; }
    double _rate = 10;
    /// <summary>The rate was chosen by the driver from the measured covector growth (the adaptive default);
    /// <see cref="Rate"/> holds the rate in use.</summary>
    public bool AdaptiveRate { get; init; }
    /// <summary>A copy with another rate (the adaptive default, once measured).</summary>
    public ResponsePlan WithRate(double rate)
    {
        var c = (ResponsePlan)MemberwiseClone();
        c._rate = rate;
        return c;
    }
    public DkMode Mode { get; init; }
    /// <summary>Finite differences: indices into the variant models (γ + h, γ − h) and h.</summary>
    public int VariantPlus { get; init; }
    public int VariantMinus { get; init; }
    public double H { get; init; }
    /// <summary>&gt; 0: stationary (ergodic) estimator over [Burnin, T] with this window (time units).</summary>
    public double StationaryWindow { get; init; }
    public double Burnin { get; init; }
    /// <summary>≥ 0: instead of a response, estimate E[φ(x_N) ν_N[k]] (the score moment of the Stein identity).</summary>
    public int ScoreComponent { get; init; } = -1;
    /// <summary>
    /// Lyapunov alignment (Kind = Density on [Lo, Hi] ⊂ [0, 1]): instead of a response, the histogram over paths of
    /// |cos| of the angle between the top Lyapunov vector (J_{N−1}⋯J_0 q_0, normalised) and ν_N at T.
    /// </summary>
    public bool Alignment { get; init; }
    /// <summary>
    /// ≥ 0: the observable ∂φ/∂γ, added to each sample of a mean (∂_γ E[φ(x, γ)] = E[φ ℓ] + E[∂_γφ]: the
    /// explicit term, when the observable depends on the parameter itself); −1 when φ does not.
    /// </summary>
    public int Explicit { get; init; } = -1;

    /// <summary>
    /// A kernel mean asks for a pathwise control variate: the driver adds a pathwise plan of the same
    /// observable and parameter on the same paths (<see cref="Control"/>) and the estimate becomes
    /// mean(u) − κ·mean(u − p), u the centred kernel sample and p the pathwise one: both are unbiased
    /// for the same derivative, so u − p has mean zero, and κ = Cov(u, u − p) / Var(u − p) (from the same
    /// paths) minimises the variance. Where the pathwise tangent explodes (chaos) κ → 0 and the kernel
    /// estimate stands alone; where it does not (smooth, stable models, diffusion parameters) the
    /// standard error drops to the pathwise one's or below.
    /// </summary>
    public bool PathwiseControl { get; init; }
    /// <summary>≥ 0: the plan whose per-path sample is this plan's control variate (set by <see cref="WithControl"/>).</summary>
    public int Control { get => _control; init => _control = value; }
    int _control = -1;

    /// <summary>A copy whose control variate is plan <paramref name="plan"/>.</summary>
    public ResponsePlan WithControl(int plan)
    {
        var c = (ResponsePlan)MemberwiseClone();
        c._control = plan;
        return c;
    }

    /// <summary>The pathwise plan that serves as this kernel plan's control (same observable, parameter, window, explicit term).</summary>
    /// <summary>A plan that runs nothing and samples nothing (a control variate dropped for this parameter set:
    /// the plan list, and so the sums' layout, stays that of the program).</summary>
    public bool Inactive { get; init; }

    /// <summary>This plan made inactive.</summary>
    public ResponsePlan Deactivated() => new()
    {
        Kind = Kind, Observable = Observable, Which = Which, Method = Method, Mode = Mode, Burnin = Burnin, Inactive = true,
    };

    public ResponsePlan PathwiseTwin() => new()
    {
        Kind = Kind, Observable = Observable, TimeAverage = TimeAverage, T0 = T0, T1 = T1,
        Which = Which, Method = ResponseMethod.Pathwise, Mode = Mode, Burnin = Burnin, Explicit = Explicit,
    };

    /// <summary>
    /// The kernel estimators weight φ by a score-like ω with E[ω] = 0 (ℓ_N, a window increment of ℓ, a
    /// component of ν), so E[φ ω] = E[(φ − c) ω] for any constant c. They report the centred estimate
    /// with c = the sample mean of φ (delta-method standard error): the same expectation up to
    /// O(1/paths), a far smaller variance when φ has a large mean, and density responses that integrate
    /// to zero exactly.
    /// </summary>
    public bool Centred => Method == ResponseMethod.DivergenceKernel && !Alignment;
}

/// <summary>
/// The response engine: simulates the chain and, path by path, the forward quantities of every
/// requested estimator (DK covector and parameter scores, pathwise tangents, finite-difference
/// twins sharing the noise), accumulating exactly as the plain engine does.
/// </summary>
public static class ResponseEngine
{
    public static Estimate[] Run<TModel>(in TModel model, TModel[] variants, TangentStructure st, RunSettings s, ResponsePlan[] plans)
        where TModel : struct, ISdeTangentModel
        => RunPartial(model, variants, st, s, plans).ToEstimates();

    /// <summary>
    /// Runs paths FirstPath .. FirstPath + Paths − 1 and returns their exact sums, to be merged with those
    /// of other path ranges (<see cref="ResponseAccumulators.Merge"/>) before <see cref="ResponseAccumulators.ToEstimates"/>.
    /// </summary>
    public static ResponseAccumulators RunPartial<TModel>(in TModel model, TModel[] variants, TangentStructure st, RunSettings s, ResponsePlan[] plans)
        where TModel : struct, ISdeTangentModel
        => RunPartial(model, variants, st, s, plans, null);

    /// <summary>
    /// As <see cref="RunPartial{TModel}(in TModel, TModel[], TangentStructure, RunSettings, ResponsePlan[])"/>, and
    /// writes each path's state at T, its DK parameter scores ℓ_T (one per plan) and its covector ν_T into
    /// <paramref name="record"/> (the per-path values that fitting needs; paths that blow up keep NaN rows).
    /// </summary>
    public static ResponseAccumulators RunRecorded<TModel>(in TModel model, TangentStructure st, RunSettings s, ResponsePlan[] plans, PathRecord record)
        where TModel : struct, ISdeTangentModel
    {
        CheckRecorded(s, plans, record);
        record.Reset(s.FirstPath, s.Paths, model.Dim, plans.Length, model.ObservableCount, s.Steps);
        return RunPartial(model, Array.Empty<TModel>(), st, s, plans, record);
    }

    /// <summary>What a recorded run accepts (every backend's: the GPU record runner asks the same).</summary>
    internal static void CheckRecorded(RunSettings s, ResponsePlan[] plans, PathRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        if (plans.Any(p => p.Method != ResponseMethod.DivergenceKernel || p.Kind != EstimateKind.Mean || p.StationaryWindow > 0 || p.TimeAverage || p.Alignment))
            throw new ArgumentException("a recorded run takes divergence-kernel mean (or score) plans at T only");
        if (plans.Select(p => (p.ConstantAlpha, p.Alpha, p.Rate, p.Mode)).Distinct().Count() > 1)
            throw new ArgumentException("a recorded run takes plans of one DK schedule and mode (one covector)");
        if (record.Steps is { } rs && (record.WithNu || record.WithObservables || record.WindowSteps < 1 || rs.Length < 1
            || rs[0] < 0 || rs[^1] > s.Steps || rs.Zip(rs.Skip(1)).Any(t => t.First >= t.Second)))
            throw new ArgumentException("a stationary recording takes ascending steps in [0, T/dt], a window of at least one step, and no covector or observables");
    }

    static ResponseAccumulators RunPartial<TModel>(in TModel model, TModel[] variants, TangentStructure st, RunSettings s, ResponsePlan[] plans, PathRecord? record)
        where TModel : struct, ISdeTangentModel
    {
        long steps = s.Steps;
        if (s.Paths < 1 || steps < 1) throw new ArgumentException("a response run needs at least one path and one step");
        int threads = s.Threads > 0 ? s.Threads : Environment.ProcessorCount;
        var setup = new Setup(model, st, s, plans) { Record = record };
        int lanes = ResponseLanes<TModel>.LaneCount(setup);
        long avail = Memory.Available();
        // a small run's four lanes hold four workers' records: one path at a time where they do not fit
        if (lanes == 4 && SmallResponseLanes.Shape(setup) && setup.BytesPerWorker() * threads * lanes > avail) lanes = 1;
        long need = setup.BytesPerWorker() * threads * lanes;
        if (need > avail)
            throw new RunTooLargeException($"this response run needs about {need / (1 << 20)} MiB of working memory ({threads} worker(s)), more than the {avail / (1 << 20)} MiB available; use mode = iterative or first_order, fewer threads, or fewer bins");

        TModel m0 = model;
        var progress = new StepProgress(s.Progress, s.Paths, steps);
        // (chosen here, on the caller's thread: the workers' threads do not see its LanesOnThisThread)
        bool small = lanes == 4 && SmallResponseLanes.Takes(model, setup);
        if (small) SmallResponseLanes.RunsOnThisThread++;
        var sets = PathBlocks.RunBlocks(s, 64, lanes, "response", () => new ResponseLanes<TModel>(m0, variants, setup, progress, lanes, small), (ls, first, count, fail) => ls.RunBlock(first, count, fail));
        var total = ResponseAccumulators.Create(plans);
        foreach (var w in sets.SelectMany(l => l.Lanes)) { total.Sums.Merge(w.Sums); total.Paths += w.Paths; }
        return total;
    }

    /// <summary>Exact per-plan sums of the per-path samples and their squares (per bin for densities).</summary>
    internal sealed class Sums
    {
        /// <summary>Per plan and bin: Σ A, Σ A², and for centred plans Σ A·B and Σ C; per plan Σ B, Σ B².
        /// A is the path's sample (φ·ω, or ω in a bin), B its weight alone, C its φ (or bin indicator).</summary>
        public readonly ExactSum[][] S, S2, SAB, SC;
        public readonly ExactSum[] SB, SBB, SB4;
        /// <summary>Per plan with a control variate: Σ P, Σ P², Σ A·P, Σ B·P (P the control's path sample).</summary>
        public readonly ExactSum[] SP, SPP, SAP, SBP;
        /// <summary>Per plan: the largest B² of a path (the weight-tail diagnostic).</summary>
        public readonly double[] MaxBB;
        public readonly long[] Below, Above;
        /// <summary>Per plan: a mean plan's paths whose sample (or, centred, whose φ) is not finite; a density
        /// plan's NaN samples of φ (in no bin).</summary>
        public readonly long[] NonFinite;
        /// <summary>Per plan: paths whose finite control sample is in SP (the control is used only when every path has one).</summary>
        public readonly long[] ControlPaths;
        public Sums(ResponsePlan[] plans)
        {
            int np = plans.Length;
            S = new ExactSum[np][]; S2 = new ExactSum[np][]; SAB = new ExactSum[np][]; SC = new ExactSum[np][];
            SB = new ExactSum[np]; SBB = new ExactSum[np]; SB4 = new ExactSum[np]; MaxBB = new double[np];
            Below = new long[np]; Above = new long[np]; NonFinite = new long[np]; ControlPaths = new long[np];
            SP = New(np); SPP = New(np); SAP = New(np); SBP = New(np);
            for (int i = 0; i < np; i++)
            {
                int n = plans[i].Kind == EstimateKind.Density ? plans[i].Bins : 1;
                S[i] = New(n); S2[i] = New(n); SAB[i] = New(n); SC[i] = New(n);
                SB[i] = new ExactSum(); SBB[i] = new ExactSum(); SB4[i] = new ExactSum();
            }
        }

        static ExactSum[] New(int n)
        {
            var a = new ExactSum[n];
            for (int b = 0; b < n; b++) a[b] = new ExactSum();
            return a;
        }

        /// <summary>One path's sample of plan <paramref name="plan"/>: bin b's A = a[b]·scale, and for a
        /// centred plan C = c[b]·scale and B = weight·scaleB.</summary>
        public void AddPath(int plan, bool centred, ReadOnlySpan<double> a, ReadOnlySpan<double> c, double weight, double scale, double scaleB)
            => AddPath(plan, centred, a, c, weight, scale, scaleB, false, 0.0);

        /// <summary>As above, with the path's control sample <paramref name="control"/> (already scaled) when <paramref name="controlled"/>.</summary>
        public void AddPath(int plan, bool centred, ReadOnlySpan<double> a, ReadOnlySpan<double> c, double weight, double scale, double scaleB, bool controlled, double control)
        {
            double bv = weight * scaleB;
            // a path without a finite control sample (the tangent overflowed) leaves the control unused
            if (controlled && double.IsFinite(control))
            {
                ControlPaths[plan]++;
                SP[plan].Add(control); SPP[plan].Add(control * control);
                SAP[plan].Add(a[0] * scale * control); SBP[plan].Add(bv * control);
            }
            if (S[plan].Length == 1 && !(double.IsFinite(a[0]) && (!centred || double.IsFinite(c[0])))) NonFinite[plan]++;
            for (int b = 0; b < S[plan].Length; b++) AddBin(plan, b, centred, a[b] * scale, c, scale, bv);
            if (centred) AddWeight(plan, bv);
        }

        /// <summary>One bin's terms of a path: A (scaled), A², and when centred A·B and the control C.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void AddBin(int plan, int b, bool centred, double av, ReadOnlySpan<double> c, double scale, double bv)
        {
            S[plan][b].Add(av);
            S2[plan][b].Add(av * av);
            if (centred)
            {
                SAB[plan][b].Add(av * bv);
                SC[plan][b].Add(c[b] * scale);
            }
        }

        /// <summary>A path's weight terms of a centred plan: B, B², B⁴ and the largest B².</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void AddWeight(int plan, double bv)
        {
            double b2 = bv * bv;
            SB[plan].Add(bv); SBB[plan].Add(b2); SB4[plan].Add(b2 * b2);
            if (b2 > MaxBB[plan]) MaxBB[plan] = b2; // (a NaN weight shows in ΣB²)
        }

        /// <summary>A density plan's path sample, as <see cref="AddPath(int, bool, ReadOnlySpan{double}, ReadOnlySpan{double}, double, double, double)"/>
        /// but visiting only the bins in <paramref name="bins"/>: the others hold A = C = 0, which add nothing to the
        /// exact sums (so the sums are the same bits), and a path costs its samples, not the number of bins.</summary>
        public void AddPathBins(int plan, bool centred, double[] a, double[] c, ReadOnlySpan<int> bins, double weight, double scale, double scaleB)
        {
            double bv = weight * scaleB;
            foreach (int b in bins) AddBin(plan, b, centred, a[b] * scale, c, scale, bv);
            if (centred) AddWeight(plan, bv);
        }

        /// <summary>
        /// Adds the per-path samples of plan <paramref name="plan"/> copied back from a device: row r of
        /// path q at host[r·count + q]; A rows from <paramref name="firstRow"/>, then (centred) the C rows
        /// and one B row, laid out as <see cref="RowsOf"/> says.
        /// </summary>
        public void AddRows(int plan, bool centred, double[] host, long firstRow, long count, double scale, double scaleB)
            => AddRows(plan, centred, host, firstRow, count, scale, scaleB, -1, 0.0);

        /// <summary>As above; <paramref name="controlRow"/> ≥ 0: the row of the control plan's samples, scaled by <paramref name="controlScale"/>.</summary>
        public void AddRows(int plan, bool centred, double[] host, long firstRow, long count, double scale, double scaleB, long controlRow, double controlScale)
        {
            int nb = S[plan].Length;
            Span<double> a = nb <= 256 ? stackalloc double[nb] : new double[nb];
            Span<double> c = nb <= 256 ? stackalloc double[nb] : new double[nb];
            for (long q = 0; q < count; q++)
            {
                for (int b = 0; b < nb; b++)
                {
                    a[b] = host[(firstRow + b) * count + q];
                    if (centred) c[b] = host[(firstRow + nb + b) * count + q];
                }
                double w = centred ? host[(firstRow + 2 * nb) * count + q] : 0.0;
                double ctl = controlRow >= 0 ? host[controlRow * count + q] * controlScale : 0.0;
                AddPath(plan, centred, a, c, w, scale, scaleB, controlRow >= 0, ctl);
            }
        }

        /// <summary>Accumulator rows a plan needs per path: its bins (A), and for a centred plan its bins again (C) and one B.</summary>
        public static int RowsOf(ResponsePlan p)
        {
            int nb = p.Kind == EstimateKind.Density ? p.Bins : 1;
            return p.Centred ? 2 * nb + 1 : nb;
        }

        public void Merge(Sums o)
        {
            for (int i = 0; i < S.Length; i++)
            {
                for (int b = 0; b < S[i].Length; b++)
                {
                    S[i][b].Add(o.S[i][b]); S2[i][b].Add(o.S2[i][b]);
                    SAB[i][b].Add(o.SAB[i][b]); SC[i][b].Add(o.SC[i][b]);
                }
                SB[i].Add(o.SB[i]); SBB[i].Add(o.SBB[i]); SB4[i].Add(o.SB4[i]);
                SP[i].Add(o.SP[i]); SPP[i].Add(o.SPP[i]); SAP[i].Add(o.SAP[i]); SBP[i].Add(o.SBP[i]);
                ControlPaths[i] += o.ControlPaths[i];
                if (o.MaxBB[i] > MaxBB[i]) MaxBB[i] = o.MaxBB[i];
                Below[i] += o.Below[i]; Above[i] += o.Above[i]; NonFinite[i] += o.NonFinite[i];
            }
        }

        /// <summary>Bins per plan (1 for a mean): the shape that Merge, Write and Read require to agree.</summary>
        public int BinsOf(int plan) => S[plan].Length;

        public void Write(BinaryWriter w)
        {
            w.Write(S.Length);
            for (int i = 0; i < S.Length; i++)
            {
                w.Write(S[i].Length);
                for (int b = 0; b < S[i].Length; b++) { S[i][b].Write(w); S2[i][b].Write(w); SAB[i][b].Write(w); SC[i][b].Write(w); }
                SB[i].Write(w); SBB[i].Write(w); SB4[i].Write(w);
                SP[i].Write(w); SPP[i].Write(w); SAP[i].Write(w); SBP[i].Write(w); w.Write(ControlPaths[i]);
                w.Write(MaxBB[i]); w.Write(Below[i]); w.Write(Above[i]); w.Write(NonFinite[i]);
            }
        }

        /// <summary>Overwrites these sums (of the same plans) with what <see cref="Write"/> wrote.</summary>
        public void Read(BinaryReader r)
        {
            if (r.ReadInt32() != S.Length) throw new InvalidDataException("the response sums were written for other queries");
            static void Load(ExactSum dst, BinaryReader r) { dst.Clear(); dst.Add(ExactSum.Read(r)); }
            for (int i = 0; i < S.Length; i++)
            {
                if (r.ReadInt32() != S[i].Length) throw new InvalidDataException($"response query {i}: the bin count differs");
                for (int b = 0; b < S[i].Length; b++) { Load(S[i][b], r); Load(S2[i][b], r); Load(SAB[i][b], r); Load(SC[i][b], r); }
                Load(SB[i], r); Load(SBB[i], r); Load(SB4[i], r);
                Load(SP[i], r); Load(SPP[i], r); Load(SAP[i], r); Load(SBP[i], r); ControlPaths[i] = r.ReadInt64();
                MaxBB[i] = r.ReadDouble(); Below[i] = r.ReadInt64(); Above[i] = r.ReadInt64(); NonFinite[i] = r.ReadInt64();
            }
        }

        public Estimate[] ToEstimates(ResponsePlan[] plans, long paths)
        {
            var r = new Estimate[plans.Length];
            double n = paths;
            for (int i = 0; i < plans.Length; i++)
            {
                var p = plans[i];
                double sb = SB[i].Round(), sbb = SBB[i].Round();
                // the weights' tail (E[B] = 0): kurtosis n ΣB⁴ / (ΣB²)² and the largest path's share of ΣB²
                double kurt = p.Centred && n > 0 ? n * SB4[i].Round() / (sbb * sbb) : double.NaN;
                double share = p.Centred ? MaxBB[i] / sbb : double.NaN;
                if (p.Centred && (!double.IsFinite(sbb) || !double.IsFinite(MaxBB[i]))) { kurt = double.PositiveInfinity; share = 1; }
                (double mean, double se) At(int b)
                {
                    double s = S[i][b].Round(), s2 = S2[i][b].Round();
                    double m, e2;
                    if (p.Centred)
                    {
                        // samples A − c̄·B with c̄ the sample mean of C
                        double cbar = SC[i][b].Round() / n;
                        m = (s - cbar * sb) / n;
                        e2 = (s2 - 2 * cbar * SAB[i][b].Round() + cbar * cbar * sbb) / n;
                    }
                    else { m = s / n; e2 = s2 / n; }
                    double v = Math.Max(0, e2 - m * m) * n / Math.Max(1, n - 1);
                    return (m, Math.Sqrt(v / n));
                }
                if (p.Kind == EstimateKind.Mean)
                {
                    var (m, se) = At(0);
                    double kappa = double.NaN;
                    if (p.Control >= 0 && p.Centred && ControlPaths[i] == paths && n > 2)
                    {
                        // u = A − c̄B (the centred kernel sample), p the control's; d = u − p has mean zero
                        double cbar = SC[i][0].Round() / n, sa = S[i][0].Round();
                        double su = sa - cbar * sb;
                        double suu = S2[i][0].Round() - 2 * cbar * SAB[i][0].Round() + cbar * cbar * sbb;
                        double sp = SP[i].Round(), spp = SPP[i].Round();
                        double sup = SAP[i].Round() - cbar * SBP[i].Round();
                        double vu = (suu - su * su / n) / (n - 1), vp = (spp - sp * sp / n) / (n - 1), cup = (sup - su * sp / n) / (n - 1);
                        double vd = vu + vp - 2 * cup, cud = vu - cup;
                        if (double.IsFinite(vd) && double.IsFinite(cud) && vd > 0)
                        {
                            kappa = cud / vd;
                            m = (1 - kappa) * su / n + kappa * sp / n;
                            se = Math.Sqrt(Math.Max(0, vu - kappa * cud) / n);
                        }
                    }
                    r[i] = new Estimate { Value = m, StdErr = se, Count = paths, WeightKurtosis = kurt, WeightMaxShare = share, NonFinite = NonFinite[i],
                                          ControlCoefficient = kappa };
                }
                else
                {
                    var vals = new double[p.Bins]; var ses = new double[p.Bins]; var grid = new double[p.Bins];
                    double width = (p.Hi - p.Lo) / p.Bins;
                    for (int b = 0; b < p.Bins; b++) { (vals[b], ses[b]) = At(b); grid[b] = p.Lo + (b + 0.5) * width; }
                    r[i] = new Estimate { Grid = grid, Values = vals, StdErrs = ses, Below = Below[i], Above = Above[i], Count = paths, WeightKurtosis = kurt, WeightMaxShare = share, NonFinite = NonFinite[i] };
                }
            }
            return r;
        }
    }

    /// <summary>A DK chain configuration: schedule and mode. Queries sharing one share ν and ℓ.</summary>
    internal sealed class DkGroup
    {
        public bool ConstantAlpha; public double Alpha, Rate; public DkMode Mode;
        public int[] Whiches = Array.Empty<int>();
        public bool Same(ResponsePlan p) => p.ConstantAlpha == ConstantAlpha && p.Mode == Mode
            && (ConstantAlpha ? p.Alpha == Alpha : p.Rate == Rate);

        /// <summary>α at step n: the constant (1 at a point init's first step), or min(1, rate·Δt) with the
        /// harmonic start 1/(n + 1) where the init has no score; 0 for an ODE (no kernel to inject).</summary>
        public double AlphaAt(long n, double dt, bool initHasScore, int noises)
        {
            if (noises == 0) return 0;
            if (ConstantAlpha) return (n == 0 && !initHasScore) ? 1.0 : Alpha;
            double a = Math.Min(1.0, Rate * dt);
            return initHasScore ? a : Math.Max(1.0 / (n + 1), a);
        }
    }

    /// <summary>Everything fixed for the run: sizes, patterns, groups, which quantities are needed.</summary>
    internal sealed class Setup
    {
        public readonly TangentStructure St;
        public readonly RunSettings S;
        public readonly ResponsePlan[] Plans;
        public readonly int D, M, NObs, NParams;
        public readonly long Steps;
        public readonly double Dt, SqDt;
        public readonly DkGroup[] Groups;
        public readonly int[] PlanGroup;        // DK group of each plan (-1 otherwise)
        public readonly int[] PathwiseWhich;    // whiches needing a tangent
        public readonly int[] Variants;         // variant models in use
        public readonly bool NeedJ, NeedDk, NeedHessian, Multiplicative, DiagonalNoise;
        public readonly bool[] NeedChi;         // per which
        public readonly bool AnyExact, AnyIterative, AnyFirstOrder;
        // selected entries (j, i) of J⁻¹ needed: Hessian pairs and Dχ pairs
        public readonly int[] SelJ, SelI;
        public readonly int[] HSel;             // per Hessian entry: its pair
        public readonly int[] HByK, HStart;     // Hessian entries grouped by k (in order within k), and each k's first
        public readonly int[] HSelByK;          // HSel in that order
        public readonly bool NeedE;             // E = J − I is used (first_order; Neumann series with degenerate noise)
        public readonly int[] JByCol, JColStart, JByColRow; // J's entries grouped by column (in order within a column), each column's first, their rows
        public readonly int[][] DChiSel;        // per which, per Dχ entry: its pair
        public readonly int[] SelE;             // per pair: index of E_ji in the J pattern, or -1
        public readonly int[][] SelE2A, SelE2B; // per pair: index pairs with E_jr E_ri (first order, multiplicative)
        public readonly int[] DiagIndex;        // per row: index of J_ii in the pattern (or -1)
        public readonly int[] NoiseLaneOfRow;   // diagonal noise: the lane of each row
        public readonly int[] NoiseIndexOfRow;  // diagonal noise: the entry of each row
        public readonly bool NoiseInOrder;      // diagonal noise with row i on lane i and entry i
        public readonly long[] WindowSteps;     // per plan: stationary window in steps (0 if none)
        public readonly long[] From, To;        // per plan: sampling steps (inclusive)
        public readonly bool[] DetInitMask;     // components whose init is not normal
        public readonly int[][] ObsGradEntries; // per observable: entries of the gradient pattern
        public readonly SparseLuPlan? Lu;       // iterative mode: sparse LU + selected inversion
        public readonly bool NeedAlign;         // some plan is a Lyapunov alignment (top vector carried per path)
        public PathRecord? Record { get; init; } // per-path values at T (fitting), or null

        public Setup(ISdeTangentModel model, TangentStructure st, RunSettings s, ResponsePlan[] plans)
        {
            St = st; S = s; Plans = plans;
            D = model.Dim; M = model.NoiseDim; NObs = model.ObservableCount; NParams = st.Params.Length;
            Steps = s.Steps; Dt = s.Dt; SqDt = Math.Sqrt(s.Dt);
            var groups = new List<DkGroup>();
            PlanGroup = new int[plans.Length];
            NeedChi = new bool[NParams];
            var pw = new SortedSet<int>(); var vs = new SortedSet<int>();
            WindowSteps = new long[plans.Length]; From = new long[plans.Length]; To = new long[plans.Length];
            for (int i = 0; i < plans.Length; i++)
            {
                var p = plans[i];
                PlanGroup[i] = -1;
                if (p.Inactive) { From[i] = 1; To[i] = 0; continue; } // never samples: its sums stay empty
                if (p.Method == ResponseMethod.DivergenceKernel)
                {
                    int g = groups.FindIndex(x => x.Same(p));
                    if (g < 0) { groups.Add(new DkGroup { ConstantAlpha = p.ConstantAlpha, Alpha = p.Alpha, Rate = p.Rate, Mode = p.Mode }); g = groups.Count - 1; }
                    PlanGroup[i] = g;
                    if (p.ScoreComponent < 0 && !p.Alignment)
                    {
                        if (Array.IndexOf(groups[g].Whiches, p.Which) < 0) groups[g].Whiches = groups[g].Whiches.Append(p.Which).ToArray();
                        NeedChi[p.Which] = true;
                    }
                }
                else if (p.Method == ResponseMethod.Pathwise) { pw.Add(p.Which); NeedChi[p.Which] = true; }
                else { vs.Add(p.VariantPlus); vs.Add(p.VariantMinus); }
                if (p.StationaryWindow > 0)
                {
                    WindowSteps[i] = Math.Max(1, (long)Math.Round(p.StationaryWindow / s.Dt));
                    From[i] = (long)Math.Ceiling(p.Burnin / s.Dt - 1e-9); To[i] = Steps;
                }
                else if (p.TimeAverage)
                {
                    From[i] = (long)Math.Ceiling(p.T0 / s.Dt - 1e-9); To[i] = Math.Min(Steps, (long)Math.Floor(p.T1 / s.Dt + 1e-9));
                }
                else { From[i] = Steps; To[i] = Steps; }
            }
            Groups = groups.ToArray();
            NeedAlign = plans.Any(p => p.Alignment);
            PathwiseWhich = pw.ToArray(); Variants = vs.ToArray();
            NeedDk = Groups.Length > 0;
            NeedJ = NeedDk || PathwiseWhich.Length > 0;
            NeedHessian = NeedDk && st.HRow.Length > 0;
            Multiplicative = !st.AdditiveNoise;
            AnyExact = Groups.Any(g => g.Mode == DkMode.Exact);
            AnyIterative = Groups.Any(g => g.Mode == DkMode.Iterative);
            AnyFirstOrder = Groups.Any(g => g.Mode == DkMode.FirstOrder);

            DetInitMask = new bool[D];
            for (int k = 0; k < D; k++) DetInitMask[k] = !st.NormalInit[k];
            ObsGradEntries = new int[NObs][];
            for (int q = 0; q < NObs; q++)
                ObsGradEntries[q] = Enumerable.Range(0, st.ObsGradObs.Length).Where(e => st.ObsGradObs[e] == q).ToArray();
            DiagIndex = Enumerable.Repeat(-1, D).ToArray();
            var jIndex = new Dictionary<(int, int), int>();
            for (int e = 0; e < st.JRow.Length; e++) { jIndex[(st.JRow[e], st.JCol[e])] = e; if (st.JRow[e] == st.JCol[e]) DiagIndex[st.JRow[e]] = e; }

            // diagonal noise: each row one entry, distinct lanes, m = d
            var rowCount = new int[D]; var laneSeen = new bool[Math.Max(1, M)];
            NoiseLaneOfRow = new int[D]; NoiseIndexOfRow = new int[D];
            bool diag = M == D && st.GRow.Length == D;
            for (int e = 0; e < st.GRow.Length && diag; e++)
            {
                int r = st.GRow[e], l = st.GLane[e];
                if (rowCount[r]++ > 0 || laneSeen[l]) diag = false;
                else { laneSeen[l] = true; NoiseLaneOfRow[r] = l; NoiseIndexOfRow[r] = e; }
            }
            DiagonalNoise = diag;
            NeedE = AnyFirstOrder || (AnyIterative && !diag);
            NoiseInOrder = diag && Enumerable.Range(0, D).All(i => NoiseLaneOfRow[i] == i && NoiseIndexOfRow[i] == i);

            // selected entries of J⁻¹
            var pairs = new Dictionary<(int, int), int>();
            var sj = new List<int>(); var si = new List<int>();
            int Pair(int j, int i)
            {
                if (!pairs.TryGetValue((j, i), out int q)) { q = pairs.Count; pairs[(j, i)] = q; sj.Add(j); si.Add(i); }
                return q;
            }
            HSel = new int[st.HRow.Length];
            for (int h = 0; h < HSel.Length; h++) HSel[h] = Pair(st.HCol[h], st.HRow[h]);
            HByK = Enumerable.Range(0, st.HK.Length).OrderBy(h => st.HK[h]).ToArray(); // stable: h order within k
            HSelByK = HByK.Select(h => HSel[h]).ToArray();
            JByCol = Enumerable.Range(0, st.JCol.Length).OrderBy(e => st.JCol[e]).ToArray(); // stable
            JByColRow = JByCol.Select(e => st.JRow[e]).ToArray();
            JColStart = new int[D + 1];
            foreach (int j in st.JCol) JColStart[j + 1]++;
            for (int j = 0; j < D; j++) JColStart[j + 1] += JColStart[j];
            HStart = new int[D + 1];
            foreach (int k in st.HK) HStart[k + 1]++;
            for (int k = 0; k < D; k++) HStart[k + 1] += HStart[k];
            DChiSel = new int[NParams][];
            for (int w = 0; w < NParams; w++)
            {
                DChiSel[w] = new int[st.DChiRow[w].Length];
                for (int e = 0; e < DChiSel[w].Length; e++) DChiSel[w][e] = Pair(st.DChiCol[w][e], st.DChiRow[w][e]);
            }
            SelJ = sj.ToArray(); SelI = si.ToArray();
            if (AnyIterative)
                Lu = new SparseLuPlan(D, st.JRow.Concat(SelI).ToArray(), st.JCol.Concat(SelJ).ToArray());
            SelE = new int[SelJ.Length]; SelE2A = new int[SelJ.Length][]; SelE2B = new int[SelJ.Length][];
            var rows = new List<int>[D];
            for (int r = 0; r < D; r++) rows[r] = new List<int>();
            for (int e = 0; e < st.JRow.Length; e++) rows[st.JRow[e]].Add(e);
            for (int q = 0; q < SelJ.Length; q++)
            {
                int j = SelJ[q], i = SelI[q];
                SelE[q] = jIndex.TryGetValue((j, i), out int e0) ? e0 : -1;
                var a = new List<int>(); var b = new List<int>();
                foreach (int e1 in rows[j])
                {
                    int r = st.JCol[e1];
                    if (jIndex.TryGetValue((r, i), out int e2)) { a.Add(e1); b.Add(e2); }
                }
                SelE2A[q] = a.ToArray(); SelE2B[q] = b.ToArray();
            }
        }

        public long BytesPerWorker()
        {
            long d = D, m = Math.Max(1, M);
            // dense J, J⁻¹ and LU for exact mode (iterative allocates them only if a path falls back);
            // iterative: this worker's share of its lane set's batch (four lanes per batch)
            long dense = AnyExact ? 3L * d * d : 0;
            if (Lu != null) dense += 2L * Lu.Slots + 2 * d + St.JRow.Length + St.HRow.Length;
            long noise = DiagonalNoise ? 0 : 2 * ((long)d * m + (long)d * d + (long)m * m);
            // per bin: the path's A and C and the touched list (3 doubles), and the four exact sums of Sums (an object
            // and its array of 8 partials, about 120 bytes = 15 doubles each): 10^7 bins are about 5 GB a worker
            long perPlan = Plans.Sum(p => (long)(p.Kind == EstimateKind.Density ? p.Bins : 1) * (3 + 4 * 15) + (p.StationaryWindow > 0 ? (long)Math.Round(p.StationaryWindow / Dt) + 2 : 0));
            if (Record?.Steps != null) perPlan += (Record.WindowSteps + 1) * Plans.Length; // the stationary recording's rings of ℓ
            return 8 * (dense + noise + perPlan + 16 * d + (long)NParams * 4 * d + St.HRow.Length + St.JRow.Length * 2) + (1 << 16);
        }
    }
}

/// <summary>
/// The response engine's exact sums over some paths (a thread, or a shard of a run on another
/// machine). Every field is an exact sum, a count or a maximum, so merging the sums of disjoint path
/// ranges in any order gives the same bits as one run over all of them.
/// </summary>
public sealed class ResponseAccumulators
{
    internal readonly ResponseEngine.Sums Sums;
    readonly ResponsePlan[] _plans;
    /// <summary>Number of paths accumulated.</summary>
    public long Paths { get; internal set; }

    ResponseAccumulators(ResponsePlan[] plans) { _plans = plans; Sums = new ResponseEngine.Sums(plans); }

    /// <summary>Empty sums for <paramref name="plans"/> (to merge shards into).</summary>
    public static ResponseAccumulators Create(ResponsePlan[] plans)
    {
        ArgumentNullException.ThrowIfNull(plans);
        return new ResponseAccumulators(plans);
    }

    /// <summary>Adds <paramref name="other"/> (paths disjoint from ours, same plans) exactly.</summary>
    public void Merge(ResponseAccumulators other)
    {
        if (other._plans.Length != _plans.Length)
            throw new ArgumentException("response sums of different runs (the queries differ) cannot be merged");
        for (int i = 0; i < _plans.Length; i++)
            if (other.Sums.BinsOf(i) != Sums.BinsOf(i)) throw new ArgumentException($"response query {i} differs between the sums being merged");
        Sums.Merge(other.Sums);
        Paths += other.Paths;
    }

    /// <summary>Rounds the exact sums into estimates (once, at the end).</summary>
    public Estimate[] ToEstimates() => Sums.ToEstimates(_plans, Paths);

    /// <summary>The format tag of the response sums ("RSM2"; "RSUM" before the control-variate sums).</summary>
    const int FormatTag = 0x324D5352; // "RSM2": with the control-variate sums

    public void Write(BinaryWriter w)
    {
        w.Write(FormatTag);
        w.Write(Paths);
        Sums.Write(w);
    }

    /// <summary>Reads what <see cref="Write"/> wrote, for the same <paramref name="plans"/>.</summary>
    public static ResponseAccumulators Read(BinaryReader r, ResponsePlan[] plans)
    {
        if (r.ReadInt32() != FormatTag) throw new InvalidDataException("not response sums of this version");
        var a = Create(plans);
        a.Paths = r.ReadInt64();
        a.Sums.Read(r);
        return a;
    }
}
