namespace Sde.Core;

/// <summary>
/// Jacobian matching from trajectories (docs/fitting.md, "From a trajectory file"): the vector field and its
/// Jacobian estimated from sampled paths x(t_0), x(t_1), ... of an ODE or SDE.
/// <para>The field at an interior point t_k of a path is the three-point derivative of the path (for equal
/// steps the central difference (x_{k+1} − x_{k−1}) / (t_{k+1} − t_{k−1})), exact for quadratics in t: its bias
/// is x'''(t) h₁h₂/6 = O(Δt²) for a smooth path (plus, for a path of an Euler chain with step dt, the chain's
/// own −(dt/2)·x'' = −(dt/2)·J f). On a path of an SDE dx = f dt + σ dW it carries noise of standard deviation
/// about σ/√(2Δt) per component, which does not shrink with Δt, and a bias −½σσᵀ∇log p_t(x) (the backward
/// increment is correlated with x_k), which does not shrink with Δt either: meant for ODE paths and small noise.</para>
/// <para>The Jacobian at a centre is the slope of a local linear least-squares fit F̂(x_j) ≈ a + B (x_j − x_c) over
/// the centre and its K nearest neighbours (distances in per-component standardised coordinates), leaving out
/// the points of the same path within W steps of the centre: along the path the points are nearly collinear
/// (the flow direction only) and would make the fit degenerate across it. The slope of a linear fit to a
/// curved field is biased by O(|∂²f| · radius of the neighbourhood); the field's errors enter divided by
/// the neighbourhood's spread. A centre whose neighbours span fewer than d directions (the smallest singular
/// value of their standardised offsets below <see cref="MinSpread"/> of the largest, e.g. on the thin sheets
/// of an attractor) gets no Jacobian: NaN entries, which <see cref="FieldMatching"/> skips.</para>
/// </summary>
public static class TrajectoryField
{
    public sealed class Estimate
    {
        /// <summary>Rows × d states (the centres), rows × d fields, rows × d × d Jacobians ∂f_i/∂x_j (row-major
        /// per row; NaN at the <see cref="Degenerate"/> centres), empty when <see cref="HasJacobian"/> is false.</summary>
        public double[] States = Array.Empty<double>(), Field = Array.Empty<double>(), Jacobian = Array.Empty<double>();
        public int Rows, D, Paths, Points, InteriorPoints, Neighbours, Exclusion, Degenerate;
        public bool HasJacobian;
        /// <summary>Median distance (standardised units) from a centre to its farthest neighbour.</summary>
        public double MedianRadius;
    }

    /// <summary>Neighbours of the Jacobian fit for dimension d: 4(d + 1), at least twice the d + 1 unknowns per
    /// component (so the slope's noise is averaged over several times as many points as it has unknowns) and
    /// small enough that the neighbourhood stays local.</summary>
    public static int DefaultNeighbours(int d) => 4 * (d + 1);

    /// <summary>A centre's neighbours must spread at least this fraction of their widest direction in the
    /// thinnest (singular values of the standardised offsets): the slope across a thin direction divides the
    /// field's errors and the curvature's by that width.</summary>
    public const double MinSpread = 0.05;

