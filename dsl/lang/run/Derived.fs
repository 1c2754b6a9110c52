/// Estimates derived from plain plans: `variance` and `covariance` from the means of powers and
/// products of the observables (exact sums, so thread-count and shard independent like every plain
/// estimate), `quantile` from a histogram, and the 2-D `density` from a 1-D histogram of the cell
/// index. See docs/language.md, sections 6.2 and 6.7–6.9, for the estimators and their standard errors.
module Sde.Lang.Derived

open System
open Sde.Core
open Sde.Lang.Checked

/// The bin centres of `n` equal bins on [lo, hi].
let centres (lo: float) (hi: float) (n: int) =
    let w = (hi - lo) / float n
    Array.init n (fun b -> lo + (float b + 0.5) * w)

let private sq (e: CExpr) = Power(e, Const 2.0)

/// The observables whose means a variance or covariance combines:
/// variance(e): e, e², e³; covariance(a, b): a, b, ab, a²b, ab².
let momentObservables (t: CTarget) : CExpr list =
    match t with
    | TVariance e -> [ e; sq e; Power(e, Const 3.0) ]
    | TCovariance (a, b) -> [ a; b; Mul(a, b); Mul(sq a, b); Mul(a, sq b) ]
    | _ -> []

/// The 2-D density's cell as one observable: ix + n1·iy + ½ inside [lo1, hi1) × [lo2, hi2) (cells
/// numbered row by row, a row per y bin), −1 outside (counted "below" by the histogram on [0, n1·n2)),
/// and NaN when an observable is NaN (a sample in no bin, as for a 1-D density).
let cellObservable (t: CTarget) : CExpr =
    match t with
    | TDensity2 (a, b, lo1, hi1, lo2, hi2, n1, n2) ->
        let cell (e: CExpr) lo hi n =
            // ⌊(e − lo) n / (hi − lo)⌋, at most n − 1 (rounding just below hi)
            Func(Fn.Min, [ Func(Floor, [ Mul(Sub(e, Const lo), Const(float n / (hi - lo))) ]); Const(float (n - 1)) ])

        let cmp op x (v: float) = CCmp(op, x, Const v)
        let inside = CAnd(CAnd(cmp Syntax.Ge a lo1, cmp Syntax.Lt a hi1), CAnd(cmp Syntax.Ge b lo2, cmp Syntax.Lt b hi2))
        let outside = COr(COr(cmp Syntax.Lt a lo1, cmp Syntax.Ge a hi1), COr(cmp Syntax.Lt b lo2, cmp Syntax.Ge b hi2))
        let index = Add(Add(cell a lo1 hi1 n1, Mul(Const(float n1), cell b lo2 hi2 n2)), Const 0.5)
        IfThen(inside, index, IfThen(outside, Const -1.0, Add(a, b)))
    | _ -> invalidArg "t" "not a 2-D density"

/// The sample variance of an observable from its mean's standard error: se² · n.
let private varOf (e: Estimate) = e.StdErr * e.StdErr * float e.Count

let private scalar (value: float) (se: float) (ests: Estimate list) =
    let first = List.head ests
    Estimate(Value = value, StdErr = se, Count = first.Count, NonFinite = (ests |> List.map (fun e -> e.NonFinite) |> List.fold max 0L))

/// The inverse of the histogram's distribution function (linear within a bin): NaN outside the range.
let private inverseCdf (lo: float) (width: float) (below: float) (counts: float[]) (total: float) (u: float) =
    let mutable f = below / total
    let mutable result = nan
    let mutable b = 0

    if u > f then
        while Double.IsNaN result && b < counts.Length do
            let g = f + counts[b] / total

            if u <= g && counts[b] > 0.0 then result <- lo + (float b + (u - f) / (g - f)) * width

            f <- g
            b <- b + 1

    result

