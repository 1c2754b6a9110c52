using System.Runtime.ExceptionServices;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Sde.Core;

/// <summary>How a weighted (Feynman–Kac) run treats its weight: where log w sits in the state, how
/// and when the population is resampled, and the ensemble term log_density.</summary>
public sealed class WeightPlan
{
    /// <summary>The state component that holds log w (the compiler's hidden state, init 0).</summary>
    public int LogWeight { get; init; }
    public ResampleScheme Scheme { get; init; } = ResampleScheme.Systematic;
    /// <summary>Resample when ESS/N &lt; Ess (Ess = 1: every step). Not used by birth–death.</summary>
    public double Ess { get; init; } = 0.5;
    /// <summary>The state component the engine fills with log_density before each step; −1: none.</summary>
    public int DensitySlot { get; init; } = -1;
    /// <summary>The components log_density estimates the density of (1 to 3).</summary>
    public int[] DensityComponents { get; init; } = [];
    /// <summary>Kernel bandwidth per density component; null: Silverman's rule each step.</summary>
    public double[]? Bandwidth { get; init; }
    /// <summary>Independent sub-populations (1: one population). Each replica of about N/R paths is
    /// weighted, resampled and density-estimated on its own; the estimates are the replicas' mean and the
    /// standard errors their batch variance / R, valid whatever couples the paths inside a replica.</summary>
    public int Replicas { get; init; } = 1;
}

/// <summary>
/// Steps every path of a weighted population between two points where the population is seen whole
/// (the engine's step phase), so the population operations (weights, resampling, log_density,
/// observations) stay one code whatever runs the steps: the engine's worker threads by default, a GPU
/// kernel (<c>Sde.Core.Gpu.GpuWeighted</c>). It must use the plain engine's draws (path p, step n) and
/// arithmetic, so the population is the same bits either way.
/// </summary>
public unsafe interface IPopulationStepper
{
    /// <summary>Rows of <paramref name="x"/> (n × d, row-major, path p of the run at global index
    /// FirstPath + p): the init when <paramref name="seg0"/> &lt; 0, otherwise steps seg0 → seg1. A path whose
    /// state stops being finite stops there; returns how many did and the first step at which one did
    /// (long.MaxValue when none).</summary>
    (long Failed, long FirstStep) Step(double* x, int n, int d, long seg0, long seg1);
}

/// <summary>What a weighted run returns besides the estimates.</summary>
public sealed class WeightedResult
{
    /// <summary>One per plan: self-normalised weighted means and densities with genealogy standard errors.</summary>
    public required Estimate[] Estimates { get; init; }
    /// <summary>log Ẑ = Σ over resamplings of log(mean weight) + log(mean final weight): log E[w_T].</summary>
    public double LogNormalizer { get; init; }
    /// <summary>√(Var Ẑ / Ẑ²) by the genealogy estimate; NaN where that estimate is not positive (it is built
    /// for multinomial resampling, and the lower-variance schemes can drive it below 0).</summary>
    public double LogNormalizerStdErr { get; init; }
    /// <summary>1/Σ W_i² of the final weights (before any resampling at T, none happens there).</summary>
    public double FinalEss { get; init; }
    public long Resamplings { get; init; }
    /// <summary>Distinct time-0 ancestors of the final population: few means unreliable standard errors.</summary>
    public long Ancestors { get; init; }
    public long Paths { get; init; }
    /// <summary>The independent replicas whose spread gave the standard errors (1: the genealogy estimate).</summary>
    public int Replicas { get; init; } = 1;
    /// <summary>Per plan: the smallest effective sample size (Σ over replicas of 1/Σ W²) at the times it observes.</summary>
    public double[] MinEss { get; init; } = [];
}

/// <summary>
/// The weighted engine: the whole population in memory, stepped in lockstep between the points where it
/// must be seen as a whole (resampling checks, log_density, observation times of a window); between
/// them each chunk of paths runs on its own, as in the plain engine. Resampling checks at an ESS
/// threshold do not stop every step: segments of several steps record each step's log weights and
/// step back to the first step whose check may resample (Population.StepSegment). Per-path work (init, steps,
/// observables) uses the plain engine's random streams (path p, step n), so without resampling the
/// paths are those of the plain engine. Population reductions run over fixed chunks in a fixed order
/// and resampling draws come from Philox keyed by (seed, step): the results do not depend on the
/// thread count. Standard errors after resampling use the time-0 ancestors (Lee and Whiteley 2018):
/// Var ≈ (N/(N−1))^{r+1} Σ_a (Σ_{i: E_i = a} W_i (φ_i − η))², r the number of resamplings.
/// </summary>
public static class WeightedEngine
{
    const int Chunk = 256;

    /// <summary>The longest multi-step segment of a resampled run (<c>StepSegment</c>): each resampling costs about
    /// this many steps again, a segment's start a copy of the population.</summary>
    internal const int SegmentSteps = 32;

    /// <summary>Tests: the longest segment of runs started on the current thread (0: <see cref="SegmentSteps"/>; 1:
    /// one step at a time), and what their segments did (the run's own thread counts them).</summary>
    [ThreadStatic] internal static int SegmentStepsOnThisThread;
    [ThreadStatic] internal static long SegmentsOnThisThread, SteppedAgainOnThisThread, SegmentFailuresOnThisThread;

    /// <summary>Runs started on the current thread take the population phases one by one, without the
    /// shortcuts that give the same bits (no ESS bound, no fused birth–death phase): lets tests compare both.</summary>
    [ThreadStatic] internal static bool PlainPhasesOnThisThread;

    /// <summary>A weighted estimate whose effective sample size falls below this has no standard error (NaN).</summary>
    public const double MinEssForError = 30;

    public static WeightedResult Run<TModel>(in TModel model, RunSettings s, WeightPlan wp, QueryPlan[] plans)
        where TModel : struct, ISdeModel
        => Run(model, s, wp, plans, null);

    /// <summary><see cref="Run{TModel}(in TModel, RunSettings, WeightPlan, QueryPlan[])"/> with the paths
    /// stepped by <paramref name="stepper"/> (null: the engine's own worker threads).</summary>
    public static WeightedResult Run<TModel>(in TModel model, RunSettings s, WeightPlan wp, QueryPlan[] plans, IPopulationStepper? stepper)
        where TModel : struct, ISdeModel
    {
        ArgumentNullException.ThrowIfNull(s);
        ArgumentNullException.ThrowIfNull(wp);
        ArgumentNullException.ThrowIfNull(plans);
        long steps = Engine.CheckSettings(s);
        if (s.Paths > int.MaxValue / 4) throw new ArgumentException($"a weighted run keeps its population in memory: at most {int.MaxValue / 4} paths (got {s.Paths})");
        TModel m = model;
        if (wp.LogWeight < 0 || wp.LogWeight >= m.Dim) throw new ArgumentException("the log-weight component is outside the state");
        if (!(wp.Ess > 0 && wp.Ess <= 1)) throw new ArgumentException($"ess must be in (0, 1] (got {wp.Ess})");
        using var pop = new Population<TModel>(m, s, wp, plans, steps, stepper);
        return pop.Run();
    }

    /// <summary>Worker threads that run one phase body at a time, all started once per run.</summary>
    sealed class Crew : IDisposable
    {
        readonly Barrier _start, _end;
        readonly Thread[] _threads;
        Action<int>? _body;
        volatile bool _quit;
        ExceptionDispatchInfo? _error;
        public readonly int Size;

        public Crew(int size)
        {
            Size = size;
            _start = new Barrier(size);
            _end = new Barrier(size);
            _threads = new Thread[size - 1];
            for (int i = 1; i < size; i++)
            {
                int id = i;
                _threads[i - 1] = new Thread(() => Loop(id), (int)Memory.WorkerStack) { IsBackground = true, Name = $"sde-weighted-{i}" };
                _threads[i - 1].Start();
            }
        }

        void Loop(int id)
        {
            while (true)
            {
                _start.SignalAndWait();
                if (_quit) return;
                Body(id);
                _end.SignalAndWait();
            }
        }

        void Body(int id)
        {
            try { _body!(id); }
            catch (Exception e) { Interlocked.CompareExchange(ref _error, ExceptionDispatchInfo.Capture(e), null); }
        }

        /// <summary>Runs body(worker) on every worker and waits for all.</summary>
        public void Run(Action<int> body)
        {
            _body = body;
            if (Size > 1) _start.SignalAndWait();
            Body(0);
            if (Size > 1) _end.SignalAndWait();
            _error?.Throw();
        }

        public void Dispose()
        {
            _quit = true;
            if (Size > 1) _start.SignalAndWait();
            foreach (var t in _threads) t.Join();
            _start.Dispose(); _end.Dispose();
        }
    }