    /// <summary>
    /// <paramref name="states"/>: N × d rows; <paramref name="time"/>, <paramref name="path"/>: each row's time and
    /// path (the rows of a path in increasing time: the caller checks). At most <paramref name="maxRows"/> centres
    /// (every s-th interior point when there are more), each with its field and, when <paramref name="jacobian"/>,
    /// its Jacobian from <paramref name="neighbours"/> neighbours, same-path points within <paramref name="exclusion"/>
    /// steps left out.
    /// </summary>
    public static Estimate Run(double[] states, double[] time, long[] path, int d, bool jacobian, int neighbours, int exclusion, int maxRows)
    {
        int n = time.Length;
        // the rows of each path, in file order
        var byPath = new Dictionary<long, List<int>>();
        var order = new List<long>();
        for (int i = 0; i < n; i++)
        {
            if (!byPath.TryGetValue(path[i], out var l)) { l = new List<int>(); byPath[path[i]] = l; order.Add(path[i]); }
            l.Add(i);
        }
        // interior points: field by the three-point derivative; pos = (path number, index in the path)
        var ptState = new List<double>(); var ptField = new List<double>(); var ptPath = new List<int>(); var ptIndex = new List<int>();
        for (int pi = 0; pi < order.Count; pi++)
        {
            var rows = byPath[order[pi]];
            for (int k = 1; k + 1 < rows.Count; k++)
            {
                int a = rows[k - 1], b = rows[k], c = rows[k + 1];
                double h1 = time[b] - time[a], h2 = time[c] - time[b];
                double wa = -h2 / (h1 * (h1 + h2)), wb = (h2 - h1) / (h1 * h2), wc = h1 / (h2 * (h1 + h2));
                for (int i = 0; i < d; i++)
                {
                    ptState.Add(states[(long)b * d + i]);
                    ptField.Add(wa * states[(long)a * d + i] + wb * states[(long)b * d + i] + wc * states[(long)c * d + i]);
                }
                ptPath.Add(pi); ptIndex.Add(k);
            }
        }
        int m = ptPath.Count;
        var e = new Estimate { D = d, Paths = order.Count, Points = n, InteriorPoints = m, Neighbours = neighbours, Exclusion = exclusion };
        if (m == 0) return e;
        var X = ptState.ToArray(); var F = ptField.ToArray();
        int stride = (m + maxRows - 1) / maxRows;
        var centres = new List<int>();
        for (int i = 0; i < m; i += stride) centres.Add(i);

        if (!jacobian || m < neighbours + 1)
        {
            e.Rows = centres.Count;
            e.States = centres.SelectMany(c => X.AsSpan(c * d, d).ToArray()).ToArray();
            e.Field = centres.SelectMany(c => F.AsSpan(c * d, d).ToArray()).ToArray();
            return e;
        }

        // standardised coordinates for the distances
        var scale = new double[d];
        for (int i = 0; i < d; i++)
        {
            double s = 0, s2 = 0;
            for (int p = 0; p < m; p++) { double v = X[p * d + i]; s += v; s2 += v * v; }
            double mean = s / m, var = Math.Max(0, s2 / m - mean * mean);
            scale[i] = var > 0 ? 1 / Math.Sqrt(var) : 1.0;
        }
        var Z = new double[X.Length];
        for (int p = 0; p < m; p++) for (int i = 0; i < d; i++) Z[p * d + i] = X[p * d + i] * scale[i];
        var tree = new KdTree(Z, m, d);

        var jac = new double[(long)centres.Count * d * d];
        var radii = new List<double>();
        var rowJ = new double[d * d];
        for (int ci = 0; ci < centres.Count; ci++)
        {
            int c = centres[ci];
            var nb = tree.Nearest(Z.AsSpan(c * d, d), neighbours + 1,
                                  j => j == c || ptPath[j] != ptPath[c] || Math.Abs(ptIndex[j] - ptIndex[c]) > exclusion);
            double radius = 0;
            bool ok = nb.Count >= d + 2 && LocalSlope(X, F, Z, scale, d, c, nb, rowJ, out radius);
            if (ok) radii.Add(radius); else e.Degenerate++;
            for (int q = 0; q < d * d; q++) jac[(long)ci * d * d + q] = ok ? rowJ[q] : double.NaN;
        }
        e.Rows = centres.Count;
        e.States = centres.SelectMany(c => X.AsSpan(c * d, d).ToArray()).ToArray();
        e.Field = centres.SelectMany(c => F.AsSpan(c * d, d).ToArray()).ToArray();
        if (radii.Count == 0) return e; // the states span fewer than d directions everywhere: the field only
        radii.Sort();
        e.HasJacobian = true;
        e.MedianRadius = radii[radii.Count / 2];
        e.Jacobian = jac;
        return e;
    }

