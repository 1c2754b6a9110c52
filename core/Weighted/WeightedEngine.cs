using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

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
}

/// <summary>
/// The weighted engine: the whole population in memory, stepped in lockstep between the points where it
/// must be seen as a whole (resampling checks, log_density, observation times of a window); between
/// them each chunk of paths runs on its own, as in the plain engine. Per-path work (init, steps,
/// observables) uses the plain engine's random streams (path p, step n), so without resampling the
/// paths are those of the plain engine. Population reductions run over fixed chunks in a fixed order
/// and resampling draws come from Philox keyed by (seed, step): the results do not depend on the
/// thread count. Standard errors after resampling use the time-0 ancestors (Lee and Whiteley 2018):
/// Var ≈ (N/(N−1))^{r+1} Σ_a (Σ_{i: E_i = a} W_i (φ_i − η))², r the number of resamplings.
/// </summary>
public static class WeightedEngine
{
    const int Chunk = 256;

    public static WeightedResult Run<TModel>(in TModel model, RunSettings s, WeightPlan wp, QueryPlan[] plans)
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
        using var pop = new Population<TModel>(m, s, wp, plans, steps);
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
        readonly int _n, _d, _nw, _nobs, _chunks, _lw;
        readonly double _dt, _sqdt;
        readonly Crew _crew;
        readonly Action<int> _stepPhase, _observePhase, _maxPhase, _expPhase, _copyPhase, _eventPhase, _interpolatePhase;
        readonly sbyte[] _events;
        readonly int[] _partners;
        // _w holds the normalised weights of the current population (no step since they were computed)
        bool _weightsValid;
        // population buffers (native: no pinning, no GC scans)
        double* _x, _y, _obs, _w, _buf;
        readonly int[] _eve, _eveNext, _anc;
        readonly double[] _chunkMax, _chunkSum, _chunkSum2, _scratch, _rate;
        readonly double[][] _eveSum;     // per mean query: Σ over its window of W_i (φ_i − η_n) / K by time-0 ancestor
        readonly double[] _value;        // per mean query: Σ_n η_n / K
        readonly long[] _nonFinite;
        readonly Estimate?[] _density;   // per density query at T
        readonly BinnedKde? _kde;
        long _seg0, _seg1, _nextChunk;
        double _maxLw, _sumW, _sumW2, _logZ;
        long _resamplings, _failedPaths, _failStep = long.MaxValue;
        readonly int _bufStride;

        public Population(TModel m, RunSettings s, WeightPlan wp, QueryPlan[] plans, long steps)
        {
            _m = m; _s = s; _wp = wp; _plans = plans; _steps = steps;
            _n = (int)s.Paths; _d = m.Dim; _nw = m.NoiseDim; _nobs = m.ObservableCount;
            _lw = wp.LogWeight;
            _dt = s.Dt; _sqdt = Math.Sqrt(s.Dt);
            _layout = QueryLayout.Build(plans, steps, s.Dt, _nobs);
            foreach (var l in _layout)
                if (l.Kind == EstimateKind.Density && l.From != steps)
                    throw new ArgumentException("a weighted density is estimated at T only (not over a window)");
            _chunks = (_n + Chunk - 1) / Chunk;
            int threads = s.Threads > 0 ? s.Threads : Environment.ProcessorCount;
            threads = Math.Max(1, Math.Min(threads, Math.Max(1, _chunks)));
            long need = 2L * _n * _d * 8 + (long)_n * Math.Max(_nobs, 1) * 8 + 40L * _n;
            long avail = s.MemoryLimit > 0 ? s.MemoryLimit : Memory.Available();
            Memory.Check(need, avail, $"a weighted population of {_n} paths of dimension {_d}");
            _x = Alloc((long)_n * _d); _y = Alloc((long)_n * _d);
            _obs = Alloc((long)_n * Math.Max(_nobs, 1)); _w = Alloc(_n);
            _bufStride = ((2 * _d + Math.Max(_nw, 1) + Math.Max(_d, 8) + _d + 7) & ~7); // a, b, w, zn (≥ 8: four paths' normals), zu
            _buf = Alloc((long)threads * _bufStride);
            _eve = new int[_n]; _eveNext = new int[_n]; _anc = new int[_n];
            for (int i = 0; i < _n; i++) _eve[i] = i;
            _chunkMax = new double[_chunks]; _chunkSum = new double[_chunks]; _chunkSum2 = new double[_chunks];
            _scratch = new double[2 * _n + 2];
            _rate = new double[_n];
            _events = wp.Scheme == ResampleScheme.BirthDeath ? new sbyte[_n] : [];
            _partners = wp.Scheme == ResampleScheme.BirthDeath ? new int[_n] : [];
            _eveSum = new double[plans.Length][];
            _value = new double[plans.Length];
            _nonFinite = new long[plans.Length];
            _density = new Estimate?[plans.Length];
            for (int q = 0; q < plans.Length; q++) if (_layout[q].Kind == EstimateKind.Mean) _eveSum[q] = new double[_n];
            if (wp.DensitySlot >= 0) _kde = new BinnedKde(wp.DensityComponents.Length);
            _crew = new Crew(threads);
            _stepPhase = StepPhase; _observePhase = ObservePhase; _maxPhase = MaxPhase; _expPhase = ExpPhase; _copyPhase = CopyPhase; _eventPhase = EventPhase; _interpolatePhase = InterpolatePhase;
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
            foreach (var p in new[] { (nint)_x, (nint)_y, (nint)_obs, (nint)_w, (nint)_buf }) NativeMemory.AlignedFree((void*)p);
            _x = _y = _obs = _w = _buf = null;
        }

