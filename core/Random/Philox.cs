using System.Runtime.CompilerServices;

namespace Sde.Core;

/// <summary>Four 32-bit words: one Philox counter, key-expanded block or output.</summary>
public struct UInt4
{
    public uint X, Y, Z, W;
    public UInt4(uint x, uint y, uint z, uint w) { X = x; Y = y; Z = z; W = w; }
    public override readonly string ToString() => $"{{0x{X:x8}, 0x{Y:x8}, 0x{Z:x8}, 0x{W:x8}}}";
}

/// <summary>
/// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
/// bit-compatible with Random123. Counter-based: the output is a pure function of (counter, key), so
/// any thread, shard or GPU lane can draw the numbers of any (path, step, lane) without sharing state.
/// Only plain integer arithmetic on locals, so the same code runs in ILGPU kernels.
/// </summary>
public static class Philox
{
    public const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57;
    public const uint W0 = 0x9E3779B9, W1 = 0xBB67AE85;

    /// <summary>Stream tags (top bits of the last counter word): keep step noise and init draws apart.</summary>
    public const uint TagStep = 0, TagInitNormal = 1, TagInitUniform = 2;

    /// <summary>The raw block function: 10 rounds on counter (c0..c3) with key (k0, k1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static UInt4 Block(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        // Unrolled by hand: the JIT does not unroll loops, and the key bumps fold into constants.
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1);
        return new UInt4(c0, c1, c2, c3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Round(ref uint c0, ref uint c1, ref uint c2, ref uint c3, uint k0, uint k1)
    {
        ulong p0 = (ulong)M0 * c0;
        ulong p1 = (ulong)M1 * c2;
        uint n0 = (uint)(p1 >> 32) ^ c1 ^ k0;
        uint n1 = (uint)p1;
        uint n2 = (uint)(p0 >> 32) ^ c3 ^ k1;
        uint n3 = (uint)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    }

    /// <summary>
    /// The engine's counter layout: block <paramref name="laneBlock"/> of the draws of <paramref name="path"/>
    /// at step word <paramref name="step"/> in stream <paramref name="tag"/>, keyed by the seed. Normals pass
    /// the lane as the block and the step pair (step ≫ 1) as the step word (one block, two steps: see
    /// <see cref="Normals"/>); uniforms pass block j for lanes 2j, 2j + 1 and the step itself.
    /// Counter = (laneBlock, step low 32, path low 32, path high 32 ^ step bits 32..43 &lt;&lt; 16 ^ tag &lt;&lt; 28).
    /// Distinct for paths &lt; 2^48, step words &lt; 2^44 and tags &lt; 16.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static UInt4 Draw(ulong seed, ulong path, ulong step, uint tag, uint laneBlock)
        => Block(laneBlock, (uint)step, (uint)path,
                 (uint)(path >> 32) ^ ((uint)(step >> 32) << 16) ^ (tag << 28),
                 (uint)seed, (uint)(seed >> 32));
}
