using System.Runtime.CompilerServices;
namespace Sde.Core;

/// <summary>What <see cref="CovectorGrowth.Measure{TModel}"/> found.</summary>
public sealed class CovectorGrowthResult
{
    /// <summary>λ_cov: the mean log-growth per unit time of the homogeneous covector recursion ν ← J⁻ᵀν
    /// (minus the most negative Lyapunov exponent of the chain); 0 for an ODE or when nothing was measured.</summary>
    public double Rate { get; init; }
    /// <summary>Standard error of <see cref="Rate"/> over the measured paths.</summary>
    public double StdErr { get; init; }
    /// <summary>The variance rate s² of the per-path log-growth: Var(G)/τ over the paths (G the log-growth over a
    /// window of length τ). With a log-normal growth, E|ν_t|² grows like exp(2(λ_cov + s²)t).</summary>
    public double VarianceRate { get; init; }
    public int Paths { get; init; }
    public long Steps { get; init; }
    /// <summary>λ_tan: the mean log-growth per unit time of the forward tangent v ← J v on the same paths (the top
    /// Lyapunov exponent of the chain, positive when it is chaotic). The pathwise tangent grows like e^{λ_tan t}.</summary>
    public double TangentRate { get; init; }
}

/// <summary>
/// The growth rate of the DK covector without its kernel: ν_{n+1} = J_n⁻ᵀ ν_n, normalised every step,
/// is a power iteration for the fastest-growing direction of the products J⁻ᵀ (the flow's most
/// contracting direction), and the mean of log|J_n⁻ᵀ ν_n| / Δt is its rate λ_cov. The schedule's rate
/// must exceed it (the kernel damps ν like e^{−rate·t}): the adaptive default schedule is derived from it.
/// Deterministic: a few paths of their own (path numbers 2^47 + p, which no run reaches) of the run's seed,
/// one thread, so the result depends only on the model, the settings and the seed.
/// </summary>
public static class CovectorGrowth
{
    /// <summary>The paths of the measurement (Philox path numbers <see cref="FirstPath"/> + p).</summary>
    public const int DefaultPaths = 32;
    public const ulong FirstPath = 1UL << 47;

    /// <summary>The adaptive default schedule's rate: Factor · λ_cov, and never below Floor (docs/responses.md
    /// has the variance study behind both).</summary>
    public const double Floor = 10, Factor = 4;

    public static double RateFor(CovectorGrowthResult g) => Math.Max(Floor, ThreeDigits(Factor * g.Rate));

    /// <summary>The pathwise control variate is carried while λ_tan·T ≤ this: beyond it the tangent has grown by
    /// more than e³ ≈ 20 along the unstable direction, its variance by e⁶, and the optimal coefficient
    /// (≈ Var(kernel)/Var(tangent)) buys nothing for the tangent's cost (docs/responses.md).</summary>
    public const double ControlHorizon = 3;

    /// <summary>Is the pathwise tangent worth carrying as a control variate up to time <paramref name="t"/>?</summary>
    public static bool TangentUseful(CovectorGrowthResult g, double t) => g.Paths == 0 || g.TangentRate * t <= ControlHorizon;

