using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>
/// Standard normals and uniforms from Philox blocks. Each block (128 bits) gives, by Box–Muller, two
/// normals, and they go to one lane at two consecutive steps: lane k at steps 2t and 2t + 1 is z0 and z1
/// of block (k, t) (<see cref="Philox.Draw"/> with the step pair t as its step word). So lane k depends
/// only on (seed, path, step, tag, k), never on how many lanes were asked for, and every block gives two
/// normals whatever the number of lanes: a model with one noise draws half a block per step (the first
/// generator paired lanes 2j and 2j + 1 within a step, and an odd last lane wasted half its block).
/// A caller that steps one step at a time draws a pair and keeps the odd step for the next call
/// (<see cref="StepNormals"/>); one step alone (<see cref="Fill(ulong, ulong, ulong, uint, double*, int)"/>)
/// costs a block per lane, the same bits. Uniforms (<see cref="FillUniform(ulong, ulong, ulong, uint, double*, int)"/>)
/// take the two 64-bit halves of block j as lanes 2j and 2j + 1 of their own step.
///
/// One generator, the same bits in every form. The transform uses only operations that IEEE 754 rounds
/// exactly once (add, subtract, multiply, divide, square root) and exact integer and bit manipulations,
/// in the same order in the scalar form (<see cref="Transform"/>, which the GPU kernels compile too),
/// the AVX2 form (<see cref="Fill(ulong, ulong, ulong, uint, double*, int)"/>) and the four-paths form
/// (<see cref="FillAcrossPaths4"/>): its own log (fdlibm's reduction and polynomial) and its own sine and
/// cosine (a quarter-turn reduction done on the integer bits, so exact, and Taylor polynomials on
/// [−π/4, π/4]), no library log/sin/cos whose last bit is the library's choice. No fused multiply-add:
/// .NET never contracts a·b + c (scalar or vector), and ILGPU 1.5 cannot emit Math.FusedMultiplyAdd in
/// PTX (it leaves a call of an undefined function), so plain multiplies and adds are what every
/// backend rounds alike. So `cpu` and `ilgpu-cpu` give the same numbers, and a change of this code is a
/// change of every printed number: <see cref="Version"/> names it (shards record it) and the test
/// "first values of three streams" records its first outputs.
/// </summary>
public static partial class Normals
{
    /// <summary>The generator's name and version, recorded in shard files: bump it with any change of the bits.</summary>
    public const string Version = "philox4x32-10 box-muller-fma 2 step-pairs";

    const double Inv53 = 1.0 / 9007199254740992.0; // 2^-53
    const double Inv51 = 1.0 / 2251799813685248.0; // 2^-51
    const ulong Low51 = (1UL << 51) - 1;

    // log: fdlibm's e_log.c reduction x = 2^k·m, m in [√2/2, √2), f = m − 1, s = f/(2 + f),
    // log m = f − f²/2 + s(f²/2 + R(s²)), with its minimax R (error below 2^-58.45 on the range).
    const ulong SqrtHalfBits = 0x3fe6a09e667f3bcdUL;       // √2/2
    const ulong MantMask = 0x000fffffffffffffUL;
    const double Ln2Hi = 6.93147180369123816490e-01;       // 0x3fe62e42fee00000: k·Ln2Hi exact for |k| < 2^11
    const double Ln2Lo = 1.90821492927058770002e-10;       // 0x3dea39ef35793c76
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01, Lg3 = 2.857142874366239149e-01,
                 Lg4 = 2.222219843214978396e-01, Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;

    // sin(πf/2) = f·Σ S_k f^2k and cos(πf/2) = 1 + Σ C_k f^2k for |f| ≤ 1/2: Taylor coefficients (the
    // first omitted terms are below 1e-19 relative), each the double nearest the exact (π/2)^n/n!.
    const double S0 = 1.5707963267948966, S1 = -0.6459640975062463, S2 = 0.07969262624616705,
                 S3 = -0.004681754135318688, S4 = 0.00016044118478735983, S5 = -3.598843235212085e-06,
                 S6 = 5.692172921967927e-08, S7 = -6.688035109811468e-10, S8 = 6.0669357311061955e-12;
    const double C1 = -1.2337005501361697, C2 = 0.25366950790104803, C3 = -0.02086348076335296,
                 C4 = 0.0009192602748394266, C5 = -2.5202042373060607e-05, C6 = 4.710874778818172e-07,
                 C7 = -6.386603083791852e-09, C8 = 6.565963114979473e-11;

    /// <summary>The top 53 bits of <paramref name="bits"/> as a uniform in (0, 1): centred in its cell, so never 0 or 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double ToUniform(ulong bits) => ((bits >> 11) + 0.5) * Inv53;

    /// <summary>
    /// log x for a positive normal double (the generator's log; a test measures its error against
    /// Math.Log). Integer reduction, then the polynomial by Horner's rule.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double Log(double x) => LogScaled(x, 0.0);

    /// <summary>log(x) + k0·ln 2 for a positive normal double: the generator's log (k0 = 0) and the language's
    /// (<see cref="Elementary.Log(double)"/>, k0 = −54 for a subnormal argument it scaled by 2^54). k0 is added to
    /// the exponent exactly (both are small integers; + 0 changes no bit).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double LogScaled(double x, double k0)
    {
        ulong ix = (ulong)BitConverter.DoubleToInt64Bits(x) + (0x3ff0000000000000UL - SqrtHalfBits);
        double k = ((double)(long)(ix >> 52) - 1023.0) + k0;
        double f = BitConverter.Int64BitsToDouble((long)((ix & MantMask) + SqrtHalfBits)) - 1.0;
        double hfsq = 0.5 * f * f;
        double s = f / (2.0 + f);
        double z = s * s;
        double p = z * Lg7 + Lg6;
        p = z * p + Lg5;
        p = z * p + Lg4;
        p = z * p + Lg3;
        p = z * p + Lg2;
        p = z * p + Lg1;
        double r = z * p;
        return k * Ln2Hi + (((s * (hfsq + r) + k * Ln2Lo) - hfsq) + f);
    }

    /// <summary><see cref="LogScaled(double, double)"/> on four lanes: lane by lane the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> LogScaled(Vector256<double> x, Vector256<double> k0)
    {
        var ix = x.AsUInt64() + Vector256.Create(0x3ff0000000000000UL - SqrtHalfBits);
        var k = (Small52(ix >> 52) - Vector256.Create(1023.0)) + k0;
        var f = ((ix & Vector256.Create(MantMask)) + Vector256.Create(SqrtHalfBits)).AsDouble() - Vector256.Create(1.0);
        var hfsq = Vector256.Create(0.5) * f * f;
        var s = f / (Vector256.Create(2.0) + f);
        var z = s * s;
        var p = z * Vector256.Create(Lg7) + Vector256.Create(Lg6);
        p = z * p + Vector256.Create(Lg5);
        p = z * p + Vector256.Create(Lg4);
        p = z * p + Vector256.Create(Lg3);
        p = z * p + Vector256.Create(Lg2);
        p = z * p + Vector256.Create(Lg1);
        var r = z * p;
        return k * Vector256.Create(Ln2Hi) + (((s * (hfsq + r) + k * Vector256.Create(Ln2Lo)) - hfsq) + f);
    }

