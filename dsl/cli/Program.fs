/// The `dsl` command-line tool: `dsl run FILE`, `dsl check FILE`, `dsl merge DIR...`, `dsl slurm FILE`.
module Sde.Cli.Program

open System
open System.IO
open Argu
open Sde
open Sde.Core
open Sde.Lang

type RunArgs =
    | [<MainCommand; ExactlyOnce>] File of path: string
    | Out of dir: string
    | Json
    | Csv
    | Set of assignment: string
    | Params of name: string
    | Paths of n: int64
    | Dt of dt: float
    | [<CustomCommandLine("--T")>] Horizon of T: float
    | Seed of seed: int64
    | Threads of n: int
    | Backend of name: string
    | Quiet
    | Strict
    | Shard of spec: string
    | Force

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .sde file to run."
            | Shard _ -> "K/N: run only paths K*P/N .. (K+1)*P/N - 1 of every parameter set and write their exact sums into --out (merge with dsl merge); auto or auto/N: K (and N) from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or JOB_COMPLETION_INDEX."
            | Force -> "with --shard: rerun the shard even when its complete partial file is already there."
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
    | [<MainCommand; ExactlyOnce>] File of path: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .sde file to parse and check."

type CompileArgs =
    | [<MainCommand; ExactlyOnce>] File of path: string
    | Target of target: string
    | Out of dir: string
    | Arch of arch: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .sde file to compile."
            | Target _ -> "what to produce: ptx (default ptx)."
            | Out _ -> "write one <model>.<kernel>.ptx file per kernel into this folder."
            | Arch _ -> "CUDA architecture, e.g. sm_70 (default), sm_80, sm_90."

type MergeArgs =
    | [<MainCommand; ExactlyOnce>] Inputs of paths: string list
    | Out of dir: string
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
    | [<Mandatory>] Shards of n: int
    | Partition of name: string
    | Time of hhmmss: string
    | Cpus of n: int
    | Mem of size: string
    | Out of dir: string
    | [<CustomCommandLine("--sbatch-arg"); EqualsAssignmentOrSpaced>] Sbatch_Arg of arg: string
    | Submit
    | Set of assignment: string
    | Params of name: string
    | Paths of n: int64
    | Dt of dt: float
    | [<CustomCommandLine("--T")>] Horizon of T: float
    | Seed of seed: int64

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
    | [<CliPrefix(CliPrefix.None)>] Compile of ParseResults<CompileArgs>
    | Version

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Run _ -> "simulate a model and answer its queries (options: dsl run --help; --strict exits 3 when a result carries a warning; --shard K/N runs one shard)."
            | Merge _ -> "merge the partial files of a sharded run into its results (bit for bit those of the unsplit run)."
            | Slurm _ -> "write (and with --submit, submit) a Slurm job array of shards and the job that merges them."
            | Check _ -> "only parse and check a model."
            | Compile _ -> "compile a model's GPU kernels (PTX), without a GPU."
            | Version -> "print the version."

let private exitInput = 2
let private exitRun = 3

let private eprintfn fmt = Printf.kprintf (fun s -> Console.Error.WriteLine s) fmt

let private version () =
    let v = Reflection.Assembly.GetExecutingAssembly().GetName().Version
    sprintf "dsl %d.%d.%d" v.Major v.Minor v.Build

/// Read the source, or a located error for a file that cannot be read.
let private readSource (path: string) : Result<string, string> =
    try
        Ok(File.ReadAllText path)
    with
    | :? FileNotFoundException
    | :? DirectoryNotFoundException -> Error(sprintf "%s:1:1: error: no such file" path)
    | ex -> Error(sprintf "%s:1:1: error: cannot read the file: %s" path ex.Message)

let private printDiagnostics (ds: SourceDiagnostic list) =
    for d in ds do
        Console.Error.WriteLine d.Rendered

