/// SVG plots of binned results and generic x–y series, drawn with OxyPlot's managed SvgExporter.
module Sde.Lang.Plot

open System
open System.IO
open System.Text
open OxyPlot
open OxyPlot.Axes
open OxyPlot.Annotations
open OxyPlot.Legends
open OxyPlot.Series
open Sde.Lang.Report

let private width, height = 800.0, 500.0

/// A colour-blind friendly palette (Okabe–Ito).
let private palette =
    [| OxyColor.FromRgb(0uy, 114uy, 178uy)
       OxyColor.FromRgb(213uy, 94uy, 0uy)
       OxyColor.FromRgb(0uy, 158uy, 115uy)
       OxyColor.FromRgb(204uy, 121uy, 167uy)
       OxyColor.FromRgb(230uy, 159uy, 0uy)
       OxyColor.FromRgb(86uy, 180uy, 233uy)
       OxyColor.FromRgb(0uy, 0uy, 0uy) |]

let private colorAt i = palette[i % palette.Length]

/// The argument of the query's first call, e.g. `x[0]` in `d density(x[0]) / d F on [0, 1]`;
/// the whole query when there is none.
let observable (query: string) : string =
    let start = query.IndexOf '('

    let rec close i depth =
        if i >= query.Length then None
        else
            match query[i] with
            | '(' -> close (i + 1) (depth + 1)
            | ')' when depth = 1 -> Some i
            | ')' -> close (i + 1) (depth - 1)
            | _ -> close (i + 1) depth

    if start < 0 then query
    else
        match close start 0 with
        | Some e when e > start + 1 -> query.Substring(start + 1, e - start - 1).Trim()
        | _ -> query

/// Keeps [A-Za-z0-9_.-], drops brackets, turns other runs of characters into one '_'.
let private safe (s: string) =
    let keep c = Char.IsAsciiLetterOrDigit c || c = '_' || c = '.' || c = '-'
    let dropped c = "[]()'\"".Contains(c: char)

    let text =
        s
        |> Seq.filter (dropped >> not)
        |> Seq.map (fun c -> if keep c then c else '_')
        |> Seq.toArray
        |> String

    let collapsed =
        text.Split('_', StringSplitOptions.RemoveEmptyEntries) |> String.concat "_"

    let short = if collapsed.Length > 60 then collapsed.Substring(0, 60) else collapsed
    short.Trim('.', '_', '-')

/// A safe file name for a plot of a query: `SET_qINDEX_KIND_OBSERVABLE[_WRT].svg`, only
/// characters [A-Za-z0-9_.-], e.g. `default_q2_density_x0.svg`.
let fileName (setName: string) (queryIndex: int) (q: QueryOutcome) : string =
    let set =
        match safe setName with
        | "" -> "set"
        | s -> s

    let parts =
        [ set
          sprintf "q%d" queryIndex
          safe q.Kind
          safe (observable q.Query)
          q.Wrt |> Option.map safe |> Option.defaultValue "" ]
        |> List.filter ((<>) "")

    String.concat "_" parts + ".svg"

/// OxyPlot measures text with Helvetica metrics (and for a list of families, narrower still), but
/// viewers often fall back to wider fonts (DejaVu Sans): the legend box clipped its last item, lines of
/// a subtitle overlapped each other and the title, and the last line ran into the frame. This measurer
/// takes DejaVu Sans's widths (wider than Helvetica's and Arial's, so the text fits in either) and a
/// line height of 1.45 font sizes.
type private WideTextMeasurer() =
    inherit PdfRenderContext(width, height, OxyColors.White)

    /// Advance widths in em, close to DejaVu Sans's.
    static member Em(c: char) =
        if c = ' ' then 0.32
        elif Char.IsDigit c then 0.64
        elif c = 'i' || c = 'l' || c = 'j' || c = '|' || c = '\'' || c = '.' || c = ',' || c = ':' || c = ';' || c = '!' then 0.30
        elif c = '(' || c = ')' || c = '[' || c = ']' || c = '{' || c = '}' || c = 'f' || c = 't' || c = 'r' then 0.40
        elif c = 'm' || c = 'w' || c = 'M' || c = 'W' || c = '—' then 0.98
        elif Char.IsUpper c then 0.72
        elif Char.IsLower c then 0.62
        else 0.84 // operators, Greek, symbols: room to spare

    override _.MeasureText(text: string, _fontFamily: string, fontSize: float, fontWeight: float) =
        if String.IsNullOrEmpty text then OxySize.Empty
        else
            let lines = text.Split('\n')
            let bold = if fontWeight >= 600.0 then 1.08 else 1.0
            let w = lines |> Array.map (fun l -> l |> Seq.sumBy WideTextMeasurer.Em) |> Array.max
            // OxyPlot's SVG puts a line's baseline at the bottom of its measured box, so the descenders of
            // a line hang into the box under it: 1.45 font sizes leave room for them and the next ascenders
            OxySize(w * fontSize * bold, float lines.Length * fontSize * 1.45)