    sealed unsafe class Population<TModel> : IDisposable where TModel : struct, ISdeModel
    {
        readonly TModel _m;
        readonly RunSettings _s;
        readonly WeightPlan _wp;
        readonly QueryPlan[] _plans;
        readonly QueryLayout[] _layout;
        readonly long _steps;
        readonly int _n, _d, _nw, _nobs, _chunks, _lw, _r;
        readonly double _dt, _sqdt;
        readonly Crew _crew;
        readonly Action<int> _stepPhase, _observePhase, _maxPhase, _expPhase, _copyPhase, _eventPhase, _densityPhase, _interpolatePhase, _replicaPhase;
        // birth–death with replicas: after a step, one phase per replica does the weights, the jumps, the
        // copies and the next step's log_density (_densityReady: done for the coming step)
        readonly bool _fusesReplicas;
        bool _densityReady;
        readonly sbyte[] _events;
        readonly int[] _partners;
        // _w holds the normalised weights of the current population (no step since they were computed)
        bool _weightsValid;
        // population buffers (native: no pinning, no GC scans)
        double* _x, _y, _obs, _w, _buf, _lanesBuf;
        // four paths per step where the model has a lane step and the run chooses lanes (Engine.ChooseLanes)
        readonly WeightedLanes<TModel>? _lanes;
        readonly int _lanesStride;
        /// <summary>Per group of four paths (rows p .. p+3 at _odd + p·nw, lanes as in the lane step): the odd step's
        /// normals drawn with the even step, and that step (_oddStep[p / 4]); null when not kept.</summary>
        double* _odd;
        long* _oddStep;
        readonly int[] _eve, _eveNext, _anc;
        // replica r holds the paths [_rs[r], _rs[r + 1]); chunk c the paths [_cs[c], _cs[c + 1]) of replica _chunkRep[c]
        readonly int[] _rs, _cs, _chunkRep, _repChunk0;  // _repChunk0[r]: replica r's first chunk
        readonly double[] _chunkMax, _chunkMin, _chunkSum, _chunkSum2, _scratch, _rateMean;
        // _chunkMax and _chunkMin hold the chunks' largest and smallest log w of the current population
        // (the step phase finds them while the rows are in cache)
        bool _extremaValid;
        // where an ESS check may be due at any step (resampling at ESS/N below an ess under 1, no log_density): the
        // step phase also sums each chunk's exp(log w − its largest) and their squares
        readonly bool _essSums, _plainPhases;
        readonly double[] _chunkEss1, _chunkEss2, _sumEss1, _sumEss2;
        // Multi-step segments where the resampling check is all that needs the population at a step (_essSums, no
        // stepper): every path runs up to _segLen steps at once, recording its log w after each (_rec, per worker,
        // Chunk per step), and the chunks' per-step extrema and ESS sums (_seg*, step j's at j·_chunks + c) find
        // the first step at which a resampling may be due. Before the segment, _y keeps the population; at such a
        // step before the segment's end, the population goes back to it and steps again to that step. The
        // counter-based normals make that the same bits, and the check at that step is the one the step-by-step
        // loop makes, so the run's results are those of one step at a time.
        readonly int _segLen;
        readonly double[] _segMax = [], _segMin = [], _segEss1 = [], _segEss2 = [];
        double* _rec;
        bool _recording, _segOff;
        int _segNext;   // the next segment's length: _segLen after a resampling, else planned by StepSegment
        // per replica: max log w, Σ exp(log w − max), Σ W² of the normalised weights, log Ẑ so far, resampled at this step
        readonly double[] _maxLw, _sumW, _sumW2, _logZ;
        readonly double[] _lwHi, _lwLo;  // per replica: the span of log w (the bound of ResamplingMayBeDue)
        readonly bool[] _resampled;
        readonly double[][] _eveSum;     // per mean query (one replica): Σ over its window of W_i (φ_i − η_n) / K by time-0 ancestor
        readonly double[][] _value;      // per mean query and replica: Σ_n η_n / K
        readonly double[] _minEss;       // per query: the smallest effective sample size over its window
        readonly long[] _nonFinite;
        readonly Estimate?[] _density;   // per density query at T
        readonly BinnedKde?[]? _kde;     // one per worker: a worker estimates whole replicas
        long _seg0, _seg1, _nextChunk;
        long _resamplings, _failedPaths, _failStep = long.MaxValue;
        volatile bool _overflowed;
        readonly int _bufStride;
        /// <summary>Per worker: a path's step normals two steps per draw, within a segment (the odd step's kept).</summary>
        readonly StepNormals[] _pairs;
        readonly IPopulationStepper? _stepper;

        public Population(TModel m, RunSettings s, WeightPlan wp, QueryPlan[] plans, long steps, IPopulationStepper? stepper)
        {
            _m = m; _s = s; _wp = wp; _plans = plans; _steps = steps; _stepper = stepper;
            _n = (int)s.Paths; _d = m.Dim; _nw = m.NoiseDim; _nobs = m.ObservableCount;
            _lw = wp.LogWeight;
            _dt = s.Dt; _sqdt = Math.Sqrt(s.Dt);
            _layout = QueryLayout.Build(plans, steps, s.Dt, _nobs);
            foreach (var l in _layout)
                if (l.Kind == EstimateKind.Density && l.From != steps)
                    throw new ArgumentException("a weighted density is estimated at T only (not over a window)");
            if (wp.Replicas < 1) throw new ArgumentException($"a weighted run needs at least one replica (got {wp.Replicas})");
            // at least two paths per replica (a short warm-up run gets fewer replicas; the result says how many)
            _r = Math.Max(1, Math.Min(wp.Replicas, _n / 2));
            _rs = new int[_r + 1];
            for (int r = 0; r <= _r; r++) _rs[r] = (int)((long)r * _n / _r);
            var cs = new List<int>();
            var rep = new List<int>();
            for (int r = 0; r < _r; r++)
                for (int p = _rs[r]; p < _rs[r + 1]; p += Chunk) { cs.Add(p); rep.Add(r); }
            cs.Add(_n);
            _cs = cs.ToArray(); _chunkRep = rep.ToArray();
            _repChunk0 = new int[_r + 1];
            for (int c = 0, r = 0; r <= _r; r++) { while (c < rep.Count && rep[c] < r) c++; _repChunk0[r] = c; }
            _chunks = _chunkRep.Length;
            int threads = s.Threads > 0 ? s.Threads : Environment.ProcessorCount;
            threads = Math.Max(1, Math.Min(threads, Math.Max(1, _chunks)));
            long need = 2L * _n * _d * 8 + (long)_n * Math.Max(_nobs, 1) * 8 + 40L * _n;
            long avail = s.MemoryLimit > 0 ? s.MemoryLimit : Memory.Available();
            Memory.Check(need, avail, $"a weighted population of {_n} paths of dimension {_d}");
            _x = Alloc((long)_n * _d); _y = Alloc((long)_n * _d);
            _obs = Alloc((long)_n * Math.Max(_nobs, 1)); _w = Alloc(_n);
            _bufStride = ((2 * _d + Math.Max(_nw, 1) + Math.Max(_d, 8) + _d + 7) & ~7); // a, b, w, zn (≥ 8: four paths' normals), zu
            _buf = Alloc((long)threads * _bufStride);
            _pairs = new StepNormals[threads];
            for (int i = 0; i < threads; i++) _pairs[i] = new StepNormals(_nw);
            var lanes = WeightedLanes<TModel>.ForType;
            if (lanes is not null && stepper is null && Engine.ChooseLanes(s, lanes.LaneWidth(m), _d)) _lanes = lanes;
            _lanesStride = _lanes is null ? 0 : (WeightedLanes<TModel>.Scratch(_d, _nw) + 7) & ~7;
            _lanesBuf = Alloc((long)threads * _lanesStride);
            // a segment of one step (resampling checked every step) draws the step pair at its even step and
            // keeps the odd step's normals per group here for the next segment (where they fit: at most 1/8
            // of what the population itself takes, or 64 MiB)
            long oddCount = (long)_n * Math.Max(_nw, 1);
            if (_lanes is not null && _nw > 0 && oddCount * 8 <= Math.Max(64L << 20, need / 8))
            {
                _odd = Alloc(oddCount);
                _oddStep = (long*)NativeMemory.AlignedAlloc((nuint)(((_n >> 2) + 1) * 8L), 64);
                for (long i = 0; i <= (_n >> 2); i++) _oddStep[i] = -1;
            }
            _eve = new int[_n]; _eveNext = new int[_n]; _anc = new int[_n];
            for (int i = 0; i < _n; i++) _eve[i] = i;
            _chunkMax = new double[_chunks]; _chunkMin = new double[_chunks]; _chunkSum = new double[_chunks]; _chunkSum2 = new double[_chunks];
            _maxLw = new double[_r]; _lwHi = new double[_r]; _lwLo = new double[_r]; _sumW = new double[_r]; _sumW2 = new double[_r]; _logZ = new double[_r];
            _resampled = new bool[_r];
            _plainPhases = PlainPhasesOnThisThread;
            _essSums = !_plainPhases && wp.Scheme != ResampleScheme.None && wp.Scheme != ResampleScheme.BirthDeath && wp.Ess < 1 && wp.DensitySlot < 0;
            _chunkEss1 = new double[_chunks]; _chunkEss2 = new double[_chunks];
            _sumEss1 = new double[_r]; _sumEss2 = new double[_r];
            _scratch = new double[2 * _n + 2];
            _segLen = _essSums && stepper is null ? (SegmentStepsOnThisThread > 0 ? SegmentStepsOnThisThread : SegmentSteps) : 0;
            _segNext = _segLen;
            if (_segLen > 1)
            {
                _segMax = new double[_segLen * _chunks]; _segMin = new double[_segLen * _chunks];
                _segEss1 = new double[_segLen * _chunks]; _segEss2 = new double[_segLen * _chunks];
                _rec = Alloc((long)threads * Chunk * _segLen);
            }
            _rateMean = new double[_r];
            _events = wp.Scheme == ResampleScheme.BirthDeath ? new sbyte[_n] : [];
            _partners = wp.Scheme == ResampleScheme.BirthDeath ? new int[_n] : [];
            _eveSum = new double[plans.Length][];
            _value = new double[plans.Length][];
            _minEss = new double[plans.Length];
            Array.Fill(_minEss, double.PositiveInfinity);
            _nonFinite = new long[plans.Length];
            _density = new Estimate?[plans.Length];
            for (int q = 0; q < plans.Length; q++)
                if (_layout[q].Kind == EstimateKind.Mean)
                {
                    _value[q] = new double[_r];
                    if (_r == 1) _eveSum[q] = new double[_n];
                }
            if (wp.DensitySlot >= 0)
            {
                // one per worker, made by the worker the first time it takes a replica (slot 0 serves one population)
                _kde = new BinnedKde[threads];
                int k = wp.DensityComponents.Length;
                _kde[0] = new BinnedKde(k) { Spacing = _r > 1 ? ReplicaSpacing(k) : 0.25 };
            }
            _crew = new Crew(threads);
            _stepPhase = StepPhase; _observePhase = ObservePhase; _maxPhase = MaxPhase; _expPhase = ExpPhase; _copyPhase = CopyPhase; _eventPhase = EventPhase; _densityPhase = DensityPhase; _interpolatePhase = InterpolatePhase; _replicaPhase = ReplicaPhase;
            _fusesReplicas = !_plainPhases && stepper is null && _r > 1 && wp.Scheme == ResampleScheme.BirthDeath && wp.DensitySlot >= 0;
        }

