namespace Sde.Core;
// PLACEHOLDER, replaced by the real engine on merge (branch core).
public static class Engine
{
    public static unsafe Estimate[] Run<TModel>(in TModel model, RunSettings s, QueryPlan[] plans) where TModel : struct, ISdeModel
    {
        int d = model.Dim, m = Math.Max(1, model.NoiseDim), q = Math.Max(1, model.ObservableCount);
        var x = new double[d]; var y = new double[d]; var w = new double[m]; var o = new double[q];
        var sum = new double[plans.Length]; var sq = new double[plans.Length];
        var rng = new Random((int)s.Seed);
        long N = s.Steps;
        fixed (double* px = x, py = y, pw = w, po = o)
        {
            var X = new PtrVec(px); var Y = new PtrVec(py); var W = new PtrVec(pw); var O = new PtrVec(po);
            for (long p = 0; p < s.Paths; p++)
            {
                for (int k = 0; k < d; k++) { y[k] = rng.NextDouble(); x[k] = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(6.28318 * rng.NextDouble()); }
                model.Init(X, X, Y);
                for (long n = 0; n < N; n++)
                {
                    for (int l = 0; l < model.NoiseDim; l++) w[l] = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(6.28318 * rng.NextDouble());
                    model.Step(X, Y, W, n * s.Dt, s.Dt, Math.Sqrt(s.Dt));
                    Array.Copy(y, x, d);
                }
                model.Observe(X, N * s.Dt, O);
                for (int i = 0; i < plans.Length; i++) { sum[i] += o[plans[i].Observable]; sq[i] += o[plans[i].Observable] * o[plans[i].Observable]; }
            }
        }
        return plans.Select((p, i) => new Estimate { Value = sum[i] / s.Paths, StdErr = Math.Sqrt(Math.Max(0, sq[i] / s.Paths - sum[i] * sum[i] / s.Paths / s.Paths) / s.Paths), Count = s.Paths }).ToArray();
    }
}
