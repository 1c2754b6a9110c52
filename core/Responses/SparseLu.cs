using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
/// under the recurrences); it numbers the entries of the filled pattern ("slots") and flattens the
/// three numeric phases into index programs that <see cref="SparseLuBatch"/> runs.
/// </summary>
internal sealed class SparseLuPlan
{
    public readonly int D;
    /// <summary>Per k: rows r &gt; k of column k (L), and columns c &gt; k of row k (U), in the filled pattern.</summary>
    public readonly int[][] Lower, Upper;
    /// <summary>Number of entries of the filled pattern; slot of entry (i, j) is <see cref="Slot"/>.</summary>
    public readonly int Slots;
    readonly int[][] _cols;   // per row i, the columns of the filled pattern, ascending
    readonly int[] _rowStart; // slot of row i's first entry

    // factor: per k the pivot's slot, L's slots (r, k), U's slots (k, j) and the updated slots (r, j), r-major
    public readonly int[] PivotSlot, LoStart, LoSlot, LoRow, UpStart, UpSlot, UpCol, RjStart, RjSlot;
    /// <summary>Selected inverse as one instruction stream, targets in the order of the recurrences:
    /// [target slot, kind, i, terms, (Z slot, A slot) × terms]; Z[target] = init − Σ Z·A, with init
    /// 0 (kind 0: column i) or 1 (kind 2: the diagonal), times 1/U_ii for kinds 1 (row i) and 2.</summary>
    public readonly int[] InvProgram;

    public SparseLuPlan(int d, int[] rows, int[] cols)
    {
        D = d;
        Key = d + ":" + SparseLuEmit.Key(rows) + ":" + SparseLuEmit.Key(cols);
        // The pattern is symmetrised and eliminated on adjacency sets, not a d×d table: a Lorenz-96 of
        // 10^5 states has 10^10 pairs but a few per row (the dense table overflowed an int at d ≈ 46,000).
        var adj = new HashSet<int>[d];
        for (int i = 0; i < d; i++) adj[i] = new HashSet<int>();
        for (int e = 0; e < rows.Length; e++)
            if (rows[e] != cols[e]) { adj[rows[e]].Add(cols[e]); adj[cols[e]].Add(rows[e]); }
        // symbolic elimination: eliminating k connects every pair of its later neighbours. The pattern
        // stays symmetric, and column k is final once k is eliminated (later steps only touch pairs
        // above k), so its later neighbours then are both L's column k and U's row k.
        Lower = new int[d][]; Upper = new int[d][];
        for (int k = 0; k < d; k++)
        {
            var nb = adj[k].Where(r => r > k).ToArray();
            Array.Sort(nb);
            foreach (int r in nb) foreach (int c in nb) if (c != r) adj[r].Add(c);
            Lower[k] = nb; Upper[k] = (int[])nb.Clone();
        }
        // slots in row-major order of the filled pattern (the diagonal included)
        _cols = new int[d][]; _rowStart = new int[d];
        int n = 0;
        for (int i = 0; i < d; i++)
        {
            var cs = adj[i].Append(i).ToArray();
            Array.Sort(cs);
            _cols[i] = cs; _rowStart[i] = n;
            n = checked(n + cs.Length);
        }
        Slots = n;

        PivotSlot = new int[d]; LoStart = new int[d + 1]; UpStart = new int[d + 1]; RjStart = new int[d + 1];
        List<int> loSlot = new(), loRow = new(), upSlot = new(), upCol = new(), rj = new();
        for (int k = 0; k < d; k++)
        {
            PivotSlot[k] = Slot(k, k);
            LoStart[k] = loSlot.Count; UpStart[k] = upSlot.Count; RjStart[k] = rj.Count;
            foreach (int r in Lower[k]) { loSlot.Add(Slot(r, k)); loRow.Add(r); }
            foreach (int c in Upper[k]) { upSlot.Add(Slot(k, c)); upCol.Add(c); }
            foreach (int r in Lower[k]) foreach (int c in Upper[k]) rj.Add(Slot(r, c));
        }
        LoStart[d] = loSlot.Count; UpStart[d] = upSlot.Count; RjStart[d] = rj.Count;
        LoSlot = loSlot.ToArray(); LoRow = loRow.ToArray(); UpSlot = upSlot.ToArray(); UpCol = upCol.ToArray(); RjSlot = rj.ToArray();

        // Takahashi, i from the last row up: column i below the diagonal Z_ri = −Σ_{k∈L(i)} Z_rk L_ki;
        // row i right of it Z_ij = −Σ_{k∈U(i)} U_ik Z_kj / U_ii; the diagonal (1 − Σ_{k∈U(i)} U_ik Z_ki) / U_ii
        var prog = new List<int>();
        for (int i = d - 1; i >= 0; i--)
        {
            int[] lo = Lower[i], up = Upper[i];
            foreach (int r in lo)
            {
                prog.AddRange([Slot(r, i), 0, i, lo.Length]);
                foreach (int k in lo) prog.AddRange([Slot(r, k), Slot(k, i)]);
            }
            foreach (int j in up)
            {
                prog.AddRange([Slot(i, j), 1, i, up.Length]);
                foreach (int k in up) prog.AddRange([Slot(k, j), Slot(i, k)]);
            }
            prog.AddRange([Slot(i, i), 2, i, up.Length]);
            foreach (int k in up) prog.AddRange([Slot(k, i), Slot(i, k)]);
        }
        InvProgram = prog.ToArray();
    }


