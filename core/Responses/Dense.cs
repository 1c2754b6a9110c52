using System.Runtime.CompilerServices;
namespace Sde.Core;

/// <summary>
/// Small dense linear algebra for the per-step solves (row-major, in place, no allocation), generic
/// over the vector type so that the CPU engine (<see cref="ArrayVec"/>) and the ILGPU kernels
/// (<c>SoaVec</c>) run the same code, operation for operation. Pivot indices are stored as doubles
/// (a kernel's scratch rows are doubles).
/// </summary>
internal static class Dense
{
    /// <summary>LU with partial pivoting; false if singular.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // the growth measurement calls it thousands of times within a fraction of a second: never at tier 0
    public static bool Lu<TV>(TV a, TV piv, int n) where TV : struct, IVec
    {
        for (int k = 0; k < n; k++)
        {
            int p = k; double max = Math.Abs(a[k * n + k]);
            for (int i = k + 1; i < n; i++) { double v = Math.Abs(a[i * n + k]); if (v > max) { max = v; p = i; } }
            if (max == 0 || !(max < double.PositiveInfinity)) return false;
            piv[k] = p;
            if (p != k) for (int j = 0; j < n; j++) { double t = a[k * n + j]; a[k * n + j] = a[p * n + j]; a[p * n + j] = t; }
            double inv = 1.0 / a[k * n + k];
            for (int i = k + 1; i < n; i++)
            {
                double f = a[i * n + k] * inv;
                a[i * n + k] = f;
                if (f != 0) for (int j = k + 1; j < n; j++) a[i * n + j] = a[i * n + j] - f * a[k * n + j];
            }
        }
        return true;
    }

    /// <summary>Inverse from the LU factors, column by column.</summary>
    public static void Inverse<TV>(TV lu, TV piv, int n, TV inv, TV col) where TV : struct, IVec
    {
        for (int c = 0; c < n; c++)
        {
            for (int i = 0; i < n; i++) col[i] = 0.0;
            col[c] = 1;
            for (int k = 0; k < n; k++)
            {
                int pk = (int)piv[k];
                if (pk != k) { double t = col[k]; col[k] = col[pk]; col[pk] = t; }
            }
            for (int i = 0; i < n; i++) { double s = col[i]; for (int j = 0; j < i; j++) s -= lu[i * n + j] * col[j]; col[i] = s; }
            for (int i = n - 1; i >= 0; i--) { double s = col[i]; for (int j = i + 1; j < n; j++) s -= lu[i * n + j] * col[j]; col[i] = s / lu[i * n + i]; }
            for (int i = 0; i < n; i++) inv[i * n + c] = col[i];
        }
    }

    /// <summary>Cholesky A = L Lᵀ in the lower triangle; false when not (numerically) positive definite.</summary>
    public static bool Cholesky<TV>(TV a, int n) where TV : struct, IVec
    {
        double scale = 0;
        for (int i = 0; i < n; i++) scale = Math.Max(scale, Math.Abs(a[i * n + i]));
        if (scale == 0) return false;
        for (int j = 0; j < n; j++)
        {
            double s = a[j * n + j];
            for (int k = 0; k < j; k++) s -= a[j * n + k] * a[j * n + k];
            if (!(s > 1e-13 * scale)) return false;
            double l = Math.Sqrt(s);
            a[j * n + j] = l;
            for (int i = j + 1; i < n; i++)
            {
                double t = a[i * n + j];
                for (int k = 0; k < j; k++) t -= a[i * n + k] * a[j * n + k];
                a[i * n + j] = t / l;
            }
        }
        return true;
    }

    /// <summary>b ← (L Lᵀ)⁻¹ b from the Cholesky factor.</summary>
    public static void CholeskySolve<TV>(TV l, int n, TV b) where TV : struct, IVec
    {
        for (int i = 0; i < n; i++) { double s = b[i]; for (int k = 0; k < i; k++) s -= l[i * n + k] * b[k]; b[i] = s / l[i * n + i]; }
        for (int i = n - 1; i >= 0; i--) { double s = b[i]; for (int k = i + 1; k < n; k++) s -= l[k * n + i] * b[k]; b[i] = s / l[i * n + i]; }
    }

