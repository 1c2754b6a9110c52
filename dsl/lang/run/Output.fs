/// Renders a `RunReport` as the JSON of docs/language.md (section 10, "JSON results") and as a plain-text table.
module Sde.Lang.Output

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open Sde.Lang.Report

let private inv = CultureInfo.InvariantCulture

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

/// Shortest round-trip number; NaN and infinities (not valid JSON) become null.
let private writeFloat (w: Utf8JsonWriter) (x: float) =
    if Double.IsFinite x then w.WriteNumberValue x else w.WriteNullValue()

let private writeFloatProp (w: Utf8JsonWriter) (name: string) (x: float) =
    w.WritePropertyName name
    writeFloat w x

let private writeArrayProp (w: Utf8JsonWriter) (name: string) (xs: float[]) =
    w.WriteStartArray name
    xs |> Array.iter (writeFloat w)
    w.WriteEndArray()

/// Params by name, a vector param as an array (`Checked.groupParamValues`).
let writeParamProps (w: Utf8JsonWriter) (all: string list) (names: string list) (values: float[]) =
    for n, v in Checked.groupParamValues all names values do
        match v with
        | Choice1Of2 x -> writeFloatProp w n x
        | Choice2Of2 xs -> writeArrayProp w n xs

let private writeOptionProp (w: Utf8JsonWriter) (name: string) (s: string option) =
    s |> Option.iter (fun v -> w.WriteString(name, v))

/// The columns of a `samples(...)` result: its observables as written (from the query's text), `x`
/// for `samples(x, ...)`: so that a samples file of the states is data a `fit` block reads as it is.
let samplesColumns (q: QueryOutcome) : string list =
    let t = q.Query.Trim()
    let inner = if t.StartsWith "samples" then t.Substring("samples".Length).Trim() else t
    // a trajectory's text ends in `every Δ`: the observables are the first parenthesised group
    let inner =
        if q.Kind = "samples_every" && inner.StartsWith "(" then
            // the ')' that closes the group opened at 0
            let mutable stop = inner.Length - 1
            let mutable d = 0
            let mutable found = false
            for i in 0 .. inner.Length - 1 do
                if not found then
                    match inner[i] with
                    | '(' -> d <- d + 1
                    | ')' ->
                        d <- d - 1
                        if d = 0 then
                            stop <- i
                            found <- true
                    | _ -> ()
            inner.Substring(0, stop + 1)
        else inner
    let n = if q.Count > 0L then q.Values.Length / int q.Count / (if q.Kind = "samples_every" then max 1 q.Grid.Length else 1) else 0

    match Parser.parseExpr ("f" + inner) with
    | Ok { Kind = Syntax.Call(_, args) } when n = 0 || args.Length = n -> args |> List.map Printer.expr
    | _ -> List.init n (fun i -> sprintf "c%d" (i + 1))

/// The file a result of kind `kind` ("samples" or "samples_every") is written to with --out: `KIND.csv`
/// when it is the run's only one of that kind (one parameter set, one such query), else
/// `KIND_SET_INDEX.csv` (INDEX: the query's number in the set from 0, as the plots number theirs; SET with
/// characters other than letters, digits, `-`, `.`, `=` as `_`).
let private resultFile (kind: string) (r: RunReport) (setName: string) (index: int) : string =
    // every set has the same queries: counted in a set that finished, times the sets, so that a set that
    // failed (no results) does not change the other sets' file names
    let perSet = r.Sets |> List.map (fun s -> s.Results |> List.filter (fun q -> q.Kind = kind) |> List.length) |> List.fold max 0
    let count = perSet * r.Sets.Length

    if count = 1 then kind + ".csv"
    else
        let safe = String(setName.ToCharArray() |> Array.map (fun c -> if Char.IsAsciiLetterOrDigit c || c = '-' || c = '.' || c = '=' then c else '_'))
        sprintf "%s_%s_%d.csv" kind safe index

/// The file of a `samples(...)` result: `samples.csv`, or `samples_SET_INDEX.csv` (see resultFile).
let samplesFile r setName index = resultFile "samples" r setName index

/// The file of a `samples(...) every Δ` result: `samples_every.csv`, or `samples_every_SET_INDEX.csv`.
let samplesEveryFile r setName index = resultFile "samples_every" r setName index

let private csvHeaderCell (c: string) = if c.IndexOfAny([| ','; '"' |]) >= 0 then "\"" + c.Replace("\"", "\"\"") + "\"" else c

/// A trajectory result as CSV, written line by line: a header `path,t,` and the columns, one row per path
/// and grid time (paths in order, each in time order; empty cells for non-finite values).
let writeSamplesEveryCsv (w: TextWriter) (q: QueryOutcome) =
    let cols = samplesColumns q
    let k, times = cols.Length, q.Grid.Length
    w.Write(String.Join(",", "path" :: "t" :: (cols |> List.map csvHeaderCell)))
    w.Write('\n')
    let line = StringBuilder()

    if k > 0 then
        for p in 0 .. int q.Count - 1 do
            for i in 0 .. times - 1 do
                line.Clear().Append(p).Append(',').Append(q.Grid[i].ToString("R", inv)) |> ignore

                for c in 0 .. k - 1 do
                    line.Append(',') |> ignore
                    let v = q.Values[(p * times + i) * k + c]
                    if Double.IsFinite v then line.Append(v.ToString("R", inv)) |> ignore

                line.Append('\n') |> ignore
                w.Write(line)

