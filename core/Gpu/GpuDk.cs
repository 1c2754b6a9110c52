using ILGPU;
using ILGPU.Runtime;

namespace Sde.Core.Gpu;

/// <summary>A divergence-kernel chain (one schedule and mode) on the device: <see cref="ResponseEngine.DkGroup"/>.</summary>
public struct DkGroupDev
{
    public int ConstantAlpha;
    public double Alpha, Rate;
    public int Mode;          // 0 exact (dense LU per step; also iterative, see README), 1 first order
    public int WhOff, WhCount; // its response parameters: ints[WhOff ..]
    public long Nu, NuNew, Gld, Sel, Ell;   // scratch rows
}

/// <summary>A divergence-kernel / pathwise response plan on the device.</summary>
public struct TanPlanDev
{
    public int Kind;          // 0 mean, 1 density
    public int Method;        // 0 divergence kernel, 1 pathwise
    public int Observable, Bins, Group, Which, ScoreComponent;
    public long From, To;
    public double Lo, Hi;
    public long WindowSteps;  // stationary window in steps (0: none)
    public long RingSteps;    // its ring of ℓ holds RingSteps + 1 steps (0: no ring): the window's, or a stationary recording's
    public long Ring;         // first scratch row of its ring buffer (RingSteps + 1 rows)
    public int Slot;          // first row of the per-path accumulator buffer
    public int Alignment;     // 1: Lyapunov alignment (|cos(q_N, ν_N)| into the density bins)
    public int Centred;       // 1: also the C rows (φ or bin indicator) and the B row (Σ ω) after its A rows
    public int Explicit;      // ≥ 0: the observable ∂φ/∂γ added to each sample of a mean (ResponsePlan.Explicit)
}

/// <summary>
/// Scalars of one chunk of the tangent kernel, the offsets of the sparsity patterns in the int table and
/// the first scratch row of every per-path array (scratch row r of path p is at r·P + p).
/// </summary>
public struct TanArgs
{
    public ulong Seed;
    public long FirstPath, Count, Steps;
    public double Dt, SqDt;
    public int D, M, NObs, NP, NPlans, NGroups, NPathwise;
    public int NeedJ, NeedDk, NeedHessian, Multiplicative, Diagonal, InitHasScore, NeedAlign;
    public int NJ, NH, NG, NSel;
    // int table offsets
    public int IJRow, IJCol, IHK, IHSel, IGRow, IGLane, IDiag, INoiseLane, INoiseIndex;
    public int ISelJ, ISelI, ISelE, ISelE2Off, ISelE2A, ISelE2B;
    public int IDChiSelOff, IDChiSel, IDChiRowOff, IDgOff, IDgRow, IDgLane, IDgRowOff;
    public int IObsGradState, IObsGradEntOff, IObsGradEnt, IDetInit, INeedChi, IPathwise;
    // scratch rows
    public long X, Y, W, W2, ZN, ZU, Obs, Ell0, V0, JV, EV, HV, SV, Grad, Chi, DChi, Dg, ChiTot;
    public long JD, JInv, Col, Tmp, Tmp2, Piv, Spw, Sig, AMat, SP, V;
    public long S1, S2;       // scratch of the first-order solve (Worker's s1, s2)
    public long Pi, PiIsI;    // degenerate noise: Π = σσ⁺ (d×d) and whether this step's Π is I (1) or not (0)
    public int IDChiR, IDChiC; // the entries (i, j) of each Dχ (offsets as IDChiSelOff), for tr(J⁻¹ Π Dχ)
    public long LyQ, LyZ;     // Lyapunov alignment: the top Lyapunov vector q_n and J q_n
    // A recorded run (PathRecord; fitting, samples(...), score(...)): the per-path values go into accumulator rows
    // from RecX on (row r of path p at r·P + p, NaN until written), the host copies them into the record.
    public int RecAtT;        // 1: x_T and ℓ_T per plan at T (and ν_T, the observables at T when asked)
    public int RecNu, RecObs; // 1: ν_T (group 0's covector) / the observables at T as well
    public int RecTimes;      // a stationary recording's recorded steps (ints[IRecSteps ..], ascending); 0: none
    public long RecWindow;    // its window K in steps (ℓ_n − ℓ_{n−K} from the plans' rings)
    public int RecTrajK;      // a trajectory's observables (ints[IRecTrajObs ..]); 0: none
    public long RecEvery;     // the trajectory's step in steps of dt
    public int IRecSteps, IRecTrajObs;
    public long RecNext;      // scratch row: the next recorded step's index (a stationary recording)
    public long RecX, RecEll, RecNuRow, RecObsRow, RecTraj, RecEnd; // accumulator rows of the record
}

/// <summary>
/// The pathwise and divergence-kernel (exact and first-order; likelihood ratio is α ≡ 1) estimators on one
/// path per thread: the forward recursion of <c>Worker&lt;TModel&gt;</c> (Begin, Pre, DkBegin/DkEnd, Post; core/Responses/ResponseWorker.cs) with
/// the same operations in the same order, every per-path array in struct-of-arrays scratch rows, the
/// sparsity patterns in one int table. Keep the two in step: a change of the CPU worker's arithmetic
/// must be mirrored here (the Gpu.* tests compare them on OU, a 2-D multiplicative model and Lorenz-96).
/// Degenerate noise (σσᵀ singular, σᵀσ not: fewer noise lanes than states, or a state without noise) takes the
/// worker's full-column-rank branch: σ⁺ = (σᵀσ)⁻¹σᵀ, Π = σσ⁺, and the ℓ and ν updates with (I − αΠ).
/// Not here: the iterative mode's sparse LU (exact LU instead: both are exact to rounding).
/// Lyapunov alignment (<c>Worker.AlignStep</c>, <c>AlignmentCos</c>): q ← J q / |J q| from the fixed frame
/// <c>frame</c> (<see cref="LyapunovEngine.InitialFrame"/>(d, 1), computed on the host) after the DK steps,
/// |cos(q_N, ν_N)| into the plan's bins.
/// flags[0]: failed paths, flags[1]: first failing step, flags[2]: error (1 singular J, 3 σσᵀ and σᵀσ both
/// singular, 4 a point init moving with γ under degenerate noise), flags[3 + 3q], flags[4 + 3q], flags[5 + 3q]: below / above / NaN samples of plan q.
/// </summary>
public static class TangentKernels
{
    /// <summary>Per-thread view of everything: scratch rows, the int table, the scalars.</summary>
    struct K
    {
        public ArrayView<double> S;
        public ArrayView<int> I;
        public ArrayView<double> Acc;
        public ArrayView<long> Flags;
        public long P, Path;
        public TanArgs A;

