using System.Runtime.CompilerServices;

namespace Sde.Core;

/// <summary>
/// A stepping caller's step normals, drawn a pair of steps at a time. Lane k's normals at steps 2t and
/// 2t + 1 are the two outputs of one block (<see cref="Normals"/>), so an even step draws both and the
/// odd step that follows takes the kept half: a block per lane per two steps, where a step drawn alone
/// costs a block per lane. The same bits as <see cref="Normals.Fill(ulong, ulong, ulong, uint, double*, int)"/>
/// of each step, whatever the order of the calls (a call that is not the kept step draws afresh).
/// One per worker thread: it owns a pinned buffer of <c>capacity</c> doubles and allocates nothing after.
/// A caller with at most <see cref="AheadLanes"/> lanes (one path at a time) draws four step pairs ahead, the
/// vector lanes over the pairs (<see cref="Normals.FillPairsAcrossSteps4"/>): the same bits, four blocks per
/// vector operation instead of one block in scalar code (a fifth to a third of a 1-D model's response run).
/// </summary>
public sealed unsafe class StepNormals
{
    readonly double[] _keep;
    readonly double* _odd;
    readonly int _capacity;
    // the kept step's key; _count = 0 is "nothing kept"
    ulong _seed, _path, _step;
    uint _tag;
    int _count;
    bool _across4;
    // the steps ahead: lane l at pair _aheadPair + j is _ahead[l·4 + j] (even step) and _ahead[16 + l·4 + j] (odd)
    public const int AheadLanes = 4;
    readonly double[]? _aheadBuf;
    readonly double* _ahead;
    ulong _aheadSeed, _aheadPath, _aheadPair = ulong.MaxValue;
    uint _aheadTag;
    int _aheadCount;

    /// <param name="capacity">The most doubles a call writes: the lanes, or four times them for the four-path forms.</param>
    public StepNormals(int capacity)
    {
        _capacity = Math.Max(capacity, 1);
        _keep = GC.AllocateArray<double>(_capacity, pinned: true);
        _odd = (double*)Unsafe.AsPointer(ref _keep[0]);
        if (capacity <= AheadLanes)
        {
            _aheadBuf = GC.AllocateArray<double>(8 * AheadLanes, pinned: true);
            _ahead = (double*)Unsafe.AsPointer(ref _aheadBuf[0]);
        }
    }

    /// <summary>Lanes 0..count−1 of (path, step): <see cref="Normals.Fill(ulong, ulong, ulong, uint, double*, int)"/>'s bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Fill(ulong seed, ulong path, ulong step, uint tag, double* dst, int count) => Get(false, seed, path, step, tag, dst, count);

    /// <summary>Four paths' lanes at one step: <see cref="Normals.FillAcrossPaths4"/>'s bits (4·count doubles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FillAcrossPaths4(ulong seed, ulong path0, ulong step, uint tag, double* dst, int count) => Get(true, seed, path0, step, tag, dst, count);

    /// <summary>The kept odd step when it is the one asked for, else a draw: the even step's pair (its odd half kept) or the step alone.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void Get(bool across4, ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        if (count <= 0) return;
        if (!across4 && _ahead != null && count <= AheadLanes)
        {
            Ahead(seed, path, step, tag, dst, count);
            return;
        }
        long doubles = across4 ? 4L * count : count;
        if (step == _step && path == _path && count == _count && seed == _seed && tag == _tag && across4 == _across4)
            Buffer.MemoryCopy(_odd, dst, doubles * 8, doubles * 8);
        else Draw(across4, seed, path, step, tag, dst, count, doubles);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void Ahead(ulong seed, ulong path, ulong step, uint tag, double* dst, int count)
    {
        ulong pair = step >> 1;
        if (!(pair - _aheadPair < 4 && path == _aheadPath && count == _aheadCount && seed == _aheadSeed && tag == _aheadTag))
        {
            Normals.FillPairsAcrossSteps4(seed, path, pair, tag, _ahead, _ahead + 4 * AheadLanes, count);
            _aheadSeed = seed; _aheadPath = path; _aheadPair = pair; _aheadTag = tag; _aheadCount = count;
        }
        double* src = _ahead + ((step & 1) == 0 ? 0 : 4 * AheadLanes) + (int)(pair - _aheadPair);
        for (int l = 0; l < count; l++) dst[l] = src[4 * l];
    }

    void Draw(bool across4, ulong seed, ulong path, ulong step, uint tag, double* dst, int count, long doubles)
    {
        if ((step & 1) == 0 && doubles <= _capacity)
        {
            if (across4) Normals.FillAcrossPaths4Pair(seed, path, step >> 1, tag, dst, _odd, count);
            else Normals.FillPair(seed, path, step >> 1, tag, dst, _odd, count);
            _seed = seed; _path = path; _step = step + 1; _tag = tag; _count = count; _across4 = across4;
        }
        else if (across4) Normals.FillAcrossPaths4(seed, path, step, tag, dst, count);
        else Normals.Fill(seed, path, step, tag, dst, count);
    }
}
