/// Runs split into shards (path ranges of every parameter set) on several machines, and their exact
/// merge: `dsl run --shard K/N` writes a partial-results file (the engines' exact sums, checksummed)
/// and a manifest; `dsl merge` checks that the files are the N shards of one run and turns their
/// merged sums into the report that the unsplit run gives, bit for bit (docs/cluster.md).
module Sde.Lang.Shards

open System
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open Sde.Core
open Sde.Lang.Checked
open Sde.Lang.Driver

/// Shard K of N (0 ≤ K < N).
type ShardSpec = { K: int; N: int }

/// What a partial file says about itself (its manifest, also stored inside the file).
type Header =
    { ToolVersion: string
      /// The numerics of the machine that ran the shard (architecture, normal generator version, runtime):
      /// shards must share them for their paths to be those of one run.
      Numerics: string
      /// The identity of the run: the source text, the settings and the parameter sets in force (after
      /// the overrides), the tool version and the numerics, hashed (SHA-256).
      Fingerprint: string
      SourceFile: string
      SourceSha256: string
      Source: string
      Overrides: Frontend.Overrides
      Shard: ShardSpec
      Range: PathRange }

/// A partial file read back and checked: its header and its body (the sums, read once the program is known).
type PartialFile = { Path: string; Header: Header; Body: byte[] }

/// The format of the partial file ("DSLPART\n", version, header JSON, sums, SHA-256 of all before it).
let private magic = "DSLPART\n"B
let private formatVersion = 2

let private inv = Globalization.CultureInfo.InvariantCulture

let private hex (b: byte[]) = Convert.ToHexString(b).ToLowerInvariant()
let private sha256 (b: byte[]) = SHA256.HashData b
let private sha256Text (s: string) = hex (sha256 (Encoding.UTF8.GetBytes s))

/// The tool's version and build: the assemblies' module ids, which change whenever their code does
/// (deterministic builds), so that shards of builds whose numbers could differ are never merged.
let toolVersion () =
    let v = typeof<Header>.Assembly.GetName().Version
    let build = typeof<Accumulators>.Assembly.ManifestModule.ModuleVersionId.ToString("N").Substring(0, 8) + typeof<Header>.Assembly.ManifestModule.ModuleVersionId.ToString("N").Substring(0, 8)
    sprintf "dsl %d.%d.%d+%s" v.Major v.Minor v.Build build

/// The numerics of this process: which normal generator the engines use, on which architecture and runtime.
let numerics () =
    // the generator's version, not its form: scalar and vector forms give the same bits. A partial of an
    // older build ("avx2 normals") differs here and is refused with the "other numerics" message.
    sprintf "%s, normals %s, %s" (Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant()) Normals.Version
        Runtime.InteropServices.RuntimeInformation.FrameworkDescription

/// Paths K·P/N .. (K+1)·P/N − 1 (exact in 128-bit integers: K·P overflows 64 bits for large runs).
let pathRange (paths: int64) (s: ShardSpec) : PathRange =
    let at k = int64 (Int128.op_Implicit paths * Int128.op_Implicit (int64 k) / Int128.op_Implicit (int64 s.N))
    let a = at s.K
    { First = a; Count = at (s.K + 1) - a }

/// "K/N", "auto" or "auto/N": `auto` takes K from SLURM_ARRAY_TASK_ID (or a Kubernetes indexed Job's
/// JOB_COMPLETION_INDEX) and N from SLURM_ARRAY_TASK_COUNT, or from "/N".
let parseSpec (text: string) (env: string -> string option) : Result<ShardSpec, string> =
    let int (what: string) (s: string) =
        let digits = s.Trim()
        match Int32.TryParse(digits, Globalization.NumberStyles.None, inv) with
        | true, v -> Ok v
        | _ when digits <> "" && digits |> Seq.forall Char.IsAsciiDigit ->
            // a whole number past Int32: the bound, not "not an integer"
            Error(sprintf "--shard %s: %s = %s is too large: a run has at most %d shards (and no more shards than paths)" text what digits Int32.MaxValue)
        | _ -> Error(sprintf "--shard %s: %s '%s' is not a non-negative integer" text what s)

    let check (k: int) (n: int) =
        if n < 1 then Error(sprintf "--shard %s: the number of shards must be at least 1" text)
        elif k >= n then Error(sprintf "--shard %s: the shard index must be in 0..%d (shards are numbered from 0)" text (n - 1))
        else Ok { K = k; N = n }

    let index () =
        match env "SLURM_ARRAY_TASK_ID", env "JOB_COMPLETION_INDEX" with
        | Some k, _ -> int "SLURM_ARRAY_TASK_ID" k
        | None, Some k -> int "JOB_COMPLETION_INDEX" k
        | None, None -> Error(sprintf "--shard %s: neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set" text)

    match text.Split('/') with
    | [| "auto" |] ->
        match env "SLURM_ARRAY_TASK_ID", env "SLURM_ARRAY_TASK_COUNT" with
        | Some _, Some n ->
            // a resubmitted subset (--array=3,5) has a smaller count and need not start at 0: N would be wrong
            match env "SLURM_ARRAY_TASK_MIN", env "SLURM_ARRAY_TASK_MAX" with
            | Some lo, Some hi when lo.Trim() <> "0" || (match Int32.TryParse hi, Int32.TryParse n with (true, h), (true, c) -> h <> c - 1 | _ -> true) ->
                Error(sprintf "--shard auto: this array (tasks %s..%s, %s of them) is not 0..N-1, so its task count is not the number of shards; use --shard auto/N" lo hi n)
            | _ -> Result.bind (fun k -> Result.bind (check k) (int "SLURM_ARRAY_TASK_COUNT" n)) (index ())
        | _ -> Error(sprintf "--shard auto: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not both set; outside a Slurm array use --shard auto/N (index from JOB_COMPLETION_INDEX) or --shard K/N")
    | [| "auto"; n |] -> Result.bind (fun n -> Result.bind (fun k -> check k n) (index ())) (int "N" n)
    | [| k; n |] -> Result.bind (fun k -> Result.bind (check k) (int "N" n)) (int "K" k)
    | _ -> Error(sprintf "--shard %s: expected K/N (e.g. 0/4), auto or auto/N" text)