/// A samples result as CSV, written row by row (a run may hold 10^8 values: as one string they would pass
/// .NET's 2^30-character limit): a header of the columns, one row per path (empty cells for non-finite values).
let writeSamplesCsv (w: TextWriter) (q: QueryOutcome) =
    let cols = samplesColumns q
    let k = cols.Length
    w.Write(String.Join(",", cols |> List.map csvHeaderCell))
    w.Write('\n')
    let line = StringBuilder()

    if k > 0 then
        for r in 0 .. int q.Count - 1 do
            line.Clear() |> ignore

            for c in 0 .. k - 1 do
                if c > 0 then line.Append(',') |> ignore
                let v = q.Values[r * k + c]
                if Double.IsFinite v then line.Append(v.ToString("R", inv)) |> ignore

            line.Append('\n') |> ignore
            w.Write(line)

/// A samples result as CSV text (small results; files are written by writeSamplesCsv).
let samplesCsv (q: QueryOutcome) : string =
    use w = new StringWriter()
    writeSamplesCsv w q
    w.ToString()

/// Writes every samples result of the run into `dir`; returns the paths written.
let writeSamples (dir: string) (r: RunReport) : string list =
    [ for set in r.Sets do
          for i, q in List.indexed set.Results do
              if q.Kind = "samples" then
                  let path = Path.Combine(dir, samplesFile r set.Name i)
                  use f = new StreamWriter(path, false, UTF8Encoding(false), 1 <<< 16)
                  writeSamplesCsv f q
                  yield path
              elif q.Kind = "samples_every" then
                  let path = Path.Combine(dir, samplesEveryFile r set.Name i)
                  use f = new StreamWriter(path, false, UTF8Encoding(false), 1 <<< 16)
                  writeSamplesEveryCsv f q
                  yield path ]

let private writeOutcome (w: Utf8JsonWriter) (file: string) (q: QueryOutcome) =
    w.WriteStartObject()
    w.WriteString("query", q.Query)
    w.WriteString("kind", q.Kind)
    writeOptionProp w "wrt" q.Wrt
    writeOptionProp w "method" q.Method
    q.Rate |> Option.iter (writeFloatProp w "rate")
    writeOptionProp w "rate_source" q.RateSource
    q.CovectorGrowth |> Option.iter (writeFloatProp w "covector_growth")
    writeOptionProp w "control" q.Control
    q.ControlCoefficient |> Option.iter (writeFloatProp w "control_coefficient")

    if q.Kind = "samples" then
        // the values are in the file (with --out), not in the JSON
        w.WriteString("file", file)
        w.WriteStartArray "columns"
        samplesColumns q |> List.iter (fun (c: string) -> w.WriteStringValue c)
        w.WriteEndArray()
        w.WriteNumber("rows", q.Count)
    elif q.Kind = "samples_every" then
        // the values are in the file (with --out): a row per path and time; "grid" the times
        w.WriteString("file", file)
        w.WriteStartArray "columns"
        "path" :: "t" :: samplesColumns q |> List.iter (fun (c: string) -> w.WriteStringValue c)
        w.WriteEndArray()
        w.WriteNumber("rows", q.Count * int64 q.Grid.Length)
        w.WriteNumber("paths", q.Count)
        w.WriteNumber("times", q.Grid.Length)
        if q.Grid.Length > 1 then writeFloatProp w "every" q.Grid[1]
    elif q.Kind = "lyapunov" then
        writeArrayProp w "grid" q.Grid
        writeArrayProp w "values" q.Values
        writeArrayProp w "stderrs" q.StdErrs

        if Double.IsFinite q.Value then
            // with k = dimension: the time average of log|det J_n| / Δt on the same paths (= the exponents' sum)
            writeFloatProp w "log_det_rate" q.Value
            writeFloatProp w "log_det_stderr" q.StdErr
    elif q.Kind = "mean_series" then
        // the mean at each time of the grid (t = 0, Δ, ..., up to T)
        writeArrayProp w "grid" q.Grid
        writeArrayProp w "values" q.Values
        writeArrayProp w "stderrs" q.StdErrs
    elif q.Kind = "density2d" then
        // values row-major: one row per y bin (grid_y), each over the x bins (grid_x)
        writeArrayProp w "grid_x" q.Grid
        writeArrayProp w "grid_y" q.GridY
        writeArrayProp w "values" q.Values
        writeArrayProp w "stderrs" q.StdErrs
        w.WriteNumber("outside", q.Below)
    elif isBinned q then
        writeArrayProp w "grid" q.Grid
        writeArrayProp w "values" q.Values
        writeArrayProp w "stderrs" q.StdErrs
        writeArrayProp w "range" [| q.Lo; q.Hi |]

        if q.Kind = "density" then
            // negative: not counted (a multilevel density's bins are level corrections, not counts)
            if q.Below >= 0L then w.WriteNumber("below", q.Below) else w.WriteNull "below"
            if q.Above >= 0L then w.WriteNumber("above", q.Above) else w.WriteNull "above"
    else
        writeFloatProp w "value" q.Value
        writeFloatProp w "stderr" q.StdErr

    // the discretisation error (docs/discretisation.md): the estimated distance from dt → 0, or null and why
    if q.Extrapolated then w.WriteBoolean("extrapolated", true)

    match q.Bias with
    | None -> ()
    | Some b ->
        match b.Reason with
        | Some r ->
            w.WriteNull "bias"
            w.WriteString("bias_reason", r)
        | None ->
            if b.Values.Length > 0 || isBinned q || q.Kind = "mean_series" then
                writeArrayProp w "bias" b.Values
                writeArrayProp w "bias_stderr" b.StdErrs
            else
                writeFloatProp w "bias" b.Value
                writeFloatProp w "bias_stderr" b.StdErr
            w.WriteString("bias_method", b.Method)
            w.WriteNumber("bias_samples", b.Samples)

    w.WriteNumber("count", q.Count)
    if q.Weighted then w.WriteBoolean("weighted", true)
    q.Resamplings |> Option.iter (fun r -> w.WriteNumber("resamplings", r))
    q.WeightKurtosis |> Option.iter (writeFloatProp w "weight_kurtosis")
    q.WeightMaxShare |> Option.iter (writeFloatProp w "weight_max_share")

    if not q.Warnings.IsEmpty then
        w.WriteStartArray("warnings")
        q.Warnings |> List.iter (fun s -> w.WriteStringValue s)
        w.WriteEndArray()

    if q.NonFinite > 0L then
        // paths (mean, response) or samples (density) where the observable was NaN or ±∞; see "warnings"
        w.WriteNumber("non_finite", q.NonFinite)

    if not q.Windows.IsEmpty then
        // which window the top-level value is (the largest), then every window as written
        q.ValueWindow |> Option.iter (writeFloatProp w "value_window")
        w.WriteStartArray("windows")

        for win in q.Windows do
            w.WriteStartObject()
            writeFloatProp w "window" win.Window

            if isBinned q then
                writeArrayProp w "values" win.Values
                writeArrayProp w "stderrs" win.StdErrs
            else
                writeFloatProp w "value" win.Value
                writeFloatProp w "stderr" win.StdErr

            w.WriteEndObject()

        w.WriteEndArray()

    w.WriteEndObject()

