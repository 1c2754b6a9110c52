using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>
/// The language's exp, log, sin, cos, tan, tanh and pow (and expm1, for tanh), written once for one path (the scalar
/// form, which the GPU kernels compile too) and for four paths in the lanes of a <see cref="Vector256{T}"/>, with the
/// same operations in the same order, so every backend and every lane gives the same bits. Only operations that
/// IEEE 754 rounds exactly once (add, subtract, multiply, divide, square root), exact bit manipulations, floor and
/// selects; no fused multiply-add (ILGPU cannot emit one, and .NET never contracts a·b + c), so nothing is left
/// to a library's or a device's choice of last bit. The runtime's <see cref="Math"/> functions (the C library's)
/// differ between machines and have no lane form with their bits, which made a lane call the scalar function
/// once per lane. Where a branch of the scalar form is rare (a special value, a huge argument) the lanes compute
/// every branch and select, or hand that lane to the scalar form.
///
/// exp is fdlibm's e_exp.c: x = k ln 2 + r with |r| ≤ ln 2 / 2 (k ln 2 in two parts, the first exact),
/// e^r = 1 + r + r·c/(2 − c) with c = r − r²·P(r²), P its minimax polynomial of degree 5, then 2^k in
/// two exact factors (so a subnormal result is rounded once, as fdlibm's). log is fdlibm's e_log.c
/// (as the normal generator's <see cref="Normals.Log"/>) with its special cases. sin, cos and tan are fdlibm's
/// kernels after its Cody–Waite reduction; tanh and expm1 are s_tanh.c and s_expm1.c; pow is e_pow.c. tests/
/// ElementaryTests.fs measures each against the C library and the exact value (docs/language.md quotes them).
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
        return Scale2(y, k);
    }

    /// <summary>2^k for an integral k in [−1022, 1023], from its exponent bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double Pow2(double k) => BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits(k + Magic) << 52);

    /// <summary>y·2^k for an integral k in [−2044, 2046], as two exact factors 2^⌊k/2⌋ and 2^(k − ⌊k/2⌋): a subnormal
    /// result is rounded once (fdlibm's scalbn), a normal one not at all.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double Scale2(double y, double k)
    {
        double k1 = Math.Floor(k * 0.5);
        return y * Pow2(k1) * Pow2(k - k1);
    }

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
        var y = Scale2(Vector256<double>.One - ((lo - (r * c) / (Vector256.Create(2.0) - c)) - hi), k);
        y = Vector256.ConditionalSelect(over, Vector256.Create(double.PositiveInfinity), y);
        y = Vector256.ConditionalSelect(under, Vector256<double>.Zero, y);
        return Vector256.ConditionalSelect(nan, x, y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> Pow2(Vector256<double> k) => ((k + Vector256.Create(Magic)).AsUInt64() << 52).AsDouble();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> Scale2(Vector256<double> y, Vector256<double> k)
    {
        var k1 = Vector256.Floor(k * Vector256.Create(0.5));
        return y * Pow2(k1) * Pow2(k - k1);
    }

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

    // sin and cos: fdlibm's kernels on [−π/4, π/4] with a tail y, after Cody–Waite's reduction x = n π/2 + (y0 + y1)
    // (fdlibm's "medium" case: π/2 in 33-bit parts, a second and a third round only where x is so near a multiple of
    // π/2 that the first cancels more than 16 bits, then more than 49; up to 151 bits of n π/2, enough for every
    // |x| below 2^20 π/2). The lanes compute every round and keep, lane by lane, the one the scalar form stops at.
    // (Taking all three rounds always, as the first version did, dropped the second round's rounding error where
    // nothing cancels: y1 was wrong by up to half an ulp of y0.)
    // Larger |x| goes to the runtime's Math.Sin/Math.Cos (Payne–Hanek is not written here).
    const double ToInt = 6755399441055744.0;                 // 1.5·2^52: x + ToInt − ToInt rounds x to an integer
    const double InvPio2 = 6.36619772367581382433e-01;
    const double Pio2_1 = 1.57079632673412561417e+00, Pio2_1t = 6.07710050650619224932e-11;
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
        double r = x - fn * Pio2_1;      // exact: fn·Pio2_1 has at most 53 bits and is within a factor 2 of x
        double w = fn * Pio2_1t;
        y0 = r - w;
        long j = Exponent(x);
        if (j - Exponent(y0) > 16)
        {
            // x is near a multiple of π/2: the next 33 bits of π/2 (the subtraction t − w is exact then)
            double t = r;
            w = fn * Pio2_2;
            r = t - w;
            w = fn * Pio2_2t - ((t - r) - w);
            y0 = r - w;
            if (j - Exponent(y0) > 49)
            {
                t = r;
                w = fn * Pio2_3;
                r = t - w;
                w = fn * Pio2_3t - ((t - r) - w);
                y0 = r - w;
            }
        }
        y1 = (r - y0) - w;
    }

    /// <summary>The biased exponent of x (fdlibm's high word >> 20, without the sign).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static long Exponent(double x) => (BitConverter.DoubleToInt64Bits(x) >> 52) & 0x7ff;

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
        Reduce(Vector256.ConditionalSelect(inRange, x, Vector256<double>.Zero), out var y0, out var y1, out var q);
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

    /// <summary><see cref="Reduce(double, out double, out double, out long)"/> on four lanes; <paramref name="q"/> holds
    /// n mod 2^51 in its low bits (n + 1.5·2^52's mantissa), enough for the quadrant's two bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Reduce(Vector256<double> xr, out Vector256<double> y0, out Vector256<double> y1, out Vector256<ulong> q)
    {
        var fn = xr * Vector256.Create(InvPio2) + Vector256.Create(ToInt) - Vector256.Create(ToInt);
        q = (fn + Vector256.Create(ToInt)).AsUInt64();
        // all three rounds in every lane; each lane keeps the round the scalar form stops at
        var r1 = xr - fn * Vector256.Create(Pio2_1);
        var w1 = fn * Vector256.Create(Pio2_1t);
        var y01 = r1 - w1;
        var t = r1;
        var w2 = fn * Vector256.Create(Pio2_2);
        var r2 = t - w2;
        w2 = fn * Vector256.Create(Pio2_2t) - ((t - r2) - w2);
        var y02 = r2 - w2;
        t = r2;
        var w3 = fn * Vector256.Create(Pio2_3);
        var r3 = t - w3;
        w3 = fn * Vector256.Create(Pio2_3t) - ((t - r3) - w3);
        var y03 = r3 - w3;
        var j = Exponent(xr);
        var second = Vector256.GreaterThan(j - Exponent(y01), Vector256.Create(16L)).AsDouble();
        var third = second & Vector256.GreaterThan(j - Exponent(y02), Vector256.Create(49L)).AsDouble();
        var r = Vector256.ConditionalSelect(third, r3, Vector256.ConditionalSelect(second, r2, r1));
        var w = Vector256.ConditionalSelect(third, w3, Vector256.ConditionalSelect(second, w2, w1));
        y0 = Vector256.ConditionalSelect(third, y03, Vector256.ConditionalSelect(second, y02, y01));
        y1 = (r - y0) - w;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<long> Exponent(Vector256<double> x) => (x.AsInt64() >>> 52) & Vector256.Create(0x7ffL);

    // tan: fdlibm's k_tan.c (FreeBSD's revision) after the same reduction as sin and cos: tan on [−π/4, π/4] by an
    // odd polynomial of degree 27 split in two halves, with |x| ≥ 0.6744 reflected through π/4 − x; an odd quadrant
    // gives −1/tan, formed with a split divisor so that it stays within one ulp.
    const double T0 = 3.33333333333334091986e-01, T1 = 1.33333333333201242699e-01, T2 = 5.39682539762260521377e-02,
                 T3 = 2.18694882948595424599e-02, T4 = 8.86323982359930005737e-03, T5 = 3.59207910759131235356e-03,
                 T6 = 1.45620945432529025516e-03, T7 = 5.88041240820264096874e-04, T8 = 2.46463134818469906812e-04,
                 T9 = 7.81794442939557092300e-05, T10 = 7.14072491382608190305e-05, T11 = -1.85586374855275456654e-05,
                 T12 = 2.59073051863633712884e-05;
    const double Pio4 = 7.85398163397448278999e-01, Pio4Lo = 3.06161699786838301793e-17;
    const double ReflectFrom = 0.6743354797363281;           // 0x3FE5942800000000: k_tan's |x| ≥ 0.6744 (its high word)
    const double TanTiny = 7.450580596923828e-09;            // 2^-27: tan x = x below (s_tan.c; keeps −0)

    /// <summary>tan x, within one ulp; |x| ≥ 2^20 π/2, ±∞ and NaN: <see cref="Math.Tan"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Tan(double x)
    {
        if (!(Math.Abs(x) < ReducedBelow)) return Math.Tan(x);
        if (Math.Abs(x) < TanTiny) return x;
        Reduce(x, out double y0, out double y1, out long n);
        return KernelTan(y0, y1, (n & 1) != 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double KernelTan(double x, double y, bool odd)
    {
        bool big = Math.Abs(x) >= ReflectFrom;
        bool negative = x < 0;
        if (big)
        {
            if (negative) { x = -x; y = -y; }
            x = (Pio4 - x) + (Pio4Lo - y);
            y = 0.0;
        }
        double z = x * x;
        double w = z * z;
        double r = T1 + w * (T3 + w * (T5 + w * (T7 + w * (T9 + w * T11))));
        double v = z * (T2 + w * (T4 + w * (T6 + w * (T8 + w * (T10 + w * T12)))));
        double s = z * x;
        r = y + z * (s * (r + v) + y);
        r += T0 * s;
        w = x + r;
        if (big)
        {
            double iy = odd ? -1.0 : 1.0;
            double u = iy - 2.0 * (x - (w * w / (w + iy) - r));
            return negative ? -u : u;
        }
        if (!odd) return w;
        // −1/(x + r) accurately: w split as z + v with z's low word cleared, a = −1/w likewise as t
        double zz = ClearLow(w);
        double vv = r - (zz - x);
        double a = -1.0 / w;
        double t = ClearLow(a);
        double ss = 1.0 + t * zz;
        return t + a * (ss + t * vv);
    }

    /// <summary><see cref="Tan(double)"/> on four lanes: lane by lane the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Tan(Vector256<double> x0)
    {
        var inRange = Vector256.LessThan(Vector256.Abs(x0), Vector256.Create(ReducedBelow));
        Reduce(Vector256.ConditionalSelect(inRange, x0, Vector256<double>.Zero), out var x, out var y, out var q);
        var odd = Vector256.Equals(q & Vector256<ulong>.One, Vector256<ulong>.One).AsDouble();
        var big = Vector256.GreaterThanOrEqual(Vector256.Abs(x), Vector256.Create(ReflectFrom));
        var negative = Vector256.LessThan(x, Vector256<double>.Zero);
        // the reflection (−x and −y are sign flips, as the scalar negation)
        var flip = big & negative;
        var xa = Vector256.ConditionalSelect(flip, -x, x);
        var ya = Vector256.ConditionalSelect(flip, -y, y);
        x = Vector256.ConditionalSelect(big, (Vector256.Create(Pio4) - xa) + (Vector256.Create(Pio4Lo) - ya), x);
        y = Vector256.ConditionalSelect(big, Vector256<double>.Zero, y);
        var z = x * x;
        var w = z * z;
        var r = Vector256.Create(T1) + w * (Vector256.Create(T3) + w * (Vector256.Create(T5) + w * (Vector256.Create(T7) + w * (Vector256.Create(T9) + w * Vector256.Create(T11)))));
        var v = z * (Vector256.Create(T2) + w * (Vector256.Create(T4) + w * (Vector256.Create(T6) + w * (Vector256.Create(T8) + w * (Vector256.Create(T10) + w * Vector256.Create(T12))))));
        var s = z * x;
        r = y + z * (s * (r + v) + y);
        r += Vector256.Create(T0) * s;
        w = x + r;
        // reflected
        var iy = Vector256.ConditionalSelect(odd, Vector256.Create(-1.0), Vector256<double>.One);
        var u = iy - Vector256.Create(2.0) * (x - (w * w / (w + iy) - r));
        u = Vector256.ConditionalSelect(negative, -u, u);
        // odd quadrant, not reflected: −1/w with split parts
        var zz = ClearLow(w);
        var vv = r - (zz - x);
        var a = Vector256.Create(-1.0) / w;
        var t = ClearLow(a);
        var ss = Vector256<double>.One + t * zz;
        var inv = t + a * (ss + t * vv);
        var val = Vector256.ConditionalSelect(big, u, Vector256.ConditionalSelect(odd, inv, w));
        val = Vector256.ConditionalSelect(Vector256.LessThan(Vector256.Abs(x0), Vector256.Create(TanTiny)), x0, val);
        if (Vector256.EqualsAll(inRange.AsUInt64(), Vector256<ulong>.AllBitsSet)) return val;
        for (int j = 0; j < 4; j++)
            if (inRange.AsUInt64().GetElement(j) == 0) val = val.WithElement(j, Math.Tan(x0.GetElement(j)));
        return val;
    }

    // expm1 (for tanh): fdlibm's s_expm1.c, x = k ln 2 + (hi − lo) with a correction c, e^r − 1 from a rational form
    // in r²/2 (Q1..Q5), then 2^k(e^r − 1) + (2^k − 1) arranged per range of k so that nothing cancels.
    const double Q1 = -3.33333333333331316428e-02, Q2 = 1.58730158725481460165e-03, Q3 = -7.93650757867487942473e-05,
                 Q4 = 4.00821782732936239552e-06, Q5 = -2.01099218183624371326e-07;
    const double ReduceFrom = 0.3465735912322998;            // 0x3fd62e4300000000: the high word above 0x3fd62e42 (ln 2 / 2)
    const double ThreeHalvesLn2 = 1.0397205352783203;        // 0x3FF0A2B200000000: below (and from ReduceFrom), k = ±1
    const double TinyExpm1 = 5.551115123125783e-17;          // 2^-54: below, expm1 x = x
    const double TwoTo1023 = 8.98846567431158e307;
    const double MinusOneBelow = -38.81622314453125;         // −0x4043687A00000000, about −56 ln 2: expm1 = −1 from here down

    /// <summary>e^x − 1 within one ulp (fdlibm's): NaN for NaN, +∞ above 709.78, −1 below −56 ln 2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Expm1(double x)
    {
        if (double.IsNaN(x)) return x;
        if (x > OverflowAbove) return double.PositiveInfinity;
        if (x <= MinusOneBelow) return -1.0;
        double ax = Math.Abs(x);
        if (ax < TinyExpm1) return x;
        double k = 0, c = 0;
        if (ax >= ReduceFrom)
        {
            if (ax < ThreeHalvesLn2) k = x < 0 ? -1.0 : 1.0;
            else
            {
                double u = InvLn2 * x;
                k = x < 0 ? -Math.Floor(0.5 - u) : Math.Floor(u + 0.5);
            }
            double hi = x - k * Ln2Hi, lo = k * Ln2Lo;
            x = hi - lo;
            c = (hi - x) - lo;
        }
        double hfx = 0.5 * x;
        double hxs = x * hfx;
        double r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
        double t = 3.0 - r1 * hfx;
        double e = hxs * ((r1 - t) / (6.0 - x * t));
        if (k == 0) return x - (x * e - hxs);
        e = x * (e - c) - c;
        e -= hxs;
        if (k == -1) return 0.5 * (x - e) - 0.5;
        if (k == 1) return x < -0.25 ? -2.0 * (e - (x + 0.5)) : 1.0 + 2.0 * (x - e);
        if (k <= -2 || k > 56)
        {
            double y = 1.0 - (e - x);
            y = k == 1024 ? y * 2.0 * TwoTo1023 : y * Pow2(k);
            return y - 1.0;
        }
        if (k < 20) return ((1.0 - Pow2(-k)) - (e - x)) * Pow2(k);
        return ((x - (e + Pow2(-k))) + 1.0) * Pow2(k);
    }

    /// <summary><see cref="Expm1(double)"/> on four lanes: lane by lane the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Expm1(Vector256<double> x0)
    {
        var nan = ~Vector256.Equals(x0, x0);
        var over = Vector256.GreaterThan(x0, Vector256.Create(OverflowAbove));
        var minus1 = Vector256.LessThanOrEqual(x0, Vector256.Create(MinusOneBelow));
        var ax = Vector256.Abs(x0);
        var tiny = Vector256.LessThan(ax, Vector256.Create(TinyExpm1));
        var special = nan | over | minus1 | tiny;
        var x = Vector256.ConditionalSelect(special, Vector256<double>.Zero, x0);
        ax = Vector256.Abs(x);
        var negative = Vector256.LessThan(x, Vector256<double>.Zero);
        var reduce = Vector256.GreaterThanOrEqual(ax, Vector256.Create(ReduceFrom));
        var one = Vector256.LessThan(ax, Vector256.Create(ThreeHalvesLn2));
        var u = Vector256.Create(InvLn2) * x;
        var kn = Vector256.ConditionalSelect(negative, -Vector256.Floor(Vector256.Create(0.5) - u), Vector256.Floor(u + Vector256.Create(0.5)));
        var k = Vector256.ConditionalSelect(one, Vector256.ConditionalSelect(negative, Vector256.Create(-1.0), Vector256<double>.One), kn);
        k = Vector256.ConditionalSelect(reduce, k, Vector256<double>.Zero);
        var hi = x - k * Vector256.Create(Ln2Hi);
        var lo = k * Vector256.Create(Ln2Lo);
        var xr = hi - lo;
        var c = Vector256.ConditionalSelect(reduce, (hi - xr) - lo, Vector256<double>.Zero);
        x = Vector256.ConditionalSelect(reduce, xr, x);
        var hfx = Vector256.Create(0.5) * x;
        var hxs = x * hfx;
        var r1 = Vector256<double>.One + hxs * (Vector256.Create(Q1) + hxs * (Vector256.Create(Q2) + hxs * (Vector256.Create(Q3) + hxs * (Vector256.Create(Q4) + hxs * Vector256.Create(Q5)))));
        var t = Vector256.Create(3.0) - r1 * hfx;
        var e = hxs * ((r1 - t) / (Vector256.Create(6.0) - x * t));
        var r0 = x - (x * e - hxs);
        e = x * (e - c) - c;
        e -= hxs;
        var rm1 = Vector256.Create(0.5) * (x - e) - Vector256.Create(0.5);
        var rp1 = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(-0.25)),
            Vector256.Create(-2.0) * (e - (x + Vector256.Create(0.5))), Vector256<double>.One + Vector256.Create(2.0) * (x - e));
        // 2^k and 2^−k for the lanes that read them (k in [−56, 1024]: clamped where another branch is taken)
        var kc = Vector256.Min(Vector256.Max(k, Vector256.Create(-1022.0)), Vector256.Create(1023.0));
        var p2k = Pow2(kc);
        var p2mk = Pow2(Vector256.Min(Vector256.Max(-k, Vector256.Create(-1022.0)), Vector256.Create(1023.0)));
        var y = Vector256<double>.One - (e - x);
        var far = Vector256.ConditionalSelect(Vector256.Equals(k, Vector256.Create(1024.0)), y * Vector256.Create(2.0) * Vector256.Create(TwoTo1023), y * p2k) - Vector256<double>.One;
        var near = ((Vector256<double>.One - p2mk) - (e - x)) * p2k;
        var mid = ((x - (e + p2mk)) + Vector256<double>.One) * p2k;
        var val = Vector256.ConditionalSelect(Vector256.LessThan(k, Vector256.Create(20.0)), near, mid);
        val = Vector256.ConditionalSelect(Vector256.LessThanOrEqual(k, Vector256.Create(-2.0)) | Vector256.GreaterThan(k, Vector256.Create(56.0)), far, val);
        val = Vector256.ConditionalSelect(Vector256.Equals(k, Vector256<double>.One), rp1, val);
        val = Vector256.ConditionalSelect(Vector256.Equals(k, Vector256.Create(-1.0)), rm1, val);
        val = Vector256.ConditionalSelect(Vector256.Equals(k, Vector256<double>.Zero), r0, val);
        val = Vector256.ConditionalSelect(tiny, x0, val);
        val = Vector256.ConditionalSelect(minus1, Vector256.Create(-1.0), val);
        val = Vector256.ConditionalSelect(over, Vector256.Create(double.PositiveInfinity), val);
        return Vector256.ConditionalSelect(nan, x0, val);
    }

    // tanh: fdlibm's s_tanh.c: x for |x| < 2^-28, −t/(t + 2) with t = expm1(−2|x|) below 1, 1 − 2/(t + 2) with
    // t = expm1(2|x|) from 1 to 22, ±1 beyond; the sign of x restored.
    const double TanhTiny = 3.725290298461914e-09;           // 2^-28
    const double TanhOne = 22.0;                             // tanh x rounds to ±1 from here

    /// <summary>tanh x within two ulps of the exact value (fdlibm's, as glibc's): ±1 beyond ±22, NaN for NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Tanh(double x)
    {
        if (double.IsNaN(x)) return x;
        double ax = Math.Abs(x);
        if (ax < TanhTiny) return x;
        double z;
        if (ax >= TanhOne) z = 1.0;
        else if (ax >= 1.0) z = 1.0 - 2.0 / (Expm1(2.0 * ax) + 2.0);
        else { double t = Expm1(-2.0 * ax); z = -t / (t + 2.0); }
        return x < 0 ? -z : z;
    }

    /// <summary><see cref="Tanh(double)"/> on four lanes: lane by lane the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Tanh(Vector256<double> x)
    {
        var nan = ~Vector256.Equals(x, x);
        var ax = Vector256.Abs(x);
        var tiny = Vector256.LessThan(ax, Vector256.Create(TanhTiny));
        var sat = Vector256.GreaterThanOrEqual(ax, Vector256.Create(TanhOne));
        var large = Vector256.GreaterThanOrEqual(ax, Vector256<double>.One);
        // one expm1 per lane: of 2|x| from 1 on, of −2|x| below (the ±2 products are exact)
        var a = Vector256.ConditionalSelect(sat | nan, Vector256<double>.Zero, ax);
        var t = Expm1(Vector256.ConditionalSelect(large, Vector256.Create(2.0) * a, Vector256.Create(-2.0) * a));
        var two = Vector256.Create(2.0);
        var z = Vector256.ConditionalSelect(large, Vector256<double>.One - two / (t + two), -t / (t + two));
        z = Vector256.ConditionalSelect(sat, Vector256<double>.One, z);
        z = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256<double>.Zero), -z, z);
        z = Vector256.ConditionalSelect(tiny, x, z);
        return Vector256.ConditionalSelect(nan, x, z);
    }

    // pow: fdlibm's e_pow.c. log2|x| = n + log2(m) in extra precision (m reduced to [√(2/3)·…, √3) around 1 or 1.5,
    // log2 m from s = (m − b)/(m + b) by a minimax series, split in 33-bit parts t1 + t2), y·log2|x| as p_h + p_l, then
    // 2^(p_h + p_l) by exp's kernel. The special cases (zeros, infinities, NaN, negative x with an integral y, |y| > 2^31,
    // overflow and underflow) as fdlibm (and C99) give them. fdlibm's rounding of z to the nearest integer on its high
    // word is written as floor(|z| + 1/2) where that high word exceeds 1/2's (the same integer), and its final scaling
    // as two exact factors (as exp's): the same bits.
    const double PowL1 = 5.99999999999994648725e-01, PowL2 = 4.28571428578550184252e-01, PowL3 = 3.33333329818377432918e-01,
                 PowL4 = 2.72728123808534006489e-01, PowL5 = 2.30660745775561754067e-01, PowL6 = 2.06975017800338417784e-01;
    const double DpH1 = 5.84962487220764160156e-01, DpL1 = 1.35003920212974897128e-08;   // log2(1.5) in two parts
    const double Lg2 = 6.93147180559945286227e-01, Lg2H = 6.93147182464599609375e-01, Lg2L = -1.90465429995776804525e-09;
    const double Ovt = 8.0085662595372944372e-17;            // −(1024 − log2(the largest double + ulp/2))
    const double Cp = 9.61796693925975554329e-01, CpH = 9.61796700954437255859e-01, CpL = -7.02846165095275826516e-09;
    const double InvLn2H = 1.44269502162933349609e+00, InvLn2L = 1.92596299112661746887e-08;
    const double Third = 3.3333333333333331e-01, TwoTo53 = 9007199254740992.0;
    const long LowWord = 0xFFFFFFFFL;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double ClearLow(double v) => BitConverter.Int64BitsToDouble(BitConverter.DoubleToInt64Bits(v) & ~LowWord);

    /// <summary>x^y within one ulp (fdlibm's pow; C99's special values).</summary>
    public static double Pow(double x, double y)
    {
        long bx = BitConverter.DoubleToInt64Bits(x), by = BitConverter.DoubleToInt64Bits(y);
        long hx = bx >> 32, lx = bx & LowWord, hy = by >> 32, ly = by & LowWord;
        long ix = hx & 0x7fffffff, iy = hy & 0x7fffffff;
        if ((iy | ly) == 0) return 1.0;                          // x^±0 = 1, even for NaN x
        if (hx == 0x3ff00000 && lx == 0) return 1.0;             // 1^y = 1, even for NaN y
        if (ix > 0x7ff00000 || (ix == 0x7ff00000 && lx != 0) || iy > 0x7ff00000 || (iy == 0x7ff00000 && ly != 0))
            return x + y;                                        // NaN
        // for x < 0: 0 when y is not an integer, 1 when it is odd, 2 when even
        long yisint = 0;
        if (hx < 0)
        {
            if (iy >= 0x43400000) yisint = 2;
            else if (iy >= 0x3ff00000)
            {
                long k = (iy >> 20) - 0x3ff;
                if (k > 20)
                {
                    long j = ly >> (int)(52 - k);
                    if (((j << (int)(52 - k)) & LowWord) == ly) yisint = 2 - (j & 1);
                }
                else if (ly == 0)
                {
                    long j = iy >> (int)(20 - k);
                    if ((j << (int)(20 - k)) == iy) yisint = 2 - (j & 1);
                }
            }
        }
        if (ly == 0)
        {
            if (iy == 0x7ff00000)                                // y = ±∞
            {
                if (((ix - 0x3ff00000) | lx) == 0) return 1.0;    // (−1)^±∞
                if (ix >= 0x3ff00000) return hy >= 0 ? y : 0.0;
                return hy < 0 ? -y : 0.0;
            }
            if (iy == 0x3ff00000) return hy < 0 ? 1.0 / x : x;    // y = ±1
            if (hy == 0x40000000) return x * x;                   // y = 2
            if (hy == 0x3fe00000 && hx >= 0) return Math.Sqrt(x); // y = 1/2
        }
        double ax = Math.Abs(x);
        if (lx == 0 && (ix == 0x7ff00000 || ix == 0 || ix == 0x3ff00000))   // x = ±0, ±∞, ±1
        {
            double z = ax;
            if (hy < 0) z = 1.0 / z;
            if (hx < 0)
            {
                if (((ix - 0x3ff00000) | yisint) == 0) z = double.NaN;   // (−1)^non-integer
                else if (yisint == 1) z = -z;
            }
            return z;
        }
        if (hx < 0 && yisint == 0) return double.NaN;            // (x < 0)^non-integer
        double sgn = hx < 0 && yisint == 1 ? -1.0 : 1.0;
        double t1, t2;
        if (iy > 0x41e00000)                                     // |y| > 2^31
        {
            if (iy > 0x43f00000)                                 // |y| > 2^64: over- or underflows
            {
                if (ix <= 0x3fefffff) return hy < 0 ? double.PositiveInfinity : 0.0;
                if (ix >= 0x3ff00000) return hy > 0 ? double.PositiveInfinity : 0.0;
            }
            if (ix < 0x3fefffff) return hy < 0 ? sgn * double.PositiveInfinity : sgn * 0.0;
            if (ix > 0x3ff00000) return hy > 0 ? sgn * double.PositiveInfinity : sgn * 0.0;
            // |1 − x| ≤ 2^-20: log x by x − x²/2 + x³/3 − x⁴/4
            double t = ax - 1.0;
            double w = (t * t) * (0.5 - t * (Third - t * 0.25));
            double u = InvLn2H * t;
            double v = t * InvLn2L - w * InvLn2;
            t1 = ClearLow(u + v);
            t2 = v - (t1 - u);
        }
        else
            LogTwo(ax, ix, out t1, out t2);
        return sgn * ExpTwo(y, t1, t2);
    }

    /// <summary>log2 ax = t1 + t2 (t1 with its low word cleared), for a positive finite ax; ix its high word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void LogTwo(double ax, long ix, out double t1, out double t2)
    {
        long n = 0;
        if (ix < 0x00100000) { ax *= TwoTo53; n -= 53; ix = BitConverter.DoubleToInt64Bits(ax) >> 32; }
        n += (ix >> 20) - 0x3ff;
        long j = ix & 0x000fffff;
        ix = j | 0x3ff00000;
        long k;
        if (j <= 0x3988E) k = 0;                                 // m < √(3/2)
        else if (j < 0xBB67A) k = 1;                             // m < √3
        else { k = 0; n += 1; ix -= 0x00100000; }
        ax = BitConverter.Int64BitsToDouble((ix << 32) | (BitConverter.DoubleToInt64Bits(ax) & LowWord));
        double bp = k == 0 ? 1.0 : 1.5, dpH = k == 0 ? 0.0 : DpH1, dpL = k == 0 ? 0.0 : DpL1;
        double u = ax - bp;
        double v = 1.0 / (ax + bp);
        double ss = u * v;
        double sH = ClearLow(ss);
        double tH = BitConverter.Int64BitsToDouble((((ix >> 1) | 0x20000000) + 0x00080000 + (k << 18)) << 32);
        double tL = ax - (tH - bp);
        double sL = v * ((u - sH * tH) - sH * tL);
        double s2 = ss * ss;
        double r = s2 * s2 * (PowL1 + s2 * (PowL2 + s2 * (PowL3 + s2 * (PowL4 + s2 * (PowL5 + s2 * PowL6)))));
        r += sL * (sH + ss);
        s2 = sH * sH;
        tH = ClearLow(3.0 + s2 + r);
        tL = r - ((tH - 3.0) - s2);
        u = sH * tH;
        v = sL * tH + tL * ss;
        double pH = ClearLow(u + v);
        double pL = v - (pH - u);
        double zH = CpH * pH;
        double zL = CpL * pH + pL * Cp + dpL;
        double t = n;
        t1 = ClearLow(((zH + zL) + dpH) + t);
        t2 = zL - (((t1 - t) - dpH) - zH);
    }

    /// <summary>2^(y·(t1 + t2)), or +∞ / +0 where it over- or underflows (the caller applies the sign).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double ExpTwo(double y, double t1, double t2)
    {
        double y1 = ClearLow(y);
        double pL = (y - y1) * t1 + y * t2;
        double pH = y1 * t1;
        double z = pL + pH;
        if (z >= 1024.0) { if (z > 1024.0 || pL + Ovt > z - pH) return double.PositiveInfinity; }
        else if (z <= -1075.0) { if (z < -1075.0 || pL <= z - pH) return 0.0; }
        double az = Math.Abs(z);
        double nn = (BitConverter.DoubleToInt64Bits(az) >> 32) > 0x3fe00000 ? Math.Floor(az + 0.5) : 0.0;
        if (z < 0) nn = -nn;
        pH -= nn;
        double t = ClearLow(pL + pH);
        double u = t * Lg2H;
        double v = (pL - (t - pH)) * Lg2 + t * Lg2L;
        z = u + v;
        double w = v - (z - u);
        t = z * z;
        double c = z - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
        double r = (z * c) / (c - 2.0) - (w + z * w);
        return Scale2(1.0 - (r - z), nn);
    }

    /// <summary><see cref="Pow(double, double)"/> on four lanes: lane by lane the same bits. Lanes with x &gt; 0 normal and
    /// not 1, y finite, not 0, ±1, 2 or 1/2 and |y| ≤ 2^31, and a result that neither overflows nor underflows, run
    /// the scalar form's operations side by side; any other lane takes the scalar form.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Pow(Vector256<double> x, Vector256<double> y)
    {
        var bx = x.AsInt64();
        var by = y.AsInt64();
        var hx = bx >> 32;
        var hy = by >> 32;
        var iy = hy & Vector256.Create(0x7fffffffL);
        var ly = by & Vector256.Create(LowWord);
        var ay = Vector256.Abs(y);
        // the lanes the vector form computes (x > 0 normal and finite, not 1; the y the scalar form treats alone excluded)
        var fast = Vector256.GreaterThanOrEqual(hx, Vector256.Create(0x00100000L)) & Vector256.LessThan(hx, Vector256.Create(0x7ff00000L))
                   & ~Vector256.Equals(x, Vector256<double>.One).AsInt64()
                   & Vector256.LessThanOrEqual(iy, Vector256.Create(0x41e00000L)) & ~Vector256.Equals(ay, Vector256<double>.Zero).AsInt64()
                   & ~(Vector256.Equals(ly, Vector256<long>.Zero)
                       & (Vector256.Equals(iy, Vector256.Create(0x3ff00000L)) | Vector256.Equals(hy, Vector256.Create(0x40000000L))
                          | Vector256.Equals(hy, Vector256.Create(0x3fe00000L))));
        var xs = Vector256.ConditionalSelect(fast.AsDouble(), x, Vector256.Create(2.0)).AsInt64();
        var ys = Vector256.ConditionalSelect(fast.AsDouble(), y, Vector256.Create(0.75));
        // LogTwo (no subnormal x here)
        var ix = xs >> 32;
        var n = (ix >> 20) - Vector256.Create(0x3ffL);
        var j = ix & Vector256.Create(0x000fffffL);
        ix = j | Vector256.Create(0x3ff00000L);
        var k1m = Vector256.GreaterThan(j, Vector256.Create(0x3988EL)) & Vector256.LessThan(j, Vector256.Create(0xBB67AL));
        var up = Vector256.GreaterThanOrEqual(j, Vector256.Create(0xBB67AL));
        n -= up;                                                 // (all bits set is −1)
        ix += up & Vector256.Create(-0x00100000L);
        var k = k1m & Vector256<long>.One;
        var ax = ((ix << 32) | (xs & Vector256.Create(LowWord))).AsDouble();
        var kd = k1m.AsDouble();
        var bp = Vector256.ConditionalSelect(kd, Vector256.Create(1.5), Vector256<double>.One);
        var dpH = Vector256.ConditionalSelect(kd, Vector256.Create(DpH1), Vector256<double>.Zero);
        var dpL = Vector256.ConditionalSelect(kd, Vector256.Create(DpL1), Vector256<double>.Zero);
        var u = ax - bp;
        var v = Vector256<double>.One / (ax + bp);
        var ss = u * v;
        var sH = ClearLow(ss);
        var tH = (((((ix >> 1) | Vector256.Create(0x20000000L)) + Vector256.Create(0x00080000L)) + (k << 18)) << 32).AsDouble();
        var tL = ax - (tH - bp);
        var sL = v * ((u - sH * tH) - sH * tL);
        var s2 = ss * ss;
        var r = s2 * s2 * (Vector256.Create(PowL1) + s2 * (Vector256.Create(PowL2) + s2 * (Vector256.Create(PowL3) + s2 * (Vector256.Create(PowL4) + s2 * (Vector256.Create(PowL5) + s2 * Vector256.Create(PowL6))))));
        r += sL * (sH + ss);
        s2 = sH * sH;
        tH = ClearLow(Vector256.Create(3.0) + s2 + r);
        tL = r - ((tH - Vector256.Create(3.0)) - s2);
        u = sH * tH;
        v = sL * tH + tL * ss;
        var pH = ClearLow(u + v);
        var pL = v - (pH - u);
        var zH = Vector256.Create(CpH) * pH;
        var zL = Vector256.Create(CpL) * pH + pL * Vector256.Create(Cp) + dpL;
        // n as a double: n + 1.5·2^52 has n in its low bits (|n| < 2^51), exactly; AVX2 has no 64-bit integer conversion
        var t = (n + Vector256.Create(0x4338000000000000L)).AsDouble() - Vector256.Create(ToInt);
        var t1 = ClearLow(((zH + zL) + dpH) + t);
        var t2 = zL - (((t1 - t) - dpH) - zH);
        // ExpTwo
        var y1 = ClearLow(ys);
        pL = (ys - y1) * t1 + ys * t2;
        pH = y1 * t1;
        var z = pL + pH;
        fast &= (Vector256.LessThan(z, Vector256.Create(1024.0)) & Vector256.GreaterThan(z, Vector256.Create(-1075.0))).AsInt64();
        var az = Vector256.Abs(z);
        var nn = Vector256.ConditionalSelect(Vector256.GreaterThan(az.AsInt64() >> 32, Vector256.Create(0x3fe00000L)).AsDouble(),
                                             Vector256.Floor(az + Vector256.Create(0.5)), Vector256<double>.Zero);
        nn = Vector256.ConditionalSelect(Vector256.LessThan(z, Vector256<double>.Zero), -nn, nn);
        // lanes outside (−1075, 1024) go to the scalar form: clamp so that 2^k stays a valid factor
        nn = Vector256.ConditionalSelect(fast.AsDouble(), nn, Vector256<double>.Zero);
        pH -= nn;
        t = ClearLow(pL + pH);
        u = t * Vector256.Create(Lg2H);
        v = (pL - (t - pH)) * Vector256.Create(Lg2) + t * Vector256.Create(Lg2L);
        z = u + v;
        var w = v - (z - u);
        t = z * z;
        var c = z - t * (Vector256.Create(P1) + t * (Vector256.Create(P2) + t * (Vector256.Create(P3) + t * (Vector256.Create(P4) + t * Vector256.Create(P5)))));
        r = (z * c) / (c - Vector256.Create(2.0)) - (w + z * w);
        z = Vector256<double>.One - (r - z);
        var val = Scale2(z, nn);
        if (Vector256.EqualsAll(fast, Vector256<long>.AllBitsSet)) return val;
        for (int i = 0; i < 4; i++)
            if (fast.GetElement(i) == 0) val = val.WithElement(i, Pow(x.GetElement(i), y.GetElement(i)));
        return val;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> ClearLow(Vector256<double> v) => (v.AsInt64() & Vector256.Create(~LowWord)).AsDouble();
}