/// Greedy word wrap of `text` into lines of at most `columns` characters (a longer word stays whole).
let wrap (columns: int) (text: string) : string list =
    let words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray

    let step (lines: string list) (word: string) =
        match lines with
        | line :: rest when line.Length + 1 + word.Length <= columns -> (line + " " + word) :: rest
        | _ -> word :: lines

    words |> List.fold step [] |> List.rev

/// The phrases of a text: cut after `, `, `: `, `; `, before ` — ` and before a `   [method]`, outside
/// brackets, so that a line break never falls inside an expression such as `d E[avg x] / d F`.
let phrases (text: string) : string list =
    let cuts = Collections.Generic.List<int>()
    let mutable depth = 0

    for i in 0 .. text.Length - 1 do
        match text[i] with
        | '(' | '[' | '{' -> depth <- depth + 1
        | ')' | ']' | '}' -> depth <- max 0 (depth - 1)
        | (',' | ':' | ';') when depth = 0 && i + 1 < text.Length && text[i + 1] = ' ' -> cuts.Add(i + 1)
        | ' ' when depth = 0 && (text.Substring(i).StartsWith " — " || text.Substring(i).StartsWith "   [") -> cuts.Add i
        | _ -> ()

    let bounds = [ 0 ] @ List.ofSeq cuts @ [ text.Length ]

    bounds
    |> List.pairwise
    |> List.map (fun (a, b) -> text.Substring(a, b - a).Trim())
    |> List.filter ((<>) "")

/// Lines of at most `columns` characters (a longer phrase is wrapped by words), as few as possible and
/// of about equal length, broken between phrases (see `phrases`) where they allow it.
let wrapEven (columns: int) (text: string) : string list =
    let pack (limit: int) =
        let step (lines: string list) (p: string) =
            match lines with
            | line :: rest when line.Length + 1 + p.Length <= limit -> (line + " " + p) :: rest
            | _ -> p :: lines

        phrases text |> List.collect (fun p -> if p.Length > columns then wrap columns p else [ p ]) |> List.fold step [] |> List.rev

    let fewest = (pack columns).Length
    let even = max 1 ((text.Length + columns - 1) / columns)
    // the narrowest limit that needs no more lines than the widest: balanced lines
    [ min columns (text.Length / even + 10) .. columns ]
    |> List.map pack
    |> List.tryFind (fun ls -> ls.Length <= fewest)
    |> Option.defaultValue (pack columns)

/// The characters a subtitle line may hold: the width of the plot in 13-pixel text with room to spare for
/// viewers that fall back to a wider font than OxyPlot measured.
let private subtitleColumns = 90

/// The query without its `with METHOD` clause (the method is printed once, in brackets).
let private withoutMethod (query: string) =
    match query.IndexOf " with " with
    | i when i > 0 -> query.Substring(0, i)
    | _ -> query

/// A plot's subtitle: the query and its method (once), wrapped to the width of the plot.
let subtitleOf (query: string) (methodName: string option) : string =
    let text =
        match methodName with
        | Some m -> sprintf "%s   [%s]" (withoutMethod query) m
        | None -> query

    wrapEven subtitleColumns text |> String.concat "\n"

