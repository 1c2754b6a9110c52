using System.Runtime.CompilerServices;

namespace Sde.Core;

/// <summary>
/// An exact floating-point accumulator (Shewchuk's non-overlapping expansions, as in Python's
/// <c>math.fsum</c>). The running sum is held exactly as a short list of partials, so the result,
/// rounded once at the end, does not depend on the order of the additions: per-thread sums merged
/// in any order, or shards merged afterwards, give the same bits as one sequential sum.
/// The partials live in a small array that grows only when the expansion gets longer than ever
/// before (rare: typically 2–4 partials), so <see cref="Add(double)"/> does not allocate.
/// Non-finite inputs are summed separately (plain IEEE addition, which is order-independent for
/// infinities and NaN) and dominate the result.
/// </summary>
public sealed class ExactSum
{
    double[] _p;
    int _n;
    double _special; // sum of ±∞/NaN inputs and of overflowed partial sums; 0 when none
    bool _hasSpecial;

    public ExactSum(int capacity = 8) { _p = new double[Math.Max(capacity, 2)]; }

    /// <summary>The current expansion: non-overlapping, increasing in magnitude; its exact sum is the total.</summary>
    public ReadOnlySpan<double> Partials => new(_p, 0, _n);

    /// <summary>Whether a non-finite value (or an overflow) has been added.</summary>
    public bool IsSpecial => _hasSpecial;

    public void Clear() { _n = 0; _special = 0; _hasSpecial = false; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(double x)
    {
        if (x == 0) return;
        if (!double.IsFinite(x)) { AddSpecial(x); return; }
        double[] p = _p;
        int n = _n, i = 0;
        for (int j = 0; j < n; j++)
        {
            double y = p[j];
            if (Math.Abs(x) < Math.Abs(y)) (x, y) = (y, x);
            double hi = x + y;
            double lo = y - (hi - x);
            if (lo != 0) p[i++] = lo;
            x = hi;
        }
        if (!double.IsFinite(x)) { _n = i; AddSpecial(x); return; }
        if (i == p.Length) { Array.Resize(ref _p, p.Length * 2); p = _p; }
        p[i++] = x;
        _n = i;
    }

    void AddSpecial(double x) { _special += x; _hasSpecial = true; }

    /// <summary>Adds another accumulator exactly (its partials are just more addends).</summary>
    public void Add(ExactSum other)
    {
        // Snapshot the count: other may be this.
        int n = other._n;
        double[] p = other._p;
        if (ReferenceEquals(other, this)) p = (double[])p.Clone();
        for (int j = 0; j < n; j++) Add(p[j]);
        if (other._hasSpecial) AddSpecial(other._special);
    }

    /// <summary>The exact sum rounded to the nearest double (ties to even), as <c>math.fsum</c> does.</summary>
    public double Round()
    {
        if (_hasSpecial) return _special;
        int n = _n;
        if (n == 0) return 0.0;
        double[] p = _p;
        double hi = p[--n], lo = 0;
        while (n > 0)
        {
            double x = hi, y = p[--n];
            hi = x + y;
            double yr = hi - x;
            lo = y - yr;
            if (lo != 0) break;
        }
        // Round-half-even correction: if the rest below lo has the same sign, the tie breaks away from hi.
        if (n > 0 && ((lo < 0 && p[n - 1] < 0) || (lo > 0 && p[n - 1] > 0)))
        {
            double y = lo * 2;
            double x = hi + y;
            double yr = x - hi;
            if (y == yr) hi = x;
        }
        return hi;
    }

    /// <summary>Adds a·b exactly (two addends from an FMA error-free product).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void AddProduct(double a, double b)
    {
        double p = a * b;
        Add(p);
        Add(Math.FusedMultiplyAdd(a, b, -p));
    }

    public void CopyTo(ExactSum dst)
    {
        dst.Clear();
        dst.Add(this);
    }

    /// <summary>Serialisable state: the partials, then the special sum flag/value (for sharded runs).</summary>
    public void Write(BinaryWriter w)
    {
        w.Write(_n);
        for (int j = 0; j < _n; j++) w.Write(_p[j]);
        w.Write(_hasSpecial);
        w.Write(_special);
    }

    public static ExactSum Read(BinaryReader r)
    {
        int n = r.ReadInt32();
        // a non-overlapping expansion of doubles has at most one partial per bit of the exponent range; a count
        // beyond it (a hostile or damaged file whose checksum was recomputed) would allocate up to 16 GB
        if (n < 0 || n > 2100) throw new InvalidDataException($"an exact sum of {n} partials (at most 2100)");
        var s = new ExactSum(Math.Max(8, n));
        for (int j = 0; j < n; j++) s._p[j] = r.ReadDouble();
        s._n = n;
        s._hasSpecial = r.ReadBoolean();
        s._special = r.ReadDouble();
        return s;
    }
}
