using System.Runtime.CompilerServices;

namespace Sde.Core;

/// <summary>
/// Standard normals and uniforms from Philox blocks. Each block (128 bits) gives two 53-bit uniforms
/// and, by Box–Muller, two normals: lanes 2j and 2j+1 come from block j, so lane k depends only on
/// (seed, path, step, tag, k) and never on how many lanes were asked for.
/// </summary>
public static class Normals
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

    /// <inheritdoc cref="FillUniform(ulong, ulong, ulong, uint, double*, int)"/>
    public static unsafe void FillUniform(ulong seed, ulong path, ulong step, uint tag, Span<double> dst)
    {
        fixed (double* p = dst) FillUniform(seed, path, step, tag, p, dst.Length);
    }
}