/// The subtitle of a result's plot: its query and method, and for an estimate under the model's
/// Feynman–Kac weight, that it is one (a weighted density is not the density of the paths).
let private subtitleFor (q: QueryOutcome) : string =
    let s = subtitleOf q.Query q.Method
    if q.Weighted then s + "\n" + "weighted: self-normalised under the model's weight" else s

/// An axis label that says when the estimate is weighted.
let private weightedLabel (q: QueryOutcome) (label: string) = if q.Weighted then label + " (weighted)" else label

/// The characters a title line may hold (18-pixel bold text), with the same room to spare.
let private titleColumns = 64

let private newModel (title: string) (subtitle: string) =
    let m =
        PlotModel(
            // long titles on several lines, not clipped at the edges of the plot
            Title = (if isNull title then title else wrapEven titleColumns title |> String.concat "\n"),
            Subtitle = subtitle,
            DefaultFont = "Helvetica, Arial, sans-serif",
            DefaultFontSize = 14.0,
            TitleFontSize = 18.0,
            SubtitleFontSize = 13.0,
            TitlePadding = 8.0,
            Background = OxyColors.White,
            Padding = OxyThickness(10.0, 10.0, 28.0, 10.0),
            PlotAreaBorderColor = OxyColor.FromRgb(120uy, 120uy, 120uy)
        )

    // below the plot area, outside it: a legend never covers the data
    m.Legends.Add(
        Legend(
            LegendPosition = LegendPosition.BottomCenter,
            LegendPlacement = LegendPlacement.Outside,
            LegendOrientation = LegendOrientation.Horizontal,
            LegendBackground = OxyColors.White,
            LegendBorder = OxyColors.Transparent,
            LegendFontSize = 13.0,
            LegendPadding = 6.0,
            LegendSymbolLength = 24.0,
            LegendItemSpacing = 28.0,
            LegendLineSpacing = 6.0
        )
    )

    m

let private axis (position: AxisPosition) (title: string) (padding: float) =
    LinearAxis(
        MinimumPadding = padding,
        MaximumPadding = padding,
        Position = position,
        Title = title,
        MajorGridlineStyle = LineStyle.Solid,
        MajorGridlineColor = OxyColor.FromRgb(230uy, 230uy, 230uy),
        MinorGridlineStyle = LineStyle.None,
        TitleFontSize = 14.0,
        FontSize = 13.0,
        AxisTitleDistance = 12.0
    )

let private save (path: string) (model: PlotModel) =
    match Path.GetDirectoryName(path: string) with
    | null
    | "" -> ()
    | dir -> Directory.CreateDirectory dir |> ignore

    use stream = new MemoryStream()
    let exporter =
        SvgExporter(Width = width, Height = height, UseVerticalTextAlignmentWorkaround = true, TextMeasurer = new WideTextMeasurer())

    exporter.Export(model, stream)
    // OxyPlot's writer starts with a UTF-8 byte order mark, which SVG tools and diffs trip over: write without
    let bytes = stream.ToArray()
    let bom = Encoding.UTF8.Preamble.ToArray()
    let hasBom = bytes.Length >= bom.Length && bytes[.. bom.Length - 1] = bom
    File.WriteAllBytes(path, (if hasBom then bytes[bom.Length ..] else bytes))

/// Finite or NaN (OxyPlot leaves a gap at NaN), never infinite.
let private finiteOrGap (x: float) = if Double.IsFinite x then x else nan

/// Left and right edges of each bin: from [Lo, Hi] when it matches the grid, else from the
/// spacing of the bin centres.
let private binEdges (q: QueryOutcome) : (float * float)[] =
    let n = q.Grid.Length

    let w =
        if n > 0 && Double.IsFinite q.Lo && Double.IsFinite q.Hi && q.Hi > q.Lo then (q.Hi - q.Lo) / float n
        elif n > 1 then (q.Grid[n - 1] - q.Grid[0]) / float (n - 1)
        else 1.0

    q.Grid |> Array.map (fun c -> c - w / 2.0, c + w / 2.0)

