using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>
/// Standard normals of four consecutive paths at once, for the engine's lanes over paths: the stand-in,
/// with its contract, for <c>Normals.FillAcrossPaths4</c> (being written in Normals.cs on another branch;
/// switch the callers to it at merge). <c>dst[k*4 + j]</c> is lane k of path <c>path0 + j</c>, bit for
/// bit what <see cref="Normals.Fill(ulong, ulong, ulong, uint, double*, int)"/> gives for that path.
/// </summary>
public static class LaneNormals
{
    const double TwoPi = 6.283185307179586476925286766559;
    const double Inv53 = 1.0 / 9007199254740992.0; // 2^-53

    /// <summary>Lanes 0..count−1 of the normals of paths path0 .. path0+3 at (step, tag), path-minor.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called every step: never run at tier 0
    public static unsafe void FillAcrossPaths4(ulong seed, ulong path0, ulong step, uint tag, double* dst, int count)
    {
        if (Avx2.IsSupported && !Normals.ScalarOnThisThread && !Normals.ForceScalar) { FillAvx2(seed, path0, step, tag, dst, count); return; }
        // Normals.Fill's own choice (the portable formula) per path, transposed.
        double* tmp = stackalloc double[64];
        for (int k0 = 0; k0 < count; k0 += 64)
        {
            int n = Math.Min(64, count - k0);
            for (int j = 0; j < 4; j++)
            {
                // lane k of a path does not depend on the count asked for, so a window of lanes is a plain offset
                FillWindow(seed, path0 + (ulong)j, step, tag, tmp, k0, n);
                for (int k = 0; k < n; k++) dst[(k0 + k) * 4 + j] = tmp[k];
            }
        }
    }

    /// <summary>Lanes k0 .. k0+n−1 of one path (k0 even) into tmp[0..n−1].</summary>
    static unsafe void FillWindow(ulong seed, ulong path, ulong step, uint tag, double* tmp, int k0, int n)
    {
        uint blk = (uint)(k0 >> 1);
        for (int k = 0; k < n; k += 2, blk++)
        {
            Normals.BoxMuller(Philox.Draw(seed, path, step, tag, blk), out double z0, out double z1);
            tmp[k] = z0;
            if (k + 1 < n) tmp[k + 1] = z1;
        }
    }

    /// <summary>
    /// The arithmetic of Normals' AVX2 path (Philox on 64-bit lanes, the 53-bit uniforms, Box–Muller with
    /// the runtime's vector log and sincos, which work lane by lane), with the four lanes holding four
    /// paths' block j instead of one path's blocks j..j+3: each lane gets the same bits, and block j's
    /// two normals land in rows 2j and 2j+1 without a transpose.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void FillAvx2(ulong seed, ulong path0, ulong step, uint tag, double* dst, int count)
    {
        ulong hiBits = ((ulong)(uint)(step >> 32) << 16) ^ ((ulong)tag << 28);
        ulong q0 = path0, q1 = path0 + 1, q2 = path0 + 2, q3 = path0 + 3;
        var c1 = Vector256.Create((ulong)(uint)step);
        var c2 = Vector256.Create((ulong)(uint)q0, (uint)q1, (uint)q2, (uint)q3);
        var c3 = Vector256.Create((ulong)(uint)((q0 >> 32) ^ hiBits), (uint)((q1 >> 32) ^ hiBits), (uint)((q2 >> 32) ^ hiBits), (uint)((q3 >> 32) ^ hiBits));
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        var mask = Vector256.Create(0xFFFFFFFFUL);
        var magic = Vector256.Create(0x4330000000000000UL);
        var two52 = Vector256.Create(4503599627370496.0);
        var half = Vector256.Create(0.5);
        var scale = Vector256.Create(Inv53);
        var twoPi = Vector256.Create(TwoPi);
        var minus2 = Vector256.Create(-2.0);
        var m0 = Vector256.Create((ulong)Philox.M0).AsUInt32();
        var m1 = Vector256.Create((ulong)Philox.M1).AsUInt32();
        for (int k = 0; k < count; k += 2)
        {
            var x0 = Vector256.Create((ulong)(uint)(k >> 1));
            var x1 = c1; var x2 = c2; var x3 = c3;
            uint kk0 = k0, kk1 = k1;
            for (int r = 0; r < 10; r++)
            {
                var p0 = Avx2.Multiply(x0.AsUInt32(), m0);
                var p1 = Avx2.Multiply(x2.AsUInt32(), m1);
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
            (rad * cs).Store(dst + k * 4);
            if (k + 1 < count) (rad * sn).Store(dst + k * 4 + 4);
        }
    }

    /// <summary>As Normals' conversion: integers below 2^53 exactly, (v/2)·2 + (v mod 2) through the 2^52 bit trick.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> ToDouble53(Vector256<ulong> v, Vector256<ulong> magic, Vector256<double> two52)
    {
        var h = ((v >> 1) | magic).AsDouble() - two52;
        var l = ((v & Vector256<ulong>.One) | magic).AsDouble() - two52;
        return h + h + l;
    }
}
