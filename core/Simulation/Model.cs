namespace Sde.Core;

/// <summary>
/// A vector accessor the compiled model reads and writes through. The CPU engine passes a pointer
/// (<see cref="PtrVec"/>); GPU kernels pass a strided view of a struct-of-arrays buffer. Model methods
/// are generic over it so that one emitted type serves every backend and the JIT (or ILGPU)
/// specialises each call.
/// </summary>
public interface IVec
{
    double this[int i] { get; set; }
}

/// <summary>Contiguous doubles behind a raw pointer: the CPU engine's per-thread buffers.</summary>
public unsafe struct PtrVec : IVec
{
    public double* P;
    public PtrVec(double* p) { P = p; }
    public double this[int i]
    {
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        get => P[i];
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        set => P[i] = value;
    }
}

/// <summary>A managed array as a vector (the CPU engine's dense per-step algebra, <see cref="Dense"/>).</summary>
public struct ArrayVec : IVec
{
    public double[] A;
    public ArrayVec(double[] a) { A = a; }
    public double this[int i]
    {
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        get => A[i];
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        set => A[i] = value;
    }
}

/// <summary>Doubles every <see cref="Stride"/>-th behind a raw pointer: one lane of the response
/// engine's lane-interleaved buffers (and, with stride 1, a plain vector next to them).</summary>
public unsafe struct StrideVec : IVec
{
    public double* P;
    public int Stride;
    public StrideVec(double* p, int stride) { P = p; Stride = stride; }
    public double this[int i]
    {
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        get => P[(nint)i * Stride];
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        set => P[(nint)i * Stride] = value;
    }
}

/// <summary>
/// A compiled SDE  dx = f(x, t) dt + g(x, t) dW  (Itô), emitted per model as a value type by the
/// compiler. Parameters are fields of the struct; sizes are constants. Every method works on one
/// path; the engine owns the buffers. Nothing here allocates.
/// </summary>
public interface ISdeModel
{
    /// <summary>State dimension d.</summary>
    int Dim { get; }
    /// <summary>Noise dimension m (0 for an ODE).</summary>
    int NoiseDim { get; }
    /// <summary>Number of observables (all queries' observables, numbered by the compiler).</summary>
    int ObservableCount { get; }

    /// <summary>x ← x₀: <paramref name="zn"/> holds d standard normals, <paramref name="zu"/> d uniforms on (0,1); component k uses lane k.</summary>
    void Init<TV>(TV x, TV zn, TV zu) where TV : struct, IVec;

    /// <summary>One Euler–Maruyama step: y ← x + f(x,t) dt + g(x,t) sqdt w, with w of length m.</summary>
    void Step<TV>(TV x, TV y, TV w, double t, double dt, double sqdt) where TV : struct, IVec;

    /// <summary>f ← f(x, t).</summary>
    void Drift<TV>(TV x, double t, TV f) where TV : struct, IVec;

    /// <summary>gw ← g(x, t) w (d × m matrix applied to an m-vector).</summary>
    void Diffuse<TV>(TV x, double t, TV w, TV gw) where TV : struct, IVec;

    /// <summary>obs ← every observable at (x, t).</summary>
    void Observe<TV>(TV x, double t, TV obs) where TV : struct, IVec;
}
