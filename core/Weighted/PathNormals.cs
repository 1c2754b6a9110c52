namespace Sde.Core;

/// <summary>
/// Lanes 0 and 1 of the step normals of four consecutive paths at once, for the weighted engine (which
/// steps its population one step at a time; for models with one or two noise lanes, one path's Fill
/// would compute a block per path): <see cref="Normals.FillFirstLanes4"/>, the same bits as each path's
/// own <see cref="Normals.Fill(ulong, ulong, ulong, uint, double*, int)"/> (a test checks it).
/// </summary>
public static class PathNormals
{
    /// <summary>Whether the four-path vector form runs here (it gives the same bits either way).</summary>
    public static bool Usable => Normals.VectorUsable;

    /// <summary>z[2k] and z[2k+1] ← lanes 0 and 1 of path path0 + k at (step, tag), k = 0..3.</summary>
    public static unsafe void FillFirstLanes4(ulong seed, ulong path0, ulong step, uint tag, double* z)
        => Normals.FillFirstLanes4(seed, path0, step, tag, z);
}