let private writeSet (r: RunReport) (w: Utf8JsonWriter) (s: SetReport) =
    w.WriteStartObject()
    w.WriteString("name", s.Name)
    w.WriteStartObject "params"
    writeParamProps w (List.map fst s.Params) (List.map fst s.Params) (s.Params |> List.map snd |> List.toArray)
    w.WriteEndObject()
    // a set that failed: why, and no results (the other sets' results stand)
    s.Failure |> Option.iter (fun m -> w.WriteString("error", m))
    w.WriteStartArray "results"
    s.Results |> List.iteri (fun i q -> writeOutcome w (if q.Kind = "samples" then samplesFile r s.Name i elif q.Kind = "samples_every" then samplesEveryFile r s.Name i else "") q)
    w.WriteEndArray()
    w.WriteEndObject()

let private writeSettings (w: Utf8JsonWriter) (s: SettingsReport) =
    w.WriteStartObject "settings"
    w.WriteNumber("paths", s.Paths)
    writeFloatProp w "dt" s.Dt
    writeFloatProp w "T" s.T
    w.WriteNumber("seed", s.Seed)
    w.WriteString("scheme", s.Scheme)
    w.WriteString("backend", s.Backend)
    w.WriteEndObject()

/// The run as indented JSON in the shape of docs/language.md, section 10 ("JSON results"). Binned results also
/// carry `range` ([lo, hi]); densities carry `below`/`above` (samples outside the range); every
/// result carries `count` (samples behind it). Non-finite numbers are written as null.
let toJson (r: RunReport) : string =
    use stream = new MemoryStream()

    (use w =
        new Utf8JsonWriter(
            stream,
            JsonWriterOptions(Indented = true, Encoder = Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping)
        )

     w.WriteStartObject()
     w.WriteString("model", r.Model)
     w.WriteString("source", r.Source)
     writeSettings w r.Settings
     w.WriteStartArray "sets"
     r.Sets |> List.iter (writeSet r w)
     w.WriteEndArray()

     if not r.Warnings.IsEmpty then
         w.WriteStartArray "warnings"
         r.Warnings |> List.iter (fun (m: string) -> w.WriteStringValue m)
         w.WriteEndArray()
     w.WriteStartObject "timing"
     writeFloatProp w "seconds" r.Seconds
     writeFloatProp w "path_steps_per_second" r.PathStepsPerSecond
     w.WriteEndObject()
     w.WriteEndObject()
     w.Flush())

    Encoding.UTF8.GetString(stream.ToArray())