        static double* Alloc(long count)
        {
            var p = (double*)NativeMemory.AlignedAlloc((nuint)(Math.Max(count, 1) * 8), 64);
            NativeMemory.Clear(p, (nuint)(Math.Max(count, 1) * 8));
            return p;
        }

        public void Dispose()
        {
            _crew.Dispose();
            foreach (var p in new[] { (nint)_x, (nint)_y, (nint)_obs, (nint)_w, (nint)_buf, (nint)_lanesBuf, (nint)_odd, (nint)_oddStep, (nint)_rec })
                if (p != 0) NativeMemory.AlignedFree((void*)p);
            _x = _y = _obs = _w = _buf = _lanesBuf = _odd = _rec = null;
            _oddStep = null;
        }

        bool NeedsObserve(long n)
        {
            foreach (var l in _layout) if (n >= l.From && n <= l.To) return true;
            return false;
        }

        /// <summary>The effective sample size of the whole population: Σ over replicas of 1/Σ W².</summary>
        double Ess()
        {
            double e = 0;
            for (int r = 0; r < _r; r++) e += 1 / _sumW2[r];
            return e;
        }

        public WeightedResult Run()
        {
            var cancel = _s.Cancel;
            // init: the plain engine's draws, path by path
            _seg0 = -1; _seg1 = 0;
            StepAll();
            CheckFailed();
            if (NeedsObserve(0)) { Weights(); Observe(0); }
            bool population = _wp.Scheme != ResampleScheme.None || _wp.DensitySlot >= 0;
            long n = 0;
            while (n < _steps)
            {
                cancel.ThrowIfCancellationRequested();
                // the next point where the population must be seen whole
                long next = n + 1;
                if (!population) while (next < _steps && !NeedsObserve(next)) next++;
                else if (_segLen > 1 && !_segOff)
                {
                    long cap = Math.Min(_steps, n + Math.Max(1, _segNext));
                    // a full segment ends on an even step, so that it steps whole pairs of steps (one Philox
                    // block gives a path's normals for both): an odd start takes its step from the pair kept
                    if (_segNext == _segLen && cap < _steps && (cap & 1) != 0 && cap - 1 > n + 1) cap--;
                    while (next < cap && !NeedsObserve(next)) next++;
                }
                if (_densityReady) { _densityReady = false; if (_overflowed) FailOverflow(); }
                else if (_wp.DensitySlot >= 0) { if (!_weightsValid) Weights(); Density(); }
                _seg0 = n; _seg1 = next;
                if (next - n > 1 && population)
                {
                    next = StepSegment(n, next);
                    if (next < 0) continue; // a path failed inside the segment: again one step at a time
                }
                else StepAll();
                _weightsValid = false;
                CheckFailed();
                if ((n >> 6) != (next >> 6) || next == _steps) _s.Progress?.Invoke((double)next / Math.Max(1, _steps));
                n = next;
                bool observe = NeedsObserve(n);
                if (_fusesReplicas && !observe && n < _steps) { BirthDeathReplicas(n); continue; }
                // a resampling that cannot be due (nor anything else that reads the weights) needs no weights
                bool skip = !observe && n < _steps && _wp.DensitySlot < 0 && !ResamplingMayBeDue();
                if (!skip && (observe || (population && n < _steps))) Weights();
                if (observe) Observe(n);
                if (!skip && n < _steps && _wp.Scheme != ResampleScheme.None) MaybeResample(n);
            }
            Weights();
            double ess = Ess();
            var est = new Estimate[_plans.Length];
            double logZ, logZSe;
            long ancestors;
            if (_r == 1)
            {
                // log Ẑ: the resamplings' factors and the final mean weight
                logZ = _logZ[0] + _maxLw[0] + Math.Log(_sumW[0] / _n);
                double c = CorrectionFactor();
                var byEve = new double[_n];
                for (int i = 0; i < _n; i++) byEve[_eve[i]] += _w[i];
                double q = 0;
                ancestors = 0;
                for (int a = 0; a < _n; a++) if (byEve[a] != 0) { q += byEve[a] * byEve[a]; ancestors++; }
                // Var(Ẑ)/Ẑ²: without resampling Ẑ is the mean of N independent weights, and
                // (N Σ W² − 1)/(N − 1) is exactly their sample variance over their squared mean, divided by N
                // (0 when the weights are equal: Ẑ is then exact). With multinomial resampling, the
                // genealogy estimate 1 − c (1 − Σ_a (Σ_{E_i=a} W_i)²) (Lee and Whiteley). The other schemes
                // have no valid estimate from one population: NaN, and the report says why.
                double relVar = _wp.Scheme switch
                {
                    ResampleScheme.None => _n > 1 ? Math.Max(0, (_n * _sumW2[0] - 1) / (_n - 1)) : double.NaN,
                    ResampleScheme.Multinomial => 1 - c * (1 - q) is var v && v > 0 ? v : double.NaN,
                    _ => _resamplings == 0 && _n > 1 ? Math.Max(0, (_n * _sumW2[0] - 1) / (_n - 1)) : double.NaN,
                };
                logZSe = Math.Sqrt(relVar);
                for (int k = 0; k < _plans.Length; k++)
                {
                    if (_layout[k].Kind == EstimateKind.Mean)
                    {
                        double v = 0;
                        var es = _eveSum[k];
                        for (int a = 0; a < _n; a++) v += es[a] * es[a];
                        est[k] = new Estimate { Value = _nonFinite[k] > 0 ? double.NaN : _value[k][0], StdErr = Math.Sqrt(c * v), Count = _n, NonFinite = _nonFinite[k] };
                    }
                    else est[k] = _density[k]!;
                }
            }
            else
            {
                // independent replicas: Ẑ = mean of the replicas' unbiased Ẑ_r, its variance the batch variance / R
                double mx = double.NegativeInfinity;
                var lz = new double[_r];
                for (int r = 0; r < _r; r++)
                {
                    lz[r] = _logZ[r] + _maxLw[r] + Math.Log(_sumW[r] / (_rs[r + 1] - _rs[r]));
                    if (lz[r] > mx) mx = lz[r];
                }
                var z = new double[_r];
                for (int r = 0; r < _r; r++) z[r] = Math.Exp(lz[r] - mx);
                var (zm, zse) = BatchMean(z);
                logZ = mx + Math.Log(zm);
                logZSe = zse / zm;
                ancestors = _n;
                for (int k = 0; k < _plans.Length; k++)
                {
                    if (_layout[k].Kind == EstimateKind.Mean)
                    {
                        var (v, se) = BatchMean(_value[k]);
                        est[k] = new Estimate { Value = _nonFinite[k] > 0 ? double.NaN : v, StdErr = _nonFinite[k] > 0 ? double.NaN : se, Count = _n, NonFinite = _nonFinite[k] };
                    }
                    else est[k] = _density[k]!;
                }
            }
            var minEss = new double[_plans.Length];
            for (int k = 0; k < _plans.Length; k++)
            {
                minEss[k] = double.IsFinite(_minEss[k]) ? _minEss[k] : ess;
                // no standard error that pretends: below MinEssForError effective paths there is no central
                // limit to lean on, and with log_density the genealogy ignores the density's feedback
                if (minEss[k] < MinEssForError || (_r == 1 && _wp.DensitySlot >= 0)) est[k] = WithoutError(est[k]);
            }
            if (ess < MinEssForError || (_r == 1 && _wp.DensitySlot >= 0)) logZSe = double.NaN;
            return new WeightedResult
            {
                Estimates = est, LogNormalizer = logZ, LogNormalizerStdErr = logZSe,
                FinalEss = ess, Resamplings = _resamplings, Ancestors = ancestors, Paths = _n, Replicas = _r, MinEss = minEss,
            };
        }

        static Estimate WithoutError(Estimate e) => new()
        {
            Value = e.Value, StdErr = double.NaN, Grid = e.Grid, Values = e.Values,
            StdErrs = e.StdErrs is null ? null : Array.ConvertAll(e.StdErrs, _ => double.NaN),
            Below = e.Below, Above = e.Above, Count = e.Count, NonFinite = e.NonFinite,
        };

