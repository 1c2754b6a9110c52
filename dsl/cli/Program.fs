/// The `dsl` command-line tool: `dsl run FILE`, `dsl check FILE`, `dsl merge DIR...`, `dsl slurm FILE`.
module Sde.Cli.Program

open System
open System.IO
open Argu
open Sde
open Sde.Core
open Sde.Lang

type FitArgs =
    | [<MainCommand; ExactlyOnce>] File of path: string
    | [<EqualsAssignmentOrSpaced>] Out of dir: string
    | Json
    | [<EqualsAssignmentOrSpaced>] Set of assignment: string
    | [<EqualsAssignmentOrSpaced>] Params of name: string
    | [<EqualsAssignmentOrSpaced>] Paths of n: string
    | [<EqualsAssignmentOrSpaced>] Dt of dt: float
    | [<CustomCommandLine("--T"); EqualsAssignmentOrSpaced>] Horizon of T: float
    | [<EqualsAssignmentOrSpaced>] Seed of seed: string
    | [<EqualsAssignmentOrSpaced>] Threads of n: int
    | [<EqualsAssignmentOrSpaced>] Iterations of n: int
    | [<EqualsAssignmentOrSpaced>] Backend of name: string
    | Quiet

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .sde file with a fit block (its data file is relative to the file's folder)."
            | Out _ -> "write fit.json, fit_loss.svg and one fit_param_NAME.svg per fitted param into this folder."
            | Json -> "print fit.json on standard output (the progress lines go to standard error)."
            | Set _ -> "override a parameter's start value, e.g. --set theta=2 (repeatable)."
            | Params _ -> "start from the named parameter set (default: the first)."
            | Paths _ -> "paths per evaluation (overrides the file's simulate block; the fit's own 'paths' wins)."
            | Dt _ -> "time step (overrides the file)."
            | Horizon _ -> "final time T (overrides the file)."
            | Seed _ -> "random seed (overrides the file)."
            | Threads _ -> "worker threads (default: all cores)."
            | Iterations _ -> "the fit's iterations (overrides its 'iterations' setting), e.g. --iterations 5 for a quick try."
            | Backend _ -> "cpu | ilgpu-cpu | cuda | auto: where the fit's simulations run (default cpu; auto: CUDA when a device is present and its kernels can run the fit)."
            | Quiet -> "no progress lines."

type RunArgs =
    | [<MainCommand; Mandatory>] Files of paths: string list
    | [<EqualsAssignmentOrSpaced>] Out of dir: string
    | Json
    | Csv
    | [<EqualsAssignmentOrSpaced>] Set of assignment: string
    | [<EqualsAssignmentOrSpaced>] Params of name: string
    | [<EqualsAssignmentOrSpaced>] Paths of n: string
    | [<EqualsAssignmentOrSpaced>] Dt of dt: float
    | [<CustomCommandLine("--T"); EqualsAssignmentOrSpaced>] Horizon of T: float
    | [<EqualsAssignmentOrSpaced>] Seed of seed: string
    | [<EqualsAssignmentOrSpaced>] Threads of n: int
    | [<EqualsAssignmentOrSpaced>] Backend of name: string
    | Quiet
    | Strict
    | [<EqualsAssignmentOrSpaced>] Shard of spec: string
    | Force
    | [<EqualsAssignmentOrSpaced>] Plan of file: string
    | Plan_Only

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Files _ -> "the .sde file(s) to run, in order (- reads the model from standard input)."
            | Shard _ -> "K/N: run only paths K*P/N .. (K+1)*P/N - 1 of every parameter set and write their exact sums into --out (merge with dsl merge); auto or auto/N: K (and N) from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or JOB_COMPLETION_INDEX."
            | Force -> "with --shard: rerun the shard even when its complete partial file is already there."
            | Plan _ -> "a multilevel run (accuracy = ...) with the fixed level plan in this file (made by --plan-only), whole or with --shard K/N; with --plan-only, the file the plan is written to."
            | Plan_Only -> "a multilevel run's pilot only: write its fixed level plan (levels, steps, paths per level) to --plan FILE, for runs split with --shard (docs/mlmc.md)."
            | Out _ -> "write results.json and one SVG plot per density query into this folder."
            | Json -> "print the results as JSON on standard output (instead of the table)."
            | Csv -> "with --out: also write results.csv (one row per estimate); without: print the CSV on standard output (instead of the table or JSON)."
            | Set _ -> "override a parameter in every set, e.g. --set F=9 (repeatable)."
            | Params _ -> "run only the named parameter set."
            | Paths _ -> "number of paths (overrides the file)."
            | Dt _ -> "time step (overrides the file)."
            | Horizon _ -> "final time T (overrides the file)."
            | Seed _ -> "random seed (overrides the file)."
            | Threads _ -> "worker threads (default: all cores)."
            | Backend _ -> "cpu | ilgpu-cpu | cuda | auto (default auto: CUDA when a device is present, otherwise the CPU engine; ilgpu-cpu runs the GPU kernels on the CPU)."
            | Quiet -> "no progress bar."
            | Strict -> "exit with code 3 when a result carries a warning (e.g. heavy-tailed kernel weights); the results are still printed and written."

type CheckArgs =
    | [<MainCommand; Mandatory>] Files of paths: string list
    | Ito

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Files _ -> "the .sde file(s) to parse and check (- reads standard input)."
            | Ito -> "also print each state component's Itô drift, as every estimator uses it (for 'calculus stratonovich', the converted drift)."

type FormatArgs =
    | [<MainCommand; Mandatory>] Files of paths: string list
    | Check

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Files _ -> "the .sde file(s) to rewrite in the canonical layout (- reads standard input and writes standard output)."
            | Check -> "change nothing; exit 1 when a file would change."

type LspArgs =
    | [<Hidden>] Stdio

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Stdio -> "talk on standard input and output (the default and only transport)."

type CompileArgs =
    | [<MainCommand; ExactlyOnce>] File of path: string
    | [<EqualsAssignmentOrSpaced>] Target of target: string
    | [<EqualsAssignmentOrSpaced>] Out of dir: string
    | [<EqualsAssignmentOrSpaced>] Arch of arch: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .sde file to compile."
            | Target _ -> "what to produce: ptx (default ptx)."
            | Out _ -> "write one <model>.<kernel>.ptx file per kernel into this folder."
            | Arch _ -> "CUDA architecture, e.g. sm_70 (default), sm_80, sm_90."

type MergeArgs =
    | [<MainCommand; ExactlyOnce>] Inputs of paths: string list
    | [<EqualsAssignmentOrSpaced>] Out of dir: string
    | Json
    | Csv
    | Quiet
    | Strict

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Inputs _ -> "folders of shards (their *.partial files) or partial files."
            | Out _ -> "write results.json and the plots into this folder."
            | Json -> "print the results as JSON on standard output (instead of the table)."
            | Csv -> "with --out: also write results.csv; without: print the CSV on standard output (instead of the table or JSON)."
            | Quiet -> "no summary line on standard error."
            | Strict -> "exit with code 3 when a result carries a warning."

type SlurmArgs =
    | [<MainCommand; ExactlyOnce>] File of path: string
    | [<Mandatory; EqualsAssignmentOrSpaced>] Shards of n: int
    | [<EqualsAssignmentOrSpaced>] Partition of name: string
    | [<EqualsAssignmentOrSpaced>] Time of hhmmss: string
    | [<EqualsAssignmentOrSpaced>] Cpus of n: int
    | [<EqualsAssignmentOrSpaced>] Mem of size: string
    | [<EqualsAssignmentOrSpaced>] Out of dir: string
    | [<CustomCommandLine("--sbatch-arg"); EqualsAssignmentOrSpaced>] Sbatch_Arg of arg: string
    | Submit
    | [<EqualsAssignmentOrSpaced>] Set of assignment: string
    | [<EqualsAssignmentOrSpaced>] Params of name: string
    | [<EqualsAssignmentOrSpaced>] Paths of n: string
    | [<EqualsAssignmentOrSpaced>] Dt of dt: float
    | [<CustomCommandLine("--T"); EqualsAssignmentOrSpaced>] Horizon of T: float
    | [<EqualsAssignmentOrSpaced>] Seed of seed: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .sde file to run on the cluster."
            | Shards _ -> "number of shards (array tasks)."
            | Partition _ -> "sbatch --partition."
            | Time _ -> "sbatch --time of each task (HH:MM:SS)."
            | Cpus _ -> "sbatch --cpus-per-task of each shard (its threads)."
            | Mem _ -> "sbatch --mem of each task (e.g. 4G)."
            | Out _ -> "the run's folder: scripts, logs/, shards/ and the merged results (default: <model>-slurm)."
            | Sbatch_Arg _ -> "any other sbatch option, for both jobs (repeatable), e.g. --sbatch-arg=--account=abc."
            | Submit -> "submit both jobs with sbatch and print their ids."
            | Set _ -> "override a parameter in every set (forwarded to every shard; repeatable)."
            | Params _ -> "run only the named parameter set."
            | Paths _ -> "number of paths (overrides the file)."
            | Dt _ -> "time step (overrides the file)."
            | Horizon _ -> "final time T (overrides the file)."
            | Seed _ -> "random seed (overrides the file)."

type Cli =
    | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<RunArgs>
    | [<CliPrefix(CliPrefix.None)>] Merge of ParseResults<MergeArgs>
    | [<CliPrefix(CliPrefix.None)>] Slurm of ParseResults<SlurmArgs>
    | [<CliPrefix(CliPrefix.None)>] Check of ParseResults<CheckArgs>
    | [<CliPrefix(CliPrefix.None)>] Fit of ParseResults<FitArgs>
    | [<CliPrefix(CliPrefix.None)>] Compile of ParseResults<CompileArgs>
    | [<CliPrefix(CliPrefix.None)>] Format of ParseResults<FormatArgs>
    | [<CliPrefix(CliPrefix.None)>] Lsp of ParseResults<LspArgs>
    | Version

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Run _ -> "simulate a model and answer its queries (options: dsl run --help; --strict exits 3 when a result carries a warning; --shard K/N runs one shard)."
            | Merge _ -> "merge the partial files of a sharded run into its results (bit for bit those of the unsplit run)."
            | Slurm _ -> "write (and with --submit, submit) a Slurm job array of shards and the job that merges them."
            | Check _ -> "only parse and check a model."
            | Fit _ -> "fit the params of a file's fit block to its data (docs/fitting.md): progress, fitted values, fit.json and plots."
            | Compile _ -> "compile a model's GPU kernels (PTX), without a GPU."
            | Format _ -> "rewrite .sde files in the canonical layout, comments kept (--check: exit 1 when a file would change)."
            | Lsp _ -> "a Language Server Protocol server on standard input and output, for editors (docs/editors.md)."
            | Version -> "print the version."

let private exitInput = 2
let private exitRun = 3

let private eprintfn fmt = Printf.kprintf (fun s -> Console.Error.WriteLine s) fmt

let private version () =
    let v = Reflection.Assembly.GetExecutingAssembly().GetName().Version
    sprintf "dsl %d.%d.%d" v.Major v.Minor v.Build

/// An error in the command line itself, before or apart from any file: `dsl: error: MESSAGE`
/// (an option's error starts with the option, `dsl: error: --seed: ...`); exit 2.
let private usageError (m: string) =
    eprintfn "dsl: error: %s" m
    exitInput

/// An error that concerns a file but no place in it (a file that cannot be read, an override the
/// file refuses, a run that failed): `FILE: error: MESSAGE`.
let private fileError (file: string) (m: string) = eprintfn "%s: error: %s" file m

/// `-` reads the model from standard input; diagnostics name it `<stdin>`.
let private stdinName = "<stdin>"

let private displayName (path: string) = if path = "-" then stdinName else path

/// At most `Frontend.maxSourceBytes` are read (one more to know that there are more): a larger
/// input, or an endless one such as /dev/zero (whose length reads as 0), is refused unread.
let private readCapped (stream: Stream) : Result<string, string> =
    let cap = Frontend.maxSourceBytes
    let buffer = Array.zeroCreate<byte> (cap + 1)
    let mutable total = 0
    let mutable reading = true

    while reading && total <= cap do
        let n = stream.Read(buffer, total, buffer.Length - total)
        if n = 0 then reading <- false else total <- total + n

    if total > cap then
        Error(sprintf "the file is larger than %d bytes, the most a model file may have" cap)
    else
        use reader = new StreamReader(new MemoryStream(buffer, 0, total), Text.Encoding.UTF8, true)
        Ok(reader.ReadToEnd())

/// The source of a model, or why it cannot be read (an error naming the file, not a place in it).
let private readSource (path: string) : Result<string, string> =
    if path = "-" then
        try
            use stdin = Console.OpenStandardInput()
            readCapped stdin
        with ex ->
            Error(sprintf "cannot read standard input: %s" ex.Message)
    elif Directory.Exists path then
        Error "is a directory, not a .sde file"
    else
        try
            // a FIFO without a writer reads as empty instead of blocking forever (Files.openRead)
            use stream = Files.openRead path
            readCapped stream
        with
        | :? FileNotFoundException
        | :? DirectoryNotFoundException -> Error "no such file"
        | :? UnauthorizedAccessException -> Error "permission denied: the file cannot be read"
        | ex -> Error(sprintf "cannot read the file: %s" ex.Message)

let private printDiagnostics (ds: SourceDiagnostic list) =
    for d in ds do
        Console.Error.WriteLine d.Rendered

let private parseAssignment (s: string) : Result<(string * float) list, string> =
    let number (value: string) =
        match Double.TryParse(value.Trim(), Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
        | true, v -> Ok v
        | _ -> Error(sprintf "--set %s: '%s' is not a number" s (value.Trim()))

    match s.Split('=', 2) with
    | [| name; value |] when value.Trim().StartsWith "[" && value.Trim().EndsWith "]" ->
        // a vector's whole value, `a=[1,2]`: the count as `a[]` (checked against the vector's size), then the components
        let name = name.Trim()
        let items = value.Trim().[1 .. value.Trim().Length - 2].Split(',')

        if items.Length = 1 && items[0].Trim() = "" then
            Error(sprintf "--set %s: the list is empty" s)
        else
            match items |> Array.map number |> Array.tryPick (function Error e -> Some e | _ -> None) with
            | Some e -> Error e
            | None ->
                let vs = items |> Array.map (fun v -> match number v with Ok x -> x | Error _ -> nan)
                Ok((name + "[]", float vs.Length) :: (vs |> Array.toList |> List.mapi (fun k v -> sprintf "%s[%d]" name k, v)))
    | [| name; value |] -> number value |> Result.map (fun v -> [ name.Trim(), v ])
    | _ -> Error(sprintf "--set %s: expected NAME=VALUE" s)

/// Read and compile a file; its errors (located, or naming the option of an override) and its
/// warnings are printed; on failure the exit code.
let private compileSource (path: string) (overrides: Overrides) : Result<CompiledProgram * string, int> =
    let name = displayName path

    match readSource path with
    | Error e ->
        fileError name e
        Error exitInput
    | Ok text ->
        match SdeCompiler.Compile(text, name, overrides) with
        | Ok p ->
            printDiagnostics p.Warnings
            Ok(p, text)
        | Error ds ->
            printDiagnostics ds
            Error exitInput

let private compileFile (path: string) (overrides: Overrides) : Result<CompiledProgram, int> =
    compileSource path overrides |> Result.map fst

/// The options of a command (`--paths`, `--T`, ...), as it spells them.
let private optionsOf<'T when 'T :> IArgParserTemplate> () : string list =
    "--help" :: (ArgumentParser.Create<'T>().GetArgumentCases() |> List.collect (fun c -> c.CommandLineNames.Value))

/// The command names (`run`, `fit`, ...).
let private commandNames = [ "run"; "merge"; "slurm"; "check"; "fit"; "compile"; "format"; "lsp"; "--version"; "--help" ]

/// `; did you mean '--params'?` for a misspelt option or command (the checker's rule for names).
let private didYouMean (given: string) (known: string list) = Checker.suggest given known

/// The files of a command, as given, and what is wrong with them as a list: `-` (standard input,
/// read once) given twice, or an unknown option (Argu hands an unknown `--x` to the file list).
let private filesProblem (options: string list) (files: string list) =
    match files |> List.tryFind (fun f -> f.StartsWith "-" && f <> "-" && not (File.Exists f)) with
    | _ when files.IsEmpty -> Some "no model file given (a .sde file, or - for standard input)"
    | Some o ->
        let name = o.Split('=').[0]
        Some(sprintf "unknown option '%s'%s (dsl --help lists the commands, dsl COMMAND --help their options)" name (didYouMean name options))
    | None when (files |> List.filter ((=) "-")).Length > 1 -> Some "- (standard input) may be given once"
    | None -> None

let private check (args: ParseResults<CheckArgs>) =
    let files = args.GetResults CheckArgs.Files |> List.concat

    match filesProblem (optionsOf<CheckArgs> ()) files with
    | Some m -> usageError m
    | None ->
        files
        |> List.map (fun path ->
            match compileFile path Frontend.noOverrides with
            | Error code -> code
            | Ok p ->
                // p.Dimension: the user's state components (a weight's hidden states not counted)
                let weighted =
                    match p.Program.File.Weight with
                    | Some w -> sprintf ", weight '%s'" w.Name
                    | None -> ""
                printfn "%s: ok (model %s, %d state components%s, %d parameter set(s))" (displayName path) p.ModelName p.Dimension weighted p.ParameterSets.Length

                if args.Contains CheckArgs.Ito then
                    let model = p.Program.File.Model
                    printfn "Itô drift (calculus %s):" (match model.Calculus with Checked.Ito -> "ito" | Checked.Stratonovich -> "stratonovich")

                    for name, drift in Lower.itoDrifts p.Dimension model do
                        printfn "  %s: %s" name drift

                0)
        |> List.fold max 0

/// `--out DIR` made ready before anything runs: the folder created, and a file written and removed
/// in it; or why not (an existing regular file, a place that cannot be written).
let private prepareOut (dir: string) : Result<unit, string> =
    if File.Exists dir then
        Error(sprintf "--out %s: is a file; --out names a folder" dir)
    else
        try
            Directory.CreateDirectory dir |> ignore
            let probe = Path.Combine(dir, sprintf ".dsl-write-test-%d" Environment.ProcessId)
            File.WriteAllText(probe, "")
            File.Delete probe
            Ok()
        with ex ->
            Error(sprintf "--out %s: cannot write there: %s" dir ex.Message)

let private compile (args: ParseResults<CompileArgs>) =
    let path = args.GetResult CompileArgs.File

    match args.GetResult(Target, "ptx") with
    | t when t <> "ptx" -> usageError (sprintf "--target: unknown target '%s' (available: ptx)" t)
    | _ ->
    let arch = try Ok(Gpu.Ptx.ParseArch(args.GetResult(Arch, "sm_70"))) with :? ArgumentException as e -> Error e.Message

    match arch, args.TryGetResult CompileArgs.Out with
    | Error m, _ -> usageError (sprintf "--arch: %s" m)
    | _, None -> usageError "--out DIR is required (the folder for the PTX files)"
    | Ok arch, Some dir ->
        match compileSource path Frontend.noOverrides with
        | Error code -> code
        | Ok (p, text) ->
        let name = displayName path
        let located (severity: string) (pos: Syntax.Pos) (m: string) =
            Console.Error.WriteLine(Diagnostics.formatAs severity name text { Pos = pos; Message = m })

        let weighted = p.Program.File.Weight.IsSome
        // what `dsl run` on a GPU backend refuses or leaves to the CPU engine is said here, not written silently
        match p.Program.File.Weight with
        | Some w ->
            // a weighted run uses the weighted step kernel only (the population operations run on the host)
            located "warning" w.Pos (sprintf "'weight %s' makes a weighted (Feynman-Kac) model: only its weighted_step kernel is written (weights, resampling and log_density run on the host); 'dsl run --backend ilgpu-cpu' runs it, but '--backend cuda' refuses it until the kernel is checked on a device (DSL_CUDA_WEIGHTED=1 lifts the refusal)" w.Name)
        | None ->
            for (q, j) in p.Program.Jobs do
                match j with
                | Driver.ResponseJob (plans, _, m, _) when plans |> List.exists (fun pl -> pl.Method <> ResponseMethod.FiniteDifference) ->
                    located "warning" q.Pos (sprintf "'%s' uses %s, which the cuda backend does not run yet (only finite_difference responses are enabled on CUDA): the PTX is written, but 'dsl run --backend cuda' refuses this query" q.Text m)
                | Driver.AlignmentJob _ ->
                    located "warning" q.Pos (sprintf "'%s' cannot run on the cuda backend yet: the PTX is written, but 'dsl run --backend cuda' refuses this query" q.Text)
                | Driver.SamplesJob _
                | Driver.ScoreJob _ ->
                    // recorded by the tangent kernel: its refusals (degenerate noise), and cuda's until DSL_CUDA_TANGENT=1
                    match Driver.recordRefusal p.Program "ilgpu-cpu" j with
                    | Some why -> located "warning" q.Pos (sprintf "'%s': %s: the PTX is written, but 'dsl run --backend ilgpu-cpu|cuda' refuses this query" q.Text why)
                    | None ->
                        located "warning" q.Pos (sprintf "'%s' is recorded by the tangent kernel, which the cuda backend does not run yet: the PTX is written, but 'dsl run --backend cuda' refuses this query (ilgpu-cpu runs it)" q.Text)
                | _ -> ()

            let s = p.Program.File.Settings
            if s.Extrapolate = "richardson" then
                let lines = text.Split('\n')
                let line = lines |> Array.tryFindIndex (fun l -> l.Contains "extrapolate") |> Option.defaultValue 0
                let col = if line < lines.Length then max 0 (lines[line].IndexOf "extrapolate") else 0
                located "warning" ({ Line = line + 1; Col = col + 1 }: Syntax.Pos) "extrapolate = richardson runs coupled pairs on the CPU engine only: the PTX is written, but 'dsl run --backend ilgpu-cpu|cuda' refuses this file"

        match p.Program.File.Settings.Multilevel with
        | Some ml ->
            located "warning" ml.Pos "a multilevel run (accuracy) runs on the CPU engine only: the PTX is written, but 'dsl run --backend ilgpu-cpu|cuda' refuses this file"
        | None -> ()

        match prepareOut dir with
        | Error m -> usageError m
        | Ok() ->
            try
                for (name, ptx) in Gpu.Ptx.Compile(p.ModelType, arch, weighted) do
                    let file = Path.Combine(dir, sprintf "%s.%s.ptx" p.ModelName name)
                    File.WriteAllText(file, ptx)
                    printfn "%s" file

                0
            with ex ->
                fileError (displayName path) ex.Message
                exitRun

// ---------------------------------------------------------------------------------------------
// Signals: SIGINT (Ctrl-C) and SIGTERM stop the run
// ---------------------------------------------------------------------------------------------

/// Cancelled by the first SIGINT or SIGTERM: the set being simulated stops, no later set starts, and
/// what finished is written (or, during the writing, nothing is). A second signal ends the process
/// at once (files are written under temporary names, so it leaves no file that a later command takes).
let private interrupt = new Threading.CancellationTokenSource()

/// Set while the output files are written: a signal then abandons the writing (the staging folder is
/// removed, nothing is renamed in) instead of ending the process with the folder left behind.
let private writing = new Threading.CancellationTokenSource()
let private writingNow = ref false

let private onSignal (ctx: Runtime.InteropServices.PosixSignalContext) =
    if writingNow.Value then
        ctx.Cancel <- true
        writing.Cancel()
    elif not interrupt.IsCancellationRequested then
        ctx.Cancel <- true
        Console.Error.WriteLine(sprintf "\ndsl: %s: stopping; the parameter sets that finished are kept (signal again to end at once)" (string ctx.Signal))
        interrupt.Cancel()

/// Registered for the life of the process (a registration that is collected stops handling).
let private signalHandlers =
    lazy
        [ Runtime.InteropServices.PosixSignalRegistration.Create(Runtime.InteropServices.PosixSignal.SIGINT, Action<_>(onSignal))
          Runtime.InteropServices.PosixSignalRegistration.Create(Runtime.InteropServices.PosixSignal.SIGTERM, Action<_>(onSignal)) ]

/// Runs `write` into a staging folder inside `dir`, then renames what it wrote into `dir`, `main`
/// (the file that names the others: results.json, fit.json) last: a command stopped while writing (a
/// full disk, a signal) leaves the previous files or the new ones, never a cut file that `main` names.
/// `stop ()` (to call between files) throws once a signal arrived during the writing. The staging
/// folder is removed in every case.
let private writeStaged (dir: string) (main: string) (write: string -> (unit -> unit) -> 'a) : 'a =
    Directory.CreateDirectory dir |> ignore
    let stage = Path.Combine(dir, sprintf ".dsl-writing-%d" Environment.ProcessId)
    let stop () =
        if writing.IsCancellationRequested then
            raise (OperationCanceledException "interrupted while writing the results: nothing was written")

    // a signal while writing abandons the writing (the commands that do not watch for signals before
    // this point, merge and fit, are simply ended by one then: nothing written)
    signalHandlers.Force() |> ignore

    try
        writingNow.Value <- true
        stop ()
        Directory.CreateDirectory stage |> ignore
        let result = write stage stop
        stop ()
        let files = Directory.GetFiles stage |> Array.sortBy (fun f -> Path.GetFileName f = main, f)
        for f in files do
            File.Move(f, Path.Combine(dir, Path.GetFileName f), true)
        result
    finally
        writingNow.Value <- false
        try
            if Directory.Exists stage then Directory.Delete(stage, true)
        with _ -> ()

/// Writes every output file of a report (results.json, results.csv, plots, samples files), staged.
let private writeOut (dir: string) (csv: bool) (report: Report.RunReport) =
    writeStaged dir "results.json" (fun stage stop ->
        File.WriteAllText(Path.Combine(stage, "results.json"), Output.toJson report)
        stop ()
        if csv then File.WriteAllText(Path.Combine(stage, "results.csv"), Output.toCsv report)
        Plot.writeSweeps stage report |> ignore
        stop ()
        Output.writeSamples stage report |> ignore

        for set in report.Sets do
            set.Results
            |> List.iteri (fun i q ->
                stop ()
                if Report.isBinned q then
                    Plot.writeDensity (Path.Combine(stage, Plot.fileName set.Name i q)) q report.Model set.Name
                elif q.Kind = "density2d" then
                    Plot.writeHeatMap (Path.Combine(stage, Plot.fileName set.Name i q)) q report.Model set.Name
                elif q.Kind = "lyapunov" then
                    Plot.writeSpectrum (Path.Combine(stage, Plot.fileName set.Name i q)) q report.Model set.Name
                elif q.Kind = "mean_series" then
                    Plot.writeTimeSeries (Path.Combine(stage, Plot.fileName set.Name i q)) q report.Model set.Name))

/// Prints the table, or with --csv and no --out the CSV (with --json the caller prints the JSON), writes
/// --out, repeats the results' warnings on standard error; the exit code (--strict: 3 when a result or
/// the file carries a warning).
let private present (path: string) (json: bool) (csv: bool) (out: string option) (strict: bool) (report: Report.RunReport) =
    if csv && out.IsNone then
        Console.Out.Write(Output.toCsv report)
    elif not json then
        Console.Out.Write(Output.tableWith (Output.useColor ()) report)

    // an interrupted run with no finished set leaves nothing (rather than a results.json without results)
    let interruptedEmpty =
        report.Sets |> List.forall (fun s -> s.Failure.IsSome)
        && report.Sets |> List.exists (fun s -> s.Failure = Some Driver.interruptedMessage)

    if not interruptedEmpty then out |> Option.iter (fun dir -> writeOut dir csv report)

    // warnings also on standard error: with --json the table's warning lines are not seen
    let warnings =
        [ for set in report.Sets do
              for q in set.Results do
                  for m in q.Warnings -> sprintf "%s: warning: set %s, '%s': %s" path set.Name q.Query m ]

    warnings |> List.iter (fun w -> Console.Error.WriteLine w)

    // the sets that failed: after the others' results were printed and written, the run fails (exit 3)
    let failed = report.Sets |> List.choose (fun s -> s.Failure |> Option.map (fun m -> s.Name, m))

    for (set, m) in failed do
        if report.Sets.Length = 1 then fileError path m else fileError path (sprintf "set %s: %s" set m)

    if not failed.IsEmpty then exitRun
    // --strict: a result or a file that carries any warning fails the run (after it was printed and written)
    elif strict && not (warnings.IsEmpty && report.Warnings.IsEmpty) then exitRun
    else 0

let private env (name: string) =
    match Environment.GetEnvironmentVariable name with
    | null
    | "" -> None
    | v -> Some v

/// The progress callback `update`, also watching the rate of the first second of progress: a run
/// whose estimated total exceeds `longRunSeconds` says so once on standard error, with the estimate.
let private longRunSeconds = 30.0

let private withEstimate (name: string) (update: float -> unit) : float -> unit =
    let clock = Diagnostics.Stopwatch.StartNew()
    // [| time of the first report; its fraction; decided (0/1) |], guarded by the lock
    let state = [| nan; nan; 0.0 |]

    fun (f: float) ->
        update f

        if state[2] = 0.0 && Double.IsFinite f then
            lock state (fun () ->
                let t = clock.Elapsed.TotalSeconds

                if state[2] = 0.0 then
                    if Double.IsNaN state[0] then
                        state[0] <- t
                        state[1] <- f
                    elif t - state[0] >= 1.0 && f > state[1] then
                        state[2] <- 1.0
                        // from the rate since the first report (the JIT warm-up and setup excluded)
                        let rate = (f - state[1]) / (t - state[0])
                        let total = t + (1.0 - f) / rate

                        if total > longRunSeconds then
                            Console.Error.WriteLine(
                                sprintf "%s: note: this run will take about %.0f s (%s), estimated from its first %.1f s; Ctrl-C stops it and keeps the parameter sets that finished"
                                    name total (Progress.formatDuration total) (t - state[0])))

/// The errors of a run, as exit codes (shared by a run and a shard).
let private runFailure (path: string) (finish: unit -> unit) (ex: exn) =
    finish ()

    match ex with
    | :? SimulationFailedException as e ->
        fileError path e.Message
        exitRun
    | :? RunTooLargeException as e ->
        fileError path e.Message
        exitRun
    | :? NotSupportedException as e when Text.RegularExpressions.Regex.IsMatch(e.Message, @"^\d+:\d+: ") ->
        // a query the chosen backend cannot run: a located input error, found before simulating
        eprintfn "%s:%s" path (Text.RegularExpressions.Regex.Replace(e.Message, @"^(\d+:\d+: )(?!error: )", "$1error: "))
        exitInput
    | Shards.ShardBusyException m ->
        fileError path m
        exitRun
    | :? OperationCanceledException as e ->
        // SIGINT/SIGTERM: during a shard (which then writes nothing), or while the results were written
        fileError path (if e.Message.StartsWith "interrupted" then e.Message else "interrupted (SIGINT or SIGTERM): nothing was written")
        exitRun
    | ex ->
        let inner = if isNull ex.InnerException then ex else ex.InnerException
        fileError path (sprintf "the run failed: %s" inner.Message)
        exitRun

/// The fixed level plan named by --plan (read and checked against the program), or None without --plan;
/// on an error (printed) the exit code.
let private planOf (args: ParseResults<RunArgs>) (p: Driver.Program) (source: string) : Result<(Multilevel.PlanFile * string) option, int> =
    match args.TryGetResult RunArgs.Plan with
    | None -> Ok None
    | Some file ->
        let text = try Ok(File.ReadAllText file) with ex -> Error ex.Message
        match text |> Result.bind (fun t -> Multilevel.parsePlan t |> Result.map (fun pf -> pf, t)) with
        | Error m ->
            fileError file m
            Error exitInput
        | Ok (pf, t) ->
            match Multilevel.planProblem p source pf with
            | Some m ->
                fileError file m
                Error exitInput
            | None -> Ok(Some(pf, t))

/// `dsl run FILE --shard K/N --out DIR`: one shard's exact sums into DIR (skipped when already complete).
let private shard (args: ParseResults<RunArgs>) (path: string) (overrides: Overrides) (specText: string) =
    match Shards.parseSpec specText env with
    | Error m -> usageError (sprintf "--shard: %s" m)
    | Ok spec ->
    match args.TryGetResult RunArgs.Out, args.TryGetResult Backend with
    | None, _ -> usageError "--shard needs --out DIR (the folder of the partial files)"
    | _, Some b when b <> "cpu" && b <> "auto" ->
        usageError (sprintf "--shard runs on the CPU engine (--backend cpu), whose sums merge exactly; got --backend %s" b)
    | _ when args.Contains RunArgs.Json || args.Contains RunArgs.Csv || args.Contains RunArgs.Strict ->
        usageError "--shard: a shard has no results to print (--json, --csv, --strict): dsl merge prints them"
    | Some dir, _ ->
        match compileSource path overrides with
        | Error code -> code
        | Ok (program, text) ->
            let paths = program.Settings.Paths
            let name = displayName path

            if int64 spec.N > paths then
                fileError name (sprintf "--shard %d/%d: %d shards of a run of %d paths would leave shards without paths; use at most %d shards" spec.K spec.N spec.N paths paths)
                exitInput
            else
            match prepareOut dir with
            | Error m -> usageError m
            | Ok() ->
            match planOf args program.Program text with
            | Error code -> code
            | Ok plan ->
                let h =
                    match plan with
                    | Some (pf, planText) -> MultilevelShards.headerOf program.Program name text overrides spec pf planText
                    | None -> Shards.headerOf program.Program name text overrides spec
                let update, finish = if args.Contains RunArgs.Quiet then ignore, ignore else Progress.create (sprintf "shard %d/%d" spec.K spec.N)
                let update = withEstimate name update
                signalHandlers.Force() |> ignore
                let opts = { Driver.defaultOptions with Threads = args.GetResult(Threads, 0); Progress = Some update; Backend = "cpu"; Cancel = interrupt.Token }
                // a set whose paths blew up is recorded in the partial file (a merge reports it); the shard fails
                let failedSets (failures: (string * string) list) =
                    for (set, m) in failures do
                        fileError name (sprintf "set %s: %s" set m)
                    if failures.IsEmpty then 0 else exitRun

                try
                    try
                        let outcome =
                            match plan with
                            | Some (pf, planText) -> MultilevelShards.runShard program.Program h pf planText opts dir (args.Contains Force)
                            | None -> Shards.runShard program.Program h opts dir (args.Contains Force)
                        match outcome with
                        | Shards.Skipped (file, failures) ->
                            finish ()
                            printfn "shard %d/%d: %s is complete already (paths %d..%d); nothing to do (--force reruns it)" spec.K spec.N file h.Range.First (h.Range.First + h.Range.Count - 1L)
                            failedSets failures
                        | Shards.Written (file, _, seconds, failures) ->
                            finish ()
                            if plan.IsSome then
                                printfn "shard %d/%d: its share of every level of the plan (level 0: samples %d..%d) of %d parameter set(s) in %.3g s -> %s" spec.K spec.N
                                    h.Range.First (h.Range.First + h.Range.Count - 1L) program.ParameterSets.Length seconds file
                            else
                                printfn "shard %d/%d: paths %d..%d of %d parameter set(s) in %.3g s -> %s" spec.K spec.N h.Range.First (h.Range.First + h.Range.Count - 1L)
                                    program.ParameterSets.Length seconds file
                            failedSets failures
                    with ex -> runFailure name finish ex
                finally
                    finish ()

/// A count or seed given to `option`, in the number forms a file accepts (`paths = 1e4`: digits, a
/// fraction, an exponent) with a whole value: `--paths 1e3` is 1000, `--paths 2.5` is refused.
let private wholeNumber (option: string) (text: string) : Result<int64, string> =
    let t = text.Trim()
    let inv = Globalization.CultureInfo.InvariantCulture

    match Int64.TryParse(t, Globalization.NumberStyles.AllowLeadingSign, inv) with
    | true, n -> Ok n
    | _ ->
        match Double.TryParse(t, Globalization.NumberStyles.Float, inv) with
        // 2^53: beyond it a double no longer holds every whole number, so `1e17` could name another one
        | true, v when Double.IsFinite v && Math.Floor v = v && abs v <= 9007199254740992.0 -> Ok(int64 v)
        | true, v when Double.IsFinite v && Math.Floor v = v -> Error(sprintf "%s: %s is too large to be exact as a number with an exponent; write its digits" option t)
        | true, _ -> Error(sprintf "%s: must be a whole number, got %s" option t)
        | _ -> Error(sprintf "%s: '%s' is not a number" option t)

/// The overrides of the file that `run` and `slurm` both take, or the first option error.
let private overridesOf (sets: string list) paramsName (paths: string option) dt t (seed: string option) : Result<Overrides, string> =
    let parsed = sets |> List.map parseAssignment

    let whole option (text: string option) =
        match text with
        | None -> Ok None
        | Some x -> wholeNumber option x |> Result.map Some

    match parsed |> List.tryPick (function Error e -> Some e | _ -> None), whole "--paths" paths, whole "--seed" seed with
    | Some e, _, _ -> Error e
    | None, Error e, _
    | None, _, Error e -> Error e
    | None, _, Ok (Some s) when s < 0L -> Error(sprintf "--seed: must be a non-negative integer, got %d" s)
    | None, Ok paths, Ok seed ->
        Ok
            { Sets = parsed |> List.choose Result.toOption |> List.concat
              ParamsName = paramsName
              Paths = paths
              Dt = dt
              T = t
              Seed = seed |> Option.map uint64 }

/// The checks of a run's options that do not need the file, then the overrides they make.
let private runOverrides (args: ParseResults<RunArgs>) : Result<Overrides, string> =
    overridesOf (args.GetResults RunArgs.Set) (args.TryGetResult RunArgs.Params) (args.TryGetResult RunArgs.Paths)
        (args.TryGetResult RunArgs.Dt) (args.TryGetResult RunArgs.Horizon) (args.TryGetResult RunArgs.Seed)
    |> Result.bind (fun o ->
        match args.TryGetResult Backend, args.TryGetResult Threads with
        | Some b, _ when not (List.contains b [ "cpu"; "ilgpu-cpu"; "cuda"; "auto" ]) ->
            Error(sprintf "--backend: '%s' is not available (available: cpu, ilgpu-cpu, cuda, auto)" b)
        | _, Some n when n < 0 -> Error(sprintf "--threads: must be >= 0 (0: all cores), got %d" n)
        | _ when args.Contains Force && not (args.Contains Shard) -> Error "--force applies to a shard only (--shard K/N)"
        | _ -> Ok o)

/// The folder of each file's results: --out itself for one file, --out/STEM for several.
let private outFolders (files: string list) (out: string option) : Result<string option list, string> =
    let stem (f: string) = if f = "-" then "stdin" else Path.GetFileNameWithoutExtension f

    match out, files with
    | None, _ -> Ok(files |> List.map (fun _ -> None))
    | Some dir, _ when File.Exists dir -> Error(sprintf "--out %s: is a file; --out names a folder" dir)
    | Some dir, [ _ ] -> Ok [ Some dir ]
    | Some dir, _ ->
        match files |> List.countBy stem |> List.tryFind (fun (_, n) -> n > 1) with
        | Some (s, _) -> Error(sprintf "--out: two files are named '%s', and each file's results go to --out/STEM; rename one, or run them apart" s)
        | None -> Ok(files |> List.map (fun f -> Some(Path.Combine(dir, stem f))))

/// One file of `dsl run`: compile, check its --out folder, simulate, print; the exit code and the
/// report (for the JSON of several files).
let private runOne (args: ParseResults<RunArgs>) (overrides: Overrides) (json: bool) (path: string) (out: string option) =
    match compileSource path overrides with
    | Error code -> code, None
    | Ok (program, source) ->
    match planOf args program.Program source with
    | Error code -> code, None
    | Ok plan ->
    match out |> Option.map prepareOut with
    | Some (Error m) -> usageError m, None
    | _ ->
        let name = displayName path
        let quiet = args.Contains RunArgs.Quiet
        let update, finish = if quiet then ignore, ignore else Progress.create "simulating"
        signalHandlers.Force() |> ignore

        try
            try
                let opts =
                    { Driver.defaultOptions with
                        Threads = args.GetResult(Threads, 0)
                        Progress = Some(withEstimate name update)
                        Backend = args.GetResult(Backend, "auto")
                        Cancel = interrupt.Token }
                match program.Program.File.Settings.Multilevel with
                | Some _ ->
                    // multilevel (accuracy = ...): the run's report plus the level table, JSON fields and plots;
                    // with --plan, the fixed plan's samples (the unsplit run of a sharded plan)
                    let report, info, _ =
                        match plan with
                        | Some (pf, _) ->
                            let sw = Diagnostics.Stopwatch.StartNew()
                            let sums = Multilevel.runPlan program.Program pf opts None
                            Multilevel.reportOfPlan program.Program pf sums sw.Elapsed.TotalSeconds
                        | None -> Multilevel.run program.Program opts
                    finish ()
                    let code = present name json (args.Contains RunArgs.Csv) out (args.Contains RunArgs.Strict) report
                    if not json && not (args.Contains RunArgs.Csv && out.IsNone) then Console.Out.Write(Multilevel.table info)
                    out |> Option.iter (fun dir ->
                        if File.Exists(Path.Combine(dir, "results.json")) then
                            File.WriteAllText(Path.Combine(dir, "results.json"), Multilevel.toJson report info)
                            Multilevel.writePlots dir report info |> ignore)
                    code, Some(report, Multilevel.toJson report info)
                | None ->
                // the sets that finished are reported even when another failed (its failure is in the report)
                let report, _ = Driver.runKeeping program.Program opts
                finish ()
                present name json (args.Contains RunArgs.Csv) out (args.Contains RunArgs.Strict) report, Some(report, Output.toJson report)
            with ex -> runFailure name finish ex, None
        finally
            finish ()

/// `dsl run FILE --plan-only --plan PLAN`: the multilevel pilot, its fixed level plan written to PLAN.
let private makePlan (args: ParseResults<RunArgs>) (path: string) (overrides: Overrides) (planFile: string) =
    match compileSource path overrides with
    | Error code -> code
    | Ok (program, source) ->
        let name = displayName path
        match program.Program.File.Settings.Multilevel with
        | None ->
            fileError name "--plan-only makes the level plan of a multilevel run: the file needs accuracy = ... or relative_accuracy = ... in its simulate block"
            exitInput
        | Some _ ->
        let update, finish = if args.Contains RunArgs.Quiet then ignore, ignore else Progress.create "pilot"
        signalHandlers.Force() |> ignore
        try
            try
                let opts = { Driver.defaultOptions with Threads = args.GetResult(Threads, 0); Progress = Some(withEstimate name update); Backend = "cpu"; Cancel = interrupt.Token }
                let pf, _, _, failures = Multilevel.makePlan program.Program source opts
                finish ()
                match failures with
                | e :: _ -> runFailure name finish e
                | [] ->
                    Files.writeAtomically planFile (Text.Encoding.UTF8.GetBytes(Multilevel.planJson program.Program pf))
                    if not (args.Contains RunArgs.Quiet) then
                        printfn "level plan of %s (%s %g; pilot at %g x that: %s path-steps) -> %s"
                            name (if pf.Relative then "relative_accuracy" else "accuracy") pf.Accuracy pf.PilotFactor (pf.PilotWork.ToString("G4")) planFile
                        for sp in pf.Sets do
                            printfn "  set %s: %d levels, %s path-steps%s" sp.Set sp.Levels.Length ((Multilevel.planWork program.Program sp).ToString("G4"))
                                (if sp.Note = "" then "" else "; " + sp.Note)
                            printfn "    %5s %11s %8s %14s" "level" "dt" "steps" "paths"
                            for l in sp.Levels do
                                printfn "    %5d %11s %8d %14d" l.Level (l.Dt.ToString("G4")) l.Steps l.Paths
                    0
            with ex -> runFailure name finish ex
        finally
            finish ()

let private run (args: ParseResults<RunArgs>) =
    let files = args.GetResults RunArgs.Files |> List.concat
    let json = args.Contains RunArgs.Json

    match filesProblem (optionsOf<RunArgs> ()) files, runOverrides args with
    | Some m, _
    | None, Error m -> usageError m
    | None, Ok overrides ->
    match args.Contains Plan_Only, args.TryGetResult RunArgs.Plan, args.TryGetResult Shard, files with
    | true, None, _, _ -> usageError "--plan-only needs --plan FILE (the file the level plan is written to)"
    | true, _, Some _, _ -> usageError "--plan-only runs the pilot of the whole run: make the plan first, then run its shards with --shard K/N --plan FILE"
    | true, Some planFile, None, [ path ] -> makePlan args path overrides planFile
    | true, _, _, _ -> usageError (sprintf "--plan-only: a plan is made for one file (got %d)" files.Length)
    | false, Some _, _, _ :: _ :: _ -> usageError (sprintf "--plan: a plan is for one file (got %d)" files.Length)
    | _ ->
    match args.TryGetResult Shard, files with
    | Some spec, [ path ] -> shard args path overrides spec
    | Some _, _ -> usageError (sprintf "--shard: a shard runs one file (got %d)" files.Length)
    | None, _ ->
    match outFolders files (args.TryGetResult RunArgs.Out) with
    | Error m -> usageError m
    | Ok outs ->
        let outcomes =
            List.zip files outs
            |> List.mapi (fun i (path, out) ->
                if i > 0 && not json then Console.Out.WriteLine()
                runOne args overrides json path out)

        // --csv without --out prints the CSV instead of the JSON (present did)
        if json && not (args.Contains RunArgs.Csv && (args.TryGetResult RunArgs.Out).IsNone) then
            match outcomes |> List.choose snd |> List.map snd with
            | [] -> ()
            | [ one ] when files.Length = 1 -> Console.Out.WriteLine one
            | many -> Console.Out.WriteLine("[\n" + String.Join(",\n", many) + "\n]")

        // the worst: 3 (a failed run) over 2 (an input error) over 0
        outcomes |> List.map fst |> List.fold max 0

/// `dsl merge DIR... [--out DIR]`: the N shards of one run into its report, or a refusal (exit 2).
let private merge (args: ParseResults<MergeArgs>) =
    let inputs = args.GetResult Inputs
    let sw = Diagnostics.Stopwatch.StartNew()

    match MultilevelShards.merge inputs with
    | Some (Error m) -> usageError m
    | Some (Ok (p, report, info, files)) ->
        // a multilevel plan's shards: the report and level table of the plan's unsplit run
        match args.TryGetResult MergeArgs.Out |> Option.map prepareOut with
        | Some (Error m) -> usageError m
        | _ ->
            if not (args.Contains MergeArgs.Quiet) then
                eprintfn "merged %d shard(s) of %s (a multilevel plan) in %.3g s" files p.Source sw.Elapsed.TotalSeconds
            let json = args.Contains MergeArgs.Json
            let csv = args.Contains MergeArgs.Csv
            let out = args.TryGetResult MergeArgs.Out
            if json && not (csv && out.IsNone) then Console.Out.WriteLine(Multilevel.toJson report info)
            let code = present p.Source json csv out (args.Contains MergeArgs.Strict) report
            if not json && not (csv && out.IsNone) then Console.Out.Write(Multilevel.table info)
            out |> Option.iter (fun dir ->
                if File.Exists(Path.Combine(dir, "results.json")) then
                    File.WriteAllText(Path.Combine(dir, "results.json"), Multilevel.toJson report info)
                    Multilevel.writePlots dir report info |> ignore)
            code
    | None ->
    match Shards.merge inputs with
    | Error m -> usageError m
    | Ok (p, report, files) ->
    match args.TryGetResult MergeArgs.Out |> Option.map prepareOut with
    | Some (Error m) -> usageError m
    | _ ->
        if not (args.Contains MergeArgs.Quiet) then
            eprintfn "merged %d shard(s) of %s (%d paths per set) in %.3g s" files p.Source report.Settings.Paths sw.Elapsed.TotalSeconds

        let json = args.Contains MergeArgs.Json
        let csv = args.Contains MergeArgs.Csv
        let out = args.TryGetResult MergeArgs.Out
        if json && not (csv && out.IsNone) then Console.Out.WriteLine(Output.toJson report)
        present p.Source json csv out (args.Contains MergeArgs.Strict) report

/// How the nodes start this dsl: DSL_COMMAND, else this executable (or `dotnet dsl.dll` when run so).
let private dslCommand () =
    match env "DSL_COMMAND" with
    | Some c -> c
    | None ->
        let exe = Environment.ProcessPath
        let entry = Reflection.Assembly.GetEntryAssembly().Location

        if Path.GetFileNameWithoutExtension(exe) = "dotnet" then
            sprintf "%s %s" (Shards.shellQuote exe) (Shards.shellQuote entry)
        else Shards.shellQuote exe

/// Runs a command, returning its standard output, or an error with its standard error.
let private runProcess (exe: string) (argv: string list) : Result<string, string> =
    try
        let psi = Diagnostics.ProcessStartInfo(exe, argv, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        use proc = Diagnostics.Process.Start psi
        let out = proc.StandardOutput.ReadToEndAsync()
        let err = proc.StandardError.ReadToEnd()
        proc.WaitForExit()
        if proc.ExitCode = 0 then Ok(out.Result.Trim())
        else Error(sprintf "%s %s failed (exit %d): %s" exe (String.Join(" ", argv)) proc.ExitCode (err.Trim()))
    with
    | :? ComponentModel.Win32Exception -> Error(sprintf "%s: not found (is this a Slurm login node?); the scripts are written, submit them by hand" exe)

/// `dsl slurm FILE --shards N ...`: the array and merge job scripts, printed, and with --submit submitted.
let private slurm (args: ParseResults<SlurmArgs>) =
    let path = args.GetResult SlurmArgs.File
    let n = args.GetResult SlurmArgs.Shards
    let overridesR =
        overridesOf (args.GetResults SlurmArgs.Set) (args.TryGetResult SlurmArgs.Params) (args.TryGetResult SlurmArgs.Paths)
            (args.TryGetResult SlurmArgs.Dt) (args.TryGetResult SlurmArgs.Horizon) (args.TryGetResult SlurmArgs.Seed)

    match overridesR with
    | Error e -> usageError e
    | Ok overrides ->
    match args.TryGetResult SlurmArgs.Time, args.TryGetResult SlurmArgs.Cpus with
    | Some t, _ when not (Text.RegularExpressions.Regex.IsMatch(t, @"^(\d+-)?\d+(:\d{1,2}){0,2}$")) ->
        usageError (sprintf "--time %s: expected HH:MM:SS (or D-HH:MM:SS, or minutes)" t)
    | _, Some c when c < 1 ->
        usageError (sprintf "--cpus: must be at least 1, got %d" c)
    | _ ->
    // every value that goes into the scripts, checked before anything is compiled or created
    let request (modelName: string) (runArgs: string list) : Shards.SlurmRequest =
        { Dsl = dslCommand ()
          File = path
          Shards = n
          Partition = args.TryGetResult SlurmArgs.Partition
          Time = args.TryGetResult SlurmArgs.Time
          Cpus = args.TryGetResult SlurmArgs.Cpus
          Mem = args.TryGetResult SlurmArgs.Mem
          Out = args.GetResult(SlurmArgs.Out, modelName + "-slurm")
          SbatchArgs = args.GetResults SlurmArgs.Sbatch_Arg
          RunArgs = runArgs
          JobName = "dsl-" + modelName }

    match Shards.slurmProblems (request "model" []) with
    | Some m -> usageError m
    | None ->
        match compileFile path overrides with
        | Error code -> code
        | Ok program ->
            let paths = program.Settings.Paths

            if n < 1 || int64 n > paths then
                fileError (displayName path) (sprintf "--shards %d: use 1 to %d shards (the run has %d paths)" n (min paths 1000000L) paths)
                exitInput
            else
            match program.Program.File.Weight with
            | Some w ->
                // refused before any script is written (a shard of it would fail on the cluster)
                eprintfn "%s:%d:%d: error: 'weight %s' makes a weighted model, whose resampling couples every path: it cannot be split into shards; run it whole"
                    (displayName path) w.Pos.Line w.Pos.Col w.Name
                exitInput
            | None ->
            match program.Program.File.Settings.Multilevel with
            | Some ml ->
                // its shards need a fixed level plan, which the array scripts do not make yet
                eprintfn "%s:%d:%d: error: '%s' makes a multilevel run, whose shards need a fixed level plan that dsl slurm does not make yet: run dsl run FILE --plan-only --plan PLAN.json, then an array of dsl run FILE --shard auto --plan PLAN.json --out DIR and dsl merge DIR (docs/mlmc.md)"
                    (displayName path) ml.Pos.Line ml.Pos.Col (if ml.Relative then "relative_accuracy" else "accuracy")
                exitInput
            | None ->
            match prepareOut (args.GetResult(SlurmArgs.Out, program.ModelName + "-slurm")) with
            | Error m -> usageError m
            | Ok() ->
                let f (x: float) = x.ToString("R", Globalization.CultureInfo.InvariantCulture)

                let runArgs =
                    [ for (name, v) in overrides.Sets do
                          yield! [ "--set"; sprintf "%s=%s" name (f v) ]
                      yield! overrides.ParamsName |> Option.map (fun s -> [ "--params"; s ]) |> Option.defaultValue []
                      yield! overrides.Paths |> Option.map (fun s -> [ "--paths"; string s ]) |> Option.defaultValue []
                      yield! overrides.Dt |> Option.map (fun s -> [ "--dt"; f s ]) |> Option.defaultValue []
                      yield! overrides.T |> Option.map (fun s -> [ "--T"; f s ]) |> Option.defaultValue []
                      yield! overrides.Seed |> Option.map (fun s -> [ "--seed"; string s ]) |> Option.defaultValue [] ]

                let out = args.GetResult(SlurmArgs.Out, program.ModelName + "-slurm")
                let req = request program.ModelName runArgs

                match Shards.slurmProblems req with
                | Some m -> usageError m
                | None ->
                let arrayScript, mergeScript = Shards.slurmScripts req
                // Slurm does not create the folders of --output: they must exist before the jobs start
                for d in [ out; Path.Combine(out, "logs"); Path.Combine(out, "shards") ] do
                    Directory.CreateDirectory d |> ignore
                let arrayFile = Path.GetFullPath(Path.Combine(out, "slurm-shards.sh"))
                let mergeFile = Path.GetFullPath(Path.Combine(out, "slurm-merge.sh"))
                File.WriteAllText(arrayFile, arrayScript)
                File.WriteAllText(mergeFile, mergeScript)
                printfn "# %s\n%s\n# %s\n%s" arrayFile arrayScript mergeFile mergeScript

                if not (args.Contains Submit) then
                    printfn "# submit with: id=$(sbatch --parsable %s) && sbatch --dependency=afterok:${id%%%%;*} %s" (Shards.shellQuote arrayFile) (Shards.shellQuote mergeFile)
                    0
                else
                    let jobId (s: string) = s.Split(';').[0].Trim()

                    match runProcess "sbatch" [ "--parsable"; arrayFile ] with
                    | Error m ->
                        eprintfn "%s: error: %s" path m
                        exitRun
                    | Ok a ->
                        match runProcess "sbatch" [ "--parsable"; sprintf "--dependency=afterok:%s" (jobId a); mergeFile ] with
                        | Error m ->
                            eprintfn "%s: error: the array job %s was submitted, but the merge job was not: %s" path (jobId a) m
                            exitRun
                        | Ok b ->
                            printfn "submitted: array job %s (%d shards), merge job %s (after every shard succeeded); results in %s" (jobId a) n (jobId b)
                                (Path.GetFullPath out)
                            0

/// `dsl fit FILE [--out DIR] [--json]`: the fit of the file's `fit` block; exit 2 for input errors
/// (the file, the data), 3 for a fit whose paths or weights blow up.
let private fitCommand (args: ParseResults<FitArgs>) =
    let path = args.GetResult FitArgs.File
    let json = args.Contains FitArgs.Json
    let name = displayName path

    let overrides =
        overridesOf (args.GetResults FitArgs.Set) (args.TryGetResult FitArgs.Params) (args.TryGetResult FitArgs.Paths)
            (args.TryGetResult FitArgs.Dt) (args.TryGetResult FitArgs.Horizon) (args.TryGetResult FitArgs.Seed)

    match overrides, args.TryGetResult FitArgs.Threads, args.TryGetResult FitArgs.Iterations with
    | Error m, _, _ -> usageError m
    | _, Some n, _ when n < 0 -> usageError (sprintf "--threads: must be >= 0 (0: all cores), got %d" n)
    | _, _, Some n when n < 1 || n > FitCheck.maxIterations -> usageError (sprintf "--iterations: must be a whole number from 1 to %d, got %d" FitCheck.maxIterations n)
    | _ when args.TryGetResult FitArgs.Backend |> Option.exists (fun b -> not (List.contains b [ "cpu"; "ilgpu-cpu"; "cuda"; "auto" ])) ->
        usageError (sprintf "--backend: '%s' is not available (available: cpu, ilgpu-cpu, cuda, auto)" (args.GetResult FitArgs.Backend))
    | Ok o, _, _ ->
    match compileSource path o with
    | Error code -> code
    | Ok (program, text) ->
    match program.FitSpec, args.TryGetResult FitArgs.Out |> Option.map prepareOut with
    | None, _ ->
        fileError name "the file has no 'fit' block; add one, e.g. fit theta to \"data.csv\" { objective = kl at T } (docs/fitting.md)"
        exitInput
    | _, Some (Error m) -> usageError m
    | Some spec, _ ->
        let spec = match args.TryGetResult FitArgs.Iterations with Some n -> { spec with Iterations = n } | None -> spec
        let progressOut = if json then Console.Error else Console.Out
        let names = spec.Params |> List.map (fun i -> program.Parameters[i]) |> List.toArray

        let opts =
            { Fit.defaultFitOptions with
                Threads = args.GetResult(FitArgs.Threads, 0)
                Progress = if args.Contains FitArgs.Quiet then None else Some(fun s -> progressOut.WriteLine(Fit.progressLine names s))
                BaseDir = (if path = "-" then "." else Path.GetDirectoryName(Path.GetFullPath path))
                Backend = args.GetResult(FitArgs.Backend, "cpu") }

        try
            match Fit.fit name program.Program.File spec opts with
            | Error e ->
                for d in e.Diagnostics do
                    Console.Error.WriteLine(Diagnostics.formatAs "error" name text d)

                // a fit that failed after some evaluations keeps them: fit.json with the error and the history
                if e.RunFailed && not e.History.IsEmpty then
                    let message = e.Diagnostics |> List.map (fun d -> d.Message) |> String.concat "; "
                    let j = Fit.failedJson program.ModelName name names message e.History
                    if json then Console.Out.WriteLine j

                    match args.TryGetResult FitArgs.Out with
                    | Some dir ->
                        Files.writeAtomically (Path.Combine(dir, "fit.json")) (Text.Encoding.UTF8.GetBytes j)
                        eprintfn "%s: the %d evaluation(s) done before the failure are in %s" name e.History.Length (Path.Combine(dir, "fit.json"))
                    | None -> ()

                if e.RunFailed then exitRun else exitInput
            | Ok r ->
                let defaults = program.Program.File.Model.Params |> List.map (fun p -> p.Name, p.Default)
                if json then Console.Out.WriteLine(Fit.toJson r)
                else
                    if not (args.Contains FitArgs.Quiet) then Console.Out.WriteLine()
                    Console.Out.WriteLine(Fit.summary r defaults)

                match args.TryGetResult FitArgs.Out with
                | Some dir ->
                    let files = writeStaged dir "fit.json" (fun stage _ -> Fit.write stage r)
                    if not json then Console.Out.WriteLine(sprintf "\nwrote %s" (String.Join(", ", files |> List.map Path.GetFileName)))
                | None -> ()

                0
        with ex -> runFailure name ignore ex

/// What `dsl --help` says before the commands: what the tool is, three examples, the exit codes and
/// where the documentation is.
/// `dsl format FILE... [--check]`: each file in the canonical layout (`Format.format`), in place
/// (`-`: standard input to standard output). Exit 2 for a file that cannot be read or parsed (it is
/// left as it is), else 1 with --check when a file would change, else 0.
let private formatCommand (args: ParseResults<FormatArgs>) =
    let files = args.GetResult FormatArgs.Files
    let checkOnly = args.Contains FormatArgs.Check

    match filesProblem (optionsOf<FormatArgs> ()) files with
    | Some m -> usageError m
    | None ->
        files
        |> List.map (fun path ->
            let name = displayName path

            match readSource path with
            | Error m ->
                fileError name m
                exitInput
            | Ok text ->
                match Format.format text with
                | Error d ->
                    eprintfn "%s" (Diagnostics.format name text d)
                    exitInput
                | Ok formatted when checkOnly ->
                    if formatted = text then 0
                    else
                        eprintfn "%s: would be reformatted" name
                        1
                | Ok formatted when path = "-" ->
                    Console.Out.Write formatted
                    0
                | Ok formatted when formatted = text -> 0
                | Ok formatted ->
                    try
                        File.WriteAllText(path, formatted)
                        0
                    with ex ->
                        fileError name (sprintf "cannot write the file: %s" ex.Message)
                        exitInput)
        |> List.fold max 0

/// `dsl lsp`: the language server on standard input and output (docs/editors.md).
let private lspCommand () =
    use input = Console.OpenStandardInput()
    use output = Console.OpenStandardOutput()
    Lsp.serve input output

let private about =
    """dsl simulates stochastic differential equations written in a .sde file and estimates their means,
densities and derivatives with respect to parameters (with standard errors).

Examples:
  dsl run examples/lorenz96.sde --out out/l96    simulate; a table, and out/l96/results.json and plots
  dsl run examples/ou.sde --paths=20000 --json   override the file's paths; the results as JSON
  dsl check model.sde                            parse and check only (- reads standard input)

Exit codes: 0 success (also with warnings, unless --strict); 2 an input or option error;
3 a run that failed (or, with --strict, a result or file with a warning);
1 dsl format --check: a file would change.
Documentation: docs/language.md in the repository (the language, every command and option, the JSON).
"""

/// Argu's parse error as one line `dsl: error: ...` and where to look (its usage text dropped); an
/// unknown command or option with the known one it is closest to (`dsl runn`: did you mean 'run'?).
let private parseError (argv: string[]) (message: string) =
    let first = message.Split('\n').[0].Trim()
    let first = if first.StartsWith "ERROR: " then first.Substring 7 else first

    let options =
        match Array.tryHead argv with
        | Some "run" -> Some(optionsOf<RunArgs> ())
        | Some "merge" -> Some(optionsOf<MergeArgs> ())
        | Some "slurm" -> Some(optionsOf<SlurmArgs> ())
        | Some "check" -> Some(optionsOf<CheckArgs> ())
        | Some "fit" -> Some(optionsOf<FitArgs> ())
        | Some "compile" -> Some(optionsOf<CompileArgs> ())
        | Some "format" -> Some(optionsOf<FormatArgs> ())
        | _ -> None

    // an unknown `--option` after a command is the error to name, whatever Argu tripped on after it
    // (`dsl fit --pahts 3 m.sde` took --pahts for the file and then refused the 3)
    let unknownOption =
        options
        |> Option.bind (fun known ->
            argv
            |> Array.pairwise
            // a value may itself start with -- (`--sbatch-arg --account=abc`): not an option
            |> Array.filter (fun (before, _) -> before <> "--sbatch-arg" && before <> "--set")
            |> Array.map (fun (_, a) -> a.Split('=').[0])
            |> Array.tryFind (fun a -> a.StartsWith "--" && not (List.contains a known) && not (File.Exists a))
            |> Option.map (fun a -> sprintf "unknown option '%s'%s" a (didYouMean a known)))

    let first =
        match unknownOption with
        | Some m -> m
        | None ->
            let m = Text.RegularExpressions.Regex.Match(first, "^unrecognized argument: '(.*)'\\.?$")

            if not m.Success then first
            else
                // an unknown first word is a misspelt command
                let given = m.Groups[1].Value.Split('=').[0]
                let known = if argv.Length > 0 && argv[0] = given then commandNames else defaultArg options commandNames

                match didYouMean given known with
                | "" -> first
                | hint -> first.TrimEnd('.') + hint
    usageError (sprintf "%s (dsl --help lists the commands, dsl COMMAND --help their options)" first)

[<EntryPoint>]
let main argv =
    // DSL_SCALAR_NORMALS=1 (accepted, no effect on the numbers): the scalar form of the one normal
    // generator on every thread; its vector forms give the same bits, so backends agree without it
    if Environment.GetEnvironmentVariable "DSL_SCALAR_NORMALS" = "1" then Normals.ForceScalar <- true
    let parser = ArgumentParser.Create<Cli>(programName = "dsl")

    try
        let results = parser.ParseCommandLine(argv, raiseOnUsage = true)

        if results.Contains Version then
            printfn "%s" (version ())
            0
        else
            match results.TryGetSubCommand() with
            | Some (Run r) -> run r
            | Some (Merge m) -> merge m
            | Some (Slurm s) -> slurm s
            | Some (Check c) -> check c
            | Some (Fit f) -> fitCommand f
            | Some (Compile c) -> compile c
            | Some (Format f) -> formatCommand f
            | Some (Lsp _) -> lspCommand ()
            | _ ->
                Console.Error.WriteLine(parser.PrintUsage())
                exitInput
    with
    | :? ArguParseException as e ->
        if e.ErrorCode = ErrorCode.HelpText then
            // `dsl --help` (not `dsl run --help`): what the tool is, examples, exit codes, the docs
            let topLevel = argv.Length > 0 && (argv[0] = "--help" || argv[0] = "-h" || argv[0] = "/?" || argv[0] = "/h")
            if topLevel then Console.Out.WriteLine about
            Console.Out.WriteLine e.Message
            0
        else
            parseError argv e.Message
    | ex ->
        eprintfn "dsl: error: %s" ex.Message
        exitRun