// ---------------------------------------------------------------------------------------------
// Number formatting
// ---------------------------------------------------------------------------------------------

/// A compact general number: up to 4 significant digits, invariant culture.
let num (x: float) : string =
    if Double.IsNaN x then "nan"
    elif Double.IsPositiveInfinity x then "inf"
    elif Double.IsNegativeInfinity x then "-inf"
    else x.ToString("G4", inv).Replace("E", "e")

/// An effective sample size, a count of paths: whole when it is large (18620, not 1.862e+04), with
/// its fraction only below 10 paths, where it tells 1.5 from 2.
let essCount (x: float) : string =
    if Double.IsFinite x && abs x >= 10.0 then Math.Round(x, MidpointRounding.AwayFromZero).ToString("F0", inv) else num x

/// Decimal places that give two significant digits of a positive, finite stderr (may be negative:
/// rounding to tens, hundreds, ...).
let private decimalsFor (stderr: float) = 1 - int (floor (log10 stderr))

let private fixedAt (decimals: int) (x: float) =
    if decimals >= 0 then
        Math.Round(x, min decimals 15, MidpointRounding.AwayFromZero).ToString("F" + string decimals, inv)
    else
        let unit = Math.Pow(10.0, float -decimals)
        (Math.Round(x / unit, MidpointRounding.AwayFromZero) * unit).ToString("F0", inv)

/// `value ± stderr` with two significant digits of the stderr and the value rounded to the same
/// decimal place; very large or small magnitudes share a power of ten: `(1.234 ± 0.012)e-09`.
/// A standard error that could not be computed (NaN: one path) shows as `n/a`.
let valueWithError (value: float) (stderr: float) : string =
    if Double.IsNaN stderr then
        sprintf "%s ± n/a" (num value)
    elif not (Double.IsFinite value) || not (Double.IsFinite stderr) || stderr <= 0.0 then
        sprintf "%s ± %s" (num value) (num stderr)
    elif stderr < 1e-14 * abs value then
        // an error below double precision's rounding of the value (a model without noise): the value
        // to the 15 digits a double holds, not 18 digits of which the last are rounding noise
        sprintf "%s ± %s" (value.ToString("G15", inv).Replace("E", "e")) (num stderr)
    else
        let d = decimalsFor stderr

        // the power of ten of the larger of the two, after rounding: 0.99999999995 ± 1.1e-9 rounds to
        // 1.0000000000, whose power is 0, not the -1 of the unrounded value (that printed `(10.0… ± …)e-01`)
        let e0 = int (floor (log10 (max (abs value) stderr)))
        let scaled e = Math.Round(abs value / Math.Pow(10.0, float e), min (max (decimalsFor (stderr / Math.Pow(10.0, float e))) 0) 15, MidpointRounding.AwayFromZero)
        let e = if scaled e0 >= 10.0 then e0 + 1 else e0

        // plain digits when they are few enough to read: a stderr's two digits within 6 places of the
        // point, or a value of moderate size (1.0000000000 ± 0.0000000011 reads better than a power of ten)
        if (d <= 6 && d >= -6) || (e >= -3 && e <= 5 && d <= 15) then
            sprintf "%s ± %s" (fixedAt d value) (fixedAt d stderr)
        else
            let scale = Math.Pow(10.0, float e)
            let d' = decimalsFor (stderr / scale)
            sprintf "(%s ± %s)e%+03d" (fixedAt d' (value / scale)) (fixedAt d' (stderr / scale)) e

// ---------------------------------------------------------------------------------------------
// Sparklines
// ---------------------------------------------------------------------------------------------

let private blocks = [| '▁'; '▂'; '▃'; '▄'; '▅'; '▆'; '▇'; '█' |]

/// Top-aligned blocks for the negative row of a signed sparkline (coarser: 1/8, 1/2, full).
let private topBlocks = [| '▔'; '▀'; '█' |]

let private finiteMax (xs: float[]) =
    xs |> Array.filter Double.IsFinite |> Array.fold max 0.0

/// Index into a scale of `levels` steps for 0 < v <= top.
let private level (levels: int) (top: float) (v: float) =
    int (ceil (v / top * float levels)) - 1 |> max 0 |> min (levels - 1)

/// One character per bin for non-negative values: ' ' for zero, ▁..█ scaled to the maximum,
/// '·' for a non-finite value.
let sparkline (values: float[]) : string =
    let top = finiteMax values

    values
    |> Array.map (fun v ->
        if not (Double.IsFinite v) then '·'
        elif v <= 0.0 || top <= 0.0 then ' '
        else blocks[level blocks.Length top v])
    |> String

