using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>
/// The generator's 512-bit forms: eight lanes per vector operation where the AVX2 forms have four. They are
/// the AVX2 forms' statements, operation for operation (Philox's rounds, the log's reduction and polynomial,
/// the division, the square root, the sine's and cosine's Horner steps, the quadrant's selects and sign
/// flips), on twice the lanes, so every lane has the scalar form's bits (tests compare the three forms).
/// They run where the hardware has AVX-512 and the runtime accelerates <see cref="Vector512{T}"/>: on the
/// machine the benchmarks ran on that is 1.7x the normals per second of the AVX2 forms, the same bits.
/// </summary>
public static partial class Normals
{
    /// <summary>
    /// Process-wide: the AVX2 forms even where AVX-512 runs, for the generator and the response engine's sparse LU
    /// (the same bits; for tests and measurements). The environment variable <c>SDE_NARROW=1</c> sets it at start.
    /// </summary>
    public static volatile bool ForceNarrow = Environment.GetEnvironmentVariable("SDE_NARROW") == "1";

    /// <summary>Whether the 512-bit forms run here (AVX-512F with <see cref="Vector512{T}"/> accelerated, and the vector forms not switched off).</summary>
    public static bool WideUsable
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.IsHardwareAccelerated && Avx512F.IsSupported && !ForceNarrow && VectorUsable;
    }

    /// <summary><see cref="PhiloxV"/> on eight counters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void PhiloxW(ref Vector512<ulong> x0, ref Vector512<ulong> x1, ref Vector512<ulong> x2, ref Vector512<ulong> x3, Vector512<ulong>* keys)
    {
        var m0 = Vector512.Create((ulong)Philox.M0).AsUInt32();
        var m1 = Vector512.Create((ulong)Philox.M1).AsUInt32();
        for (int r = 0; r < 20; r += 2)
        {
            var p0 = Avx512F.Multiply(x0.AsUInt32(), m0);
            var p1 = Avx512F.Multiply(x2.AsUInt32(), m1);
            x0 = (p1 >> 32) ^ x1 ^ keys[r];
            x1 = p1;
            x2 = (p0 >> 32) ^ x3 ^ keys[r + 1];
            x3 = p0;
        }
    }

    /// <summary><see cref="PhiloxV2Keyed"/> on two sets of eight counters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void PhiloxW2(ref Vector512<ulong> x0, ref Vector512<ulong> x1, ref Vector512<ulong> x2, ref Vector512<ulong> x3,
                                ref Vector512<ulong> y0, ref Vector512<ulong> y1, ref Vector512<ulong> y2, ref Vector512<ulong> y3, Vector512<ulong>* keys)
    {
        var m0 = Vector512.Create((ulong)Philox.M0).AsUInt32();
        var m1 = Vector512.Create((ulong)Philox.M1).AsUInt32();
        for (int r = 0; r < 20; r += 2)
        {
            var p0 = Avx512F.Multiply(x0.AsUInt32(), m0);
            var p1 = Avx512F.Multiply(x2.AsUInt32(), m1);
            var q0 = Avx512F.Multiply(y0.AsUInt32(), m0);
            var q1 = Avx512F.Multiply(y2.AsUInt32(), m1);
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

    /// <summary>The 20 round keys of <paramref name="seed"/>, broadcast to eight lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void RoundKeysW(ulong seed, Vector512<ulong>* keys)
    {
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        for (int r = 0; r < 10; r++, k0 += Philox.W0, k1 += Philox.W1)
        {
            keys[2 * r] = Vector512.Create((ulong)k0);
            keys[2 * r + 1] = Vector512.Create((ulong)k1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<double> Small52(Vector512<ulong> v)
        => (v | Vector512.Create(0x4330000000000000UL)).AsDouble() - Vector512.Create(4503599627370496.0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Halves(Vector512<ulong> x0, Vector512<ulong> x1, Vector512<ulong> x2, Vector512<ulong> x3, out Vector512<ulong> a, out Vector512<ulong> b)
    {
        var mask = Vector512.Create(0xFFFFFFFFUL);
        a = (x0 & mask) | (x1 << 32);
        b = (x2 & mask) | (x3 << 32);
    }

    /// <summary><see cref="TransformV"/> on eight (a, b) pairs, the same statements.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void TransformW(Vector512<ulong> a, Vector512<ulong> b, out Vector512<double> z0, out Vector512<double> z1)
    {
        var half = Vector512.Create(0.5);
        var one = Vector512.Create(1.0);
        var a53 = a >> 11;
        var h = Small52(a53 >> 1);
        var u = ((h + h + Small52(a53 & Vector512<ulong>.One)) + half) * Vector512.Create(Inv53);
        // LogScaled(u, 0), as LogV
        var ix = u.AsUInt64() + Vector512.Create(0x3ff0000000000000UL - SqrtHalfBits);
        var k = (Small52(ix >> 52) - Vector512.Create(1023.0)) + Vector512<double>.Zero;
        var fl = ((ix & Vector512.Create(MantMask)) + Vector512.Create(SqrtHalfBits)).AsDouble() - one;
        var hfsq = half * fl * fl;
        var sl = fl / (Vector512.Create(2.0) + fl);
        var z = sl * sl;
        var p = z * Vector512.Create(Lg7) + Vector512.Create(Lg6);
        p = z * p + Vector512.Create(Lg5);
        p = z * p + Vector512.Create(Lg4);
        p = z * p + Vector512.Create(Lg3);
        p = z * p + Vector512.Create(Lg2);
        p = z * p + Vector512.Create(Lg1);
        var rr = z * p;
        var lg = k * Vector512.Create(Ln2Hi) + (((sl * (hfsq + rr) + k * Vector512.Create(Ln2Lo)) - hfsq) + fl);
        var r = Vector512.Sqrt(Vector512.Create(-2.0) * lg);
        var b53 = b >> 11;
        var f = (Small52(b53 & Vector512.Create(Low51)) + half) * Vector512.Create(Inv51) - half;
        var f2 = f * f;
        var ps = f2 * Vector512.Create(S8) + Vector512.Create(S7);
        ps = f2 * ps + Vector512.Create(S6);
        ps = f2 * ps + Vector512.Create(S5);
        ps = f2 * ps + Vector512.Create(S4);
        ps = f2 * ps + Vector512.Create(S3);
        ps = f2 * ps + Vector512.Create(S2);
        ps = f2 * ps + Vector512.Create(S1);
        ps = f2 * ps + Vector512.Create(S0);
        var pc = f2 * Vector512.Create(C8) + Vector512.Create(C7);
        pc = f2 * pc + Vector512.Create(C6);
        pc = f2 * pc + Vector512.Create(C5);
        pc = f2 * pc + Vector512.Create(C4);
        pc = f2 * pc + Vector512.Create(C3);
        pc = f2 * pc + Vector512.Create(C2);
        pc = f2 * pc + Vector512.Create(C1);
        var s = f * ps;
        var c = f2 * pc + one;
        var q = b53 >> 51;
        var swap = Vector512.Equals(q & Vector512<ulong>.One, Vector512<ulong>.One).AsDouble();
        var sn = Vector512.ConditionalSelect(swap, c, s);
        var cs = Vector512.ConditionalSelect(swap, s, c);
        sn = (sn.AsUInt64() ^ ((q & Vector512.Create(2UL)) << 62)).AsDouble();
        cs = (cs.AsUInt64() ^ (((q + Vector512<ulong>.One) & Vector512.Create(2UL)) << 62)).AsDouble();
        z0 = r * cs;
        z1 = r * sn;
    }

    /// <summary><see cref="TransformV2"/> on two sets of eight pairs, the same statements.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static void TransformW2(Vector512<ulong> a, Vector512<ulong> b, Vector512<ulong> c, Vector512<ulong> d,
                            out Vector512<double> z0, out Vector512<double> z1, out Vector512<double> w0, out Vector512<double> w1)
    {
        var half = Vector512.Create(0.5);
        var one = Vector512.Create(1.0);
        var a53 = a >> 11;
        var c53 = c >> 11;
        var ha = Small52(a53 >> 1);
        var hc = Small52(c53 >> 1);
        var ua = ((ha + ha + Small52(a53 & Vector512<ulong>.One)) + half) * Vector512.Create(Inv53);
        var uc = ((hc + hc + Small52(c53 & Vector512<ulong>.One)) + half) * Vector512.Create(Inv53);
        var offs = Vector512.Create(0x3ff0000000000000UL - SqrtHalfBits);
        var ia = ua.AsUInt64() + offs;
        var ic = uc.AsUInt64() + offs;
        var ka = Small52(ia >> 52) - Vector512.Create(1023.0);
        var kc = Small52(ic >> 52) - Vector512.Create(1023.0);
        var fa = ((ia & Vector512.Create(MantMask)) + Vector512.Create(SqrtHalfBits)).AsDouble() - one;
        var fc = ((ic & Vector512.Create(MantMask)) + Vector512.Create(SqrtHalfBits)).AsDouble() - one;
        var two = Vector512.Create(2.0);
        var sa = fa / (two + fa);
        var sc = fc / (two + fc);
        var b53 = b >> 11;
        var d53 = d >> 11;
        var ga = (Small52(b53 & Vector512.Create(Low51)) + half) * Vector512.Create(Inv51) - half;
        var gc = (Small52(d53 & Vector512.Create(Low51)) + half) * Vector512.Create(Inv51) - half;
        var g2a = ga * ga;
        var g2c = gc * gc;
        var psa = g2a * Vector512.Create(S8) + Vector512.Create(S7);
        var psc = g2c * Vector512.Create(S8) + Vector512.Create(S7);
        var pca = g2a * Vector512.Create(C8) + Vector512.Create(C7);
        var pcc = g2c * Vector512.Create(C8) + Vector512.Create(C7);
        psa = g2a * psa + Vector512.Create(S6); psc = g2c * psc + Vector512.Create(S6);
        pca = g2a * pca + Vector512.Create(C6); pcc = g2c * pcc + Vector512.Create(C6);
        psa = g2a * psa + Vector512.Create(S5); psc = g2c * psc + Vector512.Create(S5);
        pca = g2a * pca + Vector512.Create(C5); pcc = g2c * pcc + Vector512.Create(C5);
        psa = g2a * psa + Vector512.Create(S4); psc = g2c * psc + Vector512.Create(S4);
        pca = g2a * pca + Vector512.Create(C4); pcc = g2c * pcc + Vector512.Create(C4);
        psa = g2a * psa + Vector512.Create(S3); psc = g2c * psc + Vector512.Create(S3);
        pca = g2a * pca + Vector512.Create(C3); pcc = g2c * pcc + Vector512.Create(C3);
        psa = g2a * psa + Vector512.Create(S2); psc = g2c * psc + Vector512.Create(S2);
        pca = g2a * pca + Vector512.Create(C2); pcc = g2c * pcc + Vector512.Create(C2);
        psa = g2a * psa + Vector512.Create(S1); psc = g2c * psc + Vector512.Create(S1);
        pca = g2a * pca + Vector512.Create(C1); pcc = g2c * pcc + Vector512.Create(C1);
        psa = g2a * psa + Vector512.Create(S0); psc = g2c * psc + Vector512.Create(S0);
        var sna = ga * psa;
        var snc = gc * psc;
        var csa = g2a * pca + one;
        var csc = g2c * pcc + one;
        var hfa = half * fa * fa;
        var hfc = half * fc * fc;
        var za = sa * sa;
        var zc = sc * sc;
        var pa = za * Vector512.Create(Lg7) + Vector512.Create(Lg6);
        var pc = zc * Vector512.Create(Lg7) + Vector512.Create(Lg6);
        pa = za * pa + Vector512.Create(Lg5); pc = zc * pc + Vector512.Create(Lg5);
        pa = za * pa + Vector512.Create(Lg4); pc = zc * pc + Vector512.Create(Lg4);
        pa = za * pa + Vector512.Create(Lg3); pc = zc * pc + Vector512.Create(Lg3);
        pa = za * pa + Vector512.Create(Lg2); pc = zc * pc + Vector512.Create(Lg2);
        pa = za * pa + Vector512.Create(Lg1); pc = zc * pc + Vector512.Create(Lg1);
        var ra = za * pa;
        var rc = zc * pc;
        var la = ka * Vector512.Create(Ln2Hi) + (((sa * (hfa + ra) + ka * Vector512.Create(Ln2Lo)) - hfa) + fa);
        var lc = kc * Vector512.Create(Ln2Hi) + (((sc * (hfc + rc) + kc * Vector512.Create(Ln2Lo)) - hfc) + fc);
        var rada = Vector512.Sqrt(Vector512.Create(-2.0) * la);
        var radc = Vector512.Sqrt(Vector512.Create(-2.0) * lc);
        var qa = b53 >> 51;
        var qc = d53 >> 51;
        var swa = Vector512.Equals(qa & Vector512<ulong>.One, Vector512<ulong>.One).AsDouble();
        var swc = Vector512.Equals(qc & Vector512<ulong>.One, Vector512<ulong>.One).AsDouble();
        var xsa = Vector512.ConditionalSelect(swa, csa, sna);
        var xca = Vector512.ConditionalSelect(swa, sna, csa);
        var xsc = Vector512.ConditionalSelect(swc, csc, snc);
        var xcc = Vector512.ConditionalSelect(swc, snc, csc);
        xsa = (xsa.AsUInt64() ^ ((qa & Vector512.Create(2UL)) << 62)).AsDouble();
        xca = (xca.AsUInt64() ^ (((qa + Vector512<ulong>.One) & Vector512.Create(2UL)) << 62)).AsDouble();
        xsc = (xsc.AsUInt64() ^ ((qc & Vector512.Create(2UL)) << 62)).AsDouble();
        xcc = (xcc.AsUInt64() ^ (((qc + Vector512<ulong>.One) & Vector512.Create(2UL)) << 62)).AsDouble();
        z0 = rada * xca;
        z1 = rada * xsa;
        w0 = radc * xcc;
        w1 = radc * xsc;
    }

    /// <summary>
    /// Two vectors of blocks, counter word 0 from <paramref name="x0"/> and <paramref name="y0"/> and words 1–3
    /// from c1–c3, through both transforms: x's outputs to even[0..7] and odd[0..7], y's <paramref name="yAt"/> further.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void TwoBlocksW(Vector512<ulong> x0, Vector512<ulong> y0, Vector512<ulong> c1, Vector512<ulong> c2, Vector512<ulong> c3,
                                  Vector512<ulong>* keys, double* even, double* odd, int yAt)
    {
        var x1 = c1; var x2 = c2; var x3 = c3;
        var y1 = c1; var y2 = c2; var y3 = c3;
        PhiloxW2(ref x0, ref x1, ref x2, ref x3, ref y0, ref y1, ref y2, ref y3, keys);
        Halves(x0, x1, x2, x3, out var a, out var b);
        Halves(y0, y1, y2, y3, out var a2, out var b2);
        TransformW2(a, b, a2, b2, out var z0, out var z1, out var w0, out var w1);
        z0.Store(even);
        z1.Store(odd);
        w0.Store(even + yAt);
        w1.Store(odd + yAt);
    }

    /// <summary><see cref="TwoBlocksW"/> with one vector of blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void OneBlockW(Vector512<ulong> x0, Vector512<ulong> c1, Vector512<ulong> c2, Vector512<ulong> c3,
                                 Vector512<ulong>* keys, double* even, double* odd)
    {
        var x1 = c1; var x2 = c2; var x3 = c3;
        PhiloxW(ref x0, ref x1, ref x2, ref x3, keys);
        Halves(x0, x1, x2, x3, out var a, out var b);
        TransformW(a, b, out var z0, out var z1);
        z0.Store(even);
        z1.Store(odd);
    }

    /// <summary>
    /// <see cref="FillPairAvx2"/> eight lanes per vector: lanes 0 .. count − count mod 8 − 1 (sixteen, two
    /// chains, while they fill); the caller draws the rest with the AVX2 form. Returns the lanes drawn.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    static unsafe int FillPairWide(ulong seed, ulong path, ulong pair, uint tag, double* even, double* odd, int count)
    {
        var keys = stackalloc Vector512<ulong>[20];
        RoundKeysW(seed, keys);
        var c1 = Vector512.Create((ulong)(uint)pair);
        var c2 = Vector512.Create((ulong)(uint)path);
        var c3 = Vector512.Create((ulong)((uint)(path >> 32) ^ ((uint)(pair >> 32) << 16) ^ (tag << 28)));
        var lanes = Vector512.Create(0UL, 1, 2, 3, 4, 5, 6, 7);
        int k = 0;
        for (; count - k >= 16; k += 16)
        {
            var x0 = lanes + Vector512.Create((ulong)(uint)k);
            TwoBlocksW(x0, x0 + Vector512.Create(8UL), c1, c2, c3, keys, even + k, odd + k, 8);
        }
        if (count - k >= 8)
        {
            OneBlockW(lanes + Vector512.Create((ulong)(uint)k), c1, c2, c3, keys, even + k, odd + k);
            k += 8;
        }
        return k;
    }

    /// <summary>
    /// <see cref="FillAcrossPaths4Steps"/>' step pairs pair0 .. pair0 + pairs − 1 with two step pairs of the four
    /// paths per vector (lanes 0–3 pair t, lanes 4–7 pair t + 1): dst[(2q·count + k)·4 + j] is lane k of path
    /// path0 + j at step 2(pair0 + q) (and + stride for the odd step).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    static unsafe void FillAcrossPaths4PairsWide(ulong seed, ulong path0, ulong pair0, int pairs, uint tag, double* dst, int count)
    {
        int stride = 4 * count;
        var keys = stackalloc Vector512<ulong>[20];
        RoundKeysW(seed, keys);
        ulong p1 = path0 + 1, p2 = path0 + 2, p3 = path0 + 3;
        uint tg = tag << 28;
        var c2 = Vector512.Create((ulong)(uint)path0, (uint)p1, (uint)p2, (uint)p3, (uint)path0, (uint)p1, (uint)p2, (uint)p3);
        uint h0 = (uint)(path0 >> 32) ^ tg, h1 = (uint)(p1 >> 32) ^ tg, h2 = (uint)(p2 >> 32) ^ tg, h3 = (uint)(p3 >> 32) ^ tg;
        var c3 = Vector512.Create((ulong)h0, h1, h2, h3, h0, h1, h2, h3);
        // Two passes per lane (as the AVX2 form): Philox for up to WideChunk vectors (two pairs each), then the transforms.
        const int WideChunk = 4;
        var ha = stackalloc Vector512<ulong>[WideChunk];
        var hb = stackalloc Vector512<ulong>[WideChunk];
        int vecs = pairs >> 1;
        for (int v0 = 0; v0 < vecs; v0 += WideChunk)
        {
            int nv = Math.Min(WideChunk, vecs - v0);
            for (int k = 0; k < count; k++)
            {
                var x0b = Vector512.Create((ulong)(uint)k);
                int v = 0;
                for (; v + 2 <= nv; v += 2)
                {
                    // two vectors' chains interleaved (as PhiloxV2Keyed)
                    ulong t = pair0 + (ulong)(2 * (v0 + v)), tu = t + 1, t2 = t + 2, tu2 = t + 3;
                    var x0 = x0b;
                    var x1 = Vector512.Create(Vector256.Create((ulong)(uint)t), Vector256.Create((ulong)(uint)tu));
                    var x2 = c2;
                    var x3 = c3 ^ Vector512.Create(HighWord(t), HighWord(tu));
                    var y0 = x0b;
                    var y1 = Vector512.Create(Vector256.Create((ulong)(uint)t2), Vector256.Create((ulong)(uint)tu2));
                    var y2 = c2;
                    var y3 = c3 ^ Vector512.Create(HighWord(t2), HighWord(tu2));
                    PhiloxW2(ref x0, ref x1, ref x2, ref x3, ref y0, ref y1, ref y2, ref y3, keys);
                    Halves(x0, x1, x2, x3, out ha[v], out hb[v]);
                    Halves(y0, y1, y2, y3, out ha[v + 1], out hb[v + 1]);
                }
                if (v < nv)
                {
                    ulong t = pair0 + (ulong)(2 * (v0 + v)), tu = t + 1;
                    var x0 = x0b;
                    var x1 = Vector512.Create(Vector256.Create((ulong)(uint)t), Vector256.Create((ulong)(uint)tu));
                    var x2 = c2;
                    var x3 = c3 ^ Vector512.Create(HighWord(t), HighWord(tu));
                    PhiloxW(ref x0, ref x1, ref x2, ref x3, keys);
                    Halves(x0, x1, x2, x3, out ha[v], out hb[v]);
                }
                double* o = dst + (4 * v0 * count + k) * 4;
                for (v = 0; v + 2 <= nv; v += 2, o += 8 * stride)
                {
                    TransformW2(ha[v], hb[v], ha[v + 1], hb[v + 1], out var z0, out var z1, out var w0, out var w1);
                    z0.GetLower().Store(o);
                    z1.GetLower().Store(o + stride);
                    z0.GetUpper().Store(o + 2 * stride);
                    z1.GetUpper().Store(o + 3 * stride);
                    w0.GetLower().Store(o + 4 * stride);
                    w1.GetLower().Store(o + 5 * stride);
                    w0.GetUpper().Store(o + 6 * stride);
                    w1.GetUpper().Store(o + 7 * stride);
                }
                if (v < nv)
                {
                    TransformW(ha[v], hb[v], out var z0, out var z1);
                    z0.GetLower().Store(o);
                    z1.GetLower().Store(o + stride);
                    z0.GetUpper().Store(o + 2 * stride);
                    z1.GetUpper().Store(o + 3 * stride);
                }
            }
        }
    }

    /// <summary>
    /// <see cref="FillAcrossPaths4Pair"/> with two noise lanes of the four paths per vector (lanes 0–3 lane k,
    /// lanes 4–7 lane k + 1, which is where they are stored): lanes 0 .. count − count mod 2 − 1. Returns the lanes drawn.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit]
    static unsafe int FillAcrossPaths4PairWide(ulong seed, ulong path0, ulong pair, uint tag, double* even, double* odd, int count)
    {
        var keys = stackalloc Vector512<ulong>[20];
        RoundKeysW(seed, keys);
        ulong p1 = path0 + 1, p2 = path0 + 2, p3 = path0 + 3;
        uint w = ((uint)(pair >> 32) << 16) ^ (tag << 28);
        uint h0 = (uint)(path0 >> 32) ^ w, h1 = (uint)(p1 >> 32) ^ w, h2 = (uint)(p2 >> 32) ^ w, h3 = (uint)(p3 >> 32) ^ w;
        var c1 = Vector512.Create((ulong)(uint)pair);
        var c2 = Vector512.Create((ulong)(uint)path0, (uint)p1, (uint)p2, (uint)p3, (uint)path0, (uint)p1, (uint)p2, (uint)p3);
        var c3 = Vector512.Create((ulong)h0, h1, h2, h3, h0, h1, h2, h3);
        var lanes = Vector512.Create(0UL, 0, 0, 0, 1, 1, 1, 1);
        int k = 0;
        for (; count - k >= 4; k += 4)
        {
            var x0 = lanes + Vector512.Create((ulong)(uint)k);
            TwoBlocksW(x0, x0 + Vector512.Create(2UL), c1, c2, c3, keys, even + k * 4, odd + k * 4, 8);
        }
        if (count - k >= 2)
        {
            OneBlockW(lanes + Vector512.Create((ulong)(uint)k), c1, c2, c3, keys, even + k * 4, odd + k * 4);
            k += 2;
        }
        return k;
    }
}
