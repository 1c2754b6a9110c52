using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>
/// Lanes 0 and 1 of the step normals of four consecutive paths at once: the same Philox block 0 and
/// the same vector Box–Muller as <see cref="Normals.Fill(ulong, ulong, ulong, uint, double*, int)"/>
/// (AVX2), with the four vector lanes running over paths instead of over blocks. Every operation is
/// lane-wise, so each path's two normals are bit for bit those of its own stream (a test checks it).
/// The weighted engine steps its population one step at a time; for models with one or two noise
/// lanes, one path's Fill computes eight normals to use one or two, and this computes four paths' in
/// the same work.
/// </summary>
public static class PathNormals
{
    const double TwoPi = 6.283185307179586476925286766559;
    const double Inv53 = 1.0 / 9007199254740992.0;

    /// <summary>Whether <see cref="FillFirstLanes4"/> matches <see cref="Normals.Fill(ulong, ulong, ulong, uint, double*, int)"/> on this thread now.</summary>
    public static bool Usable => Avx2.IsSupported && !Normals.ForceScalar && !Normals.ScalarOnThisThread;

    /// <summary>z[2k] and z[2k+1] ← lanes 0 and 1 of path path0 + k at (step, tag), k = 0..3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void FillFirstLanes4(ulong seed, ulong path0, ulong step, uint tag, double* z)
    {
        ulong p1 = path0 + 1, p2 = path0 + 2, p3 = path0 + 3;
        var x0 = Vector256<ulong>.Zero;
        var x1 = Vector256.Create((ulong)(uint)step);
        var x2 = Vector256.Create((ulong)(uint)path0, (uint)p1, (uint)p2, (uint)p3);
        uint hi = ((uint)(step >> 32) << 16) ^ (tag << 28);
        var x3 = Vector256.Create((ulong)((uint)(path0 >> 32) ^ hi), (uint)(p1 >> 32) ^ hi, (uint)(p2 >> 32) ^ hi, (uint)(p3 >> 32) ^ hi);
        uint kk0 = (uint)seed, kk1 = (uint)(seed >> 32);
        for (int r = 0; r < 10; r++)
        {
            var m0 = Avx2.Multiply(x0.AsUInt32(), Vector256.Create((ulong)Philox.M0).AsUInt32());
            var m1 = Avx2.Multiply(x2.AsUInt32(), Vector256.Create((ulong)Philox.M1).AsUInt32());
            x0 = (m1 >> 32) ^ x1 ^ Vector256.Create((ulong)kk0);
            x1 = m1;
            x2 = (m0 >> 32) ^ x3 ^ Vector256.Create((ulong)kk1);
            x3 = m0;
            kk0 += Philox.W0; kk1 += Philox.W1;
        }
        var mask = Vector256.Create(0xFFFFFFFFUL);
        var magic = Vector256.Create(0x4330000000000000UL);
        var two52 = Vector256.Create(4503599627370496.0);
        var a = ((x0 & mask) | (x1 << 32)) >> 11;
        var b = ((x2 & mask) | (x3 << 32)) >> 11;
        var u1 = (ToDouble53(a, magic, two52) + Vector256.Create(0.5)) * Vector256.Create(Inv53);
        var u2 = (ToDouble53(b, magic, two52) + Vector256.Create(0.5)) * Vector256.Create(Inv53);
        var rad = Vector256.Sqrt(Vector256.Create(-2.0) * Vector256.Log(u1));
        var (sn, cs) = Vector256.SinCos(Vector256.Create(TwoPi) * u2);
        var z0 = rad * cs;
        var z1 = rad * sn;
        // unpack gives (p0 cos, p0 sin, p2 cos, p2 sin) and (p1 ..., p3 ...); the permutes put them in path order
        var lo = Avx.UnpackLow(z0, z1);
        var hi2 = Avx.UnpackHigh(z0, z1);
        Avx.Permute2x128(lo, hi2, 0x20).Store(z);
        Avx.Permute2x128(lo, hi2, 0x31).Store(z + 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<double> ToDouble53(Vector256<ulong> v, Vector256<ulong> magic, Vector256<double> two52)
    {
        var h = ((v >> 1) | magic).AsDouble() - two52;
        var l = ((v & Vector256<ulong>.One) | magic).AsDouble() - two52;
        return h + h + l;
    }
}