/// Two rows of one character per bin for signed values, around an imagined zero line between
/// them: positives rise from the bottom of the upper row (▁..█), negatives hang from the top of
/// the lower row (▔ ▀ █); both scaled to the largest magnitude.
let sparklineSigned (values: float[]) : string * string =
    let top = values |> Array.map abs |> finiteMax

    let upper v =
        if not (Double.IsFinite v) then '·'
        elif v <= 0.0 || top <= 0.0 then ' '
        else blocks[level blocks.Length top v]

    let lower v =
        if not (Double.IsFinite v) || v >= 0.0 || top <= 0.0 then ' '
        else topBlocks[level topBlocks.Length top -v]

    String(Array.map upper values), String(Array.map lower values)

// ---------------------------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------------------------

/// Whether to colour the table: standard output is a terminal and NO_COLOR is unset.
let useColor () : bool =
    not Console.IsOutputRedirected
    && String.IsNullOrEmpty(Environment.GetEnvironmentVariable "NO_COLOR")

let private paint (color: bool) (code: string) (s: string) =
    if color && s <> "" then sprintf "\u001b[%sm%s\u001b[0m" code s else s

let private argMaxBy (f: float -> float) (xs: float[]) =
    xs
    |> Array.mapi (fun i v -> i, f v)
    |> Array.filter (snd >> Double.IsFinite)
    |> Array.fold (fun (bi, bv) (i, v) -> if bi < 0 || v > bv then (i, v) else (bi, bv)) (-1, nan)
    |> fst

let private at (xs: float[]) i =
    if i >= 0 && i < xs.Length then xs[i] else nan

let private maxStdErr (q: QueryOutcome) = finiteMax q.StdErrs

/// The one-line summary of a binned result.
let summary (q: QueryOutcome) : string =
    let range = sprintf "on [%s, %s], %d bins" (num q.Lo) (num q.Hi) q.Values.Length
    // standard errors that could not be computed (one path) are n/a, not a maximum of 0
    let err =
        if q.StdErrs |> Array.exists Double.IsFinite then sprintf "max stderr %s" (num (maxStdErr q))
        else "max stderr n/a"

    if q.Kind = "density" then
        let i = argMaxBy id q.Values
        let outside = q.Below + q.Above

        // the mass outside the range, from the estimate itself (also right for time-averaged densities,
        // whose counts are path-steps)
        let width = if q.Values.Length > 0 then (q.Hi - q.Lo) / float q.Values.Length else 0.0
        let inside = q.Values |> Array.sumBy (fun v -> if Double.IsFinite v then v * width else 0.0)

        let share =
            if q.Count > 0L && Double.IsFinite width then
                // below 1e-9 the difference from 1 is rounding in the sum, not mass
                let outsideShare = 1.0 - inside
                sprintf " (%s%%)" (num (if outsideShare < 1e-9 then 0.0 else 100.0 * outsideShare))
            else
                ""

        let counts = if q.Below >= 0L && q.Above >= 0L then sprintf "%d below, %d above" q.Below q.Above else "not counted"

        sprintf
            "%s · peak %s at %s · outside: %s%s%s · %s"
            range
            (num (at q.Values i))
            (num (at q.Grid i))
            counts
            (if q.NonFinite > 0L then sprintf ", %d NaN" q.NonFinite else "")
            share
            err
    else
        let iMax = argMaxBy id q.Values
        let iMin = argMaxBy (fun v -> -v) q.Values

        sprintf
            "%s · max %s at %s · min %s at %s · %s"
            range
            (num (at q.Values iMax))
            (num (at q.Grid iMax))
            (num (at q.Values iMin))
            (num (at q.Grid iMin))
            err

/// The width the wrapped tables (Lyapunov spectra) keep within.
let tableColumns = 100

/// Cells in rows, each cell padded to the widest, as many to a row as fit in `columns` characters after
/// `indent` (at least one).
let wrapCells (indent: string) (columns: int) (cells: string list) : string list =
    let cellWidth = cells |> List.fold (fun w c -> max w c.Length) 0
    let gap = 4
    let perRow = max 1 ((columns - indent.Length + gap) / (cellWidth + gap))

    cells
    |> List.map (fun c -> c.PadRight cellWidth)
    |> List.chunkBySize perRow
    |> List.map (fun row -> indent + (String.concat (String(' ', gap)) row).TrimEnd())

/// The bias next to a scalar's `value ± se`, when it is larger than the standard error (and than its own);
/// `(richardson)` after an extrapolated value.
let private biasSuffix (color: bool) (q: QueryOutcome) : string =
    let b =
        match q.Bias with
        | Some b when b.Reason.IsNone && Bias.shows q.Value b.Value b.StdErr q.StdErr ->
            "  " + paint color "33" (sprintf "(bias %s)" (valueWithError b.Value b.StdErr))
        | _ -> ""
    b + (if q.Extrapolated then "  " + paint color "2" "(richardson)" else "")

