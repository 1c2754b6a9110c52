/// Notebook display without a dependency on .NET Interactive: the result types carry a
/// `TypeFormatterSource` attribute of this assembly's own, which the .NET Interactive formatter
/// (Polyglot Notebooks, Jupyter with the .NET kernel, dotnet-repl) recognises by its name and shape
/// (its convention-based formatter sources): `#r "nuget: Sde.Lang"` is all a notebook needs. Outside a
/// notebook nothing reads the attribute. The HTML and text are `Sde.Notebook`'s (dsl/lang/Notebook.fs,
/// compiled after the types it shows, so reached here by name).
namespace Sde.Lang.Formatting

open System
open System.IO

/// Names the formatter source of a type; read by name by `Microsoft.DotNet.Interactive.Formatting`.
[<AttributeUsage(AttributeTargets.Class ||| AttributeTargets.Struct, AllowMultiple = false)>]
[<Sealed>]
type TypeFormatterSourceAttribute(formatterSourceType: Type) =
    inherit Attribute()
    member _.FormatterSourceType = formatterSourceType
    /// HTML first: a notebook shows the table and plots, a terminal kernel the text.
    member val PreferredMimeTypes: string[] = [| "text/html"; "text/plain" |] with get, set

/// One convention-based formatter: a MIME type and `Format(instance, writer)`.
[<Sealed>]
type SdeFormatter(mimeType: string) =
    static let render =
        lazy
            (let t = typeof<SdeFormatter>.Assembly.GetType("Sde.Notebook", true)
             let html = t.GetMethod("Html", [| typeof<obj> |])
             let text = t.GetMethod("Text", [| typeof<obj> |])
             html, text)

    member _.MimeType = mimeType

    member _.Format(instance: obj, writer: TextWriter) : bool =
        if isNull instance then
            false
        else
            let html, text = render.Force()
            let m = if mimeType = "text/html" then html else text
            writer.Write(m.Invoke(null, [| instance |]) :?> string)
            true

/// The formatter source of every result type: HTML (tables, inline SVG plots) and plain text.
[<Sealed>]
type SdeFormatterSource() =
    member _.CreateTypeFormatters() : Collections.Generic.IEnumerable<obj> =
        [| box (SdeFormatter "text/html"); box (SdeFormatter "text/plain") |]
