namespace Sde.Core;

/// <summary>What a CPU run will allocate, checked against what the machine has before allocating anything.</summary>
public static class Memory
{
    /// <summary>Bytes of one worker's state buffers (x, y, w, init normals and uniforms, observables, pads).</summary>
    public static long BuffersPerThread(int dim, int noiseDim, int observables)
    {
        long d = Pad(dim), m = Pad(noiseDim), o = Pad(observables);
        return 8L * (4 * d + m + o);
    }

    /// <summary>Bytes of one set of accumulators for <paramref name="plans"/> (and the per-path scratch).</summary>
    public static long AccumulatorsBytes(QueryPlan[] plans)
    {
        long b = 256;
        foreach (var q in plans)
        {
            b += 128;
            if (q.Kind == EstimateKind.Mean) b += 2 * (64 + 8 * 8);
            else b += (long)Math.Max(q.Bins, 0) * (8 + 16 + 4 + 4) + 64;
        }
        return b;
    }

    /// <summary>Total for a run on <paramref name="threads"/> workers: their buffers and accumulators, plus the merged result.</summary>
    public static long Estimate(int dim, int noiseDim, int observables, QueryPlan[] plans, int threads)
    {
        long acc = AccumulatorsBytes(plans);
        return threads * (BuffersPerThread(dim, noiseDim, observables) + acc + WorkerStack) + acc;
    }

    /// <summary>Stack reserved for each worker thread.</summary>
    public const long WorkerStack = 1 << 20;

    /// <summary>Memory the GC may use on this machine/container (0 if unknown).</summary>
    public static long Available() => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Throws <see cref="RunTooLargeException"/> if <paramref name="need"/> exceeds <paramref name="available"/>.</summary>
    public static void Check(long need, long available, string what)
    {
        if (available > 0 && need > available)
            throw new RunTooLargeException(
                $"the run needs about {Format(need)} for {what}, but only {Format(available)} is available; " +
                "use fewer threads, a smaller model or fewer bins");
    }

    public static string Format(long bytes)
    {
        string[] u = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
        double v = bytes; int i = 0;
        while (v >= 1024 && i < u.Length - 1) { v /= 1024; i++; }
        return i == 0 ? $"{bytes} B" : $"{v:0.#} {u[i]}";
    }

    static long Pad(int n) => ((long)Math.Max(n, 1) + 3) & ~3L;
}