        /// <summary>The mean of R independent replica estimates and its standard error √(Σ (x_r − x̄)² / (R (R − 1))).</summary>
        static (double Mean, double StdErr) BatchMean(double[] x)
        {
            double m = 0;
            foreach (double v in x) m += v;
            m /= x.Length;
            double s = 0;
            foreach (double v in x) s += (v - m) * (v - m);
            return (m, Math.Sqrt(s / ((double)x.Length * (x.Length - 1))));
        }

        /// <summary>(N/(N−1))^{r+1}: Lee and Whiteley's bias correction of the genealogy variance.</summary>
        double CorrectionFactor() => _n > 1 ? Math.Exp((_resamplings + 1) * Math.Log((double)_n / (_n - 1))) : double.NaN;

        void Phase(Action<int> body)
        {
            _nextChunk = 0;
            _crew.Run(body);
        }

        /// <summary>
        /// Steps n → next (a multi-step segment) and returns the step it stopped at: the first at which a
        /// resampling may be due (the population stepped again to it from its state at n), or next. Returns −1,
        /// with the population back at n and segments off, when a path failed in the segment: the one-step
        /// loop then meets the failure exactly as it would have (or a resampling before it that avoids it).
        /// </summary>
        long StepSegment(long n, long next)
        {
            SegmentsOnThisThread++;
            // the start, kept for stepping again: the step phase copies each chunk's rows as it records (a stepper
            // has no step phase: the whole population here)
            if (_stepper is not null)
            {
                long bytes = (long)_n * _d * 8;
                Buffer.MemoryCopy(_x, _y, bytes, bytes);
            }
            _recording = true;
            try { StepAll(); }
            finally { _recording = false; }
            if (_failedPaths > 0)
            {
                var t = _x; _x = _y; _y = t;
                _failedPaths = 0; _failStep = long.MaxValue;
                _segOff = true;
                SegmentFailuresOnThisThread++;
                _extremaValid = false;
                return -1;
            }
            for (long k = n + 1; k < next; k++)
            {
                if (!ResamplingMayBeDue(_segMax, _segMin, _segEss1, _segEss2, (int)(k - n - 1), _segLen)) continue;
                var t = _x; _x = _y; _y = t;
                _seg0 = n; _seg1 = k;
                StepAll();
                SteppedAgainOnThisThread += k - n;
                return k;
            }
            // the next segment ends about where ESS/N, falling at this segment's geometric rate, would reach the
            // threshold: a segment that ends at the resampling step steps nothing again
            double e0 = EssFraction(_segMax, _segEss1, _segEss2, 0, _segLen), e1 = EssFraction(_chunkMax, _chunkEss1, _chunkEss2, 0, 1);
            double rate = (Math.Log(e0) - Math.Log(e1)) / (next - n - 1);
            double ahead = rate > 0 ? (Math.Log(e1) - Math.Log(_wp.Ess)) / rate : double.PositiveInfinity;
            _segNext = ahead >= _segLen ? _segLen : Math.Max(1, (int)Math.Ceiling(ahead));
            return next;
        }

        /// <summary>Steps _seg0 → _seg1 for every path, on the stepper when there is one.</summary>
        void StepAll()
        {
            _extremaValid = false;
            if (_stepper is null) { Phase(_stepPhase); _extremaValid = true; return; }
            var (failed, first) = _stepper.Step(_x, _n, _d, _seg0, _seg1);
            if (failed > 0) { _failedPaths += failed; _failStep = Math.Min(_failStep, first); }
        }

        void CheckFailed()
        {
            if (_failedPaths > 0)
                throw new SimulationFailedException(_failStep, _failStep * _dt, _failedPaths, _n, _n);
        }

        /// <summary>Steps _seg0 → _seg1 for every path (or the init when _seg0 &lt; 0).</summary>
        void StepPhase(int worker)
        {
            double* a = _buf + (long)worker * _bufStride, b = a + _d, w = b + _d, zn = w + Math.Max(_nw, 1), zu = zn + Math.Max(_d, 8);
            double* lanesBuf = _lanesBuf + (long)worker * _lanesStride;
            ulong seed = _s.Seed;
            long first = _s.FirstPath;
            var wv = new PtrVec(w);
            TModel m = _m;
            var lanes = _seg0 >= 0 ? _lanes : null;
            var pairs = _pairs[worker];
            int len = (int)(_seg1 - _seg0);
            double* rec = _recording ? _rec + (long)worker * Chunk * _segLen : null;
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = _cs[c], p1 = _cs[c + 1];
                if (_seg0 < 0)
                {
                    for (int p = p0; p < p1; p++)
                    {
                        double* row = _x + (long)p * _d;
                        ulong gp = (ulong)(first + p);
                        Normals.Fill(seed, gp, 0, Philox.TagInitNormal, zn, _d);
                        Normals.FillUniform(seed, gp, 0, Philox.TagInitUniform, zu, _d);
                        m.Init(new PtrVec(row), new PtrVec(zn), new PtrVec(zu));
                        if (!Finite(row, _d)) Fail(0);
                    }
                    Extrema(c, p0, p1);
                    continue;
                }
                // a recording step phase is a segment's first: it keeps the chunk's start for stepping again (StepSegment)
                if (rec != null) Buffer.MemoryCopy(_x + (long)p0 * _d, _y + (long)p0 * _d, (long)(p1 - p0) * _d * 8, (long)(p1 - p0) * _d * 8);
                int q = p0;
                if (lanes is not null)
                {
                    // four paths per step; a group in which a lane fails runs again one path at a time (the
                    // same bits up to the failure), which records the failure as the one-path engine does
                    while (true)
                    {
                        q = lanes.StepGroups(ref m, _x, _d, _nw, q, p1, (ulong)first, seed, _seg0, _seg1, _dt, _sqdt, lanesBuf, _odd, _oddStep, rec, Chunk, p0, _lw);
                        if (p1 - q < 4) break;
                        for (int k = 0; k < 4; k++) StepOne(ref m, q + k, a, b, w, wv, pairs, rec, p0);
                        q += 4;
                    }
                }
                else
                {
                    // one step of one or two noise lanes: four paths' normals per vector (same bits as Fill)
                    int batched = _seg1 - _seg0 == 1 && _nw > 0 && _nw <= 2 && PathNormals.Usable ? p0 + (p1 - p0) / 4 * 4 : p0;
                    for (; q < batched; q += 4)
                    {
                        // one noise: lane 0 of four paths (zn[k]); two: lanes 0, 1 path-major (zn[2k], zn[2k + 1])
                        if (_nw == 1) Normals.FillAcrossPaths4(seed, (ulong)(first + q), (ulong)_seg0, Philox.TagStep, zn, 1);
                        else PathNormals.FillFirstLanes4(seed, (ulong)(first + q), (ulong)_seg0, Philox.TagStep, zn);
                        for (int k = 0; k < 4; k++)
                        {
                            double* row = _x + (long)(q + k) * _d;
                            if (_nw == 1) w[0] = zn[k];
                            else { w[0] = zn[2 * k]; w[1] = zn[2 * k + 1]; }
                            m.Step(new PtrVec(row), new PtrVec(a), wv, _seg0 * _dt, _dt, _sqdt);
                            if (!Finite(a, _d)) Fail(_seg0 + 1);
                            Buffer.MemoryCopy(a, row, _d * 8, _d * 8);
                        }
                    }
                }
                for (; q < p1; q++) StepOne(ref m, q, a, b, w, wv, pairs, rec, p0);
                if (rec is null) { Extrema(c, p0, p1); continue; }
                // each step's log weights, recorded in path order: the last step's extrema are the population's
                // (each step's ESS sums relative to the step before's largest log w: one pass, see ExtremaOf)
                double reference = _chunkMax[c];
                for (int j = 0; j < len - 1; j++)
                {
                    // (chunk c's steps side by side, (int)c·_segLen + j: a chunk's entries are its worker's cache
                    // lines, where step-major entries of neighbouring chunks shared lines between the threads)
                    ExtremaOf(rec + (long)j * Chunk, p1 - p0, (int)c * _segLen + j, reference, _segMax, _segMin, _segEss1, _segEss2);
                    reference = _segMax[(int)c * _segLen + j];
                }
                ExtremaOf(rec + (long)(len - 1) * Chunk, p1 - p0, (int)c, reference, _chunkMax, _chunkMin, _chunkEss1, _chunkEss2);
            }
        }

        /// <summary>Chunk c's largest log w (as the max phase finds it: NaN never wins) and smallest.</summary>
        void Extrema(long c, int p0, int p1)
        {
            // the chunk's log-weights gathered once into contiguous memory (a chunk is at most Chunk paths), so
            // that both passes run four paths per vector: this runs after every step of a run that checks the
            // ESS at every step, where a scalar pass with two branches per path cost as much as the step
            int n = p1 - p0;
            double* l = stackalloc double[Chunk];
            for (int i = 0; i < n; i++) l[i] = _x[(long)(p0 + i) * _d + _lw];
            ExtremaOf(l, n, (int)c, _chunkMax[c], _chunkMax, _chunkMin, _chunkEss1, _chunkEss2);
        }

