namespace Sde.Core;

/// <summary>
/// The engine's sums for a set of queries over some paths. Every sum is exact (integers, or
/// <see cref="ExactSum"/> expansions), so merging accumulators of disjoint path ranges — threads,
/// or runs of [0, k) and [k, P) on different machines — gives the same bits as one run over all paths.
/// </summary>
public sealed class Accumulators
{
    internal readonly QueryPlan[] Plans;
    internal readonly QueryLayout[] Layout;
    internal readonly QueryAcc[] Q;
    public long Steps { get; }
    public double Dt { get; }
    /// <summary>Number of paths accumulated.</summary>
    public long Paths { get; internal set; }
    /// <summary>The coupled (dt, dt/2) pairs of the bias estimate or of the extrapolation (null: bias = off).</summary>
    internal PairSums? Pairs;

    internal Accumulators(QueryPlan[] plans, QueryLayout[] layout, long steps, double dt)
    {
        Plans = plans; Layout = layout; Steps = steps; Dt = dt;
        Q = new QueryAcc[plans.Length];
        for (int i = 0; i < plans.Length; i++) Q[i] = new QueryAcc(plans[i]);
    }

    /// <summary>Empty accumulators for <paramref name="plans"/> under the run settings <paramref name="s"/> (to merge shards into).</summary>
    public static Accumulators Create(QueryPlan[] plans, RunSettings s)
    {
        long n = Engine.CheckSettings(s);
        var a = new Accumulators(plans, QueryLayout.Build(plans, n, s.Dt, int.MaxValue), n, s.Dt);
        if (s.Bias != BiasMode.Off) a.Pairs = new PairSums(s.Bias, s.WeakOrder, plans, a.Layout);
        return a;
    }

    /// <summary>Adds <paramref name="other"/> (paths disjoint from ours, same queries and step) exactly.</summary>
    public void Merge(Accumulators other)
    {
        if (other.Q.Length != Q.Length || other.Steps != Steps || other.Dt != Dt)
            throw new ArgumentException("accumulators of different runs (queries, dt or steps differ) cannot be merged");
        for (int i = 0; i < Q.Length; i++)
        {
            if (Layout[i].Kind != other.Layout[i].Kind || Layout[i].Bins != other.Layout[i].Bins
                || Layout[i].From != other.Layout[i].From || Layout[i].To != other.Layout[i].To)
                throw new ArgumentException($"query {i} differs between the accumulators being merged");
            Q[i].Merge(other.Q[i]);
        }
        Paths += other.Paths;
        if (other.Pairs != null)
        {
            // empty accumulators (Create) take the planned number of pairs of the first run merged in
            Pairs ??= new PairSums(other.Pairs.Mode, other.Pairs.Order, Plans, Layout) { Planned = other.Pairs.Planned };
            if (Pairs.Pairs == 0 && Pairs.Planned == 0) Pairs.Planned = other.Pairs.Planned;
            Pairs.Merge(other.Pairs);
        }
        else if (Pairs != null && Pairs.Pairs > 0) throw new ArgumentException("accumulators with and without coupled pairs cannot be merged");
    }

    /// <summary>Rounds the exact sums into estimates with standard errors (once, at the end).</summary>
    public Estimate[] ToEstimates()
    {
        var r = new Estimate[Q.Length];
        for (int i = 0; i < Q.Length; i++)
        {
            r[i] = Q[i].ToEstimate(Plans[i], Layout[i], Paths);
            if (Pairs != null) r[i] = Pairs.Apply(r[i], i, Layout[i]);
        }
        return r;
    }

    /// <summary>"BEDS": the format tag; version 2 (was "AEDS") adds each query's non-finite count, so that an older file is refused, not misread.</summary>
    const int FormatTag = 0x53444542;
    /// <summary>"CEDS": as "BEDS", followed by the coupled pairs' sums (bias = estimate, extrapolate = richardson).</summary>
    const int FormatTagPairs = 0x53444543;