/// A step curve through bins: two points per bin at the bin's height.
let private steps (edges: (float * float)[]) (ys: float[]) =
    Array.zip edges ys
    |> Array.collect (fun ((l, r), y) -> [| DataPoint(l, finiteOrGap y); DataPoint(r, finiteOrGap y) |])

let private stdErrAt (q: QueryOutcome) i =
    if i < q.StdErrs.Length && Double.IsFinite q.StdErrs[i] then q.StdErrs[i] else 0.0

/// Writes an SVG (800×500) of a binned result (density or density response): the estimate as a
/// step line with a shaded ±2·stderr band, x axis the observable, y axis "density" or
/// "∂ density / ∂ p", titled with model and set. Creates the directory if needed.
let writeDensity (path: string) (q: QueryOutcome) (modelName: string) (setName: string) : unit =
    let n = min q.Grid.Length q.Values.Length
    let grid, values = q.Grid[.. n - 1], q.Values[.. n - 1]
    let q = { q with Grid = grid; Values = values }
    let edges = binEdges q
    let isResponse = q.Kind = "density_response"

    let yLabel =
        if isResponse then
            sprintf "∂ density / ∂ %s" (defaultArg q.Wrt "p")
        elif q.Kind = "score" then
            "score ∂ log ρ_T / ∂x (mean of ν_T in the bin)"
        else
            "density"

    let subtitle = subtitleFor q
    let yLabel = weightedLabel q yLabel

    let model = newModel (sprintf "%s — %s" modelName setName) subtitle
    let xLabel =
        if q.Kind = "alignment" then "|cos θ| between the top Lyapunov vector and the score ν_T"
        else observable q.Query

    model.Axes.Add(axis AxisPosition.Bottom xLabel 0.0)
    model.Axes.Add(axis AxisPosition.Left yLabel 0.04)

    let color = colorAt 0
    let upper = values |> Array.mapi (fun i v -> v + 2.0 * stdErrAt q i)
    let lower = values |> Array.mapi (fun i v -> v - 2.0 * stdErrAt q i)

    let band =
        AreaSeries(
            Title = "± 2 stderr",
            Color = OxyColors.Transparent,
            Color2 = OxyColors.Transparent,
            Fill = OxyColor.FromAColor(70uy, color),
            StrokeThickness = 0.0,
            MinimumSegmentLength = 0.0
        )

    band.Points.AddRange(steps edges upper)
    band.Points2.AddRange(steps edges lower)

    let line =
        // every point kept (the default drops points under 2 pixels apart, drawing small steps as diagonals)
        LineSeries(Title = "estimate", Color = color, StrokeThickness = 1.8, MarkerType = MarkerType.None, MinimumSegmentLength = 0.0)

    line.Points.AddRange(steps edges values)

    if isResponse then
        model.Annotations.Add(
            LineAnnotation(
                Type = LineAnnotationType.Horizontal,
                Y = 0.0,
                Color = OxyColor.FromRgb(90uy, 90uy, 90uy),
                LineStyle = LineStyle.Dash,
                StrokeThickness = 1.0
            )
        )

    model.Series.Add band
    model.Series.Add line
    save path model

/// Writes an SVG (800×500) of x–y series with ±2·stderr error bars, with a subtitle (or null) and, when
/// `integerX`, ticks on whole numbers only (indices): each entry is (series name, xs, ys, stderrs); stderrs
/// may be empty (no bars).
let rec writeSeriesWith
    (path: string)
    (title: string)
    (subtitle: string)
    (integerX: bool)
    (xLabel: string)
    (yLabel: string)
    (series: (string * float[] * float[] * float[]) list)
    : unit =
    save path (seriesModel title subtitle integerX xLabel yLabel series)

