using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>
/// The language's exp, log, sin and cos, written once for one path (the scalar form, which the GPU kernels compile
/// too) and for four paths in the lanes of a <see cref="Vector256{T}"/>, with the same operations in the
/// same order, so every backend and every lane gives the same bits. Only operations that IEEE 754
/// rounds exactly once (add, subtract, multiply, divide), exact bit manipulations, floor and selects;
/// no fused multiply-add (ILGPU cannot emit one, and .NET never contracts a·b + c), so nothing is left
/// to a library's or a device's choice of last bit. The runtime's <see cref="Math.Exp"/> and
/// <see cref="Math.Log"/> (the C library's) differ between machines and have no lane form with their
/// bits, which made a lane call the scalar function once per lane.
///
/// exp is fdlibm's e_exp.c: x = k ln 2 + r with |r| ≤ ln 2 / 2 (k ln 2 in two parts, the first exact),
/// e^r = 1 + r + r·c/(2 − c) with c = r − r²·P(r²), P its minimax polynomial of degree 5, then 2^k in
/// two exact factors (so a subnormal result is rounded once, as fdlibm's). log is fdlibm's e_log.c
/// (as the normal generator's <see cref="Normals.Log"/>) with its special cases. Both are within one
/// unit in the last place of the exact value (a test measures them against <see cref="Math"/>).
/// </summary>
public static class Elementary
{
    const double OverflowAbove = 7.09782712893383973096e+02;   // fdlibm's o_threshold: e^x overflows above
    const double UnderflowBelow = -7.45133219101941108420e+02; // fdlibm's u_threshold: e^x rounds to 0 below
    const double InvLn2 = 1.44269504088896338700e+00;
    const double Ln2Hi = 6.93147180369123816490e-01;           // 0x3fe62e42fee00000: k·Ln2Hi exact for |k| < 2^20
    const double Ln2Lo = 1.90821492927058770002e-10;
    const double P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03, P3 = 6.61375632143793436117e-05,
                 P4 = -1.65339022054652515390e-06, P5 = 4.13813679705723846039e-08;
    const double Magic = 4503599627370496.0 + 1023.0;          // 2^52 + 1023: k + Magic has k + 1023 in its low bits
    const double TwoTo54 = 18014398509481984.0;
    const double SmallestNormal = 2.2250738585072014e-308;

    /// <summary>e^x (see the class): NaN for NaN, +∞ above 709.78, 0 below −745.13.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Exp(double x)
    {
        if (double.IsNaN(x)) return x;
        if (x > OverflowAbove) return double.PositiveInfinity;
        if (x < UnderflowBelow) return 0.0;
        double k = Math.Floor(x * InvLn2 + 0.5);
        double hi = x - k * Ln2Hi;
        double lo = k * Ln2Lo;
        double r = hi - lo;
        double t = r * r;
        double c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
        double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
        double k1 = Math.Floor(k * 0.5);
        return y * Pow2(k1) * Pow2(k - k1);
    }

    /// <summary>2^k for an integral k in [−1022, 1023], from its exponent bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double Pow2(double k) => BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits(k + Magic) << 52);

