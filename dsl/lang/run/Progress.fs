/// A progress bar on standard error for long runs.
module Sde.Lang.Progress

open System
open System.Diagnostics
open System.Threading

/// Time as m:ss (or h:mm:ss).
let formatDuration (seconds: float) : string =
    if not (Double.IsFinite seconds) || seconds < 0.0 then
        "--:--"
    else
        let t = TimeSpan.FromSeconds(Math.Round seconds)

        if t.TotalHours >= 1.0 then
            sprintf "%d:%02d:%02d" (int t.TotalHours) t.Minutes t.Seconds
        else
            sprintf "%d:%02d" t.Minutes t.Seconds

/// The text of the bar (without carriage return), fitted to `columns` characters.
let render (label: string) (columns: int) (fraction: float) (elapsed: float) : string =
    let f = fraction |> max 0.0 |> min 1.0
    let eta = if f > 0.0 then elapsed * (1.0 - f) / f else nan

    let tail =
        sprintf " %3.0f%% %s ETA %s" (100.0 * f) (formatDuration elapsed) (formatDuration eta)

    let barWidth = max 10 (min 40 (columns - label.Length - tail.Length - 4))
    let full = int (Math.Round(f * float barWidth))
    let bar = String('█', full) + String('░', barWidth - full)
    let line = sprintf "%s [%s]%s" label bar tail
    if line.Length >= columns then line.Substring(0, max 0 (columns - 1)) else line

let private terminalColumns () =
    try
        match Console.WindowWidth with
        | w when w > 0 -> w
        | _ -> 80
    with _ ->
        80

/// The drawing state of one bar; all fields are guarded by the lock in `Bar.Update`.
type private Bar(label: string) =
    let clock = Stopwatch.StartNew()
    let gate = obj ()
    let mutable lastDrawMs = -1000L
    let mutable best = 0.0
    let mutable drawn = false
    let mutable finished = false
    let mutable width = 0

    member _.Update(fraction: float) =
        let now = clock.ElapsedMilliseconds

        // Cheap unlocked checks first: nothing in the first second, at most ~10 redraws a second.
        if now > 1000L && now - Volatile.Read(&lastDrawMs) >= 100L && Monitor.TryEnter gate then
            try
                if not finished && now - lastDrawMs >= 100L then
                    best <- max best (if Double.IsFinite fraction then fraction else 0.0)
                    let text = render label (terminalColumns ()) best clock.Elapsed.TotalSeconds
                    Console.Error.Write("\r" + text.PadRight width)
                    Console.Error.Flush()
                    width <- text.Length
                    drawn <- true
                    Volatile.Write(&lastDrawMs, now)
            finally
                Monitor.Exit gate

    member _.Finish() =
        lock gate (fun () ->
            if drawn && not finished then
                Console.Error.Write("\r" + String(' ', width) + "\r")
                Console.Error.Flush()

            finished <- true)

/// A progress bar: `update fraction` (thread-safe, any thread, redraws at most ~10 times a
/// second) and `finish ()` (clears the line). Draws only when standard error is a terminal and
/// the run has taken more than a second; otherwise both do nothing.
let create (label: string) : (float -> unit) * (unit -> unit) =
    if Console.IsErrorRedirected then
        ignore, ignore
    else
        let bar = Bar label
        bar.Update, bar.Finish