/// The bias of a derived result g(means) from the coupled pairs' per-block sums of its plans
/// (docs/discretisation.md): b = (g(C̄) − g(F̄)) / (1 − 2^−p) with C̄, F̄ the coarse and fine means
/// over all pairs, its standard error by the jackknife over the blocks (leave one block out:
/// se² = (B − 1)/B Σ_k (θ_k − θ̄)²). `g` gets each plan's slot means and the number of pairs.
/// None when the plans kept no blocks (bias off, or Richardson), or g is not finite on the pairs.
let pairBias (g: float[][] -> float -> float) (ests: Estimate list) : (float * float * int64) option =
    let withBlocks = ests |> List.forall (fun e -> not (isNull e.PairBlockC) && not (isNull e.PairBlockN) && e.BiasPairs > 0L)
    if not withBlocks then None
    else
        let nb = (List.head ests).PairBlockN.Length
        let counts = (List.head ests).PairBlockN
        let total = Array.sum counts
        let slotsOf (e: Estimate) = e.PairBlockC.Length / nb
        // Σ over blocks, less block `skip` (−1: none), divided by the pairs left
        let means (pick: Estimate -> float[]) (skip: int) =
            let n = float (total - (if skip >= 0 then counts[skip] else 0L))
            ests
            |> List.map (fun e ->
                let xs = pick e
                Array.init (slotsOf e) (fun k ->
                    let mutable acc = 0.0
                    for b in 0 .. nb - 1 do
                        if b <> skip then acc <- acc + xs[k * nb + b]
                    acc / n))
            |> List.toArray, n
        let theta skip =
            let c, n = means (fun e -> e.PairBlockC) skip
            let f, _ = means (fun e -> e.PairBlockF) skip
            g c n - g f n
        let factor = (List.head ests).BiasFactor
        let all = theta -1
        let used = [ for b in 0 .. nb - 1 do if counts[b] > 0L then yield b ]
        let thetas = used |> List.map theta |> List.toArray
        if thetas.Length < 2 || not (Double.IsFinite all) || thetas |> Array.exists (Double.IsFinite >> not) then None
        else
            let k = float thetas.Length
            let mean = Array.average thetas
            let var = (k - 1.0) / k * (thetas |> Array.sumBy (fun t -> (t - mean) * (t - mean)))
            Some(all * factor, sqrt var * factor, total)

let private setBias (e: Estimate) (b: (float * float * int64) option) =
    match b with
    | Some (v, s, n) ->
        e.Bias <- v
        e.BiasStdErr <- s
        e.BiasPairs <- n
    | None -> ()