let private digits (n: int) = (string (max 1 (n - 1))).Length

/// The file names of shard K/N: `shard-K-of-N.partial` and its manifest (K zero-padded to sort).
let fileName (s: ShardSpec) = sprintf "shard-%0*d-of-%d.partial" (digits s.N) s.K s.N
let manifestName (s: ShardSpec) = sprintf "shard-%0*d-of-%d.manifest.json" (digits s.N) s.K s.N

/// The fingerprint: what determines the numbers of every path (the shard's range aside).
let fingerprint (version: string) (num: string) (source: string) (p: Program) =
    let s = p.File.Settings
    let f (x: float) = x.ToString("R", inv)
    let sb = StringBuilder()
    sb.Append("tool ").Append(version).Append('\n') |> ignore
    sb.Append("numerics ").Append(num).Append('\n') |> ignore
    sb.Append("source ").Append(sha256Text source).Append('\n') |> ignore
    sb.Append(sprintf "settings paths=%d dt=%s T=%s seed=%d burnin=%s scheme=%s\n" s.Paths (f s.Dt) (f s.T) s.Seed (f s.Burnin) s.Scheme) |> ignore
    for set in p.File.Sets do
        sb.Append("set ").Append(set.Name) |> ignore
        for v in set.Values do sb.Append(' ').Append(f v) |> ignore
        sb.Append('\n') |> ignore
    sha256Text (sb.ToString())

// ---------------------------------------------------------------------------------------------
// The header (JSON) and the manifest
// ---------------------------------------------------------------------------------------------

let private writeHeaderJson (w: Utf8JsonWriter) (h: Header) (p: Program) =
    let s = p.File.Settings
    w.WriteNumber("format", formatVersion)
    w.WriteString("tool_version", h.ToolVersion)
    w.WriteString("numerics", h.Numerics)
    w.WriteString("fingerprint", h.Fingerprint)
    w.WriteStartObject("shard")
    w.WriteNumber("k", h.Shard.K)
    w.WriteNumber("n", h.Shard.N)
    w.WriteEndObject()
    w.WriteStartObject("paths")
    w.WriteNumber("first", h.Range.First)
    w.WriteNumber("end", h.Range.First + h.Range.Count)
    w.WriteNumber("of", s.Paths)
    w.WriteEndObject()
    w.WriteString("model", p.File.Model.Name)
    w.WriteString("source_file", h.SourceFile)
    w.WriteString("source_sha256", h.SourceSha256)
    w.WriteStartObject("settings")
    w.WriteNumber("paths", s.Paths)
    w.WriteNumber("dt", s.Dt)
    w.WriteNumber("T", s.T)
    w.WriteNumber("seed", s.Seed)
    w.WriteNumber("burnin", s.Burnin)
    w.WriteString("scheme", s.Scheme)
    w.WriteEndObject()
    w.WriteStartObject("overrides")
    w.WriteStartArray("set")
    for (n, v) in h.Overrides.Sets do
        w.WriteStartArray()
        w.WriteStringValue n
        w.WriteNumberValue v
        w.WriteEndArray()
    w.WriteEndArray()
    h.Overrides.ParamsName |> Option.iter (fun n -> w.WriteString("params", n))
    h.Overrides.Paths |> Option.iter (fun n -> w.WriteNumber("paths", n))
    h.Overrides.Dt |> Option.iter (fun n -> w.WriteNumber("dt", n))
    h.Overrides.T |> Option.iter (fun n -> w.WriteNumber("T", n))
    h.Overrides.Seed |> Option.iter (fun n -> w.WriteNumber("seed", n))
    w.WriteEndObject()
    w.WriteStartArray("sets")
    for set in p.File.Sets do
        w.WriteStartObject()
        w.WriteString("name", set.Name)
        w.WriteNumber("paths", h.Range.Count)
        w.WriteStartObject("params")
        List.iteri (fun i (q: ParamInfo) -> w.WriteNumber(q.Name, set.Values[i])) p.File.Model.Params
        w.WriteEndObject()
        w.WriteEndObject()
    w.WriteEndArray()

