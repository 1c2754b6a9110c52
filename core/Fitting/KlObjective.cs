namespace Sde.Core;

/// <summary>
/// The fitting objective of DK-SDE (docs/fitting.md): the cross entropy −E[log ρ_h(ỹ)] of the smoothed data
/// ỹ (each datum y replaced by copies y ± h∘ε) under the kernel estimate ρ_h(y) = (1/P) Σ_p K_h(y − x_p) of the
/// model's law at T, which is KL(p_data ∗ K_h ‖ ρ_T ∗ K_h) up to a constant; and its gradient by the DK
/// weights: ∂_γ log ρ_h(y) = Σ_p K_h(y − x_p)(ℓ_p − ℓ̄) / Σ_p K_h(y − x_p), where E[ℓ | x_T] = ∂_γ log ρ_T(x_T).
/// K_h is the product Gaussian kernel with bandwidth h_j on data column j. A stationary recording (`kl stationary
/// window W`, <see cref="PathRecord.Steps"/>) gives R rows per path: ρ_h averages over all of them and ℓ is the window
/// increment ℓ_n − ℓ_{n−K}, centred per recorded time.
/// </summary>
public static class KlObjective
{
    public sealed class Result
    {
        /// <summary>The objective (mean over data of each datum's loss) and its standard error over the data.</summary>
        public double Loss, LossStdErr;
        /// <summary>∂_γ of the objective, one entry per parameter (per recorded ℓ).</summary>
        public double[] Gradient = Array.Empty<double>();
        /// <summary>Per datum: its loss (n), and its gradient (n × K, row-major): the scores of the data.</summary>
        public double[] DatumLoss = Array.Empty<double>(), DatumGradient = Array.Empty<double>();
        /// <summary>
        /// <c>law = marginals</c> only: per datum and data column, the gradient of that column's loss (n × q × K,
        /// row-major; the datum's gradient is their sum): the per-marginal scores the standard errors need.
        /// </summary>
        public double[]? DatumColumnGradient;
        /// <summary>
        /// Per smoothed point, the paths the kernel estimate rests on there, (Σ K)² / Σ K²: the smallest, and the
        /// share of points below 10. Where it is small (data in the model's far tails) the log of the estimate and
        /// the ratio Σ K ℓ / Σ K are biased at O(1 / that number): more paths, or a start closer to the data.
        /// </summary>
        public double MinEffectivePaths, ShareBelow10;
    }

    /// <summary>
    /// Evaluates the objective on <paramref name="points"/> (n·copies rows of q columns, datum i owning rows
    /// i·copies … i·copies + copies − 1), with data column j compared with state component columns[j] of the
    /// recorded paths.
    /// </summary>
    public static Result Evaluate(double[] points, int copies, int q, int[] columns, double[] h, PathRecord rec, int threads)
    {
        CheckShapes(points, copies, q, columns, h, rec);
        // a stationary recording holds Times rows per path (kl stationary window): the kernel estimate averages
        // over all rows, and the weights (window increments) are centred per recorded time
        int P = checked((int)rec.Rows), K = rec.K, D = rec.D;
        int rows = points.Length / q, n = rows / copies;
        // the compared components of each path, scaled by 1/h; the centred weights
        var c0 = Centres(points, q);
        var xs = new double[(long)P * q];
        for (int p = 0; p < P; p++)
            for (int j = 0; j < q; j++) xs[(long)p * q + j] = (rec.X[(long)p * D + columns[j]] - c0[j]) / h[j];
        var lc = Centred(rec);
        // log of the kernel's normalisation: Σ_j log(h_j √(2π)), and log P
        double logNorm = Math.Log(P);
        for (int j = 0; j < q; j++) logNorm += Math.Log(h[j] * Math.Sqrt(2 * Math.PI));

        var rowLoss = new double[rows];
        var rowEff = new double[rows];
        var rowGrad = new double[(long)rows * K];
        var opts = new ParallelOptions { MaxDegreeOfParallelism = threads > 0 ? threads : Environment.ProcessorCount };
        Parallel.For(0, rows, opts, () => (new double[P], new double[q]), (m, _, buf) =>
        {
            var (e, y) = buf;
            for (int j = 0; j < q; j++) y[j] = (points[(long)m * q + j] - c0[j]) / h[j];
            var g = rowGrad.AsSpan((int)((long)m * K), K);
            var (top, w, w2) = Kernel(y, xs, q, P, e, lc, K, g);
            rowEff[m] = w * w / w2;
            rowLoss[m] = -(top + Math.Log(w) - logNorm);
            return buf;
        }, _ => { });

        return Summarise(rowLoss, rowEff, rowGrad, copies, n, K, rows);
    }