/// A binned result's bias line: the largest bias that shows (larger than its bin's standard error and its own).
let private biasBinsLine (color: bool) (indent: string) (q: QueryOutcome) : string list =
    match q.Bias with
    | Some b when b.Reason.IsNone && b.Values.Length > 0 ->
        let at (xs: float[]) i = if i < xs.Length then xs[i] else nan
        let shown = [ for i in 0 .. b.Values.Length - 1 do if Bias.shows (at q.Values i) b.Values[i] (at b.StdErrs i) (at q.StdErrs i) then yield i ]
        match shown with
        | [] -> []
        | _ ->
            let i = shown |> List.maxBy (fun i -> abs b.Values[i])
            [ indent + paint color "33" (sprintf "bias larger than the standard error in %d of %d bins; the most %s at %s" shown.Length b.Values.Length (valueWithError b.Values[i] (at b.StdErrs i)) (num (at q.Grid i))) ]
    | _ -> []

/// The lines of one result of its kind (without windows or warnings).
let private kindLines (color: bool) (label: string) (indent: string) (via: string) (q: QueryOutcome) : string list =
    match q.Kind with
    | "lyapunov" ->
        let k = min q.Values.Length q.StdErrs.Length

        // λi = value ± stderr, several to a row (a spectrum of 40 is 8 rows, not one line of 1,100 characters)
        let name c = (sprintf "λ%d" (c + 1)).PadRight((sprintf "λ%d" k).Length)

        let cells =
            List.init k (fun c -> sprintf "%s = %s" (name c) (valueWithError q.Values[c] q.StdErrs[c]))

        let rows = wrapCells indent tableColumns cells |> List.map (fun r -> paint color "1" r)

        let sumLine =
            if Double.IsFinite q.Value then
                [ indent + paint color "2" (sprintf "sum %s · time average of log|det J|/Δt %s" (num (Array.sum q.Values)) (valueWithError q.Value q.StdErr)) ]
            else []

        (label + paint color "2" (sprintf "%d exponent%s (per unit time, ± stderr)" k (if k = 1 then "" else "s")) + via)
        :: rows
        @ sumLine
    | "mean_series" ->
        let n = min q.Values.Length q.StdErrs.Length
        let width = q.Grid |> Array.fold (fun w t -> max w (num t).Length) 0

        let cells =
            List.init n (fun k -> sprintf "t = %s  %s" ((num q.Grid[k]).PadRight width) (valueWithError q.Values[k] q.StdErrs[k]))

        (label + paint color "2" (sprintf "%d times (mean ± stderr)" n) + (if q.Extrapolated then "  " + paint color "2" "(richardson)" else "") + via)
        :: (wrapCells indent tableColumns cells |> List.map (fun r -> paint color "1" r))
    | "alignment" ->
        [ label + paint color "36" (sparkline q.Values) + via
          indent + paint color "2" (sprintf "|cos(top Lyapunov vector, score)| %s" (summary q)) ]
    | "density" ->
        [ label + paint color "36" (sparkline q.Values) + (if q.Extrapolated then "  " + paint color "2" "(richardson)" else "")
          indent + paint color "2" (summary q) ]
        @ biasBinsLine color indent q
    | "density_response" ->
        let up, down = sparklineSigned q.Values

        [ label + paint color "32" up + via
          indent + paint color "31" down
          indent + paint color "2" (summary q) ]
    | "density2d" ->
        let nx = q.Grid.Length
        let i = argMaxBy id q.Values
        let err = if q.StdErrs |> Array.exists Double.IsFinite then num (maxStdErr q) else "n/a"

        [ label
          + paint color "2" (sprintf "%d x %d bins · peak %s at (%s, %s) · outside: %d%s · max stderr %s" nx q.GridY.Length (num (at q.Values i))
                                 (num (at q.Grid (if nx > 0 then i % nx else -1))) (num (at q.GridY (if nx > 0 then i / nx else -1)))
                                 q.Below (if q.NonFinite > 0L then sprintf ", %d NaN" q.NonFinite else "") err) ]
    | "score" ->
        let up, down = sparklineSigned q.Values

        [ label + paint color "32" up + via
          indent + paint color "31" down
          indent + paint color "2" ("∂ log ρ_T / ∂x per bin " + summary q) ]
    | "samples" ->
        let k = samplesColumns q |> List.length
        [ label + paint color "2" (sprintf "%d rows x %d column%s of per-path values at T (a CSV file with --out)" q.Count k (if k = 1 then "" else "s")) ]
    | "ess" ->
        // a diagnostic of the final weights, computed exactly from them: no standard error to show
        let resamplings = q.Resamplings |> Option.map (fun r -> sprintf " · %d resampling%s" r (if r = 1L then "" else "s")) |> Option.defaultValue ""
        [ label + paint color "1" (essCount q.Value) + paint color "2" (sprintf " of %d paths%s" q.Count resamplings) ]
    | "samples_every" ->
        let k = samplesColumns q |> List.length
        [ label + paint color "2" (sprintf "%d paths x %d times x %d column%s: trajectories (a CSV file with --out)" q.Count q.Grid.Length k (if k = 1 then "" else "s")) ]
    | _ -> [ label + paint color "1" (valueWithError q.Value q.StdErr) + biasSuffix color q + via ]


