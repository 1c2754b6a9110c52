using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>The emitted phases of a <see cref="SparseLuBatch"/>, each in chunks.</summary>
internal sealed record LuKernels(LuKernel[] Load, LuKernel[] Factor, LuKernel[] Inverse, LuKernel[] SolveT);

/// <summary>One numeric phase of a <see cref="SparseLuBatch"/> (arguments: factors, selected inverse, solve vector, 1/pivots, J values).</summary>
internal unsafe delegate void LuKernel(double* a, double* z, double* x, double* r, double* j);

/// <summary>
/// The index programs of a <see cref="SparseLuPlan"/> as straight-line code: every slot offset a
/// constant, no index loads, no loops (the pattern is fixed for the whole run, so the JIT may as
/// well see it). The arithmetic is <see cref="SparseLuBatch"/>'s interpreted phases', operation for
/// operation. Emitted in chunks of a few thousand IL instructions (the JIT optimises small methods
/// fully); not emitted at all for patterns too large to be worth it.
/// </summary>
internal static class SparseLuEmit
{
    /// <summary>
    /// The kernels of the last few patterns, by pattern: a run's JIT warm-up (a couple of paths,
    /// outside the timing) compiles them, and the timed run and the next parameter sets reuse them.
    /// </summary>
    static readonly List<(string Key, object? Value)> _cache = new();
    const int CacheSize = 8;

    public static T? Cached<T>(string key, Func<T?> build) where T : class
    {
        lock (_cache)
        {
            int i = _cache.FindIndex(c => c.Key == key);
            if (i >= 0) { var hit = _cache[i]; _cache.RemoveAt(i); _cache.Add(hit); return (T?)hit.Value; }
            var v = build();
            _cache.Add((key, v));
            if (_cache.Count > CacheSize) _cache.RemoveAt(0);
            return v;
        }
    }

    public static string Key(IEnumerable<int> xs) => string.Join(",", xs);

    /// <summary>Above this many multiply–subtract terms the interpreted phases run instead.</summary>
    public const int MaxTerms = 100_000;
    const int ChunkInstructions = 3000;

    /// <summary>The vector operations the phases call, for one vector width (<c>Vector256</c>: four lanes, <c>Vector512</c>: eight).</summary>
    sealed record Ops(Type Vec, MethodInfo Load, MethodInfo Store, MethodInfo Mul, MethodInfo Sub, MethodInfo Div, MethodInfo Add, MethodInfo One, MethodInfo Zero)
    {
        public static Ops Of(Type statics, Type vec)
        {
            MethodInfo Generic(string name) =>
                statics.GetMethods().Single(m => m.Name == name && m.IsGenericMethodDefinition && m.GetParameters().Length == (name == "LoadAligned" ? 1 : 2))
                    .MakeGenericMethod(typeof(double));
            MethodInfo Op(string name) => vec.GetMethod(name, [vec, vec])!;
            return new Ops(vec, Generic("LoadAligned"), Generic("StoreAligned"), Op("op_Multiply"), Op("op_Subtraction"), Op("op_Division"), Op("op_Addition"),
                vec.GetProperty("One")!.GetMethod!, vec.GetProperty("Zero")!.GetMethod!);
        }
    }

    static readonly Ops Ops4 = Ops.Of(typeof(Vector256), typeof(Vector256<double>));
    static readonly Ops Ops8 = Ops.Of(typeof(Vector512), typeof(Vector512<double>));

    const int A = 0, Z = 1, X = 2, R = 3, J = 4; // argument numbers

    /// <summary>Builds chunks of straight-line code; a chunk ends only between the units given to <see cref="Unit"/>.</summary>
    sealed class Chunks(int lanes)
    {
        readonly Ops O = lanes == 8 ? Ops8 : Ops4;
        readonly List<LuKernel> _done = new();
        DynamicMethod? _m;
        ILGenerator _il = null!;
        LocalBuilder _t0 = null!, _t1 = null!;
        int _count;

        public void Unit(Action<Chunks> body)
        {
            if (_m == null || _count > ChunkInstructions) Flush();
            body(this);
        }