    /// <summary>
    /// The objective with <c>law = marginals</c>: the sum over the data columns of the one-dimensional cross
    /// entropies −E[log ρ_h^j(ỹ_j)], ρ_h^j the kernel estimate of the model's marginal law of component columns[j]
    /// (bandwidth h_j), and its gradient by the same DK weights: E[ℓ | x_T,j] = ∂_γ log ρ_T^j(x_T,j) by the tower
    /// property, so one recorded weight per parameter serves every marginal. A sum of marginal KLs is zero
    /// exactly when every marginal law matches the data's; unlike the joint product kernel, its kernel
    /// estimates are one-dimensional, so they stay accurate with a few thousand paths in any dimension.
    /// </summary>
    public static Result EvaluateMarginals(double[] points, int copies, int q, int[] columns, double[] h, PathRecord rec, int threads)
    {
        CheckShapes(points, copies, q, columns, h, rec);
        int P = checked((int)rec.Rows), K = rec.K, D = rec.D;
        int rows = points.Length / q, n = rows / copies;
        // column-major here: each marginal's P values contiguous, scaled by 1/h_j
        var c0 = Centres(points, q);
        var xs = new double[(long)P * q];
        for (int j = 0; j < q; j++)
            for (int p = 0; p < P; p++) xs[(long)j * P + p] = (rec.X[(long)p * D + columns[j]] - c0[j]) / h[j];
        var lc = Centred(rec);
        var logNorm = new double[q];
        for (int j = 0; j < q; j++) logNorm[j] = Math.Log(P) + Math.Log(h[j] * Math.Sqrt(2 * Math.PI));

        var rowLoss = new double[rows];
        var rowEff = new double[rows];
        var rowGrad = new double[(long)rows * K];
        var colGrad = new double[(long)rows * q * K];
        var below = new int[rows]; // per smoothed point, its columns with fewer than 10 effective paths
        var opts = new ParallelOptions { MaxDegreeOfParallelism = threads > 0 ? threads : Environment.ProcessorCount };
        Parallel.For(0, rows, opts, () => (new double[P], new double[1]), (m, _, buf) =>
        {
            var (e, y) = buf;
            double loss = 0, eff = double.PositiveInfinity;
            var row = rowGrad.AsSpan((int)((long)m * K), K);
            for (int j = 0; j < q; j++)
            {
                y[0] = (points[(long)m * q + j] - c0[j]) / h[j];
                var g = colGrad.AsSpan((int)(((long)m * q + j) * K), K);
                var (top, w, w2) = Kernel(y, xs.AsSpan((int)((long)j * P), P), 1, P, e, lc, K, g);
                eff = Math.Min(eff, w * w / w2);
                if (w * w / w2 < 10) below[m]++;
                loss -= top + Math.Log(w) - logNorm[j];
                for (int k = 0; k < K; k++) row[k] += g[k];
            }
            rowLoss[m] = loss;
            rowEff[m] = eff;
            return buf;
        }, _ => { });
        var r = Summarise(rowLoss, rowEff, rowGrad, copies, n, K, rows);
        // the thin share counts (point, column) pairs: each marginal's estimate is thin or not on its own
        r.ShareBelow10 = below.Sum() / ((double)rows * q);
        r.DatumColumnGradient = new double[(long)n * q * K];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < copies; c++)
                for (long e = 0; e < (long)q * K; e++)
                    r.DatumColumnGradient[(long)i * q * K + e] += colGrad[(long)(i * copies + c) * q * K + e] / copies;
        return r;
    }

    /// <summary>
    /// The mean of each column of the points: the kernel compares (y − c)/h with (x − c)/h, the same differences as
    /// y/h − x/h but without their cancellation (data far from 0 on a small bandwidth lost every digit of y − x).
    /// </summary>
    static double[] Centres(double[] points, int q)
    {
        var c = new double[q];
        long rows = points.Length / q;
        for (long m = 0; m < rows; m++)
            for (int j = 0; j < q; j++) c[j] += points[m * q + j];
        for (int j = 0; j < q; j++) c[j] /= Math.Max(1, rows);
        return c;
    }

    static void CheckShapes(double[] points, int copies, int q, int[] columns, double[] h, PathRecord rec)
    {
        ArgumentNullException.ThrowIfNull(points); ArgumentNullException.ThrowIfNull(rec);
        if (copies < 1 || q < 1 || columns.Length != q || h.Length != q || points.Length % (copies * q) != 0)
            throw new ArgumentException("the smoothed data do not match their columns");
    }

    /// <summary>
    /// The Gaussian kernel of the scaled point y (q coordinates) against the P scaled samples xs (row p at p·q):
    /// e[p] ← exp(−|y − x_p|²/2 − top) with top the largest exponent, and g[k] ← −Σ_p e[p] lc[p, k] / Σ_p e[p], the
    /// point's gradient of −log ρ_h. Returns top, Σ e and Σ e² (log ρ_h is top + log Σ e less the normalisation;
    /// (Σ e)² / Σ e² the paths the estimate rests on). Both laws, joint and marginal, evaluate their points so.
    /// </summary>
    static (double Top, double W, double W2) Kernel(ReadOnlySpan<double> y, ReadOnlySpan<double> xs, int q, int P, double[] e, double[] lc, int K, Span<double> g)
    {
        double top = double.NegativeInfinity;
        for (int p = 0; p < P; p++)
        {
            double a = 0;
            int o = p * q;
            for (int j = 0; j < q; j++) { double z = y[j] - xs[o + j]; a += z * z; }
            e[p] = -0.5 * a;
            if (e[p] > top) top = e[p];
        }
        double w = 0, w2 = 0;
        for (int p = 0; p < P; p++) { double x = Math.Exp(e[p] - top); e[p] = x; w += x; w2 += x * x; }
        g.Clear();
        for (int p = 0; p < P; p++)
        {
            double x = e[p];
            if (x == 0) continue;
            long o = (long)p * K;
            for (int k = 0; k < K; k++) g[k] -= x * lc[o + k];
        }
        for (int k = 0; k < K; k++) g[k] /= w;
        return (top, w, w2);
    }

    /// <summary>
    /// The recorded weights centred: by their mean over the paths, per recorded time for a stationary recording
    /// (R rows per path, the window increments; one time for <c>kl at T</c>): the same expectation, a smaller variance.
    /// </summary>
    static double[] Centred(PathRecord rec)
    {
        int P = checked((int)rec.Rows), K = rec.K, R = rec.Times;
        var lbar = new double[R * K];
        for (int p = 0; p < P; p++) for (int k = 0; k < K; k++) lbar[p % R * K + k] += rec.Ell[(long)p * K + k];
        for (int k = 0; k < R * K; k++) lbar[k] /= P / R;
        var lc = new double[(long)P * K];
        for (int p = 0; p < P; p++) for (int k = 0; k < K; k++) lc[(long)p * K + k] = rec.Ell[(long)p * K + k] - lbar[p % R * K + k];
        return lc;
    }

    static Result Summarise(double[] rowLoss, double[] rowEff, double[] rowGrad, int copies, int n, int K, int rows)
    {
        var r = new Result { DatumLoss = new double[n], DatumGradient = new double[(long)n * K], Gradient = new double[K] };
        for (int i = 0; i < n; i++)
        {
            double s = 0;
            for (int c = 0; c < copies; c++)
            {
                int m = i * copies + c;
                s += rowLoss[m];
                for (int k = 0; k < K; k++) r.DatumGradient[(long)i * K + k] += rowGrad[(long)m * K + k] / copies;
            }
            r.DatumLoss[i] = s / copies;
        }
        r.MinEffectivePaths = rowEff.Min();
        r.ShareBelow10 = rowEff.Count(e => e < 10) / (double)rows;
        double mean = r.DatumLoss.Average();
        double v = n > 1 ? r.DatumLoss.Sum(x => (x - mean) * (x - mean)) / (n - 1) : double.NaN;
        r.Loss = mean;
        r.LossStdErr = Math.Sqrt(v / n);
        for (int k = 0; k < K; k++)
        {
            double s = 0;
            for (int i = 0; i < n; i++) s += r.DatumGradient[(long)i * K + k];
            r.Gradient[k] = s / n;
        }
        return r;
    }

    /// <summary>
    /// The bandwidth rule (docs/fitting.md): Silverman's rule of thumb for a product Gaussian kernel in q
    /// dimensions, h_j = s_j (4 / ((q + 2) P))^{1/(q + 4)}, with s_j the standard deviation of data column j and
    /// P the number of simulated paths (the kernel estimate whose error it balances is that of the model's law).
    /// </summary>
    public static double Silverman(double sd, int q, long paths) => sd * Math.Pow(4.0 / ((q + 2.0) * paths), 1.0 / (q + 4.0));
}
