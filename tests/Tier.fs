/// The suite's tiers. The README's command runs the quick tier (the whole suite under 5 minutes on two
/// cores); CI's exhaustive tier (`SDE_SLOW=1`, the lists whose name contains "Slow") runs the
/// statistical checks that need many seeds or many paths.
module Sde.Tests.Tier

open Expecto

/// True in CI's exhaustive tier.
let slow = System.Environment.GetEnvironmentVariable "SDE_SLOW" = "1"

/// Skips the calling test unless SDE_SLOW=1, saying why it is expensive.
let requireSlow (why: string) =
    if not slow then
        Tests.skiptest (sprintf "%s; SDE_SLOW=1 runs it (CI's exhaustive tier)" why)
