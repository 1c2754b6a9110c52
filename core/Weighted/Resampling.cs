using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>How a weighted population is resampled (the `resample = ...` setting).</summary>
public enum ResampleScheme
{
    /// <summary>Never: plain importance weights to the end.</summary>
    None,
    /// <summary>One uniform u; the points (u + i)/N on the cumulative weights.</summary>
    Systematic,
    /// <summary>One uniform per stratum: (i + u_i)/N.</summary>
    Stratified,
    /// <summary>N independent draws from the weights (sorted uniforms from exponential spacings).</summary>
    Multinomial,
    /// <summary>⌊N W_i⌋ copies of each path, the remaining R draws multinomial on the residuals.</summary>
    Residual,
    /// <summary>Every step, each path dies or duplicates with probability 1 − exp(−|β_i| Δt), β_i the
    /// centred rate (birth–death Langevin, Lu, Lu and Nolen 2019): the jump form of the weight.</summary>
    BirthDeath,
}

/// <summary>
/// The resampling schemes as pure functions of normalised weights and counter-based draws: the draws
/// of step <c>step</c> come from Philox keyed by the seed at (index, step) in streams of their own, so
/// the ancestors are the same whatever the thread count. Each returns ancestor indices
/// <c>anc[i]</c> (the path that slot i copies); every scheme is O(N).
/// </summary>
public static class Resampling
{
    /// <summary>Philox stream tags of the resampling draws (apart from the engines' 0, 1, 2).</summary>
    public const uint TagResample = 12, TagBirthDeath = 13;

    /// <summary>Uniform number <paramref name="lane"/> (0 or 1) of index i at a step, in (0, 1).</summary>
    public static double Uniform(ulong seed, ulong i, ulong step, uint tag, int lane)
    {
        var b = Philox.Draw(seed, i, step, tag, 0);
        return lane == 0 ? Normals.ToUniform(b.X | ((ulong)b.Y << 32)) : Normals.ToUniform(b.Z | ((ulong)b.W << 32));
    }

    /// <summary>Fills <paramref name="anc"/> (length N) for <paramref name="scheme"/> from normalised
    /// weights <paramref name="w"/> (Σ w = 1). <paramref name="scratch"/> needs 2N + 2 doubles.
    /// <paramref name="stream"/> offsets the draws' indices, so independent replicas draw apart.</summary>
    public static void Ancestors(ResampleScheme scheme, ReadOnlySpan<double> w, ulong seed, ulong step, Span<int> anc, Span<double> scratch, ulong stream = 0)
    {
        int n = w.Length;
        if (anc.Length != n) throw new ArgumentException("ancestors and weights differ in length");
        if (n == 0) return;
        switch (scheme)
        {
            case ResampleScheme.Systematic:
                {
                    double u = Uniform(seed, stream, step, TagResample, 0);
                    Walk(w, anc, 0, n, new SystematicPoints(u, n));
                    break;
                }
            case ResampleScheme.Stratified:
                Walk(w, anc, 0, n, new StratifiedPoints(seed, stream, step, n));
                break;
            case ResampleScheme.Multinomial:
                SortedUniforms(seed, step, n, scratch, stream);
                WalkSorted(w, anc, 0, n, scratch);
                break;
            case ResampleScheme.Residual:
                {
                    // deterministic part: ⌊N w_i⌋ copies; residual weights N w_i − ⌊N w_i⌋ for the rest
                    int k = 0;
                    double rsum = 0;
                    for (int i = 0; i < n; i++)
                    {
                        double nw = n * w[i];
                        int c = (int)Math.Floor(nw);
                        if (k + c > n) c = n - k; // rounding when Σw is a hair above 1
                        for (int j = 0; j < c; j++) anc[k++] = i;
                        rsum += nw - Math.Floor(nw);
                    }
                    int r = n - k;
                    if (r == 0) break;
                    if (!(rsum > 0)) { for (int j = k; j < n; j++) anc[j] = anc[j - k]; break; }
                    // the residual weights, normalised, in scratch[0..n); r sorted uniforms after them
                    var resid = scratch.Slice(0, n);
                    for (int i = 0; i < n; i++) { double nw = n * w[i]; resid[i] = (nw - Math.Floor(nw)) / rsum; }
                    var us = scratch.Slice(n);
                    SortedUniforms(seed, step, r, us, stream);
                    WalkSorted(resid, anc, k, r, us);
                    break;
                }
            default:
                throw new ArgumentException($"{scheme} is not a resampling of weights");
        }
    }