        public SoaVec Row(long r) => new SoaVec(S, r * P + Path, P);
        public int Int(int at) => I[at];
    }

    public static void Tangent<TModel>(Index1D index, TModel model, TanArgs a, ArrayView<int> ints,
        ArrayView<TanPlanDev> plans, ArrayView<DkGroupDev> groups, ArrayView<double> frame, ArrayView<double> scratch, ArrayView<double> accs, ArrayView<long> flags)
        where TModel : unmanaged, ISdeTangentModel
    {
        long i = (int)index;
        if (i >= a.Count) return;
        var k = new K { S = scratch, I = ints, Acc = accs, Flags = flags, P = a.Count, Path = i, A = a };
        int d = a.D, M = a.M;
        ulong gp = (ulong)(a.FirstPath + i);
        double dt = a.Dt, sq = a.SqDt;
        var zn = k.Row(a.ZN); var zu = k.Row(a.ZU); var w = k.Row(a.W); var w2 = k.Row(a.W2);
        var ell0 = k.Row(a.Ell0); var v0 = k.Row(a.V0);
        var jv = k.Row(a.JV); var ev = k.Row(a.EV); var hv = k.Row(a.HV); var sv = k.Row(a.SV);

        for (int q = 0; q < a.NPlans; q++)
        {
            var l = plans[q];
            int nb = l.Kind == 1 ? l.Bins : 1;
            int nr = l.Centred != 0 ? 2 * nb + 1 : nb;
            for (int b = 0; b < nr; b++) accs[(l.Slot + b) * k.P + i] = 0.0;
        }
        var spw = k.Row(a.Spw);
        for (int r = 0; r < d; r++) spw[r] = 0.0;
        // a recorded value not written (a path that failed) stays NaN, as the CPU's PathRecord.Reset leaves it
        for (long r = a.RecX; r < a.RecEnd; r++) accs[r * k.P + i] = double.NaN;
        if (a.RecTimes > 0) k.S[a.RecNext * k.P + i] = 0.0;

        KernelNormals.Fill(a.Seed, gp, 0, Philox.TagInitNormal, zn, d);
        KernelNormals.FillUniform(a.Seed, gp, 0, Philox.TagInitUniform, zu, d);
        var x0 = k.Row(a.X);
        model.Init(x0, zn, zu);
        if (a.NeedJ != 0 || a.NeedDk != 0) model.InitParamScore(x0, zn, zu, ell0, v0);
        for (int g = 0; g < a.NGroups; g++)
        {
            var gr = groups[g];
            var nu = k.Row(gr.Nu);
            if (a.InitHasScore != 0) model.InitScore(x0, nu);
            else for (int r = 0; r < d; r++) nu[r] = 0.0;
            var ell = k.Row(gr.Ell);
            for (int p = 0; p < a.NP; p++) ell[p] = ell0[p];
        }
        for (int pw = 0; pw < a.NPathwise; pw++)
        {
            int wh = k.Int(a.IPathwise + pw);
            var vk = k.Row(a.V + (long)wh * d);
            for (int r = 0; r < d; r++) vk[r] = v0[wh * d + r];
        }
        if (a.NeedAlign != 0) { var lyq = k.Row(a.LyQ); for (int r = 0; r < d; r++) lyq[r] = frame[r]; }

        Sample(model, k, plans, groups, 0, 0.0, x0);
        long parity = 0;
        for (long n = 0; n < a.Steps; n++)
        {
            double t = n * dt;
            var xa = k.Row(parity == 0 ? a.X : a.Y);
            var xb = k.Row(parity == 0 ? a.Y : a.X);
            if (M > 0) KernelNormals.FillStep(a.Seed, gp, n, 0, a.Steps, Philox.TagStep, w, w2, M);
            if (a.NeedJ != 0)
            {
                model.Jacobian(xa, w, t, dt, sq, jv);
                for (int e = 0; e < a.NJ; e++) ev[e] = jv[e];
                for (int r = 0; r < d; r++) { int di = k.Int(a.IDiag + r); if (di >= 0) ev[di] = ev[di] - 1.0; }
            }
            if (a.NeedDk != 0)
            {
                if (a.NeedHessian != 0) model.Hessian(xa, w, t, dt, sq, hv);
                if (M > 0)
                {
                    model.Sigma(xa, t, sv);
                    if (!PrepareNoise(k)) { Error(flags, 3); return; }
                }
            }
            for (int p = 0; p < a.NP; p++)
                if (k.Int(a.INeedChi + p) != 0)
                    model.ParamTangent(p, xa, w, t, dt, sq, k.Row(a.Chi + (long)p * d),
                        k.Row(a.DChi + k.Int(a.IDChiRowOff + p)), k.Row(a.Dg + k.Int(a.IDgRowOff + p)));
            for (int g = 0; g < a.NGroups; g++)
                if (!DkStep(k, groups[g], n)) { Error(flags, 1); return; }
            if (a.NeedAlign != 0 && !AlignStep(k))
            {
                Atomic.Add(ref flags[0], 1L);
                Atomic.Min(ref flags[1], n + 1);
                return;
            }
            for (int pw = 0; pw < a.NPathwise; pw++)
            {
                // v ← J v + χ
                int wh = k.Int(a.IPathwise + pw);
                var vk = k.Row(a.V + (long)wh * d);
                var tmp = k.Row(a.Tmp);
                var chi = k.Row(a.Chi + (long)wh * d);
                for (int r = 0; r < d; r++) tmp[r] = 0.0;
                for (int e = 0; e < a.NJ; e++) { int row = k.Int(a.IJRow + e); tmp[row] = tmp[row] + jv[e] * vk[k.Int(a.IJCol + e)]; }
                for (int r = 0; r < d; r++) vk[r] = tmp[r] + chi[r];
            }
            model.Step(xa, xb, w, t, dt, sq);
            if (!Kernels.AllFinite(xb, d))
            {
                Atomic.Add(ref flags[0], 1L);
                Atomic.Min(ref flags[1], n + 1);
                return;
            }
            parity = 1 - parity;
            Sample(model, k, plans, groups, n + 1, (n + 1) * dt, xb);
        }
        if (a.RecAtT != 0) RecordAtT(model, k, plans, groups, k.Row(parity == 0 ? a.X : a.Y));
    }