        void Flush()
        {
            if (_m != null) { _il.Emit(OpCodes.Ret); _done.Add((LuKernel)_m.CreateDelegate(typeof(LuKernel))); }
            _m = new DynamicMethod("sparse_lu", typeof(void), [typeof(double*), typeof(double*), typeof(double*), typeof(double*), typeof(double*)], typeof(SparseLuEmit).Module, skipVisibility: true);
            _il = _m.GetILGenerator();
            _t0 = _il.DeclareLocal(O.Vec);
            _t1 = _il.DeclareLocal(O.Vec);
            _count = 0;
        }

        public LuKernel[] Finish()
        {
            if (_m != null) { _il.Emit(OpCodes.Ret); _done.Add((LuKernel)_m.CreateDelegate(typeof(LuKernel))); _m = null; }
            return _done.ToArray();
        }

        void Address(int arg, int index)
        {
            if (arg < 4) _il.Emit(arg switch { 0 => OpCodes.Ldarg_0, 1 => OpCodes.Ldarg_1, 2 => OpCodes.Ldarg_2, _ => OpCodes.Ldarg_3 });
            else _il.Emit(OpCodes.Ldarg_S, (byte)arg);
            if (index != 0) { _il.Emit(OpCodes.Ldc_I4, index * lanes * sizeof(double)); _il.Emit(OpCodes.Add); }
            _count += 3;
        }

        /// <summary>Pushes the vector at slot (or row) <paramref name="index"/> of argument <paramref name="arg"/>.</summary>
        public Chunks Ld(int arg, int index) { Address(arg, index); _il.Emit(OpCodes.Call, O.Load); _count++; return this; }
        /// <summary>Pops a vector into slot <paramref name="index"/> of argument <paramref name="arg"/>.</summary>
        public Chunks St(int arg, int index) { Address(arg, index); _il.Emit(OpCodes.Call, O.Store); _count++; return this; }
        public Chunks Call(Func<Ops, MethodInfo> m) { _il.Emit(OpCodes.Call, m(O)); _count++; return this; }
        public Chunks Dup() { _il.Emit(OpCodes.Dup); _count++; return this; }
        public Chunks Set(int t) { _il.Emit(OpCodes.Stloc, t == 0 ? _t0 : _t1); _count++; return this; }
        public Chunks Get(int t) { _il.Emit(OpCodes.Ldloc, t == 0 ? _t0 : _t1); _count++; return this; }
    }

    static int Terms(SparseLuPlan p) => p.RjSlot.Length + p.InvProgram.Length / 2 + p.UpSlot.Length + p.LoSlot.Length;

    /// <summary>The four phases (load J into the slots, factor, selected inverse, transposed solve), or null when the pattern is too large.</summary>
    public static LuKernels? Build(SparseLuPlan p, int[] jSlot, bool[] jFirst, int[] zeroSlots, int lanes)
    {
        if (Terms(p) > MaxTerms) return null;
        return new LuKernels(BuildLoad(jSlot, jFirst, zeroSlots, lanes), BuildFactor(p, lanes), BuildInverse(p, lanes), BuildSolveT(p, lanes));
    }

    // the operations, by name, for Chunks.Call
    static MethodInfo Mul(Ops o) => o.Mul;
    static MethodInfo Sub(Ops o) => o.Sub;
    static MethodInfo Div(Ops o) => o.Div;
    static MethodInfo Add(Ops o) => o.Add;
    static MethodInfo One(Ops o) => o.One;
    static MethodInfo Zero(Ops o) => o.Zero;

    /// <summary>
    /// c = ν − ∇log|det J| in place of ν (staged in the solve vector): per k, Σ_q J⁻¹[pair q]·H_q
    /// summed from 0 in the order given; the Hessian values sit right after J's (argument j).
    /// </summary>
    public static LuKernel[] BuildRhs(int d, int[] hStart, int[] pairSlot, int[] hEntry, int nnz, int lanes)
    {
        var c = new Chunks(lanes);
        for (int k = 0; k < d; k++)
        {
            int kk = k;
            c.Unit(e =>
            {
                e.Call(Zero);
                for (int q = hStart[kk]; q < hStart[kk + 1]; q++) e.Ld(Z, pairSlot[q]).Ld(J, nnz + hEntry[q]).Call(Mul).Call(Add);
                e.Set(0).Ld(X, kk).Get(0).Call(Sub).St(X, kk);
            });
        }
        return c.Finish();
    }