    /// <summary>Writes the exact state (for sharded runs merged later).</summary>
    public void Write(BinaryWriter w)
    {
        w.Write(Pairs == null ? FormatTag : FormatTagPairs);
        w.Write(Q.Length); w.Write(Steps); w.Write(Dt); w.Write(Paths);
        foreach (var q in Q) q.Write(w);
        Pairs?.Write(w);
    }

    /// <summary>Reads what <see cref="Write"/> wrote, for the same <paramref name="plans"/> and settings.</summary>
    public static Accumulators Read(BinaryReader r, QueryPlan[] plans, RunSettings s)
    {
        if (r.ReadInt32() != (s.Bias == BiasMode.Off ? FormatTag : FormatTagPairs)) throw new InvalidDataException("not an accumulator file of this version (or of another bias setting)");
        var a = Create(plans, s);
        if (r.ReadInt32() != plans.Length || r.ReadInt64() != a.Steps || r.ReadDouble() != a.Dt)
            throw new InvalidDataException("the accumulators were written for other queries or settings");
        a.Paths = r.ReadInt64();
        foreach (var q in a.Q) q.Read(r);
        a.Pairs?.Read(r);
        return a;
    }
}

/// <summary>Where a query samples: steps From..To (inclusive); at T both are N.</summary>
internal readonly struct QueryLayout
{
    public readonly EstimateKind Kind;
    public readonly int Observable;
    public readonly long From, To;
    public readonly int Bins;
    public readonly double Lo, Hi, Scale; // Scale = Bins / (Hi − Lo)

    public QueryLayout(EstimateKind kind, int obs, long from, long to, int bins, double lo, double hi)
    {
        Kind = kind; Observable = obs; From = from; To = to; Bins = bins; Lo = lo; Hi = hi;
        Scale = bins > 0 ? bins / (hi - lo) : 0;
    }

    public long Window => To - From + 1;

    public static QueryLayout[] Build(QueryPlan[] plans, long steps, double dt, int observables)
    {
        var r = new QueryLayout[plans.Length];
        for (int i = 0; i < plans.Length; i++)
        {
            var q = plans[i] ?? throw new ArgumentNullException(nameof(plans), $"query {i} is null");
            if (q.Observable < 0 || q.Observable >= observables)
                throw new ArgumentException($"query {i}: observable {q.Observable} out of range (the model has {observables})");
            long from = steps, to = steps;
            if (q.TimeAverage)
            {
                // Steps n with T0 ≤ n·dt ≤ T1, with a little slack so that window ends on the grid count.
                double a = Math.Ceiling(q.T0 / dt - 1e-9), b = Math.Floor(q.T1 / dt + 1e-9);
                if (double.IsNaN(a) || double.IsNaN(b)) throw new ArgumentException($"query {i}: invalid window [{q.T0}, {q.T1}]");
                from = (long)Math.Max(0, Math.Min(a, steps + 1.0));
                to = (long)Math.Min(steps, Math.Max(b, -1.0));
                if (from > to)
                    throw new ArgumentException($"query {i}: the window [{q.T0}, {q.T1}] contains no step of the run (dt = {dt}, T = {steps * dt})");
            }
            if (q.Kind == EstimateKind.Density)
            {
                if (q.Bins <= 0) throw new ArgumentException($"query {i}: a density needs at least one bin");
                if (!(q.Hi > q.Lo) || !double.IsFinite(q.Hi - q.Lo)) throw new ArgumentException($"query {i}: invalid density range [{q.Lo}, {q.Hi})");
            }
            r[i] = new QueryLayout(q.Kind, q.Observable, from, to, q.Kind == EstimateKind.Density ? q.Bins : 0, q.Lo, q.Hi);
        }
        return r;
    }
}

/// <summary>One query's exact sums. Mean: Σv and Σv² of the per-path samples. Density: per bin Σc and Σc² of the per-path counts.</summary>
internal sealed class QueryAcc
{
    public readonly ExactSum S1, S2;
    public readonly long[] C;
    public readonly Int128[] C2;
    public long Below, Above;
    public long NonFinite;   // mean: paths with a non-finite sample; density: NaN samples (in no bin)

