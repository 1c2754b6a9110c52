namespace Sde.Core;

/// <summary>What a multilevel target is: a function of the means of some sampled quantities.</summary>
public enum MlmcTargetKind
{
    /// <summary>E[a]: Samples = [a].</summary>
    Mean,
    /// <summary>E[a²] − E[a]²: Samples = [a, a²].</summary>
    Variance,
    /// <summary>E[ab] − E[a] E[b]: Samples = [a, b, ab].</summary>
    Covariance,
    /// <summary>(E[a] − E[b])·Scale: Samples = [a, b] (a finite difference: a on the twin θ + h, b on θ − h, Scale = 1/2h).</summary>
    Difference,
}

/// <summary>One quantity the user asked for, as a function of the means of the sampled plans (indices into the plans).</summary>
public sealed class MlmcTarget
{
    public MlmcTargetKind Kind { get; init; }
    public int[] Samples { get; init; } = Array.Empty<int>();
    /// <summary><see cref="MlmcTargetKind.Difference"/>: the factor of the difference.</summary>
    public double Scale { get; init; } = 1.0;
    /// <summary>Targets of one group (a density's bins, ≥ 0) share a relative accuracy's ε: the relative target times the
    /// group's largest |value| (a bin's own value would ask a tail bin for an absurd absolute accuracy). −1: none.</summary>
    public int Group { get; init; } = -1;

    internal double Value(double[] m) => Kind switch
    {
        MlmcTargetKind.Mean => m[Samples[0]],
        MlmcTargetKind.Variance => m[Samples[1]] - m[Samples[0]] * m[Samples[0]],
        MlmcTargetKind.Difference => (m[Samples[0]] - m[Samples[1]]) * Scale,
        _ => m[Samples[2]] - m[Samples[0]] * m[Samples[1]],
    };

    /// <summary>The gradient of <see cref="Value"/> in the means, as (plan, coefficient) pairs: the target's
    /// corrections are linearised with it (delta method), so one variance per level serves any target.</summary>
    internal (int, double)[] Gradient(double[] m) => Kind switch
    {
        MlmcTargetKind.Mean => new[] { (Samples[0], 1.0) },
        MlmcTargetKind.Variance => new[] { (Samples[0], -2.0 * m[Samples[0]]), (Samples[1], 1.0) },
        MlmcTargetKind.Difference => new[] { (Samples[0], Scale), (Samples[1], -Scale) },
        _ => new[] { (Samples[0], -m[Samples[1]]), (Samples[1], -m[Samples[0]]), (Samples[2], 1.0) },
    };
}

/// <summary>The accuracy asked for and the algorithm's knobs (docs/mlmc.md).</summary>
public sealed class MlmcOptions
{
    /// <summary>The root-mean-square error target ε of every target (absolute), or relative to |value| with <see cref="Relative"/>.</summary>
    public double Accuracy { get; init; }
    public bool Relative { get; init; }
    /// <summary>Samples of the pilot run on each of the first levels.</summary>
    public long Pilot { get; init; } = 1000;
    /// <summary>The finest level allowed: the finest step is dt₀ 2^−MaxLevel.</summary>
    public int MaxLevel { get; init; } = 10;
    /// <summary>The scheme's weak order: caps the fitted α used for the bias estimate.</summary>
    public double WeakOrder { get; init; } = 1.0;
    /// <summary>Most samples on one level (the run stops there, unconverged, rather than run for ever).</summary>
    public long MaxPaths { get; init; } = 1_000_000_000_000;
}

/// <summary>One level of the run: its step, samples and cost, and per target the mean and variance of its correction.</summary>
public sealed class MlmcLevel
{
    public int Level { get; init; }
    public double Dt { get; init; }
    public long Steps { get; init; }
    public long Paths { get; init; }
    /// <summary>Path-steps per sample (fine plus coarse steps).</summary>
    public double Cost { get; init; }
    /// <summary>Wall time spent on this level.</summary>
    public double Seconds { get; init; }
    /// <summary>Per target: E[Y_ℓ] and V[Y_ℓ] of the (linearised) correction, and E[P_ℓ], V[P_ℓ] of the fine value (NaN for derived targets).</summary>
    public double[] Mean { get; init; } = Array.Empty<double>();
    public double[] Variance { get; init; } = Array.Empty<double>();
    public double[] MeanFine { get; init; } = Array.Empty<double>();
    public double[] VarianceFine { get; init; } = Array.Empty<double>();
}