        /// <summary>The largest and smallest of the n log weights at l (NaN never wins) into mxs[at] and mns[at],
        /// and (where ESS sums are kept) Σ exp(l − largest) and Σ of its squares into e1s[at] and e2s[at].
        /// <paramref name="reference"/> is a guess of the largest (the chunk's at the step before): when the largest
        /// is within <see cref="NearReference"/> of it, one pass finds the extrema and sums exp(l − reference)
        /// in single precision, eight paths per vector, and the sums are rescaled; else a second pass sums
        /// exp(l − largest) in double precision. Only the ESS screen reads the sums, and it allows for the
        /// single-precision error (<see cref="ScreenMargin"/>).</summary>
        void ExtremaOf(double* l, int n, int at, double reference, double[] mxs, double[] mns, double[] e1s, double[] e2s)
        {
            var vmx = Vector256.Create(double.NegativeInfinity);
            var vmn = Vector256.Create(double.PositiveInfinity);
            bool fused = _essSums && Avx.IsSupported && double.IsFinite(reference);
            var refv = Vector256.Create(reference);
            var f1 = Vector256<float>.Zero;
            var f2 = Vector256<float>.Zero;
            int q = 0;
            if (fused && Vector512.IsHardwareAccelerated && n >= 16)
            {
                // sixteen paths per iteration where AVX-512 runs (the same extrema; the screen's float sums in
                // another order, which its margin allows for), folded into the four-lane accumulators after
                var wmx = Vector512.Create(double.NegativeInfinity);
                var wmn = Vector512.Create(double.PositiveInfinity);
                var refw = Vector512.Create(reference);
                var g1 = Vector512<float>.Zero;
                var g2 = Vector512<float>.Zero;
                for (; q + 16 <= n; q += 16)
                {
                    var v0 = Vector512.Load(l + q);
                    var v1 = Vector512.Load(l + q + 8);
                    wmx = Vector512.ConditionalSelect(Vector512.GreaterThan(v0, wmx), v0, wmx);
                    wmn = Vector512.ConditionalSelect(Vector512.LessThan(v0, wmn), v0, wmn);
                    wmx = Vector512.ConditionalSelect(Vector512.GreaterThan(v1, wmx), v1, wmx);
                    wmn = Vector512.ConditionalSelect(Vector512.LessThan(v1, wmn), v1, wmn);
                    var x = Vector512.Create(Avx512F.ConvertToVector256Single(v0 - refw), Avx512F.ConvertToVector256Single(v1 - refw));
                    var e = ScreenExp(x);
                    g1 += e; g2 += e * e;
                }
                // (the accumulators hold no NaN: NaN never wins)
                var hi = wmx.GetUpper();
                vmx = Vector256.ConditionalSelect(Vector256.GreaterThan(hi, wmx.GetLower()), hi, wmx.GetLower());
                var lo = wmn.GetUpper();
                vmn = Vector256.ConditionalSelect(Vector256.LessThan(lo, wmn.GetLower()), lo, wmn.GetLower());
                f1 = g1.GetLower() + g1.GetUpper();
                f2 = g2.GetLower() + g2.GetUpper();
            }
            if (fused)
                for (; q + 8 <= n; q += 8)
                {
                    var v0 = Vector256.Load(l + q);
                    var v1 = Vector256.Load(l + q + 4);
                    // a comparison with NaN is false: NaN never wins, as in the scalar form
                    vmx = Vector256.ConditionalSelect(Vector256.GreaterThan(v0, vmx), v0, vmx);
                    vmn = Vector256.ConditionalSelect(Vector256.LessThan(v0, vmn), v0, vmn);
                    vmx = Vector256.ConditionalSelect(Vector256.GreaterThan(v1, vmx), v1, vmx);
                    vmn = Vector256.ConditionalSelect(Vector256.LessThan(v1, vmn), v1, vmn);
                    var x = Vector256.Create(Avx.ConvertToVector128Single(v0 - refv), Avx.ConvertToVector128Single(v1 - refv));
                    var e = ScreenExp(x);
                    f1 += e; f2 += e * e;
                }
            for (; q + 4 <= n; q += 4)
            {
                var v = Vector256.Load(l + q);
                vmx = Vector256.ConditionalSelect(Vector256.GreaterThan(v, vmx), v, vmx);
                vmn = Vector256.ConditionalSelect(Vector256.LessThan(v, vmn), v, vmn);
            }
            double mx = double.NegativeInfinity, mn = double.PositiveInfinity;
            for (int k = 0; k < 4; k++)
            {
                if (vmx.GetElement(k) > mx) mx = vmx.GetElement(k);
                if (vmn.GetElement(k) < mn) mn = vmn.GetElement(k);
            }
            for (int i = q; i < n; i++)
            {
                if (l[i] > mx) mx = l[i];
                if (l[i] < mn) mn = l[i];
            }
            mxs[at] = mx; mns[at] = mn;
            if (!_essSums) return;
            double s1, s2;
            if (fused && Math.Abs(mx - reference) <= NearReference)
            {
                // the paths after the last whole eight in double precision, relative to the reference too
                int q8 = n & ~7;
                s1 = 0; s2 = 0;
                for (int i = q8; i < n; i++)
                {
                    double e = EssExp(Vector256.Create(l[i] - reference)).GetElement(0);
                    s1 += e; s2 += e * e;
                }
                double g = Math.Exp(reference - mx);
                s1 = (s1 + SumWide(f1)) * g;
                s2 = (s2 + SumWide(f2)) * (g * g);
            }
            else
            {
                // exp by EssExp (relative error below 1e-8): the ESS estimate needs no more, and the exact
                // weights are formed where it comes near the threshold
                var mv = Vector256.Create(mx);
                var v1 = Vector256<double>.Zero;
                var v2 = Vector256<double>.Zero;
                q = 0;
                for (; q + 4 <= n; q += 4)
                {
                    var e = EssExp(Vector256.Load(l + q) - mv);
                    v1 += e; v2 += e * e;
                }
                s1 = Vector256.Sum(v1); s2 = Vector256.Sum(v2);
                for (; q < n; q++)
                {
                    double e = EssExp(Vector256.Create(l[q] - mx)).GetElement(0);
                    s1 += e; s2 += e * e;
                }
            }
            e1s[at] = s1; e2s[at] = s2;
        }

        /// <summary>The largest log w may move this far from its reference (the step before's) for the one-pass sums:
        /// exp(l − reference) then stays within [e^-8, e^8] of exp(l − largest) for the terms that count, and
        /// the terms it drops (below e^-40 of the reference) are below e^-32 of the largest.</summary>
        const double NearReference = 8;

        /// <summary>The ESS screen's relative allowance: a resampling is ruled out only where the estimated ESS/N
        /// clears the threshold by this factor (the single-precision sums' relative error is below 1e-5; in
        /// double precision 4 N ε + 2e-8).</summary>
        const double ScreenMargin = 1e-4;

        /// <summary>Σ of the eight lanes, in double precision.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static double SumWide(Vector256<float> v)
            => Vector256.Sum(Avx.ConvertToVector256Double(v.GetLower()) + Avx.ConvertToVector256Double(v.GetUpper()));

        /// <summary>
        /// e^x in single precision for x ≤ 8 (bigger x cannot reach it: see <see cref="NearReference"/>), 0 below
        /// −40 (so that e² stays a normal float): x = k ln 2 + r with |r| ≤ ln 2 / 2, e^r by its Taylor polynomial
        /// of degree 6 (remainder below 2e-7), 2^k from the exponent bits. Relative error below 1e-6.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector256<float> ScreenExp(Vector256<float> x)
        {
            var under = Vector256.LessThan(x, Vector256.Create(-40f));
            x = Vector256.Max(x, Vector256.Create(-40f));
            var k = Vector256.Round(x * Vector256.Create(1.44269504f));
            var r = MadF(k, Vector256.Create(-0.693145751953125f), x);
            r = MadF(k, Vector256.Create(-1.428606765330187e-06f), r);
            var p = Vector256.Create(1f / 720);
            p = MadF(p, r, Vector256.Create(1f / 120));
            p = MadF(p, r, Vector256.Create(1f / 24));
            p = MadF(p, r, Vector256.Create(1f / 6));
            p = MadF(p, r, Vector256.Create(0.5f));
            p = MadF(p, r, Vector256<float>.One);
            p = MadF(p, r, Vector256<float>.One);
            // 2^k from the bits of k + 127 + 2^23 (as EssExp's)
            var two = (k + Vector256.Create(127f + 8388608f)).AsUInt32() << 23;
            return Vector256.AndNot(p * two.AsSingle(), under);
        }

