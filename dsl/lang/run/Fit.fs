/// Fitting an SDE to data (docs/fitting.md): the KL objective between the smoothed data and the
/// model's law at T, its gradient by the forward divergence-kernel weights ℓ_T of the paths (no
/// backward pass: memory does not grow with the number of steps), Adam on fresh random numbers
/// and MathNet's L-BFGS on common random numbers, in unconstrained coordinates of the domains.
module Sde.Lang.Fit

open System
open System.IO
open System.Globalization
open Sde.Core
open Sde.Lang.Syntax
open Sde.Lang.Checked
open Sde.Lang.FitCheck
open MathNet.Numerics.LinearAlgebra

let private inv = CultureInfo.InvariantCulture

// ---------------------------------------------------------------------------------- data

/// The data of a fit: rows of state components at T.
type FitData =
    { /// The file as read (resolved path).
      File: string
      /// Column names as in the model (`x`, `x[3]`).
      Columns: string[]
      /// The engine component of each column.
      Components: int[]
      /// Rows × columns, row-major.
      Values: float[]
      Rows: int
      /// Jacobian matching from a trajectory file: what was estimated (points, paths, rows, neighbours, ...),
      /// for the summary and fit.json; empty for data read as they are.
      Estimated: (string * float) list
      /// Jacobian matching from a trajectory file: what the estimate could not do (no Jacobian).
      EstimateWarnings: string list }

/// Every state component with its name as a data column names it: `x` for a scalar state, `x[k]` for a vector's.
let componentNames (m: CheckedModel) : (string * int)[] =
    let offsets = m.States |> List.scan (fun o (s: StateInfo) -> o + s.Size) 0

    List.zip m.States (List.take m.States.Length offsets)
    |> List.collect (fun (s, o) ->
        if s.IsVector then [ for k in 0 .. s.Size - 1 -> sprintf "%s[%d]" s.Name k, o + k ] else [ s.Name, o ])
    |> List.toArray

/// Largest data file read (characters): 2^28 (256 Mi). The file is read line by line and only its numbers are
/// kept (8 bytes a cell), so a file at the limit needs at most about 1 GB.
let maxDataBytes = Limits.fitDataBytes

/// Longest line of a data file (characters): 2^20 (1 Mi); a file with no line ends is refused at it, unread.
let maxDataLine = Limits.fitDataLine

/// Largest data value in magnitude: the kernel squares differences of values over the bandwidth, and the
/// bandwidth rule the data's variance, which overflow far before the largest double.
let maxDataValue = Limits.fitDataValue

/// The data file of a fit: resolved against `baseDir` (the directory of the .sde file) unless absolute.
let dataPath (baseDir: string) (spec: FitSpec) =
    if Path.IsPathRooted spec.Data then spec.Data else Path.Combine((if String.IsNullOrEmpty baseDir then "." else baseDir), spec.Data)

let private cellText (s: string) =
    let t = s.Trim()
    if t.Length >= 2 && t.StartsWith "\"" && t.EndsWith "\"" then t.Substring(1, t.Length - 2).Trim() else t

/// A piece of the input quoted in a message: at most 40 characters (a message never grows with the input).
let private quote (t: string) = if t.Length > 40 then t.Substring(0, 40) + "..." else t

/// The columns a Jacobian-matching data file may name, with their codes: a state component `x` (code
/// c), a field component `dx` (d + c), a Jacobian entry `dx/dy` = ∂f_x/∂y (2d + a·d + b).
let fieldColumns (m: CheckedModel) : (string * int)[] =
    let comps = componentNames m
    let d = comps.Length

    Array.concat
        [ comps
          comps |> Array.map (fun (n, c) -> "d" + n, d + c)
          [| for (a, ca) in comps do
                 for (b, cb) in comps -> sprintf "d%s/d%s" a b, 2 * d + ca * d + cb |] ]

/// A cell's text without any white space (header names: `x [3]` is `x[3]`).
let private stripCell (c: string) = String((cellText c).ToCharArray() |> Array.filter (Char.IsWhiteSpace >> not))

/// A data file past maxDataBytes or maxDataLine: the message.
exception private DataLimit of string

/// The content lines of a data file as they are read (the file is never held whole): `Next` gives the next line
/// that is not blank or a `#` comment, with its index from 0. A line ends at LF, CR LF or a lone CR (a file
/// saved with old Mac line ends reads as its lines). Raises DataLimit past maxDataBytes characters in all or
/// maxDataLine in one line.
type private DataLines(name: string, reader: TextReader) =
    let buf = Array.zeroCreate<char> 65536
    let line = Text.StringBuilder()
    let mutable pos, len = 0, 0
    let mutable total = 0L
    let mutable index = -1
    let mutable ended = false

    /// The next line (any), None at the end of the input.
    let rawLine () =
        if ended then None
        else
            line.Clear() |> ignore
            let mutable result = None

            while result.IsNone && not ended do
                if pos = len then
                    len <- reader.Read(buf, 0, buf.Length)
                    pos <- 0
                    total <- total + int64 len
                    if total > maxDataBytes then raise (DataLimit(sprintf "%s: the file is larger than %d MiB characters, the limit of a data file" name (maxDataBytes >>> 20)))

                if len = 0 then
                    ended <- true
                    if line.Length > 0 then result <- Some(line.ToString())
                else
                    let mutable i = pos
                    while i < len && buf[i] <> '\n' && buf[i] <> '\r' do i <- i + 1
                    if line.Length + (i - pos) > maxDataLine then
                        raise (DataLimit(sprintf "%s, line %d: longer than %d characters, the limit of a data line (a file without line ends?)" name (index + 2) maxDataLine))
                    line.Append(buf, pos, i - pos) |> ignore

                    if i < len then
                        // a CR LF is one line end: skip the LF (possibly in the next buffer)
                        if buf[i] = '\r' then
                            if i + 1 < len then
                                pos <- (if buf[i + 1] = '\n' then i + 2 else i + 1)
                            else
                                len <- reader.Read(buf, 0, buf.Length)
                                total <- total + int64 len
                                pos <- (if len > 0 && buf[0] = '\n' then 1 else 0)
                        else pos <- i + 1
                        result <- Some(line.ToString())
                    else pos <- len

            if result.IsSome then index <- index + 1
            result

    /// The next content line and its index, None at the end.
    member _.Next() : (int * string) option =
        let mutable r = None
        let mutable go = true

        while go do
            match rawLine () with
            | None -> go <- false
            | Some l when l.Trim() = "" || l.TrimStart().StartsWith "#" -> ()
            | Some l ->
                r <- Some(index, l)
                go <- false

        r