/// <summary>One target's result.</summary>
public sealed class MlmcTargetResult
{
    public double Value { get; init; }
    /// <summary>The sampling standard error √(Σ V_ℓ/N_ℓ).</summary>
    public double StdErr { get; init; }
    /// <summary>The estimated remaining bias (from the last corrections and the weak order).</summary>
    public double Bias { get; init; }
    /// <summary>The achieved root-mean-square error estimate √(StdErr² + Bias²).</summary>
    public double Error { get; init; }
    /// <summary>The absolute target ε (ε·|value| for a relative accuracy).</summary>
    public double Accuracy { get; init; }
    /// <summary>Fitted rates over levels ≥ 1: |E[Y_ℓ]| ∝ 2^−αℓ, V[Y_ℓ] ∝ 2^−βℓ, cost ∝ 2^γℓ (NaN with fewer than two levels ≥ 1).</summary>
    public double Alpha { get; init; }
    public double Beta { get; init; }
    public double Gamma { get; init; }
    public long NonFinite { get; init; }
}

public sealed class MlmcResult
{
    public MlmcLevel[] Levels { get; init; } = Array.Empty<MlmcLevel>();
    public MlmcTargetResult[] Targets { get; init; } = Array.Empty<MlmcTargetResult>();
    /// <summary>False when the finest level allowed (or the most samples) was reached before the bias (or variance) target.</summary>
    public bool Converged { get; init; }
    /// <summary>Why not converged (empty when converged).</summary>
    public string Note { get; init; } = "";
    /// <summary>Total path-steps (fine plus coarse).</summary>
    public double Work { get; init; }
    public double Seconds { get; init; }
}

/// <summary>
/// Giles' adaptive multilevel Monte Carlo (Operations Research 56(3), 2008; the algorithm of his
/// Acta Numerica 2015 review): pilot samples on levels 0..2, then N_ℓ ∝ √(V_ℓ/C_ℓ) from the measured
/// variances V_ℓ and costs C_ℓ of the level corrections so that Σ V_ℓ/N_ℓ ≤ ε²/2, and new levels while
/// the estimated remaining bias exceeds ε/√2. Every decision is taken from exact sums, and the costs
/// are counted in path-steps (not measured in seconds), so the plan and the numbers do not depend on
/// the thread count or the machine's load.
/// </summary>
public static class Mlmc
{
    const double Theta = 0.5; // the share of ε² left to the bias when levels are added: a run stops adding levels once the bias is under √Θ·ε
    /// <summary>The most of ε² the variance gets when the bias estimate is small (the bias estimate, from a few noisy
    /// corrections, keeps at least this margin).</summary>
    const double MaxVarianceShare = 0.85;

    public static MlmcResult Run<TModel>(in TModel model, RunSettings s, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions o)
        where TModel : struct, ISdeModel
        => Run(new[] { model }, new int[plans.Length], s, plans, targets, o);

    /// <summary>The decisions and sums of a run so far (the adaptive loop's, or a fixed plan's).</summary>
    sealed class State
    {
        public readonly List<LevelSums> Sums = new();
        public readonly List<double> Secs = new();
        public int L;
        public double[] Alpha, Beta, Gamma, Eps, Mean;
        public double[][] Ml, Vl;
        public double Work;
        public bool Converged = true;
        public string Note = "";
        public readonly Func<int, double> Cost;
        public readonly long N0;
        public State(int nt, int np, Func<int, double> cost, long n0)
        {
            Alpha = new double[nt]; Beta = new double[nt]; Gamma = new double[nt]; Eps = new double[nt];
            Ml = new double[nt][]; Vl = new double[nt][]; Mean = new double[np]; Cost = cost; N0 = n0;
        }
    }

    /// <summary>The quantities whose covariances a target needs (its samples): the level sums keep only those pairs.</summary>
    static int[][] Groups(MlmcTarget[] targets) => targets.Select(t => t.Samples).ToArray();