    /// <summary>
    /// The divergence kernel's pseudo-inverse of the noise σ (d×m, row-major; <paramref name="amat"/> d×d scratch,
    /// <paramref name="col"/> and <paramref name="z"/> length d): full row rank, σ⁺ = σᵀ(σσᵀ)⁻¹ and Π = I (returns 1);
    /// else full column rank, σ⁺ = (σᵀσ)⁻¹σᵀ and Π = σσ⁺ into <paramref name="pi"/> (returns 0); σσᵀ and σᵀσ both
    /// singular: −1. σ⁺ is m×d into <paramref name="sp"/>. The CPU worker and the GPU tangent kernel run this
    /// one code (the same bits).
    /// </summary>
    public static int NoisePseudoInverse<TV>(TV sig, TV amat, TV sp, TV pi, TV col, TV z, int d, int m) where TV : struct, IVec
    {
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
            {
                double s = 0;
                for (int l = 0; l < m; l++) s += sig[i * m + l] * sig[j * m + l];
                amat[i * d + j] = s;
            }
        if (Cholesky(amat, d))
        {
            // sp[l, i] = Σ_r σ[r, l] A⁻¹[r, i]: solve A z = σ[:, l] for each lane l (A symmetric)
            for (int l = 0; l < m; l++)
            {
                for (int r = 0; r < d; r++) col[r] = sig[r * m + l];
                CholeskySolve(amat, d, col);
                for (int i = 0; i < d; i++) sp[l * d + i] = col[i];
            }
            return 1;
        }
        for (int a = 0; a < m; a++)
            for (int c = 0; c < m; c++)
            {
                double s = 0;
                for (int r = 0; r < d; r++) s += sig[r * m + a] * sig[r * m + c];
                amat[a * m + c] = s;
            }
        if (!Cholesky(amat, m)) return -1;
        // (σᵀσ is non-singular only for m ≤ d, so a column of length m fits in z)
        for (int i = 0; i < d; i++)
        {
            for (int a = 0; a < m; a++) z[a] = sig[i * m + a];
            CholeskySolve(amat, m, z);
            for (int a = 0; a < m; a++) sp[a * d + i] = z[a];
        }
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
            {
                double s = 0;
                for (int a = 0; a < m; a++) s += sig[i * m + a] * sp[a * d + j];
                pi[i * d + j] = s;
            }
        return 0;
    }

    /// <summary>Σ_i u_i (c_i − α (Π c)_i): the divergence kernel's u·(I − αΠ)c under degenerate noise (Π d×d,
    /// row-major), the sum in index order, for the CPU worker and the GPU kernel alike.</summary>
    public static double DotProjected<TV>(TV u, TV pi, TV c, double alpha, int d) where TV : struct, IVec
    {
        double s = 0;
        for (int i = 0; i < d; i++)
        {
            double pc = 0;
            for (int j = 0; j < d; j++) pc += pi[i * d + j] * c[j];
            s += u[i] * (c[i] - alpha * pc);
        }
        return s;
    }

    /// <summary>ν = (I − αΠ)ᵀu − α σ⁺ᵀw (<paramref name="spw"/> = σ⁺ᵀw): the covector's update under degenerate noise.</summary>
    public static void CovectorProjected<TV>(TV u, TV pi, TV spw, double alpha, TV nu, int d) where TV : struct, IVec
    {
        for (int i = 0; i < d; i++)
        {
            double pu = 0;
            for (int j = 0; j < d; j++) pu += pi[j * d + i] * u[j];
            nu[i] = u[i] - alpha * pu - alpha * spw[i];
        }
    }
}
