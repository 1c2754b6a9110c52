/// Reading the numbers a doc page quotes (issue 19: every printed number true): its markdown tables by
/// their header, numbers as written (with the precision their digits carry), and the interval
/// arithmetic that says whether a quoted ratio can be the ratio of two quoted, rounded numbers.
module Sde.Tests.DocsNumbers

open System
open System.IO
open System.Text.RegularExpressions
open Expecto
open Sde.Tests.CliTests

let inv = Globalization.CultureInfo.InvariantCulture

/// A docs/ page's text.
let page (name: string) = File.ReadAllText(Path.Combine(repoRoot, "docs", name))

/// A number as the docs write it: a Unicode minus, thin or plain spaces between digit groups
/// (`15 930 000`), `×10^k` not included.
let num (s: string) =
    Double.Parse(s.Trim().Replace("−", "-").Replace(" ", "").Replace(" ", "").Replace(" ", ""), inv)

/// Half a unit of the last digit written: the rounding error of a quoted number (`0.0087` → 5e-5,
/// `1.06e8` → 5e5, `2 369` → 0.5).
let halfUnit (s: string) =
    let s = s.Trim().Replace("−", "-").Replace(" ", "").Replace(" ", "").Replace(" ", "")
    let mantissa, exponent =
        match s.IndexOfAny [| 'e'; 'E' |] with
        | -1 -> s, 0
        | i -> s.Substring(0, i), int (s.Substring(i + 1))
    let decimals = match mantissa.IndexOf '.' with -1 -> 0 | i -> mantissa.Length - i - 1
    0.5 * Math.Pow(10.0, float (exponent - decimals))

/// Whether a quoted ratio `q` can be a / b for the values that the quoted, rounded `a` and `b` stand
/// for: the interval [a⁻/b⁺, a⁺/b⁻] meets [q − ½ unit, q + ½ unit].
let ratioCanBe (q: string) (a: string) (b: string) =
    let qv, qu = num q, halfUnit q
    let av, au = num a, halfUnit a
    let bv, bu = num b, halfUnit b
    let lo, hi = (av - au) / (bv + bu), (av + au) / (bv - bu)
    hi >= qv - qu && lo <= qv + qu

/// The cells of a table row, trimmed, without the outer bars.
let cells (l: string) = l.Trim().Trim('|').Split('|') |> Array.map (fun c -> c.Trim())

/// The first table in `text` whose header row starts with `headerStart`: its header cells and rows.
/// Tables elsewhere on the page (a section added later) do not matter.
let table (pageName: string) (text: string) (headerStart: string) =
    let lines = text.Split('\n') |> Array.map (fun l -> l.TrimEnd '\r')
    match lines |> Array.tryFindIndex (fun l -> l.StartsWith headerStart) with
    | None -> failtestf "docs/%s: the table whose header starts with %s is gone" pageName headerStart
    | Some i -> cells lines[i], lines[i + 2 ..] |> Array.takeWhile (fun l -> l.StartsWith "|") |> Array.map cells

/// A column's index by its header cell.
let column (pageName: string) (header: string[]) (name: string) =
    match Array.tryFindIndex ((=) name) header with
    | Some i -> i
    | None -> failtestf "docs/%s: a table has no column %s (its header: %A)" pageName name header

/// The groups of the first match of `pattern` in `text`, or a failure that names the page.
let quoted (pageName: string) (text: string) (pattern: string) =
    let m = Regex.Match(text, pattern)
    if not m.Success then failtestf "docs/%s no longer says /%s/" pageName pattern
    m.Groups |> Seq.skip 1 |> Seq.map (fun g -> g.Value) |> Array.ofSeq

/// `v ± se` → (v, se), the strings as written.
let plusMinus (cell: string) =
    let m = Regex.Match(cell, @"([-−]?[0-9.]+(?:e[-+]?[0-9]+)?) ± ([0-9.]+(?:e[-+]?[0-9]+)?)")
    if not m.Success then failtestf "not `value ± se`: %s" cell
    m.Groups[1].Value, m.Groups[2].Value

/// |a − b| within 4.5 combined standard errors.
let within45 (what: string) (a: float) (sa: float) (b: float) (sb: float) =
    let z = abs (a - b) / sqrt (sa * sa + sb * sb)
    Expect.isLessThanOrEqual z 4.5 (sprintf "%s: %g ± %g against %g ± %g (%.1f combined standard errors)" what a sa b sb z)

/// The exact value `exact` and the quoted, rounded `q` agree to the digits written.
let agreesToDigits (what: string) (q: string) (exact: float) =
    Expect.isLessThanOrEqual (abs (num q - exact)) (halfUnit q * 1.0001) (sprintf "%s: quoted %s, exactly %.6g" what q exact)

/// Two quotes of one number (`0.0062` and `0.00619`) agree within their rounding.
let sameNumber (what: string) (a: string) (b: string) =
    Expect.isLessThanOrEqual (abs (num a - num b)) ((halfUnit a + halfUnit b) * 1.0001) (sprintf "%s: %s and %s" what a b)

/// The simulate block's setting `name` in a model file's text.
let setting (text: string) (name: string) =
    let m = Regex.Match(text, @"(?m)^simulate \{[^}\n]*\b" + name + @" = ([^;}\s]+)")
    if not m.Success then failtestf "no %s in the simulate block" name
    num m.Groups[1].Value

/// The standard normal CDF: the Taylor series of erf for |x| < 3 (its largest term is about e^{x²/2},
/// so under 2 digits are lost), the tail's continued fraction φ(x) / (x + 1/(x + 2/(x + ...))) beyond.
let normalCdf (x: float) =
    if abs x < 3.0 then
        let z = x / sqrt 2.0
        let mutable term = z
        let mutable sum = z
        let mutable n = 0
        while abs term > 1e-18 do
            n <- n + 1
            term <- -term * z * z / float n
            sum <- sum + term / float (2 * n + 1)
        0.5 * (1.0 + 2.0 / sqrt Math.PI * sum)
    else
        let a = abs x
        let mutable f = a
        for k in 80 .. -1 .. 1 do
            f <- a + float k / f
        let tail = exp (-a * a / 2.0) / sqrt (2.0 * Math.PI) / f
        if x > 0.0 then 1.0 - tail else tail
