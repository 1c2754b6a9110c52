using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>
/// The language's exp and log, written once for one path (the scalar form, which the GPU kernels compile
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
        if (x != x) return x;
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
        if (x != x) return x;
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
}