let private parseAssignment (s: string) : Result<string * float, string> =
    match s.Split('=', 2) with
    | [| name; value |] ->
        match Double.TryParse(value.Trim(), Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
        | true, v -> Ok(name.Trim(), v)
        | _ -> Error(sprintf "--set %s: '%s' is not a number" s value)
    | _ -> Error(sprintf "--set %s: expected NAME=VALUE" s)

/// Read and compile a file; on failure its located errors are printed and the exit code returned.
let private compileSource (path: string) (overrides: Overrides) : Result<CompiledProgram * string, int> =
    match readSource path with
    | Error e ->
        Console.Error.WriteLine e
        Error exitInput
    | Ok text ->
        match SdeCompiler.Compile(text, path, overrides) with
        | Ok p -> Ok(p, text)
        | Error ds ->
            printDiagnostics ds
            Error exitInput

let private compileFile (path: string) (overrides: Overrides) : Result<CompiledProgram, int> =
    compileSource path overrides |> Result.map fst

let private check (args: ParseResults<CheckArgs>) =
    let path = args.GetResult CheckArgs.File

    match compileFile path Frontend.noOverrides with
    | Error code -> code
    | Ok p ->
        printfn "%s: ok (model %s, %d state components, %d parameter set(s))" path p.ModelName p.Dimension p.ParameterSets.Length
        0

let private compile (args: ParseResults<CompileArgs>) =
    let path = args.GetResult CompileArgs.File

    match args.GetResult(Target, "ptx") with
    | t when t <> "ptx" ->
        eprintfn "error: unknown target '%s' (available: ptx)" t
        exitInput
    | _ ->
    let arch = try Ok(Gpu.Ptx.ParseArch(args.GetResult(Arch, "sm_70"))) with :? ArgumentException as e -> Error e.Message

    match arch, args.TryGetResult CompileArgs.Out with
    | Error m, _ ->
        eprintfn "%s: error: --arch: %s" path m
        exitInput
    | _, None ->
        eprintfn "%s: error: --out DIR is required (the folder for the PTX files)" path
        exitInput
    | Ok arch, Some dir ->
        match compileFile path Frontend.noOverrides with
        | Error code -> code
        | Ok p ->
            try
                Directory.CreateDirectory dir |> ignore

                for (name, ptx) in Gpu.Ptx.Compile(p.ModelType, arch) do
                    let file = Path.Combine(dir, sprintf "%s.%s.ptx" p.ModelName name)
                    File.WriteAllText(file, ptx)
                    printfn "%s" file

                0
            with ex ->
                eprintfn "%s: error: %s" path ex.Message
                exitRun

let private writeOut (dir: string) (csv: bool) (report: Report.RunReport) =
    Directory.CreateDirectory dir |> ignore
    File.WriteAllText(Path.Combine(dir, "results.json"), Output.toJson report)
    if csv then File.WriteAllText(Path.Combine(dir, "results.csv"), Output.toCsv report)
    Plot.writeSweeps dir report |> ignore

    for set in report.Sets do
        set.Results
        |> List.iteri (fun i q ->
            if Report.isBinned q then
                Plot.writeDensity (Path.Combine(dir, Plot.fileName set.Name i q)) q report.Model set.Name
            elif q.Kind = "lyapunov" then
                Plot.writeSpectrum (Path.Combine(dir, Plot.fileName set.Name i q)) q report.Model set.Name)

/// Prints (table or JSON), writes --out, repeats the warnings on standard error; the exit code (--strict).
let private present (path: string) (json: bool) (csv: bool) (out: string option) (strict: bool) (report: Report.RunReport) =
    if csv && out.IsNone then
        Console.Out.Write(Output.toCsv report)
    elif json then
        Console.Out.WriteLine(Output.toJson report)
    else
        Console.Out.Write(Output.tableWith (Output.useColor ()) report)

    out |> Option.iter (fun dir -> writeOut dir csv report)

    // warnings also on standard error: with --json the table's warning lines are not seen
    let warnings =
        [ for set in report.Sets do
              for q in set.Results do
                  for m in q.Warnings -> sprintf "%s: warning: set %s, '%s': %s" path set.Name q.Query m ]

    warnings |> List.iter (fun w -> Console.Error.WriteLine w)
    // --strict: a result that carries any warning fails the run (after it was printed and written)
    if strict && not warnings.IsEmpty then exitRun else 0

let private env (name: string) =
    match Environment.GetEnvironmentVariable name with
    | null
    | "" -> None
    | v -> Some v

/// The errors of a run, as exit codes (shared by a run and a shard).
let private runFailure (path: string) (finish: unit -> unit) (ex: exn) =
    finish ()

    match ex with
    | :? SimulationFailedException as e ->
        eprintfn "%s: error: %s" path e.Message
        exitRun
    | :? RunTooLargeException as e ->
        eprintfn "%s: error: %s" path e.Message
        exitRun
    | :? NotSupportedException as e when Text.RegularExpressions.Regex.IsMatch(e.Message, @"^\d+:\d+: ") ->
        // a query the chosen backend cannot run: a located input error, found before simulating
        eprintfn "%s:%s" path (e.Message.Replace(": '", ": error: '"))
        exitInput
    | :? OperationCanceledException ->
        eprintfn "%s: error: cancelled" path
        exitRun
    | ex ->
        let inner = if isNull ex.InnerException then ex else ex.InnerException
        eprintfn "%s: error: the run failed: %s" path inner.Message
        exitRun

/// `dsl run FILE --shard K/N --out DIR`: one shard's exact sums into DIR (skipped when already complete).
let private shard (args: ParseResults<RunArgs>) (path: string) (overrides: Overrides) (specText: string) =
    match Shards.parseSpec specText env with
    | Error m ->
        eprintfn "%s:1:1: error: %s" path m
        exitInput
    | Ok spec ->
    match args.TryGetResult RunArgs.Out, args.TryGetResult Backend with
    | None, _ ->
        eprintfn "%s:1:1: error: --shard needs --out DIR (the folder of the partial files)" path
        exitInput
    | _, Some b when b <> "cpu" && b <> "auto" ->
        eprintfn "%s:1:1: error: --shard runs on the CPU engine (--backend cpu), whose sums merge exactly; got --backend %s" path b
        exitInput
    | _ when args.Contains RunArgs.Json || args.Contains RunArgs.Csv || args.Contains RunArgs.Strict ->
        eprintfn "%s:1:1: error: a shard has no results to print (--json, --csv, --strict): dsl merge prints them" path
        exitInput
    | Some dir, _ ->
        match compileSource path overrides with
        | Error code -> code
        | Ok (program, text) ->
            let paths = program.Settings.Paths

            if int64 spec.N > paths then
                eprintfn "%s:1:1: error: --shard %d/%d: %d shards of a run of %d paths would leave shards without paths; use at most %d shards" path spec.K spec.N spec.N paths paths
                exitInput
            else
                let h = Shards.headerOf program.Program path text overrides spec
                let update, finish = if args.Contains RunArgs.Quiet then ignore, ignore else Progress.create (sprintf "shard %d/%d" spec.K spec.N)
                let opts = { Driver.defaultOptions with Threads = args.GetResult(Threads, 0); Progress = Some update; Backend = "cpu" }

                try
                    try
                        match Shards.runShard program.Program h opts dir (args.Contains Force) with
                        | Shards.Skipped file ->
                            finish ()
                            printfn "shard %d/%d: %s is complete already (paths %d..%d); nothing to do (--force reruns it)" spec.K spec.N file h.Range.First (h.Range.First + h.Range.Count - 1L)
                            0
                        | Shards.Written (file, _, seconds) ->
                            finish ()
                            printfn "shard %d/%d: paths %d..%d of %d parameter set(s) in %.3g s -> %s" spec.K spec.N h.Range.First (h.Range.First + h.Range.Count - 1L)
                                program.ParameterSets.Length seconds file
                            0
                    with ex -> runFailure path finish ex
                finally
                    finish ()

let private run (args: ParseResults<RunArgs>) =
    let path = args.GetResult RunArgs.File

    let sets = args.GetResults RunArgs.Set |> List.map parseAssignment

    match sets |> List.tryPick (function Error e -> Some e | _ -> None) with
    | Some e ->
        eprintfn "%s:1:1: error: %s" path e
        exitInput
    | None ->
    match args.TryGetResult Backend with
    | Some b when not (List.contains b [ "cpu"; "ilgpu-cpu"; "cuda"; "auto" ]) ->
        eprintfn "%s:1:1: error: backend '%s' is not available (available: cpu, ilgpu-cpu, cuda, auto)" path b
        exitInput
    | _ ->
    match args.TryGetResult RunArgs.Seed with
    | Some s when s < 0L ->
        eprintfn "%s:1:1: error: --seed must be a non-negative integer" path
        exitInput
    | _ ->
    match args.TryGetResult Threads with
    | Some n when n < 0 ->
        eprintfn "%s:1:1: error: --threads must be >= 0 (0: all cores), got %d" path n
        exitInput
    | _ ->
        let overrides: Overrides =
            { Sets = sets |> List.choose (function Ok a -> Some a | _ -> None)
              ParamsName = args.TryGetResult RunArgs.Params
              Paths = args.TryGetResult RunArgs.Paths
              Dt = args.TryGetResult RunArgs.Dt
              T = args.TryGetResult RunArgs.Horizon
              Seed = args.TryGetResult RunArgs.Seed |> Option.map uint64 }

        match args.TryGetResult Shard with
        | Some spec -> shard args path overrides spec
        | None when args.Contains Force ->
            eprintfn "%s:1:1: error: --force applies to a shard only (--shard K/N)" path
            exitInput
        | None ->
        match compileFile path overrides with
        | Error code -> code
        | Ok program ->
            let quiet = args.Contains RunArgs.Quiet
            let update, finish = if quiet then ignore, ignore else Progress.create "simulating"

            try
                try
                    let report = program.Run(args.GetResult(Threads, 0), Action<float>(update), args.GetResult(Backend, "auto"))
                    finish ()
                    present path (args.Contains RunArgs.Json) (args.Contains RunArgs.Csv) (args.TryGetResult RunArgs.Out) (args.Contains RunArgs.Strict) report
                with ex -> runFailure path finish ex
            finally
                finish ()

/// `dsl merge DIR... [--out DIR]`: the N shards of one run into its report, or a refusal (exit 2).
let private merge (args: ParseResults<MergeArgs>) =
    let inputs = args.GetResult Inputs
    let sw = Diagnostics.Stopwatch.StartNew()

    match Shards.merge inputs with
    | Error m ->
        eprintfn "error: %s" m
        exitInput
    | Ok (p, report, files) ->
        if not (args.Contains MergeArgs.Quiet) then
            eprintfn "merged %d shard(s) of %s (%d paths per set) in %.3g s" files p.Source report.Settings.Paths sw.Elapsed.TotalSeconds
        present p.Source (args.Contains MergeArgs.Json) (args.Contains MergeArgs.Csv) (args.TryGetResult MergeArgs.Out) (args.Contains MergeArgs.Strict) report

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
    let sets = args.GetResults SlurmArgs.Set |> List.map parseAssignment

    match sets |> List.tryPick (function Error e -> Some e | _ -> None) with
    | Some e ->
        eprintfn "%s:1:1: error: %s" path e
        exitInput
    | None ->
    match args.TryGetResult SlurmArgs.Time, args.TryGetResult SlurmArgs.Cpus with
    | Some t, _ when not (Text.RegularExpressions.Regex.IsMatch(t, @"^(\d+-)?\d+(:\d{1,2}){0,2}$")) ->
        eprintfn "%s:1:1: error: --time %s: expected HH:MM:SS (or D-HH:MM:SS, or minutes)" path t
        exitInput
    | _, Some c when c < 1 ->
        eprintfn "%s:1:1: error: --cpus must be at least 1, got %d" path c
        exitInput
    | _ ->
    match args.TryGetResult SlurmArgs.Seed with
    | Some s when s < 0L ->
        eprintfn "%s:1:1: error: --seed must be a non-negative integer" path
        exitInput
    | _ ->
        let overrides: Overrides =
            { Sets = sets |> List.choose (function Ok a -> Some a | _ -> None)
              ParamsName = args.TryGetResult SlurmArgs.Params
              Paths = args.TryGetResult SlurmArgs.Paths
              Dt = args.TryGetResult SlurmArgs.Dt
              T = args.TryGetResult SlurmArgs.Horizon
              Seed = args.TryGetResult SlurmArgs.Seed |> Option.map uint64 }

        match compileFile path overrides with
        | Error code -> code
        | Ok program ->
            let paths = program.Settings.Paths

            if n < 1 || int64 n > paths then
                eprintfn "%s:1:1: error: --shards %d: use 1 to %d shards (the run has %d paths)" path n (min paths 1000000L) paths
                exitInput
            else
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

                let req: Shards.SlurmRequest =
                    { Dsl = dslCommand ()
                      File = path
                      Shards = n
                      Partition = args.TryGetResult SlurmArgs.Partition
                      Time = args.TryGetResult SlurmArgs.Time
                      Cpus = args.TryGetResult SlurmArgs.Cpus
                      Mem = args.TryGetResult SlurmArgs.Mem
                      Out = out
                      SbatchArgs = args.GetResults SlurmArgs.Sbatch_Arg
                      RunArgs = runArgs
                      JobName = "dsl-" + program.ModelName }

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

[<EntryPoint>]
let main argv =
    // DSL_SCALAR_NORMALS=1: the portable scalar normals on every thread, so that the CPU backend's
    // numbers can be compared bit for bit with a GPU backend's (which computes the scalar formula)
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
            | Some (Compile c) -> compile c
            | _ ->
                Console.Error.WriteLine(parser.PrintUsage())
                exitInput
    with
    | :? ArguParseException as e ->
        if e.ErrorCode = ErrorCode.HelpText then
            Console.Out.WriteLine e.Message
            0
        else
            Console.Error.WriteLine e.Message
            exitInput
    | ex ->
        eprintfn "error: %s" ex.Message
        exitRun