    /// <summary>Worker.End's record: x_T, ℓ_T per plan (its group's ℓ of its parameter), ν_T of group 0, the observables at T.</summary>
    static void RecordAtT<TModel>(TModel model, K k, ArrayView<TanPlanDev> plans, ArrayView<DkGroupDev> groups, SoaVec x)
        where TModel : unmanaged, ISdeTangentModel
    {
        var a = k.A;
        int d = a.D;
        for (int r = 0; r < d; r++) k.Acc[(a.RecX + r) * k.P + k.Path] = x[r];
        for (int q = 0; q < a.NPlans; q++)
        {
            var l = plans[q];
            k.Acc[(a.RecEll + q) * k.P + k.Path] = k.Row(groups[l.Group].Ell)[l.Which];
        }
        if (a.RecNu != 0 && a.NGroups > 0)
        {
            var nu = k.Row(groups[0].Nu);
            for (int r = 0; r < d; r++) k.Acc[(a.RecNuRow + r) * k.P + k.Path] = nu[r];
        }
        if (a.RecObs != 0 && a.NObs > 0)
        {
            var obs = k.Row(a.Obs);
            model.Observe(x, a.Steps * a.Dt, obs);
            for (int q = 0; q < a.NObs; q++) k.Acc[(a.RecObsRow + q) * k.P + k.Path] = obs[q];
        }
    }

    /// <summary>Worker.RecordStationary: at a recorded step, x_n and every plan's ℓ_n − ℓ_{n−K} (ℓ_{n−K} read as ℓ_0 when n &lt; K).</summary>
    static void RecordStationary(K k, ArrayView<TanPlanDev> plans, long n, SoaVec x)
    {
        var a = k.A;
        long at = a.RecNext * k.P + k.Path;
        int next = (int)k.S[at];
        if (next >= a.RecTimes || k.Int(a.IRecSteps + next) != n) return;
        int d = a.D;
        long len = a.RecWindow + 1, back = n - a.RecWindow;
        long slot = n % len, from = (back < 0 ? 0 : back) % len;
        for (int r = 0; r < d; r++) k.Acc[(a.RecX + (long)next * d + r) * k.P + k.Path] = x[r];
        for (int q = 0; q < a.NPlans; q++)
        {
            long ring = plans[q].Ring;
            k.Acc[(a.RecEll + (long)next * a.NPlans + q) * k.P + k.Path] = k.S[(ring + slot) * k.P + k.Path] - k.S[(ring + from) * k.P + k.Path];
        }
        k.S[at] = next + 1;
    }

    static void Error(ArrayView<long> flags, long code) => Atomic.Max(ref flags[2], code);

    // ---------------------------------------------------------------- Lyapunov alignment (Worker.AlignStep, AlignmentCos)

    /// <summary>q ← J q / |J q| (the k = 1 case of the Lyapunov QR step); false when it collapses.</summary>
    static bool AlignStep(K k)
    {
        var a = k.A;
        int d = a.D;
        var lyz = k.Row(a.LyZ); var lyq = k.Row(a.LyQ); var jv = k.Row(a.JV);
        for (int r = 0; r < d; r++) lyz[r] = 0.0;
        for (int e = 0; e < a.NJ; e++) { int row = k.Int(a.IJRow + e); lyz[row] = lyz[row] + jv[e] * lyq[k.Int(a.IJCol + e)]; }
        double nr = LyapunovKernels.Orthonormalise(lyz, d, 0);
        if (!(nr > 0) || !(nr < double.PositiveInfinity)) return false;
        for (int r = 0; r < d; r++) lyq[r] = lyz[r];
        return true;
    }

    /// <summary>The largest double below 1 (Math.BitDecrement(1.0)): |cos| = 1 falls in the last bin.</summary>
    const double BelowOne = 1.0 - 1.1102230246251565e-16;

    /// <summary>|cos| of the angle between the top Lyapunov vector and ν (0 when ν = 0).</summary>
    static double AlignmentCos(K k, SoaVec nu)
    {
        var lyq = k.Row(k.A.LyQ);
        double dot = 0, nn = 0;
        for (int r = 0; r < k.A.D; r++) { dot += lyq[r] * nu[r]; nn += nu[r] * nu[r]; }
        return nn > 0 ? Math.Min(BelowOne, Math.Abs(dot) / Math.Sqrt(nn)) : 0.0;
    }

    static void Sample<TModel>(TModel model, K k, ArrayView<TanPlanDev> plans, ArrayView<DkGroupDev> groups, long n, double t, SoaVec x)
        where TModel : unmanaged, ISdeTangentModel
    {
        var a = k.A;
        bool observed = false, grad = false;
        var obs = k.Row(a.Obs);
        var gv = k.Row(a.Grad);
        if (a.RecTrajK > 0 && n % a.RecEvery == 0)
        {
            // a trajectory (samples(...) every Δ): this path's observables at the grid time n
            model.Observe(x, t, obs);
            observed = true;
            long at = a.RecTraj + n / a.RecEvery * a.RecTrajK;
            for (int q = 0; q < a.RecTrajK; q++) k.Acc[(at + q) * k.P + k.Path] = obs[k.Int(a.IRecTrajObs + q)];
        }
        // ring buffers of the DK weights, every step (stationary windows, a stationary recording)
        for (int q = 0; q < a.NPlans; q++)
        {
            var l = plans[q];
            if (l.RingSteps > 0)
            {
                long len = l.RingSteps + 1;
                k.S[(l.Ring + n % len) * k.P + k.Path] = l.Method == 0 ? k.Row(groups[l.Group].Ell)[l.Which] : 0.0;
            }
        }
        if (a.RecTimes > 0) RecordStationary(k, plans, n, x);
        for (int q = 0; q < a.NPlans; q++)
        {
            var l = plans[q];
            if (n < l.From || n > l.To) continue;
            if (l.Method == 0)
            {
                if (!observed) { model.Observe(x, t, obs); observed = true; }
                var gr = groups[l.Group];
                if (l.Alignment != 0) { Add(k, l, q, AlignmentCos(k, k.Row(gr.Nu)), 1.0); continue; }
                double omega;
                if (l.ScoreComponent >= 0) omega = k.Row(gr.Nu)[l.ScoreComponent];
                else
                {
                    omega = k.Row(gr.Ell)[l.Which];
                    if (l.WindowSteps > 0)
                    {
                        long back = n - l.WindowSteps;
                        omega -= k.S[(l.Ring + (back < 0 ? 0 : back) % (l.WindowSteps + 1)) * k.P + k.Path];
                    }
                }
                Add(k, l, q, obs[l.Observable], omega);
                if (l.Explicit >= 0) { long atE = (long)l.Slot * k.P + k.Path; k.Acc[atE] = k.Acc[atE] + obs[l.Explicit]; }
            }
            else
            {
                if (!grad) { model.ObservableGradient(x, t, gv); grad = true; }
                double sgv = 0;
                var vk = k.Row(a.V + (long)l.Which * a.D);
                int e0 = k.Int(a.IObsGradEntOff + l.Observable), e1 = k.Int(a.IObsGradEntOff + l.Observable + 1);
                for (int j = e0; j < e1; j++)
                {
                    int e = k.Int(a.IObsGradEnt + j);
                    sgv += gv[e] * vk[k.Int(a.IObsGradState + e)];
                }
                if (l.Explicit >= 0)
                {
                    if (!observed) { model.Observe(x, t, obs); observed = true; }
                    sgv += obs[l.Explicit];
                }
                long at = (long)l.Slot * k.P + k.Path;
                k.Acc[at] = k.Acc[at] + sgv;
            }
        }
    }

