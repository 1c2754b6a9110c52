namespace Sde.Core;

/// <summary>
/// Entry points that are generic over the model type, reachable from code that only holds a
/// <see cref="Type"/> (the compiler's emitted struct): one reflection call builds the runner, after
/// which everything runs specialised by the JIT.
/// </summary>
public interface IModelRunner
{
    Estimate[] Run(object model, RunSettings settings, QueryPlan[] plans);
    Estimate[] RunResponses(object model, object[] variants, TangentStructure structure, RunSettings settings, ResponsePlan[] plans);
}

/// <summary>The covector growth measurement (CPU only, whatever the backend of the run).</summary>
public interface IGrowthRunner
{
    CovectorGrowthResult CovectorGrowth(object model, TangentStructure structure, RunSettings settings);
}

/// <summary>The CPU engines' exact sums over a path range (sharded runs, merged later bit for bit).</summary>
public interface IPartialRunner
{
    Accumulators RunPartial(object model, RunSettings settings, QueryPlan[] plans);
    ResponseAccumulators RunResponsesPartial(object model, object[] variants, TangentStructure structure, RunSettings settings, ResponsePlan[] plans);
}

/// <summary>A response run that records per-path values (fitting, the samples and score queries): the CPU engine
/// (<see cref="ModelRunner{TModel}"/>) and the ILGPU backends' tangent kernel (<c>Gpu.GpuModelRunner</c>).</summary>
public interface IRecordRunner
{
    void RunRecorded(object model, TangentStructure structure, RunSettings settings, ResponsePlan[] plans, PathRecord record);

    /// <summary>Jacobian matching's objective and gradient (<see cref="FieldMatching"/>).</summary>
    FieldMatching.Result MatchField(object model, TangentStructure structure, double[] states, int[] fieldComp, double[] field, int[] jacRow, int[] jacCol, double[] jac, double lambda);
}

public sealed class ModelRunner<TModel> : IModelRunner, IGrowthRunner, IPartialRunner, IRecordRunner where TModel : struct, ISdeTangentModel
{
    public FieldMatching.Result MatchField(object model, TangentStructure structure, double[] states, int[] fieldComp, double[] field, int[] jacRow, int[] jacCol, double[] jac, double lambda)
    {
        var m = (TModel)model;
        return FieldMatching.Evaluate(in m, structure, states, fieldComp, field, jacRow, jacCol, jac, lambda);
    }

    public void RunRecorded(object model, TangentStructure structure, RunSettings settings, ResponsePlan[] plans, PathRecord record)
    {
        var m = (TModel)model;
        ResponseEngine.RunRecorded(in m, structure, settings, plans, record);
    }

    public Accumulators RunPartial(object model, RunSettings settings, QueryPlan[] plans)
    {
        var m = (TModel)model;
        return Engine.RunPartial(in m, settings, plans);
    }

    public ResponseAccumulators RunResponsesPartial(object model, object[] variants, TangentStructure structure, RunSettings settings, ResponsePlan[] plans)
    {
        var m = (TModel)model;
        var vs = Array.ConvertAll(variants, v => (TModel)v);
        return ResponseEngine.RunPartial(in m, vs, structure, settings, plans);
    }

    public CovectorGrowthResult CovectorGrowth(object model, TangentStructure structure, RunSettings settings)
    {
        var m = (TModel)model;
        return Core.CovectorGrowth.Measure(in m, structure, settings);
    }

    public Estimate[] Run(object model, RunSettings settings, QueryPlan[] plans)
    {
        var m = (TModel)model;
        return Engine.Run(in m, settings, plans);
    }

    public Estimate[] RunResponses(object model, object[] variants, TangentStructure structure, RunSettings settings, ResponsePlan[] plans)
    {
        var m = (TModel)model;
        var vs = Array.ConvertAll(variants, v => (TModel)v);
        return ResponseEngine.Run(in m, vs, structure, settings, plans);
    }
}

public static class ModelRunner
{
    public static IModelRunner For(Type modelType) =>
        (IModelRunner)Activator.CreateInstance(typeof(ModelRunner<>).MakeGenericType(modelType))!;

    /// <summary>λ_cov of the model (see <see cref="Core.CovectorGrowth"/>).</summary>
    public static CovectorGrowthResult CovectorGrowth(Type modelType, object model, TangentStructure structure, RunSettings settings) =>
        ((IGrowthRunner)For(modelType)).CovectorGrowth(model, structure, settings);
}