    /// <summary>sin(πf/2) and cos(πf/2) for |f| ≤ 1/2 (the generator's; a test measures its error).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SinCosQuarter(double f, out double sin, out double cos)
    {
        double f2 = f * f;
        double ps = f2 * S8 + S7;
        ps = f2 * ps + S6;
        ps = f2 * ps + S5;
        ps = f2 * ps + S4;
        ps = f2 * ps + S3;
        ps = f2 * ps + S2;
        ps = f2 * ps + S1;
        ps = f2 * ps + S0;
        double pc = f2 * C8 + C7;
        pc = f2 * pc + C6;
        pc = f2 * pc + C5;
        pc = f2 * pc + C4;
        pc = f2 * pc + C3;
        pc = f2 * pc + C2;
        pc = f2 * pc + C1;
        sin = f * ps;
        cos = f2 * pc + 1.0;
    }

    /// <summary>
    /// The generator on one block's two 64-bit halves (the scalar form; the kernels compile this code).
    /// Radius √(−2 log u) with u = ((a ≫ 11) + ½)·2^-53 ∈ (0, 1) (so |z| reaches √(108 log 2) ≈ 8.65);
    /// angle (q + f)·π/2 from the other half's top 53 bits: the quadrant q is their top two bits and
    /// f = (rest + ½)·2^-51 − ½ ∈ (−½, ½), exactly, i.e. the uniform angle 2π((b ≫ 11) + ½)/2^53 − π/4
    /// (a rotation of a uniform angle is uniform). z0 = r cos, z1 = r sin.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Transform(ulong a, ulong b, out double z0, out double z1)
    {
        double r = Radius(a);
        ulong b53 = b >> 11;
        double f = ((double)(b53 & Low51) + 0.5) * Inv51 - 0.5;
        SinCosQuarter(f, out double s, out double c);
        uint q = (uint)(b53 >> 51);
        double sn = (q & 1) != 0 ? c : s, cs = (q & 1) != 0 ? s : c;
        if ((q & 2) != 0) sn = -sn;
        if (((q + 1) & 2) != 0) cs = -cs;
        z0 = r * cs;
        z1 = r * sn;
    }

    /// <summary>
    /// z0 of <see cref="Transform"/> alone, the same bits. z1 is z0 of the angle a quarter-turn back:
    /// <c>TransformCos(a, b − 2^62)</c> (the quadrant, b's top two bits, one less; the rest of b the same)
    /// gives z1's bits, which is how one step of a pair is drawn alone (<see cref="OfStep"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double TransformCos(ulong a, ulong b)
    {
        double r = Radius(a);
        ulong b53 = b >> 11;
        double f = ((double)(b53 & Low51) + 0.5) * Inv51 - 0.5;
        SinCosQuarter(f, out double s, out double c);
        uint q = (uint)(b53 >> 51);
        double cs = (q & 1) != 0 ? s : c;
        if (((q + 1) & 2) != 0) cs = -cs;
        return r * cs;
    }

    /// <summary>The normal of <paramref name="step"/> from its pair's block: z0 for an even step, z1 for an odd one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double OfStep(UInt4 b, ulong step)
        => TransformCos(b.X | ((ulong)b.Y << 32), (b.Z | ((ulong)b.W << 32)) - ((step & 1) << 62));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double Radius(ulong a) => Math.Sqrt(-2.0 * Log(((double)(a >> 11) + 0.5) * Inv53));

    /// <summary>Two standard normals from one Philox block (one lane's steps 2t and 2t + 1 for block (k, t)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void BoxMuller(UInt4 b, out double z0, out double z1)
        => Transform(b.X | ((ulong)b.Y << 32), b.Z | ((ulong)b.W << 32), out z0, out z1);

    /// <summary>
    /// Makes <see cref="Fill(ulong, ulong, ulong, uint, double*, int)"/> use the scalar form on the current
    /// thread. The bits are the same either way; tests use it to run the scalar form through the engines.
    /// </summary>
    [ThreadStatic] public static bool ScalarOnThisThread;
    /// <summary>Process-wide: the scalar form on every thread (the same bits; for tests and measurements).</summary>
    public static volatile bool ForceScalar;

    /// <summary>Whether the vector forms run here (AVX2, and not switched off).</summary>
    public static bool VectorUsable
    {
        // read by the optimised fill methods: inlined there, never a tier-0 call
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Avx2.IsSupported && !ForceScalar && !ScalarOnThisThread;
    }