    /// <summary>Worker.Add: A rows, and for a centred plan the C rows and the B row (same order of operations).</summary>
    static void Add(K k, TanPlanDev l, int q, double phi, double weight)
    {
        int nb = l.Kind == 1 ? l.Bins : 1;
        if (l.Centred != 0) { long atB = (long)(l.Slot + 2 * nb) * k.P + k.Path; k.Acc[atB] = k.Acc[atB] + weight; }
        if (l.Kind == 0)
        {
            long at = (long)l.Slot * k.P + k.Path; k.Acc[at] = k.Acc[at] + phi * weight;
            if (l.Centred != 0) { long atC = (long)(l.Slot + 1) * k.P + k.Path; k.Acc[atC] = k.Acc[atC] + phi; }
            return;
        }
        if (Kernels.IsNaN(phi)) { Atomic.Add(ref k.Flags[5 + 3 * q], 1L); return; } // in no bin: counted for the warning
        if (!(phi >= l.Lo)) { if (weight >= 0) Atomic.Add(ref k.Flags[3 + 3 * q], 1L); return; }
        if (!(phi < l.Hi)) { if (weight >= 0) Atomic.Add(ref k.Flags[4 + 3 * q], 1L); return; }
        int bin = (int)((phi - l.Lo) / (l.Hi - l.Lo) * l.Bins);
        if (bin >= l.Bins) bin = l.Bins - 1;
        long at2 = (long)(l.Slot + bin) * k.P + k.Path;
        k.Acc[at2] = k.Acc[at2] + weight;
        if (l.Centred != 0) { long atC = (long)(l.Slot + nb + bin) * k.P + k.Path; k.Acc[atC] = k.Acc[atC] + 1.0; }
    }

    // ---------------------------------------------------------------- noise (Worker.PrepareNoise)

    static bool PrepareNoise(K k)
    {
        var a = k.A;
        int d = a.D, m = a.M;
        double sq = a.SqDt;
        var spw = k.Row(a.Spw); var sv = k.Row(a.SV); var w = k.Row(a.W);
        if (a.Diagonal != 0)
        {
            for (int i = 0; i < d; i++) spw[i] = w[k.Int(a.INoiseLane + i)] / (sv[k.Int(a.INoiseIndex + i)] * sq);
            return true;
        }
        var sig = k.Row(a.Sig); var amat = k.Row(a.AMat); var sp = k.Row(a.SP); var col = k.Row(a.Col);
        for (int e = 0; e < d * m; e++) sig[e] = 0.0;
        for (int e = 0; e < a.NG; e++)
        {
            int at = k.Int(a.IGRow + e) * m + k.Int(a.IGLane + e);
            sig[at] = sig[at] + sv[e] * sq;
        }
        // σ⁺ and Π: the worker's own code (Dense.NoisePseudoInverse)
        int rank = Dense.NoisePseudoInverse(sig, amat, sp, k.Row(a.Pi), col, k.Row(a.Tmp2), d, m);
        if (rank < 0) return false;
        var piIsI = k.Row(a.PiIsI);
        piIsI[0] = rank;
        for (int i = 0; i < d; i++)
        {
            double s = 0;
            for (int l = 0; l < m; l++) s += sp[l * d + i] * w[l];
            spw[i] = s;
        }
        return true;
    }

    /// <summary>tr(σ⁺ ∂_γσ) for response parameter p (Worker.TraceSigmaPlusDSigma).</summary>
    static double TraceSigmaPlusDSigma(K k, int p)
    {
        var a = k.A;
        int e0 = k.Int(a.IDgOff + p), e1 = k.Int(a.IDgOff + p + 1);
        var dg = k.Row(a.Dg + k.Int(a.IDgRowOff + p));
        double s = 0;
        if (a.Diagonal != 0)
        {
            var sv = k.Row(a.SV);
            for (int e = 0; e < e1 - e0; e++)
            {
                int row = k.Int(a.IDgRow + e0 + e);
                if (k.Int(a.INoiseLane + row) == k.Int(a.IDgLane + e0 + e)) s += dg[e] / sv[k.Int(a.INoiseIndex + row)];
            }
            return s;
        }
        var sp = k.Row(a.SP);
        for (int e = 0; e < e1 - e0; e++) s += sp[k.Int(a.IDgLane + e0 + e) * a.D + k.Int(a.IDgRow + e0 + e)] * dg[e] * a.SqDt;
        return s;
    }

    // ---------------------------------------------------------------- the DK recursion (Worker.DkBegin + DkEnd, Π = I)

