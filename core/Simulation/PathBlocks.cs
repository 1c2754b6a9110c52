using System.Runtime.ExceptionServices;

namespace Sde.Core;

/// <summary>
/// Runs the paths of a run on worker threads, in fixed blocks handed out as threads free up (a
/// thread delayed by the machine does not hold the others back). Each worker owns its buffers and
/// exact sums, so the merged result does not depend on which thread ran which block.
/// </summary>
internal static class PathBlocks
{
    /// <summary>
    /// <paramref name="runPath"/> simulates one path (global index) and returns the step at which it
    /// blew up, or −1. After a failure no new block starts; the run then throws
    /// <see cref="SimulationFailedException"/> with the earliest failing step, the failed paths seen and
    /// the paths that ran (every path of the blocks started), so that the count is exact or says "at least".
    /// Returns the workers that ran (to merge their sums). Progress is the workers' to report, per step
    /// (<see cref="StepProgress"/>).
    /// </summary>
    public static List<TWorker> Run<TWorker>(RunSettings s, long maxBlock, string name, Func<TWorker> make, Func<TWorker, ulong, long> runPath)
        where TWorker : class =>
        RunBlocks(s, maxBlock, 1, name, make, (wk, first, count, fail) =>
        {
            for (long i = 0; i < count; i++)
            {
                long f = runPath(wk, first + (ulong)i);
                if (f >= 0) fail(f);
            }
        });

    /// <summary>
    /// As <see cref="Run{TWorker}"/>, with a worker that takes a whole block of paths (first global
    /// index, count) and reports each failed path's step through the callback; block sizes are
    /// multiples of <paramref name="multiple"/> (the paths a worker advances side by side).
    /// </summary>
    public static List<TWorker> RunBlocks<TWorker>(RunSettings s, long maxBlock, int multiple, string name, Func<TWorker> make, Action<TWorker, ulong, long, Action<long>> runBlock)
        where TWorker : class
    {
        int threads = s.Threads > 0 ? s.Threads : Environment.ProcessorCount;
        long blockSize = Math.Clamp(s.Paths / ((long)threads * 16), 1, maxBlock);
        blockSize = (blockSize + multiple - 1) / multiple * multiple;
        long blocks = (s.Paths + blockSize - 1) / blockSize;
        threads = (int)Math.Max(1, Math.Min(threads, blocks));
        var workers = new TWorker?[threads];
        long next = -1, done = 0, failed = 0, failStep = long.MaxValue;
        Exception? error = null;

        void Work(int id)
        {
            try
            {
                var wk = workers[id] = make();
                Action<long> fail = f =>
                {
                    Interlocked.Increment(ref failed);
                    long cur;
                    while ((cur = Volatile.Read(ref failStep)) > f && Interlocked.CompareExchange(ref failStep, f, cur) != cur) { }
                };
                while (true)
                {
                    long b = Interlocked.Increment(ref next);
                    if (b >= blocks || Volatile.Read(ref failed) > 0 || s.Cancel.IsCancellationRequested) break;
                    long p0 = b * blockSize, p1 = Math.Min(p0 + blockSize, s.Paths);
                    runBlock(wk, (ulong)(s.FirstPath + p0), p1 - p0, fail);
                    Interlocked.Add(ref done, p1 - p0);
                }
            }
            catch (Exception e) { Interlocked.CompareExchange(ref error, e, null); Interlocked.Increment(ref failed); }
        }

        if (threads == 1) Work(0);
        else
        {
            var ts = new Thread[threads];
            for (int i = 0; i < threads; i++) { int id = i; ts[i] = new Thread(() => Work(id), 16 << 20) { IsBackground = true, Name = $"sde-{name}-{i}" }; ts[i].Start(); }
            foreach (var t in ts) t.Join();
        }
        if (error != null) ExceptionDispatchInfo.Capture(error).Throw();
        s.Cancel.ThrowIfCancellationRequested();
        // a block runs to its end even after a failure, so `done` counts every path that ran
        if (failed > 0) throw new SimulationFailedException(failStep, failStep * s.Dt, failed, Volatile.Read(ref done), s.Paths);
        return workers.Where(w => w != null).Select(w => w!).ToList();
    }
}
