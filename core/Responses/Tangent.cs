namespace Sde.Core;

/// <summary>
/// The derivatives of a compiled model that the response estimators and Lyapunov analysis need,
/// generated symbolically by the compiler. Only non-zero entries are computed: their positions are
/// fixed at compile time and given once, as data, by <see cref="TangentStructure"/>, so the engine
/// works with sparse values and the emitted code stays straight-line.
/// Conventions: the step map is G(x, w) = x + f Δt + g √Δt w; J = D_x G.
/// </summary>
public interface ISdeTangentModel : ISdeModel
{
    /// <summary>Values of J = D_x G at the positions <see cref="TangentStructure.JRow"/>/<see cref="TangentStructure.JCol"/>.</summary>
    void Jacobian<TV>(TV x, TV w, double t, double dt, double sqdt, TV values) where TV : struct, IVec;

    /// <summary>Values of ∂_k J_ij at the triples (HRow, HCol, HK) (includes the Itô/noise terms through w).</summary>
    void Hessian<TV>(TV x, TV w, double t, double dt, double sqdt, TV values) where TV : struct, IVec;

    /// <summary>Diffusion entries g_il (without √Δt) at (GRow, GLane).</summary>
    void Sigma<TV>(TV x, double t, TV values) where TV : struct, IVec;

    /// <summary>
    /// For response parameter number <paramref name="which"/> (see <see cref="TangentStructure.Params"/>):
    /// χ = ∂_γ G (dense, length d), Dχ = D_x χ at (DChiRow[which], DChiCol[which]),
    /// ∂_γ g at (DgRow[which], DgLane[which]).
    /// </summary>
    void ParamTangent<TV>(int which, TV x, TV w, double t, double dt, double sqdt, TV chi, TV dchi, TV dg) where TV : struct, IVec;

    /// <summary>Gradients of every observable at (ObsGradObs, ObsGradState).</summary>
    void ObservableGradient<TV>(TV x, double t, TV values) where TV : struct, IVec;

    /// <summary>ν₀ = ∇ log ρ₀(x₀) for the components with a normal init (0 for the others).</summary>
    void InitScore<TV>(TV x, TV nu) where TV : struct, IVec;

    /// <summary>out[which] = ∂_γ log ρ₀(x₀) (normal inits; 0 where the init does not depend on γ); v0[which·d + k] = ∂_γ x₀,k for the pathwise tangent.</summary>
    void InitParamScore<TV>(TV x, TV zn, TV zu, TV @out, TV v0) where TV : struct, IVec;
}

/// <summary>Sparsity patterns and facts about a model's derivatives (data, fixed at compile time).</summary>
public sealed class TangentStructure
{
    public required int[] JRow { get; init; }
    public required int[] JCol { get; init; }
    public required int[] HRow { get; init; }
    public required int[] HCol { get; init; }
    public required int[] HK { get; init; }
    public required int[] GRow { get; init; }
    public required int[] GLane { get; init; }
    /// <summary>Model parameter index of each response parameter ("which").</summary>
    public required int[] Params { get; init; }
    public required int[][] DChiRow { get; init; }
    public required int[][] DChiCol { get; init; }
    public required int[][] DgRow { get; init; }
    public required int[][] DgLane { get; init; }
    public required int[] ObsGradObs { get; init; }
    public required int[] ObsGradState { get; init; }
    /// <summary>The Hessian terms depend on neither the state, the noise nor the time (only on the
    /// parameters and Δt): computed once per run and worker instead of every step.</summary>
    public bool HessianConstant { get; init; }
    /// <summary>The diffusion does not depend on the state (Π is then independent of x).</summary>
    public required bool AdditiveNoise { get; init; }
    /// <summary>Per component: the init is `normal` (it has a score; otherwise it is a point or uniform).</summary>
    public required bool[] NormalInit { get; init; }
    /// <summary>Every component has a normal init, so ν₀ is the exact initial score.</summary>
    public required bool InitHasScore { get; init; }
}
