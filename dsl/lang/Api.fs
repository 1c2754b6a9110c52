namespace Sde

open System
open Sde.Lang

/// A problem in a source text: `File:Line:Col: error: Message` (or `warning:`). An error in a
/// command-line override has no place in the source: Line = Col = 0, `File: error: --option: Message`.
[<Sde.Lang.Formatting.TypeFormatterSource(typeof<Sde.Lang.Formatting.SdeFormatterSource>)>]
type SourceDiagnostic =
    { File: string
      /// 0 when the problem is not located in the source (an override's).
      Line: int
      Col: int
      Message: string
      /// The full rendering with the source line and a caret.
      Rendered: string
      /// "error" or "warning".
      Severity: string }

    override d.ToString() =
        if d.Line = 0 then sprintf "%s: %s: %s" d.File d.Severity d.Message
        else sprintf "%s:%d:%d: %s: %s" d.File d.Line d.Col d.Severity d.Message

/// One estimate of a result, where it sits: a scalar's one value, a bin's, a time's, an exponent's.
type ResultPoint =
    { /// The bin (row-major for a 2-D density), time or exponent number from 0; -1 for a scalar.
      Index: int
      /// The bin centre (x for a 2-D density), the time of a series, the exponent's number (1, 2, ...);
      /// NaN for a scalar.
      X: float
      /// A 2-D density's y bin centre; NaN otherwise.
      Y: float
      Value: float
      /// NaN where none could be computed (one path, a warning says why); 0 for `ess`, which is exact:
      /// computed from this run's weights, not estimated.
      StdErr: float }

/// Every result kind in one shape (`Points`) and as the table prints it (`Text`). A `QueryOutcome`'s
/// `Value`/`StdErr` are a scalar result's only (a density's are not its values: they are 0).
[<Runtime.CompilerServices.Extension>]
type Results =
    /// The result's estimates: one point for a scalar kind (mean, response, variance, covariance,
    /// quantile, log_normalizer, ess), one per bin for a density, density response, score or
    /// alignment (2-D densities row-major, one row per y bin), one per time for `mean(...) every`,
    /// one per exponent for `lyapunov`; none for `samples` (per-path values, not estimates: `Values`
    /// holds them, paths x columns row-major).
    [<Runtime.CompilerServices.Extension>]
    static member Points(q: Report.QueryOutcome) : ResultPoint[] =
        let at (xs: float[]) i = if i < xs.Length then xs[i] else nan

        match q.Kind with
        | "samples"
        | "samples_every" -> [||]
        | "ess" -> [| { Index = -1; X = nan; Y = nan; Value = q.Value; StdErr = 0.0 } |]
        | "density2d" ->
            let nx = q.Grid.Length

            Array.init q.Values.Length (fun i ->
                { Index = i; X = at q.Grid (i % nx); Y = at q.GridY (i / nx); Value = q.Values[i]; StdErr = at q.StdErrs i })
        | "lyapunov"
        | "mean_series" ->
            Array.init q.Values.Length (fun i -> { Index = i; X = at q.Grid i; Y = nan; Value = q.Values[i]; StdErr = at q.StdErrs i })
        | _ when Report.isBinned q ->
            Array.init q.Values.Length (fun i -> { Index = i; X = at q.Grid i; Y = nan; Value = q.Values[i]; StdErr = at q.StdErrs i })
        | _ -> [| { Index = -1; X = nan; Y = nan; Value = q.Value; StdErr = q.StdErr } |]

    /// The result as the table prints it: the query, then its value ± standard error, or a density's
    /// sparkline and summary, a spectrum, a series, ... and its warnings (lines separated by \n).
    [<Runtime.CompilerServices.Extension>]
    static member Text(q: Report.QueryOutcome) : string = Output.resultText q

/// Settings that override the file's (`--set`, `--params`, `--paths`, `--dt`, `--T`, `--seed`).
type Overrides = Frontend.Overrides