    static bool DkStep(K k, DkGroupDev grp, long n)
    {
        var a = k.A;
        int d = a.D;
        double dt = a.Dt;
        double alpha;
        if (grp.ConstantAlpha != 0) alpha = (n == 0 && a.InitHasScore == 0) ? 1.0 : grp.Alpha;
        else
        {
            double al = Math.Min(1.0, grp.Rate * dt);
            alpha = a.InitHasScore != 0 ? al : Math.Max(1.0 / (n + 1), al);
        }
        if (a.M == 0) alpha = 0;
        var sl = k.Row(grp.Sel);
        var jinv = k.Row(a.JInv);
        var ev = k.Row(a.EV);
        if (grp.Mode == 0)
        {
            if (!DenseInverse(k)) return false;
            for (int q = 0; q < a.NSel; q++) sl[q] = jinv[k.Int(a.ISelJ + q) * d + k.Int(a.ISelI + q)];
        }
        else
        {
            // J⁻¹ ≈ I − E (+ E² under multiplicative noise) at the selected entries
            for (int q = 0; q < a.NSel; q++)
            {
                double s = k.Int(a.ISelJ + q) == k.Int(a.ISelI + q) ? 1.0 : 0.0;
                int se = k.Int(a.ISelE + q);
                if (se >= 0) s -= ev[se];
                if (a.Multiplicative != 0)
                {
                    int r0 = k.Int(a.ISelE2Off + q), r1 = k.Int(a.ISelE2Off + q + 1);
                    for (int r = r0; r < r1; r++) s += ev[k.Int(a.ISelE2A + r)] * ev[k.Int(a.ISelE2B + r)];
                }
                sl[q] = s;
            }
        }

        // c = ν − ∇ log|det J|
        var gl = k.Row(grp.Gld);
        for (int r = 0; r < d; r++) gl[r] = 0.0;
        var hv = k.Row(a.HV);
        for (int h = 0; h < a.NH; h++) { int hk = k.Int(a.IHK + h); gl[hk] = gl[hk] + sl[k.Int(a.IHSel + h)] * hv[h]; }
        var c = k.Row(a.Tmp);
        var nuG = k.Row(grp.Nu);
        for (int i = 0; i < d; i++) c[i] = nuG[i] - gl[i];
        // u = J⁻ᵀ c
        var u = k.Row(grp.NuNew);
        if (grp.Mode == 0)
        {
            for (int j = 0; j < d; j++) { double s = 0; for (int i = 0; i < d; i++) s += jinv[i * d + j] * c[i]; u[j] = s; }
        }
        else
        {
            var e1 = k.Row(a.Tmp2);
            for (int r = 0; r < d; r++) e1[r] = 0.0;
            for (int e = 0; e < a.NJ; e++) { int col = k.Int(a.IJCol + e); e1[col] = e1[col] + ev[e] * c[k.Int(a.IJRow + e)]; }
            for (int i = 0; i < d; i++) u[i] = c[i] - e1[i];
            if (a.Multiplicative != 0)
                for (int e = 0; e < a.NJ; e++) { int col = k.Int(a.IJCol + e); u[col] = u[col] + ev[e] * e1[k.Int(a.IJRow + e)]; }
        }

        // ℓ increments (use u before ν is overwritten)
        var spw = k.Row(a.Spw);
        var ell = k.Row(grp.Ell);
        var jv = k.Row(a.JV);
        var v0 = k.Row(a.V0);
        for (int wi = 0; wi < grp.WhCount; wi++)
        {
            int p = k.Int(grp.WhOff + wi);
            var ch = k.Row(a.Chi + (long)p * d);
            if (n == 0 && a.InitHasScore == 0)
            {
                // a point (or uniform) init that moves with γ: the first step's perturbation is χ + J ∂_γx₀
                bool any = false;
                for (int i = 0; i < d; i++) if (k.Int(a.IDetInit + i) != 0 && v0[p * d + i] != 0) { any = true; break; }
                if (any)
                {
                    if (a.Diagonal == 0 && k.Row(a.PiIsI)[0] == 0.0) { Error(k.Flags, 4); return false; }
                    var ct = k.Row(a.ChiTot);
                    for (int i = 0; i < d; i++) ct[i] = ch[i];
                    for (int e = 0; e < a.NJ; e++)
                    {
                        int jc = k.Int(a.IJCol + e);
                        if (k.Int(a.IDetInit + jc) != 0) { int jr = k.Int(a.IJRow + e); ct[jr] = ct[jr] + jv[e] * v0[p * d + jc]; }
                    }
                    ch = ct;
                }
            }
            double trJD = 0;
            int s0 = k.Int(a.IDChiSelOff + p), s1 = k.Int(a.IDChiSelOff + p + 1);
            var dchi = k.Row(a.DChi + k.Int(a.IDChiRowOff + p));
            for (int e = 0; e < s1 - s0; e++) trJD += sl[k.Int(a.IDChiSel + s0 + e)] * dchi[e];
            double term1, term2, term3 = 0;
            bool piIsI = a.Diagonal != 0 || k.Row(a.PiIsI)[0] != 0.0;
            if (piIsI)
            {
                double uc = 0;
                for (int i = 0; i < d; i++) uc += u[i] * ch[i];
                term1 = (1 - alpha) * uc;
                term2 = (1 - alpha) * trJD;
                if (alpha != 0)
                {
                    double wsc = 0;
                    for (int i = 0; i < d; i++) wsc += spw[i] * ch[i];
                    term3 = alpha * (wsc - TraceSigmaPlusDSigma(k, p));
                }
            }
            else
            {
                term1 = Dense.DotProjected(u, k.Row(a.Pi), ch, alpha, d);
                term2 = trJD - alpha * TraceJinvPiDchi(k, grp.Mode, p);
                double wsc = 0;
                if (alpha != 0) for (int i = 0; i < d; i++) wsc += spw[i] * ch[i];
                if (alpha != 0) term3 = alpha * (wsc - TraceSigmaPlusDSigma(k, p));
            }
            ell[p] = ell[p] + (-term1 - term2 + term3);
        }

        // ν ← (I − αΠ)ᵀ u − α σ⁺ᵀ w
        if (a.Diagonal != 0 || k.Row(a.PiIsI)[0] != 0.0)
            for (int i = 0; i < d; i++) nuG[i] = (1 - alpha) * u[i] - alpha * spw[i];
        else Dense.CovectorProjected(u, k.Row(a.Pi), spw, alpha, nuG, d);
        return true;
    }

    /// <summary>tr(J⁻¹ Π Dχ) for parameter p (Worker.TraceJinvPiDchi): Σ_e (J⁻¹ Π)_{j i} Dχ_e over Dχ's entries (i, j),
    /// the columns of J⁻¹Π by the group's solve (dense J⁻¹; first order: (I − E (+ E²)) b).</summary>
    static double TraceJinvPiDchi(K k, int mode, int p)
    {
        var a = k.A;
        int d = a.D;
        int e0 = k.Int(a.IDChiSelOff + p), e1 = k.Int(a.IDChiSelOff + p + 1);
        var dchi = k.Row(a.DChi + k.Int(a.IDChiRowOff + p));
        var pi = k.Row(a.Pi); var col = k.Row(a.Col); var z = k.Row(a.Tmp2);
        var jinv = k.Row(a.JInv); var ev = k.Row(a.EV);
        double s = 0;
        for (int e = 0; e < e1 - e0; e++)
        {
            int i = k.Int(a.IDChiR + e0 + e), j = k.Int(a.IDChiC + e0 + e);
            for (int r = 0; r < d; r++) col[r] = pi[r * d + i];
            if (mode == 0)
                for (int r = 0; r < d; r++) { double t = 0; for (int c = 0; c < d; c++) t += jinv[r * d + c] * col[c]; z[r] = t; }
            else
            {
                // (Worker.Solve, first order: z = b − E b (+ E(E b)), with its scratch s1, s2)
                var e1v = k.Row(a.S1); var e2v = k.Row(a.S2);
                for (int r = 0; r < d; r++) e1v[r] = 0.0;
                for (int q = 0; q < a.NJ; q++) { int jr = k.Int(a.IJRow + q); e1v[jr] = e1v[jr] + ev[q] * col[k.Int(a.IJCol + q)]; }
                for (int r = 0; r < d; r++) z[r] = col[r] - e1v[r];
                if (a.Multiplicative != 0)
                {
                    for (int r = 0; r < d; r++) e2v[r] = 0.0;
                    for (int q = 0; q < a.NJ; q++) { int jr = k.Int(a.IJRow + q); e2v[jr] = e2v[jr] + ev[q] * e1v[k.Int(a.IJCol + q)]; }
                    for (int r = 0; r < d; r++) z[r] = z[r] + e2v[r];
                }
            }
            s += z[j] * dchi[e];
        }
        return s;
    }