    /// <summary>The phases as straight-line code for a J pattern's slots, emitted once per plan (every
    /// thread's batch has the same) on first use; null: too large, interpret.</summary>
    public LuKernels? Emitted(int[] jSlot, bool[] jFirst, int[] zeroSlots, int lanes)
    {
        lock (this)
        {
            if (!_emitted.TryGetValue(lanes, out var k))
            {
                k = SparseLuEmit.Cached(Key + "|" + lanes + "|" + SparseLuEmit.Key(jSlot) + "|" + SparseLuEmit.Key(jFirst.Select(b => b ? 1 : 0)),
                    () => SparseLuEmit.Build(this, jSlot, jFirst, zeroSlots, lanes));
                _emitted[lanes] = k;
            }
            return k;
        }
    }
    readonly Dictionary<int, LuKernels?> _emitted = new();

    /// <summary>The pattern, as text (the emitted code's cache key).</summary>
    public readonly string Key;

    public bool Contains(int i, int j) => Array.BinarySearch(_cols[i], j) >= 0;

    public int Slot(int i, int j)
    {
        int q = Array.BinarySearch(_cols[i], j);
        if (q < 0) throw new ArgumentException($"({i}, {j}) is not in the filled pattern");
        return _rowStart[i] + q;
    }
}

/// <summary>
/// The numeric phases of a <see cref="SparseLuPlan"/> for <see cref="Lanes"/> paths at once: every
/// path of a run has the same pattern, so one pass over the index programs serves four (or eight)
/// matrices, each slot holding the paths' values side by side (one 256-bit vector, or one 512-bit
/// vector where the hardware has AVX-512: the emitted phases run eight lanes per operation, the
/// interpreted ones two groups of four). Per path the
/// arithmetic is the scalar recurrence's, operation for operation (multiply and subtract, never
/// fused; divisions by a pivot are products with its reciprocal, computed once), so a path's numbers
/// do not depend on its lane or on its neighbours.
/// </summary>
internal sealed unsafe class SparseLuBatch
{
    /// <summary>Paths per batch, 4 or 8 (<see cref="LanesFor"/>, or the engine's count given at construction).</summary>
    public readonly int Lanes;
    /// <summary>
    /// The lane count a batch built now gets: eight where the phases run as emitted 512-bit code, else four (the
    /// interpreted phases and first_order, which has no emitted code, gain nothing from eight lanes but the
    /// larger working set of eight paths in lockstep).
    /// </summary>
    public static int LanesFor(bool emit) => emit && Vector512.IsHardwareAccelerated && !Normals.ForceNarrow ? 8 : 4;
    readonly SparseLuPlan P;
    readonly double* _a, _z, _x, _r;      // factors, selected inverse (slots × lanes), solve vector, 1/pivots (d × lanes)
    readonly double* _jb, _hb;            // the lanes' J and Hessian values (entries × lanes)
    readonly double* _eb, _zp, _e1;       // first_order: E = J − I (entries × lanes), J⁻¹ ≈ I − E (+E²) at the pairs, Eᵀc
    readonly int[] _jSlot;                // per entry of J: its slot
    readonly bool[] _jFirst;              // the first entry of J landing in its slot (assigns; later ones add)
    readonly int[] _zeroSlots;            // slots no entry of J lands in (fill)
    readonly int[] _selSlot;              // per selected pair (j, i): slot of J⁻¹_ji
    readonly double[] _storage;
    readonly LuKernels? _emitted;
    LuKernel[]? _rhs;      // the emitted right-hand side for the Hessian program in _rhsKey
    int[]? _rhsKey;