/// A compiled `.sde` program: its checked model, the emitted model type and the query plans.
[<Sde.Lang.Formatting.TypeFormatterSource(typeof<Sde.Lang.Formatting.SdeFormatterSource>)>]
type CompiledProgram internal (program: Driver.Program, warnings: SourceDiagnostic list, fit: FitCheck.FitSpec option, text: string) =
    /// The compiler's warnings (a file without queries, an unused brownian): located, rendered like
    /// the errors with `warning:`; a run goes ahead (the CLI fails it with `--strict`).
    member _.Warnings = warnings
    /// The model's name.
    member _.ModelName = program.File.Model.Name
    /// Names of the parameters, in order.
    member _.Parameters = program.File.Model.Params |> List.map (fun p -> p.Name) |> List.toArray
    /// Names of the parameter sets that a run goes through.
    member _.ParameterSets = program.File.Sets |> List.map (fun s -> s.Name) |> List.toArray
    /// The emitted value type implementing `Sde.Core.ISdeModel` (for direct use of the engine).
    member _.ModelType = program.Compiled.Type
    /// The user's state components (a weight's hidden states, log w and log_density, not counted).
    member _.Dimension =
        program.Compiled.Ir.Dim
        - (match program.File.Weight with
           | Some w -> 1 + (if w.DensityState.IsSome then 1 else 0)
           | None -> 0)
    /// The emitted model's state dimension (`ModelType`'s `Dim`: with a weight's hidden states).
    member _.ModelDimension = program.Compiled.Ir.Dim
    /// The simulation settings in force (the file's, after overrides).
    member _.Settings = program.File.Settings
    /// The driver's program (the plans behind the queries; used by sharded runs).
    member _.Program = program

    /// Simulate and answer every query for every parameter set.
    /// `backend`: "cpu" (default), "ilgpu-cpu", "cuda" or "auto" (CUDA when a device is present, else cpu).
    member _.Run(?threads: int, ?progress: Action<float>, ?backend: string) : Report.RunReport =
        let opts =
            { Driver.defaultOptions with
                Backend = backend |> Option.filter (isNull >> not) |> Option.defaultValue "cpu"
                Threads = defaultArg threads 0
                // an explicit null (C#, or F# positional arguments) is no progress, not Some null
                Progress = progress |> Option.filter (isNull >> not) |> Option.map (fun a -> fun x -> a.Invoke x) }

        match program.File.Settings.Multilevel with
        | Some _ ->
            // `accuracy = ...`: the multilevel engine (the level table is in `Multilevel.run`'s info)
            match Multilevel.run program opts with
            | report, _, [] -> report
            | _, _, e :: _ -> Runtime.ExceptionServices.ExceptionDispatchInfo.Throw e; Unchecked.defaultof<_>
        | None -> Driver.run program opts

    /// C#-friendly `Run`: all cores, no progress.
    member p.Simulate() : Report.RunReport = p.Run()

    /// Does the file have a `fit` block?
    member _.HasFit = fit.IsSome

    /// The checked `fit` block, if any.
    member _.FitSpec = fit

    /// The source text.
    member _.Text = text

    /// Fits the params of the file's `fit` block to its data (docs/fitting.md), starting from the first
    /// parameter set (after overrides). `dataDir`: the folder the data file's name is relative to
    /// (default: the current folder; `dsl fit` passes the .sde file's folder). `progress` is called after
    /// each evaluation of the objective. Errors (the data's, a fit whose paths blow up) are located
    /// in the source; the report is what `fit.json` holds (`Fit.toJson`, `Fit.write`). `backend`: where the
    /// simulations run, as `dsl fit --backend` (default "cpu").
    member _.Fit(?threads: int, ?progress: Action<Fit.FitStep>, ?dataDir: string, ?backend: string) : Result<Fit.FitReport, SourceDiagnostic list> =
        let file = program.Source

        let located (ds: Syntax.Diagnostic list) =
            ds
            |> List.map (fun d ->
                { File = file
                  Line = d.Pos.Line
                  Col = d.Pos.Col
                  Message = d.Message
                  Rendered = Diagnostics.formatAs "error" file text d
                  Severity = "error" })

        match fit with
        | None ->
            let m = "the file has no 'fit' block; add one, e.g. fit theta to \"data.csv\" { objective = kl at T }"
            Error [ { File = file; Line = 0; Col = 0; Message = m; Rendered = sprintf "%s: error: %s" file m; Severity = "error" } ]
        | Some spec ->
            let opts =
                { Fit.defaultFitOptions with
                    Threads = defaultArg threads 0
                    Progress = progress |> Option.filter (isNull >> not) |> Option.map (fun a -> fun s -> a.Invoke s)
                    BaseDir = defaultArg dataDir "."
                    Backend = defaultArg backend "cpu" }

            Fit.fit file program.File spec opts |> Result.mapError (fun e -> located e.Diagnostics)

    /// C#-friendly `Run`: `threads` = 0 for all cores; `progress` may be null.
    member p.Simulate(threads: int, progress: Action<float>) : Report.RunReport =
        if isNull progress then p.Run(threads) else p.Run(threads, progress)

