/// The `dsl` command-line tool: `dsl run FILE`, `dsl check FILE`.
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

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | File _ -> "the .sde file to run."
            | Out _ -> "write results.json and one SVG plot per density query into this folder."
            | Json -> "print the results as JSON on standard output (instead of the table)."
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

type Cli =
    | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<RunArgs>
    | [<CliPrefix(CliPrefix.None)>] Check of ParseResults<CheckArgs>
    | [<CliPrefix(CliPrefix.None)>] Compile of ParseResults<CompileArgs>
    | Version

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Run _ -> "simulate a model and answer its queries (options: dsl run --help; --strict exits 3 when a result carries a warning)."
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
/// At most `Frontend.maxSourceBytes` are read (one more to know that there are more): a larger
/// input, or an endless one such as /dev/zero (whose length reads as 0), is refused unread.
let private readSource (path: string) : Result<string, string> =
    try
        use stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, false)
        let cap = Frontend.maxSourceBytes
        let buffer = Array.zeroCreate<byte> (cap + 1)
        let mutable total = 0
        let mutable reading = true

        while reading && total <= cap do
            let n = stream.Read(buffer, total, buffer.Length - total)
            if n = 0 then reading <- false else total <- total + n

        if total > cap then
            Error(sprintf "%s:1:1: error: the file is larger than %d bytes, the most a model file may have" path cap)
        else
            use reader = new StreamReader(new MemoryStream(buffer, 0, total), Text.Encoding.UTF8, true)
            Ok(reader.ReadToEnd())
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
let private compileFile (path: string) (overrides: Overrides) : Result<CompiledProgram, int> =
    match readSource path with
    | Error e ->
        Console.Error.WriteLine e
        Error exitInput
    | Ok text ->
        match SdeCompiler.Compile(text, path, overrides) with
        | Ok p -> Ok p
        | Error ds ->
            printDiagnostics ds
            Error exitInput

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

let private writeOut (dir: string) (report: Report.RunReport) =
    Directory.CreateDirectory dir |> ignore
    File.WriteAllText(Path.Combine(dir, "results.json"), Output.toJson report)

    for set in report.Sets do
        set.Results
        |> List.iteri (fun i q ->
            if Report.isBinned q then
                Plot.writeDensity (Path.Combine(dir, Plot.fileName set.Name i q)) q report.Model set.Name
            elif q.Kind = "lyapunov" then
                Plot.writeSpectrum (Path.Combine(dir, Plot.fileName set.Name i q)) q report.Model set.Name)

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
    match args.TryGetResult Seed with
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
              ParamsName = args.TryGetResult Params
              Paths = args.TryGetResult Paths
              Dt = args.TryGetResult Dt
              T = args.TryGetResult Horizon
              Seed = args.TryGetResult Seed |> Option.map uint64 }

        match compileFile path overrides with
        | Error code -> code
        | Ok program ->
            let quiet = args.Contains Quiet
            let update, finish = if quiet then ignore, ignore else Progress.create "simulating"

            try
                try
                    let report = program.Run(args.GetResult(Threads, 0), Action<float>(update), args.GetResult(Backend, "auto"))
                    finish ()

                    if args.Contains Json then
                        Console.Out.WriteLine(Output.toJson report)
                    else
                        Console.Out.Write(Output.tableWith (Output.useColor ()) report)

                    args.TryGetResult RunArgs.Out |> Option.iter (fun dir -> writeOut dir report)

                    // warnings also on standard error: with --json the table's warning lines are not seen
                    let warnings =
                        [ for set in report.Sets do
                              for q in set.Results do
                                  for m in q.Warnings -> sprintf "%s: warning: set %s, '%s': %s" path set.Name q.Query m ]

                    warnings |> List.iter (fun w -> Console.Error.WriteLine w)
                    // --strict: a result that carries any warning fails the run (after it was printed and written)
                    if args.Contains Strict && not warnings.IsEmpty then exitRun else 0
                with
                | :? SimulationFailedException as e ->
                    finish ()
                    eprintfn "%s: error: %s" path e.Message
                    exitRun
                | :? RunTooLargeException as e ->
                    finish ()
                    eprintfn "%s: error: %s" path e.Message
                    exitRun
                | :? NotSupportedException as e when Text.RegularExpressions.Regex.IsMatch(e.Message, @"^\d+:\d+: ") ->
                    // a query the chosen backend cannot run: a located input error, found before simulating
                    finish ()
                    eprintfn "%s:%s" path (e.Message.Replace(": '", ": error: '"))
                    exitInput
                | :? OperationCanceledException ->
                    finish ()
                    eprintfn "%s: error: cancelled" path
                    exitRun
                | ex ->
                    finish ()
                    let inner = if isNull ex.InnerException then ex else ex.InnerException
                    eprintfn "%s: error: the run failed: %s" path inner.Message
                    exitRun
            finally
                finish ()

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