/// The answer of a derived query from its plans' estimates, and its warnings.
let estimate (q: CQuery) (ests: Estimate list) : Estimate * string list =
    match q, ests with
    | QPlain (TVariance _, _), [ e1; e2; e3 ] ->
        // s² = Σ(e − ē)²/(n − 1); Var s² ≈ (4m² Var e − 4m Cov(e, e²) + Var e²)/n (delta method for E e² − (E e)²)
        let n = float e1.Count
        let m = e1.Value
        let v1, v2 = varOf e1, varOf e2
        let c12 = (e3.Value - m * e2.Value) * n / (n - 1.0)
        let var = (4.0 * m * m * v1 - 4.0 * m * c12 + v2) / n
        let r = scalar v1 (sqrt (max var 0.0)) ests
        // the pairs' variance n/(n − 1) (E e² − (E e)²), at dt and at dt/2
        pairBias (fun ms n -> (ms[1][0] - ms[0][0] * ms[0][0]) * n / (n - 1.0)) [ e1; e2 ] |> setBias r
        r, []
    | QPlain (TCovariance _, _), [ a; b; ab; a2b; ab2 ] ->
        // c = n/(n − 1) (mean(ab) − mean(a) mean(b)); delta method with the gradient (−E b, −E a, 1) of
        // E ab − E a E b and the sample covariances of (a, b, ab) from the means of a²b and ab²
        let n = float a.Count
        let ma, mb, mab = a.Value, b.Value, ab.Value
        let k = n / (n - 1.0)
        let cab = (mab - ma * mb) * k
        let cAab = (a2b.Value - ma * mab) * k
        let cBab = (ab2.Value - mb * mab) * k
        let var = (mb * mb * varOf a + ma * ma * varOf b + varOf ab + 2.0 * ma * mb * cab - 2.0 * mb * cAab - 2.0 * ma * cBab) / n
        let r = scalar cab (sqrt (max var 0.0)) ests
        pairBias (fun ms n -> (ms[2][0] - ms[0][0] * ms[1][0]) * n / (n - 1.0)) [ a; b; ab ] |> setBias r
        r, []
    | QPlain (TQuantile (_, p, lo, hi, bins), _), [ d ] ->
        // the p-quantile of the histogram (linear within a bin); its standard error by inverting the
        // binomial 95% interval of the distribution function (Woodruff):
        // (F⁻¹(p + z s) − F⁻¹(p − z s)) / (2z), s = √(p(1 − p)/n), z = 1.96
        let width = (hi - lo) / float bins
        let n = float d.Count
        let counts = d.Values |> Array.map (fun v -> Math.Round(v * width * n))
        let total = float d.Below + Array.sum counts + float d.Above
        let inv = inverseCdf lo width (float d.Below) counts total
        let s = sqrt (p * (1.0 - p) / total)
        let value = inv p
        let z = 1.96
        let se = (inv (p + z * s) - inv (p - z * s)) / (2.0 * z)

        let warns =
            [ if Double.IsNaN value && d.Count > 0L then
                  sprintf "the %s-quantile lies outside [%s, %s] (%d samples below, %d above); widen the range" (Checker.shortNumber p) (Checker.shortNumber lo) (Checker.shortNumber hi) d.Below d.Above
              elif Double.IsNaN se && d.Count > 1L then
                  sprintf "the standard error needs the quantiles at p ± %s inside [%s, %s]; widen the range" ((z * s).ToString("G3", Globalization.CultureInfo.InvariantCulture)) (Checker.shortNumber lo) (Checker.shortNumber hi)
              elif Double.IsFinite se && width > 2.0 * se then
                  sprintf "the bins (width %s) are wider than twice the standard error: the quantile is read off a linear interpolation within a bin; use more bins" (Checker.shortNumber width) ]

        let r = Estimate(Value = value, StdErr = se, Count = d.Count, NonFinite = d.NonFinite, Below = d.Below, Above = d.Above)
        // q(dt) − q(dt/2) ≈ −(F_dt(q) − F_dt/2(q)) / f(q) (Bahadur): the pairs' distribution functions near the
        // run's quantile q (from their histograms of per-pair fractions, linear within a bin; the slot after
        // the bins is the fraction below the range), f(q) = s / se the density that the standard error
        // already measured. The pairs' own quantiles, or F at q alone, see only the few pairs whose two
        // chains fall in different bins near q (a count of a few, whose jackknife can be 0); F averaged over
        // q ± w, w the 95% half-width of the pairs' own quantile (1.96 se √(n/J), at least a bin), sees
        // every pair near q in proportion to its displacement. Linear in the sums: a smooth jackknife.
        if Double.IsFinite value && Double.IsFinite se && se > 0.0 && d.BiasPairs > 1L then
            let density = s / se
            let w = max width (1.96 * se * sqrt (n / float d.BiasPairs))
            let a, b = max lo (value - w), min hi (value + w)
            let points = 64
            let cdfAt (m: float[]) (x: float) =
                let k = min (bins - 1) (max 0 (int (floor ((x - lo) / width))))
                let mutable f = m[bins] + m[k] * ((x - (lo + float k * width)) / width)
                for j in 0 .. k - 1 do
                    f <- f + m[j]
                f
            let cdf (m: float[]) =
                let mutable acc = 0.0
                for i in 0 .. points - 1 do
                    acc <- acc + cdfAt m (a + (float i + 0.5) * (b - a) / float points)
                acc / float points
            pairBias (fun ms _ -> -(cdf ms[0]) / density) [ d ] |> setBias r
        r, warns
    | QPlain (TDensity2 (_, _, lo1, hi1, lo2, hi2, n1, n2), _), [ d ] ->
        // the histogram of the cell index has unit bins: divide by the cell's area
        let area = (hi1 - lo1) / float n1 * ((hi2 - lo2) / float n2)
        let per (xs: float[]) = if isNull xs then [||] else xs |> Array.map (fun v -> v / area)

        let r =
            Estimate(Grid = centres lo1 hi1 n1, Values = per d.Values, StdErrs = per d.StdErrs, Below = d.Below + d.Above, Above = 0L,
                     Count = d.Count, NonFinite = d.NonFinite, Value = 0.0, StdErr = 0.0)
        // each cell's coupled bias is its bin's, per unit area (the cell index is one observable)
        if not (isNull d.Biases) && d.BiasPairs > 0L && not d.Extrapolated then
            r.Biases <- per d.Biases
            r.BiasStdErrs <- per d.BiasStdErrs
            r.BiasPairs <- d.BiasPairs
        r, []
    | QPlain (TSeries (_, every), _), (_ :: _ as es) ->
        // one mean per time k·Δ (the value is the last, at T); the non-finite count is the largest of the times'
        let last = List.last es
        let series =
            Estimate(Grid = (es |> List.mapi (fun k _ -> float k * every) |> List.toArray), Values = (es |> List.map (fun e -> e.Value) |> List.toArray),
                     StdErrs = (es |> List.map (fun e -> e.StdErr) |> List.toArray), Count = last.Count, Value = last.Value, StdErr = last.StdErr,
                     NonFinite = (es |> List.map (fun e -> e.NonFinite) |> List.max))
        // the coupled bias of each time's mean, or the extrapolated means
        if es |> List.forall (fun e -> e.BiasPairs > 0L && not e.Extrapolated) then
            series.Biases <- es |> List.map (fun e -> e.Bias) |> List.toArray
            series.BiasStdErrs <- es |> List.map (fun e -> e.BiasStdErr) |> List.toArray
            series.BiasPairs <- last.BiasPairs
        if es |> List.forall (fun e -> e.Extrapolated) then series.Extrapolated <- true
        series,
        (if es |> List.exists (fun e -> e.NonFinite > 0L) then
             [ sprintf "at some times up to %d of %d paths gave a NaN or infinite value of the observable, so those means are not finite" (es |> List.map (fun e -> e.NonFinite) |> List.max) last.Count ]
         else [])
    | _ -> invalidArg "q" "not a derived query, or the wrong number of estimates"
