using System.Diagnostics;
using Sde.Core;
using NormalsBench;

// Normals per second on one thread, the new generator against the old (OldNormals.cs) in the same run:
// Fill(count) over consecutive paths for count 1, 3, 40, 1000, FillAcrossPaths4 (four paths per call) and
// FillAcrossPaths4Steps (four paths, 16 steps per call: the lanes engine's batches), the batched and the
// pair forms also with Normals.ForceNarrow (the AVX2 forms where the machine has AVX-512: wide/narrow).
// Best of 7 interleaved repetitions of about 0.2 s each, timed in this thread's CPU time (Linux
// CLOCK_THREAD_CPUTIME_ID), not wall time: on a shared machine the thread waits for a core, and that
// wait is not the generator's cost (the best of 7 is the least disturbed by the rest).
unsafe
{
    double* buf = stackalloc double[4 * 16 * 1000];
    const ulong seed = 12345;
    double sink = 0;
    double Rate(Action<long> body, long calls, int count)
    {
        body(calls / 10); // warm-up (tiered JIT)
        double t0 = ThreadCpu.Seconds();
        body(calls);
        return calls * (double)count / (ThreadCpu.Seconds() - t0);
    }
    Console.WriteLine($"{"count",6} {"old Mnormals/s",15} {"new Mnormals/s",15} {"new/old",8} {"pair Mnormals/s",16} {"pair/old",9} {"across4 Mnormals/s",19} {"across4/old",12} {"batched Mnormals/s",19} {"batched/across4",16} {"wide/narrow",12} {"pair wide/narrow",17}");
    // COUNTS=1,2 (comma-separated) picks the counts; default 1, 3, 40, 1000
    var counts = Environment.GetEnvironmentVariable("COUNTS") is string cs ? cs.Split(',').Select(int.Parse).ToArray() : new[] { 1, 3, 40, 1000 };
    foreach (int count in counts)
    {
        long calls = Math.Max(2000, 20_000_000 / Math.Max(count, 4) / 2);
        double bestOld = 0, bestNew = 0, best4 = 0, bestB = 0, bestP = 0, bestBN = 0, bestPN = 0;
        for (int rep = 0; rep < 7; rep++)
        {
            bestOld = Math.Max(bestOld, Rate(n => { for (long p = 0; p < n; p++) { OldNormals.Fill(seed, (ulong)p, 7, 0, buf, count); sink += buf[0]; } }, calls, count));
            bestNew = Math.Max(bestNew, Rate(n => { for (long p = 0; p < n; p++) { Normals.Fill(seed, (ulong)p, 7, 0, buf, count); sink += buf[0]; } }, calls, count));
            best4 = Math.Max(best4, Rate(n => { for (long p = 0; p < n; p += 4) { Normals.FillAcrossPaths4(seed, (ulong)p, 7, 0, buf, count); sink += buf[0]; } }, calls, count));
            // n path-steps as n/64 calls of four paths × 16 steps
            bestB = Math.Max(bestB, Rate(n => { for (long p = 0; p < n; p += 64) { Normals.FillAcrossPaths4Steps(seed, (ulong)p, 8, 16, 0, buf, count); sink += buf[0]; } }, calls, count));
            // n path-steps as n/2 calls of one path's step pair (the one-path engines' draw, through StepNormals)
            bestP = Math.Max(bestP, Rate(n => { for (long p = 0; p < n; p += 2) { Normals.FillPair(seed, (ulong)p, 4, 0, buf, buf + count, count); sink += buf[0]; } }, calls, count));
            Normals.ForceNarrow = true;
            bestBN = Math.Max(bestBN, Rate(n => { for (long p = 0; p < n; p += 64) { Normals.FillAcrossPaths4Steps(seed, (ulong)p, 8, 16, 0, buf, count); sink += buf[0]; } }, calls, count));
            bestPN = Math.Max(bestPN, Rate(n => { for (long p = 0; p < n; p += 2) { Normals.FillPair(seed, (ulong)p, 4, 0, buf, buf + count, count); sink += buf[0]; } }, calls, count));
            Normals.ForceNarrow = false;
        }
        Console.WriteLine($"{count,6} {bestOld / 1e6,15:F1} {bestNew / 1e6,15:F1} {bestNew / bestOld,8:F2} {bestP / 1e6,16:F1} {bestP / bestOld,9:F2} {best4 / 1e6,19:F1} {best4 / bestOld,12:F2} {bestB / 1e6,19:F1} {bestB / best4,16:F2} {bestB / bestBN,12:F2} {bestP / bestPN,17:F2}");
    }
    if (sink == 42) Console.WriteLine();
}

static class ThreadCpu
{
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    struct Timespec { public long Sec, Nsec; }
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    static extern int ClockGettime(int clock, out Timespec ts);
    const int ThreadCpuTimeId = 3; // CLOCK_THREAD_CPUTIME_ID

    public static double Seconds()
    {
        if (!OperatingSystem.IsLinux()) return Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;
        ClockGettime(ThreadCpuTimeId, out var ts);
        return ts.Sec + ts.Nsec * 1e-9;
    }
}
