using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Sde.Core;

/// <summary>
/// A compiled model's Euler–Maruyama step on four paths at once, one path per lane of a
/// <see cref="Vector256{T}"/>: the state and noise buffers are struct-of-arrays, component i of
/// path (lane) j at <c>p[i*4 + j]</c>. The lane step computes every lane with the operations, in the
/// order, of the one-path <see cref="ISdeModel.Step{TV}"/>, so each lane gets the bits that the
/// one-path step gives that path (the engine's tests check it). The compiler emits it next to the
/// generic methods; <see cref="LaneWidth"/> is 0 where it did not (loops, too large a body).
/// </summary>
public unsafe interface ISdeLaneModel
{
    /// <summary>4 when <see cref="StepLanes4"/> is implemented, 0 when the engine must run one path at a time.</summary>
    int LaneWidth { get; }

    /// <summary>y ← x + f(x,t) dt + g(x,t) sqdt w for four paths (lane j of x[i*4 + j], w[l*4 + j], y[i*4 + j]).</summary>
    void StepLanes4(double* x, double* y, double* w, double t, double dt, double sqdt);

    /// <summary>4 when <see cref="TangentLanes4"/> is implemented (a one-state model with derivatives), else 0.</summary>
    int TangentLaneWidth { get; }

    /// <summary>
    /// The response engine's per-step derivative values for four paths, each lane with the bits of the
    /// one-path methods (<see cref="ISdeTangentModel.Jacobian{TV}"/>, <c>Hessian</c>, <c>Sigma</c> and every
    /// parameter's <c>ParamTangent</c>), into rows of four doubles in that order: the J entries, the Hessian
    /// entries, the σ entries, then per response parameter its χ (one row per state), Dχ entries and ∂σ
    /// entries (<see cref="TangentStructure"/> gives the counts).
    /// </summary>
    void TangentLanes4(double* x, double* w, double t, double dt, double sqdt, double* values);
}

/// <summary>
/// The lane versions of the operations that the emitted lane step calls (the JIT inlines them).
/// +, −, ×, ÷, √, |·|, ⌊·⌋, comparisons and selects are single IEEE operations per lane, so a lane
/// gives the scalar bits. exp, log, sin, cos, tan, tanh and pow are the language's own (<see cref="Elementary"/>), in
/// lanes with the one-path operations (the runtime's vector forms differ from <see cref="Math"/>'s in the last bits,
/// and the lanes must match the one-path step exactly); min and max are selects with
/// <see cref="Math.Min(double, double)"/>'s rules.
/// Conditions are lane masks (all bits set where true), as <see cref="Vector256.Equals{T}"/> makes them.
/// </summary>
public static unsafe class LaneMath
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Load(double* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<double> v, double* p) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Broadcast(double a) => Vector256.Create(a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Add(Vector256<double> a, Vector256<double> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Sub(Vector256<double> a, Vector256<double> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Mul(Vector256<double> a, Vector256<double> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Div(Vector256<double> a, Vector256<double> b) => a / b;
    /// <summary>The sign bit flipped, as the scalar <c>neg</c> does (−0 for 0, NaN stays NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Neg(Vector256<double> a) => -a;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Sqrt(Vector256<double> a) => Vector256.Sqrt(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Abs(Vector256<double> a) => Vector256.Abs(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Floor(Vector256<double> a) => Vector256.Floor(a);

    // exp, log, sin and cos are the language's own (Elementary), written for lanes with the one-path form's operations.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Exp(Vector256<double> a) => Elementary.Exp(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Log(Vector256<double> a) => Elementary.Log(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Sin(Vector256<double> a) => Elementary.Sin(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Cos(Vector256<double> a) => Elementary.Cos(a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Tan(Vector256<double> a) => Elementary.Tan(a);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Tanh(Vector256<double> a) => Elementary.Tanh(a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Pow(Vector256<double> a, Vector256<double> b) => Elementary.Pow(a, b);

    // Math.Min/Max as .NET defines them (IEEE 754-2019 minimum and maximum): a NaN operand is the result (the second
    // when both are), −0 is below +0; otherwise the smaller (larger) operand. Selects give those bits in every lane.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Min(Vector256<double> a, Vector256<double> b)
    {
        var r = Vector256.ConditionalSelect(Vector256.LessThan(a, b), a, b);
        r = Vector256.ConditionalSelect(Vector256.Equals(a, b), a | b, r);   // ±0: the sign bit set if either has it
        r = Vector256.ConditionalSelect(~Vector256.Equals(a, a), a, r);
        return Vector256.ConditionalSelect(~Vector256.Equals(b, b), b, r);
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Max(Vector256<double> a, Vector256<double> b)
    {
        var r = Vector256.ConditionalSelect(Vector256.GreaterThan(a, b), a, b);
        r = Vector256.ConditionalSelect(Vector256.Equals(a, b), a & b, r);   // ±0: the sign bit set only if both have it
        r = Vector256.ConditionalSelect(~Vector256.Equals(a, a), a, r);
        return Vector256.ConditionalSelect(~Vector256.Equals(b, b), b, r);
    }

    // Comparisons as the scalar IL makes them: ceq, clt, cgt are ordered (false with a NaN); ≠ is not ceq
    // (true with a NaN); ≤ is not cgt.un and ≥ not clt.un (false with a NaN).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Eq(Vector256<double> a, Vector256<double> b) => Vector256.Equals(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Ne(Vector256<double> a, Vector256<double> b) => ~Vector256.Equals(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Lt(Vector256<double> a, Vector256<double> b) => Vector256.LessThan(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Gt(Vector256<double> a, Vector256<double> b) => Vector256.GreaterThan(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Le(Vector256<double> a, Vector256<double> b) => Vector256.LessThanOrEqual(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Ge(Vector256<double> a, Vector256<double> b) => Vector256.GreaterThanOrEqual(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> And(Vector256<double> a, Vector256<double> b) => a & b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Or(Vector256<double> a, Vector256<double> b) => a | b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Not(Vector256<double> a) => ~a;
    /// <summary>A number as a condition: non-zero (or NaN) is true.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> NonZero(Vector256<double> a) => ~Vector256.Equals(a, Vector256<double>.Zero);
    /// <summary>A condition as a number: 1.0 or +0.0, as the scalar conv.r8 of 1 or 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> AsNumber(Vector256<double> mask) => mask & Vector256.Create(1.0);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Select(Vector256<double> mask, Vector256<double> a, Vector256<double> b) => Vector256.ConditionalSelect(mask, a, b);
    /// <summary>(x &gt; 0) − (x &lt; 0) as the scalar code computes it: ±1, or +0 for 0 and NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<double> Sign(Vector256<double> a) =>
        AsNumber(Vector256.GreaterThan(a, Vector256<double>.Zero)) - AsNumber(Vector256.LessThan(a, Vector256<double>.Zero));
}