    // ---------------------------------------------------------------- dense linear algebra (core Dense, on SoA rows)

    static bool DenseInverse(K k)
    {
        var a = k.A;
        int d = a.D;
        var jd = k.Row(a.JD); var jv = k.Row(a.JV);
        for (int e = 0; e < d * d; e++) jd[e] = 0.0;
        for (int e = 0; e < a.NJ; e++) { int at = k.Int(a.IJRow + e) * d + k.Int(a.IJCol + e); jd[at] = jd[at] + jv[e]; }
        var piv = k.Row(a.Piv);
        if (!Dense.Lu(jd, piv, d)) return false;
        Dense.Inverse(jd, piv, d, k.Row(a.JInv), k.Row(a.Col));
        return true;
    }
}

/// <summary>Host side of the tangent kernel: layout of the int table and of the scratch rows, chunks, exact sums.</summary>
public static class GpuTangent
{
    static class Cache<TModel> where TModel : unmanaged, ISdeTangentModel
    {
        public static Action<Index1D, TModel, TanArgs, ArrayView<int>, ArrayView<TanPlanDev>, ArrayView<DkGroupDev>,
            ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<long>>? Kernel;
        public static Accelerator? For;
    }

    /// <summary>Runs the pathwise and divergence-kernel plans, Lyapunov alignment included (no finite differences).</summary>
    public static Estimate[] Run<TModel>(GpuBackend backend, TModel model, TangentStructure st, RunSettings s, ResponsePlan[] plans)
        where TModel : unmanaged, ISdeTangentModel
        => RunCore(backend, model, st, s, plans, null);

    static long _recordedRuns;
    /// <summary>Recorded runs started on the tangent kernel (the tests check that a GPU backend's record ran here).</summary>
    public static long RecordedRuns => Interlocked.Read(ref _recordedRuns);

    /// <summary>
    /// <see cref="ResponseEngine.RunRecorded{TModel}"/> on the tangent kernel: the same checks, and each path's values
    /// (x_T, ℓ_T per plan, ν_T, the observables at T; or a stationary recording's x_n and window increments; or a
    /// trajectory's observables every k steps) written by the kernel into accumulator rows and copied into
    /// <paramref name="record"/>, the CPU's numbers bit for bit where the kernel's arithmetic is the CPU worker's.
    /// </summary>
    public static void RunRecorded<TModel>(GpuBackend backend, TModel model, TangentStructure st, RunSettings s, ResponsePlan[] plans, PathRecord record)
        where TModel : unmanaged, ISdeTangentModel
    {
        ResponseEngine.CheckRecorded(s, plans, record);
        Interlocked.Increment(ref _recordedRuns);
        if (record.Steps is { } rs && rs[^1] > int.MaxValue)
            throw new RunTooLargeException($"a stationary recording at step {rs[^1]} is beyond the GPU kernel's int table (2^31 steps); use a larger dt or the CPU backend");
        record.Reset(s.FirstPath, s.Paths, model.Dim, plans.Length, model.ObservableCount, s.Steps);
        RunCore(backend, model, st, s, plans, record);
    }