    /// <summary>The increasing points of a walk on the cumulative weights (structs: a resampling allocates nothing).</summary>
    interface IPoints { double At(int j); }

    /// <summary>(j + u)/N: one uniform for every slot.</summary>
    readonly struct SystematicPoints(double u, int n) : IPoints
    {
        public double At(int j) => (j + u) / n;
    }

    /// <summary>(j + u_j)/N: a uniform per slot.</summary>
    readonly struct StratifiedPoints(ulong seed, ulong stream, ulong step, int n) : IPoints
    {
        public double At(int j) => (j + Uniform(seed, stream + (ulong)j, step, TagResample, 0)) / n;
    }

    /// <summary>Slots start..start+count−1 take the index whose cumulative-weight interval holds point(j).</summary>
    static void Walk<TPoints>(ReadOnlySpan<double> w, Span<int> anc, int start, int count, TPoints point) where TPoints : struct, IPoints
    {
        int n = w.Length, i = 0;
        double cum = w[0];
        for (int j = 0; j < count; j++)
        {
            double u = point.At(j);
            while (u > cum && i < n - 1) cum += w[++i];
            anc[start + j] = i;
        }
    }

    static void WalkSorted(ReadOnlySpan<double> w, Span<int> anc, int start, int count, ReadOnlySpan<double> u)
    {
        int n = w.Length, i = 0;
        double cum = w[0];
        for (int j = 0; j < count; j++)
        {
            while (u[j] > cum && i < n - 1) cum += w[++i];
            anc[start + j] = i;
        }
    }

    /// <summary>m sorted uniforms in out[0..m): partial sums of m + 1 exponentials over their total
    /// (the order statistics of m uniforms, in O(m) without sorting).</summary>
    static void SortedUniforms(ulong seed, ulong step, int m, Span<double> o, ulong stream)
    {
        double s = 0;
        for (int j = 0; j <= m; j++)
        {
            s += -Math.Log(Uniform(seed, stream + (ulong)j, step, TagResample, 1));
            if (j < m) o[j] = s;
        }
        for (int j = 0; j < m; j++) o[j] /= s;
    }

    /// <summary>
    /// Birth–death on a population of equal weights: <paramref name="rate"/>[i] = β_i Δt, the centred
    /// log-weight increments of the step. In path order, path i with β_i &gt; 0 duplicates onto a slot
    /// chosen uniformly (other than i) with probability 1 − exp(−β_i Δt); with β_i &lt; 0 it dies with
    /// probability 1 − exp(β_i Δt) and its slot copies a path chosen uniformly. Decisions read the
    /// population before the step's jumps (a later jump into the same slot wins); N stays fixed.
    /// </summary>
    public static void BirthDeath(ReadOnlySpan<double> rate, ulong seed, ulong step, Span<int> anc)
    {
        int n = rate.Length;
        for (int i = 0; i < n; i++) anc[i] = i;
        if (n < 2) return;
        for (int i = 0; i < n; i++)
        {
            int e = BirthDeathEvent(rate[i], seed, i, step, n, out int j);
            if (e > 0) anc[j] = i; else if (e < 0) anc[i] = j;
        }
    }

    /// <summary><see cref="BirthDeath"/> from events drawn beforehand (in parallel, by
    /// <see cref="BirthDeathEvent"/>): applied in path order, so the result is the same.</summary>
    public static void ApplyBirthDeath(ReadOnlySpan<sbyte> events, ReadOnlySpan<int> partners, Span<int> anc)
    {
        int n = events.Length;
        for (int i = 0; i < n; i++) anc[i] = i;
        for (int i = 0; i < n; i++)
        {
            int e = events[i];
            if (e > 0) anc[partners[i]] = i; else if (e < 0) anc[i] = partners[i];
        }
    }

    /// <summary>Path i's jump at a step: +1 (duplicate onto slot <paramref name="partner"/>), −1 (die, its
    /// slot copying <paramref name="partner"/>) or 0, with probability 1 − exp(−|β Δt|); the partner is
    /// uniform over the other n − 1 paths.</summary>
    public static int BirthDeathEvent(double rate, ulong seed, int i, ulong step, int n, out int partner) =>
        BirthDeathEvent(rate, seed, i, i, step, n, out partner);