/// The lines of one result, query column padded to `width`.
let private resultLines (color: bool) (width: int) (q: QueryOutcome) : string list =
    let label = "  " + q.Query.PadRight width + "  "
    let indent = String(' ', label.Length)

    // the method in brackets, unless the query already ends with exactly that `with METHOD` (said once)
    let via =
        q.Method
        |> Option.filter (fun m -> not (q.Query.EndsWith(" with " + m, StringComparison.Ordinal)))
        |> Option.map (fun m -> "  " + paint color "2" ("[" + m + "]"))
        |> Option.defaultValue ""

    let chosen = q.ValueWindow |> Option.map num |> Option.defaultValue "?"

    // several stationary windows: the reported (top-level) value, then one line (scalar) or one block
    // (density) per window as written
    let windowLines =
        q.Windows
        |> List.collect (fun win ->
            let name = sprintf "window %s" (num win.Window)

            if isBinned q then
                let up, down = sparklineSigned win.Values
                [ indent + "  " + name
                  indent + "    " + paint color "32" up
                  indent + "    " + paint color "31" down
                  indent + "    " + paint color "2" (summary { q with Values = win.Values; StdErrs = win.StdErrs }) ]
            else
                [ indent + "  " + sprintf "%s: %s" name (valueWithError win.Value win.StdErr) ])

    let main =
        if q.Windows.IsEmpty then kindLines color label indent via q
        elif isBinned q then
            (label + paint color "2" (sprintf "%d windows; the reported values are window %s's (the largest)" q.Windows.Length chosen) + via)
            :: windowLines
        else
            (label + paint color "1" (valueWithError q.Value q.StdErr) + paint color "2" (sprintf "  (window %s, the largest)" chosen) + via)
            :: windowLines

    // the warnings must not go unnoticed: under the result, in yellow
    main @ (q.Warnings |> List.map (fun m -> indent + paint color "33" ("warning: " + m)))

/// One result as the table shows it, without colours: the query, its value(s) and any warnings, for
/// every kind (the embedding API's `Text`).
let resultText (q: QueryOutcome) : string =
    resultLines false q.Query.Length q |> List.map (fun l -> l.Substring(min 2 l.Length)) |> String.concat "\n"

let private setHeader (color: bool) (s: SetReport) =
    let ps =
        s.Params |> List.map (fun (n, v) -> sprintf "%s = %s" n (num v)) |> String.concat ", "

    paint color "1" ("set " + s.Name) + (if ps = "" then "" else ": " + ps)

// ---------------------------------------------------------------------------------------------
// Sweeps
// ---------------------------------------------------------------------------------------------

/// A sweep of the run: the swept parameter, its values and their sets, in the order run.
type Sweep =
    { Param: string
      Values: float[]
      Sets: SetReport list }

/// The parameter and value of a set of a sweep (named `p=v`, see Checker.checkSets), from its parameters.
let private sweptValue (s: SetReport) : (string * float) option =
    match s.Name.IndexOf '=' with
    | i when i > 0 ->
        let p = s.Name.Substring(0, i)
        s.Params |> List.tryFind (fun (n, _) -> n = p)
    | _ -> None

/// The run's sweeps: sets named `p=v` grouped by `p`, two sets or more (one set is no sweep).
let sweeps (r: RunReport) : Sweep list =
    r.Sets
    // a failed set has no results to compare
    |> List.filter (fun s -> s.Failure.IsNone)
    |> List.choose (fun s -> sweptValue s |> Option.map (fun (p, v) -> p, v, s))
    |> List.groupBy (fun (p, _, _) -> p)
    |> List.filter (fun (_, xs) -> xs.Length >= 2)
    |> List.map (fun (p, xs) ->
        { Param = p
          Values = xs |> List.map (fun (_, v, _) -> v) |> Array.ofList
          Sets = xs |> List.map (fun (_, _, s) -> s) })

/// A scalar result (mean, response): one value and its standard error.
let isScalar (q: QueryOutcome) =
    not (isBinned q) && q.Kind <> "lyapunov" && q.Kind <> "mean_series" && q.Kind <> "density2d" && q.Kind <> "samples" && q.Kind <> "samples_every"

/// The scalar queries of a sweep, by position, each with its result in every set (in the sweep's order).
let sweepColumns (sw: Sweep) : (int * QueryOutcome list) list =
    match sw.Sets with
    | [] -> []
    | first :: _ ->
        first.Results
        |> List.mapi (fun i q -> i, q)
        |> List.filter (fun (_, q) -> isScalar q)
        |> List.choose (fun (i, _) ->
            let column = sw.Sets |> List.choose (fun s -> List.tryItem i s.Results)
            if column.Length = sw.Sets.Length && List.forall isScalar column then Some(i, column) else None)