        bool NeedsObserve(long n)
        {
            foreach (var l in _layout) if (n >= l.From && n <= l.To) return true;
            return false;
        }

        public WeightedResult Run()
        {
            var cancel = _s.Cancel;
            // init: the plain engine's draws, path by path
            _seg0 = -1; _seg1 = 0;
            Phase(_stepPhase);
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
                if (_wp.DensitySlot >= 0) { if (!_weightsValid) Weights(); Density(); }
                _seg0 = n; _seg1 = next;
                Phase(_stepPhase);
                _weightsValid = false;
                CheckFailed();
                n = next;
                if ((n & 63) == 0 || n == _steps) _s.Progress?.Invoke((double)n / Math.Max(1, _steps));
                bool observe = NeedsObserve(n);
                if (observe || (population && n < _steps)) Weights();
                if (observe) Observe(n);
                if (n < _steps && _wp.Scheme != ResampleScheme.None) MaybeResample(n);
            }
            Weights();
            double ess = 1 / _sumW2;
            // log Ẑ: the resamplings' factors and the final mean weight
            double logZ = _logZ + _maxLw + Math.Log(_sumW / _n);
            double c = CorrectionFactor();
            // Var(Ẑ)/Ẑ² ≈ 1 − c (1 − Σ_a (Σ_{E_i=a} W_i)²)
            var byEve = new double[_n];
            for (int i = 0; i < _n; i++) byEve[_eve[i]] += _w[i];
            double q = 0;
            long ancestors = 0;
            for (int a = 0; a < _n; a++) if (byEve[a] != 0) { q += byEve[a] * byEve[a]; ancestors++; }
            double relVar = 1 - c * (1 - q);
            var est = new Estimate[_plans.Length];
            for (int k = 0; k < _plans.Length; k++)
            {
                if (_layout[k].Kind == EstimateKind.Mean)
                {
                    double v = 0;
                    var es = _eveSum[k];
                    for (int a = 0; a < _n; a++) v += es[a] * es[a];
                    est[k] = new Estimate { Value = _nonFinite[k] > 0 ? double.NaN : _value[k], StdErr = Math.Sqrt(c * v), Count = _n, NonFinite = _nonFinite[k] };
                }
                else est[k] = _density[k]!;
            }
            return new WeightedResult
            {
                Estimates = est, LogNormalizer = logZ, LogNormalizerStdErr = relVar > 0 ? Math.Sqrt(relVar) : double.NaN,
                FinalEss = ess, Resamplings = _resamplings, Ancestors = ancestors, Paths = _n,
            };
        }

        /// <summary>(N/(N−1))^{r+1}: Lee and Whiteley's bias correction of the genealogy variance.</summary>
        double CorrectionFactor() => _n > 1 ? Math.Exp((_resamplings + 1) * Math.Log((double)_n / (_n - 1))) : double.NaN;

        void Phase(Action<int> body)
        {
            _nextChunk = 0;
            _crew.Run(body);
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
            ulong seed = _s.Seed;
            long first = _s.FirstPath;
            var wv = new PtrVec(w);
            TModel m = _m;
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = (int)c * Chunk, p1 = Math.Min(p0 + Chunk, _n);
                // one step of one or two noise lanes: four paths' normals per vector (same bits as Fill)
                int batched = _seg0 >= 0 && _seg1 - _seg0 == 1 && _nw > 0 && _nw <= 2 && PathNormals.Usable ? p0 + (p1 - p0) / 4 * 4 : p0;
                for (int p = p0; p < batched; p += 4)
                {
                    PathNormals.FillFirstLanes4(seed, (ulong)(first + p), (ulong)_seg0, Philox.TagStep, zn);
                    for (int k = 0; k < 4; k++)
                    {
                        double* row = _x + (long)(p + k) * _d;
                        w[0] = zn[2 * k];
                        if (_nw == 2) w[1] = zn[2 * k + 1];
                        m.Step(new PtrVec(row), new PtrVec(a), wv, _seg0 * _dt, _dt, _sqdt);
                        if (!Finite(a, _d)) Fail(_seg0 + 1);
                        Buffer.MemoryCopy(a, row, _d * 8, _d * 8);
                    }
                }
                for (int p = batched; p < p1; p++)
                {
                    double* row = _x + (long)p * _d;
                    ulong gp = (ulong)(first + p);
                    if (_seg0 < 0)
                    {
                        Normals.Fill(seed, gp, 0, Philox.TagInitNormal, zn, _d);
                        Normals.FillUniform(seed, gp, 0, Philox.TagInitUniform, zu, _d);
                        m.Init(new PtrVec(row), new PtrVec(zn), new PtrVec(zu));
                        if (!Finite(row, _d)) Fail(0);
                        continue;
                    }
                    double* u = a, v = b;
                    Buffer.MemoryCopy(row, u, _d * 8, _d * 8);
                    long n = _seg0;
                    for (; n < _seg1; n++)
                    {
                        if (_nw > 0) Normals.Fill(seed, gp, (ulong)n, Philox.TagStep, w, _nw);
                        m.Step(new PtrVec(u), new PtrVec(v), wv, n * _dt, _dt, _sqdt);
                        var t = u; u = v; v = t;
                        if (!Finite(u, _d)) { Fail(n + 1); break; }
                    }
                    Buffer.MemoryCopy(u, row, _d * 8, _d * 8);
                }
            }
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
                int p0 = (int)c * Chunk, p1 = Math.Min(p0 + Chunk, _n);
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
                int p0 = (int)c * Chunk, p1 = Math.Min(p0 + Chunk, _n);
                double mx = double.NegativeInfinity;
                for (int p = p0; p < p1; p++) { double l = _x[(long)p * _d + _lw]; if (l > mx) mx = l; }
                _chunkMax[c] = mx;
            }
        }

        void ExpPhase(int worker)
        {
            double mx = _maxLw;
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = (int)c * Chunk, p1 = Math.Min(p0 + Chunk, _n);
                double s1 = 0, s2 = 0;
                for (int p = p0; p < p1; p++)
                {
                    double e = Math.Exp(_x[(long)p * _d + _lw] - mx);
                    _w[p] = e; s1 += e; s2 += e * e;
                }
                _chunkSum[c] = s1; _chunkSum2[c] = s2;
            }
        }

        /// <summary>_w ← normalised weights of the current population; _sumW, _sumW2 (Σ of the unnormalised
        /// exp(log w − max), and Σ W² of the normalised), in a fixed chunk order.</summary>
        void Weights()
        {
            _weightsValid = true;
            Phase(_maxPhase);
            double mx = double.NegativeInfinity;
            for (int c = 0; c < _chunks; c++) if (_chunkMax[c] > mx) mx = _chunkMax[c];
            _maxLw = mx;
            Phase(_expPhase);
            double s1 = 0, s2 = 0;
            for (int c = 0; c < _chunks; c++) { s1 += _chunkSum[c]; s2 += _chunkSum2[c]; }
            double inv = 1 / s1;
            for (int p = 0; p < _n; p++) _w[p] *= inv;
            _sumW = s1; _sumW2 = s2 * inv * inv;
        }

        void Density()
        {
            _kde!.Prepare(_x, _d, _wp.DensityComponents, _w, _n, _wp.Bandwidth);
            Phase(_interpolatePhase);
        }

        /// <summary>Each path's log_density slot from the prepared grid.</summary>
        void InterpolatePhase(int worker)
        {
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = (int)c * Chunk, p1 = Math.Min(p0 + Chunk, _n);
                _kde!.Interpolate(_x, _d, _wp.DensityComponents, p0, p1, _x + _wp.DensitySlot, _d);
            }
        }

        /// <summary>The queries whose window holds step n take the weighted population at n.</summary>
        void Observe(long n)
        {
            _seg1 = n;
            Phase(_observePhase);
            for (int q = 0; q < _layout.Length; q++)
            {
                var l = _layout[q];
                if (n < l.From || n > l.To) continue;
                int o = l.Observable;
                if (l.Kind == EstimateKind.Mean)
                {
                    double eta = 0;
                    for (int i = 0; i < _n; i++) eta += _w[i] * _obs[(long)i * _nobs + o];
                    if (!double.IsFinite(eta))
                    {
                        long bad = 0;
                        for (int i = 0; i < _n; i++) if (!double.IsFinite(_obs[(long)i * _nobs + o])) bad++;
                        _nonFinite[q] = Math.Max(_nonFinite[q], bad);
                        continue;
                    }
                    double k = l.Window;
                    _value[q] += eta / k;
                    var es = _eveSum[q];
                    for (int i = 0; i < _n; i++) es[_eve[i]] += _w[i] * (_obs[(long)i * _nobs + o] - eta) / k;
                }
                else _density[q] = DensityAt(l, o);
            }
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
            double essFrac = 1 / (_sumW2 * _n);
            if (!bd && !(_wp.Ess >= 1 || essFrac < _wp.Ess)) return;
            // the mean weight goes into the normaliser: the resampled population carries it
            _logZ += _maxLw + Math.Log(_sumW / _n);
            var wspan = new ReadOnlySpan<double>(_w, _n);
            if (bd)
            {
                // β_i Δt: the log-weight increments since the last reset, centred
                double mean = 0;
                for (int i = 0; i < _n; i++) mean += _x[(long)i * _d + _lw];
                mean /= _n;
                for (int i = 0; i < _n; i++) _rate[i] = _x[(long)i * _d + _lw] - mean;
                _eventStep = (ulong)n;
                Phase(_eventPhase);
                Resampling.ApplyBirthDeath(_events, _partners, _anc);
            }
            else Resampling.Ancestors(_wp.Scheme, wspan, _s.Seed, (ulong)n, _anc, _scratch);
            for (int i = 0; i < _n; i++) _eveNext[i] = _eve[_anc[i]];
            Array.Copy(_eveNext, _eve, _n);
            Phase(_copyPhase);
            var t = _x; _x = _y; _y = t;
            _resamplings++;
            // every weight is now 1 (log w = 0): the normalised weights are 1/N, with nothing to sum
            double u = 1.0 / _n;
            for (int i = 0; i < _n; i++) _w[i] = u;
            _maxLw = 0; _sumW = _n; _sumW2 = u;
            _weightsValid = true;
        }

        ulong _eventStep;

        /// <summary>Each path's birth–death event at the step (<see cref="Resampling.BirthDeathEvent"/>).</summary>
        void EventPhase(int worker)
        {
            ulong seed = _s.Seed, step = _eventStep;
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = (int)c * Chunk, p1 = Math.Min(p0 + Chunk, _n);
                for (int p = p0; p < p1; p++)
                {
                    _events[p] = (sbyte)Resampling.BirthDeathEvent(_rate[p], seed, p, step, _n, out int j);
                    _partners[p] = j;
                }
            }
        }

        /// <summary>Slot i of the next population copies its ancestor, with log w reset to 0.</summary>
        void CopyPhase(int worker)
        {
            while (true)
            {
                long c = Interlocked.Increment(ref _nextChunk) - 1;
                if (c >= _chunks) return;
                int p0 = (int)c * Chunk, p1 = Math.Min(p0 + Chunk, _n);
                for (int p = p0; p < p1; p++)
                {
                    double* dst = _y + (long)p * _d;
                    Buffer.MemoryCopy(_x + (long)_anc[p] * _d, dst, _d * 8, _d * 8);
                    dst[_lw] = 0;
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