/// Parses the rows of a data file after its header line `first` (None: the file has none) against the columns
/// `known` (names and codes, the codes going to `Components`); every problem is a message that names the file, the
/// line and the column. Also gives the line index of each row.
let private parseRows (known: (string * int)[]) (name: string) (first: (int * string) option) (lines: DataLines) : Result<FitData * int[], string> =
    let knownMap = dict known

    match first with
    | None -> Error(sprintf "%s: the file is empty; it needs a header of state names (e.g. %s) and at least two rows" name (fst known[0]))
    | Some(hl, header) ->
        let cols = header.Split(',') |> Array.map stripCell
        let list = String.Join(", ", known |> Array.truncate 8 |> Array.map fst) + (if known.Length > 8 then ", ..." else "")

        let headerErr =
            cols
            |> Array.indexed
            |> Array.tryPick (fun (j, c) ->
                if c = "" then Some(sprintf "%s, line %d: column %d of the header has no name; name each column by a state (%s)" name (hl + 1) (j + 1) list)
                elif not (knownMap.ContainsKey c) then
                    let hint = if c.Length <= 256 then Checker.suggest c (Array.map fst known) else ""
                    Some(sprintf "%s, line %d: unknown column '%s'%s; the columns are states of the model (%s)" name (hl + 1) (quote c) hint list)
                elif Array.IndexOf(cols, c) <> j then Some(sprintf "%s, line %d: column '%s' appears twice" name (hl + 1) (quote c))
                else None)

        match headerErr with
        | Some e -> Error e
        | None ->
            let q = cols.Length
            let colList = String.Join(", ", cols |> Array.truncate 8) + (if q > 8 then ", ..." else "")
            let values = Collections.Generic.List<float>()
            let rowLines = Collections.Generic.List<int>()
            let mutable err = None

            let parseRow (li: int) (line: string) =
                let cells = line.Split(',')

                // more cells than columns, each of digits only: numbers written with a decimal comma
                // (`0,5` for 0.5), which a comma-separated file cannot hold
                let decimalComma =
                    cells.Length > q
                    && cells |> Array.forall (fun c -> let t = (cellText c).TrimStart('-', '+') in t <> "" && t |> Seq.forall Char.IsDigit)

                if cells.Length <> q && decimalComma then
                    Some(sprintf "%s, line %d: %d cells, but the header names %d column%s (%s): the numbers seem to be written with a decimal comma ('%s'); write them with a decimal point (0.5, not 0,5), since commas separate the cells" name (li + 1) cells.Length q (if q = 1 then "" else "s") colList (quote (line.Trim())))
                elif cells.Length <> q then
                    Some(sprintf "%s, line %d: %d cell%s, but the header names %d column%s (%s)" name (li + 1) cells.Length (if cells.Length = 1 then "" else "s") q (if q = 1 then "" else "s") colList)
                else
                    cells
                    |> Array.indexed
                    |> Array.tryPick (fun (j, c) ->
                        let t = cellText c
                        match Double.TryParse(t, NumberStyles.Float, inv) with
                        | true, v when Double.IsFinite v && not (t.Contains "∞") && abs v <= maxDataValue ->
                            values.Add v
                            None
                        | true, v when Double.IsFinite v && not (t.Contains "∞") ->
                            Some(sprintf "%s, line %d, column '%s': %s is larger in magnitude than %g, the limit of a data value (the kernel squares differences of values); rescale the data and the model" name (li + 1) cols[j] (quote t) maxDataValue)
                        | true, _ -> Some(sprintf "%s, line %d, column '%s': '%s' is not a finite number (NaN and infinities are not data)" name (li + 1) cols[j] (quote t))
                        | _ when t = "" -> Some(sprintf "%s, line %d, column '%s': the cell is empty" name (li + 1) cols[j])
                        | _ -> Some(sprintf "%s, line %d, column '%s': '%s' is not a number" name (li + 1) cols[j] (quote t)))

            let mutable next = lines.Next()

            while err.IsNone && next.IsSome do
                let li, line = next.Value
                err <- parseRow li line
                rowLines.Add li
                next <- if err.IsNone then lines.Next() else None

            let rows = rowLines.Count

            match err with
            | Some e -> Error e
            | None when rows < 2 -> Error(sprintf "%s: %d data row%s; a fit needs at least two" name rows (if rows = 1 then "" else "s"))
            | None ->
                Ok(
                    { File = name
                      Columns = cols
                      Components = cols |> Array.map (fun c -> knownMap[c])
                      Values = values.ToArray()
                      Rows = rows
                      Estimated = []
                      EstimateWarnings = [] },
                    rowLines.ToArray()
                )

/// Parses lines from `reader` as parseRows does, a size limit being a message too.
let private parseFrom (known: (string * int)[]) (name: string) (reader: TextReader) : Result<FitData, string> =
    try
        let lines = DataLines(name, reader)
        parseRows known name (lines.Next()) lines |> Result.map fst
    with DataLimit msg -> Error msg

/// Parses the CSV text of the data (header of state names, then one row per sample); every problem is
/// a message that names the file, the line and the column.
let rec parseData (name: string) (m: CheckedModel) (text: string) : Result<FitData, string> = parseDataWith (componentNames m) name text

/// As parseData, with the columns `known` (names and codes, the codes going to `Components`).
and parseDataWith (known: (string * int)[]) (name: string) (text: string) : Result<FitData, string> =
    parseFrom known name (new StringReader(text))

/// Most centres (rows) a trajectory file gives Jacobian matching (every s-th interior point beyond it).
let maxTrajectoryRows = 5000

/// Whether a data file's header names a `t` column (a trajectory file, as samples(...) every Δ writes it).
let private namesTime (header: string) = header.Split(',') |> Array.exists (fun c -> stripCell c = "t")