/// The plot model of `writeSeriesWith` (its axes: bottom, then left).
and private seriesModel
    (title: string)
    (subtitle: string)
    (integerX: bool)
    (xLabel: string)
    (yLabel: string)
    (series: (string * float[] * float[] * float[]) list)
    : PlotModel =
    let model = newModel title subtitle
    let xAxis = axis AxisPosition.Bottom xLabel 0.04

    if integerX then
        xAxis.MinimumMajorStep <- 1.0
        xAxis.MinimumMinorStep <- 1.0
        xAxis.StringFormat <- "0"

    model.Axes.Add xAxis
    model.Axes.Add(axis AxisPosition.Left yLabel 0.06)

    series
    |> List.iteri (fun k (name, xs, ys, errs) ->
        let color = colorAt k
        let n = min xs.Length ys.Length

        let err i =
            if i < errs.Length && Double.IsFinite errs[i] then 2.0 * errs[i] else 0.0

        let line =
            LineSeries(
                Title = name,
                Color = color,
                StrokeThickness = 1.6,
                MarkerType = MarkerType.Circle,
                MarkerSize = 3.5,
                MarkerFill = color,
                MinimumSegmentLength = 0.0
            )

        line.Points.AddRange(Array.init n (fun i -> DataPoint(finiteOrGap xs[i], finiteOrGap ys[i])))

        let bars =
            ScatterErrorSeries(
                MarkerType = MarkerType.None,
                ErrorBarColor = color,
                ErrorBarStrokeThickness = 1.2,
                ErrorBarStopWidth = 4.0,
                RenderInLegend = false
            )

        bars.Points.AddRange(
            Array.init n id
            |> Array.filter (fun i -> Double.IsFinite xs[i] && Double.IsFinite ys[i])
            |> Array.map (fun i -> ScatterErrorPoint(xs[i], ys[i], 0.0, err i))
        )

        model.Series.Add bars
        model.Series.Add line)

    model

/// The top of a loss plot's scale: the starting loss plus its error bar and a margin, unless the losses
/// stay within it; None when nothing lies above it. A line search's probe far uphill (a loss of 40 among
/// losses of 0.5) flattened everything else into a line at the bottom of a scale fitted to it.
let lossScaleTop (loss: float[]) (errs: float[]) : float option =
    let err i = if i < errs.Length && Double.IsFinite errs[i] then 2.0 * errs[i] else 0.0
    let finite = Array.init loss.Length id |> Array.filter (fun i -> Double.IsFinite loss[i])

    if finite.Length < 2 then None
    else
        let first = finite[0]
        let lo = finite |> Array.map (fun i -> loss[i] - err i) |> Array.min
        let start = loss[first] + err first
        let span = max (start - lo) (1e-9 * max 1.0 (abs start))
        let top = start + 0.2 * span
        if finite |> Array.exists (fun i -> loss[i] > top) then Some top else None

/// Writes a fit's loss against its evaluations (or iterations) with ±2·stderr error bars. Losses above
/// `lossScaleTop` are off the scale: the scale ends there, and each is marked at the top edge by a
/// triangle labelled with its value (the legend says so), so that the descent stays readable.
let writeLoss (path: string) (title: string) (subtitle: string) (xLabel: string) (xs: float[]) (loss: float[]) (errs: float[]) : unit =
    let model = seriesModel title subtitle true xLabel "loss (nats per row)" [ "loss", xs, loss, errs ]

    match lossScaleTop loss errs with
    | None -> ()
    | Some top ->
        let yAxis = model.Axes[1]
        let lo =
            Array.init (min xs.Length loss.Length) id
            |> Array.filter (fun i -> Double.IsFinite loss[i])
            |> Array.map (fun i -> loss[i] - (if i < errs.Length && Double.IsFinite errs[i] then 2.0 * errs[i] else 0.0))
            |> Array.min

        yAxis.Minimum <- lo - 0.06 * (top - lo)
        yAxis.Maximum <- top

        let off = Array.init (min xs.Length loss.Length) id |> Array.filter (fun i -> Double.IsFinite loss[i] && loss[i] > top)
        let color = OxyColor.FromRgb(213uy, 94uy, 0uy)

        let marks =
            ScatterSeries(
                Title = sprintf "off the scale: %d loss%s, each value written under its mark" off.Length (if off.Length = 1 then "" else "es"),
                MarkerType = MarkerType.Triangle,
                MarkerSize = 5.0,
                MarkerFill = color
            )

        // the marks just inside the top edge (not cut in half by it); neighbours' labels on two rows
        let markY = top - 0.025 * (top - lo)

        off
        |> Array.iteri (fun k i ->
            marks.Points.Add(ScatterPoint(xs[i], markY))
            model.Annotations.Add(
                TextAnnotation(
                    Text = Output.num loss[i],
                    TextPosition = DataPoint(xs[i], markY),
                    TextVerticalAlignment = VerticalAlignment.Top,
                    Offset = ScreenVector(0.0, 9.0 + 14.0 * float (k % 2)),
                    Stroke = OxyColors.Transparent,
                    FontSize = 11.0,
                    TextColor = color
                )
            ))

        model.Series.Add marks

    save path model

