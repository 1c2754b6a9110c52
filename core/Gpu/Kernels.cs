using System.Runtime.CompilerServices;
using ILGPU;

namespace Sde.Core.Gpu;

/// <summary>
/// An <see cref="IVec"/> over a struct-of-arrays device buffer: lane k of path p lives at
/// Offset + k·Stride with Offset = p (plus the start of the array inside a larger buffer) and Stride = P,
/// the number of paths in the chunk. Neighbouring threads (paths) touch neighbouring addresses, so
/// every lane access of a warp is coalesced.
/// </summary>
public struct SoaVec : IVec
{
    public ArrayView<double> Data;
    public long Offset;
    public long Stride;

    public SoaVec(ArrayView<double> data, long offset, long stride) { Data = data; Offset = offset; Stride = stride; }

    public double this[int i]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Data[Offset + i * Stride];
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        set => Data[Offset + i * Stride] = value;
    }
}

/// <summary>
/// The normals and uniforms of <see cref="Normals"/>, written for kernels: no spans, arrays or classes,
/// output through an <see cref="IVec"/>. Same counters and the same scalar code
/// (<see cref="Normals.Transform"/>: its own log, sine and cosine from adds, multiplies, a division and
/// a square root), so lane k of (seed, path, step, tag) is the same number as the CPU engine's, bit for
/// bit, wherever those operations round as IEEE 754 says (ILGPU's CPU accelerator runs this very code;
/// a CUDA assembler may contract a multiply and an add into an FMA).
/// </summary>
public static class KernelNormals
{
    /// <summary>Lanes 0..count−1 of the standard normals of (path, step) in stream <paramref name="tag"/>.</summary>
    public static void Fill<TV>(ulong seed, ulong path, ulong step, uint tag, TV dst, int count) where TV : struct, IVec
    {
        ulong pair = step >> 1;
        for (int k = 0; k < count; k++) dst[k] = Normals.OfStep(Philox.Draw(seed, path, pair, tag, (uint)k), step);
    }

    /// <summary>
    /// Lanes 0..count−1 at steps 2·<paramref name="pair"/> and 2·pair + 1, from one block per lane
    /// (<see cref="Normals.FillPair"/>'s bits): a kernel stepping through a path draws a pair at each even step.
    /// </summary>
    public static void FillPair<TV, TW>(ulong seed, ulong path, ulong pair, uint tag, TV even, TW odd, int count)
        where TV : struct, IVec where TW : struct, IVec
    {
        for (int k = 0; k < count; k++)
        {
            Normals.BoxMuller(Philox.Draw(seed, path, pair, tag, (uint)k), out double z0, out double z1);
            even[k] = z0;
            odd[k] = z1;
        }
    }

    /// <summary>
    /// Step n's normals into <paramref name="w"/> for a kernel stepping n = first, first + 1, ... &lt; end,
    /// two steps per draw: an even step (with the next one in the loop) draws the pair and leaves the odd
    /// step's normals in <paramref name="w2"/>, which the odd step copies. The same bits as
    /// <see cref="Fill{TV}"/> of each step; a block per lane per two steps instead of per step.
    /// </summary>
    public static void FillStep<TV, TW>(ulong seed, ulong path, long n, long first, long end, uint tag, TV w, TW w2, int count)
        where TV : struct, IVec where TW : struct, IVec
    {
        if ((n & 1) != 0 && n > first)
        {
            for (int k = 0; k < count; k++) w[k] = w2[k];
            return;
        }
        if ((n & 1) == 0 && n + 1 < end) FillPair(seed, path, (ulong)n >> 1, tag, w, w2, count);
        else Fill(seed, path, (ulong)n, tag, w, count);
    }

    /// <summary>Lanes 0..count−1 of uniforms on (0, 1), as <see cref="Normals.FillUniform(ulong, ulong, ulong, uint, double*, int)"/>.</summary>
    public static void FillUniform<TV>(ulong seed, ulong path, ulong step, uint tag, TV dst, int count) where TV : struct, IVec
    {
        uint blk = 0;
        int k = 0;
        for (; k + 1 < count; k += 2, blk++)
        {
            UInt4 b = Philox.Draw(seed, path, step, tag, blk);
            dst[k] = Normals.ToUniform(b.X | ((ulong)b.Y << 32));
            dst[k + 1] = Normals.ToUniform(b.Z | ((ulong)b.W << 32));
        }
        if (k < count)
        {
            UInt4 b = Philox.Draw(seed, path, step, tag, blk);
            dst[k] = Normals.ToUniform(b.X | ((ulong)b.Y << 32));
        }
    }
}

/// <summary>Scalars of one chunk of the plain engine.</summary>
public struct PlainArgs
{
    public ulong Seed;
    public long FirstPath;   // global index of the chunk's first path
    public long Count;       // paths in the chunk (= the SoA stride)
    public long Steps;
    public double Dt, SqDt;
    public int D, M, NObs, NQ;
    public long ObsFrom, ObsTo;
}

/// <summary>One query on the device (<see cref="QueryLayout"/> plus where its per-path data live).</summary>
public struct QueryDev
{
    public int Kind;         // 0 mean, 1 density
    public int Observable;
    public long From, To;
    public double Window;
    public int Bins;
    public double Lo, Hi, Scale;
    public int Slot;         // mean: row of the per-path sample buffer; density: first row of the count buffer
}

