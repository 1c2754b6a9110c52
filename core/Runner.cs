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

public sealed class ModelRunner<TModel> : IModelRunner where TModel : struct, ISdeTangentModel
{
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
}