    /// <summary><paramref name="emit"/>: run the phases as emitted straight-line code (<see cref="SparseLuEmit"/>)
    /// where the pattern is small enough, else interpret the index programs.</summary>
    /// <param name="lanes">4 or 8; 0: <see cref="LanesFor"/>.</param>
    public SparseLuBatch(SparseLuPlan plan, int[] jRow, int[] jCol, int hEntries, int[] selJ, int[] selI, bool emit = true, int lanes = 0)
    {
        P = plan;
        Lanes = lanes == 0 ? LanesFor(emit) : lanes == 4 || lanes == 8 ? lanes : throw new ArgumentOutOfRangeException(nameof(lanes));
        int s = plan.Slots, d = plan.D;
        int nh = Math.Max(1, hEntries);
        int np = Math.Max(1, selJ.Length);
        _storage = GC.AllocateArray<double>((2 * s + 3 * d + 2 * jRow.Length + nh + np) * Lanes + 8, pinned: true);
        // 64-byte alignment of the vectors
        double* b = (double*)Unsafe.AsPointer(ref _storage[0]);
        long mis = ((long)b & 63) / 8;
        b += mis == 0 ? 0 : 8 - mis;
        _a = b; _z = b + s * Lanes; _x = _z + s * Lanes; _r = _x + d * Lanes; _jb = _r + d * Lanes; _hb = _jb + jRow.Length * Lanes;
        _eb = _hb + nh * Lanes; _zp = _eb + jRow.Length * Lanes; _e1 = _zp + np * Lanes;
        _jSlot = new int[jRow.Length]; _jFirst = new bool[jRow.Length];
        var hit = new bool[s];
        for (int e = 0; e < jRow.Length; e++)
        {
            int sl = plan.Slot(jRow[e], jCol[e]);
            _jSlot[e] = sl; _jFirst[e] = !hit[sl]; hit[sl] = true;
        }
        _zeroSlots = Enumerable.Range(0, s).Where(q => !hit[q]).ToArray();
        _selSlot = new int[selJ.Length];
        for (int q = 0; q < selJ.Length; q++) _selSlot[q] = plan.Slot(selJ[q], selI[q]);
        _emitted = emit ? plan.Emitted(_jSlot, _jFirst, _zeroSlots, Lanes) : null;
    }

    /// <summary>Where lane <paramref name="lane"/>'s J values go (stride <see cref="Lanes"/>), for a model to write directly.</summary>
    public StrideVec LaneJ(int lane) => new(_jb + lane, Lanes);

    /// <summary>Where lane <paramref name="lane"/>'s Hessian values go (stride <see cref="Lanes"/>).</summary>
    public StrideVec LaneH(int lane) => new(_hb + lane, Lanes);

    /// <summary>Copies a lane's J values in (when the model wrote them elsewhere).</summary>
    public void StageJ(int lane, double[] jv)
    {
        double* t = _jb + lane;
        for (int e = 0; e < _jSlot.Length; e++) t[e * Lanes] = jv[e];
    }

    /// <summary>Copies a lane's Hessian values in.</summary>
    public void StageH(int lane, double[] hv)
    {
        double* t = _hb + lane;
        for (int h = 0; h < hv.Length; h++) t[h * Lanes] = hv[h];
    }

    /// <summary>Copies a lane's J and Hessian values out (for the per-path fallbacks).</summary>
    public void Unstage(int lane, double[] jv, double[] hv)
    {
        double* j = _jb + lane, h = _hb + lane;
        for (int e = 0; e < _jSlot.Length; e++) jv[e] = j[e * Lanes];
        for (int q = 0; q < hv.Length; q++) hv[q] = h[q * Lanes];
    }

    /// <summary>Puts the lanes' J (values at the pattern's entries, duplicates added) into the factors' slots.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Load()
    {
        if (_emitted is { } em) { foreach (var f in em.Load) f(_a, _z, _x, _r, _jb); return; }
        for (int g = 0; g < Lanes; g += 4)
        {
            double* a = _a + g, jb = _jb + g;
            foreach (int q in _zeroSlots) St(a, q, Vector256<double>.Zero);
            int[] slot = _jSlot;
            bool[] first = _jFirst;
            for (int e = 0; e < slot.Length; e++)
                St(a, slot[e], first[e] ? Vector256<double>.Zero + Ld(jb, e) : Ld(a, slot[e]) + Ld(jb, e));
        }
    }