let private headerBytes (h: Header) (p: Program) =
    use ms = new MemoryStream()
    (use w = new Utf8JsonWriter(ms, JsonWriterOptions(Indented = true, Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping))
     w.WriteStartObject()
     writeHeaderJson w h p
     // the source itself, so that a merge needs nothing but the partial files
     w.WriteString("source", h.Source)
     w.WriteEndObject())
    ms.ToArray()

let private parseHeader (json: string) : Result<Header, string> =
    try
        use doc = JsonDocument.Parse json
        let r = doc.RootElement
        let str (e: JsonElement) (n: string) = e.GetProperty(n).GetString()
        let o = r.GetProperty "overrides"
        let opt (n: string) (f: JsonElement -> 'a) = match o.TryGetProperty n with | true, v -> Some(f v) | _ -> None
        let shard = r.GetProperty "shard"
        let paths = r.GetProperty "paths"
        let first = paths.GetProperty("first").GetInt64()

        Ok
            { ToolVersion = str r "tool_version"
              Numerics = str r "numerics"
              Fingerprint = str r "fingerprint"
              SourceFile = str r "source_file"
              SourceSha256 = str r "source_sha256"
              Source = str r "source"
              Overrides =
                { Sets = [ for a in o.GetProperty("set").EnumerateArray() -> a[0].GetString(), a[1].GetDouble() ]
                  ParamsName = opt "params" (fun v -> v.GetString())
                  Paths = opt "paths" (fun v -> v.GetInt64())
                  Dt = opt "dt" (fun v -> v.GetDouble())
                  T = opt "T" (fun v -> v.GetDouble())
                  Seed = opt "seed" (fun v -> v.GetUInt64()) }
              Shard = { K = shard.GetProperty("k").GetInt32(); N = shard.GetProperty("n").GetInt32() }
              Range = { First = first; Count = paths.GetProperty("end").GetInt64() - first } }
    with ex -> Error(sprintf "its header is not readable (%s)" ex.Message)

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

let private writeGrowth (w: BinaryWriter) (g: CovectorGrowthResult) =
    w.Write g.Rate
    w.Write g.StdErr
    w.Write g.VarianceRate
    w.Write g.Paths
    w.Write g.Steps
    w.Write g.TangentRate

let private readGrowth (r: BinaryReader) =
    let rate = r.ReadDouble()
    let se = r.ReadDouble()
    let vr = r.ReadDouble()
    let paths = r.ReadInt32()
    let steps = r.ReadInt64()
    CovectorGrowthResult(Rate = rate, StdErr = se, VarianceRate = vr, Paths = paths, Steps = steps, TangentRate = r.ReadDouble())

/// The bytes of a partial file: magic, format, header, the body `writeBody` writes, SHA-256 of all that.
let partialBytesWith (h: Header) (p: Program) (writeBody: BinaryWriter -> unit) =
    use ms = new MemoryStream()
    (use w = new BinaryWriter(ms, Encoding.UTF8, true)
     w.Write magic
     w.Write formatVersion
     let hb = headerBytes h p
     w.Write hb.Length
     w.Write hb
     writeBody w)
    let body = ms.ToArray()
    Array.append body (sha256 body)

/// The bytes of a partial file: magic, format, header, each set's sums, seconds, SHA-256 of all that.
let private partialBytes (h: Header) (p: Program) (sums: SetSums list) (seconds: float) =
    partialBytesWith h p (fun w ->
     w.Write(List.length sums)
     for s in sums do
         let flag (b: bool) (bit: int) = if b then 1 <<< bit else 0
         w.Write(byte (flag s.Plain.IsSome 0 ||| flag s.Responses.IsSome 1 ||| flag s.Lyapunov.IsSome 2 ||| flag s.Growth.IsSome 3 ||| flag s.Failure.IsSome 4))
         // a set whose paths blew up in this shard: its message instead of its sums
         s.Failure |> Option.iter (fun (m: string) -> w.Write m)
         s.Plain |> Option.iter (fun a -> a.Write w)
         s.Responses |> Option.iter (fun a -> a.Write w)
         s.Lyapunov |> Option.iter (fun a -> a.Write w)
         s.Growth |> Option.iter (writeGrowth w)
     w.Write seconds)

/// See `Files.writeAtomically`.
let writeAtomically (path: string) (bytes: byte[]) = Files.writeAtomically path bytes

// ---------------------------------------------------------------------------------------------
// Reading and checking
// ---------------------------------------------------------------------------------------------

/// Reads a partial file and checks its form and checksum (not yet whether it belongs with the others).
/// The largest partial file read (its sums are held in memory): 2 GiB, the most an array holds.
let maxPartialBytes = int64 Array.MaxLength

/// The bytes of a partial file: its magic bytes checked first, then its size, then read; a FIFO, a
/// device or a file past `maxPartialBytes` refused unread.
let private readPartialBytes (path: string) : Result<byte[], string> =
    try
        use stream = Files.openRead path

        if not (Files.isRegular stream) then
            Error(sprintf "%s: not a regular file (a FIFO, socket or device), so not a partial-results file of dsl" path)
        else
            let head = Array.zeroCreate<byte> magic.Length
            let n = stream.ReadAtLeast(head.AsSpan(), head.Length, false)

            if n < magic.Length || not (ReadOnlySpan(head).SequenceEqual(ReadOnlySpan magic)) then
                Error(sprintf "%s: not a partial-results file of dsl" path)
            elif stream.Length > maxPartialBytes then
                Error(sprintf "%s: %d bytes, more than a partial file of dsl may have (%d)" path stream.Length maxPartialBytes)
            else
                let b = Array.zeroCreate<byte> (int stream.Length)
                head.CopyTo(b, 0)
                let got = magic.Length + stream.ReadAtLeast(b.AsSpan(magic.Length), b.Length - magic.Length, false)
                if got < b.Length then Error(sprintf "%s: cut while it was read (%d of %d bytes)" path got b.Length) else Ok b
    with ex -> Error(sprintf "%s: cannot read it: %s" path ex.Message)

let readPartial (path: string) : Result<PartialFile, string> =
    readPartialBytes path
    |> Result.bind (fun b ->
        if b.Length < magic.Length + 8 + 32 then
            Error(sprintf "%s: truncated (%d bytes): the shard did not finish writing it, or it was cut; rerun that shard" path b.Length)
        else
            let body = b[.. b.Length - 33]
            if not (ReadOnlySpan(sha256 body).SequenceEqual(ReadOnlySpan(b, b.Length - 32, 32))) then
                Error(sprintf "%s: corrupted or truncated (its SHA-256 checksum does not match its contents); rerun that shard with --force" path)
            else
                use r = new BinaryReader(new MemoryStream(body), Encoding.UTF8)
                r.ReadBytes magic.Length |> ignore
                let format = r.ReadInt32()
                if format <> formatVersion then
                    Error(sprintf "%s: written in partial-file format %d, this dsl reads format %d (another tool version); rerun the shards with one version" path format formatVersion)
                else
                    // the header's length as the file states it: within the bytes that follow (a damaged count,
                    // negative or of 700 MB, threw or allocated it before the read failed)
                    let hl = r.ReadInt32()
                    if hl < 0 || int64 hl > r.BaseStream.Length - r.BaseStream.Position then
                        Error(sprintf "%s: its header length (%d bytes) does not fit in the file; the file is damaged: rerun that shard with --force" path hl)
                    else
                    let hb = r.ReadBytes hl
                    parseHeader (Encoding.UTF8.GetString hb)
                    |> Result.mapError (fun m -> sprintf "%s: %s" path m)
                    |> Result.map (fun h -> { Path = path; Header = h; Body = body[int r.BaseStream.Position ..] }))

/// What is impossible in a shard's sums over `range` (a checksum proves only that the file is as
/// written, not that a shard wrote it): every engine ran exactly the range's paths; a mean's paths
/// with a non-finite value are at most its paths; counts are not negative; a density's bins hold at
/// most all samples.
let consistencyProblem (range: PathRange) (sums: SetSums list) : string option =
    let n = range.Count

    let estimate (what: string) (e: Estimate) =
        if e.NonFinite < 0L || e.Below < 0L || e.Above < 0L then Some(sprintf "%s: a negative count" what)
        elif e.Count <> n then Some(sprintf "%s: %d paths, the shard ran %d" what e.Count n)
        elif isNull e.Values && e.NonFinite > e.Count then Some(sprintf "%s: %d of %d paths non-finite" what e.NonFinite e.Count)
        else None

    let density (what: string) (e: Estimate) =
        // the plain engine's densities: each bin's share in [0, 1], all of them at most 1 (an extrapolated
        // density, 2 Q(dt/2) − Q(dt) per bin, may leave [0, 1] in a bin)
        if isNull e.Values || isNull e.Grid || e.Grid.Length < 1 || e.Extrapolated then None
        else
            let width = if e.Grid.Length > 1 then e.Grid[1] - e.Grid[0] else 1.0
            let shares = e.Values |> Array.map (fun v -> v * abs width)
            if shares |> Array.exists (fun p -> p < 0.0 || p > 1.0 + 1e-9) || Array.sum shares > 1.0 + 1e-9 then
                Some(sprintf "%s: bin counts beyond the samples" what)
            else None

    sums
    |> List.indexed
    |> List.tryPick (fun (i, s) ->
        let set = sprintf "set %d" (i + 1)
        [ yield! (match s.Plain with
                  | Some a when a.Paths <> n -> [ Some(sprintf "%s: %d paths in the plain sums, the shard ran %d" set a.Paths n) ]
                  | Some a -> a.ToEstimates() |> Array.toList |> List.collect (fun e -> [ estimate set e; density set e ])
                  | None -> [])
          yield! (match s.Responses with
                  | Some a when a.Paths <> n -> [ Some(sprintf "%s: %d paths in the response sums, the shard ran %d" set a.Paths n) ]
                  | _ -> [])
          yield! (match s.Lyapunov with
                  | Some a when a.Paths <> n -> [ Some(sprintf "%s: %d paths in the Lyapunov sums, the shard ran %d" set a.Paths n) ]
                  | _ -> []) ]
        |> List.tryPick id)

/// The sums of a checked partial file, read for `p` (the program its header compiles to), and its seconds.
let readSums (p: Program) (f: PartialFile) : Result<SetSums list * float, string> =
    try
        use r = new BinaryReader(new MemoryStream(f.Body), Encoding.UTF8)
        let n = r.ReadInt32()
        let sets = p.File.Sets
        if n <> List.length sets then failwithf "it holds %d parameter sets, the run has %d" n (List.length sets)
        let plain = plainPlans p
        let responses = responsePlans p
        let k = lyapunovK p
        let settings = RunSettings(Paths = p.File.Settings.Paths, Dt = p.File.Settings.Dt, T = p.File.Settings.T, Seed = p.File.Settings.Seed,
                                   Bias = biasMode p.File.Settings, WeakOrder = Checker.weakOrder p.File.Settings.Scheme,
                                   IntegralNormals = (p.File.Settings.Scheme = "sra"))

        let sums =
            [ for _ in 1..n ->
                  let flags = int (r.ReadByte())
                  let has bit = flags &&& (1 <<< bit) <> 0
                  if flags >>> 5 <> 0 then failwith "a set has unknown flags"
                  let failure = if has 4 then Some(sprintf "%s (shard %d/%d)" (r.ReadString()) f.Header.Shard.K f.Header.Shard.N) else None
                  if failure.IsNone && (has 0 <> (plain.Length > 0) || has 1 <> (responses.Length > 0) || has 2 <> (k > 0)) then
                      failwith "its engines do not match the queries of the run"
                  if failure.IsSome && (has 0 || has 1 || has 2) then failwith "a failed set carries sums"
                  { Failure = failure
                    Plain = (if has 0 then Some(Accumulators.Read(r, plain, settings)) else None)
                    Responses = (if has 1 then Some(ResponseAccumulators.Read(r, responses)) else None)
                    Lyapunov = (if has 2 then Some(LyapunovAccumulators.Read(r, k, lyapunovLogDet p)) else None)
                    Growth = (if has 3 then Some(readGrowth r) else None) } ]

        let seconds = r.ReadDouble()
        if r.BaseStream.Position <> r.BaseStream.Length then failwith "it has bytes after its sums"
        if not (seconds >= 0.0 && Double.IsFinite seconds) then failwithf "its simulation time (%g s) is impossible" seconds

        match consistencyProblem f.Header.Range sums with
        | Some m -> Error(sprintf "%s: inconsistent contents (%s): a file edited or written by something else; rerun that shard with --force" f.Path m)
        | None -> Ok(sums, seconds)
    with ex -> Error(sprintf "%s: its sums are not readable: %s" f.Path ex.Message)

/// Compile the run that a header describes (its source and overrides), as the shard did.
let compileHeader (h: Header) : Result<Program, string> =
    match Frontend.compileText h.SourceFile h.Source with
    | Error ds -> Error(sprintf "the source stored in the shards does not compile: %s" (ds |> List.map (fun d -> d.Message) |> String.concat "; "))
    | Ok cf ->
        Frontend.applyOverrides cf h.Overrides
        |> Result.bind (fun cf ->
            Driver.prepare h.SourceFile cf
            |> Result.mapError (fun ds -> sprintf "the source stored in the shards does not compile: %s" (ds |> List.map (fun d -> d.Message) |> String.concat "; ")))

// ---------------------------------------------------------------------------------------------
// Running a shard
// ---------------------------------------------------------------------------------------------

/// Another process holds the shard's lock.
exception ShardBusyException of string

/// What a shard run did.
type ShardOutcome =
    /// With the sets that failed (name, message): recorded in the partial file, reported by the merge.
    | Written of partial: string * manifest: string * seconds: float * failures: (string * string) list
    | Skipped of partial: string * failures: (string * string) list

/// The header of shard `spec` of program `p` compiled from `source` (file `sourceFile`) with `overrides`.
let headerOf (p: Program) (sourceFile: string) (source: string) (overrides: Frontend.Overrides) (spec: ShardSpec) =
    let v, num = toolVersion (), numerics ()
    { ToolVersion = v
      Numerics = num
      Fingerprint = fingerprint v num source p
      SourceFile = sourceFile
      SourceSha256 = sha256Text source
      Source = source
      Overrides = overrides
      Shard = spec
      Range = pathRange p.File.Settings.Paths spec }

/// Is `path` a complete partial file of exactly this shard (a checkpoint to keep)?
let isComplete (h: Header) (path: string) =
    match readPartial path with
    | Ok f -> f.Header.Fingerprint = h.Fingerprint && f.Header.Shard = h.Shard && f.Header.Range = h.Range
    | Error _ -> false

/// The manifest: the header (without the source text), the partial file's name, size and SHA-256.
let manifestBytes (h: Header) (p: Program) (partialName: string) (partial: byte[]) (seconds: float) =
    use ms = new MemoryStream()
    (use w = new Utf8JsonWriter(ms, JsonWriterOptions(Indented = true, Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping))
     w.WriteStartObject()
     writeHeaderJson w h p
     w.WriteString("partial_file", partialName)
     w.WriteNumber("partial_bytes", partial.Length)
     w.WriteString("partial_sha256", hex (sha256 partial))
     w.WriteNumber("seconds", seconds)
     w.WriteString("written", DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", inv))
     w.WriteEndObject())
    Array.append (ms.ToArray()) "\n"B

/// Runs shard `h.Shard` of `p` into folder `dir` (skipped when a complete file of it is there, unless
/// `force`). Throws what `Driver.runShard` throws; writes nothing then.
let runShard (p: Program) (h: Header) (opts: RunOptions) (dir: string) (force: bool) : ShardOutcome =
    Directory.CreateDirectory dir |> ignore
    let partial = Path.Combine(dir, fileName h.Shard)

    // (a shard killed between its two renames has its partial file but no manifest: rerun it)
    let failuresOf (sums: SetSums list) =
        List.zip p.File.Sets sums |> List.choose (fun (set, s) -> s.Failure |> Option.map (fun m -> set.Name, m))

    let complete =
        if force then None
        else
            match readPartial partial with
            | Ok f when f.Header.Fingerprint = h.Fingerprint && f.Header.Shard = h.Shard && f.Header.Range = h.Range
                        && File.Exists(Path.Combine(dir, manifestName h.Shard)) ->
                readSums p f |> Result.toOption |> Option.map fst
            | _ -> None

    // (a shard killed between its two renames has its partial file but no manifest: rerun it)
    match complete with
    | Some sums -> Skipped(partial, failuresOf sums)
    | None ->
        // one process at a time per shard (an advisory lock, released when the process ends): two runs of
        // one shard (--force) would otherwise rename their files in turn and leave a manifest that
        // names the other's partial file
        let lockPath = Path.Combine(dir, "." + fileName h.Shard + ".lock")

        use _lock =
            try new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
            with :? IOException ->
                raise (ShardBusyException(sprintf "shard %d/%d is being run by another process now (%s is locked); wait for it, or run another shard" h.Shard.K h.Shard.N lockPath))

        let sums, seconds = Driver.runShard p opts h.Range
        let bytes = partialBytes h p sums seconds
        writeAtomically partial bytes
        let manifest = Path.Combine(dir, manifestName h.Shard)
        writeAtomically manifest (manifestBytes h p (fileName h.Shard) bytes seconds)
        Written(partial, manifest, seconds, failuresOf sums)

// ---------------------------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------------------------

/// The partial files named by the arguments: each a file, or a folder whose `*.partial` files are taken.
let collect (args: string list) : Result<string list, string> =
    let one (a: string) =
        if Directory.Exists a then
            match Directory.GetFiles(a, "*.partial") |> Array.sort |> Array.toList with
            | [] -> Error(sprintf "%s: no partial files (*.partial) in this folder" a)
            | fs -> Ok fs
        elif File.Exists a then Ok [ a ]
        else Error(sprintf "%s: no such file or folder" a)

    match args with
    | [] -> Error "no partial files given: dsl merge DIR... (folders of shards or .partial files)"
    | _ ->
        args
        |> List.fold (fun acc a -> Result.bind (fun fs -> one a |> Result.map (fun more -> fs @ more)) acc) (Ok [])
        |> Result.map (List.distinctBy Path.GetFullPath)

let private listText (xs: int list) =
    let shown = xs |> List.truncate 20 |> List.map string |> String.concat ", "
    if xs.Length > 20 then sprintf "%s, ... (%d in all)" shown xs.Length else shown

/// Checks that the files are the N shards of one run (same fingerprint, each K once, none missing) and
/// of this tool version; the files in shard order.
let checkSet (files: PartialFile list) : Result<PartialFile list, string> =
    let here = toolVersion ()

    match files with
    | [] -> Error "no partial files to merge"
    | first :: _ ->
        let h0 = first.Header

        match files |> List.tryFind (fun f -> f.Header.ToolVersion <> here) with
        | Some f ->
            Error(sprintf "%s was written by %s, this is %s: another build may give other numbers, so it is not merged; rerun the shards with one version" f.Path f.Header.ToolVersion here)
        | None ->
        match files |> List.tryFind (fun f -> f.Header.Numerics <> h0.Numerics) with
        | Some f ->
            Error(sprintf "%s was computed with other numerics (%s) than %s (%s): their paths are not those of one run; run every shard on machines of one kind" f.Path f.Header.Numerics first.Path h0.Numerics)
        | None ->
        match files |> List.tryFind (fun f -> f.Header.Fingerprint <> h0.Fingerprint) with
        | Some f ->
            let what =
                if f.Header.SourceSha256 <> h0.SourceSha256 then "the model source differs"
                else "the settings, parameter sets or overrides differ"
            Error(sprintf "%s and %s are shards of different runs (%s); merge only the shards of one run" first.Path f.Path what)
        | None ->
        match files |> List.tryFind (fun f -> f.Header.Shard.N <> h0.Shard.N) with
        | Some f ->
            Error(sprintf "%s is shard %d/%d but %s is shard %d/%d: a run split into %d shards and one split into %d cannot be merged" f.Path f.Header.Shard.K f.Header.Shard.N first.Path h0.Shard.K h0.Shard.N f.Header.Shard.N h0.Shard.N)
        | None ->
        let n = h0.Shard.N
        let byK = files |> List.groupBy (fun f -> f.Header.Shard.K)

        match byK |> List.tryFind (fun (_, fs) -> fs.Length > 1) with
        | Some (k, fs) ->
            Error(sprintf "shard %d/%d is given twice (%s); give each shard once" k n (fs |> List.map (fun f -> f.Path) |> String.concat " and "))
        | None ->
        let have = byK |> List.map fst |> Set.ofList
        let missing = [ 0 .. n - 1 ] |> List.filter (fun k -> not (have.Contains k))

        if not missing.IsEmpty then
            Error(
                sprintf "missing shard%s %s of %d (%d of %d present): run them (dsl run ... --shard K/%d), then merge again"
                    (if missing.Length > 1 then "s" else "") (listText missing) n (n - missing.Length) n n
            )
        else
            Ok(files |> List.sortBy (fun f -> f.Header.Shard.K))

/// Merges the partial files named by `args` into the run's report (refusing any set that is not
/// exactly the N shards of one run): the program, the merged report and the number of files.
let merge (args: string list) : Result<Program * Report.RunReport * int, string> =
    collect args
    |> Result.bind (fun paths ->
        paths
        |> List.fold (fun acc p -> Result.bind (fun fs -> readPartial p |> Result.map (fun f -> f :: fs)) acc) (Ok [])
        |> Result.map List.rev)
    |> Result.bind checkSet
    |> Result.bind (fun files ->
        let h0 = (List.head files).Header

        compileHeader h0
        |> Result.bind (fun p ->
            // the program's own fingerprint must be the shards': the same source and settings in force
            if fingerprint h0.ToolVersion h0.Numerics h0.Source p <> h0.Fingerprint then
                Error "the shards' fingerprint does not match their own source and settings (a file was edited?); rerun the shards"
            else
                files
                |> List.fold
                    (fun acc f ->
                        acc
                        |> Result.bind (fun (total: (SetSums list * float) option) ->
                            readSums p f
                            |> Result.bind (fun (sums, secs) ->
                                match total with
                                | None -> Ok(Some(sums, secs))
                                | Some (t, s) ->
                                    // every shard measured the adaptive rate on the same paths: the same bits, or not one run
                                    let sameGrowth =
                                        List.forall2 (fun (a: SetSums) (b: SetSums) ->
                                            match a.Growth, b.Growth with
                                            | Some x, Some y -> x.Rate.Equals y.Rate && x.StdErr.Equals y.StdErr
                                            | None, None -> true
                                            | _ -> false) t sums
                                    if not sameGrowth then
                                        Error(sprintf "%s measured another covector growth than the other shards: not the numerics of one run" f.Path)
                                    else
                                        let merged =
                                            List.map2 (fun (a: SetSums) (b: SetSums) ->
                                                match a.Failure, b.Failure with
                                                // a set that failed in any shard failed in the run: the first shard's message
                                                | Some _, _ -> a
                                                | None, Some _ -> { a with Plain = None; Responses = None; Lyapunov = None; Failure = b.Failure }
                                                | None, None ->
                                                    a.Plain |> Option.iter (fun x -> x.Merge b.Plain.Value)
                                                    a.Responses |> Option.iter (fun x -> x.Merge b.Responses.Value)
                                                    a.Lyapunov |> Option.iter (fun x -> x.Merge b.Lyapunov.Value)
                                                    a) t sums
                                        Ok(Some(merged, s + secs)))))
                    (Ok None)
                |> Result.map (fun total ->
                    let sums, seconds = total.Value
                    p, Driver.reportOfSums p sums seconds, List.length files)))

// ---------------------------------------------------------------------------------------------
// Slurm
// ---------------------------------------------------------------------------------------------

/// What `dsl slurm` needs to write the job scripts.
type SlurmRequest =
    { /// The command that runs dsl on the nodes (e.g. `dsl`, or `dotnet /path/dsl.dll`), already quoted.
      Dsl: string
      File: string
      Shards: int
      Partition: string option
      Time: string option
      Cpus: int option
      Mem: string option
      Out: string
      SbatchArgs: string list
      /// The run's overrides as command-line options (forwarded to every shard).
      RunArgs: string list
      JobName: string }

/// Single-quoted for a POSIX shell.
let shellQuote (s: string) =
    if s <> "" && s |> Seq.forall (fun c -> Char.IsLetterOrDigit c || "/._-+=:,@%".Contains c) then s
    else "'" + s.Replace("'", "'\\''") + "'"

/// One argument of an `#SBATCH` line as sbatch reads it (it splits the line at white space, honours
/// quotes and backslashes, and ends it at an unquoted `#`): bare when that is safe, else in double
/// quotes with `\` and `"` escaped. Control characters are refused before (`slurmProblems`).
let sbatchQuote (s: string) =
    if s <> "" && s |> Seq.forall (fun c -> Char.IsAsciiLetterOrDigit c || "/._-+=:,@%".Contains c) then s
    else "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\""

/// What may not go into a job script: a control character (a newline would start a script line that
/// bash runs, or end an `#SBATCH` line early) in any value written into it. The first problem, naming the option.
let slurmProblems (r: SlurmRequest) : string option =
    let control (s: string) = s |> Seq.exists Char.IsControl
    [ "--out", Some r.Out
      "the model file", Some r.File
      "--partition", r.Partition
      "--time", r.Time
      "--mem", r.Mem
      "DSL_COMMAND", Some r.Dsl ]
    @ (r.SbatchArgs |> List.map (fun a -> "--sbatch-arg", Some a))
    @ (r.RunArgs |> List.map (fun a -> "an override", Some a))
    |> List.tryPick (fun (what, v) ->
        match v with
        | Some v when control v ->
            Some(sprintf "%s: %s holds a control character (such as a newline), which a job script cannot carry safely; remove it" what (v.Replace("\n", "\\n").Replace("\r", "\\r")))
        | _ -> None)

/// The job-array script (one task per shard) and the merge job's script (submitted with
/// `--dependency=afterok:<array job id>`), with absolute paths, so that they run from any folder.
/// `r.Dsl` is shell code (DSL_COMMAND, e.g. `module load dsl && dsl`) that the scripts run with the
/// arguments appended, inside a function: so that shell setup before the command works. Every value is
/// quoted (`sbatchQuote` in `#SBATCH` lines, `shellQuote` in commands and comments); call
/// `slurmProblems` first.
let slurmScripts (r: SlurmRequest) : string * string =
    let out = Path.GetFullPath r.Out
    let shards = Path.Combine(out, "shards")
    let logs = Path.Combine(out, "logs")
    let file = Path.GetFullPath r.File
    let sbatch (name: string) (value: string) = sprintf "#SBATCH %s" (sbatchQuote (sprintf "--%s=%s" name value))

    let common (cpus: int option) =
        [ yield! r.Partition |> Option.map (sbatch "partition") |> Option.toList
          yield! r.Time |> Option.map (sbatch "time") |> Option.toList
          yield! cpus |> Option.map (string >> sbatch "cpus-per-task") |> Option.toList
          yield! r.Mem |> Option.map (sbatch "mem") |> Option.toList
          for a in r.SbatchArgs -> sprintf "#SBATCH %s" (sbatchQuote a) ]

    let runArgs = r.RunArgs |> List.map shellQuote |> String.concat " "

    // the command that starts dsl on the node: DSL_COMMAND's shell code, the arguments appended
    let dslFunction =
        [ "# how the node starts dsl (DSL_COMMAND when the scripts were written, else the dsl that wrote them):"
          "dsl_command() {"
          sprintf "  %s \"$@\"" r.Dsl
          "}" ]

    let array =
        [ "#!/bin/bash"
          sbatch "job-name" r.JobName
          sprintf "#SBATCH --array=0-%d" (r.Shards - 1)
          sbatch "output" (Path.Combine(logs, "shard-%a.out"))
          yield! common r.Cpus
          "# one task per shard: paths K*P/N .. (K+1)*P/N - 1 of every parameter set (docs/cluster.md)."
          "# A task whose shard file is complete skips its work, so a failed task is simply resubmitted:"
          sprintf "#   sbatch --array=K %s" (shellQuote (Path.Combine(out, "slurm-shards.sh")))
          yield! dslFunction
          "set -eo pipefail"
          sprintf "dsl_command run %s --shard \"$SLURM_ARRAY_TASK_ID/%d\" --out %s --threads \"${SLURM_CPUS_PER_TASK:-0}\" --quiet%s"
              (shellQuote file) r.Shards (shellQuote shards) (if runArgs = "" then "" else " " + runArgs) ]

    let merge =
        [ "#!/bin/bash"
          sbatch "job-name" (r.JobName + "-merge")
          sbatch "output" (Path.Combine(logs, "merge.out"))
          yield! common (Some 1)
          "# submitted with --dependency=afterok:<the array's job id>: runs once every shard succeeded."
          yield! dslFunction
          "set -eo pipefail"
          sprintf "dsl_command merge %s --out %s --quiet" (shellQuote shards) (shellQuote out) ]

    (String.concat "\n" array + "\n"), (String.concat "\n" merge + "\n")
