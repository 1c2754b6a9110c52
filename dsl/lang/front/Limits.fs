/// The limits of the language and of a run, in one place: the parser, the checker, the lowering and
/// the driver take their bounds from here, and `markdownTable` renders the table that README.md and
/// docs/language.md show (a test checks that both equal it), so the documented limits cannot drift
/// from the enforced ones.
module Sde.Lang.Limits

open System
open System.Globalization

/// Largest source accepted: bytes of a file the command line reads, characters of a text given to
/// the embedding API.
let sourceChars = 10_000_000

/// Longest name (a name becomes a .NET type or field name, and longer ones only slow the
/// did-you-mean search).
let nameLength = 256

/// Deepest nesting of parentheses, calls and unary operators the parser accepts.
let parseDepth = 256

/// Most operands in one chain of `+ - * /` or `and`/`or`.
let chainTerms = 10_000

/// Deepest expression after parsing (every operation one level, a chain of n terms n levels): the
/// recursive passes run on a 256 MB stack, of which this uses a small part.
let exprDepth = 20_000

/// Largest value of one size expression (`[N]`), checked before the totals below: past it an int
/// would be near overflow. A state's or brownian's size is bounded by `dimension`, a vector param's
/// by `paramCount`.
let sizeExpression = 100_000_000

/// Largest total state dimension, and total noise dimension: beyond it the expanded model would not
/// fit in memory anyway.
let dimension = 1_000_000

/// Most scalar operations of the expanded model (equations and inits unrolled over their index,
/// sum/avg over their range, the observables); Lorenz-96 at the 10^6-state limit is about 1.1 * 10^7.
let expandedSize = 20_000_000L

/// Most structural non-zeros of the step's Jacobian, and most entries of its state derivatives (a
/// dense nonlinear coupling of n states has n² and n³).
let derivativeEntries = 10_000_000L

/// Most state components of a model with derivative queries (their code is unrolled per component;
/// at 10^5 a response on the Lorenz-96 ring compiles and runs in about a minute and 4 GB).
let derivativeDim = 100_000

/// Params in all (scalars and vector components): each is a field of the emitted model, a value type
/// that the engine keeps in arrays, and the runtime refuses arrays of value types above 64 KB.
let paramCount = 4_000

/// Most parameter sets of a file (named sets and sweep values together).
let parameterSets = 10_000

/// Most paths, steps (T/dt) and path-steps of one run: past them a count wraps or the run never ends
/// (10^15 path-steps is about four months at 10^8 per second).
let paths = 1_000_000_000_000L
let steps = 1e10
let pathSteps = 1e15

/// Most bins of a histogram (1-D, or both axes of a 2-D one together).
let bins = 10_000_000

/// Most values (paths × observables) one `samples(...)` query holds in memory.
let sampleValues = 1e8

/// Most values (paths × times × observables) one `samples(...) every Δ` query holds (400 MB).
let trajectoryValues = 5e7

/// Most observables of one `samples(...)` query.
let sampleColumns = 1000

/// Most grid steps a stationary window spans (a stationary response, a `kl stationary window W`
/// fit): each worker keeps that many steps of DK weights per param.
let windowSteps = 1e6

/// Most times of a series `mean(e) every Δ` (held per set and time) and of a trajectory
/// `samples(...) every Δ` (whose values are bounded by `trajectoryValues` too).
let seriesTimes = 1e4
let trajectoryTimes = 1e6

/// Most iterations a fit may ask for.
let fitIterations = 1_000_000

/// Most bins of the results of one run: parameter sets × the bins of every binned query (a mean, a
/// series point or a Lyapunov exponent counting one). A bin is three numbers in memory and about 60
/// characters of the JSON, which must stay within .NET's 2^30-character strings.
let resultBins = 1e7

/// Most values of the samples queries of one run, over parameter sets and queries (held in memory
/// until written).
let runSampleValues = 1e8

/// Largest data file a fit reads, in characters (read line by line, only the numbers kept).
let fitDataBytes = 1L <<< 28

/// Longest line of a fit's data file (a file with no line ends is refused there, unread).
let fitDataLine = 1 <<< 20

/// Largest data value in magnitude, and the range of a fit's `bandwidth` (1/x to x): the kernel squares
/// differences of values over the bandwidth.
let fitDataValue = 1e100

/// 12,345 (thousands separated by commas, as the docs write them).
let commas (n: int64) = n.ToString("#,0", CultureInfo.InvariantCulture)

/// 10^12 for a power of ten from 10^4 on, 2 × 10^7 for a small multiple of one, else the number with commas.
let power (x: float) =
    if x < 1e4 then commas (int64 x)
    else
        let e = int (Math.Floor(Math.Log10 x + 1e-9))
        let m = x / Math.Pow(10.0, float e)

        if abs (m - Math.Round m) > 1e-9 then commas (int64 x)
        elif Math.Round m = 1.0 then sprintf "10^%d" e
        else sprintf "%g × 10^%d" (Math.Round m) e

/// One row of the limits table: what is bounded, the bound (rendered from the values above) and
/// where the error points.
type Row = { What: string; Limit: string; Where: string }