    /// <summary>Rounded to three significant digits (as the method text shows it).</summary>
    public static double ThreeDigits(double r) =>
        !(r > 0) || !double.IsFinite(r) ? 0 : double.Parse(r.ToString("G3", System.Globalization.CultureInfo.InvariantCulture), System.Globalization.CultureInfo.InvariantCulture);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs once, a fraction of a second: tier 0 and OSR code took most of it
    public static unsafe CovectorGrowthResult Measure<TModel>(in TModel model, TangentStructure st, RunSettings s, int paths = DefaultPaths)
        where TModel : struct, ISdeTangentModel
    {
        int d = model.Dim, m = model.NoiseDim;
        long steps = s.Steps;
        if (steps < 1 || d < 1 || m == 0) return new CovectorGrowthResult();
        // cap the work: dense LU is d³/3 per step; small models measure over the whole horizon
        bool dense = d <= 64;
        double perStep = dense ? (double)d * d * d : 50.0 * st.JRow.Length;
        long cap = (long)Math.Max(400, Math.Min(200_000, 4e8 / (paths * Math.Max(1.0, perStep))));
        long n1 = Math.Min(steps, cap);
        long n0 = n1 / 10; // transient of the power iteration: not counted
        double dt = s.Dt, sq = Math.Sqrt(dt);
        var x = new double[d]; var y = new double[d]; var w = new double[Math.Max(1, m)];
        var zn = new double[d]; var zu = new double[d];
        var jv = new double[Math.Max(1, st.JRow.Length)];
        var a = new double[dense ? d * d : 0]; var piv = new double[d];
        var nu = new double[d]; var u = new double[d]; var tmp = new double[d];
        var tv = new double[d]; var tu = new double[d];
        var growth = new List<double>(); var tgrowth = new List<double>();
        TModel mdl = model;
        var pairs = new StepNormals(m);
        for (int p = 0; p < paths; p++)
        {
            ulong gp = FirstPath + (ulong)p;
            fixed (double* px = x, pzn = zn, pzu = zu)
            {
                Normals.Fill(s.Seed, gp, 0, Philox.TagInitNormal, pzn, d);
                Normals.FillUniform(s.Seed, gp, 0, Philox.TagInitUniform, pzu, d);
                mdl.Init(new PtrVec(px), new PtrVec(pzn), new PtrVec(pzu));
            }
            // a fixed start that is not special for any pattern: (1, 2, ..., d) normalised
            double nn = 0;
            for (int i = 0; i < d; i++) { nu[i] = 1 + i; nn += nu[i] * nu[i]; }
            for (int i = 0; i < d; i++) nu[i] /= Math.Sqrt(nn);
            Array.Copy(nu, tv, d);
            double g = 0, gt = 0; long counted = 0; bool ok = true;
            for (long n = 0; n < n1 && ok; n++)
            {
                double t = n * dt;
                fixed (double* px = x, py = y, pw = w, pj = jv)
                {
                    pairs.Fill(s.Seed, gp, (ulong)n, Philox.TagStep, pw, m);
                    mdl.Jacobian(new PtrVec(px), new PtrVec(pw), t, dt, sq, new PtrVec(pj));
                    mdl.Step(new PtrVec(px), new PtrVec(py), new PtrVec(pw), t, dt, sq);
                }
                // the forward tangent: v ← J v (J = I + E on the pattern, as the Neumann solve reads it)
                Array.Copy(tv, tu, d);
                for (int e = 0; e < st.JRow.Length; e++)
                    tu[st.JRow[e]] += (st.JRow[e] == st.JCol[e] ? jv[e] - 1.0 : jv[e]) * tv[st.JCol[e]];
                double tn = 0;
                for (int i = 0; i < d; i++) tn += tu[i] * tu[i];
                tn = Math.Sqrt(tn);
                if (tn > 0 && double.IsFinite(tn)) { for (int i = 0; i < d; i++) tv[i] = tu[i] / tn; if (n >= n0) gt += Math.Log(tn); }
                ok = dense ? SolveDense(st, jv, a, piv, nu, u, d) : SolveNeumann(st, jv, nu, u, tmp, d);
                double norm = 0;
                for (int i = 0; i < d; i++) norm += u[i] * u[i];
                norm = Math.Sqrt(norm);
                if (!(norm > 0) || !double.IsFinite(norm)) { ok = false; break; }
                for (int i = 0; i < d; i++) nu[i] = u[i] / norm;
                if (n >= n0) { g += Math.Log(norm); counted++; }
                (x, y) = (y, x);
                for (int i = 0; i < d; i++) if (!double.IsFinite(x[i])) ok = false;
            }
            if (ok && counted > 0) { growth.Add(g / (counted * dt)); tgrowth.Add(gt / (counted * dt)); }
        }
        if (growth.Count == 0) return new CovectorGrowthResult { Paths = 0, Steps = n1 };
        double mean = growth.Average();
        double v = growth.Count > 1 ? growth.Sum(q => (q - mean) * (q - mean)) / (growth.Count - 1) : 0;
        double tau = (n1 - n0) * dt;
        return new CovectorGrowthResult
        {
            Rate = mean, StdErr = Math.Sqrt(v / growth.Count), VarianceRate = v * tau, Paths = growth.Count, Steps = n1,
            TangentRate = tgrowth.Average(),
        };
    }

    /// <summary>u = J⁻ᵀ ν by dense LU with pivoting.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static bool SolveDense(TangentStructure st, double[] jv, double[] a, double[] piv, double[] nu, double[] u, int d)
    {
        Array.Clear(a);
        for (int e = 0; e < st.JRow.Length; e++) a[st.JRow[e] * d + st.JCol[e]] += jv[e];
        if (!Dense.Lu(new ArrayVec(a), new ArrayVec(piv), d)) return false;
        // J = P⁻¹ L U (rows swapped by piv); Jᵀ u = ν: Uᵀ z = ν, Lᵀ y = z, u = Pᵀ y
        for (int i = 0; i < d; i++)
        {
            double s = nu[i];
            for (int j = 0; j < i; j++) s -= a[j * d + i] * u[j];
            u[i] = s / a[i * d + i];
        }
        for (int i = d - 1; i >= 0; i--)
        {
            double s = u[i];
            for (int j = i + 1; j < d; j++) s -= a[j * d + i] * u[j];
            u[i] = s;
        }
        for (int k = d - 1; k >= 0; k--)
        {
            int pk = (int)piv[k];
            if (pk != k) (u[k], u[pk]) = (u[pk], u[k]);
        }
        return true;
    }

    /// <summary>u = J⁻ᵀ ν by u ← ν − Eᵀu (J = I + E) to 1e-12; false when it does not converge.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static bool SolveNeumann(TangentStructure st, double[] jv, double[] nu, double[] u, double[] tmp, int d)
    {
        Array.Copy(nu, u, d);
        for (int it = 0; it < 500; it++)
        {
            Array.Copy(nu, tmp, d);
            for (int e = 0; e < st.JRow.Length; e++)
            {
                double ev = st.JRow[e] == st.JCol[e] ? jv[e] - 1.0 : jv[e];
                tmp[st.JCol[e]] -= ev * u[st.JRow[e]];
            }
            double diff = 0, size = 0;
            for (int i = 0; i < d; i++) { diff = Math.Max(diff, Math.Abs(tmp[i] - u[i])); size = Math.Max(size, Math.Abs(tmp[i])); u[i] = tmp[i]; }
            if (!double.IsFinite(size)) return false;
            if (diff <= 1e-12 * size || size == 0) return true;
        }
        return false;
    }
}