    /// <summary><see cref="Exp(double)"/> on four lanes: lane by lane the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Exp(Vector256<double> x)
    {
        var nan = ~Vector256.Equals(x, x);
        var over = Vector256.GreaterThan(x, Vector256.Create(OverflowAbove));
        var under = Vector256.LessThan(x, Vector256.Create(UnderflowBelow));
        // the lanes the selects below replace compute on 0 (any value in range would do)
        var xr = Vector256.ConditionalSelect(nan | over | under, Vector256<double>.Zero, x);
        var k = Vector256.Floor(xr * Vector256.Create(InvLn2) + Vector256.Create(0.5));
        var hi = xr - k * Vector256.Create(Ln2Hi);
        var lo = k * Vector256.Create(Ln2Lo);
        var r = hi - lo;
        var t = r * r;
        var c = r - t * (Vector256.Create(P1) + t * (Vector256.Create(P2) + t * (Vector256.Create(P3) + t * (Vector256.Create(P4) + t * Vector256.Create(P5)))));
        var y = Vector256<double>.One - ((lo - (r * c) / (Vector256.Create(2.0) - c)) - hi);
        var k1 = Vector256.Floor(k * Vector256.Create(0.5));
        y = y * Pow2(k1) * Pow2(k - k1);
        y = Vector256.ConditionalSelect(over, Vector256.Create(double.PositiveInfinity), y);
        y = Vector256.ConditionalSelect(under, Vector256<double>.Zero, y);
        return Vector256.ConditionalSelect(nan, x, y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> Pow2(Vector256<double> k) => ((k + Vector256.Create(Magic)).AsUInt64() << 52).AsDouble();

    /// <summary>log x (see the class): NaN below 0 and for NaN, −∞ at ±0, +∞ at +∞; subnormal x scaled by 2^54 first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Log(double x)
    {
        if (double.IsNaN(x)) return x;
        if (x < 0) return double.NaN;
        if (x == 0) return double.NegativeInfinity;
        if (x == double.PositiveInfinity) return x;
        double k0 = 0;
        if (x < SmallestNormal) { x *= TwoTo54; k0 = -54; }
        return Normals.LogScaled(x, k0);
    }

    /// <summary><see cref="Log(double)"/> on four lanes: lane by lane the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Log(Vector256<double> x)
    {
        var nan = ~Vector256.Equals(x, x);
        var neg = Vector256.LessThan(x, Vector256<double>.Zero);
        var zero = Vector256.Equals(x, Vector256<double>.Zero);
        var inf = Vector256.Equals(x, Vector256.Create(double.PositiveInfinity));
        var sub = Vector256.LessThan(x, Vector256.Create(SmallestNormal)) & ~zero & ~neg;
        var xr = Vector256.ConditionalSelect(nan | neg | zero | inf, Vector256<double>.One, x);
        xr = Vector256.ConditionalSelect(sub, xr * Vector256.Create(TwoTo54), xr);
        var k0 = Vector256.ConditionalSelect(sub, Vector256.Create(-54.0), Vector256<double>.Zero);
        var y = Normals.LogScaled(xr, k0);
        y = Vector256.ConditionalSelect(inf, x, y);
        y = Vector256.ConditionalSelect(zero, Vector256.Create(double.NegativeInfinity), y);
        y = Vector256.ConditionalSelect(neg, Vector256.Create(double.NaN), y);
        return Vector256.ConditionalSelect(nan, x, y);
    }

    // sin and cos: fdlibm's kernels on [−π/4, π/4] with a tail y, after Cody–Waite's reduction x = n π/2 + (y0 + y1) in
    // three rounds (fdlibm's "medium" case, which keeps about 151 bits of n π/2: enough for every |x| below
    // 2^20 π/2, all three rounds taken always, so that one path and four lanes run the same operations).
    // Larger |x| goes to the runtime's Math.Sin/Math.Cos (Payne–Hanek is not written here).
    const double ToInt = 6755399441055744.0;                 // 1.5·2^52: x + ToInt − ToInt rounds x to an integer
    const double InvPio2 = 6.36619772367581382433e-01;
    const double Pio2_1 = 1.57079632673412561417e+00;
    const double Pio2_2 = 6.07710050630396597660e-11, Pio2_2t = 2.02226624879595063154e-21;
    const double Pio2_3 = 2.02226624871116645580e-21, Pio2_3t = 8.47842766036889956997e-32;
    const double ReducedBelow = 1647099.3291652855;          // 2^20 π/2: the reduction's range
    const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03, S3 = -1.98412698298579493134e-04,
                 S4 = 2.75573137070700676789e-06, S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
    const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03, C3 = 2.48015872894767294178e-05,
                 C4 = -2.75573143513906633035e-07, C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;

    /// <summary>sin x, within one ulp (see above); |x| ≥ 2^20 π/2, ±∞ and NaN: <see cref="Math.Sin"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Sin(double x) => Math.Abs(x) < ReducedBelow ? Quadrants(x, 0) : Math.Sin(x);

    /// <summary>cos x, within one ulp (see above); |x| ≥ 2^20 π/2, ±∞ and NaN: <see cref="Math.Cos"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Cos(double x) => Math.Abs(x) < ReducedBelow ? Quadrants(x, 1) : Math.Cos(x);

    /// <summary>sin(x + shift·π/2) from x's reduction: quadrant m = n + shift takes the cosine kernel where odd and is
    /// negated where m &amp; 2 (cos x = sin(x + π/2)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double Quadrants(double x, long shift)
    {
        Reduce(x, out double y0, out double y1, out long n);
        long m = n + shift;
        double v = (m & 1) != 0 ? KernelCos(y0, y1) : KernelSin(y0, y1);
        return (m & 2) != 0 ? -v : v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Reduce(double x, out double y0, out double y1, out long n)
    {
        double fn = x * InvPio2 + ToInt - ToInt;
        n = (long)fn;
        double r = x - fn * Pio2_1;
        double t = r;
        double w = fn * Pio2_2;
        r = t - w;
        w = fn * Pio2_2t - ((t - r) - w);
        t = r;
        w = fn * Pio2_3;
        r = t - w;
        w = fn * Pio2_3t - ((t - r) - w);
        y0 = r - w;
        y1 = (r - y0) - w;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double KernelSin(double x, double y)
    {
        double z = x * x;
        double v = z * x;
        double r = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
        return x - ((z * (0.5 * y - v * r) - y) - v * S1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double KernelCos(double x, double y)
    {
        double z = x * x;
        double w = z * z;
        double r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
        double hz = 0.5 * z;
        w = 1.0 - hz;
        return w + (((1.0 - w) - hz) + (z * r - x * y));
    }

    /// <summary><see cref="Sin(double)"/> on four lanes: lane by lane the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Sin(Vector256<double> x) => SinCos(x, false);

    /// <summary><see cref="Cos(double)"/> on four lanes: lane by lane the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Cos(Vector256<double> x) => SinCos(x, true);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> SinCos(Vector256<double> x, bool cosine)
    {
        var inRange = Vector256.LessThan(Vector256.Abs(x), Vector256.Create(ReducedBelow));
        var xr = Vector256.ConditionalSelect(inRange, x, Vector256<double>.Zero);
        var fn = xr * Vector256.Create(InvPio2) + Vector256.Create(ToInt) - Vector256.Create(ToInt);
        // fn's low bits as an integer: fn + 1.5·2^52 has fn mod 2^51 in its low mantissa bits
        var q = (fn + Vector256.Create(ToInt)).AsUInt64();
        var r = xr - fn * Vector256.Create(Pio2_1);
        var t = r;
        var w = fn * Vector256.Create(Pio2_2);
        r = t - w;
        w = fn * Vector256.Create(Pio2_2t) - ((t - r) - w);
        t = r;
        w = fn * Vector256.Create(Pio2_3);
        r = t - w;
        w = fn * Vector256.Create(Pio2_3t) - ((t - r) - w);
        var y0 = r - w;
        var y1 = (r - y0) - w;
        // the kernels
        var z = y0 * y0;
        var v = z * y0;
        var rs = Vector256.Create(S2) + z * (Vector256.Create(S3) + z * (Vector256.Create(S4) + z * (Vector256.Create(S5) + z * Vector256.Create(S6))));
        var sn = y0 - ((z * (Vector256.Create(0.5) * y1 - v * rs) - y1) - v * Vector256.Create(S1));
        var ww = z * z;
        var rc = z * (Vector256.Create(C1) + z * (Vector256.Create(C2) + z * Vector256.Create(C3)))
                 + ww * ww * (Vector256.Create(C4) + z * (Vector256.Create(C5) + z * Vector256.Create(C6)));
        var hz = Vector256.Create(0.5) * z;
        var w1 = Vector256<double>.One - hz;
        var cs = w1 + (((Vector256<double>.One - w1) - hz) + (z * rc - y0 * y1));
        // quadrant m = n (+ 1 for the cosine): the cosine kernel where m is odd, negated where m & 2, as the scalar form
        if (cosine) q += Vector256<ulong>.One;
        var odd = Vector256.Equals(q & Vector256<ulong>.One, Vector256<ulong>.One).AsDouble();
        var val = Vector256.ConditionalSelect(odd, cs, sn);
        var neg = (q & Vector256.Create(2UL)) << 62;
        // the scalar form negates (−v flips the sign bit), so the lanes flip it too
        val = (val.AsUInt64() ^ neg).AsDouble();
        if (Vector256.EqualsAll(inRange.AsUInt64(), Vector256<ulong>.AllBitsSet)) return val;
        // a lane out of the reduction's range: the runtime's function there, as the scalar form
        for (int j = 0; j < 4; j++)
            if (inRange.AsUInt64().GetElement(j) == 0)
                val = val.WithElement(j, cosine ? Math.Cos(x.GetElement(j)) : Math.Sin(x.GetElement(j)));
        return val;
    }
}
