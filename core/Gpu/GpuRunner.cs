namespace Sde.Core.Gpu;

/// <summary>
/// <see cref="IModelRunner"/> on an ILGPU backend: the plain engine and the response methods that have a
/// kernel (finite differences, pathwise, divergence kernel / likelihood ratio, Lyapunov alignment). <c>lyapunov(k)</c>
/// queries have their own runner (<see cref="GpuRunner.LyapunovFor"/>, <see cref="GpuLyapunov"/>). Recorded runs
/// (fitting, <c>samples(...)</c>, <c>score(...)</c>) go to the tangent kernel (<see cref="GpuTangent.RunRecorded"/>).
/// </summary>
public sealed class GpuModelRunner<TModel> : IModelRunner, IRecordRunner where TModel : unmanaged, ISdeTangentModel
{
    readonly GpuBackend _backend;
    public GpuModelRunner(GpuBackend backend) { _backend = backend; }

    public Estimate[] Run(object model, RunSettings settings, QueryPlan[] plans)
    {
        var m = (TModel)model;
        return GpuEngine.Run(_backend, in m, settings, plans);
    }

    public Estimate[] RunResponses(object model, object[] variants, TangentStructure structure, RunSettings settings, ResponsePlan[] plans)
    {
        var m = (TModel)model;
        var vs = Array.ConvertAll(variants, v => (TModel)v);
        return GpuResponses.Run(_backend, m, vs, structure, settings, plans);
    }

    public void RunRecorded(object model, TangentStructure structure, RunSettings settings, ResponsePlan[] plans, PathRecord record)
    {
        var m = (TModel)model;
        GpuTangent.RunRecorded(_backend, m, structure, settings, plans, record);
    }

    /// <summary>
    /// Jacobian matching stays on the host whatever the backend: it evaluates the model's field and Jacobian at the
    /// data's states (no simulation, no random numbers), a few thousand model calls per evaluation, which a kernel
    /// launch and the copies would cost more than.
    /// </summary>
    public FieldMatching.Result MatchField(object model, TangentStructure structure, double[] states, int[] fieldComp, double[] field, int[] jacRow, int[] jacCol, double[] jac, double lambda)
    {
        var m = (TModel)model;
        return FieldMatching.Evaluate(in m, structure, states, fieldComp, field, jacRow, jacCol, jac, lambda);
    }
}

public static class GpuRunner
{
    /// <summary>Parses a backend name: "ilgpu-cpu" or "cuda".</summary>
    public static GpuBackend Parse(string name) => name switch
    {
        "ilgpu-cpu" => GpuBackend.IlgpuCpu,
        "cuda" => GpuBackend.Cuda,
        _ => throw new ArgumentException($"unknown GPU backend '{name}' (ilgpu-cpu, cuda)"),
    };

    public static IModelRunner For(Type modelType, GpuBackend backend) =>
        (IModelRunner)Activator.CreateInstance(typeof(GpuModelRunner<>).MakeGenericType(modelType), backend)!;

    /// <summary>The recorded runs (fitting, samples, score) on the tangent kernel of an ILGPU backend.</summary>
    public static IRecordRunner RecordFor(Type modelType, GpuBackend backend) => (IRecordRunner)For(modelType, backend);

    /// <summary>The Lyapunov kernel's runner (<c>lyapunov(k)</c> queries) on an ILGPU backend.</summary>
    public static ILyapunovRunner LyapunovFor(Type modelType, GpuBackend backend) =>
        (ILyapunovRunner)Activator.CreateInstance(typeof(GpuLyapunovRunner<>).MakeGenericType(modelType), backend)!;

    /// <summary>The weighted engine with its steps on the weighted step kernel of an ILGPU backend.</summary>
    public static IWeightedRunner WeightedFor(Type modelType, GpuBackend backend) =>
        (IWeightedRunner)Activator.CreateInstance(typeof(GpuWeightedRunner<>).MakeGenericType(modelType), backend)!;

    /// <summary>Which response plans the GPU backends can run: all of them (alignment included) since the alignment kernel.</summary>
    public static bool Supports(ResponsePlan p) => true;

    /// <summary>"auto": CUDA when ILGPU finds a device, otherwise the CPU engine ("cpu").</summary>
    public static string ResolveAuto() => GpuDevice.CudaAvailable ? "cuda" : "cpu";
}