let rows: Row list =
    [ { What = "input size"
        Limit =
          sprintf "%s bytes (`dsl` reads at most that many plus one, so `/dev/zero` is refused unread); %s characters through the embedding API" (commas (int64 sourceChars)) (commas (int64 sourceChars))
        Where = "1:1" }
      { What = "name length (models, params, states, consts, ...)"; Limit = sprintf "%d characters" nameLength; Where = "the name" }
      { What = "parenthesis / call / unary nesting (parser)"; Limit = sprintf "%d levels" parseDepth; Where = "the level past the limit" }
      { What = "terms in one chain of `+ - * /` or `and`/`or` (parser)"; Limit = commas (int64 chainTerms); Where = "the term past the limit" }
      { What = "expression depth after parsing"
        Limit = sprintf "%s levels, every operation counting one and a chain of n terms n (chains nested in chains)" (commas (int64 exprDepth))
        Where = "the expression" }
      { What = "one size `[N]` of a state, brownian or vector param"
        Limit = sprintf "%s, before the totals below" (power (float sizeExpression))
        Where = "the size" }
      { What = "state dimension, noise dimension"
        Limit = sprintf "%s components each (in all, over the vector states / brownians)" (commas (int64 dimension))
        Where = "the state or brownian that passes it" }
      { What = "expanded model size: equations and inits unrolled over their index, `sum`/`avg` over their range, plus the observables"
        Limit = sprintf "%s scalar operations (Lorenz-96 at 10^6 states is about 1.1 × 10^7)" (power (float expandedSize))
        Where = "the equation, init or query that passes it" }
      { What = "derivatives: Jacobian entries of the step, and their state derivatives (the Hessian terms)"
        Limit = sprintf "%s each (a dense nonlinear coupling of n states has n² and n³)" (power (float derivativeEntries))
        Where = "the model" }
      { What =
          "state components of a model with a response, `lyapunov` or `alignment` query (their derivative code is compiled per component; mean and density queries alone run large vector equations as loops)"
        Limit = commas (int64 derivativeDim)
        Where = "the first such query" }
      { What = "params in all, scalars and vector components (`param a[K]`) together"
        Limit = sprintf "%s (each is a field of the compiled model, whose size the runtime bounds at 64 KB)" (commas (int64 paramCount))
        Where = "the size of a vector past it, or the param that passes it" }
      { What = "parameter sets (named sets and sweep values together)"
        Limit = sprintf "%s, a sweep's count computed in floating point" (commas (int64 parameterSets))
        Where = "the sweep step / the last set" }
      { What = "paths per run"; Limit = power (float paths); Where = "`paths` or `--paths`" }
      { What = "steps per run (T/dt)"; Limit = power steps; Where = "`dt` or `--dt`" }
      { What = "path-steps per run (paths × T/dt)"; Limit = power pathSteps; Where = "`paths` or `--paths`" }
      { What = "histogram bins (a 2-D density: both axes' bins multiplied)"; Limit = power (float bins); Where = "`bins`" }
      { What = "values of one `samples(...)` query (paths × observables), held in memory"
        Limit = sprintf "%s; %s observables" (power sampleValues) (commas (int64 sampleColumns))
        Where = "the query" }
      { What = "values of one `samples(...) every Δ` query (paths × times × observables)"
        Limit = power trajectoryValues
        Where = "the query" }
      { What =
          "result bins per run: parameter sets × the bins of every binned query (a mean, a series point or a Lyapunov exponent counting one); a bin is about 60 characters of the JSON, which must stay within .NET's 2^30-character strings"
        Limit = power resultBins
        Where = "the query at which the sum passes it" }
      { What = "values of the samples queries per run, over parameter sets and queries (held in memory until written)"
        Limit = power runSampleValues
        Where = "the query at which the sum passes it" }
      { What = "times of a series `mean(e) every Δ`; of a trajectory `samples(...) every Δ`"
        Limit = sprintf "%s; %s" (power seriesTimes) (power trajectoryTimes)
        Where = "the query" }
      { What = "a stationary window (responses, `kl stationary window W` fits)"
        Limit = sprintf "%s steps of dt, and at most T" (power windowSteps)
        Where = "the query; in a fit, the window" }
      { What = "fit iterations"; Limit = power (float fitIterations); Where = "`iterations`" }
      { What = "a fit's data file"
        Limit =
          sprintf "%d MiB (2^28 characters), 2^20 characters per line, values at most 10^%d in magnitude; `bandwidth` from 10^-%d to 10^%d"
              (fitDataBytes >>> 20) (int (Math.Log10 fitDataValue)) (int (Math.Log10 fitDataValue)) (int (Math.Log10 fitDataValue))
        Where = "the file's name in the fit block / `bandwidth`" } ]

/// The limits as the markdown table README.md and docs/language.md show (lines joined by "\n").
let markdownTable =
    [ yield "| what | limit | where the error points |"
      yield "|---|---|---|"
      for r in rows do
          yield sprintf "| %s | %s | %s |" r.What r.Limit r.Where ]
    |> String.concat "\n"