    /// <summary><see cref="BirthDeathEvent(double, ulong, int, ulong, int, out int)"/> for path <paramref name="i"/>
    /// (its draws) at position <paramref name="local"/> of a replica of <paramref name="n"/> paths: the partner is
    /// a position in the replica.</summary>
    public static int BirthDeathEvent(double rate, ulong seed, int i, int local, ulong step, int n, out int partner)
    {
        partner = local;
        if (rate == 0 || double.IsNaN(rate) || n < 2) return 0;
        // one Philox block: the event's uniform from its first 64 bits, the partner's from the last 64
        var b = Philox.Draw(seed, (ulong)i, step, TagBirthDeath, 0);
        return EventFrom(rate, b.X | ((ulong)b.Y << 32), b.Z | ((ulong)b.W << 32), local, n, out partner);
    }

    /// <summary>The event of a nonzero rate from its block's two halves (<see cref="BirthDeathEvent(double, ulong, int, int, ulong, int, out int)"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int EventFrom(double rate, ulong first, ulong second, int local, int n, out int partner)
    {
        partner = local;
        double u = Normals.ToUniform(first), a = Math.Abs(rate);
        // 1 − exp(−a) ≤ a, and its computed value exceeds it by less than 1e-15 (rounding of numbers ≤ 1):
        // a uniform above a + 1e-15 is no event whatever the exponential, which is then not computed
        if (u >= a + 1e-15 || !(u < 1 - Math.Exp(-a))) return 0;
        int j = (int)Math.Min(n - 2, Math.Floor(Normals.ToUniform(second) * (n - 1)));
        if (j >= local) j++; // uniform over the others
        partner = j;
        return rate > 0 ? 1 : -1;
    }

    /// <summary>
    /// The events of paths i0 .. i0 + 3 (draw indices, at positions local0 .. local0 + 3 of a replica of
    /// <paramref name="n"/> paths) at a step: <see cref="BirthDeathEvent(double, ulong, int, int, ulong, int, out int)"/>
    /// of each, with the four Philox blocks in the lanes of one vector (integer arithmetic: the same bits).
    /// </summary>
    public static unsafe void BirthDeathEvents4(double* rate, ulong seed, int i0, int local0, ulong step, int n, sbyte* events, int* partners)
    {
        if (!Avx2.IsSupported || n < 2)
        {
            for (int k = 0; k < 4; k++) { events[k] = (sbyte)BirthDeathEvent(rate[k], seed, i0 + k, local0 + k, step, n, out int j); partners[k] = j; }
            return;
        }
        ulong p0 = (ulong)i0, p1 = p0 + 1, p2 = p0 + 2, p3 = p0 + 3;
        uint hi = ((uint)(step >> 32) << 16) ^ (TagBirthDeath << 28);
        var x0 = Vector256<ulong>.Zero;
        var x1 = Vector256.Create((ulong)(uint)step);
        var x2 = Vector256.Create((ulong)(uint)p0, (uint)p1, (uint)p2, (uint)p3);
        var x3 = Vector256.Create((ulong)((uint)(p0 >> 32) ^ hi), (uint)(p1 >> 32) ^ hi, (uint)(p2 >> 32) ^ hi, (uint)(p3 >> 32) ^ hi);
        Normals.PhiloxV(ref x0, ref x1, ref x2, ref x3, (uint)seed, (uint)(seed >> 32));
        var mask = Vector256.Create(0xFFFFFFFFUL);
        var first = (x0 & mask) | (x1 << 32);
        var second = (x2 & mask) | (x3 << 32);
        for (int k = 0; k < 4; k++)
        {
            double r = rate[k];
            int e = 0, j = local0 + k;
            if (!(r == 0 || double.IsNaN(r))) e = EventFrom(r, first.GetElement(k), second.GetElement(k), local0 + k, n, out j);
            events[k] = (sbyte)e;
            partners[k] = j;
        }
    }

    /// <summary>Offspring counts of each index (tests and diagnostics).</summary>
    public static int[] Counts(ReadOnlySpan<int> anc, int n)
    {
        var c = new int[n];
        foreach (int a in anc) c[a]++;
        return c;
    }
}