    public QueryAcc(QueryPlan q)
    {
        if (q.Kind == EstimateKind.Mean) { S1 = new ExactSum(); S2 = new ExactSum(); C = Array.Empty<long>(); C2 = Array.Empty<Int128>(); }
        else { S1 = new ExactSum(2); S2 = new ExactSum(2); C = new long[q.Bins]; C2 = new Int128[q.Bins]; }
    }

    public void Merge(QueryAcc o)
    {
        S1.Add(o.S1); S2.Add(o.S2);
        for (int b = 0; b < C.Length; b++) { C[b] += o.C[b]; C2[b] += o.C2[b]; }
        Below += o.Below; Above += o.Above; NonFinite += o.NonFinite;
    }

    public Estimate ToEstimate(QueryPlan q, in QueryLayout l, long n)
    {
        if (l.Kind == EstimateKind.Mean)
        {
            double sum = S1.Round();
            double mean = n > 0 ? sum / n : double.NaN;
            double se = double.NaN;
            if (n > 1 && !S1.IsSpecial && !S2.IsSpecial)
            {
                // Σ(v − m)² = Σv² − 2mΣv + n m², evaluated exactly for the rounded mean m; it exceeds
                // the sum of squares about the exact mean by only n(m − mean)², far below one ulp of it.
                var ss = new ExactSum(16);
                ss.Add(S2);
                foreach (double p in S1.Partials) ss.AddProduct(-2 * mean, p);
                double m2 = mean * mean, m2e = Math.FusedMultiplyAdd(mean, mean, -m2);
                ss.AddProduct(n, m2); ss.AddProduct(n, m2e);
                double var = Math.Max(ss.Round(), 0) / (n - 1);
                se = Math.Sqrt(var / n);
            }
            else if (n > 1) se = double.NaN;
            return new Estimate { Value = mean, StdErr = se, Count = n, NonFinite = NonFinite };
        }
        else
        {
            int bins = l.Bins;
            double width = (l.Hi - l.Lo) / bins;
            long w = l.Window;
            var grid = new double[bins]; var vals = new double[bins]; var ses = new double[bins];
            for (int b = 0; b < bins; b++)
            {
                grid[b] = l.Lo + (b + 0.5) * width;
                if (n == 0) { vals[b] = double.NaN; ses[b] = double.NaN; continue; }
                double p = (double)C[b] / ((double)n * w);
                vals[b] = p / width;
                if (!q.TimeAverage) ses[b] = Math.Sqrt(p * (1 - p) / n) / width;
                else if (n > 1)
                {
                    // Sample variance of the per-path fractions c/w, exactly in integers: (nΣc² − (Σc)²) / (n(n−1)w²).
                    Int128 num = (Int128)n * C2[b] - (Int128)C[b] * C[b];
                    double var = (double)num / ((double)n * (n - 1) * ((double)w * w));
                    ses[b] = Math.Sqrt(Math.Max(var, 0) / n) / width;
                }
                else ses[b] = double.NaN;
            }
            return new Estimate { Grid = grid, Values = vals, StdErrs = ses, Below = Below, Above = Above, Count = n,
                                  Value = 0, StdErr = 0, NonFinite = NonFinite };
        }
    }

    public void Write(BinaryWriter w)
    {
        S1.Write(w); S2.Write(w);
        w.Write(C.Length);
        for (int b = 0; b < C.Length; b++) { w.Write(C[b]); w.Write((ulong)(C2[b] >> 64)); w.Write((ulong)C2[b]); }
        w.Write(Below); w.Write(Above); w.Write(NonFinite);
    }

    public void Read(BinaryReader r)
    {
        S1.Clear(); S1.Add(ExactSum.Read(r));
        S2.Clear(); S2.Add(ExactSum.Read(r));
        if (r.ReadInt32() != C.Length) throw new InvalidDataException("bin count differs");
        for (int b = 0; b < C.Length; b++)
        {
            C[b] = r.ReadInt64();
            ulong hi = r.ReadUInt64(), lo = r.ReadUInt64();
            C2[b] = (Int128)(((UInt128)hi << 64) | lo);
        }
        Below = r.ReadInt64(); Above = r.ReadInt64(); NonFinite = r.ReadInt64();
    }
}