    static long Check(RunSettings s, MlmcOptions o)
    {
        long n0 = Engine.CheckSettings(s);
        if (!(o.Accuracy > 0) || !double.IsFinite(o.Accuracy)) throw new ArgumentException($"accuracy must be positive (got {o.Accuracy})");
        if (o.Pilot < 2) throw new ArgumentException($"the pilot needs at least 2 samples per level (got {o.Pilot})");
        if (o.MaxLevel < 0 || o.MaxLevel > 30) throw new ArgumentException($"max_levels must be in 0..30 (got {o.MaxLevel})");
        if (n0 < 1) throw new ArgumentException("the coarsest level needs at least one step");
        return n0;
    }

    /// <summary>Path-steps per sample of level ℓ: fine plus coarse steps, on every model instance (a finite difference's twins).</summary>
    static Func<int, double> CostOf(int[] planModel, long n0)
    {
        int instances = planModel.Distinct().Count();
        return l => instances * (l == 0 ? n0 : 1.5 * (n0 << l));
    }

    /// <summary>As above, with finite-difference twins: plan i is sampled on models[planModel[i]] (models[0]: the set's model),
    /// every instance on the same normals, so a difference of twins is coupled across the parameter and the levels.</summary>
    public static MlmcResult Run<TModel>(TModel[] models, int[] planModel, RunSettings s, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions o)
        where TModel : struct, ISdeModel
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var st = Adaptive(models, planModel, s, plans, targets, o);
        return Result(st, s.Dt, targets, o, sw.Elapsed.TotalSeconds);
    }

    static State Adaptive<TModel>(TModel[] models, int[] planModel, RunSettings s, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions o)
        where TModel : struct, ISdeModel
    {
        long n0 = Check(s, o);
        int nt = targets.Length;
        var st = new State(nt, plans.Length, CostOf(planModel, n0), n0);
        var sums = st.Sums; var secs = st.Secs;
        var dN = new List<long>();
        int L = Math.Min(2, o.MaxLevel);
        var groups = Groups(targets);
        for (int l = 0; l <= L; l++) { sums.Add(new LevelSums(plans.Length, groups)); secs.Add(0); dN.Add(o.Pilot); }
        var Cost = st.Cost;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        double work = 0;
        bool converged = true;
        string note = "";
        double[] alpha = st.Alpha, beta = st.Beta, gamma = st.Gamma;
        double[][] ml = st.Ml, vl = st.Vl;
        double[] eps = st.Eps;
        double[] mean = st.Mean;
        var bias = new double[nt];
        var share = new double[nt];
        bool biasShort = false;
        var low = new double[o.MaxLevel + 1];

        // a new level, its variance extrapolated from the last one (β)
        void AddLevel()
        {
            L++;
            sums.Add(new LevelSums(plans.Length, groups)); secs.Add(0); dN.Add(0);
            for (int q = 0; q < nt; q++)
            {
                Array.Resize(ref vl[q], L + 1); Array.Resize(ref ml[q], L + 1);
                vl[q][L] = vl[q][L - 1] / Math.Pow(2, double.IsFinite(beta[q]) ? Math.Max(beta[q], 0.5) : 1.0);
            }
        }

        while (true)
        {
            // run the extra samples of every level (samples N_ℓ .. N_ℓ + dN_ℓ − 1)
            double planned = work;
            for (int l = 0; l <= L; l++) planned += dN[l] * Cost(l);
            for (int l = 0; l <= L; l++)
            {
                if (dN[l] <= 0) continue;
                s.Cancel.ThrowIfCancellationRequested();
                double before = work;
                var prog = s.Progress == null ? null
                    : new StepProgress(f => s.Progress(Math.Min(1.0, (before + f * dN[l] * Cost(l)) / planned)), dN[l], (long)Cost(l));
                var rs = new RunSettings
                {
                    Paths = dN[l], FirstPath = sums[l].N, Dt = s.Dt, T = s.T, Seed = s.Seed, Threads = s.Threads,
                    Cancel = s.Cancel, MemoryLimit = s.MemoryLimit,
                };
                var t0 = sw.Elapsed.TotalSeconds;
                var part = LevelPair.Run(models, planModel, rs, plans, l, prog, groups);
                secs[l] += sw.Elapsed.TotalSeconds - t0;
                sums[l].Merge(part);
                work += dN[l] * Cost(l);
                dN[l] = 0;
            }

            Estimate(sums, targets, mean, ml, vl, eps, o, alpha, beta, gamma, Cost);
            // The levels first: while a target's remaining bias is surely above ε/√2 (even from its corrections' means less
            // two standard errors), a new level gets its first samples and nothing else runs, so that the bulk of the
            // samples is allocated once the levels are known, with the variance's share of ε² from the bias.
            bool biasOk = true, sure = false;
            for (int q = 0; q < nt; q++)
            {
                double a = UsedAlpha(alpha[q], o);
                bias[q] = Remaining(ml[q], L, a);
                if (!(bias[q] <= Math.Sqrt(Theta) * eps[q])) biasOk = false;
                for (int l = 0; l <= L; l++)
                    low[l] = Math.Max(0, Math.Abs(Correction(sums[l], targets[q], mean)) - 2 * Math.Sqrt(VarOf(sums[l], targets[q], mean) / sums[l].N));
                if (L >= 1 && Remaining(low, L, a) > Math.Sqrt(Theta) * eps[q]) sure = true;
            }
            bool capped;
            if (sure && L < o.MaxLevel)
            {
                AddLevel();
                for (int q = 0; q < nt; q++) share[q] = 1 - Theta;
                var nn = Optimal(L, targets, vl, eps, share, Cost, o, out capped);
                dN[L] = Math.Min(o.Pilot, Math.Max(2, nn[L]));
                if (capped) { converged = false; note = $"a level would need more than {o.MaxPaths:G3} samples; the accuracy asked for is out of reach"; break; }
                continue;
            }
            // The variance gets what the bias leaves of ε² (at least half, at most MaxVarianceShare): the optimal split
            // for this bias, where a fixed half spends up to twice the samples when the bias is well under ε/√2.
            for (int q = 0; q < nt; q++)
                share[q] = biasOk ? Math.Clamp(1 - bias[q] * bias[q] / (eps[q] * eps[q]), 1 - Theta, MaxVarianceShare) : 1 - Theta;
            // While the bias is not yet known to be small enough, only the last three levels (whose corrections the bias
            // estimate reads) get their samples: the coarse levels, where most samples go, wait for the variance's share.
            int from = !biasOk && L < o.MaxLevel ? Math.Max(1, L - 2) : 0;
            var ns = Optimal(L, targets, vl, eps, share, Cost, o, out capped);
            for (int l = 0; l <= L; l++) dN[l] = l < from ? 0 : Math.Max(0, ns[l] - sums[l].N);
            bool almost = true;
            for (int l = 0; l <= L; l++) if (dN[l] > 0.01 * sums[l].N) almost = false;
            biasShort = !biasOk;
            if (almost && !biasOk && L < o.MaxLevel)
            {
                // the corrections, now measured well, still leave too much bias: a new level, then the last levels' samples again
                AddLevel();
                ns = Optimal(L, targets, vl, eps, share, Cost, o, out capped);
                from = L < o.MaxLevel ? Math.Max(1, L - 2) : 0;
                for (int l = 0; l <= L; l++) dN[l] = l < from ? 0 : Math.Max(0, ns[l] - sums[l].N);
                dN[L] = Math.Max(dN[L], Math.Min(o.Pilot, Math.Max(2, ns[L])));
            }
            if (capped) { converged = false; note = $"a level would need more than {o.MaxPaths:G3} samples; the accuracy asked for is out of reach"; }
            bool more = false;
            for (int l = 0; l <= L; l++) if (dN[l] > 0) more = true;
            if (!more || capped) break;
        }
        if (biasShort)
        {
            converged = false;
            note = (note == "" ? "" : note + "; ") + $"the estimated bias is still above accuracy/sqrt(2) at the finest level allowed (max_levels = {o.MaxLevel}); raise max_levels or take a smaller dt";
        }
        s.Progress?.Invoke(1.0);
        st.L = L; st.Work = work; st.Converged = converged; st.Note = note;
        return st;
    }

    /// <summary>The result of the run whose sums and estimates <paramref name="st"/> holds.</summary>
    static MlmcResult Result(State st, double dt0, MlmcTarget[] targets, MlmcOptions o, double seconds)
    {
        int nt = targets.Length, L = st.L;
        var sums = st.Sums; var mean = st.Mean;
        var res = new MlmcTargetResult[nt];
        for (int q = 0; q < nt; q++)
        {
            double v = 0;
            for (int l = 0; l <= L; l++) v += VarOf(sums[l], targets[q], mean) / sums[l].N;
            double se = Math.Sqrt(Math.Max(v, 0));
            double bias = Remaining(st.Ml[q], L, UsedAlpha(st.Alpha[q], o));
            long bad = 0;
            foreach (var ls in sums) bad = Math.Max(bad, ls.NonFinite);
            res[q] = new MlmcTargetResult
            {
                Value = targets[q].Value(mean), StdErr = se, Bias = bias, Error = Math.Sqrt(se * se + bias * bias),
                Accuracy = st.Eps[q], Alpha = st.Alpha[q], Beta = st.Beta[q], Gamma = st.Gamma[q], NonFinite = bad,
            };
        }
        var levels = new MlmcLevel[L + 1];
        for (int l = 0; l <= L; l++)
        {
            var ls = sums[l];
            levels[l] = new MlmcLevel
            {
                Level = l, Dt = dt0 / (1L << l), Steps = st.N0 << l, Paths = ls.N, Cost = st.Cost(l), Seconds = st.Secs[l],
                Mean = targets.Select(t => Correction(ls, t, mean)).ToArray(),
                Variance = targets.Select(t => VarOf(ls, t, mean)).ToArray(),
                MeanFine = targets.Select(t => t.Kind == MlmcTargetKind.Mean ? ls.MeanP(t.Samples[0]) : double.NaN).ToArray(),
                VarianceFine = targets.Select(t => t.Kind == MlmcTargetKind.Mean ? ls.VarP(t.Samples[0]) : double.NaN).ToArray(),
            };
        }
        return new MlmcResult { Levels = levels, Targets = res, Converged = st.Converged, Note = st.Note, Work = st.Work, Seconds = seconds };
    }

    // ------------------------------------------------------------------ a fixed level plan (sharded runs)

    /// <summary>
    /// A fixed level plan for the accuracy of <paramref name="o"/>: the samples per level (index: level). The pilot is the
    /// adaptive run at the looser accuracy <paramref name="pilotFactor"/>·ε (about 1/pilotFactor² of the work); its
    /// levels' means and variances are then extrapolated as the adaptive loop does (a new level's |E Y| brought down
    /// by 2^−α, its variance by 2^−β) until the estimated remaining bias is under ε/√2, and each level gets the optimal
    /// N_ℓ for ε (at least the pilot's samples, so that its mean and variance are measured). <paramref name="pilot"/>
    /// is the pilot's own result.
    /// </summary>
    public static long[] Plan<TModel>(TModel[] models, int[] planModel, RunSettings s, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions o,
                                      double pilotFactor, out MlmcResult pilot, out string note)
        where TModel : struct, ISdeModel
    {
        if (!(pilotFactor >= 1)) throw new ArgumentException($"the pilot's accuracy factor must be at least 1 (got {pilotFactor})");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var po = new MlmcOptions { Accuracy = o.Accuracy * pilotFactor, Relative = o.Relative, Pilot = o.Pilot, MaxLevel = o.MaxLevel, WeakOrder = o.WeakOrder, MaxPaths = o.MaxPaths };
        var st = Adaptive(models, planModel, s, plans, targets, po);
        pilot = Result(st, s.Dt, targets, po, sw.Elapsed.TotalSeconds);
        int nt = targets.Length, L = st.L;
        var eps = st.Eps.Select(e => e / pilotFactor).ToArray();
        var ml = st.Ml.Select(a => (double[])a.Clone()).ToArray();
        var vl = st.Vl.Select(a => (double[])a.Clone()).ToArray();
        note = "";
        while (true)
        {
            bool biasOk = true;
            for (int q = 0; q < nt; q++)
                if (eps[q] > 0 && !(Remaining(ml[q], L, UsedAlpha(st.Alpha[q], o)) <= Math.Sqrt(Theta) * eps[q])) biasOk = false;
            if (biasOk) break;
            if (L == o.MaxLevel)
            {
                note = $"the extrapolated bias is still above accuracy/sqrt(2) at the finest level allowed (max_levels = {o.MaxLevel}); raise max_levels or take a smaller dt";
                break;
            }
            L++;
            for (int q = 0; q < nt; q++)
            {
                Array.Resize(ref vl[q], L + 1); Array.Resize(ref ml[q], L + 1);
                ml[q][L] = ml[q][L - 1] / Math.Pow(2, UsedAlpha(st.Alpha[q], o));
                vl[q][L] = vl[q][L - 1] / Math.Pow(2, double.IsFinite(st.Beta[q]) ? Math.Max(st.Beta[q], 0.5) : 1.0);
            }
        }
        var ns = Optimal(L, targets, vl, eps, Enumerable.Repeat(1 - Theta, nt).ToArray(), st.Cost, o, out bool capped);
        if (capped) note = $"a level would need more than {o.MaxPaths:G3} samples; the accuracy asked for is out of reach";
        for (int l = 0; l <= L; l++) ns[l] = Math.Max(ns[l], Math.Min(o.MaxPaths, Math.Max(2, o.Pilot)));
        return ns;
    }

    /// <summary>
    /// Samples first[ℓ] .. first[ℓ] + count[ℓ] − 1 of each level ℓ (a fixed plan, or a shard's share of it): the levels'
    /// exact sums and seconds. A range that starts at a multiple of <see cref="LevelPair.ChunkSize"/> sums its samples in
    /// the chunks of the whole plan's run, so the shards' merged sums are the unsplit run's, bit for bit.
    /// </summary>
    public static LevelSums[] RunLevels<TModel>(TModel[] models, int[] planModel, RunSettings s, QueryPlan[] plans, MlmcTarget[] targets, long[] first, long[] count, double[] seconds)
        where TModel : struct, ISdeModel
    {
        var groups = Groups(targets);
        long n0 = Engine.CheckSettings(s);
        if (first.Length != count.Length || seconds.Length != count.Length) throw new ArgumentException("one range per level");
        var cost = CostOf(planModel, n0);
        double planned = 0, done = 0;
        for (int l = 0; l < count.Length; l++) planned += count[l] * cost(l);
        var res = new LevelSums[count.Length];
        for (int l = 0; l < count.Length; l++)
        {
            if (count[l] < 0 || first[l] < 0) throw new ArgumentException($"level {l}: a negative range");
            s.Cancel.ThrowIfCancellationRequested();
            double before = done;
            var prog = s.Progress == null || count[l] == 0 ? null
                : new StepProgress(f => s.Progress(Math.Min(1.0, (before + f * count[l] * cost(l)) / planned)), count[l], (long)cost(l));
            var rs = new RunSettings
            {
                Paths = count[l], FirstPath = first[l], Dt = s.Dt, T = s.T, Seed = s.Seed, Threads = s.Threads,
                Cancel = s.Cancel, MemoryLimit = s.MemoryLimit,
            };
            var t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            res[l] = LevelPair.Run(models, planModel, rs, plans, l, prog, groups);
            seconds[l] = System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds;
            done += count[l] * cost(l);
        }
        s.Progress?.Invoke(1.0);
        return res;
    }

    /// <summary>
    /// The result of a fixed plan from its levels' merged sums (every level's samples 0 .. N_ℓ − 1): the value, the
    /// sampling standard error and the bias estimated from the last corrections as in the adaptive run. Converged
    /// when every target's error estimate √(stderr² + bias²) is within its ε; otherwise a note that says by how much.
    /// </summary>
    public static MlmcResult FromSums(LevelSums[] sums, double[] seconds, int[] planModel, RunSettings s, MlmcTarget[] targets, MlmcOptions o, string planNote)
    {
        long n0 = Engine.CheckSettings(s);
        int nt = targets.Length;
        var st = new State(nt, sums.Length == 0 ? 0 : sums[0].K, CostOf(planModel, n0), n0);
        foreach (var ls in sums) { if (ls.N < 2) throw new ArgumentException("every level of a plan needs at least 2 samples"); st.Sums.Add(ls); }
        st.Secs.AddRange(seconds);
        st.L = sums.Length - 1;
        Estimate(st.Sums, targets, st.Mean, st.Ml, st.Vl, st.Eps, o, st.Alpha, st.Beta, st.Gamma, st.Cost);
        for (int l = 0; l <= st.L; l++) st.Work += sums[l].N * st.Cost(l);
        var r = Result(st, s.Dt, targets, o, seconds.Sum());
        var over = r.Targets.Select((t, q) => (t, q)).Where(x => !(x.t.Error <= x.t.Accuracy)).ToArray();
        string note = planNote;
        if (over.Length > 0)
        {
            var (t, q) = over[0];
            note = (note == "" ? "" : note + "; ")
                + $"the fixed plan's error estimate {t.Error:G3} of target {q} is above its accuracy {t.Accuracy:G3} (stderr {t.StdErr:G3}, bias {t.Bias:G3}): the pilot's variances or corrections were off; make a new plan with more pilot paths";
        }
        return new MlmcResult { Levels = r.Levels, Targets = r.Targets, Converged = note == "", Note = note, Work = r.Work, Seconds = r.Seconds };
    }

    /// <summary>α for the bias estimate: the fitted rate, at least ½ and at most the scheme's weak order (the conservative choice when the fit is noisy).</summary>
    static double UsedAlpha(double fitted, MlmcOptions o) => double.IsFinite(fitted) ? Math.Min(o.WeakOrder, Math.Max(0.5, fitted)) : o.WeakOrder;

    /// <summary>Giles' estimate of the remaining bias: the largest of the last three corrections, each
    /// brought to level L by the weak rate, summed over the geometric tail: max_i |E Y_{L−i}| 2^−iα / (2^α − 1).</summary>
    static double Remaining(double[] ml, int L, double a)
    {
        double r = 0;
        for (int i = 0; i <= Math.Min(2, L - 1); i++) r = Math.Max(r, ml[L - i] * Math.Pow(2, -i * a));
        if (L == 0) r = double.PositiveInfinity; // one level: no correction measured, so no bias estimate
        return r / (Math.Pow(2, a) - 1);
    }

    /// <summary>The linearised correction of a target on one level: g · E[Y_ℓ].</summary>
    static double Correction(LevelSums ls, MlmcTarget t, double[] m)
    {
        double r = 0;
        foreach (var (i, c) in t.Gradient(m)) r += c * ls.MeanY(i);
        return r;
    }

    /// <summary>The variance of the linearised correction on one level: gᵀ Cov(Y_ℓ) g.</summary>
    static double VarOf(LevelSums ls, MlmcTarget t, double[] m)
    {
        var g = t.Gradient(m);
        double r = 0;
        foreach (var (i, ci) in g) foreach (var (j, cj) in g) r += ci * cj * ls.CovY(i, j);
        return Math.Max(r, 0);
    }

    static void Estimate(List<LevelSums> sums, MlmcTarget[] targets, double[] mean, double[][] ml, double[][] vl, double[] eps, MlmcOptions o,
                         double[] alpha, double[] beta, double[] gamma, Func<int, double> cost)
    {
        int L = sums.Count - 1;
        Array.Clear(mean);
        for (int i = 0; i < mean.Length; i++)
        {
            // the sum of the levels' means, exactly rounded once per level then summed in level order
            double m = 0;
            for (int l = 0; l <= L; l++) m += sums[l].MeanY(i);
            mean[i] = m;
        }
        for (int q = 0; q < targets.Length; q++)
        {
            var t = targets[q];
            ml[q] = new double[L + 1]; vl[q] = new double[L + 1];
            for (int l = 0; l <= L; l++) { ml[q][l] = Math.Abs(Correction(sums[l], t, mean)); vl[q][l] = VarOf(sums[l], t, mean); }
            alpha[q] = -Slope(ml[q], 1, L);
            beta[q] = -Slope(vl[q], 1, L);
            var c = new double[L + 1];
            for (int l = 0; l <= L; l++) c[l] = cost(l);
            gamma[q] = Slope(c, 1, L);
            // Giles' guard against a level whose few samples show a tiny mean or variance by chance
            double a = UsedAlpha(alpha[q], o), b = double.IsFinite(beta[q]) ? Math.Max(beta[q], 0.5) : 1.0;
            for (int l = 2; l <= L; l++)
            {
                ml[q][l] = Math.Max(ml[q][l], 0.5 * ml[q][l - 1] / Math.Pow(2, a));
                vl[q][l] = Math.Max(vl[q][l], 0.5 * vl[q][l - 1] / Math.Pow(2, b));
            }
            double value = t.Value(mean);
            eps[q] = o.Relative ? o.Accuracy * Math.Abs(value) : o.Accuracy;
        }
        // a group's targets share the relative ε of its largest |value|
        if (o.Relative)
            foreach (var g in targets.Select((t, q) => (t.Group, q)).Where(x => x.Group >= 0).GroupBy(x => x.Group))
            {
                double m = g.Max(x => eps[x.q]);
                foreach (var x in g) eps[x.q] = m;
            }
    }

    /// <summary>The least-squares slope of log₂ y against ℓ over levels from..to (NaN with fewer than two usable points).</summary>
    static double Slope(double[] y, int from, int to)
    {
        double sx = 0, sy = 0, sxx = 0, sxy = 0; int n = 0;
        for (int l = from; l <= to && l < y.Length; l++)
        {
            if (!(y[l] > 0) || !double.IsFinite(y[l])) continue;
            double ly = Math.Log2(y[l]);
            sx += l; sy += ly; sxx += (double)l * l; sxy += l * ly; n++;
        }
        if (n < 2) return double.NaN;
        return (n * sxy - sx * sy) / (n * sxx - sx * sx);
    }

    /// <summary>N_ℓ = ⌈(2/ε²) √(V_ℓ/C_ℓ) Σ_k √(V_k C_k)⌉, the largest over the targets (each with its own ε).</summary>
    static long[] Optimal(int L, MlmcTarget[] targets, double[][] vl, double[] eps, double[] share, Func<int, double> cost, MlmcOptions o, out bool capped)
    {
        capped = false;
        var ns = new long[L + 1];
        for (int q = 0; q < targets.Length; q++)
        {
            if (!(eps[q] > 0) || !double.IsFinite(eps[q])) continue; // a relative target of a zero value: see the driver's warning
            double sum = 0;
            for (int l = 0; l <= L; l++) sum += Math.Sqrt(vl[q][l] * cost(l));
            for (int l = 0; l <= L; l++)
            {
                double n = Math.Ceiling(Math.Sqrt(vl[q][l] / cost(l)) * sum / (share[q] * eps[q] * eps[q]));
                if (!(n <= o.MaxPaths)) { capped = true; n = o.MaxPaths; }
                ns[l] = Math.Max(ns[l], (long)n);
            }
        }
        return ns;
    }
}

