namespace Sde.Core;

/// <summary>
/// Lanes 0 and 1 of the step normals of four consecutive paths at once, for the weighted engine's
/// one-path form (which steps its population one step at a time; with two noise lanes, one vector Philox
/// for the four paths' two blocks instead of a scalar draw per path): <see cref="Normals.FillFirstLanes4"/>, the same bits as each path's
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
