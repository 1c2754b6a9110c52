namespace Sde.Core;

/// <summary>
/// Sparse LU without pivoting on a fixed pattern, with selected inversion (Takahashi's recurrences).
/// The DK recursion needs ∇ log|det J|_k = tr(J⁻¹ ∂_k J) and tr(J⁻¹ Dχ): entries of J⁻¹ at the
/// Hessian's positions, next to J's pattern. A Neumann series gets each entry only through a whole
/// column of J⁻¹ (d solves per step), whereas the entries of J⁻¹ on the filled pattern of the
/// factors follow from the factors in O(Σ_k |row_k|·|col_k|): for Lorenz-96 a few thousand flops
/// instead of d² × iterations. J = I + E is a small perturbation of the identity whenever the
/// Neumann series converges, so elimination without pivoting is stable there; a tiny pivot
/// reports failure and the caller falls back to dense LU with partial pivoting.
/// The symbolic phase runs once per run on the symmetrised pattern (which makes the pattern closed
/// under the recurrences). Values live in dense d×d storage addressed through the pattern lists.
/// </summary>
internal sealed class SparseLuPlan
{
    public readonly int D;
    /// <summary>Per k: rows r &gt; k of column k (L), and columns c &gt; k of row k (U), in the filled pattern.</summary>
    public readonly int[][] Lower, Upper;
    /// <summary>Flat indices i·d + j of every entry of the filled pattern (to clear and to invert).</summary>
    public readonly int[] Entries;
    readonly bool[] _inPattern;

    public SparseLuPlan(int d, int[] rows, int[] cols)
    {
        D = d;
        var p = new bool[d * d];
        for (int i = 0; i < d; i++) p[i * d + i] = true;
        for (int e = 0; e < rows.Length; e++) { p[rows[e] * d + cols[e]] = true; p[cols[e] * d + rows[e]] = true; }
        // symbolic elimination: eliminating k connects every pair of its later neighbours
        var nb = new List<int>();
        for (int k = 0; k < d; k++)
        {
            nb.Clear();
            for (int r = k + 1; r < d; r++) if (p[r * d + k]) nb.Add(r);
            foreach (int r in nb) foreach (int c in nb) p[r * d + c] = true;
        }
        Lower = new int[d][]; Upper = new int[d][];
        var entries = new List<int>();
        for (int k = 0; k < d; k++)
        {
            var lo = new List<int>(); var up = new List<int>();
            for (int r = k + 1; r < d; r++) if (p[r * d + k]) lo.Add(r);
            for (int c = k + 1; c < d; c++) if (p[k * d + c]) up.Add(c);
            Lower[k] = lo.ToArray(); Upper[k] = up.ToArray();
        }
        for (int i = 0; i < d * d; i++) if (p[i]) entries.Add(i);
        Entries = entries.ToArray();
        _inPattern = p;
    }

    public bool Contains(int i, int j) => _inPattern[i * D + j];

    /// <summary>Factor J (values at rows/cols) into a (L below the diagonal, unit; U on and above). False on a tiny pivot.</summary>
    public unsafe bool Factor(double[] values, int[] rows, int[] cols, double[] input)
    {
        int d = D;
        fixed (double* a = values)
        {
            foreach (int e in Entries) a[e] = 0;
            for (int e = 0; e < rows.Length; e++) a[rows[e] * d + cols[e]] += input[e];
            for (int k = 0; k < d; k++)
            {
                double* ak = a + k * d;
                double piv = ak[k];
                if (!(Math.Abs(piv) > 1e-8) || !double.IsFinite(piv)) return false;
                double inv = 1.0 / piv;
                int[] up = Upper[k];
                foreach (int r in Lower[k])
                {
                    double* ar = a + r * d;
                    double l = ar[k] *= inv;
                    if (l == 0) continue;
                    for (int c = 0; c < up.Length; c++) { int j = up[c]; ar[j] -= l * ak[j]; }
                }
            }
        }
        return true;
    }

    /// <summary>Z = J⁻¹ on the filled pattern, from the factors (Takahashi: U Z = L⁻¹ and Z L = U⁻¹).</summary>
    public unsafe void SelectedInverse(double[] factors, double[] inverse)
    {
        int d = D;
        fixed (double* a = factors, z = inverse)
        {
            for (int i = d - 1; i >= 0; i--)
            {
                int[] lo = Lower[i], up = Upper[i];
                double* ai = a + i * d;
                // column i below the diagonal: Z_ri = −Σ_{k∈L(i)} Z_rk L_ki
                foreach (int r in lo)
                {
                    double* zr = z + r * d;
                    double s = 0;
                    for (int c = 0; c < lo.Length; c++) { int k = lo[c]; s -= zr[k] * a[k * d + i]; }
                    zr[i] = s;
                }
                double uii = ai[i];
                double* zi = z + i * d;
                // row i right of the diagonal: Z_ij = −Σ_{k∈U(i)} U_ik Z_kj / U_ii
                foreach (int j in up)
                {
                    double s = 0;
                    for (int c = 0; c < up.Length; c++) { int k = up[c]; s -= ai[k] * z[k * d + j]; }
                    zi[j] = s / uii;
                }
                {
                    double s = 1;
                    for (int c = 0; c < up.Length; c++) { int k = up[c]; s -= ai[k] * z[k * d + i]; }
                    zi[i] = s / uii;
                }
            }
        }
    }

    /// <summary>u = J⁻ᵀ c from the factors: Uᵀ y = c, then Lᵀ u = y.</summary>
    public unsafe void SolveTransposed(double[] factors, double[] c, double[] u)
    {
        int d = D;
        Array.Copy(c, u, d);
        fixed (double* a = factors, x = u)
        {
            for (int k = 0; k < d; k++)
            {
                double* ak = a + k * d;
                double y = x[k] / ak[k];
                x[k] = y;
                int[] up = Upper[k];
                for (int c2 = 0; c2 < up.Length; c2++) { int j = up[c2]; x[j] -= ak[j] * y; }
            }
            for (int k = d - 1; k >= 0; k--)
            {
                double s = x[k];
                int[] lo = Lower[k];
                for (int c2 = 0; c2 < lo.Length; c2++) { int r = lo[c2]; s -= a[r * d + k] * x[r]; }
                x[k] = s;
            }
        }
    }
}