/// <summary>The multilevel run reachable from a <see cref="Type"/> (the compiler's emitted struct).</summary>
public interface IMlmcRunner
{
    MlmcResult Run(object model, RunSettings settings, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions options);
    /// <summary>With finite-difference twins (see <see cref="Mlmc.Run{TModel}(TModel[], int[], RunSettings, QueryPlan[], MlmcTarget[], MlmcOptions)"/>).</summary>
    MlmcResult Run(object model, object[] variants, int[] planModel, RunSettings settings, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions options);
    /// <summary>See <see cref="Mlmc.Plan"/>.</summary>
    long[] Plan(object model, object[] variants, int[] planModel, RunSettings settings, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions options,
                double pilotFactor, out MlmcResult pilot, out string note);
    /// <summary>See <see cref="Mlmc.RunLevels"/>.</summary>
    LevelSums[] RunLevels(object model, object[] variants, int[] planModel, RunSettings settings, QueryPlan[] plans, MlmcTarget[] targets, long[] first, long[] count, double[] seconds);
}

public sealed class MlmcRunner<TModel> : IMlmcRunner where TModel : struct, ISdeModel
{
    public MlmcResult Run(object model, RunSettings settings, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions options)
    {
        var m = (TModel)model;
        return Mlmc.Run(in m, settings, plans, targets, options);
    }

