using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>
/// The paths one thread of the response engine advances side by side, step by step: one
/// <see cref="Worker{TModel}"/> per path (its own state and sums), and, when a DK group runs in
/// iterative mode, one <see cref="SparseLuBatch"/> that factors the paths' Jacobians and solves with
/// them in a single pass over the pattern (the work that dominates that mode). Without the sparse
/// LU there is nothing to share and a lane set has one lane.
/// </summary>
internal sealed class ResponseLanes<TModel> where TModel : struct, ISdeTangentModel
{
    readonly ResponseEngine.Setup U;
    public readonly Worker<TModel>[] Lanes;
    readonly SparseLuBatch? _lu;
    readonly bool _direct, _hasLu;
    readonly long[] _failedAt;
    readonly bool[] _solve;
    readonly int[] _dchiPairs; // the pairs of J⁻¹ that DkEnd reads (tr(J⁻¹Dχ)); ∇log|det J| is formed here
    readonly double[][] _nu, _chi, _spw; // per lane, the vectors handed to the batch (filled per call, never allocated)
    readonly double[] _uc, _wsc;
    readonly StepProgress _progress;
    readonly SmallLanes<TModel>? _small; // a small model's lanes over paths (SmallResponseLanes)

    /// <param name="lanes">The paths side by side: <see cref="LaneCount"/>, or 1 where that many workers' records do not fit.</param>
    /// <param name="small">The small models' lanes run the paths (<see cref="SmallResponseLanes.Takes{TModel}"/>, with four lanes).</param>
    public ResponseLanes(TModel model, TModel[] variants, ResponseEngine.Setup setup, StepProgress progress, int lanes, bool small)
    {
        U = setup;
        _progress = progress;
        int n = lanes;
        _small = small ? SmallLanes<TModel>.Create(model, variants, setup, progress) : null;
        Lanes = new Worker<TModel>[n];
        for (int i = 0; i < n; i++) Lanes[i] = new Worker<TModel>(model, variants, setup);
        if (setup.Lu != null || setup.AnyFirstOrder)
        {
            // (first_order alone needs no factors: a plan without emitted code holds the layout)
            var plan = setup.Lu ?? new SparseLuPlan(setup.D, setup.St.JRow.Concat(setup.SelI).ToArray(), setup.St.JCol.Concat(setup.SelJ).ToArray());
            _lu = new SparseLuBatch(plan, setup.St.JRow, setup.St.JCol, setup.St.HRow.Length, setup.SelJ, setup.SelI, emit: setup.Lu != null, lanes: n);
            _hasLu = setup.Lu != null;
            if (setup.AnyFirstOrder) foreach (var w in Lanes) w.BatchFirstOrder = true;
            // only the batched DK modes read J and the Hessian terms (E per path only under
            // non-diagonal noise): the model may write them into the batch
            _direct = (!setup.NeedE || setup.DiagonalNoise) && setup.PathwiseWhich.Length == 0 && !setup.NeedAlign && !setup.AnyExact;
            if (_direct) for (int i = 0; i < n; i++) Lanes[i].WriteInto(_lu, i);
        }
        _dchiPairs = setup.DChiSel.SelectMany(a => a).Distinct().ToArray();
        _failedAt = new long[n];
        _nu = new double[n][]; _chi = new double[n][]; _spw = new double[n][];
        _uc = new double[n]; _wsc = new double[n];
        _solve = new bool[n];
    }

    public static int LaneCount(ResponseEngine.Setup setup) =>
        setup.Lu != null || setup.AnyFirstOrder ? SparseLuBatch.LanesFor(setup.Lu != null) : SmallResponseLanes.Shape(setup) ? 4 : 1;