    /// <summary>The least-squares slope B (d × d, row i = ∇F̂_i) of F̂ ≈ a + B (x − x_c) over the points
    /// <paramref name="nb"/>; false when their offsets span fewer than d directions.</summary>
    static bool LocalSlope(double[] X, double[] F, double[] Z, double[] scale, int d, int c, List<int> nb, double[] B, out double radius)
    {
        int k = nb.Count;
        radius = 0;
        foreach (int j in nb)
        {
            double r = 0;
            for (int i = 0; i < d; i++) { double u = Z[j * d + i] - Z[c * d + i]; r += u * u; }
            radius = Math.Max(radius, Math.Sqrt(r));
        }
        // centred design (the intercept drops out): U (k × d) offsets from the neighbours' mean, in standardised
        // units for the conditioning test; the slope is solved in the original units
        var mx = new double[d]; var mf = new double[d];
        foreach (int j in nb) for (int i = 0; i < d; i++) { mx[i] += X[j * d + i]; mf[i] += F[j * d + i]; }
        for (int i = 0; i < d; i++) { mx[i] /= k; mf[i] /= k; }
        var U = MathNet.Numerics.LinearAlgebra.Matrix<double>.Build.Dense(k, d);
        var Y = MathNet.Numerics.LinearAlgebra.Matrix<double>.Build.Dense(k, d);
        for (int r = 0; r < k; r++)
            for (int i = 0; i < d; i++)
            {
                U[r, i] = X[nb[r] * d + i] - mx[i];
                Y[r, i] = F[nb[r] * d + i] - mf[i];
            }
        // conditioning in standardised units (Z = X · scale per column)
        var Us = U.Clone();
        for (int i = 0; i < d; i++) for (int r = 0; r < k; r++) Us[r, i] *= scale[i];
        var sv = Us.Svd(false).S;
        if (!(sv[d - 1] > MinSpread * sv[0])) return false;
        // B^T = (UᵀU)⁻¹ Uᵀ Y by QR
        var Bt = U.QR().Solve(Y);
        for (int i = 0; i < d; i++) for (int j = 0; j < d; j++) B[i * d + j] = Bt[j, i];
        return true;
    }

    /// <summary>A k-d tree over the rows of Z (m × d) for k-nearest-neighbour queries with a filter.</summary>
    sealed class KdTree
    {
        readonly double[] _z; readonly int _d; readonly int[] _idx;
        public KdTree(double[] z, int m, int d)
        {
            _z = z; _d = d; _idx = Enumerable.Range(0, m).ToArray();
            Build(0, m, 0);
        }

        void Build(int lo, int hi, int depth)
        {
            if (hi - lo <= 8) return;
            int axis = depth % _d, mid = (lo + hi) / 2;
            Array.Sort(_idx, lo, hi - lo, Comparer<int>.Create((a, b) => _z[a * _d + axis].CompareTo(_z[b * _d + axis])));
            Build(lo, mid, depth + 1);
            Build(mid + 1, hi, depth + 1);
        }

        /// <summary>The k nearest points that pass <paramref name="keep"/>, nearest first.</summary>
        public List<int> Nearest(ReadOnlySpan<double> q, int k, Func<int, bool> keep)
        {
            var heap = new PriorityQueue<int, double>(Comparer<double>.Create((a, b) => b.CompareTo(a))); // max-heap on distance
            var qa = q.ToArray();
            Search(qa, 0, _idx.Length, 0, k, keep, heap);
            var res = new List<(int, double)>();
            while (heap.TryDequeue(out int j, out double dist)) res.Add((j, dist));
            res.Reverse();
            return res.Select(r => r.Item1).ToList();
        }

        void Search(double[] q, int lo, int hi, int depth, int k, Func<int, bool> keep, PriorityQueue<int, double> heap)
        {
            if (hi <= lo) return;
            if (hi - lo <= 8)
            {
                for (int t = lo; t < hi; t++) Offer(q, _idx[t], k, keep, heap);
                return;
            }
            int axis = depth % _d, mid = (lo + hi) / 2, p = _idx[mid];
            double diff = q[axis] - _z[p * _d + axis];
            Offer(q, p, k, keep, heap);
            int nlo = diff < 0 ? lo : mid + 1, nhi = diff < 0 ? mid : hi;
            int flo = diff < 0 ? mid + 1 : lo, fhi = diff < 0 ? hi : mid;
            Search(q, nlo, nhi, depth + 1, k, keep, heap);
            if (heap.Count < k || diff * diff < Worst(heap)) Search(q, flo, fhi, depth + 1, k, keep, heap);
        }

        void Offer(double[] q, int j, int k, Func<int, bool> keep, PriorityQueue<int, double> heap)
        {
            if (!keep(j)) return;
            double s = 0;
            for (int i = 0; i < _d; i++) { double u = _z[j * _d + i] - q[i]; s += u * u; }
            if (heap.Count < k) heap.Enqueue(j, s);
            else if (heap.TryPeek(out _, out double worst) && s < worst) { heap.Dequeue(); heap.Enqueue(j, s); }
        }
    }

    static double Worst(PriorityQueue<int, double> h) => h.TryPeek(out _, out double p) ? p : double.PositiveInfinity;
}