    /// <summary>
    /// Lanes 0..count−1 of the standard normals of (path, step) in stream <paramref name="tag"/>, one step
    /// alone: a block per lane (a caller stepping through steps draws pairs, <see cref="StepNormals"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Fill(ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        if (count >= 3 && Avx2.IsSupported && !ScalarOnThisThread && !ForceScalar) FillAvx2(seed, path, step, tag, dst, count);
        else FillScalar(seed, path, step, tag, dst, count);
    }

    /// <summary>The portable form of <see cref="Fill(ulong, ulong, ulong, uint, double*, int)"/>: one block per lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called every step: never run at tier 0
    public static unsafe void FillScalar(ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        ulong pair = step >> 1;
        for (int k = 0; k < count; k++) dst[k] = OfStep(Philox.Draw(seed, path, pair, tag, (uint)k), step);
    }

    /// <summary>
    /// Lanes 0..count−1 at steps 2·<paramref name="pair"/> (into <paramref name="even"/>) and 2·pair + 1
    /// (into <paramref name="odd"/>): one block per lane for both, the same bits as two calls of
    /// <see cref="Fill(ulong, ulong, ulong, uint, double*, int)"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void FillPair(ulong seed, ulong path, ulong pair, uint tag, double* even, double* odd, int count)
    {
        if (count >= 2 && Avx2.IsSupported && !ScalarOnThisThread && !ForceScalar) FillPairAvx2(seed, path, pair, tag, even, odd, count);
        else FillPairScalar(seed, path, pair, tag, even, odd, count);
    }

    /// <summary>The portable form of <see cref="FillPair"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void FillPairScalar(ulong seed, ulong path, ulong pair, uint tag, double* even, double* odd, int count)
    {
        for (int k = 0; k < count; k++) BoxMuller(Philox.Draw(seed, path, pair, tag, (uint)k), out even[k], out odd[k]);
    }

    // ---- vector forms: the same operations lane-wise ----

    /// <summary>Ten Philox rounds on four counters in the low halves of 64-bit lanes: per lane the block of
    /// <see cref="Philox.Block"/> (also the birth–death draws of <c>Resampling</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void PhiloxV(ref Vector256<ulong> x0, ref Vector256<ulong> x1, ref Vector256<ulong> x2, ref Vector256<ulong> x3, uint k0, uint k1)
    {
        var m0 = Vector256.Create((ulong)Philox.M0).AsUInt32();
        var m1 = Vector256.Create((ulong)Philox.M1).AsUInt32();
        for (int r = 0; r < 10; r++)
        {
            // High halves of the 64-bit lanes may hold junk between rounds: the multiplies read only
            // the low 32 bits, and the junk is masked (or shifted out) at the end.
            var p0 = Avx2.Multiply(x0.AsUInt32(), m0);
            var p1 = Avx2.Multiply(x2.AsUInt32(), m1);
            x0 = (p1 >> 32) ^ x1 ^ Vector256.Create((ulong)k0);
            x1 = p1;
            x2 = (p0 >> 32) ^ x3 ^ Vector256.Create((ulong)k1);
            x3 = p0;
            k0 += Philox.W0; k1 += Philox.W1;
        }
    }

    /// <summary>Two sets of four counters through <see cref="PhiloxV"/>'s rounds, interleaved.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PhiloxV2(ref Vector256<ulong> x0, ref Vector256<ulong> x1, ref Vector256<ulong> x2, ref Vector256<ulong> x3,
                         ref Vector256<ulong> y0, ref Vector256<ulong> y1, ref Vector256<ulong> y2, ref Vector256<ulong> y3, uint k0, uint k1)
    {
        var m0 = Vector256.Create((ulong)Philox.M0).AsUInt32();
        var m1 = Vector256.Create((ulong)Philox.M1).AsUInt32();
        for (int r = 0; r < 10; r++)
        {
            var kv0 = Vector256.Create((ulong)k0);
            var kv1 = Vector256.Create((ulong)k1);
            var p0 = Avx2.Multiply(x0.AsUInt32(), m0);
            var p1 = Avx2.Multiply(x2.AsUInt32(), m1);
            var q0 = Avx2.Multiply(y0.AsUInt32(), m0);
            var q1 = Avx2.Multiply(y2.AsUInt32(), m1);
            x0 = (p1 >> 32) ^ x1 ^ kv0;
            x1 = p1;
            x2 = (p0 >> 32) ^ x3 ^ kv1;
            x3 = p0;
            y0 = (q1 >> 32) ^ y1 ^ kv0;
            y1 = q1;
            y2 = (q0 >> 32) ^ y3 ^ kv1;
            y3 = q0;
            k0 += Philox.W0; k1 += Philox.W1;
        }
    }

    /// <summary>
    /// <see cref="PhiloxV2"/> with the round keys broadcast beforehand (keys[2r], keys[2r + 1] for round r):
    /// a batch's chains share them, so each round's key is one operand read from memory, not two broadcasts.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void PhiloxV2Keyed(ref Vector256<ulong> x0, ref Vector256<ulong> x1, ref Vector256<ulong> x2, ref Vector256<ulong> x3,
                                     ref Vector256<ulong> y0, ref Vector256<ulong> y1, ref Vector256<ulong> y2, ref Vector256<ulong> y3, Vector256<ulong>* keys)
    {
        var m0 = Vector256.Create((ulong)Philox.M0).AsUInt32();
        var m1 = Vector256.Create((ulong)Philox.M1).AsUInt32();
        for (int r = 0; r < 20; r += 2)
        {
            var p0 = Avx2.Multiply(x0.AsUInt32(), m0);
            var p1 = Avx2.Multiply(x2.AsUInt32(), m1);
            var q0 = Avx2.Multiply(y0.AsUInt32(), m0);
            var q1 = Avx2.Multiply(y2.AsUInt32(), m1);
            x0 = (p1 >> 32) ^ x1 ^ keys[r];
            x1 = p1;
            x2 = (p0 >> 32) ^ x3 ^ keys[r + 1];
            x3 = p0;
            y0 = (q1 >> 32) ^ y1 ^ keys[r];
            y1 = q1;
            y2 = (q0 >> 32) ^ y3 ^ keys[r + 1];
            y3 = q0;
        }
    }

    /// <summary>The 20 round keys of <paramref name="seed"/>, broadcast, for <see cref="PhiloxV2Keyed"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void RoundKeys(ulong seed, Vector256<ulong>* keys)
    {
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        for (int r = 0; r < 10; r++, k0 += Philox.W0, k1 += Philox.W1)
        {
            keys[2 * r] = Vector256.Create((ulong)k0);
            keys[2 * r + 1] = Vector256.Create((ulong)k1);
        }
    }

    /// <summary>Integers below 2^52 to double, exactly (the 2^52 bit-pattern trick).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> Small52(Vector256<ulong> v)
        => (v | Vector256.Create(0x4330000000000000UL)).AsDouble() - Vector256.Create(4503599627370496.0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> LogV(Vector256<double> x) => LogScaled(x, Vector256<double>.Zero);

    /// <summary><see cref="Transform"/> on four (a, b) pairs: z0 = r cos, z1 = r sin, lane-wise the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void TransformV(Vector256<ulong> a, Vector256<ulong> b, out Vector256<double> z0, out Vector256<double> z1)
    {
        // (a >> 11) < 2^53: halve it so the 2^52 trick applies, (h + h) + low bit is exact as in the scalar cast
        var a53 = a >> 11;
        var h = Small52(a53 >> 1);
        var u = ((h + h + Small52(a53 & Vector256<ulong>.One)) + Vector256.Create(0.5)) * Vector256.Create(Inv53);
        var r = Vector256.Sqrt(Vector256.Create(-2.0) * LogV(u));
        var b53 = b >> 11;
        var f = (Small52(b53 & Vector256.Create(Low51)) + Vector256.Create(0.5)) * Vector256.Create(Inv51) - Vector256.Create(0.5);
        var f2 = f * f;
        var ps = f2 * Vector256.Create(S8) + Vector256.Create(S7);
        ps = f2 * ps + Vector256.Create(S6);
        ps = f2 * ps + Vector256.Create(S5);
        ps = f2 * ps + Vector256.Create(S4);
        ps = f2 * ps + Vector256.Create(S3);
        ps = f2 * ps + Vector256.Create(S2);
        ps = f2 * ps + Vector256.Create(S1);
        ps = f2 * ps + Vector256.Create(S0);
        var pc = f2 * Vector256.Create(C8) + Vector256.Create(C7);
        pc = f2 * pc + Vector256.Create(C6);
        pc = f2 * pc + Vector256.Create(C5);
        pc = f2 * pc + Vector256.Create(C4);
        pc = f2 * pc + Vector256.Create(C3);
        pc = f2 * pc + Vector256.Create(C2);
        pc = f2 * pc + Vector256.Create(C1);
        var s = f * ps;
        var c = f2 * pc + Vector256.Create(1.0);
        var q = b53 >> 51;
        var swap = Vector256.Equals(q & Vector256<ulong>.One, Vector256<ulong>.One).AsDouble();
        var sn = Vector256.ConditionalSelect(swap, c, s);
        var cs = Vector256.ConditionalSelect(swap, s, c);
        // negation is a sign flip: q & 2 for the sine, (q + 1) & 2 for the cosine (quadrants 1 and 2)
        sn = (sn.AsUInt64() ^ ((q & Vector256.Create(2UL)) << 62)).AsDouble();
        cs = (cs.AsUInt64() ^ (((q + Vector256<ulong>.One) & Vector256.Create(2UL)) << 62)).AsDouble();
        z0 = r * cs;
        z1 = r * sn;
    }

    /// <summary>
    /// <see cref="TransformV"/> on two independent inputs, statement by statement interleaved (as
    /// <see cref="TransformCosV2"/>): each chain's long latencies (log's division and polynomial, the square
    /// root, the sine's and cosine's Horner steps) have the other chain's work beside them. The same
    /// operations on each, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void TransformV2(Vector256<ulong> a, Vector256<ulong> b, Vector256<ulong> c, Vector256<ulong> d,
                            out Vector256<double> z0, out Vector256<double> z1, out Vector256<double> w0, out Vector256<double> w1)
    {
        var half = Vector256.Create(0.5);
        var one = Vector256.Create(1.0);
        var a53 = a >> 11;
        var c53 = c >> 11;
        var ha = Small52(a53 >> 1);
        var hc = Small52(c53 >> 1);
        var ua = ((ha + ha + Small52(a53 & Vector256<ulong>.One)) + half) * Vector256.Create(Inv53);
        var uc = ((hc + hc + Small52(c53 & Vector256<ulong>.One)) + half) * Vector256.Create(Inv53);
        var offs = Vector256.Create(0x3ff0000000000000UL - SqrtHalfBits);
        var ia = ua.AsUInt64() + offs;
        var ic = uc.AsUInt64() + offs;
        var ka = Small52(ia >> 52) - Vector256.Create(1023.0);
        var kc = Small52(ic >> 52) - Vector256.Create(1023.0);
        var fa = ((ia & Vector256.Create(MantMask)) + Vector256.Create(SqrtHalfBits)).AsDouble() - one;
        var fc = ((ic & Vector256.Create(MantMask)) + Vector256.Create(SqrtHalfBits)).AsDouble() - one;
        var two = Vector256.Create(2.0);
        var sa = fa / (two + fa);
        var sc = fc / (two + fc);
        // the angles' polynomials while the divisions run
        var b53 = b >> 11;
        var d53 = d >> 11;
        var ga = (Small52(b53 & Vector256.Create(Low51)) + half) * Vector256.Create(Inv51) - half;
        var gc = (Small52(d53 & Vector256.Create(Low51)) + half) * Vector256.Create(Inv51) - half;
        var g2a = ga * ga;
        var g2c = gc * gc;
        var psa = g2a * Vector256.Create(S8) + Vector256.Create(S7);
        var psc = g2c * Vector256.Create(S8) + Vector256.Create(S7);
        var pca = g2a * Vector256.Create(C8) + Vector256.Create(C7);
        var pcc = g2c * Vector256.Create(C8) + Vector256.Create(C7);
        psa = g2a * psa + Vector256.Create(S6); psc = g2c * psc + Vector256.Create(S6);
        pca = g2a * pca + Vector256.Create(C6); pcc = g2c * pcc + Vector256.Create(C6);
        psa = g2a * psa + Vector256.Create(S5); psc = g2c * psc + Vector256.Create(S5);
        pca = g2a * pca + Vector256.Create(C5); pcc = g2c * pcc + Vector256.Create(C5);
        psa = g2a * psa + Vector256.Create(S4); psc = g2c * psc + Vector256.Create(S4);
        pca = g2a * pca + Vector256.Create(C4); pcc = g2c * pcc + Vector256.Create(C4);
        psa = g2a * psa + Vector256.Create(S3); psc = g2c * psc + Vector256.Create(S3);
        pca = g2a * pca + Vector256.Create(C3); pcc = g2c * pcc + Vector256.Create(C3);
        psa = g2a * psa + Vector256.Create(S2); psc = g2c * psc + Vector256.Create(S2);
        pca = g2a * pca + Vector256.Create(C2); pcc = g2c * pcc + Vector256.Create(C2);
        psa = g2a * psa + Vector256.Create(S1); psc = g2c * psc + Vector256.Create(S1);
        pca = g2a * pca + Vector256.Create(C1); pcc = g2c * pcc + Vector256.Create(C1);
        psa = g2a * psa + Vector256.Create(S0); psc = g2c * psc + Vector256.Create(S0);
        var sna = ga * psa;
        var snc = gc * psc;
        var csa = g2a * pca + one;
        var csc = g2c * pcc + one;
        // log (fdlibm) of ua and uc
        var hfa = half * fa * fa;
        var hfc = half * fc * fc;
        var za = sa * sa;
        var zc = sc * sc;
        var pa = za * Vector256.Create(Lg7) + Vector256.Create(Lg6);
        var pc = zc * Vector256.Create(Lg7) + Vector256.Create(Lg6);
        pa = za * pa + Vector256.Create(Lg5); pc = zc * pc + Vector256.Create(Lg5);
        pa = za * pa + Vector256.Create(Lg4); pc = zc * pc + Vector256.Create(Lg4);
        pa = za * pa + Vector256.Create(Lg3); pc = zc * pc + Vector256.Create(Lg3);
        pa = za * pa + Vector256.Create(Lg2); pc = zc * pc + Vector256.Create(Lg2);
        pa = za * pa + Vector256.Create(Lg1); pc = zc * pc + Vector256.Create(Lg1);
        var ra = za * pa;
        var rc = zc * pc;
        var la = ka * Vector256.Create(Ln2Hi) + (((sa * (hfa + ra) + ka * Vector256.Create(Ln2Lo)) - hfa) + fa);
        var lc = kc * Vector256.Create(Ln2Hi) + (((sc * (hfc + rc) + kc * Vector256.Create(Ln2Lo)) - hfc) + fc);
        var rada = Vector256.Sqrt(Vector256.Create(-2.0) * la);
        var radc = Vector256.Sqrt(Vector256.Create(-2.0) * lc);
        // quadrants: swap sine and cosine for odd q, sign flips as in TransformV
        var qa = b53 >> 51;
        var qc = d53 >> 51;
        var swa = Vector256.Equals(qa & Vector256<ulong>.One, Vector256<ulong>.One).AsDouble();
        var swc = Vector256.Equals(qc & Vector256<ulong>.One, Vector256<ulong>.One).AsDouble();
        var xsa = Vector256.ConditionalSelect(swa, csa, sna);
        var xca = Vector256.ConditionalSelect(swa, sna, csa);
        var xsc = Vector256.ConditionalSelect(swc, csc, snc);
        var xcc = Vector256.ConditionalSelect(swc, snc, csc);
        xsa = (xsa.AsUInt64() ^ ((qa & Vector256.Create(2UL)) << 62)).AsDouble();
        xca = (xca.AsUInt64() ^ (((qa + Vector256<ulong>.One) & Vector256.Create(2UL)) << 62)).AsDouble();
        xsc = (xsc.AsUInt64() ^ ((qc & Vector256.Create(2UL)) << 62)).AsDouble();
        xcc = (xcc.AsUInt64() ^ (((qc + Vector256<ulong>.One) & Vector256.Create(2UL)) << 62)).AsDouble();
        z0 = rada * xca;
        z1 = rada * xsa;
        w0 = radc * xcc;
        w1 = radc * xsc;
    }

    /// <summary>The 64-bit halves (X | Y≪32, Z | W≪32) of four Philox outputs held in 64-bit lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Halves(Vector256<ulong> x0, Vector256<ulong> x1, Vector256<ulong> x2, Vector256<ulong> x3, out Vector256<ulong> a, out Vector256<ulong> b)
    {
        var mask = Vector256.Create(0xFFFFFFFFUL);
        a = (x0 & mask) | (x1 << 32);
        b = (x2 & mask) | (x3 << 32);
    }

    /// <summary>Philox's counter words 1..3 for (path, step word, tag), broadcast.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Counters(ulong path, ulong word, uint tag, out Vector256<ulong> c1, out Vector256<ulong> c2, out Vector256<ulong> c3)
    {
        c1 = Vector256.Create((ulong)(uint)word);
        c2 = Vector256.Create((ulong)(uint)path);
        c3 = Vector256.Create((ulong)((uint)(path >> 32) ^ ((uint)(word >> 32) << 16) ^ (tag << 28)));
    }

    /// <summary>Philox's counter words 2 and 3 of four consecutive paths (word 3 without the step's high bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PathCounters(ulong path0, uint tag, out Vector256<ulong> c2, out Vector256<ulong> c3)
    {
        ulong p1 = path0 + 1, p2 = path0 + 2, p3 = path0 + 3;
        uint tg = tag << 28;
        c2 = Vector256.Create((ulong)(uint)path0, (uint)p1, (uint)p2, (uint)p3);
        c3 = Vector256.Create((ulong)((uint)(path0 >> 32) ^ tg), (uint)(p1 >> 32) ^ tg, (uint)(p2 >> 32) ^ tg, (uint)(p3 >> 32) ^ tg);
    }

    /// <summary>Counter word 3's share of a step word's high bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<ulong> HighWord(ulong word) => Vector256.Create((ulong)((uint)(word >> 32) << 16));

    /// <summary>Lanes k .. k+3 as four counter words 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<ulong> LaneWords(int k) => Vector256.Create((ulong)(uint)k, (uint)(k + 1), (uint)(k + 2), (uint)(k + 3));

    /// <summary>
    /// One step of one path: four lanes' blocks per vector (eight, two chains, while they fill), each lane
    /// the output its step picks (<see cref="TransformCosV"/> of b, or of b − 2^62 for an odd step).
    /// A last partial group is computed in full and copied: the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void FillAvx2(ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        double* tmp = stackalloc double[4];
        Counters(path, step >> 1, tag, out var c1, out var c2, out var c3);
        var back = Vector256.Create((step & 1) << 62);
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        int k = 0;
        for (; count - k >= 8; k += 8)
        {
            var x0 = LaneWords(k);
            var y0 = x0 + Vector256.Create(4UL);
            var x1 = c1; var x2 = c2; var x3 = c3;
            var y1 = c1; var y2 = c2; var y3 = c3;
            PhiloxV2(ref x0, ref x1, ref x2, ref x3, ref y0, ref y1, ref y2, ref y3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            Halves(y0, y1, y2, y3, out var a2, out var b2);
            TransformCosV2(a, b - back, a2, b2 - back, out var z, out var w);
            z.Store(dst + k);
            w.Store(dst + k + 4);
        }
        for (; k < count; k += 4)
        {
            var x0 = LaneWords(k);
            var x1 = c1; var x2 = c2; var x3 = c3;
            PhiloxV(ref x0, ref x1, ref x2, ref x3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            var z = TransformCosV(a, b - back);
            if (k + 4 <= count) z.Store(dst + k);
            else
            {
                z.Store(tmp);
                for (int i = k; i < count; i++) dst[i] = tmp[i - k];
            }
        }
    }

    /// <summary>A step pair of one path: four lanes' blocks per vector, both outputs of each (<see cref="TransformV"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void FillPairAvx2(ulong seed, ulong path, ulong pair, uint tag, double* even, double* odd, int count)
    {
        double* tmp = stackalloc double[8];
        Counters(path, pair, tag, out var c1, out var c2, out var c3);
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        int k = count >= 8 && WideUsable ? FillPairWide(seed, path, pair, tag, even, odd, count) : 0;
        for (; count - k >= 8; k += 8)
        {
            var x0 = LaneWords(k);
            var y0 = x0 + Vector256.Create(4UL);
            var x1 = c1; var x2 = c2; var x3 = c3;
            var y1 = c1; var y2 = c2; var y3 = c3;
            PhiloxV2(ref x0, ref x1, ref x2, ref x3, ref y0, ref y1, ref y2, ref y3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            Halves(y0, y1, y2, y3, out var a2, out var b2);
            TransformV2(a, b, a2, b2, out var z0, out var z1, out var w0, out var w1);
            z0.Store(even + k);
            z1.Store(odd + k);
            w0.Store(even + k + 4);
            w1.Store(odd + k + 4);
        }
        for (; k < count; k += 4)
        {
            var x0 = LaneWords(k);
            var x1 = c1; var x2 = c2; var x3 = c3;
            PhiloxV(ref x0, ref x1, ref x2, ref x3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            TransformV(a, b, out var z0, out var z1);
            if (k + 4 <= count)
            {
                z0.Store(even + k);
                z1.Store(odd + k);
            }
            else
            {
                z0.Store(tmp);
                z1.Store(tmp + 4);
                for (int i = k; i < count; i++) { even[i] = tmp[i - k]; odd[i] = tmp[4 + i - k]; }
            }
        }
    }

    /// <summary>
    /// One path's lanes 0..count−1 at four consecutive step pairs pair0 .. pair0 + 3: even[k·4 + j] and odd[k·4 + j]
    /// are lane k at steps 2(pair0 + j) and 2(pair0 + j) + 1, the bits of <see cref="FillPair"/> of each pair. The
    /// vector lanes run over the pairs (only Philox's counter words 1 and 3 differ), so a path with few noise lanes
    /// draws four blocks per vector operation where <see cref="FillPair"/> would draw one, in scalar code.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void FillPairsAcrossSteps4(ulong seed, ulong path, ulong pair0, uint tag, double* even, double* odd, int count)
    {
        if (!VectorUsable)
        {
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < count; l++)
                    BoxMuller(Philox.Draw(seed, path, pair0 + (ulong)j, tag, (uint)l), out even[l * 4 + j], out odd[l * 4 + j]);
            return;
        }
        ulong p1 = pair0 + 1, p2 = pair0 + 2, p3 = pair0 + 3;
        uint hi = (uint)(path >> 32) ^ (tag << 28);
        var c1 = Vector256.Create((ulong)(uint)pair0, (uint)p1, (uint)p2, (uint)p3);
        var c2 = Vector256.Create((ulong)(uint)path);
        var c3 = Vector256.Create((ulong)(hi ^ ((uint)(pair0 >> 32) << 16)), hi ^ ((uint)(p1 >> 32) << 16), hi ^ ((uint)(p2 >> 32) << 16), hi ^ ((uint)(p3 >> 32) << 16));
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        for (int l = 0; l < count; l++)
        {
            var x0 = Vector256.Create((ulong)(uint)l);
            var x1 = c1; var x2 = c2; var x3 = c3;
            PhiloxV(ref x0, ref x1, ref x2, ref x3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            TransformV(a, b, out var z0, out var z1);
            z0.Store(even + 4 * l);
            z1.Store(odd + 4 * l);
        }
    }

    /// <summary>
    /// The normals of four consecutive paths at one step: dst[k·4 + j] = lane k of path path0 + j, the same
    /// bits as <see cref="Fill(ulong, ulong, ulong, uint, double*, int)"/> of that path (a test checks it).
    /// The four vector lanes run over the paths (only Philox's counter differs), two lanes per iteration.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void FillAcrossPaths4(ulong seed, ulong path0, ulong step, uint tag, double* dst, int count)
    {
        if (!VectorUsable)
        {
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < count; l++)
                    dst[l * 4 + j] = OfStep(Philox.Draw(seed, path0 + (ulong)j, step >> 1, tag, (uint)l), step);
            return;
        }
        ulong pair = step >> 1;
        PathCounters(path0, tag, out var c2, out var c3);
        c3 ^= HighWord(pair);
        var c1 = Vector256.Create((ulong)(uint)pair);
        var back = Vector256.Create((step & 1) << 62);
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        int k = 0;
        for (; count - k >= 2; k += 2)
        {
            // two lanes at once: independent chains the core overlaps
            var x0 = Vector256.Create((ulong)(uint)k);
            var y0 = x0 + Vector256<ulong>.One;
            var x1 = c1; var x2 = c2; var x3 = c3;
            var y1 = c1; var y2 = c2; var y3 = c3;
            PhiloxV2(ref x0, ref x1, ref x2, ref x3, ref y0, ref y1, ref y2, ref y3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            Halves(y0, y1, y2, y3, out var a2, out var b2);
            TransformCosV2(a, b - back, a2, b2 - back, out var z, out var w);
            z.Store(dst + k * 4);
            w.Store(dst + (k + 1) * 4);
        }
        if (k < count)
        {
            var x0 = Vector256.Create((ulong)(uint)k);
            var x1 = c1; var x2 = c2; var x3 = c3;
            PhiloxV(ref x0, ref x1, ref x2, ref x3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            TransformCosV(a, b - back).Store(dst + k * 4);
        }
    }

    /// <summary>
    /// <see cref="FillAcrossPaths4"/> at steps 2·<paramref name="pair"/> (into <paramref name="even"/>) and
    /// 2·pair + 1 (into <paramref name="odd"/>), both from each lane's block: the same bits as two calls.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void FillAcrossPaths4Pair(ulong seed, ulong path0, ulong pair, uint tag, double* even, double* odd, int count)
    {
        if (!VectorUsable)
        {
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < count; l++)
                    BoxMuller(Philox.Draw(seed, path0 + (ulong)j, pair, tag, (uint)l), out even[l * 4 + j], out odd[l * 4 + j]);
            return;
        }
        PathCounters(path0, tag, out var c2, out var c3);
        c3 ^= HighWord(pair);
        var c1 = Vector256.Create((ulong)(uint)pair);
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        int k = count >= 2 && WideUsable ? FillAcrossPaths4PairWide(seed, path0, pair, tag, even, odd, count) : 0;
        for (; count - k >= 2; k += 2)
        {
            var x0 = Vector256.Create((ulong)(uint)k);
            var y0 = x0 + Vector256<ulong>.One;
            var x1 = c1; var x2 = c2; var x3 = c3;
            var y1 = c1; var y2 = c2; var y3 = c3;
            PhiloxV2(ref x0, ref x1, ref x2, ref x3, ref y0, ref y1, ref y2, ref y3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            Halves(y0, y1, y2, y3, out var a2, out var b2);
            TransformV2(a, b, a2, b2, out var z0, out var z1, out var w0, out var w1);
            z0.Store(even + k * 4);
            z1.Store(odd + k * 4);
            w0.Store(even + (k + 1) * 4);
            w1.Store(odd + (k + 1) * 4);
        }
        if (k < count)
        {
            var x0 = Vector256.Create((ulong)(uint)k);
            var x1 = c1; var x2 = c2; var x3 = c3;
            PhiloxV(ref x0, ref x1, ref x2, ref x3, k0, k1);
            Halves(x0, x1, x2, x3, out var a, out var b);
            TransformV(a, b, out var z0, out var z1);
            z0.Store(even + k * 4);
            z1.Store(odd + k * 4);
        }
    }

    /// <summary>Step pairs per pass of <see cref="FillAcrossPaths4Steps"/>: their Philox outputs wait on the stack (512 B).</summary>
    const int PairChunk = 8;

    /// <summary>
    /// The normals of four consecutive paths at <paramref name="steps"/> consecutive steps:
    /// dst[(s·count + k)·4 + j] = lane k of path path0 + j at step step0 + s, the same bits as
    /// <see cref="FillAcrossPaths4"/> of each step (so as <see cref="Fill(ulong, ulong, ulong, uint, double*, int)"/>
    /// of each path). A step's normals do not depend on the state, so the engine draws several steps at
    /// once: each lane's block gives its two steps of a pair, and a model with one to three noises has
    /// only a few short dependency chains per step (Philox's ten rounds, then log, division, square root)
    /// that leave the core mostly waiting; many pairs' chains in flight fill it. Any steps, counts and
    /// first step (an odd first or last step is drawn alone; a batch may cross a 2^32 step pair).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit] // its stack buffers are written before they are read
    public static unsafe void FillAcrossPaths4Steps(ulong seed, ulong path0, ulong step0, int steps, uint tag, double* dst, int count)
    {
        if (count <= 0 || steps <= 0) return;
        int stride = 4 * count;
        if (!VectorUsable)
        {
            for (int s = 0; s < steps; s++) FillAcrossPaths4(seed, path0, step0 + (ulong)s, tag, dst + s * stride, count);
            return;
        }
        int first = 0;
        if ((step0 & 1) != 0) { FillAcrossPaths4(seed, path0, step0, tag, dst, count); first = 1; }
        int pairs = (steps - first) >> 1;
        ulong pair0 = (step0 + (ulong)first) >> 1;
        if (pairs >= 2 && WideUsable)
        {
            // two step pairs per 512-bit vector; an odd last pair below
            int wide = pairs & ~1;
            FillAcrossPaths4PairsWide(seed, path0, pair0, wide, tag, dst + first * stride, count);
            first += 2 * wide;
            pairs -= wide;
            pair0 += (ulong)wide;
        }
        PathCounters(path0, tag, out var c2, out var c3p);
        var keys = stackalloc Vector256<ulong>[20];
        RoundKeys(seed, keys);
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        // Two passes per lane: Philox for up to PairChunk pairs, then the transform of each. Each loop's
        // iterations are independent and short, so the core runs several of them at once, and few
        // registers are live (no spills).
        var ha = stackalloc Vector256<ulong>[PairChunk];
        var hb = stackalloc Vector256<ulong>[PairChunk];
        for (int q0 = 0; q0 < pairs; q0 += PairChunk)
        {
            int nq = Math.Min(PairChunk, pairs - q0);
            for (int k = 0; k < count; k++)
            {
                var x0b = Vector256.Create((ulong)(uint)k);
                int q = 0;
                for (; q + 2 <= nq; q += 2)
                {
                    ulong t = pair0 + (ulong)(q0 + q), tu = t + 1;
                    var x0 = x0b; var x1 = Vector256.Create((ulong)(uint)t); var x2 = c2; var x3 = c3p ^ HighWord(t);
                    var y0 = x0b; var y1 = Vector256.Create((ulong)(uint)tu); var y2 = c2; var y3 = c3p ^ HighWord(tu);
                    PhiloxV2Keyed(ref x0, ref x1, ref x2, ref x3, ref y0, ref y1, ref y2, ref y3, keys);
                    Halves(x0, x1, x2, x3, out ha[q], out hb[q]);
                    Halves(y0, y1, y2, y3, out ha[q + 1], out hb[q + 1]);
                }
                if (q < nq)
                {
                    ulong t = pair0 + (ulong)(q0 + q);
                    var x0 = x0b; var x1 = Vector256.Create((ulong)(uint)t); var x2 = c2; var x3 = c3p ^ HighWord(t);
                    PhiloxV(ref x0, ref x1, ref x2, ref x3, k0, k1);
                    Halves(x0, x1, x2, x3, out ha[q], out hb[q]);
                }
                double* o = dst + ((first + 2 * q0) * count + k) * 4;
                for (q = 0; q + 2 <= nq; q += 2, o += 4 * stride)
                {
                    TransformV2(ha[q], hb[q], ha[q + 1], hb[q + 1], out var z0, out var z1, out var w0, out var w1);
                    z0.Store(o);
                    z1.Store(o + stride);
                    w0.Store(o + 2 * stride);
                    w1.Store(o + 3 * stride);
                }
                if (q < nq)
                {
                    TransformV(ha[q], hb[q], out var z0, out var z1);
                    z0.Store(o);
                    z1.Store(o + stride);
                }
            }
        }
        int done = first + 2 * pairs;
        if (done < steps) FillAcrossPaths4(seed, path0, step0 + (ulong)done, tag, dst + done * stride, count);
    }

    /// <summary>One Horner step p ← f²·p + coefficient of the sine's (sign bit of <paramref name="sine"/> set) or
    /// the cosine's polynomial, the coefficient picked per lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> SinCosStep(Vector256<double> p, Vector256<double> f2, double c, double s, Vector256<double> sine) =>
        f2 * p + Avx.BlendVariable(Vector256.Create(c), Vector256.Create(s), sine);

    /// <summary>
    /// <see cref="TransformCosV"/> on two independent inputs, statement by statement interleaved: one chain is
    /// a long latency path (log's division and polynomial, the square root), and the core's scheduler fills
    /// with one chain's waiting operations before it reaches the next chain's; side by side, each has work
    /// ready while the other waits (measured: about 15% more normals per second with one noise). The same
    /// operations on each, so the same bits. Too large for the JIT to inline: a call, optimised at once.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void TransformCosV2(Vector256<ulong> a, Vector256<ulong> b, Vector256<ulong> c, Vector256<ulong> d, out Vector256<double> z, out Vector256<double> w)
    {
        var half = Vector256.Create(0.5);
        var a53 = a >> 11;
        var c53 = c >> 11;
        var ha = Small52(a53 >> 1);
        var hc = Small52(c53 >> 1);
        var ua = ((ha + ha + Small52(a53 & Vector256<ulong>.One)) + half) * Vector256.Create(Inv53);
        var uc = ((hc + hc + Small52(c53 & Vector256<ulong>.One)) + half) * Vector256.Create(Inv53);
        // LogV on ua and uc
        var offs = Vector256.Create(0x3ff0000000000000UL - SqrtHalfBits);
        var ia = ua.AsUInt64() + offs;
        var ic = uc.AsUInt64() + offs;
        var ka = Small52(ia >> 52) - Vector256.Create(1023.0);
        var kc = Small52(ic >> 52) - Vector256.Create(1023.0);
        var one = Vector256.Create(1.0);
        var fa = ((ia & Vector256.Create(MantMask)) + Vector256.Create(SqrtHalfBits)).AsDouble() - one;
        var fc = ((ic & Vector256.Create(MantMask)) + Vector256.Create(SqrtHalfBits)).AsDouble() - one;
        var two = Vector256.Create(2.0);
        var sa = fa / (two + fa);
        var sc = fc / (two + fc);
        var hfa = half * fa * fa;
        var hfc = half * fc * fc;
        var za = sa * sa;
        var zc = sc * sc;
        var pa = za * Vector256.Create(Lg7) + Vector256.Create(Lg6);
        var pc = zc * Vector256.Create(Lg7) + Vector256.Create(Lg6);
        pa = za * pa + Vector256.Create(Lg5);
        pc = zc * pc + Vector256.Create(Lg5);
        pa = za * pa + Vector256.Create(Lg4);
        pc = zc * pc + Vector256.Create(Lg4);
        pa = za * pa + Vector256.Create(Lg3);
        pc = zc * pc + Vector256.Create(Lg3);
        pa = za * pa + Vector256.Create(Lg2);
        pc = zc * pc + Vector256.Create(Lg2);
        pa = za * pa + Vector256.Create(Lg1);
        pc = zc * pc + Vector256.Create(Lg1);
        var ra = za * pa;
        var rc = zc * pc;
        var la = ka * Vector256.Create(Ln2Hi) + (((sa * (hfa + ra) + ka * Vector256.Create(Ln2Lo)) - hfa) + fa);
        var lc = kc * Vector256.Create(Ln2Hi) + (((sc * (hfc + rc) + kc * Vector256.Create(Ln2Lo)) - hfc) + fc);
        var rada = Vector256.Sqrt(Vector256.Create(-2.0) * la);
        var radc = Vector256.Sqrt(Vector256.Create(-2.0) * lc);
        // the angles
        var b53 = b >> 11;
        var d53 = d >> 11;
        var ga = (Small52(b53 & Vector256.Create(Low51)) + half) * Vector256.Create(Inv51) - half;
        var gc = (Small52(d53 & Vector256.Create(Low51)) + half) * Vector256.Create(Inv51) - half;
        var g2a = ga * ga;
        var g2c = gc * gc;
        var b1 = b << 1;
        var d1 = d << 1;
        var sinea = b1.AsDouble();
        var sinec = d1.AsDouble();
        var qa = g2a * Avx.BlendVariable(Vector256.Create(C8), Vector256.Create(S8), sinea) + Avx.BlendVariable(Vector256.Create(C7), Vector256.Create(S7), sinea);
        var qc = g2c * Avx.BlendVariable(Vector256.Create(C8), Vector256.Create(S8), sinec) + Avx.BlendVariable(Vector256.Create(C7), Vector256.Create(S7), sinec);
        qa = SinCosStep(qa, g2a, C6, S6, sinea);
        qc = SinCosStep(qc, g2c, C6, S6, sinec);
        qa = SinCosStep(qa, g2a, C5, S5, sinea);
        qc = SinCosStep(qc, g2c, C5, S5, sinec);
        qa = SinCosStep(qa, g2a, C4, S4, sinea);
        qc = SinCosStep(qc, g2c, C4, S4, sinec);
        qa = SinCosStep(qa, g2a, C3, S3, sinea);
        qc = SinCosStep(qc, g2c, C3, S3, sinec);
        qa = SinCosStep(qa, g2a, C2, S2, sinea);
        qc = SinCosStep(qc, g2c, C2, S2, sinec);
        qa = SinCosStep(qa, g2a, C1, S1, sinea);
        qc = SinCosStep(qc, g2c, C1, S1, sinec);
        qa = g2a * qa + Avx.BlendVariable(one, Vector256.Create(S0), sinea);
        qc = g2c * qc + Avx.BlendVariable(one, Vector256.Create(S0), sinec);
        var csa = qa * Avx.BlendVariable(one, ga, sinea);
        var csc = qc * Avx.BlendVariable(one, gc, sinec);
        var sign = Vector256.Create(0x8000000000000000UL);
        csa = (csa.AsUInt64() ^ ((b ^ b1) & sign)).AsDouble();
        csc = (csc.AsUInt64() ^ ((d ^ d1) & sign)).AsDouble();
        z = rada * csa;
        w = radc * csc;
    }

    /// <summary>
    /// z0 of <see cref="TransformV"/> alone, the same bits: the sine's and the cosine's polynomials have the
    /// same shape (eight steps p ← f²·p + coefficient, then ×f for the sine, for the cosine its last
    /// coefficient 1 and ×1, which is exact), so each lane evaluates only the one its quadrant picks,
    /// with that polynomial's coefficients selected per lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> TransformCosV(Vector256<ulong> a, Vector256<ulong> b)
    {
        var a53 = a >> 11;
        var h = Small52(a53 >> 1);
        var u = ((h + h + Small52(a53 & Vector256<ulong>.One)) + Vector256.Create(0.5)) * Vector256.Create(Inv53);
        var r = Vector256.Sqrt(Vector256.Create(-2.0) * LogV(u));
        var b53 = b >> 11;
        var f = (Small52(b53 & Vector256.Create(Low51)) + Vector256.Create(0.5)) * Vector256.Create(Inv51) - Vector256.Create(0.5);
        var f2 = f * f;
        // the quadrant q is b's top two bits: q odd (bit 62) takes the sine, the blends read only the
        // sign bit, so b ≪ 1 is the mask; the sign flips for q = 1, 2, i.e. bit 63 ≠ bit 62
        var b1 = b << 1;
        var sine = b1.AsDouble();
        var p = f2 * Avx.BlendVariable(Vector256.Create(C8), Vector256.Create(S8), sine) + Avx.BlendVariable(Vector256.Create(C7), Vector256.Create(S7), sine);
        p = SinCosStep(p, f2, C6, S6, sine);
        p = SinCosStep(p, f2, C5, S5, sine);
        p = SinCosStep(p, f2, C4, S4, sine);
        p = SinCosStep(p, f2, C3, S3, sine);
        p = SinCosStep(p, f2, C2, S2, sine);
        p = SinCosStep(p, f2, C1, S1, sine);
        p = f2 * p + Avx.BlendVariable(Vector256.Create(1.0), Vector256.Create(S0), sine);
        var cs = p * Avx.BlendVariable(Vector256.Create(1.0), f, sine);
        cs = (cs.AsUInt64() ^ ((b ^ b1) & Vector256.Create(0x8000000000000000UL))).AsDouble();
        return r * cs;
    }

    /// <summary>
    /// Lanes 0 and 1 of four consecutive paths, path-major: z[2j], z[2j+1] = lanes 0, 1 of path path0 + j
    /// (the weighted engine's layout; the same bits as <see cref="Fill(ulong, ulong, ulong, uint, double*, int)"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void FillFirstLanes4(ulong seed, ulong path0, ulong step, uint tag, double* z)
    {
        if (!VectorUsable)
        {
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 2; k++)
                    z[2 * j + k] = OfStep(Philox.Draw(seed, path0 + (ulong)j, step >> 1, tag, (uint)k), step);
            return;
        }
        ulong pair = step >> 1;
        PathCounters(path0, tag, out var c2, out var c3);
        c3 ^= HighWord(pair);
        var c1 = Vector256.Create((ulong)(uint)pair);
        var back = Vector256.Create((step & 1) << 62);
        var x0 = Vector256<ulong>.Zero; var x1 = c1; var x2 = c2; var x3 = c3;
        var y0 = Vector256<ulong>.One; var y1 = c1; var y2 = c2; var y3 = c3;
        PhiloxV2(ref x0, ref x1, ref x2, ref x3, ref y0, ref y1, ref y2, ref y3, (uint)seed, (uint)(seed >> 32));
        Halves(x0, x1, x2, x3, out var a, out var b);
        Halves(y0, y1, y2, y3, out var a2, out var b2);
        TransformCosV2(a, b - back, a2, b2 - back, out var z0, out var z1);
        // unpack gives (p0 lane 0, p0 lane 1, p2 ..., p2 ...) and (p1 ..., p3 ...); the permutes put them in path order
        var lo = Avx.UnpackLow(z0, z1);
        var hi2 = Avx.UnpackHigh(z0, z1);
        Avx.Permute2x128(lo, hi2, 0x20).Store(z);
        Avx.Permute2x128(lo, hi2, 0x31).Store(z + 4);
    }

    /// <inheritdoc cref="Fill(ulong, ulong, ulong, uint, double*, int)"/>
    public static unsafe void Fill(ulong seed, ulong path, ulong step, uint tag, Span<double> dst)
    {
        fixed (double* p = dst) Fill(seed, path, step, tag, p, dst.Length);
    }

    /// <summary>Lanes 0..count−1 of uniforms on (0, 1): lane 2j and 2j+1 are the two 64-bit halves of block j.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void FillUniform(ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        uint blk = 0;
        int k = 0;
        for (; k + 1 < count; k += 2, blk++)
        {
            UInt4 b = Philox.Draw(seed, path, step, tag, blk);
            dst[k] = ToUniform(b.X | ((ulong)b.Y << 32));
            dst[k + 1] = ToUniform(b.Z | ((ulong)b.W << 32));
        }
        if (k < count)
        {
            UInt4 b = Philox.Draw(seed, path, step, tag, blk);
            dst[k] = ToUniform(b.X | ((ulong)b.Y << 32));
        }
    }

    /// <inheritdoc cref="FillScalar(ulong, ulong, ulong, uint, double*, int)"/>
    public static unsafe void FillScalar(ulong seed, ulong path, ulong step, uint tag, Span<double> dst)
    {
        fixed (double* p = dst) FillScalar(seed, path, step, tag, p, dst.Length);
    }

    /// <inheritdoc cref="FillUniform(ulong, ulong, ulong, uint, double*, int)"/>
    public static unsafe void FillUniform(ulong seed, ulong path, ulong step, uint tag, Span<double> dst)
    {
        fixed (double* p = dst) FillUniform(seed, path, step, tag, p, dst.Length);
    }
}