    /// <summary>Simulates paths first … first + count − 1, reporting each failed path's step.</summary>
    public void RunBlock(ulong first, long count, Action<long> fail)
    {
        if (_small != null) { _small.RunBlock(Lanes, first, count, fail); return; }
        int L = Lanes.Length;
        for (long p0 = 0; p0 < count; p0 += L)
        {
            int k = (int)Math.Min(L, count - p0);
            for (int i = 0; i < k; i++) { Lanes[i].Begin(first + (ulong)(p0 + i)); _failedAt[i] = -1; }
            int live = k;
            for (long n = 0; n < U.Steps && live > 0; n++)
            {
                for (int i = 0; i < k; i++) if (_failedAt[i] < 0) Lanes[i].Pre(n);
                if (_lu != null && !_direct) for (int i = 0; i < k; i++) if (_failedAt[i] < 0) _lu.StageJ(i, Lanes[i].Jv);
                if (_hasLu) Factor(k);
                for (int g = 0; g < U.Groups.Length; g++)
                {
                    bool any = false;
                    for (int i = 0; i < k; i++) any |= _solve[i] = _failedAt[i] < 0 && Lanes[i].DkBegin(g, n);
                    if (any)
                    {
                        int f = First(k);
                        Worker<TModel> W(int i) => Lanes[i < k && _solve[i] ? i : f];
                        if (!_direct) for (int i = 0; i < k; i++) if (_solve[i]) _lu!.StageH(i, Lanes[i].Hv);
                        if (U.Groups[g].Mode == DkMode.FirstOrder)
                        {
                            _lu!.FirstOrderSelected(U);
                            for (int i = 0; i < L; i++) _nu[i] = W(i).Nu(g);
                            _lu.RhsFirstOrder(_nu, U.HStart, U.HSelByK, U.HByK);
                            _lu.SolveTransposedFirstOrder(U);
                            if (_dchiPairs.Length > 0) for (int i = 0; i < k; i++) if (_solve[i]) _lu.SelectedFirstOrder(i, _dchiPairs, Lanes[i].SelOf(g));
                        }
                        else
                        {
                            for (int i = 0; i < L; i++) _nu[i] = W(i).Nu(g);
                            _lu!.Rhs(_nu, U.HStart, U.HSelByK, U.HByK);
                            _lu.SolveTransposed();
                        }
                        for (int i = 0; i < k; i++) if (_solve[i]) _lu.StoreSolution(i, Lanes[i].Solution(g));
                        // diagonal noise (Π = I): the ℓ increments' sums u·χ and σ⁺ᵀw·χ, four lanes at once
                        // (not at a point init's first step, where χ gains J ∂_γx₀)
                        if (U.DiagonalNoise && (n > 0 || U.St.InitHasScore))
                            foreach (int wh in U.Groups[g].Whiches)
                            {
                                for (int i = 0; i < L; i++) { _chi[i] = W(i).Chi(wh); _spw[i] = W(i).Spw; }
                                _lu.Dots(_chi, _spw, _uc, _wsc);
                                for (int i = 0; i < k; i++) if (_solve[i]) Lanes[i].SetDots(wh, _uc[i], _wsc[i]);
                            }
                    }
                    for (int i = 0; i < k; i++) if (_failedAt[i] < 0) Lanes[i].DkEnd(g, n);
                }
                for (int i = 0; i < k; i++)
                    if (_failedAt[i] < 0 && (_failedAt[i] = Lanes[i].Post(n)) >= 0) { live--; fail(_failedAt[i]); }
                if (((n + 1) & StepProgress.Mask) == 0) _progress.Add(StepProgress.Chunk * k);
            }
            _progress.Add((U.Steps & StepProgress.Mask) * k);
            for (int i = 0; i < k; i++) if (_failedAt[i] < 0) Lanes[i].End();
        }
    }

    /// <summary>A live lane solving this group (any lane's right-hand side will do for the idle ones).</summary>
    int First(int k)
    {
        for (int i = 0; i < k; i++) if (_solve[i]) return i;
        return 0;
    }

    /// <summary>The sparse LU and selected inverse of every live lane's J.</summary>
    void Factor(int k)
    {
        // (idle lanes keep whatever they hold: lanes never mix, and their results are not read)
        _lu!.Load();
        int ok = _lu.Factor();
        _lu.SelectedInverse();
        for (int i = 0; i < k; i++)
        {
            var w = Lanes[i];
            w.LuOk = (ok >> i & 1) != 0;
            if (w.LuOk && _failedAt[i] < 0) _lu.Selected(i, _dchiPairs, w.LuSel);
        }
    }
}
