/// The front end as the other stages call it: text to a checked file, and the command-line
/// overrides applied to a checked file.
module Sde.Lang.Frontend

open System
open System.Threading
open Sde.Lang.Syntax
open Sde.Lang.Checked

/// Command-line overrides: `--set p=v`, `--params NAME`, `--paths --dt --T --seed`. A vector's whole
/// value, `--set 'a=[1,2]'`, is the entry ("a[]", 2) (its length, checked against the vector's size)
/// followed by ("a[0]", 1), ("a[1]", 2).
type Overrides =
    { Sets: (string * float) list
      ParamsName: string option
      Paths: int64 option
      Dt: float option
      T: float option
      Seed: uint64 option }

let noOverrides =
    { Sets = []
      ParamsName = None
      Paths = None
      Dt = None
      T = None
      Seed = None }

/// Stack of the threads that run the recursive passes (checker, lowering, derivatives, emitter):
/// with expressions at most `Checker.maxExprDepth` deep they use a small part of it.
let largeStack = 256 * 1024 * 1024

/// Runs `f` on a thread with a large stack (`largeStack`) and returns its result or rethrows its
/// exception: the caller's own stack (1.5 MB on a thread-pool thread) never holds the recursion.
let onLargeStack (f: unit -> 'a) : 'a =
    let mutable result = Unchecked.defaultof<'a>
    let mutable error: exn = null

    let body () =
        try
            result <- f ()
        with ex ->
            error <- ex

    let th = Thread(body, largeStack)
    th.Start()
    th.Join()

    if isNull error then
        result
    else
        Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw()
        Unchecked.defaultof<'a>

/// Runs `f` on a thread with a large stack, turning any exception into a diagnostic at 1:1.
let private guarded (f: unit -> Result<'a, Diagnostic list>) : Result<'a, Diagnostic list> =
    try
        onLargeStack f
    with ex ->
        Error [ { Pos = { Line = 1; Col = 1 }; Message = sprintf "internal error: %s" ex.Message } ]

/// Largest source accepted, in bytes for a file the command line reads and in characters for a
/// text given to the embedding API.
let maxSourceBytes = Limits.sourceChars

/// Parses then checks a source text, with its `fit` block (if any). Never throws.
let compileWithFit (fileName: string) (text: string) : Result<CheckedFile * FitCheck.FitSpec option, Diagnostic list> =
    ignore fileName

    guarded (fun () ->
        let text = if isNull text then "" else text

        if text.Length > maxSourceBytes then
            Error [ { Pos = { Line = 1; Col = 1 }; Message = sprintf "the source has %d characters; at most %d" text.Length maxSourceBytes } ]
        else

        match Parser.parseFile text with
        | Error d -> Error [ d ]
        | Ok f ->
            // a weight becomes hidden states before the checker (no weight: the file as it is)
            match Weights.desugar f with
            | Error ds -> Error ds
            | Ok (f, weight) ->
                Checker.check f
                |> Result.map (fun cf -> { cf with Weight = weight })
                |> Result.bind (fun cf -> FitCheck.check f cf |> Result.map (fun fit -> cf, fit)))

/// Parses then checks a source text (a `fit` block is checked too). Never throws.
let compileText (fileName: string) (text: string) : Result<CheckedFile, Diagnostic list> =
    compileWithFit fileName text |> Result.map fst

/// Applies command-line overrides to a checked file; the error says which flag is wrong.
let applyOverrides (cf: CheckedFile) (o: Overrides) : Result<CheckedFile, string> =
    let ps = cf.Model.Params

    let sets =
        match o.ParamsName with
        | None -> Ok cf.Sets
        | Some n ->
            match cf.Sets |> List.filter (fun s -> s.Name = n) with
            | [] ->
                Error(
                    sprintf "--params: unknown parameter set '%s'; the sets are: %s" n (String.Join(", ", cf.Sets |> List.map (fun s -> s.Name)))
                )
            | xs -> Ok xs

    let applySet (sets: Result<ParamSet list, string>) (name: string, v: float) =
        sets
        |> Result.bind (fun sets ->
            match ps |> List.tryFindIndex (fun p -> p.Name = name) with
            | None when isNull name -> Error "--set: a parameter name is missing (null)"
            | None when name.EndsWith "[]" ->
                // `--set 'a=[1,2]'` arrives as ("a[]", 2) then a[0], a[1]: the list's length against the vector's size
                let b = name.Substring(0, name.Length - 2)
                let size = ps |> List.filter (fun p -> p.Name <> b && Checked.paramBase p.Name = b) |> List.length

                if size = 0 && ps |> List.exists (fun p -> p.Name = b) then Error(sprintf "--set: '%s' is a scalar param: its value is a number, not a list" b)
                elif size = 0 then Error(sprintf "--set: unknown param '%s'%s" b (Checker.suggest b (ps |> List.map (fun p -> p.Name))))
                elif float size <> v then Error(sprintf "--set: %s has %d components, the list has %g" b size v)
                else Ok sets
            | None when (Checked.vectorParamProblem (ps |> List.map (fun p -> p.Name)) name).IsSome ->
                Error("--set: " + (Checked.vectorParamProblem (ps |> List.map (fun p -> p.Name)) name).Value)
            | None ->
                Error(
                    sprintf "--set: unknown param '%s'%s (params: %s)" name (Checker.suggest name (ps |> List.map (fun p -> p.Name)))
                        (String.Join(", ", ps |> List.map (fun p -> p.Name)))
                )
            | Some _ when sets |> List.exists (fun s -> s.Name.StartsWith(name + "=")) ->
                // the sweep's sets are named by the swept value: overriding it would run them all with
                // one value under labels that say otherwise
                Error(
                    sprintf "--set: '%s' is swept by the file (sets %s); remove the sweep, or run one of its sets with --params" name
                        (String.Join(", ", sets |> List.filter (fun s -> s.Name.StartsWith(name + "=")) |> List.map (fun s -> s.Name) |> List.truncate 4))
                )
            | Some i ->
                match Checker.checkDomain ps[i] v with
                | Error m -> Error("--set: " + m)
                | Ok() when not (Double.IsFinite v) -> Error(sprintf "--set: the value of '%s' must be finite" name)
                | Ok() -> Ok(sets |> List.map (fun s -> { s with Values = Array.updateAt i v s.Values })))

    let sets = List.fold applySet sets o.Sets

    let settings =
        let s = cf.Settings

        let s =
            { s with
                Paths = defaultArg o.Paths s.Paths
                Dt = defaultArg o.Dt s.Dt
                T = defaultArg o.T s.T
                Seed = defaultArg o.Seed s.Seed }

        // the options that changed the grid, named in its error (the file's own T and dt were checked)
        let gridOptions =
            [ if o.Dt.IsSome then "--dt"
              if o.T.IsSome then "--T" ]
            |> String.concat " and "

        // the options that changed the settings, for an error the file alone would not have
        let changed =
            [ if o.Paths.IsSome then "--paths"
              if o.Dt.IsSome then "--dt"
              if o.T.IsSome then "--T" ]
            |> String.concat " and "

        match Checker.validateSettings s with
        | Error m when m.StartsWith "paths" && o.Paths.IsSome -> Error("--paths: " + m)
        | Error m when m.StartsWith "dt" && o.Dt.IsSome -> Error("--dt: " + m)
        | Error m when (m.StartsWith "T" || m.StartsWith "burnin") && o.T.IsSome -> Error("--T: " + m)
        | Error m -> Error(sprintf "%s: %s" (if changed = "" then "settings" else changed) m)
        | Ok() when (Checker.sizeError s.Paths s.Dt s.T).IsSome ->
            let key, m = (Checker.sizeError s.Paths s.Dt s.T).Value
            let option = if key = "paths" && o.Paths.IsSome then "--paths" elif o.Dt.IsSome then "--dt" elif o.T.IsSome then "--T" else "--paths"
            Error(sprintf "%s: %s" option m)
        | Ok() when (Checker.gridError s.Dt s.T).IsSome -> Error(sprintf "%s: %s" gridOptions (Checker.gridError s.Dt s.T).Value)
        | Ok() ->
            match cf.Queries |> List.tryPick (fun q -> match Checker.validateQueryTimes s q with Error m -> Some(q, m) | Ok() -> None) with
            | Some(q, m) -> Error(sprintf "%s: query '%s' (line %d): %s" (if changed = "" then "settings" else changed) q.Text q.Pos.Line m)
            | None -> Ok s

    match sets, settings with
    | Ok sets, Ok st -> Ok { cf with Sets = sets; Settings = st }
    | Error m, _
    | _, Error m -> Error m
