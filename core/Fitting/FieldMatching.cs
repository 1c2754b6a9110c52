namespace Sde.Core;

/// <summary>
/// Jacobian matching (docs/fitting.md): the least-squares distance between the model's drift f_γ and a
/// given vector field F, and between their Jacobians,
/// L(γ) = (1/M) Σ_m [ Σ_{i ∈ fields} (f_γ,i(x_m) − F_mi)² + λ Σ_{(i,j) ∈ entries} (∂_j f_γ,i(x_m) − J_mij)² ],
/// with ∂_γ L from the compiler's symbolic ∂_γ f and ∂_γ D_x f (the parameter tangent χ and its Jacobian Dχ
/// of one Euler step with Δt = 1 and no noise). The field is evaluated at t = 0.
/// </summary>
public static class FieldMatching
{
    public sealed class Result
    {
        public double Loss, LossStdErr;
        public double[] Gradient = Array.Empty<double>();
        /// <summary>Per row: its loss (M) and its gradient (M × K, row-major).</summary>
        public double[] RowLoss = Array.Empty<double>(), RowGradient = Array.Empty<double>();
    }

    /// <summary>
    /// <paramref name="states"/>: M × d rows; <paramref name="fieldComp"/>, <paramref name="field"/>: the compared
    /// field components and M × nf values; <paramref name="jacRow"/>, <paramref name="jacCol"/>, <paramref name="jac"/>:
    /// the compared Jacobian entries ∂f_row/∂x_col and M × nj values. K: the fitted params (response params of the model).
    /// </summary>
    public static Result Evaluate<TModel>(in TModel model, TangentStructure st, double[] states, int[] fieldComp, double[] field,
                                          int[] jacRow, int[] jacCol, double[] jac, double lambda)
        where TModel : struct, ISdeTangentModel
    {
        int d = model.Dim, m = Math.Max(1, model.NoiseDim), K = st.Params.Length;
        int M = states.Length / d, nf = fieldComp.Length, nj = jacRow.Length;
        // where each compared Jacobian entry sits in the patterns of J and of each Dχ (−1: structurally zero)
        int Find(int[] rows, int[] cols, int r, int c) { for (int e = 0; e < rows.Length; e++) if (rows[e] == r && cols[e] == c) return e; return -1; }
        var jAt = new int[nj];
        var dAt = new int[K][];
        for (int q = 0; q < nj; q++) jAt[q] = Find(st.JRow, st.JCol, jacRow[q], jacCol[q]);
        for (int k = 0; k < K; k++)
        {
            dAt[k] = new int[nj];
            for (int q = 0; q < nj; q++) dAt[k][q] = Find(st.DChiRow[k], st.DChiCol[k], jacRow[q], jacCol[q]);
        }
        var x = new double[d]; var f = new double[d]; var w = new double[m];
        var jv = new double[Math.Max(1, st.JRow.Length)];
        var chi = new double[K][]; var dchi = new double[K][]; var dg = new double[K][];
        for (int k = 0; k < K; k++) { chi[k] = new double[d]; dchi[k] = new double[Math.Max(1, st.DChiRow[k].Length)]; dg[k] = new double[Math.Max(1, st.DgRow[k].Length)]; }
        var r = new Result { RowLoss = new double[M], RowGradient = new double[(long)M * K], Gradient = new double[K] };
        for (int row = 0; row < M; row++)
        {
            Array.Copy(states, (long)row * d, x, 0, d);
            var X = new ArrayVec(x);
            model.Drift(X, 0.0, new ArrayVec(f));
            if (nj > 0) model.Jacobian(X, new ArrayVec(w), 0.0, 1.0, 1.0, new ArrayVec(jv));
            for (int k = 0; k < K; k++) model.ParamTangent(k, X, new ArrayVec(w), 0.0, 1.0, 1.0, new ArrayVec(chi[k]), new ArrayVec(dchi[k]), new ArrayVec(dg[k]));
            double loss = 0;
            long g = (long)row * K;
            for (int q = 0; q < nf; q++)
            {
                int i = fieldComp[q];
                double res = f[i] - field[(long)row * nf + q];
                loss += res * res;
                for (int k = 0; k < K; k++) r.RowGradient[g + k] += 2 * res * chi[k][i];
            }
            for (int q = 0; q < nj; q++)
            {
                // D_x f = J − I for one step with Δt = 1 and no noise
                double df = (jAt[q] >= 0 ? jv[jAt[q]] : 0.0) - (jacRow[q] == jacCol[q] ? 1.0 : 0.0);
                double target = jac[(long)row * nj + q];
                if (double.IsNaN(target)) continue; // not known at this row (a trajectory's thin neighbourhood)
                double res = df - target;
                loss += lambda * res * res;
                for (int k = 0; k < K; k++)
                    if (dAt[k][q] >= 0) r.RowGradient[g + k] += 2 * lambda * res * dchi[k][dAt[k][q]];
            }
            r.RowLoss[row] = loss;
        }
        double mean = r.RowLoss.Average();
        r.Loss = mean;
        r.LossStdErr = M > 1 ? Math.Sqrt(r.RowLoss.Sum(v => (v - mean) * (v - mean)) / (M - 1) / M) : double.NaN;
        for (int k = 0; k < K; k++)
        {
            double s = 0;
            for (int row = 0; row < M; row++) s += r.RowGradient[(long)row * K + k];
            r.Gradient[k] = s / M;
        }
        return r;
    }
}
