module Sde.Cli.Program

[<EntryPoint>]
let main argv = 0