    static Estimate[] RunCore<TModel>(GpuBackend backend, TModel model, TangentStructure st, RunSettings s, ResponsePlan[] plans, PathRecord? record)
        where TModel : unmanaged, ISdeTangentModel
    {
        foreach (var p in plans)
            if (p.Method == ResponseMethod.FiniteDifference)
                throw new ArgumentException("the tangent kernel runs pathwise and divergence-kernel plans (alignment included) only");
        var U = new ResponseEngine.Setup(model, st, s, plans);
        int d = U.D, m = U.M, np = U.NParams, nobs = U.NObs;

        // ---- the int table
        var ints = new List<int>();
        int Put(IEnumerable<int> xs) { int off = ints.Count; ints.AddRange(xs); return off; }
        int Flat(int[][] xs, out int offs)
        {
            var o = new int[xs.Length + 1];
            for (int i = 0; i < xs.Length; i++) o[i + 1] = o[i] + xs[i].Length;
            offs = Put(o);
            return Put(xs.SelectMany(x => x));
        }
        static int[] Max1Offsets(int[][] xs)
        {
            var o = new int[xs.Length];
            for (int i = 1; i < xs.Length; i++) o[i] = o[i - 1] + Math.Max(1, xs[i - 1].Length);
            return o;
        }
        int Max1Total(int[][] xs) => xs.Sum(x => Math.Max(1, x.Length));
        var a = new TanArgs
        {
            Seed = s.Seed, Steps = U.Steps, Dt = U.Dt, SqDt = U.SqDt, D = d, M = m, NObs = nobs, NP = np,
            NPlans = plans.Length, NGroups = U.Groups.Length, NPathwise = U.PathwiseWhich.Length,
            NeedJ = U.NeedJ ? 1 : 0, NeedDk = U.NeedDk ? 1 : 0, NeedHessian = U.NeedHessian ? 1 : 0,
            Multiplicative = U.Multiplicative ? 1 : 0, Diagonal = U.DiagonalNoise ? 1 : 0, InitHasScore = st.InitHasScore ? 1 : 0,
            NeedAlign = U.NeedAlign ? 1 : 0,
            NJ = st.JRow.Length, NH = st.HRow.Length, NG = st.GRow.Length, NSel = U.SelJ.Length,
        };
        a.IJRow = Put(st.JRow); a.IJCol = Put(st.JCol); a.IHK = Put(st.HK); a.IHSel = Put(U.HSel);
        a.IGRow = Put(st.GRow); a.IGLane = Put(st.GLane);
        a.IDiag = Put(U.DiagIndex); a.INoiseLane = Put(U.NoiseLaneOfRow); a.INoiseIndex = Put(U.NoiseIndexOfRow);
        a.ISelJ = Put(U.SelJ); a.ISelI = Put(U.SelI); a.ISelE = Put(U.SelE);
        a.ISelE2A = Flat(U.SelE2A, out a.ISelE2Off); a.ISelE2B = Put(U.SelE2B.SelectMany(x => x));
        a.IDChiSel = Flat(U.DChiSel, out a.IDChiSelOff); a.IDChiRowOff = Put(Max1Offsets(st.DChiRow));
        a.IDChiR = Put(st.DChiRow.SelectMany(x => x)); a.IDChiC = Put(st.DChiCol.SelectMany(x => x));
        a.IDgRow = Flat(st.DgRow, out a.IDgOff); a.IDgLane = Put(st.DgLane.SelectMany(x => x)); a.IDgRowOff = Put(Max1Offsets(st.DgRow));
        a.IObsGradState = Put(st.ObsGradState); a.IObsGradEnt = Flat(U.ObsGradEntries, out a.IObsGradEntOff);
        a.IDetInit = Put(U.DetInitMask.Select(b => b ? 1 : 0)); a.INeedChi = Put(U.NeedChi.Select(b => b ? 1 : 0));
        a.IPathwise = Put(U.PathwiseWhich);
        if (record?.Steps is { } recSteps) { a.RecTimes = recSteps.Length; a.RecWindow = record.WindowSteps; a.IRecSteps = Put(recSteps.Select(n => (int)n)); }
        if (record?.TrajectoryObservables is { } trObs) { a.RecTrajK = trObs.Length; a.RecEvery = record.EverySteps; a.IRecTrajObs = Put(trObs); }
        var gd = new DkGroupDev[U.Groups.Length];
        for (int g = 0; g < gd.Length; g++)
        {
            var grp = U.Groups[g];
            gd[g] = new DkGroupDev
            {
                ConstantAlpha = grp.ConstantAlpha ? 1 : 0, Alpha = grp.Alpha, Rate = grp.Rate,
                // iterative: exact LU on the GPU (both exact to rounding; the sparse LU has no kernel)
                Mode = grp.Mode == DkMode.FirstOrder ? 1 : 0, WhOff = Put(grp.Whiches), WhCount = grp.Whiches.Length,
            };
        }
        if (ints.Count == 0) ints.Add(0);

        // ---- scratch rows
        long R = 0;
        long Take(long n) { long r = R; R += Math.Max(1, n); return r; }
        bool dense = U.AnyExact || U.AnyIterative;
        bool general = !U.DiagonalNoise && U.NeedDk;
        a.X = Take(d); a.Y = Take(d); a.W = Take(m); a.W2 = Take(m); a.ZN = Take(d); a.ZU = Take(d); a.Obs = Take(nobs);
        a.Ell0 = Take(np); a.V0 = Take((long)np * d); a.JV = Take(st.JRow.Length); a.EV = Take(st.JRow.Length);
        a.HV = Take(st.HRow.Length); a.SV = Take(st.GRow.Length); a.Grad = Take(st.ObsGradObs.Length);
        a.Chi = Take((long)np * d); a.DChi = Take(Max1Total(st.DChiRow)); a.Dg = Take(Max1Total(st.DgRow)); a.ChiTot = Take(d);
        a.JD = Take(dense ? (long)d * d : 1); a.JInv = Take(dense ? (long)d * d : 1);
        a.Col = Take(d); a.Tmp = Take(d); a.Tmp2 = Take(d); a.Piv = Take(d); a.Spw = Take(d);
        a.Sig = Take(general ? (long)d * m : 1); a.AMat = Take(general ? (long)d * d : 1); a.SP = Take(general ? (long)m * d : 1);
        a.V = Take((long)np * d);
        a.Pi = Take(general ? (long)d * d : 1); a.PiIsI = Take(1); a.S1 = Take(general ? d : 1); a.S2 = Take(general ? d : 1);
        a.LyQ = Take(U.NeedAlign ? d : 1); a.LyZ = Take(U.NeedAlign ? d : 1);
        a.RecNext = Take(1);
        for (int g = 0; g < gd.Length; g++)
        {
            gd[g].Nu = Take(d); gd[g].NuNew = Take(d); gd[g].Gld = Take(d); gd[g].Sel = Take(U.SelJ.Length); gd[g].Ell = Take(np);
        }
        var pd = new TanPlanDev[plans.Length];
        int rows = 0;
        for (int i = 0; i < plans.Length; i++)
        {
            var p = plans[i];
            int nb = p.Kind == EstimateKind.Density ? p.Bins : 1;
            // the ring of ℓ over the last K + 1 steps: a stationary window's, or the stationary recording's (Worker's ring)
            long ringSteps = U.WindowSteps[i] > 0 ? U.WindowSteps[i] : record?.Steps != null ? record.WindowSteps : 0;
            pd[i] = new TanPlanDev
            {
                Kind = p.Kind == EstimateKind.Density ? 1 : 0, Method = p.Method == ResponseMethod.Pathwise ? 1 : 0,
                Observable = p.Observable, Bins = p.Bins, Group = U.PlanGroup[i], Which = p.Which, ScoreComponent = p.ScoreComponent,
                From = U.From[i], To = U.To[i], Lo = p.Lo, Hi = p.Hi, WindowSteps = U.WindowSteps[i], RingSteps = ringSteps,
                Ring = ringSteps > 0 ? Take(ringSteps + 1) : 0, Slot = rows, Alignment = p.Alignment ? 1 : 0,
                Centred = p.Centred ? 1 : 0, Explicit = p.Explicit,
            };
            rows += ResponseEngine.Sums.RowsOf(p);
        }
        // the record's rows after the accumulators (RecordLayout: the host reads them back in the same order)
        int recTimes = record?.Steps?.Length ?? 1;
        a.RecAtT = record != null && record.Steps == null ? 1 : 0;
        a.RecNu = record?.Nu != null ? 1 : 0;
        a.RecObs = record?.Obs != null && record.NObs > 0 ? 1 : 0;
        long recRows = 0;
        if (record != null)
        {
            // a trajectory-only record (no state, no weights) is what samples(...) every Δ asks for; x and ℓ rows
            // are written then too (cheap), as the CPU fills its X and Ell
            long RecTake(long n) { long r = rows + recRows; recRows += n; return r; }
            a.RecX = RecTake((long)recTimes * d);
            a.RecEll = RecTake((long)recTimes * plans.Length);
            a.RecNuRow = RecTake(a.RecNu != 0 ? d : 0);
            a.RecObsRow = RecTake(a.RecObs != 0 ? nobs : 0);
            a.RecTraj = RecTake(a.RecTrajK > 0 ? (long)record.TrajectoryTimes * a.RecTrajK : 0);
            a.RecEnd = rows + recRows;
        }

        var dev = GpuDevice.Get(backend);
        var acc = dev.Accelerator;
        long perPath = 8L * (R + rows + recRows);
        long chunk = dev.Chunk(perPath, s, " for the pathwise / divergence-kernel responses", $"dimension {d}, {R} scratch values, {rows} accumulator(s)",
            "use shorter stationary windows, mode = first_order or the CPU backend");

        Action<Index1D, TModel, TanArgs, ArrayView<int>, ArrayView<TanPlanDev>, ArrayView<DkGroupDev>, ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<long>> kernel;
        lock (typeof(Cache<TModel>))
        {
            if (Cache<TModel>.Kernel == null || Cache<TModel>.For != acc)
            {
                Cache<TModel>.Kernel = acc.LoadAutoGroupedStreamKernel<Index1D, TModel, TanArgs, ArrayView<int>, ArrayView<TanPlanDev>, ArrayView<DkGroupDev>,
                    ArrayView<double>, ArrayView<double>, ArrayView<double>, ArrayView<long>>(TangentKernels.Tangent<TModel>);
                Cache<TModel>.For = acc;
            }
            kernel = Cache<TModel>.Kernel;
        }

        long nFlags = 3 + 3L * plans.Length; // failed paths, first failing step, error; per plan below, above, NaN
        using var ibuf = acc.Allocate1D(ints.ToArray());
        using var pbuf = acc.Allocate1D(pd.Length > 0 ? pd : new TanPlanDev[1]);
        using var gbuf = acc.Allocate1D(gd.Length > 0 ? gd : new DkGroupDev[1]);
        using var fbuf = acc.Allocate1D(U.NeedAlign ? LyapunovEngine.InitialFrame(d, 1) : new double[1]);
        using var scratch = acc.Allocate1D<double>(R * chunk);
        using var accs = acc.Allocate1D<double>(Math.Max(rows + recRows, 1) * chunk);
        // device memory comes uninitialised (a freed buffer's values on CUDA): start from zeros, so
        // that a row the kernel failed to write shows as 0 on every backend, never as stale numbers
        scratch.MemSetToZero();
        accs.MemSetToZero();
        using var flags = acc.Allocate1D<long>(nFlags);
        var host = new double[Math.Max(rows, 1) * chunk];
        var recHost = new double[recRows * chunk];
        var hostFlags = new long[nFlags];
        var sums = new ResponseEngine.Sums(plans);

        // 1 / the number of samples plan i averages per path (its steps in [From, To])
        double SampleScale(int i) => 1.0 / Math.Max(1, Math.Max(0, Math.Min(pd[i].To, U.Steps) - Math.Max(pd[i].From, 0) + 1));

        var launches = new LaunchSizer(dev, chunk, s.Steps);
        for (long p0 = 0, pc = 0; p0 < s.Paths; p0 += pc)
        {
            s.Cancel.ThrowIfCancellationRequested();
            pc = launches.Next(s.Paths - p0);
            a.FirstPath = s.FirstPath + p0; a.Count = pc;
            hostFlags[0] = 0; hostFlags[1] = long.MaxValue;
            for (int k = 2; k < nFlags; k++) hostFlags[k] = 0;
            flags.View.CopyFromCPU(hostFlags);
            kernel((int)pc, model, a, ibuf.View, pbuf.View, gbuf.View, fbuf.View, scratch.View, accs.View, flags.View);
            acc.Synchronize();
            launches.Done(pc);
            flags.View.CopyToCPU(hostFlags);
            if (hostFlags[2] == 1)
                throw new InvalidOperationException("the Jacobian of the Euler step is singular on this path (step too large for the drift?)");
            if (hostFlags[2] == 3)
                throw new InvalidOperationException("the diffusion matrix is rank-deficient both ways (σσᵀ and σᵀσ singular): the kernel part of the divergence-kernel method is not defined; use alpha = 0");
            if (hostFlags[2] == 4)
                throw new InvalidOperationException("a deterministic init that depends on the parameter needs full-rank noise (use a normal init)");
            if (hostFlags[0] > 0)
                throw new SimulationFailedException(hostFlags[1], hostFlags[1] * s.Dt, hostFlags[0], p0 + pc, s.Paths); // every path of the chunk ran
            ((ArrayView<double>)accs.View).SubView(0, rows * pc).CopyToCPU(host.AsSpan(0, (int)(rows * pc)));
            if (record != null)
            {
                ((ArrayView<double>)accs.View).SubView(rows * pc, recRows * pc).CopyToCPU(recHost.AsSpan(0, (int)(recRows * pc)));
                CopyRecord(record, a, rows, recHost, p0, pc, d, plans.Length);
            }
            for (int i = 0; i < plans.Length; i++)
            {
                var p = plans[i];
                double scaleB = SampleScale(i);
                double scale = p.Kind == EstimateKind.Density ? scaleB / ((p.Hi - p.Lo) / p.Bins) : scaleB;
                int ci = p.Control;
                sums.AddRows(i, p.Centred, host, pd[i].Slot, pc, scale, scaleB, ci >= 0 ? pd[ci].Slot : -1, ci >= 0 ? SampleScale(ci) : 0.0);
                sums.Below[i] += hostFlags[3 + 3 * i];
                sums.Above[i] += hostFlags[4 + 3 * i];
                if (p.Kind == EstimateKind.Density) sums.NonFinite[i] += hostFlags[5 + 3 * i];
            }
            s.Progress?.Invoke((double)(p0 + pc) / s.Paths);
        }
        return sums.ToEstimates(plans, s.Paths);
    }