/// <summary>
/// The kernels. One thread per path; every per-path quantity lives in struct-of-arrays buffers of stride P
/// (the chunk's path count). Generic over the emitted model struct, so one source serves every model and
/// ILGPU specialises it per model exactly as the CPU JIT specialises <see cref="Engine"/>.
/// </summary>
public static class Kernels
{
    /// <summary>
    /// The plain engine on one path: init, Euler–Maruyama steps, observables recorded into the per-path
    /// sample (means) and count (densities) rows; Below/Above and failures by atomics.
    /// flags[0]: failed paths, flags[1]: first failing step; flags[2 + 2q], flags[3 + 2q]: below / above of query q.
    /// </summary>
    public static void Plain<TModel>(Index1D index, TModel model, PlainArgs a,
        ArrayView<double> state, ArrayView<double> noise, ArrayView<double> unif, ArrayView<double> obs,
        ArrayView<QueryDev> qs, ArrayView<double> samples, ArrayView<int> counts, ArrayView<long> flags)
        where TModel : unmanaged, ISdeModel
    {
        long i = (int)index;
        long P = a.Count;
        if (i >= P) return;
        int d = a.D, m = a.M;
        ulong gp = (ulong)(a.FirstPath + i);
        var x = new SoaVec(state, i, P);
        var y = new SoaVec(state, i + d * P, P);
        var w = new SoaVec(noise, i, P);
        // the odd step of a pair: drawn with the even step, from the same blocks
        var w2 = new SoaVec(noise, i + Math.Max(Math.Max(d, m), 1) * P, P);
        var zu = new SoaVec(unif, i, P);
        var ov = new SoaVec(obs, i, P);

        // clear this path's sample and count rows
        for (int q = 0; q < a.NQ; q++)
        {
            var l = qs[q];
            if (l.Kind == 0) samples[l.Slot * P + i] = 0.0;
            else for (int b = 0; b < l.Bins; b++) counts[(l.Slot + b) * P + i] = 0;
        }

        KernelNormals.Fill(a.Seed, gp, 0, Philox.TagInitNormal, w, d);
        KernelNormals.FillUniform(a.Seed, gp, 0, Philox.TagInitUniform, zu, d);
        model.Init(x, w, zu);
        if (!AllFinite(x, d)) { Fail(flags, 0); return; }
        if (a.ObsFrom == 0) Record(model, x, 0, 0.0, ov, qs, a.NQ, samples, counts, flags, i, P);
        for (long n = 0; n < a.Steps; n++)
        {
            if (m > 0) KernelNormals.FillStep(a.Seed, gp, n, 0, a.Steps, Philox.TagStep, w, w2, m);
            model.Step(x, y, w, n * a.Dt, a.Dt, a.SqDt);
            if (!AllFinite(y, d)) { Fail(flags, n + 1); return; }
            var t = x; x = y; y = t;
            long n1 = n + 1;
            if (n1 >= a.ObsFrom && n1 <= a.ObsTo) Record(model, x, n1, n1 * a.Dt, ov, qs, a.NQ, samples, counts, flags, i, P);
        }
        // the per-path sample of a mean: the running sum over the window divided by its length (as the CPU's Commit)
        for (int q = 0; q < a.NQ; q++)
        {
            var l = qs[q];
            if (l.Kind == 0) samples[l.Slot * P + i] = samples[l.Slot * P + i] / l.Window;
        }
    }

    static void Record<TModel>(TModel model, SoaVec x, long n, double t, SoaVec ov, ArrayView<QueryDev> qs, int nq,
        ArrayView<double> samples, ArrayView<int> counts, ArrayView<long> flags, long i, long P)
        where TModel : unmanaged, ISdeModel
    {
        bool need = false;
        for (int q = 0; q < nq; q++) { var l = qs[q]; if (n >= l.From && n <= l.To) need = true; }
        if (!need) return;
        model.Observe(x, t, ov);
        for (int q = 0; q < nq; q++)
        {
            var l = qs[q];
            if (n < l.From || n > l.To) continue;
            double v = ov[l.Observable];
            if (l.Kind == 0) samples[l.Slot * P + i] += v;
            else if (v < l.Lo) Atomic.Add(ref flags[2 + 2 * q], 1L);
            else if (v >= l.Hi) Atomic.Add(ref flags[3 + 2 * q], 1L);
            else if (v >= l.Lo)
            {
                int b = (int)((v - l.Lo) * l.Scale);
                if (b >= l.Bins) b = l.Bins - 1; // rounding just below Hi
                counts[(l.Slot + b) * P + i] += 1;
            }
            // NaN falls in no bin and neither below nor above (as on the CPU).
        }
    }

    /// <summary>NaN: neither ≥ 0 nor &lt; 0 (two ordered comparisons, no self-comparison).</summary>
    internal static bool IsNaN(double v) => !(v >= 0.0) && !(v < 0.0);

    /// <summary>True if no component is ±∞ or NaN (v·0 is 0 for finite v, NaN otherwise).</summary>
    /// <summary>Every component finite (x·0 is 0 exactly then, NaN otherwise): the kernels' blow-up check.</summary>
    internal static bool AllFinite(SoaVec v, int d)
    {
        double r = 0.0;
        for (int k = 0; k < d; k++) r += v[k] * 0.0;
        return r == 0.0;
    }

    static void Fail(ArrayView<long> flags, long step)
    {
        Atomic.Add(ref flags[0], 1L);
        Atomic.Min(ref flags[1], step);
    }

    /// <summary>
    /// Density reduction on the device: thread r sums row r of the per-path count buffer (one bin of one query)
    /// over the chunk's paths, giving Σc and Σc² as 64-bit integers (exact; the host adds them into Int128).
    /// </summary>
    public static void ReduceCounts(Index1D row, ArrayView<int> counts, long paths, ArrayView<long> sums)
    {
        long s1 = 0, s2 = 0;
        int r = row;
        long baseIndex = (long)r * paths;
        for (long p = 0; p < paths; p++)
        {
            long c = counts[baseIndex + p];
            s1 += c;
            s2 += c * c;
        }
        sums[2L * r] = s1;
        sums[2L * r + 1] = s2;
    }
}