/// Writes an SVG (800×500) of x–y series with ±2·stderr error bars: each entry is
/// (series name, xs, ys, stderrs); stderrs may be empty (no bars).
let writeSeries (path: string) (title: string) (xLabel: string) (yLabel: string) (series: (string * float[] * float[] * float[]) list) : unit =
    writeSeriesWith path title null false xLabel yLabel series

/// Writes an SVG of a `lyapunov` result: exponent against its index (whole-number ticks), with ±2·stderr error bars.
let writeSpectrum (path: string) (q: QueryOutcome) (modelName: string) (setName: string) : unit =
    writeSeriesWith path (sprintf "%s — %s" modelName setName) (subtitleFor q) true "index" "Lyapunov exponent (per unit time)" [ "exponents", q.Grid, q.Values, q.StdErrs ]

/// Writes an SVG of a `mean_series` result: the mean against time, with ±2·stderr error bars.
let writeTimeSeries (path: string) (q: QueryOutcome) (modelName: string) (setName: string) : unit =
    writeSeriesWith path (sprintf "%s — %s" modelName setName) (subtitleFor q) false "t" (weightedLabel q (sprintf "mean(%s)" (observable q.Query)))
        [ "mean", q.Grid, q.Values, q.StdErrs ]

/// The two observables of `density(x, y) ...`, split at the top-level comma.
let private twoObservables (query: string) =
    let both = observable query
    let mutable depth = 0
    let mutable cut = -1

    for i in 0 .. both.Length - 1 do
        match both[i] with
        | '(' | '[' -> depth <- depth + 1
        | ')' | ']' -> depth <- depth - 1
        | ',' when depth = 0 && cut < 0 -> cut <- i
        | _ -> ()

    if cut < 0 then both, ""
    else both.Substring(0, cut).Trim(), both.Substring(cut + 1).Trim()

/// Writes an SVG heat map of a `density2d` result: the x observable across, the y observable up,
/// the density as colour (viridis; NaN cells blank), titled with model and set.
let writeHeatMap (path: string) (q: QueryOutcome) (modelName: string) (setName: string) : unit =
    let nx, ny = q.Grid.Length, q.GridY.Length
    let model = newModel (sprintf "%s — %s" modelName setName) (subtitleFor q)
    let xLabel, yLabel = twoObservables q.Query
    model.Axes.Add(axis AxisPosition.Bottom xLabel 0.0)
    model.Axes.Add(axis AxisPosition.Left yLabel 0.0)

    model.Axes.Add(
        LinearColorAxis(
            Position = AxisPosition.Right,
            Palette = OxyPalettes.Viridis(200),
            Title = "density",
            InvalidNumberColor = OxyColors.Transparent,
            TitleFontSize = 14.0,
            FontSize = 13.0
        )
    )

    if nx > 0 && ny > 0 && q.Values.Length = nx * ny then
        let data = Array2D.init nx ny (fun i j -> finiteOrGap q.Values[j * nx + i])

        model.Series.Add(
            HeatMapSeries(
                X0 = q.Grid[0],
                X1 = q.Grid[nx - 1],
                Y0 = q.GridY[0],
                Y1 = q.GridY[ny - 1],
                Data = data,
                RenderMethod = HeatMapRenderMethod.Rectangles,
                Interpolate = false
            )
        )

    save path model