/// The embedding API: compile `.sde` text, then run it. Usable from F# and C#.
type SdeCompiler =
    static member private LocatedAs (severity: string) (file: string) (source: string) (ds: Syntax.Diagnostic list) =
        ds
        |> Diagnostics.sort
        |> List.map (fun d ->
            { File = file
              Line = d.Pos.Line
              Col = d.Pos.Col
              Message = d.Message
              Rendered = Diagnostics.formatAs severity file source d
              Severity = severity })

    static member private Located file source ds = SdeCompiler.LocatedAs "error" file source ds

    /// Parse, check and compile; the diagnostics are located in `fileName`.
    static member Compile(source: string, ?fileName: string, ?overrides: Overrides) : Result<CompiledProgram, SourceDiagnostic list> =
        let file = match fileName with Some f when not (isNull f) -> f | _ -> "input.sde"

        if isNull source then
            // an embedding caller's null is an input error like any other, not an exception
            Error [ { File = file; Line = 0; Col = 0; Message = "no source text (null)"; Rendered = sprintf "%s: error: no source text (null)" file; Severity = "error" } ]
        else

        match Frontend.compileWithFit file source with
        | Error ds -> Error(SdeCompiler.Located file source ds)
        | Ok (cf, fit) ->
            let applied =
                match overrides with
                | Some o ->
                    Frontend.applyOverrides cf o
                    |> Result.mapError (fun msg ->
                        // A command-line setting has no place in the source: the message names the option.
                        [ { File = file; Line = 0; Col = 0; Message = msg; Rendered = sprintf "%s: error: %s" file msg; Severity = "error" } ])
                | None -> Ok cf

            applied
            |> Result.bind (fun cf ->
                Driver.prepare file cf
                |> Result.map (fun p -> CompiledProgram(p, SdeCompiler.LocatedAs "warning" file source cf.Warnings, fit, source))
                |> Result.mapError (SdeCompiler.Located file source))

    /// C#-friendly: returns null and fills `diagnostics` when the source has errors.
    static member TryCompile(source: string, fileName: string, [<Runtime.InteropServices.Out>] diagnostics: byref<SourceDiagnostic[]>) : CompiledProgram =
        match SdeCompiler.Compile(source, fileName) with
        | Ok p ->
            diagnostics <- [||]
            p
        | Error ds ->
            diagnostics <- List.toArray ds
            Unchecked.defaultof<_>

    /// C#-friendly `Compile` with overrides (see `MakeOverrides`): null and `diagnostics` filled on errors.
    static member TryCompile(source: string, fileName: string, overrides: Overrides, [<Runtime.InteropServices.Out>] diagnostics: byref<SourceDiagnostic[]>) : CompiledProgram =
        match SdeCompiler.Compile(source, fileName, overrides) with
        | Ok p ->
            diagnostics <- [||]
            p
        | Error ds ->
            diagnostics <- List.toArray ds
            Unchecked.defaultof<_>

    /// C#-friendly construction of `Overrides`: nulls leave the file's values; `sets` may be null.
    static member MakeOverrides
        (
            paths: Nullable<int64>,
            dt: Nullable<float>,
            t: Nullable<float>,
            seed: Nullable<uint64>,
            paramsName: string,
            sets: Collections.Generic.IDictionary<string, float>
        ) : Overrides =
        let opt (n: Nullable<'a>) = if n.HasValue then Some n.Value else None

        { Sets = if isNull sets then [] else sets |> Seq.map (fun kv -> kv.Key, kv.Value) |> List.ofSeq
          ParamsName = Option.ofObj paramsName
          Paths = opt paths
          Dt = opt dt
          T = opt t
          Seed = opt seed }

    /// The results as the JSON of the language contract.
    static member ToJson(report: Report.RunReport) = Output.toJson report

    /// The results as CSV, one row per estimate (docs/language.md, section 11).
    static member ToCsv(report: Report.RunReport) = Output.toCsv report
