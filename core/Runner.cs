namespace Sde.Core;

/// <summary>
/// Entry points that are generic over the model type, reachable from code that only holds a
/// <see cref="Type"/> (the compiler's emitted struct): one reflection call builds the runner, after
/// which everything runs specialised by the JIT.
/// </summary>
public interface IModelRunner
{
    Estimate[] Run(object model, RunSettings settings, QueryPlan[] plans);
}

public sealed class ModelRunner<TModel> : IModelRunner where TModel : struct, ISdeModel
{
    public Estimate[] Run(object model, RunSettings settings, QueryPlan[] plans)
    {
        var m = (TModel)model;
        return Engine.Run(in m, settings, plans);
    }
}

public static class ModelRunner
{
    public static IModelRunner For(Type modelType) =>
        (IModelRunner)Activator.CreateInstance(typeof(ModelRunner<>).MakeGenericType(modelType))!;
}