// ---------------------------------------------------------------------------------------------
// Sweeps
// ---------------------------------------------------------------------------------------------

let private squeeze (s: string) = String(s.ToCharArray() |> Array.filter (Char.IsWhiteSpace >> not))

/// The `mean(...)` of a mean query and what follows it (its `over` window), white space removed.
let private meanParts (mean: string) : (string * string) option =
    let m = squeeze mean
    let inner = observable m

    if m.StartsWith "mean(" && inner <> m then
        let head = "mean(" + squeeze inner + ")"
        if m.StartsWith head then Some(head, m.Substring head.Length) else None
    else None

/// Whether the response query is `d MEAN / d param` of the mean query (white space aside, `over` window
/// included, `with METHOD` ignored): the response whose swept means' finite differences it should match.
let isDerivativeOf (param: string) (mean: string) (response: string) : bool =
    match meanParts mean with
    | Some(head, tail) -> squeeze (withoutMethod response) = "d" + head + "/d" + param + tail
    | None -> false

/// Finite differences of neighbouring sets: (midpoint, slope) of each pair of swept values.
let finiteDifferences (xs: float[]) (ys: float[]) : float[] * float[] =
    let n = min xs.Length ys.Length
    let pairs = Array.init (max 0 (n - 1)) (fun k -> (xs[k] + xs[k + 1]) / 2.0, (ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k]))
    Array.map fst pairs, Array.map snd pairs

/// The file of a sweep plot: `sweep_PARAM_qINDEX_KIND_OBSERVABLE[_WRT].svg`.
let sweepFileName (sw: Output.Sweep) (queryIndex: int) (q: QueryOutcome) : string =
    fileName ("sweep_" + sw.Param) queryIndex q

/// Writes an SVG of a scalar query across a sweep: its value against the swept parameter with ±2·stderr
/// bars; for a response `d mean(e) / d p` (p swept) with `mean(e)` among the queries (`mean`), also the
/// finite differences of the swept means at the midpoints (the linearity check; no bars: the sets share
/// their random numbers, so the differences' errors are not those of independent sets).
let writeSweep (path: string) (modelName: string) (sw: Output.Sweep) (column: QueryOutcome list) (mean: QueryOutcome list option) : unit =
    let q = List.head column
    let values = column |> List.map (fun r -> r.Value) |> Array.ofList
    let errs = column |> List.map (fun r -> r.StdErr) |> Array.ofList
    let name = if q.Kind = "response" then "response" else "mean"

    let overlay =
        match mean with
        | Some m ->
            let xs, ys = finiteDifferences sw.Values (m |> List.map (fun r -> r.Value) |> Array.ofList)
            [ sprintf "Δ %s / Δ %s (neighbouring sets)" (List.head m).Query sw.Param, xs, ys, [||] ]
        | None -> []

    writeSeriesWith path (sprintf "%s — sweep over %s" modelName sw.Param) (subtitleFor q) false sw.Param (weightedLabel q (if q.Kind = "response" then sprintf "∂ / ∂ %s" (defaultArg q.Wrt sw.Param) else "mean"))
        ((sprintf "%s ± 2 stderr" name, sw.Values, values, errs) :: overlay)

/// Writes one plot per scalar query of every sweep of the run into `dir`; the files written.
let writeSweeps (dir: string) (r: RunReport) : string list =
    [ for sw in Output.sweeps r do
          let columns = Output.sweepColumns sw

          for (i, column) in columns do
              let q = List.head column

              let mean =
                  if q.Kind = "response" && q.Wrt = Some sw.Param then
                      columns
                      |> List.tryFind (fun (_, c) -> (List.head c).Kind = "mean" && isDerivativeOf sw.Param (List.head c).Query q.Query)
                      |> Option.map snd
                  else None

              let file = Path.Combine(dir, sweepFileName sw i q)
              writeSweep file r.Model sw column mean
              yield file ]