    /// <summary>
    /// The record rows of a chunk of <paramref name="pc"/> paths (row r of path p at r·pc + p, rows counted from
    /// <paramref name="rows"/>) into the record's row-major arrays (paths from <paramref name="p0"/> of the run).
    /// </summary>
    static void CopyRecord(PathRecord r, TanArgs a, int rows, double[] h, long p0, long pc, int d, int np)
    {
        int times = r.Times;
        double At(long row, long p) => h[(row - rows) * pc + p];
        for (long p = 0; p < pc; p++)
        {
            long path = p0 + p;
            for (int t = 0; t < times; t++)
            {
                long row = path * times + t;
                for (int i = 0; i < d; i++) r.X[row * d + i] = At(a.RecX + (long)t * d + i, p);
                for (int q = 0; q < np; q++) r.Ell[row * np + q] = At(a.RecEll + (long)t * np + q, p);
            }
            if (a.RecNu != 0) for (int i = 0; i < d; i++) r.Nu![path * d + i] = At(a.RecNuRow + i, p);
            if (a.RecObs != 0) for (int q = 0; q < r.NObs; q++) r.Obs![path * r.NObs + q] = At(a.RecObsRow + q, p);
            if (a.RecTrajK > 0)
            {
                long n = (long)r.TrajectoryTimes * a.RecTrajK;
                for (long j = 0; j < n; j++) r.Trajectory![path * n + j] = At(a.RecTraj + j, p);
            }
        }
    }
}
