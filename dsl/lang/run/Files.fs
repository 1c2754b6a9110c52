/// Files that `dsl` reads from the user (models, data, partial files): opened without blocking on a
/// FIFO that has no writer, and refused when they are not regular files where a regular file is needed.
module Sde.Lang.Files

open System
open System.IO
open System.Runtime.InteropServices
open Microsoft.Win32.SafeHandles

[<DllImport("libc", EntryPoint = "open", SetLastError = true)>]
extern int private sysOpen(string path, int flags)

[<DllImport("libc", EntryPoint = "fcntl", SetLastError = true)>]
extern int private sysFcntl(int fd, int cmd, int arg)

/// O_NONBLOCK on Linux (x64 and arm64); F_GETFL, F_SETFL.
let private oNonBlock = 0x800
let private fGetFl = 3
let private fSetFl = 4

/// Opens `path` for reading. On Linux the file is opened with O_NONBLOCK, which returns at once for a
/// FIFO (open(2) of a FIFO blocks until a writer appears, forever if none does), and the flag is then
/// cleared, so that reads block as usual: a FIFO without a writer then reads as empty (end of file),
/// and one with a writer (`<(command)`) reads what it writes. Elsewhere a plain FileStream.
let openRead (path: string) : FileStream =
    if RuntimeInformation.IsOSPlatform OSPlatform.Linux then
        // the errors of a missing file, a folder, a denied permission: as FileStream reports them
        if not (File.Exists path) then
            if Directory.Exists path then raise (UnauthorizedAccessException(sprintf "'%s' is a directory" path))
            else raise (FileNotFoundException("no such file", path))

        let fd = sysOpen (path, 0 (* O_RDONLY *) ||| oNonBlock)

        if fd < 0 then
            let errno = Marshal.GetLastPInvokeError()
            if errno = 13 then raise (UnauthorizedAccessException(sprintf "permission denied: %s" path))
            else raise (IOException(sprintf "cannot open %s (errno %d)" path errno))

        let flags = sysFcntl (fd, fGetFl, 0)
        if flags >= 0 then sysFcntl (fd, fSetFl, flags &&& ~~~oNonBlock) |> ignore
        new FileStream(new SafeFileHandle(nativeint fd, true), FileAccess.Read, 1)
    else
        new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, false)

/// Is `stream` a regular file (seekable, with a length)? A FIFO, a socket or a terminal is not.
let isRegular (stream: FileStream) = stream.CanSeek

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed at the end: a reader
/// (or a merge) sees the whole file or none, even when the writer is killed half way. A write that
/// fails (a full disk) removes its temporary file.
let writeAtomically (path: string) (bytes: byte[]) =
    let tmp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath path), sprintf ".%s.tmp-%d" (Path.GetFileName path) Environment.ProcessId)

    try
        File.WriteAllBytes(tmp, bytes)
        File.Move(tmp, path, true)
    with _ ->
        (try File.Delete tmp with _ -> ())
        reraise ()