    static LuKernel[] BuildLoad(int[] jSlot, bool[] jFirst, int[] zeroSlots, int lanes)
    {
        var c = new Chunks(lanes);
        foreach (int q in zeroSlots) { int s = q; c.Unit(e => e.Call(Zero).St(A, s)); }
        for (int e0 = 0; e0 < jSlot.Length; e0++)
        {
            int e1 = e0;
            c.Unit(e =>
            {
                if (jFirst[e1]) e.Call(Zero).Ld(J, e1).Call(Add).St(A, jSlot[e1]);
                else e.Ld(A, jSlot[e1]).Ld(J, e1).Call(Add).St(A, jSlot[e1]);
            });
        }
        return c.Finish();
    }

    static LuKernel[] BuildFactor(SparseLuPlan p, int lanes)
    {
        var c = new Chunks(lanes);
        int rj = 0;
        for (int k = 0; k < p.D; k++)
        {
            int kk = k;
            int rj0 = rj;
            c.Unit(e =>
            {
                // 1/pivot, kept for the inverse and the solves
                e.Call(One).Ld(A, p.PivotSlot[kk]).Call(Div).Dup().Set(0).St(R, kk);
                int q = rj0;
                for (int li = p.LoStart[kk]; li < p.LoStart[kk + 1]; li++)
                {
                    e.Ld(A, p.LoSlot[li]).Get(0).Call(Mul).Dup().Set(1).St(A, p.LoSlot[li]);
                    for (int u = p.UpStart[kk]; u < p.UpStart[kk + 1]; u++, q++)
                        e.Ld(A, p.RjSlot[q]).Get(1).Ld(A, p.UpSlot[u]).Call(Mul).Call(Sub).St(A, p.RjSlot[q]);
                }
            });
            rj += (p.LoStart[k + 1] - p.LoStart[k]) * (p.UpStart[k + 1] - p.UpStart[k]);
        }
        return c.Finish();
    }

    static LuKernel[] BuildInverse(SparseLuPlan p, int lanes)
    {
        var c = new Chunks(lanes);
        int[] prog = p.InvProgram;
        int pc = 0;
        while (pc < prog.Length)
        {
            int at = pc;
            c.Unit(e =>
            {
                int target = prog[at], kind = prog[at + 1], i = prog[at + 2], terms = prog[at + 3];
                e.Call(kind == 2 ? (Func<Ops, MethodInfo>)One : Zero);
                for (int q = 0; q < terms; q++) e.Ld(Z, prog[at + 4 + 2 * q]).Ld(A, prog[at + 5 + 2 * q]).Call(Mul).Call(Sub);
                if (kind != 0) e.Ld(R, i).Call(Mul);
                e.St(Z, target);
            });
            pc += 4 + 2 * prog[pc + 3];
        }
        return c.Finish();
    }

    static LuKernel[] BuildSolveT(SparseLuPlan p, int lanes)
    {
        var c = new Chunks(lanes);
        for (int k = 0; k < p.D; k++)
        {
            int kk = k;
            c.Unit(e =>
            {
                e.Ld(X, kk).Ld(R, kk).Call(Mul).Dup().Set(0).St(X, kk);
                for (int u = p.UpStart[kk]; u < p.UpStart[kk + 1]; u++)
                    e.Ld(X, p.UpCol[u]).Ld(A, p.UpSlot[u]).Get(0).Call(Mul).Call(Sub).St(X, p.UpCol[u]);
            });
        }
        for (int k = p.D - 1; k >= 0; k--)
        {
            int kk = k;
            c.Unit(e =>
            {
                e.Ld(X, kk);
                for (int l = p.LoStart[kk]; l < p.LoStart[kk + 1]; l++) e.Ld(A, p.LoSlot[l]).Ld(X, p.LoRow[l]).Call(Mul).Call(Sub);
                e.St(X, kk);
            });
        }
        return c.Finish();
    }
}