    public MlmcResult Run(object model, object[] variants, int[] planModel, RunSettings settings, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions options)
        => Mlmc.Run(Models(model, variants), planModel, settings, plans, targets, options);

    static TModel[] Models(object model, object[] variants)
    {
        var ms = new TModel[1 + variants.Length];
        ms[0] = (TModel)model;
        for (int i = 0; i < variants.Length; i++) ms[i + 1] = (TModel)variants[i];
        return ms;
    }

    public long[] Plan(object model, object[] variants, int[] planModel, RunSettings settings, QueryPlan[] plans, MlmcTarget[] targets, MlmcOptions options,
                       double pilotFactor, out MlmcResult pilot, out string note)
        => Mlmc.Plan(Models(model, variants), planModel, settings, plans, targets, options, pilotFactor, out pilot, out note);

    public LevelSums[] RunLevels(object model, object[] variants, int[] planModel, RunSettings settings, QueryPlan[] plans, MlmcTarget[] targets, long[] first, long[] count, double[] seconds)
        => Mlmc.RunLevels(Models(model, variants), planModel, settings, plans, targets, first, count, seconds);
}

public static class MlmcRunner
{
    public static IMlmcRunner For(Type modelType) =>
        (IMlmcRunner)Activator.CreateInstance(typeof(MlmcRunner<>).MakeGenericType(modelType))!;
}
