using System.Diagnostics;

namespace Sde.Core;

/// <summary>
/// A run's progress in path-steps, shared by its workers. A step loop counts its steps and calls
/// <see cref="Add"/> once every <see cref="Chunk"/> steps (and with the remainder at a path's end), so a
/// step costs a counter and a mask test; <see cref="Add"/> is one interlocked add and, at most ten times a
/// second, a call of the run's progress callback with the fraction of path-steps done. Nothing allocates.
/// </summary>
internal sealed class StepProgress
{
    /// <summary>Steps between two calls of <see cref="Add"/> (a power of two: <c>(n + 1) &amp; Mask</c>).</summary>
    public const long Chunk = 256, Mask = Chunk - 1;

    readonly Action<double>? _report;
    readonly double _total;
    long _done, _last;
    static readonly long Interval = Stopwatch.Frequency / 10;

    public StepProgress(Action<double>? report, long paths, long steps)
    {
        _report = report;
        _total = Math.Max(1.0, (double)paths * Math.Max(1, steps));
        _last = Stopwatch.GetTimestamp();
    }

    /// <summary>Path-steps done so far (all workers).</summary>
    public long Done => Volatile.Read(ref _done);

    /// <summary>Counts <paramref name="pathSteps"/> more path-steps; reports the fraction at most every 100 ms.</summary>
    public void Add(long pathSteps)
    {
        if (_report == null || pathSteps <= 0) return;
        long done = Interlocked.Add(ref _done, pathSteps);
        long now = Stopwatch.GetTimestamp(), last = Volatile.Read(ref _last);
        if (now - last >= Interval && Interlocked.CompareExchange(ref _last, now, last) == last)
            _report(Math.Min(1.0, done / _total));
    }
}
