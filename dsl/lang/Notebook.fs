namespace Sde

open System
open System.Globalization
open System.IO
open System.Net
open System.Text
open System.Text.RegularExpressions
open System.Runtime.InteropServices
open Sde.Lang
open Sde.Lang.Report

/// A `.sde` text that does not compile, or a fit that fails, in a notebook: the message is the located
/// diagnostics (`FILE:LINE:COL: error: ...` with the source line and a caret), which is what a notebook
/// shows of an exception.
type SdeException(message: string, diagnostics: SourceDiagnostic list) =
    inherit Exception(message)
    /// The diagnostics behind the message.
    member _.Diagnostics = diagnostics

/// Results in notebooks (Polyglot Notebooks, Jupyter with the .NET Interactive kernel, dotnet-repl):
/// `Html` and `Text` are what a cell shows of a run's report, a result, a set, a fit's report, a
/// compiled program or a diagnostic (the types name them as their formatters, see
/// run/Formatting.fs); `Run`, `RunFile`, `Fit` and `FitFile` compile and run in one call, and throw an
/// `SdeException` with the located diagnostics on an error (a notebook shows its message).
[<AbstractClass; Sealed>]
type Notebook =
    static member private Inv = CultureInfo.InvariantCulture

    static member private Esc(s: string) = WebUtility.HtmlEncode s

    /// A number as data for a program (round-trip precision; NaN, Infinity, -Infinity).
    static member private Data(x: float) = x.ToString("R", CultureInfo.InvariantCulture)

    static member private DataList(xs: float[]) = xs |> Array.map Notebook.Data |> String.concat " "

    /// An SVG written by one of `Plot`'s functions to a file, as an element to inline in HTML: without the
    /// XML prologue, scaled to the cell's width (the plot's 800×500 as its view box).
    static member private Svg(write: string -> unit) : string =
        let path = Path.Combine(Path.GetTempPath(), sprintf "sde-notebook-%s.svg" (Guid.NewGuid().ToString "N"))

        try
            write path
            Notebook.InlineSvg(File.ReadAllText path)
        finally
            try
                File.Delete path
            with _ -> ()

    static member private InlineSvg(svg: string) : string =
        let start = svg.IndexOf("<svg", StringComparison.Ordinal)
        let body = if start > 0 then svg.Substring start else svg
        // the root's fixed width and height give way to a view box that scales with the cell
        let root = Regex.Match(body, "^<svg[^>]*>")

        if root.Success then
            let tag = root.Value
            let num name = Regex.Match(tag, sprintf "\\s%s=\"([0-9.]+)[a-z]*\"" name)
            let w, h = num "width", num "height"

            let tag' =
                if w.Success && h.Success && not (tag.Contains "viewBox") then
                    let t = tag.Replace(w.Value, "").Replace(h.Value, "")
                    t.Insert(4, sprintf " viewBox=\"0 0 %s %s\" style=\"width:100%%;max-width:%spx;height:auto\"" w.Groups[1].Value h.Groups[1].Value w.Groups[1].Value)
                else tag

            // the plot's ids (its clip paths: clipPath1, ...) made unique: every plot of a notebook page
            // shares one document, where `url(#clipPath1)` would name the first plot's
            let prefix = "sde" + Guid.NewGuid().ToString("N").Substring(0, 12) + "-"

            let rest =
                Regex.Replace(body.Substring tag.Length, "(\\sid=\"|url\\(#|href=\"#)([^\")]+)", fun m -> m.Groups[1].Value + prefix + m.Groups[2].Value)

            tag' + rest
        else body

    static member private Style =
        "<style>.sde-nb table{border-collapse:collapse;margin:4px 0}.sde-nb th,.sde-nb td{padding:2px 10px;text-align:left;vertical-align:top;border-bottom:1px solid #ddd}"
        + ".sde-nb .sde-num{font-family:monospace;white-space:nowrap}.sde-nb pre{margin:0}.sde-nb .sde-warn{color:#a15c00}.sde-nb .sde-err{color:#b00020}"
        + ".sde-nb .sde-dim{color:#777}</style>"

    /// The plot of a result (density, density response, score, alignment, 2-D density, Lyapunov spectrum,
    /// mean over time), as the CLI's `--out` draws it; None for kinds without one.
    static member private PlotOf (model: string) (set: string) (q: QueryOutcome) : string option =
        if Report.isBinned q then Some(Notebook.Svg(fun p -> Plot.writeDensity p q model set))
        elif q.Kind = "density2d" then Some(Notebook.Svg(fun p -> Plot.writeHeatMap p q model set))
        elif q.Kind = "lyapunov" then Some(Notebook.Svg(fun p -> Plot.writeSpectrum p q model set))
        elif q.Kind = "mean_series" then Some(Notebook.Svg(fun p -> Plot.writeTimeSeries p q model set))
        else None

    /// One result as a table row: the query, `value ± stderr` (or the table's lines for a density, a
    /// spectrum, a series, ...), the method; its numbers in `data-` attributes; warnings in rows below.
    static member private ResultRows(q: QueryOutcome) : string =
        let sb = StringBuilder()
        let scalar = Output.isScalar q && q.Kind <> "ess" && q.Windows.IsEmpty

        let shown =
            if scalar then
                Output.valueWithError q.Value q.StdErr
            elif q.Kind = "ess" then
                Output.essCount q.Value
            else
                // the table's lines without the query's name before the first (the first column has it):
                // each line loses the label's width (the query and two spaces), which keeps a signed
                // sparkline's two rows and a summary aligned; the warnings have rows of their own
                let label = q.Query.Length + 2
                let cut (l: string) = if l.Length >= label && String.IsNullOrWhiteSpace(l.Substring(0, label)) then l.Substring label else l.TrimStart()

                Output.resultText q
                |> fun t -> t.Split('\n')
                |> Array.mapi (fun i l -> if i = 0 && l.StartsWith q.Query && l.Length >= label then l.Substring label else cut l)
                |> Array.filter (fun l -> not (l.TrimStart().StartsWith "warning: "))
                |> String.concat "\n"

        let method =
            q.Method
            |> Option.filter (fun m -> not (q.Query.EndsWith(" with " + m, StringComparison.Ordinal)))
            |> Option.defaultValue ""

        let arrays =
            if q.Values.Length > 0 then
                sprintf " data-grid=\"%s\" data-values=\"%s\" data-stderrs=\"%s\"" (Notebook.DataList q.Grid) (Notebook.DataList q.Values) (Notebook.DataList q.StdErrs)
            else ""

        sb.AppendFormat(
            "<tr class=\"sde-result\" data-kind=\"{0}\" data-query=\"{1}\" data-value=\"{2}\" data-stderr=\"{3}\"{4}><td><code>{1}</code></td><td class=\"sde-num\">{5}</td><td class=\"sde-dim\">{6}</td></tr>",
            Notebook.Esc q.Kind,
            Notebook.Esc q.Query,
            Notebook.Data q.Value,
            Notebook.Data q.StdErr,
            arrays,
            (if scalar || q.Kind = "ess" then Notebook.Esc shown else "<pre>" + Notebook.Esc shown + "</pre>"),
            Notebook.Esc method
        )
        |> ignore

        for w in q.Warnings do
            sb.AppendFormat("<tr><td></td><td colspan=\"2\" class=\"sde-warn\">warning: {0}</td></tr>", Notebook.Esc w) |> ignore

        sb.ToString()

    static member private ResultTable(results: QueryOutcome list) : string =
        "<table><thead><tr><th>query</th><th>value ± stderr</th><th>method</th></tr></thead><tbody>"
        + (results |> List.map Notebook.ResultRows |> String.concat "")
        + "</tbody></table>"

    static member private SetHeading(s: SetReport) : string =
        let ps = s.Params |> List.map (fun (n, v) -> sprintf "%s = %s" n (Output.num v)) |> String.concat ", "
        sprintf "<h4 class=\"sde-set\" data-set=\"%s\">set %s<span class=\"sde-dim\">%s</span></h4>" (Notebook.Esc s.Name) (Notebook.Esc s.Name) (if ps = "" then "" else ": " + Notebook.Esc ps)

    static member private SetBody (model: string) (collapsePlots: bool) (s: SetReport) : string =
        let sb = StringBuilder()
        sb.Append(Notebook.SetHeading s) |> ignore

        match s.Failure with
        | Some m -> sb.AppendFormat("<p class=\"sde-err\">error: {0}</p>", Notebook.Esc m) |> ignore
        | None -> ()

        if not s.Results.IsEmpty then sb.Append(Notebook.ResultTable s.Results) |> ignore

        let plots = s.Results |> List.choose (Notebook.PlotOf model s.Name)

        if not plots.IsEmpty then
            let body = plots |> List.map (fun p -> "<div>" + p + "</div>") |> String.concat ""

            if collapsePlots then
                sb.AppendFormat("<details><summary>plots of set {0} ({1})</summary>{2}</details>", Notebook.Esc s.Name, plots.Length, body) |> ignore
            else
                sb.Append(body) |> ignore

        sb.ToString()

    static member private SweepBody (r: RunReport) (sw: Output.Sweep) : string =
        let columns = Output.sweepColumns sw

        if columns.IsEmpty then
            ""
        else
            let sb = StringBuilder()
            sb.AppendFormat("<h4 class=\"sde-sweep\" data-param=\"{0}\">sweep over {0} ({1} sets)</h4>", Notebook.Esc sw.Param, sw.Sets.Length) |> ignore
            sb.AppendFormat("<table><thead><tr><th>{0}</th>", Notebook.Esc sw.Param) |> ignore

            for (_, c) in columns do
                sb.AppendFormat("<th><code>{0}</code></th>", Notebook.Esc (List.head c).Query) |> ignore

            sb.Append("</tr></thead><tbody>") |> ignore

            sw.Values
            |> Array.iteri (fun k v ->
                sb.AppendFormat("<tr><td class=\"sde-num\">{0}</td>", Output.num v) |> ignore

                for (_, c) in columns do
                    let q = List.item k c
                    sb.AppendFormat("<td class=\"sde-num\" data-value=\"{0}\" data-stderr=\"{1}\">{2}</td>", Notebook.Data q.Value, Notebook.Data q.StdErr, Output.valueWithError q.Value q.StdErr) |> ignore

                sb.Append("</tr>") |> ignore)

            sb.Append("</tbody></table>") |> ignore

            // the CLI's sweep plots (responses beside the finite differences of the swept means)
            let dir = Path.Combine(Path.GetTempPath(), sprintf "sde-notebook-%s" (Guid.NewGuid().ToString "N"))

            try
                let files = Plot.writeSweeps dir { r with Sets = sw.Sets }

                for f in files do
                    sb.Append("<div>").Append(Notebook.InlineSvg(File.ReadAllText f)).Append("</div>") |> ignore
            finally
                try
                    if Directory.Exists dir then Directory.Delete(dir, true)
                with _ -> ()

            sb.ToString()

    /// A run's report as HTML: the settings, per set a table of its results (value ± stderr) and the
    /// plots of its densities, responses, spectra and series (collapsed when there are several sets),
    /// each sweep's table and plots, the warnings, the timing.
    static member ReportHtml(r: RunReport) : string =
        let sb = StringBuilder()
        sb.Append("<div class=\"sde-nb sde-report\">").Append(Notebook.Style) |> ignore
        let st = r.Settings

        sb.AppendFormat(
            "<p><b>{0}</b> <span class=\"sde-dim\">({1})</span> · {2} paths, dt = {3}, T = {4}, {5}, {6}, seed {7}</p>",
            Notebook.Esc r.Model,
            Notebook.Esc r.Source,
            st.Paths,
            Output.num st.Dt,
            Output.num st.T,
            Notebook.Esc st.Scheme,
            Notebook.Esc st.Backend,
            st.Seed
        )
        |> ignore

        for w in r.Warnings do
            sb.AppendFormat("<p class=\"sde-warn\">{0}</p>", Notebook.Esc w) |> ignore

        let collapse = r.Sets.Length > 1

        for s in r.Sets do
            sb.Append(Notebook.SetBody r.Model collapse s) |> ignore

        for sw in Output.sweeps r do
            sb.Append(Notebook.SweepBody r sw) |> ignore

        sb.AppendFormat("<p class=\"sde-dim\">{0}</p></div>", Notebook.Esc(Output.timingLine r)) |> ignore
        sb.ToString()

    /// One result as HTML: its row of the table and its plot (model and set unnamed in the plot's title).
    static member ResultHtml(q: QueryOutcome) : string =
        let plot = Notebook.PlotOf "" "" q |> Option.map (fun p -> "<div>" + p + "</div>") |> Option.defaultValue ""
        "<div class=\"sde-nb sde-query\">" + Notebook.Style + Notebook.ResultTable [ q ] + plot + "</div>"

    /// One parameter set's results as HTML.
    static member SetHtml(s: SetReport) : string =
        "<div class=\"sde-nb sde-setreport\">" + Notebook.Style + Notebook.SetBody "" false s + "</div>"

    /// A fit's report as HTML: the fitted params ± standard errors beside their starting values, the
    /// final loss, the warnings, the ready-to-paste `params` block, and the plots of the loss and of each
    /// param against the evaluations (those of `dsl fit --out`).
    static member FitHtml(r: Fit.FitReport) : string =
        let sb = StringBuilder()
        sb.Append("<div class=\"sde-nb sde-fit\">").Append(Notebook.Style) |> ignore

        sb.AppendFormat(
            "<p><b>fit of {0}</b> to {1} ({2} rows), {3}, {4} · {5} after {6} evaluation{7}: {8}</p>",
            Notebook.Esc r.Model,
            Notebook.Esc(Path.GetFileName r.DataFile),
            r.DataRows,
            Notebook.Esc r.Objective,
            Notebook.Esc r.Optimizer,
            (if r.Converged then "converged" else "stopped"),
            r.History.Length,
            (if r.History.Length = 1 then "" else "s"),
            Notebook.Esc r.Stop
        )
        |> ignore

        sb.Append("<table><thead><tr><th>param</th><th>fitted ± stderr</th><th>start</th></tr></thead><tbody>") |> ignore

        for i in 0 .. r.Names.Length - 1 do
            sb.AppendFormat(
                "<tr class=\"sde-fitted\" data-name=\"{0}\" data-value=\"{1}\" data-stderr=\"{2}\"><td><code>{0}</code></td><td class=\"sde-num\">{3}</td><td class=\"sde-num\">{4}</td></tr>",
                Notebook.Esc r.Names[i],
                Notebook.Data r.Fitted[i],
                Notebook.Data r.StdErrs[i],
                Notebook.Esc(Fit.fittedText r.Fitted[i] r.StdErrs[i]),
                Output.num r.Start[i]
            )
            |> ignore

        sb.AppendFormat(
            "<tr class=\"sde-loss\" data-value=\"{0}\" data-stderr=\"{1}\"><td>loss</td><td class=\"sde-num\">{2}</td><td class=\"sde-num\">{3}</td></tr></tbody></table>",
            Notebook.Data r.FinalLoss,
            Notebook.Data r.FinalLossStdErr,
            Output.valueWithError r.FinalLoss r.FinalLossStdErr,
            (match r.History with
             | first :: _ -> Output.num first.Loss
             | [] -> "")
        )
        |> ignore

        for w in r.Warnings do
            sb.AppendFormat("<p class=\"sde-warn\">warning: {0}</p>", Notebook.Esc w) |> ignore

        sb.AppendFormat("<pre>{0}</pre>", Notebook.Esc(Fit.paramsBlock r r.AllParams)) |> ignore

        if not r.History.IsEmpty then
            let dir = Path.Combine(Path.GetTempPath(), sprintf "sde-notebook-%s" (Guid.NewGuid().ToString "N"))

            try
                for f in Fit.write dir r do
                    if f.EndsWith ".svg" then
                        sb.Append("<div>").Append(Notebook.InlineSvg(File.ReadAllText f)).Append("</div>") |> ignore
            finally
                try
                    if Directory.Exists dir then Directory.Delete(dir, true)
                with _ -> ()

        sb.Append("</div>").ToString()

    /// A compiled program as HTML: the model, its parameters, sets, state dimension, settings, warnings.
    static member ProgramHtml(p: CompiledProgram) : string =
        "<div class=\"sde-nb sde-program\">" + Notebook.Style + "<pre>" + Notebook.Esc(Notebook.ProgramText p) + "</pre></div>"

    static member private ProgramText(p: CompiledProgram) : string =
        let s = p.Settings

        [ yield sprintf "model %s: %d state component%s, params %s" p.ModelName p.Dimension (if p.Dimension = 1 then "" else "s") (String.Join(", ", p.Parameters))
          yield sprintf "sets: %s" (String.Join(", ", p.ParameterSets))
          yield sprintf "simulate: %d paths, dt = %s, T = %s, seed %d" s.Paths (Output.num s.Dt) (Output.num s.T) s.Seed
          if p.HasFit then yield "has a fit block: Notebook.Fit or program.Fit() fits it"
          for w in p.Warnings do
              yield w.ToString() ]
        |> String.concat "\n"

    /// What a notebook shows of a value of this library, as HTML (the formatters' text/html).
    static member Html(value: obj) : string =
        match value with
        | :? RunReport as r -> Notebook.ReportHtml r
        | :? QueryOutcome as q -> Notebook.ResultHtml q
        | :? SetReport as s -> Notebook.SetHtml s
        | :? Fit.FitReport as f -> Notebook.FitHtml f
        | :? CompiledProgram as p -> Notebook.ProgramHtml p
        | :? SourceDiagnostic as d -> "<pre>" + Notebook.Esc d.Rendered + "</pre>"
        | null -> ""
        | v -> Notebook.Esc(string v)

    /// What a terminal kernel shows of a value of this library (the formatters' text/plain): the CLI's
    /// table, a result's lines, a fit's summary.
    static member Text(value: obj) : string =
        match value with
        | :? RunReport as r -> Output.table r
        | :? QueryOutcome as q -> Output.resultText q
        | :? SetReport as s -> String.Join("\n", s.Results |> List.map Output.resultText)
        | :? Fit.FitReport as f -> Fit.summary f f.AllParams
        | :? CompiledProgram as p -> Notebook.ProgramText p
        | :? SourceDiagnostic as d -> d.Rendered
        | null -> ""
        | v -> string v

    static member private Fail(ds: SourceDiagnostic list) : 'a =
        let text = ds |> List.map (fun d -> d.Rendered.TrimEnd()) |> String.concat "\n"
        raise (SdeException(text, ds))

    static member private OverridesOf(paths: int, seed: int64) : Overrides option =
        if paths <= 0 && seed < 0L then None
        else
            Some
                { Sets = []
                  ParamsName = None
                  Paths = (if paths > 0 then Some(int64 paths) else None)
                  Dt = None
                  T = None
                  Seed = (if seed >= 0L then Some(uint64 seed) else None) }

    // The optional arguments are .NET's (Optional, DefaultParameterValue), for F# and C# alike:
    // `paths` 0 and `seed` -1 leave the file's settings; `fileName` null names the text notebook.sde.

    /// Compiles a model's text (`fileName` names it in diagnostics); throws `SdeException` on errors.
    static member Compile
        (
            source: string,
            [<Optional; DefaultParameterValue(null: string)>] fileName: string,
            [<Optional; DefaultParameterValue(0)>] paths: int,
            [<Optional; DefaultParameterValue(-1L)>] seed: int64
        ) : CompiledProgram =
        let file = if isNull fileName then "notebook.sde" else fileName

        let result =
            match Notebook.OverridesOf(paths, seed) with
            | Some o -> SdeCompiler.Compile(source, file, o)
            | None -> SdeCompiler.Compile(source, file)

        match result with
        | Ok p -> p
        | Error ds -> Notebook.Fail ds

    /// Compiles and runs a model's text: every query of every set (`paths`, `seed` override the file's;
    /// `backend`: "cpu" (null, the default), "ilgpu-cpu", "cuda" or "auto", as `dsl run --backend`).
    static member Run
        (
            source: string,
            [<Optional; DefaultParameterValue(0)>] paths: int,
            [<Optional; DefaultParameterValue(-1L)>] seed: int64,
            [<Optional; DefaultParameterValue(null: string)>] fileName: string,
            [<Optional; DefaultParameterValue(null: string)>] backend: string
        ) : RunReport =
        Notebook.Compile(source, fileName, paths, seed).Run(backend = backend)

    /// Compiles and runs a `.sde` file.
    static member RunFile
        (
            path: string,
            [<Optional; DefaultParameterValue(0)>] paths: int,
            [<Optional; DefaultParameterValue(-1L)>] seed: int64,
            [<Optional; DefaultParameterValue(null: string)>] backend: string
        ) : RunReport =
        Notebook.Run(File.ReadAllText path, paths, seed, path, backend)

    /// Compiles a model's text and fits its `fit` block; the data file's name is relative to `dataDir`
    /// (null: the current folder, a notebook's own); `backend` as `dsl fit --backend` (null: "cpu").
    static member Fit
        (
            source: string,
            [<Optional; DefaultParameterValue(null: string)>] dataDir: string,
            [<Optional; DefaultParameterValue(0)>] paths: int,
            [<Optional; DefaultParameterValue(-1L)>] seed: int64,
            [<Optional; DefaultParameterValue(null: string)>] fileName: string,
            [<Optional; DefaultParameterValue(null: string)>] backend: string
        ) : Fit.FitReport =
        let p = Notebook.Compile(source, fileName, paths, seed)
        let backend = if isNull backend then "cpu" else backend

        match p.Fit(dataDir = (if isNull dataDir then "." else dataDir), backend = backend) with
        | Ok r -> r
        | Error ds -> Notebook.Fail ds

    /// Fits a `.sde` file's `fit` block (its data file relative to the file's folder, as `dsl fit` does).
    static member FitFile
        (
            path: string,
            [<Optional; DefaultParameterValue(0)>] paths: int,
            [<Optional; DefaultParameterValue(-1L)>] seed: int64,
            [<Optional; DefaultParameterValue(null: string)>] backend: string
        ) : Fit.FitReport =
        let dir = match Path.GetDirectoryName(Path.GetFullPath path) with | null -> "." | d -> d
        Notebook.Fit(File.ReadAllText path, dir, paths, seed, path, backend)
