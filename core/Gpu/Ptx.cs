using System.Reflection;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Sde.Core.Gpu;

/// <summary>
/// Compiles the kernels a model needs to PTX with ILGPU's PTX back end, without a GPU or a CUDA driver.
/// A model feature that ILGPU cannot translate for CUDA fails here (in CI), not on the first GPU run.
/// </summary>
public static class Ptx
{
    /// <summary>The kernels of a model: (file-friendly name, method), generic ones specialised on the model type.</summary>
    public static (string Name, MethodInfo Method)[] KernelsOf(Type modelType) => KernelsOf(modelType, false);

    /// <summary>The kernels a run of the model uses: a weighted model's population is stepped by the weighted
    /// step kernel only (the others would simulate it without its weight and resampling).</summary>
    public static (string Name, MethodInfo Method)[] KernelsOf(Type modelType, bool weighted)
    {
        MethodInfo G(Type t, string name) => t.GetMethod(name, BindingFlags.Public | BindingFlags.Static)!.MakeGenericMethod(modelType);
        if (weighted) return [("weighted_step", G(typeof(WeightedKernels), nameof(WeightedKernels.WeightedStep)))];
        return new[]
        {
            ("plain", G(typeof(Kernels), nameof(Kernels.Plain))),
            ("reduce_counts", typeof(Kernels).GetMethod(nameof(Kernels.ReduceCounts))!),
            ("finite_difference", G(typeof(FdKernels), nameof(FdKernels.FiniteDifference))),
            ("tangent", G(typeof(TangentKernels), nameof(TangentKernels.Tangent))),
            ("lyapunov", G(typeof(LyapunovKernels), nameof(LyapunovKernels.Lyapunov))),
        };
    }

    /// <summary>Parses "sm_70", "sm_90", … (default sm_70: runs, JIT-compiled by the driver, on every later GPU).</summary>
    public static CudaArchitecture ParseArch(string? arch)
    {
        if (string.IsNullOrEmpty(arch)) return CudaArchitecture.SM_70;
        var s = arch.Trim().ToLowerInvariant();
        // architectures that exist (Maxwell sm_50 to Blackwell sm_12x); anything else is a typo, not a request
        if (s.StartsWith("sm_") && s.Length >= 5 && s.Length <= 6 && int.TryParse(s[3..^1], out int major) && int.TryParse(s[^1..], out int minor)
            && major >= 5 && major <= 12)
            return new CudaArchitecture(major, minor);
        throw new ArgumentException($"unknown CUDA architecture '{arch}' (expected sm_70, sm_80, sm_90, …)");
    }

    /// <summary>Compiles every kernel of <paramref name="modelType"/> to PTX: (name, PTX text) per kernel.</summary>
    public static (string Name, string Ptx)[] Compile(Type modelType, CudaArchitecture arch) => Compile(modelType, arch, false);

    /// <summary>Compiles the kernels a run of the model uses (<see cref="KernelsOf(Type, bool)"/>) to PTX.</summary>
    public static (string Name, string Ptx)[] Compile(Type modelType, CudaArchitecture arch, bool weighted)
    {
        var isa = arch.Major >= 9 ? CudaInstructionSet.ISA_78 : arch.Major >= 8 ? CudaInstructionSet.ISA_71 : CudaInstructionSet.ISA_70;
        using var context = Context.Create(b => b.EnableAlgorithms().Math(MathMode.Default));
        using var backend = new PTXBackend(context, new CudaCapabilityContext(arch), arch, isa, null);
        var r = new List<(string, string)>();
        foreach (var (name, method) in KernelsOf(modelType, weighted))
        {
            try
            {
                var entry = EntryPointDescription.FromImplicitlyGroupedKernel(method);
                var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
                r.Add((name, compiled.PTXAssembly));
            }
            catch (Exception e)
            {
                throw new NotSupportedException($"the {name} kernel does not compile for CUDA ({arch}): {e.Message}", e);
            }
        }
        return r.ToArray();
    }
}