    // The interpreted phases run each group of four lanes (g = 0, 4) at b + g with the batch's stride.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    Vector256<double> Ld(double* b, int slot) => Vector256.LoadAligned(b + slot * Lanes);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void St(double* b, int slot, Vector256<double> v) => Vector256.StoreAligned(v, b + slot * Lanes);

    /// <summary>Factors the lanes' matrices in place; bit l of the result is set when lane l had no tiny pivot.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public int Factor()
    {
        if (_emitted is { } em)
        {
            foreach (var f in em.Factor) f(_a, _z, _x, _r, _jb);
            // the pivots stay in place once used, so they are checked afterwards
            int okBits = 0;
            for (int g = 0; g < Lanes; g += 4)
            {
                var okAll = Vector256<double>.AllBitsSet;
                var tiny1 = Vector256.Create(1e-8);
                var inf1 = Vector256.Create(double.PositiveInfinity);
                foreach (int s in P.PivotSlot)
                {
                    var ab = Vector256.Abs(Ld(_a + g, s));
                    okAll &= Vector256.GreaterThan(ab, tiny1) & Vector256.LessThan(ab, inf1);
                }
                okBits |= (int)okAll.ExtractMostSignificantBits() << g;
            }
            return okBits;
        }
        int bits = 0;
        for (int g = 0; g < Lanes; g += 4) bits |= FactorGroup(_a + g, _r + g) << g;
        return bits;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    int FactorGroup(double* a, double* r)
    {
        var p = P;
        int[] pivot = p.PivotSlot, loStart = p.LoStart, loSlot = p.LoSlot, upStart = p.UpStart, upSlot = p.UpSlot, rjSlot = p.RjSlot;
        var ok = Vector256<double>.AllBitsSet;
        var tiny = Vector256.Create(1e-8);
        var inf = Vector256.Create(double.PositiveInfinity);
        int rj = 0;
        for (int k = 0; k < p.D; k++)
        {
            var piv = Ld(a, pivot[k]);
            var ab = Vector256.Abs(piv);
            ok &= Vector256.GreaterThan(ab, tiny) & Vector256.LessThan(ab, inf);
            var inv = Vector256<double>.One / piv;
            St(r, k, inv);
            int u0 = upStart[k], u1 = upStart[k + 1];
            for (int li = loStart[k]; li < loStart[k + 1]; li++)
            {
                var l = Ld(a, loSlot[li]) * inv;
                St(a, loSlot[li], l);
                for (int c = u0; c < u1; c++, rj++)
                {
                    int t = rjSlot[rj];
                    St(a, t, Ld(a, t) - l * Ld(a, upSlot[c]));
                }
            }
        }
        return (int)ok.ExtractMostSignificantBits();
    }

    /// <summary>J⁻¹ on the filled pattern from the factors (Takahashi), all lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void SelectedInverse()
    {
        if (_emitted is { } em) { foreach (var f in em.Inverse) f(_a, _z, _x, _r, _jb); return; }
        for (int g = 0; g < Lanes; g += 4)
        {
            double* a = _a + g, z = _z + g, rp = _r + g;
            int[] prog = P.InvProgram;
            int pc = 0;
            while (pc < prog.Length)
            {
                int target = prog[pc], kind = prog[pc + 1], i = prog[pc + 2], terms = prog[pc + 3];
                pc += 4;
                var s = kind == 2 ? Vector256<double>.One : Vector256<double>.Zero;
                for (int q = 0; q < terms; q++, pc += 2) s -= Ld(z, prog[pc]) * Ld(a, prog[pc + 1]);
                St(z, target, kind == 0 ? s : s * Ld(rp, i));
            }
        }
    }

    /// <summary>Lane <paramref name="lane"/>'s entries of J⁻¹ at the selected pairs <paramref name="pairs"/>
    /// (indices into the pairs given at construction).</summary>
    public void Selected(int lane, int[] pairs, double[] sel)
    {
        double* z = _z + lane;
        foreach (int q in pairs) sel[q] = z[_selSlot[q] * Lanes];
    }

    /// <summary>
    /// The right-hand side c = ν − ∇log|det J| of the transposed solve, all lanes, straight from the
    /// selected inverse: ∇log|det J|_k = Σ_q J⁻¹[pair q]·H_q over the Hessian entries q of k
    /// (<paramref name="hStart"/>, <paramref name="hPair"/>, <paramref name="hEntry"/>: grouped by k,
    /// summed in that order from 0, as the per-path code does). ν per lane; the Hessian values staged.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Rhs(double[][] nu, int[] hStart, int[] hPair, int[] hEntry)
    {
        if (_emitted != null)
        {
            if (_rhs == null || !ReferenceEquals(_rhsKey, hPair)) BuildRhs(hStart, hPair, hEntry);
            double* xs = _x;
            for (int l = 0; l < Lanes; l++)
            {
                double[] v = nu[l];
                for (int i = 0; i < P.D; i++) xs[i * Lanes + l] = v[i];
            }
            foreach (var f in _rhs!) f(_a, _z, _x, _r, _jb);
            return;
        }
        for (int g = 0; g < Lanes; g += 4) RhsFrom(g, _z, _selSlot, nu, hStart, hPair, hEntry);
    }

    /// <summary>c = ν − Σ z[at(pair)]·H per k (the interpreted right-hand side; <paramref name="slotOf"/>
    /// maps a pair to its row of <paramref name="z"/>, null: the pair's own index).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void RhsFrom(int g, double* z, int[]? slotOf, double[][] nu, int[] hStart, int[] hPair, int[] hEntry)
    {
        double* x = _x + g, hb = _hb + g;
        z += g;
        double[] nu0 = nu[g], nu1 = nu[g + 1], nu2 = nu[g + 2], nu3 = nu[g + 3];
        for (int k = 0; k < P.D; k++)
        {
            var s = Vector256<double>.Zero;
            for (int q = hStart[k]; q < hStart[k + 1]; q++)
                s += Ld(z, slotOf == null ? hPair[q] : slotOf[hPair[q]]) * Ld(hb, hEntry[q]);
            St(x, k, Vector256.Create(nu0[k], nu1[k], nu2[k], nu3[k]) - s);
        }
    }

    /// <summary>
    /// After <see cref="SolveTransposed"/>, per lane u·a and b·a (a, b: the lanes' vectors), each
    /// summed in index order from 0 as the per-path loop does, four lanes per vector operation (the
    /// chains of additions are the cost, not the products). Lane l's sums go to ua[l] and ba[l].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Dots(double[][] av, double[][] bv, double[] ua, double[] ba)
    {
        for (int g = 0; g < Lanes; g += 4)
        {
            double* x = _x + g;
            double[] a0 = av[g], a1 = av[g + 1], a2 = av[g + 2], a3 = av[g + 3];
            double[] b0 = bv[g], b1 = bv[g + 1], b2 = bv[g + 2], b3 = bv[g + 3];
            var s = Vector256<double>.Zero;
            var t = Vector256<double>.Zero;
            for (int i = 0; i < P.D; i++)
            {
                var a = Vector256.Create(a0[i], a1[i], a2[i], a3[i]);
                s += Ld(x, i) * a;
                t += Vector256.Create(b0[i], b1[i], b2[i], b3[i]) * a;
            }
            s.CopyTo(ua, g);
            t.CopyTo(ba, g);
        }
    }

    // ---------------------------------------------------------------- first_order, all lanes
    // The per-path code of Worker (SelectedFirstOrder, the c loop of DkBegin, SolveT's first-order
    // branch) operation for operation, four lanes per vector operation.

    /// <summary>E = J − I, and J⁻¹ ≈ I − E (+ E² under multiplicative noise) at the selected pairs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void FirstOrderSelected(ResponseEngine.Setup U)
    {
        for (int g = 0; g < Lanes; g += 4) FirstOrderSelected(U, _jb + g, _eb + g, _zp + g);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void FirstOrderSelected(ResponseEngine.Setup U, double* jb, double* eb, double* zp)
    {
        int nnz = _jSlot.Length;
        for (int e = 0; e < nnz; e++) St(eb, e, Ld(jb, e));
        foreach (int e in U.DiagIndex) if (e >= 0) St(eb, e, Ld(eb, e) - Vector256<double>.One);
        int[] sj = U.SelJ, si = U.SelI, se = U.SelE;
        for (int q = 0; q < sj.Length; q++)
        {
            var s = sj[q] == si[q] ? Vector256<double>.One : Vector256<double>.Zero;
            if (se[q] >= 0) s -= Ld(eb, se[q]);
            if (U.Multiplicative)
            {
                var a = U.SelE2A[q]; var b = U.SelE2B[q];
                for (int r = 0; r < a.Length; r++) s += Ld(eb, a[r]) * Ld(eb, b[r]);
            }
            St(zp, q, s);
        }
    }

    /// <summary>c = ν − ∇log|det J| from the first-order pairs (as <see cref="Rhs"/> from the selected inverse).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void RhsFirstOrder(double[][] nu, int[] hStart, int[] hPair, int[] hEntry)
    {
        for (int g = 0; g < Lanes; g += 4) RhsFrom(g, _zp, null, nu, hStart, hPair, hEntry);
    }

    /// <summary>x ← (I − Eᵀ (+ EᵀEᵀ)) x: the first-order J⁻ᵀc, Eᵀc gathered per column.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void SolveTransposedFirstOrder(ResponseEngine.Setup U)
    {
        for (int g = 0; g < Lanes; g += 4) SolveTransposedFirstOrder(U, _eb + g, _x + g, _e1 + g);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void SolveTransposedFirstOrder(ResponseEngine.Setup U, double* eb, double* x, double* e1)
    {
        int[] byCol = U.JByCol, colStart = U.JColStart, rowOf = U.JByColRow;
        int d = P.D;
        for (int j = 0; j < d; j++)
        {
            var s = Vector256<double>.Zero;
            for (int q = colStart[j]; q < colStart[j + 1]; q++) s += Ld(eb, byCol[q]) * Ld(x, rowOf[q]);
            St(e1, j, s);
        }
        for (int j = 0; j < d; j++) St(x, j, Ld(x, j) - Ld(e1, j));
        if (!U.Multiplicative) return;
        for (int j = 0; j < d; j++)
        {
            var s = Ld(x, j);
            for (int q = colStart[j]; q < colStart[j + 1]; q++) s += Ld(eb, byCol[q]) * Ld(e1, rowOf[q]);
            St(x, j, s);
        }
    }

    /// <summary>Lane <paramref name="lane"/>'s first-order J⁻¹ at the pairs <paramref name="pairs"/>.</summary>
    public void SelectedFirstOrder(int lane, int[] pairs, double[] sel)
    {
        double* z = _zp + lane;
        foreach (int q in pairs) sel[q] = z[q * Lanes];
    }

    // (a method of its own: lambdas capturing Rhs's parameters would allocate their closure on every call)
    void BuildRhs(int[] hStart, int[] hPair, int[] hEntry)
    {
        var slots = hPair.Select(q => _selSlot[q]).ToArray();
        string key = P.Key + "|rhs|" + Lanes + "|" + _jSlot.Length + "|" + SparseLuEmit.Key(hStart) + "|" + SparseLuEmit.Key(slots) + "|" + SparseLuEmit.Key(hEntry);
        _rhs = SparseLuEmit.Cached<LuKernel[]>(key, () => SparseLuEmit.BuildRhs(P.D, hStart, slots, hEntry, _jSlot.Length, Lanes))!;
        _rhsKey = hPair;
    }

    /// <summary>Lane <paramref name="lane"/>'s solution of <see cref="SolveTransposed"/>.</summary>
    public void StoreSolution(int lane, double[] u)
    {
        double* x = _x + lane;
        for (int i = 0; i < P.D; i++) u[i] = x[i * Lanes];
    }

    /// <summary>x ← J⁻ᵀ x from the factors, all lanes: Uᵀ y = x, then Lᵀ u = y.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void SolveTransposed()
    {
        if (_emitted is { } em) { foreach (var f in em.SolveT) f(_a, _z, _x, _r, _jb); return; }
        for (int g = 0; g < Lanes; g += 4) SolveTransposed(_a + g, _x + g, _r + g);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void SolveTransposed(double* a, double* x, double* r)
    {
        var p = P;
        int d = p.D;
        int[] pivot = p.PivotSlot, loStart = p.LoStart, loSlot = p.LoSlot, loRow = p.LoRow, upStart = p.UpStart, upSlot = p.UpSlot, upCol = p.UpCol;
        for (int k = 0; k < d; k++)
        {
            var y = Ld(x, k) * Ld(r, k);
            St(x, k, y);
            for (int c = upStart[k]; c < upStart[k + 1]; c++)
            {
                int j = upCol[c];
                St(x, j, Ld(x, j) - Ld(a, upSlot[c]) * y);
            }
        }
        for (int k = d - 1; k >= 0; k--)
        {
            var s = Ld(x, k);
            for (int c = loStart[k]; c < loStart[k + 1]; c++) s -= Ld(a, loSlot[c]) * Ld(x, loRow[c]);
            St(x, k, s);
        }
    }
}