/// The summary of a sweep: per scalar query, its value ± stderr in every set.
let private sweepLines (color: bool) (sw: Sweep) : string list =
    let names = sw.Values |> Array.map (fun v -> sprintf "%s = %s" sw.Param (num v))
    let width = names |> Array.fold (fun w n -> max w n.Length) 0

    let block (_, column: QueryOutcome list) =
        ("  " + paint color "1" (List.head column).Query)
        :: (column |> List.mapi (fun k q -> "    " + names[k].PadRight width + "   " + valueWithError q.Value q.StdErr))

    match sweepColumns sw with
    | [] -> []
    | columns ->
        ""
        :: paint color "1" (sprintf "sweep over %s (%d sets): value ± stderr per set" sw.Param sw.Sets.Length)
        :: List.collect block columns

/// The timing line: wall time and path-steps per second; a run without queries simulated no paths,
/// and a run whose every set failed finished none, so neither claims a throughput.
let timingLine (r: RunReport) : string =
    if r.Sets |> List.forall (fun s -> s.Results.IsEmpty) then
        // every set failed (a blow-up, an interrupt): its error says why; no throughput to claim
        if r.Sets |> List.exists (fun s -> s.Failure.IsSome) then
            sprintf "time %s s · no set finished" (r.Seconds.ToString("F2", inv))
        else
            sprintf "time %s s · no queries, so no paths were simulated" (r.Seconds.ToString("F2", inv))
    else
        sprintf "time %s s · %s path-steps/s" (r.Seconds.ToString("F2", inv)) (r.PathStepsPerSecond.ToString("0.00e+0", inv))

/// The readable table, optionally with ANSI colours (see `useColor`).
let tableWith (color: bool) (r: RunReport) : string =
    let width =
        r.Sets
        |> List.collect (fun s -> s.Results |> List.map (fun q -> q.Query.Length))
        |> List.fold max 0

    let head =
        sprintf
            "%s (%s) · %d paths, dt = %s, T = %s, %s, %s, seed %d"
            r.Model
            r.Source
            r.Settings.Paths
            (num r.Settings.Dt)
            (num r.Settings.T)
            r.Settings.Scheme
            r.Settings.Backend
            r.Settings.Seed

    let body =
        r.Sets
        |> List.collect (fun s ->
            let failed = s.Failure |> Option.map (fun m -> "  " + paint color "31" ("error: " + m)) |> Option.toList
            "" :: setHeader color s :: failed @ List.collect (resultLines color width) s.Results)

    let sweepBody = sweeps r |> List.collect (sweepLines color)

    // the compiler's warnings about the file, under the head (also on standard error)
    (head :: r.Warnings) @ body @ sweepBody @ [ ""; timingLine r ]
    |> String.concat "\n"
    |> fun s -> s + "\n"

/// The readable plain-text table (no colours).
let table (r: RunReport) : string = tableWith false r

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// The CSV header: one row per estimate.
let csvHeader = "set,query,kind,wrt,method,index,x,value,stderr"

/// A field quoted as RFC 4180 asks: in double quotes (doubled inside) when it holds a comma, a quote or a line break.
let csvField (s: string) : string =
    if s.IndexOfAny([| ','; '"'; '\n'; '\r' |]) >= 0 then "\"" + s.Replace("\"", "\"\"") + "\"" else s

/// A number as the shortest text that reads back to it; empty when NaN or infinite.
let private csvNumber (x: float) =
    if Double.IsFinite x then x.ToString("R", inv) else ""

/// The rows of one result: a scalar's one row; a binned result's row per bin (index from 0, x the bin
/// centre); a spectrum's row per exponent (index from 1) and, with k = dimension, the time average of
/// log|det J|/Δt in a row without index.
let private csvRows (set: string) (q: QueryOutcome) : string list =
    let row (index: string) (x: string) (value: float) (stderr: float) =
        [ set; q.Query; q.Kind; defaultArg q.Wrt ""; defaultArg q.Method ""; index; x; csvNumber value; csvNumber stderr ]
        |> List.map csvField
        |> String.concat ","

    let at (xs: float[]) i = if i < xs.Length then xs[i] else nan

    if q.Kind = "mean_series" then
        List.init q.Values.Length (fun i -> row (string i) (csvNumber (at q.Grid i)) q.Values[i] (at q.StdErrs i))
    elif q.Kind = "samples" || q.Kind = "samples_every" then
        [] // not an estimate: the values are in the samples file
    elif q.Kind = "lyapunov" then
        List.init q.Values.Length (fun i -> row (string (i + 1)) "" q.Values[i] (at q.StdErrs i))
        @ (if Double.IsFinite q.Value then [ row "" "" q.Value q.StdErr ] else [])
    elif isBinned q then
        List.init q.Values.Length (fun i -> row (string i) (csvNumber (at q.Grid i)) q.Values[i] (at q.StdErrs i))
    else
        [ row "" "" q.Value q.StdErr ]

/// The run as CSV (header, then one row per estimate, lines ended by \n).
let toCsv (r: RunReport) : string =
    let rows = r.Sets |> List.collect (fun s -> s.Results |> List.collect (csvRows s.Name))
    (csvHeader :: rows |> String.concat "\n") + "\n"