/// As trajectoryData, on the header line `first` and the lines after it.
let private trajectoryRows (m: CheckedModel) (name: string) (first: (int * string) option) (lines: DataLines) : Result<FitData, string> option =
    let strip = stripCell
    let g6' (x: float) = x.ToString("G6", inv)

    match first with
    | Some(hl, header) when namesTime header ->
        let comps = componentNames m
        let d = comps.Length
        let cols = header.Split(',') |> Array.map strip
        let pathIsState = comps |> Array.exists (fun (n, _) -> n = "path")
        let known = Array.append comps [| yield "t", -1; if not pathIsState then yield "path", -2 |]
        let fieldNames = fieldColumns m |> Array.filter (fun (_, c) -> c >= d) |> Array.map fst

        match cols |> Array.tryFind (fun c -> Array.contains c fieldNames) with
        | Some c ->
            Some(Error(sprintf "%s, line %d: column '%s' in a trajectory file (it has a t column): the field and its Jacobian are estimated from the path, so the file holds t, path and the states only; drop '%s', or drop t to give the field" name (hl + 1) c c))
        | None ->
            Some(
                parseRows known name first lines
                |> Result.bind (fun (fd, rowLines) ->
                    let q = fd.Columns.Length
                    let col c = Array.IndexOf(fd.Components, c)

                    match comps |> Array.tryFind (fun (_, c) -> col c < 0) with
                    | Some(n, _) -> Error(sprintf "%s: no column '%s': a trajectory file holds the whole state along each path (columns t, path and %s)" name n (String.Join(", ", Array.map fst comps)))
                    | None ->
                        let rows = fd.Rows
                        let lineOf r = rowLines[r] + 1
                        let tc, pc = col (-1), col (-2)
                        let time = Array.init rows (fun r -> fd.Values[r * q + tc])
                        let pathVal r = if pc >= 0 then fd.Values[r * q + pc] else 0.0

                        let badPath =
                            Seq.init rows id |> Seq.tryFind (fun r -> let v = pathVal r in v <> Math.Round v || abs v > 9e15)

                        match badPath with
                        | Some r -> Error(sprintf "%s, line %d, column 'path': '%s' is not a whole number (a path's number)" name (lineOf r) (g6' (pathVal r)))
                        | None ->
                            let path = Array.init rows (fun r -> int64 (pathVal r))
                            // the rows of a path in increasing time
                            let last = Collections.Generic.Dictionary<int64, int>()

                            let unordered =
                                Seq.init rows id
                                |> Seq.tryPick (fun r ->
                                    match last.TryGetValue path[r] with
                                    | true, prev when not (time[r] > time[prev]) -> Some(r, prev)
                                    | _ ->
                                        last[path[r]] <- r
                                        None)

                            match unordered with
                            | Some(r, prev) ->
                                Error(sprintf "%s, line %d, column 't': t = %s is not after t = %s of line %d%s; the rows of a path must be in increasing time" name (lineOf r) (g6' time[r]) (g6' time[prev]) (lineOf prev)
                                          (if pc >= 0 then sprintf " (path %d)" path[r] else " (no path column: one path)"))
                            | None ->
                                let states = Array.init (rows * d) (fun i -> fd.Values[(i / d) * q + col (i % d)])
                                let k = TrajectoryField.DefaultNeighbours d
                                let e = TrajectoryField.Run(states, time, path, d, true, k, k, maxTrajectoryRows)

                                if e.Rows < 2 then
                                    Error(sprintf "%s: %d interior point%s (a point with a row before and after it on its path); the field is estimated by differences along a path: give at least two" name e.InteriorPoints (if e.InteriorPoints = 1 then "" else "s"))
                                else
                                    let names = comps |> Array.map fst
                                    let cols =
                                        Array.concat
                                            [ names
                                              names |> Array.map (fun n -> "d" + n)
                                              (if e.HasJacobian then [| for a in names do for b in names -> sprintf "d%s/d%s" a b |] else [||]) ]
                                    let codes =
                                        Array.concat
                                            [ Array.init d id
                                              Array.init d (fun i -> d + i)
                                              (if e.HasJacobian then Array.init (d * d) (fun i -> 2 * d + i) else [||]) ]
                                    let w = cols.Length
                                    let values =
                                        Array.init (e.Rows * w) (fun i ->
                                            let r, c = i / w, i % w
                                            if c < d then e.States[r * d + c]
                                            elif c < 2 * d then e.Field[r * d + c - d]
                                            else e.Jacobian[r * d * d + c - 2 * d])

                                    let estimated =
                                        [ "points", float e.Points
                                          "paths", float e.Paths
                                          "interior_points", float e.InteriorPoints
                                          "rows", float e.Rows
                                          "neighbours", float e.Neighbours
                                          "exclusion_steps", float e.Exclusion
                                          "degenerate", float e.Degenerate ]
                                        @ (if e.HasJacobian then [ "median_radius", e.MedianRadius ] else [])

                                    let warnings =
                                        if not e.HasJacobian && e.InteriorPoints <= k then
                                            [ sprintf "the Jacobian was not estimated from the trajectories: %d interior points are too few for local linear fits over %d neighbours; the fit matches the estimated field only" e.InteriorPoints k ]
                                        elif not e.HasJacobian then
                                            [ sprintf "the Jacobian was not estimated from the trajectories: at every centre the %d nearest states span fewer than %d directions (the thinnest under %g of the widest: a thin attractor, or too few paths); the fit matches the estimated field only (start paths off the attractor, add paths or noise)" k d TrajectoryField.MinSpread ]
                                        elif e.Degenerate > 0 then
                                            [ sprintf "%d of %d rows carry no Jacobian: their %d nearest states span fewer than %d directions (the thinnest under %g of the widest); they match the field only" e.Degenerate e.Rows k d TrajectoryField.MinSpread ]
                                        else []

                                    Ok
                                        { File = name
                                          Columns = cols
                                          Components = codes
                                          Values = values
                                          Rows = e.Rows
                                          Estimated = estimated
                                          EstimateWarnings = warnings }))
    | _ -> None

/// Jacobian matching from a trajectory file: when the header names `t` (and optionally `path`, unless
/// a state is called so) with the whole state and no field or Jacobian column, the rows are states along
/// paths in increasing time, and the field and Jacobian rows are estimated from them (TrajectoryField:
/// the three-point derivative, a local linear fit over 4(d + 1) neighbours leaving out the same path's
/// points within as many steps). None when the file is not a trajectory file (no `t` column).
let trajectoryData (m: CheckedModel) (name: string) (text: string) : Result<FitData, string> option =
    try
        let lines = DataLines(name, new StringReader(text))
        trajectoryRows m name (lines.Next()) lines
    with DataLimit msg -> Some(Error msg)

/// Reads and parses the data file of `spec`; errors are located at the file name in the source.
let loadData (baseDir: string) (m: CheckedModel) (spec: FitSpec) : Result<FitData, Diagnostic list> =
    let at msg = Error [ { Pos = spec.DataPos; Message = msg } ]
    let path = dataPath baseDir spec

    try
        if Directory.Exists path then at (sprintf "data file '%s' is a directory" spec.Data)
        elif not (File.Exists path) then at (sprintf "data file '%s' not found (looked for %s)" spec.Data (Path.GetFullPath path))
        else
            // read line by line, keeping only the numbers (a device such as /dev/zero is refused at the line
            // limit); a FIFO without a writer reads as empty instead of blocking forever
            use stream = Files.openRead path
            use reader = new StreamReader(stream)
            let lines = DataLines(spec.Data, reader)

            let parsed =
                try
                    let first = lines.Next()

                    match spec.Objective with
                    | KlAt _
                    | KlStationary _ ->
                        match first with
                        | Some(hl, header) when namesTime header && not (componentNames m |> Array.exists (fun (n, _) -> n = "t")) ->
                            Error(sprintf "%s, line %d: a column 't': this looks like a trajectory file (samples(...) every Δ writes path, t, ...), which is data for objective = jacobian_matching(...); a kl objective takes one row per sample of the states (samples(...) without every writes them)" spec.Data (hl + 1))
                        | _ -> parseRows (componentNames m) spec.Data first lines |> Result.map fst
                    | JacobianMatching _ ->
                        match trajectoryRows m spec.Data first lines with
                        | Some fromPaths -> fromPaths
                        | None ->

                        let d = m.Dim
                        let comps = componentNames m

                        parseRows (fieldColumns m) spec.Data first lines
                        |> Result.bind (fun (fd, _) ->
                            match comps |> Array.tryFind (fun (_, c) -> not (Array.contains c fd.Components)) with
                            | Some(n, _) -> Error(sprintf "%s: no column '%s': jacobian matching evaluates the model's field at each row's whole state (columns: the states, the field components as d%s, the Jacobian entries as d%s/d%s)" spec.Data n n n n)
                            | None when fd.Components |> Array.forall (fun c -> c < d) ->
                                Error(sprintf "%s: no field column: name the field components d%s, ... or the Jacobian entries d%s/d%s, ..., or give trajectories (a t column, as samples(...) every Δ writes them) to estimate them from" spec.Data (fst comps[0]) (fst comps[0]) (fst comps[0]))
                            | None -> Ok fd)
                with DataLimit msg -> Error msg

            match parsed with
            | Ok d -> Ok { d with File = path }
            | Error e -> at e
    with
    | :? IOException
    | :? UnauthorizedAccessException as ex -> at (sprintf "data file '%s' cannot be read: %s" spec.Data ex.Message)

// ---------------------------------------------------------------------------------- domains

/// How a param with a domain is optimised: γ = lo + e^u on (lo, ∞), hi − e^u on (−∞, hi),
/// lo + (hi − lo)·sigmoid(u) on (lo, hi), γ = u without a domain. The bounds themselves are never reached.
type Transform =
    | Free
    | Above of float
    | Below of float
    | Between of float * float

let transformOf (p: ParamInfo) =
    match p.Domain with
    | None -> Free
    | Some(lo, hi) ->
        match Double.IsFinite lo.Value, Double.IsFinite hi.Value with
        | false, false -> Free
        | true, false -> Above lo.Value
        | false, true -> Below hi.Value
        | true, true -> Between(lo.Value, hi.Value)

/// The open interval of a transform's values (infinite ends where there is no bound).
let bounds tr =
    match tr with
    | Free -> -infinity, infinity
    | Above lo -> lo, infinity
    | Below hi -> -infinity, hi
    | Between(lo, hi) -> lo, hi

/// γ from u, strictly inside the domain: far out in u the transform rounds onto a bound (sigmoid(40) is 1.0
/// in doubles), which a fit must never report (its `params fitted` block would be refused), so such a γ is
/// moved to the nearest double inside.
let rec toParam tr (u: float) =
    match tr with
    | Free -> u
    | Above lo -> inside tr (lo + exp u)
    | Below hi -> inside tr (hi - exp u)
    | Between(lo, hi) -> inside tr (lo + (hi - lo) / (1.0 + exp -u))

/// γ moved to the nearest double strictly inside the domain when it is on or beyond a bound (or infinite).
and inside tr (g: float) =
    let lo, hi = bounds tr
    let lo, hi = max lo -Double.MaxValue, min hi Double.MaxValue
    if g <= lo then Math.BitIncrement lo elif g >= hi then Math.BitDecrement hi else g

/// dγ/du.
let slope tr (u: float) =
    match tr with
    | Free -> 1.0
    | Above _ -> exp u
    | Below _ -> -(exp u)
    | Between(lo, hi) ->
        let s = 1.0 / (1.0 + exp -u)
        (hi - lo) * s * (1.0 - s)

/// u from γ; None when γ is on (or beyond) a bound, where the transform has no preimage.
let ofParam tr (g: float) =
    let ok x = if Double.IsFinite x then Some x else None

    match tr with
    | Free -> Some g
    | Above lo -> if g > lo then ok (log (g - lo)) else None
    | Below hi -> if g < hi then ok (log (hi - g)) else None
    | Between(lo, hi) -> if g > lo && g < hi then ok (log ((g - lo) / (hi - g))) else None

// ---------------------------------------------------------------------------------- report

/// One evaluation of the objective (an iteration of Adam; an evaluation, line-search steps included, of L-BFGS).
type FitStep =
    { Iteration: int
      Loss: float
      LossStdErr: float
      /// |∂L/∂u|: the gradient's norm in the unconstrained coordinates the optimiser moves in.
      GradNorm: float
      /// The fitted params' values there.
      Values: float[] }

[<Sde.Lang.Formatting.TypeFormatterSource(typeof<Sde.Lang.Formatting.SdeFormatterSource>)>]
type FitReport =
    { Model: string
      Source: string
      DataFile: string
      DataRows: int
      Columns: string[]
      Objective: string
      Optimizer: string
      /// Names of the fitted params, in the order of the fit block.
      Names: string[]
      Start: float[]
      Fitted: float[]
      /// The open domain (lo, hi) of each fitted param (infinite ends where it has no bound).
      Bounds: (float * float)[]
      /// Standard errors from the data's scores (NaN when the Fisher information is singular).
      StdErrs: float[]
      /// Every param of the model with its value after the fit (the fitted ones replaced).
      AllParams: (string * float) list
      History: FitStep list
      Converged: bool
      Stop: string
      Bandwidth: float[]
      Paths: int64
      T: float
      Dt: float
      Seed: uint64
      /// Where the fit's simulations ran: "cpu", "ilgpu-cpu" or "cuda" (`auto` resolved).
      Backend: string
      FinalLoss: float
      FinalLossStdErr: float
      Seconds: float
      SecondsPerEvaluation: float
      /// What makes the result less reliable than its standard errors say (heavy-tailed DK weights, data
      /// in the model's far tails), found at the fitted values.
      Warnings: string list
      /// Jacobian matching from a trajectory file: what was estimated (FitData.Estimated); else empty.
      Estimated: (string * float) list }

let private g6 (x: float) = x.ToString("G6", inv)

/// The ready-to-paste `params fitted { ... }` block: the fitted params and any other param whose
/// value in the starting set differs from its default.
let paramsBlock (r: FitReport) (defaults: (string * float) list) =
    let d = dict defaults

    // a fitted value printed to 6 digits may round onto its domain's bound (0.9999999 on (0, 1) prints as 1,
    // which the pasted block would be refused for): then with as many digits as keep it inside
    let text (n: string) (v: float) =
        match Array.tryFindIndex ((=) n) r.Names with
        | Some i ->
            let lo, hi = r.Bounds[i]
            seq { 6..17 } |> Seq.map (fun k -> v.ToString("G" + string k, inv))
            |> Seq.tryFind (fun t -> let x = Double.Parse(t, inv) in x > lo && x < hi)
            |> Option.defaultValue (v.ToString("R", inv))
        | None -> g6 v

    let items =
        r.AllParams
        |> List.filter (fun (n, v) -> Array.contains n r.Names || (match d.TryGetValue n with | true, dv -> dv <> v | _ -> true))
        |> List.map (fun (n, v) -> sprintf "%s = %s" n (text n v))

    sprintf "params fitted { %s }" (String.Join("; ", items))

/// One progress line.
let progressLine (names: string[]) (s: FitStep) =
    let ps = Array.map2 (fun n v -> sprintf "%s %s" n (g6 v)) names s.Values
    sprintf "%5d  loss %s  |grad| %s  %s" s.Iteration (Output.valueWithError s.Loss s.LossStdErr) (Output.num s.GradNorm) (String.Join("  ", ps))

/// A fitted value and its standard error: rounded to the error's precision, unless the error is as large as the
/// value, where that rounding would print the value as 0 (`0 ± 27000000` for 4.886): then the value to 6 digits.
let fittedText (v: float) (se: float) =
    if Double.IsFinite v && Double.IsFinite se && se >= abs v && v <> 0.0 then sprintf "%s ± %s" (g6 v) (Output.num se)
    else Output.valueWithError v se

/// The summary after the fit.
let summary (r: FitReport) (defaults: (string * float) list) =
    let w = r.Names |> Array.map String.length |> Array.max

    // many columns (a 20-component ring): the first three and the last say which
    let columns =
        if r.Columns.Length <= 6 then String.Join(", ", r.Columns)
        else sprintf "%s, ..., %s (%d columns)" (String.Join(", ", Array.take 3 r.Columns)) (Array.last r.Columns) r.Columns.Length

    // the backend ends the line where it is not the default (the CPU engine's line is as it always was)
    let backend = if r.Backend = "cpu" then "" else ", " + r.Backend
    [ yield sprintf "fit of %s to %s (%d rows: %s), %s, %s%s" r.Model (Path.GetFileName r.DataFile) r.DataRows columns r.Objective r.Optimizer backend
      if not r.Estimated.IsEmpty then
          let e = dict r.Estimated
          let get k = match e.TryGetValue k with | true, v -> v | _ -> nan
          yield
              sprintf "  the rows estimated from %g states on %g path%s: the field by three-point differences at %g interior points%s%s"
                  (get "points") (get "paths") (if get "paths" = 1.0 then "" else "s") (get "interior_points")
                  (if get "rows" < get "interior_points" then sprintf " (%g of them as rows)" (get "rows") else "")
                  (if e.ContainsKey "median_radius" then
                       sprintf ", the Jacobian by local linear fits over %g neighbours (same-path points within %g steps left out; median radius %s standard deviations)" (get "neighbours") (get "exclusion_steps") (g6 (get "median_radius"))
                   else ", no Jacobian")
      yield sprintf "%s after %d evaluation%s: %s" (if r.Converged then "converged" else "stopped") r.History.Length (if r.History.Length = 1 then "" else "s") r.Stop
      for i in 0 .. r.Names.Length - 1 do
          yield sprintf "  %s = %s   (start %s)" (r.Names[i].PadRight w) (fittedText r.Fitted[i] r.StdErrs[i]) (g6 r.Start[i])
      if r.Objective.StartsWith "kl" then
          yield sprintf "loss (cross entropy of the smoothed data, nats per row) %s" (Output.valueWithError r.FinalLoss r.FinalLossStdErr)
      else
          yield sprintf "loss (squared field and λ·Jacobian mismatch, mean per row) %s" (Output.valueWithError r.FinalLoss r.FinalLossStdErr)
      for w in r.Warnings do
          yield "warning: " + w
      yield ""
      yield paramsBlock r defaults ]
    |> String.concat "\n"

/// `fit.json`.
let toJson (r: FitReport) : string =
    use ms = new MemoryStream()

    (use w = new Text.Json.Utf8JsonWriter(ms, Text.Json.JsonWriterOptions(Indented = true))
     let num (name: string) (x: float) =
         if Double.IsFinite x then w.WriteNumber(name, x) else w.WriteNull name

     let all = List.map fst r.AllParams

     let byName (name: string) (xs: float[]) =
         w.WriteStartObject name
         Output.writeParamProps w all (List.ofArray r.Names) xs
         w.WriteEndObject()

     w.WriteStartObject()
     w.WriteString("model", r.Model)
     w.WriteString("source", r.Source)
     byName "fitted" r.Fitted
     byName "stderr" r.StdErrs
     byName "start" r.Start
     w.WriteStartObject "params"
     Output.writeParamProps w all all (r.AllParams |> List.map snd |> List.toArray)
     w.WriteEndObject()
     w.WriteString("objective", r.Objective)
     w.WriteString("optimizer", r.Optimizer)
     w.WriteBoolean("converged", r.Converged)
     w.WriteString("stop", r.Stop)
     num "loss" r.FinalLoss
     num "loss_stderr" r.FinalLossStdErr
     w.WriteStartObject "data"
     w.WriteString("file", r.DataFile)
     w.WriteNumber("rows", r.DataRows)
     w.WriteStartArray "columns"
     for c in r.Columns do w.WriteStringValue c
     w.WriteEndArray()
     w.WriteStartArray "bandwidth"
     // (NaN and infinities are never written into the JSON: null, as in the run's JSON)
     for h in r.Bandwidth do if Double.IsFinite h then w.WriteNumberValue h else w.WriteNullValue()
     w.WriteEndArray()

     if not r.Estimated.IsEmpty then
         // Jacobian matching from a trajectory file: what was estimated
         w.WriteStartObject "estimated"
         w.WriteString("from", "trajectories")
         for k, v in r.Estimated do num k v
         w.WriteEndObject()

     w.WriteEndObject()
     w.WriteStartObject "settings"
     w.WriteNumber("paths", r.Paths)
     w.WriteNumber("dt", r.Dt)
     w.WriteNumber("T", r.T)
     w.WriteNumber("seed", r.Seed)
     w.WriteString("backend", r.Backend)
     w.WriteEndObject()
     w.WriteStartArray "warnings"
     for x in r.Warnings do w.WriteStringValue x
     w.WriteEndArray()
     w.WriteStartArray "history"

     for s in r.History do
         w.WriteStartObject()
         w.WriteNumber("iteration", s.Iteration)
         num "loss" s.Loss
         num "loss_stderr" s.LossStdErr
         num "grad_norm" s.GradNorm
         byName "params" s.Values
         w.WriteEndObject()

     w.WriteEndArray()
     w.WriteStartObject "timing"
     w.WriteNumber("seconds", r.Seconds)
     w.WriteNumber("seconds_per_evaluation", r.SecondsPerEvaluation)
     w.WriteEndObject()
     w.WriteEndObject())

    Text.Encoding.UTF8.GetString(ms.ToArray())

/// `fit.json` of a fit whose run failed: the model, the error, and the evaluations done before it
/// (the fitted params of each step by name, as `history` in a finished fit's `fit.json`).
let failedJson (model: string) (source: string) (names: string[]) (error: string) (history: FitStep list) : string =
    use ms = new MemoryStream()

    (use w = new Text.Json.Utf8JsonWriter(ms, Text.Json.JsonWriterOptions(Indented = true, Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping))
     let num (name: string) (x: float) =
         if Double.IsFinite x then w.WriteNumber(name, x) else w.WriteNull name

     w.WriteStartObject()
     w.WriteString("model", model)
     w.WriteString("source", source)
     w.WriteString("error", error)
     w.WriteStartArray "history"

     for s in history do
         w.WriteStartObject()
         w.WriteNumber("iteration", s.Iteration)
         num "loss" s.Loss
         num "loss_stderr" s.LossStdErr
         num "grad_norm" s.GradNorm
         w.WriteStartObject "params"
         Output.writeParamProps w (List.ofArray names) (List.ofArray names) s.Values
         w.WriteEndObject()
         w.WriteEndObject()

     w.WriteEndArray()
     w.WriteEndObject())

    Text.Encoding.UTF8.GetString(ms.ToArray())

/// A file-name-safe form of a param name (non-ASCII letters as uXXXX, as the emitted code names them).
let private safeName (s: string) =
    // a vector param's component `a[2]`: `a-2` (no param name has a '-')
    let s = if s.EndsWith "]" && s.Contains "[" then s.TrimEnd(']').Replace('[', '-') else s
    s |> Seq.map (fun c -> if Char.IsAscii c && (Char.IsLetterOrDigit c || c = '_' || c = '-') then string c else sprintf "u%04X" (int c)) |> String.concat ""

/// Writes fit.json, fit_loss.svg and fit_param_NAME.svg into `dir`; returns the files written.
let write (dir: string) (r: FitReport) : string list =
    Directory.CreateDirectory dir |> ignore
    let json = Path.Combine(dir, "fit.json")
    File.WriteAllText(json, toJson r)
    let its = r.History |> List.map (fun s -> float s.Iteration) |> List.toArray
    let what = if r.Optimizer = "lbfgs" then "evaluation" else "iteration"
    let loss = Path.Combine(dir, "fit_loss.svg")

    Plot.writeLoss loss (sprintf "%s — fit loss" r.Model) (sprintf "%s, %s; ±2 standard errors over the data" r.Objective r.Optimizer) what
        its (r.History |> List.map (fun s -> s.Loss) |> List.toArray) (r.History |> List.map (fun s -> s.LossStdErr) |> List.toArray)

    let ps =
        r.Names
        |> Array.mapi (fun i n ->
            let path = Path.Combine(dir, sprintf "fit_param_%s.svg" (safeName n))
            Plot.writeSeriesWith path (sprintf "%s — %s" r.Model n) (sprintf "fitted %s" (fittedText r.Fitted[i] r.StdErrs[i])) true what n
                [ n, its, (r.History |> List.map (fun s -> s.Values[i]) |> List.toArray), [||] ]
            path)
        |> Array.toList

    json :: loss :: ps

// ---------------------------------------------------------------------------------- the fit

/// Options of one fit that do not belong to the file.
type FitOptions =
    { Threads: int
      /// Called after each evaluation.
      Progress: (FitStep -> unit) option
      /// The directory the data file's name is relative to.
      BaseDir: string
      /// Where the simulations run: "cpu" (the default), "ilgpu-cpu", "cuda" or "auto" (as `dsl run --backend`).
      Backend: string }

let defaultFitOptions = { Threads = 0; Progress = None; BaseDir = "."; Backend = "cpu" }

/// A fit that cannot go on (paths blew up, the DK weights are not defined): the message, located at the fit block.
exception FitFailed of Diagnostic

/// The objective at parameter values, with its recorded paths and data smoothing.
/// A fit's objective, ready to evaluate (`evaluate`): the model compiled for the fitted params'
/// derivatives, the recorded paths' buffers, the data and their bandwidths.
type Problem =
    { Compiled: Compile.CompiledModel
      /// The backend the recorded runs use ("cpu", "ilgpu-cpu", "cuda": `auto` resolved).
      Backend: string
      Runner: IRecordRunner
      Plans: ResponsePlan[]
      Record: PathRecord
      Data: FitData
      H: float[]
      Settings: Settings
      T: float
      Paths: int64
      Threads: int
      Spec: FitSpec
      /// Jacobian matching: the rows' states (M × d), field components and values, Jacobian entries and values.
      Field: (float[] * int[] * float[] * int[] * int[] * float[]) option }

/// The smoothed data points: each row y becomes y + h∘ε and y − h∘ε (antithetic, so the points' mean is the
/// data's mean exactly), with ε standard normal rescaled per column to mean square one (so their covariance
/// is the data's plus diag(h²) up to the data–ε correlation, which the pairs cancel).
let smoothed (d: FitData) (h: float[]) (seed: uint64) : float[] =
    let q = d.Columns.Length
    let rng = MathNet.Numerics.Random.MersenneTwister(int (seed % 2147483647UL), false)
    let eps = Array.init (d.Rows * q) (fun _ -> MathNet.Numerics.Distributions.Normal.Sample(rng, 0.0, 1.0))

    for j in 0 .. q - 1 do
        let ms = Seq.init d.Rows (fun r -> eps[r * q + j] ** 2.0) |> Seq.average
        let s = 1.0 / sqrt ms
        for r in 0 .. d.Rows - 1 do eps[r * q + j] <- eps[r * q + j] * s

    let pts = Array.zeroCreate (2 * d.Rows * q)

    for r in 0 .. d.Rows - 1 do
        for j in 0 .. q - 1 do
            let y, e = d.Values[r * q + j], h[j] * eps[r * q + j]
            pts[(2 * r) * q + j] <- y + e
            pts[(2 * r + 1) * q + j] <- y - e

    pts

/// The bandwidth per data column: the fit's `bandwidth`, or Silverman's rule (KlObjective.Silverman).
let bandwidths (d: FitData) (spec: FitSpec) (paths: int64) =
    let q = d.Columns.Length

    Array.init q (fun j ->
        match spec.Bandwidth with
        | Some h -> h
        | None ->
            let xs = Array.init d.Rows (fun r -> d.Values[r * q + j])
            let sd = MathNet.Numerics.Statistics.Statistics.StandardDeviation xs
            // law = marginals: each column's estimate is one-dimensional
            KlObjective.Silverman(sd, (if spec.Marginals then 1 else q), paths))

/// Most data range per bandwidth in a column: the kernel squares (y − x)/h, which must stay far from overflow.
let maxRangePerBandwidth = 1e100

/// Why the kernel cannot be evaluated with the bandwidths `h` on `d`, if it cannot: a bandwidth that is zero (the
/// rule on a constant column) or not finite, or far below the column's range (the squares would overflow).
let bandwidthProblem (d: FitData) (spec: FitSpec) (h: float[]) : string option =
    let q = d.Columns.Length

    Seq.init h.Length id
    |> Seq.tryPick (fun j ->
        let xs = Seq.init d.Rows (fun r -> d.Values[r * q + j])
        let range = Seq.max xs - Seq.min xs

        if not (h[j] > 0.0 && Double.IsFinite h[j]) then
            match spec.Bandwidth with
            | None when range = 0.0 ->
                Some(sprintf "%s: column '%s' is constant (every row %s), so the bandwidth rule (its standard deviation times a factor) gives 0 and the kernel is singular; a fit cannot learn from a constant column: drop it, or give a bandwidth (bandwidth = ...)" spec.Data d.Columns[j] (g6 d.Values[j]))
            | _ -> Some(sprintf "%s: the bandwidth of column '%s' is %s; it must be positive and finite (give bandwidth = ...)" spec.Data d.Columns[j] (g6 h[j]))
        elif range / h[j] > maxRangePerBandwidth then
            Some(sprintf "%s: the bandwidth %s of column '%s' is below 10^-100 of the column's range %s, so the kernel's squares overflow; give a larger bandwidth" spec.Data (g6 h[j]) d.Columns[j] (g6 range))
        else None)

/// `kl stationary window W` (docs/fitting.md): the grid steps recorded per path, `times` of them evenly spaced over
/// the steps n_b … N of [burnin, T] (both ends included; N alone for one time), and the samples the bandwidth rule
/// counts: paths × min(times, 1 + (T − burnin)/W), recorded times closer than the decorrelation window W being
/// counted as one. Errors (after overrides such as --T) are messages.
let stationaryRecording (s: Settings) (w: float) (times: int option) (paths: int64) : Result<int64[] * float, string> =
    match stationaryWindowProblem s w with
    | Some m -> Error m
    | None ->
        let nb, nt = stationarySteps s
        let r = defaultArg times (defaultStationaryTimes s w)

        if int64 r > nt - nb + 1L then
            Error(sprintf "times = %d, but [burnin, T] holds %d grid times" r (nt - nb + 1L))
        else
            let steps =
                if r = 1 then [| nt |]
                else Array.init r (fun i -> nb + int64 (Math.Floor(float i * float (nt - nb) / float (r - 1) + 0.5)))

            Ok(steps, float paths * min (float r) (1.0 + Math.Floor((s.T - s.Burnin) / w + 1e-9)))

/// An objective or gradient that is NaN or infinite ends the fit (FitFailed, exit 3) saying so: an optimiser fed
/// NaN stops at once and would report its start as a fit.
let private notFinite (pb: Problem) (at: string) (r: KlObjective.Result) =
    let bad = not (Double.IsFinite r.Loss) || r.Gradient |> Array.exists (Double.IsFinite >> not)

    if bad then
        let what = if Double.IsFinite r.Loss then "its gradient is not finite" else sprintf "the objective is %s" (if Double.IsNaN r.Loss then "NaN" else string r.Loss)
        let why =
            if pb.Field.IsSome then "the model's field or its Jacobian overflows at the data's states (rescale the data and the model, or start closer to the data)"
            else sprintf "the kernel of bandwidth %s overflows against the spread of the data and the paths (a data point more than about 10^150 bandwidths from every path, or a bandwidth far below the data's scale): rescale the data, give a larger bandwidth, or start closer to the data" (String.Join(", ", pb.H |> Array.map g6))
        raise (FitFailed { Pos = pb.Spec.Pos; Message = sprintf "at %s: %s; %s" at what why })

/// The objective and its DK gradient (by the fitted params, in their order) at the model's param values
/// `values` (all of them), with the paths of `seed` and the data jitter of `jitterSeed`. Throws FitFailed.
let evaluate (pb: Problem) (values: float[]) (seed: uint64) (jitterSeed: uint64) : KlObjective.Result =
    let s = RunSettings(Paths = pb.Paths, Dt = pb.Settings.Dt, T = pb.T, Seed = seed, Threads = pb.Threads)
    let at = String.Join(", ", List.map2 (fun (i: int) (n: string) -> sprintf "%s = %s" n (g6 values[i])) pb.Spec.Params (pb.Spec.Params |> List.map (fun i -> pb.Compiled.Ir.ParamNames[i])))

    match pb.Field, pb.Spec.Objective with
    | Some(states, fc, fv, jr, jc, jvals), JacobianMatching lambda ->
        let r = pb.Runner.MatchField(pb.Compiled.Instance values, pb.Compiled.Structure, states, fc, fv, jr, jc, jvals, lambda)

        let r =
            KlObjective.Result(
                Loss = r.Loss, LossStdErr = r.LossStdErr, Gradient = r.Gradient, DatumLoss = r.RowLoss, DatumGradient = r.RowGradient,
                MinEffectivePaths = infinity, ShareBelow10 = 0.0
            )

        notFinite pb at r
        r
    | _ ->

    try
        pb.Runner.RunRecorded(pb.Compiled.Instance values, pb.Compiled.Structure, s, pb.Plans, pb.Record)
    with
    | :? SimulationFailedException as ex -> raise (FitFailed { Pos = pb.Spec.Pos; Message = sprintf "at %s: %s" at ex.Message })
    | :? InvalidOperationException as ex -> raise (FitFailed { Pos = pb.Spec.Pos; Message = sprintf "at %s: %s" at ex.Message })

    if pb.Record.NonFinitePaths() > 0L then
        raise (FitFailed { Pos = pb.Spec.Pos; Message = sprintf "at %s: %d path(s) have a non-finite state or DK weight at %s; the model or its weights blow up there (try a smaller dt, or a start closer to the data)" at (pb.Record.NonFinitePaths()) (if pb.Record.Times > 1 then "a recorded time" else "T") })

    let evaluator = if pb.Spec.Marginals then KlObjective.EvaluateMarginals else KlObjective.Evaluate
    let r = evaluator (smoothed pb.Data pb.H jitterSeed, 2, pb.Data.Columns.Length, pb.Data.Components, pb.H, pb.Record, pb.Threads)
    notFinite pb at r
    r

/// The k × k covariance (divisor rows − 1) of per-row vectors, `at i j` the j-th entry of row i.
let private rowCovariance (k: int) (rows: int) (at: int -> int -> float) =
    let g = Matrix<float>.Build.Dense(rows, k, System.Func<int, int, float>(at))
    let mean = g.ColumnSums() / float rows
    let c = g - Matrix<float>.Build.Dense(rows, k, System.Func<int, int, float>(fun _ j -> mean[j]))
    c.TransposeThisAndMultiply c / float (rows - 1)

/// The square roots of the diagonal of the covariance `cov ()`; NaN where it is not positive and finite, and
/// everywhere when it cannot be computed (a singular information).
let private standardErrors (k: int) (cov: unit -> Matrix<float>) =
    try
        let v = cov ()
        Array.init k (fun j -> if v[j, j] > 0.0 && Double.IsFinite v[j, j] then sqrt v[j, j] else nan)
    with _ ->
        Array.create k nan

/// Standard errors of the fitted params from the data's scores: the Fisher information per row is
/// estimated by the covariance F of the per-row gradients (valid when the model is well specified),
/// and the covariance of the estimate by F⁻¹ / rows. NaN when F is singular.
let private stdErrs (r: KlObjective.Result) (k: int) (rows: int) =
    let f = rowCovariance k rows (fun i j -> r.DatumGradient[i * k + j])
    standardErrors k (fun () -> f.Inverse() / float rows)

/// `law = marginals`: the objective is a composite likelihood (a sum over the data columns of their marginal
/// log-likelihoods), whose estimate has the sandwich covariance H⁻¹ J H⁻¹ / rows (Godambe): J the covariance of
/// the per-row gradients (summed over the columns), H the sum over the columns of each marginal's Fisher
/// information, the covariance of that column's per-row gradients (the information identity holds marginal by
/// marginal when the model is well specified). NaN when H is singular.
let private sandwichErrs (r: KlObjective.Result) (k: int) (q: int) (rows: int) =
    let cg = r.DatumColumnGradient
    let j = rowCovariance k rows (fun i a -> r.DatumGradient[i * k + a])
    let h = [ 0 .. q - 1 ] |> List.map (fun c -> rowCovariance k rows (fun i a -> cg[(i * q + c) * k + a])) |> List.reduce (+)

    standardErrors k (fun () ->
        let hi = h.Inverse()
        hi * j * hi / float rows)

/// Pairs of fitted params that the data identify only in combination: their per-row gradients (the data's
/// scores) correlated beyond ±0.99, so the Fisher information is (nearly) singular along a direction and the
/// optimum is a ridge. The stationary law of OU, N(0, σ²/(2θ)), is the example: it fixes σ²/θ, not θ and σ.
let unidentified (r: KlObjective.Result) (names: string[]) (rows: int) : string list =
    let k = names.Length
    let col j = Array.init rows (fun i -> r.DatumGradient[i * k + j])

    [ for i in 0 .. k - 1 do
          for j in i + 1 .. k - 1 do
              let c = MathNet.Numerics.Statistics.Correlation.Pearson(col i, col j)

              if abs c > 0.99 then
                  sprintf "the data identify '%s' and '%s' only in combination (their scores over the data rows are %.3f correlated): the fitted values lie on a ridge and their standard errors are not meaningful; fix one of them (a stationary law often fixes only a ratio, e.g. σ²/θ for OU)" names[i] names[j] c ]

/// Why a fit has no result: located diagnostics, and whether the input is at fault (the data, the start:
/// exit 2) or the run failed (paths or weights that blow up: exit 3).
type FitError =
    { Diagnostics: Diagnostic list
      RunFailed: bool
      /// The evaluations done before a run failed (kept: `failedJson` writes them), else empty.
      History: FitStep list }

/// The backend of a fit's recorded runs (`--backend`, `auto` resolved as `dsl run` does: CUDA when a device is
/// present and its kernels can run the fit, else the CPU engine), or why the one asked for cannot run it (a message
/// the caller locates at the fit block). The recorded runs are the tangent kernel's: a fit on cuda is refused with
/// the whole kernel until DSL_CUDA_TANGENT=1 (see `Driver.runKeeping`).
/// Jacobian matching simulates nothing (the model's field at the data's states, on the host whatever the backend).
let private fitBackend (asked: string) (isKl: bool) : Result<string, string> =
    let tangentOnCuda = Driver.tangentOnCuda ()
    match asked with
    | "auto" ->
        match Gpu.GpuRunner.ResolveAuto() with
        | "cuda" when isKl && not tangentOnCuda -> Ok "cpu"
        | b -> Ok b
    | "cuda" when isKl && not tangentOnCuda ->
        Error "a fit's recorded runs are the tangent kernel's, which the cuda backend does not run yet; use --backend cpu or ilgpu-cpu (DSL_CUDA_TANGENT=1 lifts the refusal, to check it on a GPU)"
    | "cpu"
    | "ilgpu-cpu"
    | "cuda" -> Ok asked
    | b -> Error(sprintf "unknown backend '%s' (available: cpu, ilgpu-cpu, cuda, auto)" b)

/// Checks what the file alone could not (the time and paths after overrides, the start inside the
/// domains, the data) and compiles the model for the fitted params' derivatives.
let problem (cf: CheckedFile) (spec: FitSpec) (opts: FitOptions) : Result<Problem, FitError> =
    let m = cf.Model
    let set = List.head cf.Sets
    let at p msg = Error { Diagnostics = [ { Pos = p; Message = msg } ]; RunFailed = false; History = [] }
    let t = defaultArg (match spec.Objective with KlAt t -> t | JacobianMatching _ | KlStationary _ -> None) cf.Settings.T
    let paths = defaultArg spec.Paths cf.Settings.Paths
    let ps = List.toArray spec.Params
    let trs = ps |> Array.map (fun i -> transformOf m.Params[i])
    let names = ps |> Array.map (fun i -> m.Params[i].Name)
    let start = ps |> Array.map (fun i -> set.Values[i])
    let isKl = match spec.Objective with KlAt _ | KlStationary _ -> true | JacobianMatching _ -> false

    let stationary =
        match spec.Objective with
        | KlStationary(w, times) -> Some(stationaryRecording cf.Settings w times paths)
        | _ -> None

    if cf.Weight.IsSome then
        at spec.Pos (sprintf "fitting a weighted model (weight '%s') is not available yet" cf.Weight.Value.Name)
    elif cf.Settings.Scheme <> "euler_maruyama" then
        // (the KL gradient is the divergence-kernel one, built on the Euler transition density)
        at spec.Pos (sprintf "a fit runs the Euler-Maruyama chain (its KL gradient is built on the Euler transition density), not scheme = %s; use scheme = euler_maruyama" cf.Settings.Scheme)
    elif isKl && t > cf.Settings.T || RunSettings.WholeSteps(t, cf.Settings.Dt) < 1L then
        at spec.Pos (sprintf "kl at %s: not a grid time in (0, T = %s] with dt = %s" (g6 t) (g6 cf.Settings.T) (g6 cf.Settings.Dt))
    elif isKl && paths < 2L then
        at spec.Pos (sprintf "a fit needs at least 2 paths per evaluation (paths = %d)" paths)
    elif (match stationary with Some(Error _) -> true | _ -> false) then
        at spec.Pos (match stationary with Some(Error m) -> m | _ -> "")
    else

    match Array.tryFindIndex (fun k -> (ofParam trs[k] start[k]).IsNone) [| 0 .. ps.Length - 1 |] with
    | Some k ->
        at spec.Pos (sprintf "the start value %s of '%s' is on the bound of its domain %s; a fit moves inside the domain: start inside it (params or --set)" (g6 start[k]) names[k] (Checker.domainText m.Params[ps[k]].Domain.Value))
    | None ->

    match loadData opts.BaseDir m spec with
    | Error e -> Error { Diagnostics = e; RunFailed = false; History = [] }
    | Ok data ->

    let h =
        match stationary with
        | Some(Ok(_, samples)) -> bandwidths data spec (int64 samples)
        | _ -> if isKl then bandwidths data spec paths else [||]

    match bandwidthProblem data spec h with
    | Some msg -> at spec.DataPos msg
    | None ->
        try
            let ir = Lower.lowerModel m
            let compiled = Frontend.onLargeStack (fun () -> Compile.compile ir [| Ir.num 0.0 |] ps)
            let mode = if ir.Dim <= 10 then Sde.Core.DkMode.Exact else Sde.Core.DkMode.Iterative

            let plans =
                ps
                |> Array.mapi (fun k _ ->
                    ResponsePlan(Kind = EstimateKind.Mean, Observable = 0, Method = ResponseMethod.DivergenceKernel, Rate = spec.Rate, Mode = mode, Which = k))

            match fitBackend opts.Backend isKl with
            | Error msg -> at spec.Pos msg
            | Ok backend ->

            Ok
                { Compiled = compiled
                  Backend = backend
                  Runner =
                    (match backend with
                     | "ilgpu-cpu"
                     | "cuda" -> Gpu.GpuRunner.RecordFor(compiled.Type, Gpu.GpuRunner.Parse backend)
                     | _ -> ModelRunner.For compiled.Type :?> IRecordRunner)
                  Plans = plans
                  Record = (match spec.Objective, stationary with
                            | KlStationary(w, _), Some(Ok(steps, _)) -> PathRecord(Steps = steps, WindowSteps = int64 (Math.Round(w / cf.Settings.Dt)))
                            | _ -> PathRecord())
                  Data = data
                  H = h
                  Settings = cf.Settings
                  T = t
                  Paths = paths
                  Threads = opts.Threads
                  Spec = spec
                  Field =
                    if isKl then None
                    else
                        let d, q, rows = ir.Dim, data.Columns.Length, data.Rows
                        let col c = Array.IndexOf(data.Components, c)
                        let states = Array.init (rows * d) (fun i -> data.Values[(i / d) * q + col (i % d)])
                        let fields = data.Components |> Array.filter (fun c -> c >= d && c < 2 * d)
                        let jacs = data.Components |> Array.filter (fun c -> c >= 2 * d)
                        let pick (cs: int[]) = Array.init (rows * cs.Length) (fun i -> data.Values[(i / cs.Length) * q + col cs[i % cs.Length]])

                        Some(
                            states, fields |> Array.map (fun c -> c - d), pick fields,
                            jacs |> Array.map (fun c -> (c - 2 * d) / d), jacs |> Array.map (fun c -> (c - 2 * d) % d), pick jacs
                        ) }
        with
        | Tangent.TooManyDerivatives msg
        | Lower.TooManyItoTerms msg -> at spec.Pos msg

/// Fits `spec` to its data, starting from the first parameter set of `cf` (after overrides).
let fit (source: string) (cf: CheckedFile) (spec: FitSpec) (opts: FitOptions) : Result<FitReport, FitError> =
    let sw = Diagnostics.Stopwatch.StartNew()
    let m = cf.Model
    let set = List.head cf.Sets
    let failed p msg = Error { Diagnostics = [ { Pos = p; Message = msg } ]; RunFailed = true; History = [] }
    let ps = List.toArray spec.Params
    let trs = ps |> Array.map (fun i -> transformOf m.Params[i])
    let names = ps |> Array.map (fun i -> m.Params[i].Name)
    let start = ps |> Array.map (fun i -> set.Values[i])

    match problem cf spec opts with
    | Error e -> Error e
    | Ok pb ->
        let data, t, paths = pb.Data, pb.T, pb.Paths
        // outside the try: the evaluations done before a failure are returned with it
        let history = Collections.Generic.List<FitStep>()

        try
            let k = ps.Length
            let full (g: float[]) = Array.init set.Values.Length (fun i -> match Array.IndexOf(ps, i) with -1 -> set.Values[i] | j -> g[j])
            let baseSeed = cf.Settings.Seed

            /// Loss and ∂/∂u at u (records the step).
            let step (u: float[]) (seed: uint64) (jitter: uint64) =
                let g = Array.map2 toParam trs u
                let r = evaluate pb (full g) seed jitter
                let gu = Array.init k (fun j -> r.Gradient[j] * slope trs[j] u[j])
                let s = { Iteration = history.Count + 1; Loss = r.Loss; LossStdErr = r.LossStdErr; GradNorm = sqrt (Array.sumBy (fun x -> x * x) gu); Values = g }
                history.Add s
                opts.Progress |> Option.iter (fun f -> f s)
                r, gu

            let u0 = Array.map2 (fun tr g -> (ofParam tr g).Value) trs start

            let fitted, converged, stop, optText =
                match spec.Optimizer with
                | Adam lr ->
                    let b1, b2, eps = 0.9, 0.999, 1e-8
                    let u = Array.copy u0
                    let mo = Array.zeroCreate k
                    let v = Array.zeroCreate k

                    for it in 1 .. spec.Iterations do
                        // fresh random numbers each iteration: other paths (seed + it) and another jitter
                        let _, gu = step u (baseSeed + uint64 it) (baseSeed + uint64 it)

                        for j in 0 .. k - 1 do
                            mo[j] <- b1 * mo[j] + (1.0 - b1) * gu[j]
                            v[j] <- b2 * v[j] + (1.0 - b2) * gu[j] * gu[j]
                            let mh = mo[j] / (1.0 - b1 ** float it)
                            let vh = v[j] / (1.0 - b2 ** float it)
                            u[j] <- u[j] - lr * mh / (sqrt vh + eps)

                    // Polyak–Ruppert: the average of the iterates over the last quarter removes most of the
                    // stochastic gradients' jitter around the optimum
                    let tail = max 1 (spec.Iterations / 4)
                    let last = history |> Seq.skip (history.Count - tail) |> Seq.toArray
                    let avg = Array.init k (fun j -> last |> Array.averageBy (fun s -> s.Values[j]))
                    avg, false, sprintf "%d iterations done; the fitted values average the last %d" spec.Iterations tail, sprintf "adam(lr = %s)" (g6 lr)
                | Lbfgs ->
                    // common random numbers: the same paths and jitter at every evaluation
                    let f =
                        MathNet.Numerics.Optimization.ObjectiveFunction.Gradient(
                            System.Func<Vector<float>, struct (float * Vector<float>)>(fun u ->
                                let r, gu = step (u.ToArray()) baseSeed baseSeed
                                struct (r.Loss, Vector<float>.Build.DenseOfArray gu))
                        )

                    let best () =
                        let b = history |> Seq.minBy (fun s -> s.Loss)
                        b.Values

                    try
                        let mini = MathNet.Numerics.Optimization.LimitedMemoryBfgsMinimizer(spec.Tolerance, 1e-10, 1e-12, 5, spec.Iterations)
                        let res = mini.FindMinimum(f, Vector<float>.Build.DenseOfArray u0)
                        let g = Array.map2 toParam trs (res.MinimizingPoint.ToArray())
                        // converged only by the fit's own rule: MathNet may end on a line search that made no
                        // progress and still name a gradient criterion
                        let gn = res.FunctionInfoAtMinimum.Gradient.L2Norm()
                        // MathNet's count is one more than the line searches done when its loop test ends the
                        // run (`while (iterations++ < max ...)`): `iterations = 3` reported 4; at the limit it also
                        // names AbsoluteGradient as the reason. The iterations done are at most those asked for.
                        let atLimit = res.Iterations > spec.Iterations
                        let n = min res.Iterations spec.Iterations
                        let its = sprintf "after %d iteration%s" n (if n = 1 then "" else "s")

                        if gn <= spec.Tolerance then g, true, sprintf "|grad| %s <= tolerance %s %s" (Output.num gn) (Output.num spec.Tolerance) its, "lbfgs"
                        elif atLimit then
                            g, false,
                            sprintf "not converged: L-BFGS did the %d iteration%s asked for (the iteration limit) and ended with |grad| %s > tolerance %s" n (if n = 1 then "" else "s") (Output.num gn) (Output.num spec.Tolerance),
                            "lbfgs"
                        else
                            g, false,
                            sprintf "not converged: L-BFGS ended (MathNet's reason: %A) %s with |grad| %s > tolerance %s (the iteration limit, or a line search that found no decrease: a gradient at its noise floor, Monte-Carlo or rounding, or an unreliable one, see the warnings)" res.ReasonForExit its (Output.num gn) (Output.num spec.Tolerance),
                            "lbfgs"
                    with
                    | :? FitFailed -> reraise ()
                    | ex when ex.GetType().Namespace = "MathNet.Numerics.Optimization" ->
                        // the iteration limit, or a line search that found no decrease: at the noise floor the DK
                        // gradient (an estimate of the expected objective's) no longer points downhill on this sample
                        best (), false, sprintf "%s; the fitted values are the best evaluation" (ex.Message.TrimEnd('.')), "lbfgs"

            // (an average of iterates inside the domain may round onto a bound: back inside)
            let fitted = Array.map2 inside trs fitted
            // the scores of the data at the fitted values: the final loss and the standard errors
            let fr = evaluate pb (full fitted) baseSeed baseSeed
            // (no noise model behind a field's least squares: no standard errors)
            let se =
                if pb.Field.IsSome then Array.create k nan
                elif spec.Marginals then sandwichErrs fr k data.Columns.Length data.Rows
                else stdErrs fr k data.Rows

            // L-BFGS's stopping rule, besides the tolerance: the gradient (on the fit's sample) within its standard
            // error over the data rows, in the unconstrained coordinates: the optimum is then found to the precision
            // the data give it, and no line search can do better on a gradient that is noise
            let converged, stop =
                if converged || optText <> "lbfgs" then converged, stop
                else
                    let uf = Array.map2 (fun tr g -> (ofParam tr g).Value) trs fitted
                    let gu = Array.init k (fun j -> fr.Gradient[j] * slope trs[j] uf[j])

                    let seU =
                        Array.init k (fun j ->
                            let xs = Array.init data.Rows (fun i -> fr.DatumGradient[i * k + j])
                            MathNet.Numerics.Statistics.Statistics.StandardDeviation xs / sqrt (float data.Rows) * abs (slope trs[j] uf[j]))

                    let norm (v: float[]) = sqrt (Array.sumBy (fun x -> x * x) v)

                    if norm gu <= norm seU then
                        true, sprintf "|grad| %s is within its standard error over the data (%s): the optimum to the data's precision" (Output.num (norm gu)) (Output.num (norm seU))
                    else converged, stop

            let warnings =
                [ if pb.Field.IsNone && not spec.Marginals && data.Columns.Length >= 5 then
                      sprintf "the joint law of %d data columns is compared through a product kernel in %d dimensions, which %d paths resolve poorly: the objective is nearly flat in the params; 'law = marginals' compares each column's law instead" data.Columns.Length data.Columns.Length paths
                  if fr.ShareBelow10 > 0.01 then
                      sprintf "at the fitted values %.1f%% of the smoothed data %s have fewer than 10 paths within the bandwidth (fewest %.2g): the kernel estimate of the model's law is thin in the data's tails and the objective is biased there; use more paths" (100.0 * fr.ShareBelow10) (if spec.Marginals then "values (a point's column)" else "points") fr.MinEffectivePaths
                  if pb.Field.IsNone then yield! unidentified fr names data.Rows
                  for j in 0 .. k - 1 do
                      let lo, hi = bounds trs[j]
                      let near (b: float) = Double.IsFinite b && abs (fitted[j] - b) <= 1e-9 * max 1.0 (abs b)
                      match (if near lo then Some lo elif near hi then Some hi else None) with
                      | Some b ->
                          sprintf "'%s' ended at %s, on the bound %s of its domain %s to within rounding: the fit ran to the edge of the domain (the optimum may lie on or beyond the bound%s); the value and its standard error are not an interior optimum" names[j] (fitted[j].ToString("R", inv)) (g6 b) (Checker.domainText m.Params[ps[j]].Domain.Value)
                              (match spec.Optimizer with Adam lr -> sprintf ", or adam's lr = %s is too large for this objective" (g6 lr) | Lbfgs -> "")
                      | None -> ()
                  let rec' = pb.Record
                  for j in 0 .. (if rec'.Paths > 0L then k - 1 else -1) do
                      // (a stationary recording: every path's window increments at every recorded time)
                      let l2 = Array.init (int rec'.Rows) (fun p -> rec'.Ell[p * k + j] ** 2.0)
                      let share = Array.max l2 / Array.sum l2
                      if share > Driver.shareLimit rec'.Rows then
                          sprintf "at the fitted values the DK weights of '%s' are heavy-tailed (one %s of %d carries %.0f%% of their variance), so its gradient is unreliable: use a smaller dt or more paths" names[j] (if rec'.Times > 1 then "path and time" else "path") rec'.Rows (100.0 * share)
                  match spec.Objective with
                  | KlStationary _ when cf.Settings.Burnin = 0.0 ->
                      "burnin = 0: the averaged law includes the start of the paths (their initial law), not only the stationary law; set burnin in the simulate block to the time the chain takes to forget its start"
                  | _ -> () ]
            let seconds = sw.Elapsed.TotalSeconds

            Ok
                { Model = m.Name
                  Source = source
                  DataFile = data.File
                  DataRows = data.Rows
                  Columns = data.Columns
                  Objective =
                    (match spec.Objective with
                     | KlAt _ -> sprintf "kl at %s" (g6 t)
                     | KlStationary(w, _) -> sprintf "kl stationary window %s (%d times in [%s, %s])" (g6 w) pb.Record.Times (g6 cf.Settings.Burnin) (g6 t)
                     | JacobianMatching l -> sprintf "jacobian_matching(lambda = %s)" (g6 l))
                    + (if spec.Marginals then ", law = marginals" else "")
                  Optimizer = optText
                  Names = names
                  Start = start
                  Fitted = fitted
                  Bounds = Array.map bounds trs
                  StdErrs = se
                  AllParams = List.zip (m.Params |> List.map (fun p -> p.Name)) (Array.toList (full fitted))
                  History = List.ofSeq history
                  Converged = converged
                  Stop = stop
                  Bandwidth = pb.H
                  Paths = paths
                  T = t
                  Dt = cf.Settings.Dt
                  Seed = baseSeed
                  Backend = pb.Backend
                  FinalLoss = fr.Loss
                  FinalLossStdErr = fr.LossStdErr
                  Seconds = seconds
                  SecondsPerEvaluation = seconds / float (history.Count + 1)
                  Warnings = data.EstimateWarnings @ warnings
                  Estimated = data.Estimated }
        with
        | FitFailed d -> Error { Diagnostics = [ d ]; RunFailed = true; History = List.ofSeq history }
        | :? RunTooLargeException as ex -> failed spec.Pos ex.Message