        /// <summary><see cref="ScreenExp(Vector256{float})"/> on sixteen lanes, the same steps.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector512<float> ScreenExp(Vector512<float> x)
        {
            var under = Vector512.LessThan(x, Vector512.Create(-40f));
            x = Vector512.Max(x, Vector512.Create(-40f));
            var k = Vector512.Round(x * Vector512.Create(1.44269504f));
            var r = Avx512F.FusedMultiplyAdd(k, Vector512.Create(-0.693145751953125f), x);
            r = Avx512F.FusedMultiplyAdd(k, Vector512.Create(-1.428606765330187e-06f), r);
            var p = Vector512.Create(1f / 720);
            p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1f / 120));
            p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1f / 24));
            p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1f / 6));
            p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(0.5f));
            p = Avx512F.FusedMultiplyAdd(p, r, Vector512<float>.One);
            p = Avx512F.FusedMultiplyAdd(p, r, Vector512<float>.One);
            var two = (k + Vector512.Create(127f + 8388608f)).AsUInt32() << 23;
            return Vector512.AndNot(p * two.AsSingle(), under);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector256<float> MadF(Vector256<float> a, Vector256<float> b, Vector256<float> c)
            => System.Runtime.Intrinsics.X86.Fma.IsSupported ? System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a, b, c) : a * b + c;

        /// <summary>
        /// e^x for x ≤ 0 with a relative error below 1e-8 (0 below −700, where e^x &lt; 1e-304 is nothing beside
        /// the chunk's largest term, 1): x = k ln 2 + r with |r| ≤ ln 2 / 2, e^r by its Taylor polynomial of
        /// degree 7 (remainder below 8e-9), 2^k from the exponent bits. Only the ESS screen uses it, which
        /// allows for its error, so fused multiply-adds (where the machine has them) are welcome here.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector256<double> EssExp(Vector256<double> x)
        {
            var under = Vector256.LessThan(x, Vector256.Create(-700.0));
            x = Vector256.Max(x, Vector256.Create(-700.0));
            var k = Vector256.Round(x * Vector256.Create(1.4426950408889634));
            var r = Mad(k, Vector256.Create(-0.6931471805598903), x);
            r = Mad(k, Vector256.Create(-5.497923018708371e-14), r);
            var p = Vector256.Create(1.0 / 5040);
            p = Mad(p, r, Vector256.Create(1.0 / 720));
            p = Mad(p, r, Vector256.Create(1.0 / 120));
            p = Mad(p, r, Vector256.Create(1.0 / 24));
            p = Mad(p, r, Vector256.Create(1.0 / 6));
            p = Mad(p, r, Vector256.Create(0.5));
            p = Mad(p, r, Vector256<double>.One);
            p = Mad(p, r, Vector256<double>.One);
            // 2^k from the bits of k + 1023 + 2^52 (k integral, so the sum is exact and its low mantissa bits are
            // k + 1023): the same value as a conversion to int64, which AVX2 has no instruction for (.NET
            // emulates it element by element, and it cost as much as the rest of this function)
            var two = (k + Vector256.Create(1023.0 + 4503599627370496.0)).AsUInt64() << 52;
            return Vector256.AndNot(p * two.AsDouble(), under);
        }

        /// <summary>a·b + c, fused where the machine can (a JIT-time choice).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector256<double> Mad(Vector256<double> a, Vector256<double> b, Vector256<double> c)
            => System.Runtime.Intrinsics.X86.Fma.IsSupported ? System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a, b, c) : a * b + c;

        /// <summary>
        /// Whether some replica's ESS/N may have fallen below the threshold. Weights whose logs span δ have
        /// ESS/N ≥ 4 e^δ / (1 + e^δ)² = 1 / cosh²(δ/2) (Kantorovich's inequality): while that bound clears
        /// the threshold, the computed ESS (whose relative rounding error is below 2 N ε) does too, and no
        /// resampling happens, so the weights need not be computed at this step. Past the bound, the ESS from
        /// the step phase's chunk sums decides where it clears the threshold by more than its rounding error.
        /// </summary>
        bool ResamplingMayBeDue() => ResamplingMayBeDue(_chunkMax, _chunkMin, _chunkEss1, _chunkEss2, 0, 1);

        /// <summary><see cref="ResamplingMayBeDue()"/> on the chunks' extrema and ESS sums, chunk c's at o + c·stride of the arrays.</summary>
        bool ResamplingMayBeDue(double[] chunkMax, double[] chunkMin, double[] chunkEss1, double[] chunkEss2, int o, int stride)
        {
            if (_wp.Scheme == ResampleScheme.None) return false;
            if (_wp.Scheme == ResampleScheme.BirthDeath || _wp.Ess >= 1 || !_extremaValid || _plainPhases) return true;
            for (int r = 0; r < _r; r++) { _lwHi[r] = double.NegativeInfinity; _lwLo[r] = double.PositiveInfinity; }
            for (int c = 0; c < _chunks; c++)
            {
                int r = _chunkRep[c], i = o + c * stride;
                if (chunkMax[i] > _lwHi[r]) _lwHi[r] = chunkMax[i];
                if (chunkMin[i] < _lwLo[r]) _lwLo[r] = chunkMin[i];
            }
            double clear = _wp.Ess * (1 + ScreenMargin);
            bool bounded = true;
            for (int r = 0; r < _r; r++)
            {
                double half = 0.5 * (_lwHi[r] - _lwLo[r]), ch = Math.Cosh(half);
                if (!(1 / (ch * ch) > clear)) { bounded = false; break; }
            }
            if (bounded) return false;
            if (!_essSums) return true;
            // the ESS from the chunks' own sums (each relative to its chunk's largest log w), rescaled to the
            // replica's: the weights' ESS with a relative error below 1e-5 (not the bits of the weights' own
            // computation, which runs where this estimate comes within ScreenMargin of the threshold)
            ReplicaSums(chunkMax, chunkEss1, chunkEss2, o, stride);
            for (int r = 0; r < _r; r++)
            {
                int m = _rs[r + 1] - _rs[r];
                if (!(_sumEss1[r] * _sumEss1[r] / (_sumEss2[r] * m) > clear)) return true;
            }
            return false;
        }

        /// <summary>_sumEss1, _sumEss2 ← per replica, the chunks' ESS sums (chunk c's at o + c·stride), each rescaled from its
        /// chunk's largest log w to the replica's (_lwHi, set by the caller), in chunk order.</summary>
        void ReplicaSums(double[] chunkMax, double[] chunkEss1, double[] chunkEss2, int o, int stride)
        {
            Array.Clear(_sumEss1); Array.Clear(_sumEss2);
            for (int c = 0; c < _chunks; c++)
            {
                int r = _chunkRep[c], i = o + c * stride;
                double f = Math.Exp(chunkMax[i] - _lwHi[r]);
                _sumEss1[r] += chunkEss1[i] * f;
                _sumEss2[r] += chunkEss2[i] * (f * f);
            }
        }

        /// <summary>The smallest ESS/N over the replicas from the chunks' sums (chunk c's at o + c·stride; an estimate for
        /// planning the next segment's length; no decision rests on it).</summary>
        double EssFraction(double[] chunkMax, double[] chunkEss1, double[] chunkEss2, int o, int stride)
        {
            Array.Fill(_lwHi, double.NegativeInfinity);
            for (int c = 0; c < _chunks; c++)
                if (chunkMax[o + c * stride] > _lwHi[_chunkRep[c]]) _lwHi[_chunkRep[c]] = chunkMax[o + c * stride];
            ReplicaSums(chunkMax, chunkEss1, chunkEss2, o, stride);
            double least = 1;
            for (int r = 0; r < _r; r++)
                least = Math.Min(least, _sumEss1[r] * _sumEss1[r] / (_sumEss2[r] * (_rs[r + 1] - _rs[r])));
            return least;
        }

        /// <summary>Path p, one step at a time from _seg0 to _seg1 or its first state that is not finite.</summary>
        void StepOne(ref TModel m, int p, double* a, double* b, double* w, PtrVec wv, StepNormals pairs, double* rec = null, int recP0 = 0)
        {
            double* row = _x + (long)p * _d;
            ulong gp = (ulong)(_s.FirstPath + p);
            double* u = a, v = b;
            Buffer.MemoryCopy(row, u, _d * 8, _d * 8);
            for (long n = _seg0; n < _seg1; n++)
            {
                if (_nw > 0) pairs.Fill(_s.Seed, gp, (ulong)n, Philox.TagStep, w, _nw);
                m.Step(new PtrVec(u), new PtrVec(v), wv, n * _dt, _dt, _sqdt);
                var t = u; u = v; v = t;
                if (rec != null) rec[(n - _seg0) * Chunk + (p - recP0)] = u[_lw];
                if (!Finite(u, _d)) { Fail(n + 1); break; }
            }
            Buffer.MemoryCopy(u, row, _d * 8, _d * 8);
        }

        static bool Finite(double* p, int d)
        {
            double r = 0;
            for (int i = 0; i < d; i++) r += p[i] * 0.0;
            return r == 0.0;
        }

        void Fail(long step)
        {
            Interlocked.Increment(ref _failedPaths);
            long cur = Volatile.Read(ref _failStep);
            while (step < cur)
            {
                long seen = Interlocked.CompareExchange(ref _failStep, step, cur);
                if (seen == cur) break;
                cur = seen;
            }
        }

        void ObservePhase(int worker)
        {
            TModel m = _m;
            double t = _seg1 * _dt;
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = _cs[c], p1 = _cs[c + 1];
                for (int p = p0; p < p1; p++)
                    m.Observe(new PtrVec(_x + (long)p * _d), t, new PtrVec(_obs + (long)p * _nobs));
            }
        }

        void MaxPhase(int worker)
        {
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = _cs[c], p1 = _cs[c + 1];
                double mx = double.NegativeInfinity;
                for (int p = p0; p < p1; p++) { double l = _x[(long)p * _d + _lw]; if (l > mx) mx = l; }
                _chunkMax[c] = mx;
            }
        }

        void ExpPhase(int worker)
        {
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = _cs[c], p1 = _cs[c + 1];
                double mx = _maxLw[_chunkRep[c]];
                double s1 = 0, s2 = 0;
                for (int p = p0; p < p1; p++)
                {
                    double e = Math.Exp(_x[(long)p * _d + _lw] - mx);
                    _w[p] = e; s1 += e; s2 += e * e;
                }
                _chunkSum[c] = s1; _chunkSum2[c] = s2;
            }
        }

        /// <summary>_w ← the weights of the current population, normalised within each replica; per replica
        /// _sumW, _sumW2 (Σ of the unnormalised exp(log w − max), and Σ W² of the normalised), in a fixed chunk order.</summary>
        void Weights()
        {
            _weightsValid = true;
            if (!_extremaValid) Phase(_maxPhase);
            for (int r = 0; r < _r; r++) _maxLw[r] = double.NegativeInfinity;
            for (int c = 0; c < _chunks; c++) { int r = _chunkRep[c]; if (_chunkMax[c] > _maxLw[r]) _maxLw[r] = _chunkMax[c]; }
            Phase(_expPhase);
            for (int r = 0; r < _r; r++) { _sumW[r] = 0; _sumW2[r] = 0; }
            for (int c = 0; c < _chunks; c++) { int r = _chunkRep[c]; _sumW[r] += _chunkSum[c]; _sumW2[r] += _chunkSum2[c]; }
            for (int r = 0; r < _r; r++)
            {
                double inv = 1 / _sumW[r];
                for (int p = _rs[r]; p < _rs[r + 1]; p++) _w[p] *= inv;
                _sumW2[r] *= inv * inv;
            }
        }

        void Density()
        {
            if (_r > 1) { Phase(_densityPhase); if (_overflowed) FailOverflow(); return; }
            // one population: the grid serially, the interpolation in parallel over chunks
            if (!_kde![0]!.Prepare(_x, _d, _wp.DensityComponents, _w, _n, _wp.Bandwidth)) FailOverflow();
            Phase(_interpolatePhase);
        }

        /// <summary>A population whose states are finite but so large that their spread overflows (a step
        /// too large for a stiff drift): the paths that overflow count as failed at this step, as a path
        /// that reached infinity would one step later.</summary>
        void FailOverflow()
        {
            long bad = 0;
            foreach (int c in _wp.DensityComponents)
                for (int i = 0; i < _n; i++) { double v = _x[(long)i * _d + c]; if (!double.IsFinite(v * v)) bad++; }
            throw new SimulationFailedException(_seg1, _seg1 * _dt, Math.Max(1, bad), _n, _n);
        }

        void InterpolatePhase(int worker)
        {
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                _kde![0]!.Interpolate(_x, _d, _wp.DensityComponents, _cs[c], _cs[c + 1], _x + _wp.DensitySlot, _d);
            }
        }

        /// <summary>The replicas' grid spacing (a fraction of the bandwidth). R replicas have R grids of
        /// (R^{1/(k+4)})^k times fewer nodes each (their bandwidths are wider): in 2 and 3 coordinates, at the
        /// spacing h/4 of one population, 6 and more times the convolution work. At h/2 (4 and 8 times fewer
        /// nodes, half the taps) the work is about that of one population, and the binning error, which
        /// grows like the spacing squared, stays within the bound the tests check for it.</summary>
        static double ReplicaSpacing(int k) => k >= 2 ? 0.5 : 0.25;

        /// <summary>Each path's log_density slot, from the kernel estimate of its own replica: a worker
        /// takes whole replicas (binning, convolution and interpolation), so each is one fixed computation.</summary>
        void DensityPhase(int worker)
        {
            var kde = _kde![worker] ??= new BinnedKde(_wp.DensityComponents.Length) { Spacing = ReplicaSpacing(_wp.DensityComponents.Length) };
            int[] comps = _wp.DensityComponents;
            while (true)
            {
                long r = Interlocked.Increment(ref _nextChunk) - 1;
                if (r >= _r) return;
                int p0 = _rs[r], n = _rs[r + 1] - p0;
                double* x = _x + (long)p0 * _d;
                if (!kde.Prepare(x, _d, comps, _w + p0, n, _wp.Bandwidth)) { _overflowed = true; continue; }
                kde.Interpolate(x, _d, comps, 0, n, x + _wp.DensitySlot, _d);
            }
        }

        /// <summary>The queries whose window holds step n take the weighted population at n.</summary>
        void Observe(long n)
        {
            _seg1 = n;
            Phase(_observePhase);
            double ess = Ess();
            for (int q = 0; q < _layout.Length; q++)
            {
                var l = _layout[q];
                if (n < l.From || n > l.To) continue;
                if (ess < _minEss[q]) _minEss[q] = ess;
                int o = l.Observable;
                if (l.Kind == EstimateKind.Mean)
                {
                    double k = l.Window;
                    for (int r = 0; r < _r; r++)
                    {
                        int p0 = _rs[r], p1 = _rs[r + 1];
                        double eta = 0;
                        for (int i = p0; i < p1; i++) eta += _w[i] * _obs[(long)i * _nobs + o];
                        if (!double.IsFinite(eta))
                        {
                            long bad = 0;
                            for (int i = 0; i < _n; i++) if (!double.IsFinite(_obs[(long)i * _nobs + o])) bad++;
                            _nonFinite[q] = Math.Max(_nonFinite[q], bad);
                            break;
                        }
                        _value[q][r] += eta / k;
                        if (_r == 1)
                        {
                            var es = _eveSum[q];
                            for (int i = 0; i < _n; i++) es[_eve[i]] += _w[i] * (_obs[(long)i * _nobs + o] - eta) / k;
                        }
                    }
                }
                else _density[q] = _r == 1 ? DensityAt(l, o) : ReplicaDensityAt(l, o);
            }
        }

        /// <summary>Weighted histogram density of independent replicas: per bin the mean of the replicas'
        /// histograms, its standard error their batch variance / R.</summary>
        Estimate ReplicaDensityAt(QueryLayout l, int o)
        {
            int bins = l.Bins;
            double width = (l.Hi - l.Lo) / bins;
            var per = new double[_r][];
            long below = 0, above = 0, nan = 0;
            for (int r = 0; r < _r; r++)
            {
                var h = per[r] = new double[bins];
                for (int i = _rs[r]; i < _rs[r + 1]; i++)
                {
                    double v = _obs[(long)i * _nobs + o];
                    if (v < l.Lo) below++;
                    else if (v >= l.Hi) above++;
                    else if (v >= l.Lo) h[Math.Min(bins - 1, (int)((v - l.Lo) * l.Scale))] += _w[i] / width;
                    else nan++;
                }
            }
            var grid = new double[bins];
            var vals = new double[bins];
            var ses = new double[bins];
            var col = new double[_r];
            for (int b = 0; b < bins; b++)
            {
                for (int r = 0; r < _r; r++) col[r] = per[r][b];
                (vals[b], ses[b]) = BatchMean(col);
                grid[b] = l.Lo + (b + 0.5) * width;
            }
            return new Estimate { Grid = grid, Values = vals, StdErrs = ses, Below = below, Above = above, Count = _n, NonFinite = nan };
        }

        /// <summary>Weighted histogram density with genealogy standard errors per bin:
        /// Var_b ≈ c Σ_a (A_ab / h − η_b B_a)², A_ab the weight of ancestor a's descendants in bin b,
        /// B_a their total weight.</summary>
        Estimate DensityAt(QueryLayout l, int o)
        {
            int bins = l.Bins;
            double width = (l.Hi - l.Lo) / bins;
            var vals = new double[bins];
            var binOf = new int[_n];
            long below = 0, above = 0, nan = 0;
            for (int i = 0; i < _n; i++)
            {
                double v = _obs[(long)i * _nobs + o];
                int b;
                if (v < l.Lo) { below++; b = -1; }
                else if (v >= l.Hi) { above++; b = -1; }
                else if (v >= l.Lo) { b = Math.Min(bins - 1, (int)((v - l.Lo) * l.Scale)); vals[b] += _w[i]; }
                else { nan++; b = -1; }
                binOf[i] = b;
            }
            for (int b = 0; b < bins; b++) vals[b] /= width;
            // group the paths by ancestor (counting sort), then Σ over groups
            var start = new int[_n + 1];
            for (int i = 0; i < _n; i++) start[_eve[i] + 1]++;
            for (int a = 0; a < _n; a++) start[a + 1] += start[a];
            var order = new int[_n];
            var fill = (int[])start.Clone();
            for (int i = 0; i < _n; i++) order[fill[_eve[i]]++] = i;
            var var = new double[bins];
            var acc = new double[bins];
            var touched = new List<int>();
            for (int a = 0; a < _n; a++)
            {
                if (start[a] == start[a + 1]) continue;
                double ba = 0;
                touched.Clear();
                for (int j = start[a]; j < start[a + 1]; j++)
                {
                    int i = order[j];
                    ba += _w[i];
                    int b = binOf[i];
                    if (b >= 0) { if (acc[b] == 0) touched.Add(b); acc[b] += _w[i] / width; }
                }
                // Σ_b (A_ab/h − η_b B_a)² = Σ_b η_b² B_a² + Σ_touched (A² − 2 A η B)
                for (int b = 0; b < bins; b++) var[b] += vals[b] * vals[b] * ba * ba;
                foreach (int b in touched) { var[b] += acc[b] * acc[b] - 2 * acc[b] * vals[b] * ba; acc[b] = 0; }
            }
            double c = CorrectionFactor();
            var grid = new double[bins];
            var ses = new double[bins];
            for (int b = 0; b < bins; b++) { grid[b] = l.Lo + (b + 0.5) * width; ses[b] = Math.Sqrt(c * Math.Max(0, var[b])); }
            return new Estimate { Grid = grid, Values = vals, StdErrs = ses, Below = below, Above = above, Count = _n, NonFinite = nan };
        }

        void MaybeResample(long n)
        {
            bool bd = _wp.Scheme == ResampleScheme.BirthDeath;
            bool any = false;
            for (int r = 0; r < _r; r++)
            {
                int p0 = _rs[r], m = _rs[r + 1] - p0;
                double essFrac = 1 / (_sumW2[r] * m);
                _resampled[r] = bd || _wp.Ess >= 1 || essFrac < _wp.Ess;
                if (!_resampled[r])
                {
                    for (int i = p0; i < p0 + m; i++) _anc[i] = i;
                    continue;
                }
                any = true;
                // the mean weight goes into the normaliser: the resampled population carries it
                _logZ[r] += _maxLw[r] + Math.Log(_sumW[r] / m);
                if (bd)
                {
                    // β_i Δt: the log-weight increments since the last reset, centred within the replica
                    double mean = 0;
                    for (int i = p0; i < p0 + m; i++) mean += _x[(long)i * _d + _lw];
                    mean /= m;
                    _rateMean[r] = mean;
                }
                else
                {
                    // replica r's draws at index offset r · 2^32: streams of their own (replica 0's are the unsplit run's)
                    var anc = new Span<int>(_anc, p0, m);
                    Resampling.Ancestors(_wp.Scheme, new ReadOnlySpan<double>(_w + p0, m), _s.Seed, (ulong)n, anc, _scratch, (ulong)r << 32);
                    for (int i = 0; i < m; i++) anc[i] += p0;
                }
            }
            if (!any) return;
            _segNext = _segLen;
            if (bd)
            {
                _eventStep = (ulong)n;
                Phase(_eventPhase);
                for (int r = 0; r < _r; r++)
                {
                    int p0 = _rs[r], m = _rs[r + 1] - p0;
                    Resampling.ApplyBirthDeath(new ReadOnlySpan<sbyte>(_events, p0, m), new ReadOnlySpan<int>(_partners, p0, m), new Span<int>(_anc, p0, m));
                    for (int i = p0; i < p0 + m; i++) _anc[i] += p0;
                }
            }
            if (_r == 1)
            {
                for (int i = 0; i < _n; i++) _eveNext[i] = _eve[_anc[i]];
                Array.Copy(_eveNext, _eve, _n);
            }
            Phase(_copyPhase);
            var t = _x; _x = _y; _y = t;
            _extremaValid = false;
            _resamplings++;
            // every weight of a resampled replica is now 1 (log w = 0): its normalised weights are 1/m, with nothing to sum
            for (int r = 0; r < _r; r++)
            {
                if (!_resampled[r]) continue;
                int p0 = _rs[r], m = _rs[r + 1] - p0;
                double u = 1.0 / m;
                for (int i = p0; i < p0 + m; i++) _w[i] = u;
                _maxLw[r] = 0; _sumW[r] = m; _sumW2[r] = u;
            }
            _weightsValid = true;
        }

        ulong _eventStep;

        /// <summary>
        /// Weights(), MaybeResample(n) and the next step's Density() of a birth–death population of replicas in
        /// one phase, a worker taking whole replicas: the same operations on each replica in the same order
        /// (chunk sums in chunk order, the rate's mean in path order, the jumps in path order), so the same
        /// bits; the normalised weights, which the jumps reset to 1/m unread, are not formed.
        /// </summary>
        void BirthDeathReplicas(long n)
        {
            _eventStep = (ulong)n;
            _overflowed = false;
            Phase(_replicaPhase);
            var t = _x; _x = _y; _y = t;
            for (int r = 0; r < _r; r++) _resampled[r] = true;
            _resamplings++;
            _weightsValid = true;
            _extremaValid = false;
            _densityReady = true;
        }

        void ReplicaPhase(int worker)
        {
            var kde = _kde![worker] ??= new BinnedKde(_wp.DensityComponents.Length) { Spacing = ReplicaSpacing(_wp.DensityComponents.Length) };
            int[] comps = _wp.DensityComponents;
            ulong seed = _s.Seed, step = _eventStep;
            double* rate = stackalloc double[4];
            fixed (sbyte* events = _events)
            fixed (int* partners = _partners)
                while (true)
                {
                    long rr = Interlocked.Increment(ref _nextChunk) - 1;
                    if (rr >= _r) return;
                    int r = (int)rr, p0 = _rs[r], p1 = _rs[r + 1], m = p1 - p0;
                    int c0 = _repChunk0[r], c1 = _repChunk0[r + 1];
                    // Weights(): the largest log w, then exp(log w − max) summed by chunk, the chunks in order
                    double mx = double.NegativeInfinity;
                    for (int c = c0; c < c1; c++) if (_chunkMax[c] > mx) mx = _chunkMax[c];
                    _maxLw[r] = mx;
                    double sum = 0;
                    for (int c = c0; c < c1; c++)
                    {
                        double s1 = 0;
                        for (int p = _cs[c]; p < _cs[c + 1]; p++) s1 += Math.Exp(_x[(long)p * _d + _lw] - mx);
                        sum += s1;
                    }
                    // MaybeResample(n): the normaliser's factor, the centred rates, the jumps in path order, the copies
                    _logZ[r] += mx + Math.Log(sum / m);
                    double mean = 0;
                    for (int i = p0; i < p1; i++) mean += _x[(long)i * _d + _lw];
                    mean /= m;
                    Events(p0, p1, p0, m, mean, seed, step, rate, events, partners);
                    Resampling.ApplyBirthDeath(new ReadOnlySpan<sbyte>(_events, p0, m), new ReadOnlySpan<int>(_partners, p0, m), new Span<int>(_anc, p0, m));
                    double u = 1.0 / m;
                    for (int i = p0; i < p1; i++)
                    {
                        double* dst = _y + (long)i * _d;
                        Buffer.MemoryCopy(_x + (long)(_anc[i] + p0) * _d, dst, _d * 8, _d * 8);
                        dst[_lw] = 0;
                        _w[i] = u;
                    }
                    _maxLw[r] = 0; _sumW[r] = m; _sumW2[r] = u;
                    // the next step's Density(), on the new population
                    double* x = _y + (long)p0 * _d;
                    if (!kde.Prepare(x, _d, comps, _w + p0, m, _wp.Bandwidth)) { _overflowed = true; continue; }
                    kde.Interpolate(x, _d, comps, 0, m, x + _wp.DensitySlot, _d);
                }
        }

        /// <summary>The birth–death events of paths [p0, p1) of the replica that starts at path r0 and holds m
        /// paths, their rates the log-weight increments centred on <paramref name="mean"/>: four paths per
        /// Philox vector, then one at a time (the same bits).</summary>
        void Events(int p0, int p1, int r0, int m, double mean, ulong seed, ulong step, double* rate, sbyte* events, int* partners)
        {
            int p = p0;
            for (; p + 4 <= p1; p += 4)
            {
                for (int k = 0; k < 4; k++) rate[k] = _x[(long)(p + k) * _d + _lw] - mean;
                Resampling.BirthDeathEvents4(rate, seed, p, p - r0, step, m, events + p, partners + p);
            }
            for (; p < p1; p++)
            {
                events[p] = (sbyte)Resampling.BirthDeathEvent(_x[(long)p * _d + _lw] - mean, seed, p, p - r0, step, m, out int j);
                partners[p] = j;
            }
        }

        /// <summary>Each path's birth–death event at the step (<see cref="Resampling.BirthDeathEvent"/>), its
        /// partner within its replica.</summary>
        void EventPhase(int worker)
        {
            ulong seed = _s.Seed, step = _eventStep;
            double* rate = stackalloc double[4];
            fixed (sbyte* events = _events)
            fixed (int* partners = _partners)
                while (true)
                {
                    long c = Interlocked.Increment(ref _nextChunk) - 1;
                    if (c >= _chunks) return;
                    int p0 = _cs[c], p1 = _cs[c + 1];
                    int r0 = _rs[_chunkRep[c]], m = _rs[_chunkRep[c] + 1] - r0;
                    // β_i Δt: the log-weight increment since the last reset, centred within the replica
                    double mean = _rateMean[_chunkRep[c]];
                    Events(p0, p1, r0, m, mean, seed, step, rate, events, partners);
                }
        }

        /// <summary>Slot i of the next population copies its ancestor, with log w reset to 0 where its replica resampled.</summary>
        void CopyPhase(int worker)
        {
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = _cs[c], p1 = _cs[c + 1];
                bool reset = _resampled[_chunkRep[c]];
                for (int p = p0; p < p1; p++)
                {
                    double* dst = _y + (long)p * _d;
                    Buffer.MemoryCopy(_x + (long)_anc[p] * _d, dst, _d * 8, _d * 8);
                    if (reset) dst[_lw] = 0;
                }
            }
        }
    }
}

/// <summary>The weighted engine for code that holds the model's <see cref="Type"/> only.</summary>
public interface IWeightedRunner
{
    WeightedResult Run(object model, RunSettings settings, WeightPlan weight, QueryPlan[] plans);
}

public sealed class WeightedRunner<TModel> : IWeightedRunner where TModel : struct, ISdeModel
{
    public WeightedResult Run(object model, RunSettings settings, WeightPlan weight, QueryPlan[] plans)
    {
        var m = (TModel)model;
        return WeightedEngine.Run(in m, settings, weight, plans);
    }
}

public static class WeightedRunner
{
    public static IWeightedRunner For(Type modelType) =>
        (IWeightedRunner)Activator.CreateInstance(typeof(WeightedRunner<>).MakeGenericType(modelType))!;
}
