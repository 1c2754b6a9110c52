using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

using Sde.Core;

namespace NormalsBench;

// The generator before issue #20 (library Math.Log/SinCos, Vector256.Log/SinCos: the scalar and AVX2
// forms differed in the last bit), kept only to measure the new one against it.

/// <summary>
/// Standard normals and uniforms from Philox blocks. Each block (128 bits) gives two 53-bit uniforms
/// and, by Box–Muller, two normals: lanes 2j and 2j+1 come from block j, so lane k depends only on
/// (seed, path, step, tag, k) and never on how many lanes were asked for.
/// </summary>
public static class OldNormals
{
    const double TwoPi = 6.283185307179586476925286766559;
    const double Inv53 = 1.0 / 9007199254740992.0; // 2^-53

    /// <summary>The top 53 bits of <paramref name="bits"/> as a uniform in (0, 1): centred in its cell, so never 0 or 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double ToUniform(ulong bits) => ((bits >> 11) + 0.5) * Inv53;

    /// <summary>Two standard normals from one Philox block (Box–Muller).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void BoxMuller(UInt4 b, out double z0, out double z1)
    {
        double u1 = ToUniform(b.X | ((ulong)b.Y << 32));
        double u2 = ToUniform(b.Z | ((ulong)b.W << 32));
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        (double s, double c) = Math.SinCos(TwoPi * u2);
        z0 = r * c;
        z1 = r * s;
    }


    /// <summary>Lanes 0..count−1 of the standard normals of (path, step) in stream <paramref name="tag"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Fill(ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        if (Avx2.IsSupported) { FillAvx2(seed, path, step, tag, dst, count); return; }
        FillScalar(seed, path, step, tag, dst, count);
    }

    /// <summary>The portable reference (and the GPU's formula): one block, two lanes, at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called every step: never run at tier 0
    public static unsafe void FillScalar(ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        uint blk = 0;
        int k = 0;
        for (; k + 1 < count; k += 2, blk++)
        {
            BoxMuller(Philox.Draw(seed, path, step, tag, blk), out dst[k], out dst[k + 1]);
        }
        if (k < count)
        {
            BoxMuller(Philox.Draw(seed, path, step, tag, blk), out dst[k], out _);
        }
    }

    /// <summary>
    /// Four Philox blocks (eight lanes) per iteration in AVX2 registers, with vectorised log and sincos.
    /// A partial last group is computed in full and copied, so every lane always comes from this same
    /// code and a lane's value never depends on the count. (Its bits may differ from <see cref="FillScalar"/>
    /// in the last place: the vector log/sincos are not the C library's.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called every step: never run at tier 0
    static unsafe void FillAvx2(ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        double* tmp = stackalloc double[8];
        var c1 = Vector256.Create((ulong)(uint)step);
        var c2 = Vector256.Create((ulong)(uint)path);
        var c3 = Vector256.Create((ulong)((uint)(path >> 32) ^ ((uint)(step >> 32) << 16) ^ (tag << 28)));
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        var mask = Vector256.Create(0xFFFFFFFFUL);
        var magic = Vector256.Create(0x4330000000000000UL);  // 2^52: integers below it by bit pattern
        var two52 = Vector256.Create(4503599627370496.0);
        var half = Vector256.Create(0.5);
        var scale = Vector256.Create(Inv53);
        var twoPi = Vector256.Create(TwoPi);
        var minus2 = Vector256.Create(-2.0);
        for (int k = 0; k < count; k += 8)
        {
            ulong b0 = (ulong)(uint)(k >> 1);
            var x0 = Vector256.Create(b0, b0 + 1, b0 + 2, b0 + 3);
            var x1 = c1; var x2 = c2; var x3 = c3;
            uint kk0 = k0, kk1 = k1;
            for (int r = 0; r < 10; r++)
            {
                // High halves of the 64-bit lanes may hold junk between rounds: the multiplies read only
                // the low 32 bits, and the junk is masked (or shifted out) at the end.
                var p0 = Avx2.Multiply(x0.AsUInt32(), Vector256.Create((ulong)Philox.M0).AsUInt32());
                var p1 = Avx2.Multiply(x2.AsUInt32(), Vector256.Create((ulong)Philox.M1).AsUInt32());
                x0 = (p1 >> 32) ^ x1 ^ Vector256.Create((ulong)kk0);
                x1 = p1;
                x2 = (p0 >> 32) ^ x3 ^ Vector256.Create((ulong)kk1);
                x3 = p0;
                kk0 += Philox.W0; kk1 += Philox.W1;
            }
            var a = ((x0 & mask) | (x1 << 32)) >> 11;
            var b = ((x2 & mask) | (x3 << 32)) >> 11;
            var u1 = (ToDouble53(a, magic, two52) + half) * scale;
            var u2 = (ToDouble53(b, magic, two52) + half) * scale;
            var rad = Vector256.Sqrt(minus2 * Vector256.Log(u1));
            var (sn, cs) = Vector256.SinCos(twoPi * u2);
            var z0 = rad * cs;
            var z1 = rad * sn;
            // Interleave: block j gives lanes 2j (cos) and 2j+1 (sin).
            var lo = Avx.UnpackLow(z0, z1);   // j0c j0s j2c j2s
            var hi = Avx.UnpackHigh(z0, z1);  // j1c j1s j3c j3s
            var first = Avx.Permute2x128(lo, hi, 0x20);
            var second = Avx.Permute2x128(lo, hi, 0x31);
            if (k + 8 <= count)
            {
                first.Store(dst + k);
                second.Store(dst + k + 4);
            }
            else
            {
                first.Store(tmp);
                second.Store(tmp + 4);
                for (int i = k; i < count; i++) dst[i] = tmp[i - k];
            }
        }
    }

    /// <summary>Exact conversion of integers below 2^53: (v/2)·2 + (v mod 2), each half through the 2^52 bit trick.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> ToDouble53(Vector256<ulong> v, Vector256<ulong> magic, Vector256<double> two52)
    {
        var h = ((v >> 1) | magic).AsDouble() - two52;
        var l = ((v & Vector256<ulong>.One) | magic).AsDouble() - two52;
        return h + h + l;
    }
}
