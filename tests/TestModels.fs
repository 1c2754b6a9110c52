/// Hand-written models for the engine tests: what the compiler will emit, written out in F#.
module Sde.Tests.TestModels

open Sde.Core

/// Ornstein–Uhlenbeck dx = −θx dt + σ dW, x(0) = x0. Observables: x, x².
[<Struct>]
type OU =
    { Theta: float; Sigma: float; X0: float }
    interface ISdeModel with
        member _.Dim = 1
        member _.NoiseDim = 1
        member _.ObservableCount = 2
        member m.Init<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _zn: 'V, _zu: 'V) =
            let mutable x = x
            x.[0] <- m.X0
        member m.Step<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, y: 'V, w: 'V, _t: float, dt: float, sqdt: float) =
            let mutable y = y
            let x0 = x.[0]
            y.[0] <- x0 - m.Theta * x0 * dt + m.Sigma * sqdt * w.[0]
        member m.Drift<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, f: 'V) =
            let mutable f = f
            f.[0] <- -m.Theta * x.[0]
        member m.Diffuse<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _t: float, w: 'V, gw: 'V) =
            let mutable gw = gw
            gw.[0] <- m.Sigma * w.[0]
        member _.Observe<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, obs: 'V) =
            let mutable obs = obs
            let v = x.[0]
            obs.[0] <- v
            obs.[1] <- v * v

/// Geometric Brownian motion dx = μx dt + σx dW. Observables: x, x².
[<Struct>]
type GBM =
    { Mu: float; Sigma: float; X0: float }
    interface ISdeModel with
        member _.Dim = 1
        member _.NoiseDim = 1
        member _.ObservableCount = 2
        member m.Init<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _zn: 'V, _zu: 'V) =
            let mutable x = x
            x.[0] <- m.X0
        member m.Step<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, y: 'V, w: 'V, _t: float, dt: float, sqdt: float) =
            let mutable y = y
            let x0 = x.[0]
            y.[0] <- x0 + m.Mu * x0 * dt + m.Sigma * x0 * sqdt * w.[0]
        member m.Drift<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, f: 'V) =
            let mutable f = f
            f.[0] <- m.Mu * x.[0]
        member m.Diffuse<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, w: 'V, gw: 'V) =
            let mutable gw = gw
            gw.[0] <- m.Sigma * x.[0] * w.[0]
        member _.Observe<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, obs: 'V) =
            let mutable obs = obs
            let v = x.[0]
            obs.[0] <- v
            obs.[1] <- v * v

/// A 2-D linear SDE dx = B x dt + diag(s1, s2) dW with B = [[b11, b12], [b21, b22]];
/// x0[0] ~ normal(Mu0, Sd0), x0[1] ~ uniform(A1, B1). Observables: x0, x1, x0·x1.
[<Struct>]
type Linear2 =
    { B11: float; B12: float; B21: float; B22: float; S1: float; S2: float
      Mu0: float; Sd0: float; A1: float; B1: float }
    interface ISdeModel with
        member _.Dim = 2
        member _.NoiseDim = 2
        member _.ObservableCount = 3
        member m.Init<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, zn: 'V, zu: 'V) =
            let mutable x = x
            x.[0] <- m.Mu0 + m.Sd0 * zn.[0]
            x.[1] <- m.A1 + (m.B1 - m.A1) * zu.[1]
        member m.Step<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, y: 'V, w: 'V, _t: float, dt: float, sqdt: float) =
            let mutable y = y
            let a = x.[0]
            let b = x.[1]
            y.[0] <- a + (m.B11 * a + m.B12 * b) * dt + m.S1 * sqdt * w.[0]
            y.[1] <- b + (m.B21 * a + m.B22 * b) * dt + m.S2 * sqdt * w.[1]
        member m.Drift<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, f: 'V) =
            let mutable f = f
            f.[0] <- m.B11 * x.[0] + m.B12 * x.[1]
            f.[1] <- m.B21 * x.[0] + m.B22 * x.[1]
        member m.Diffuse<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _t: float, w: 'V, gw: 'V) =
            let mutable gw = gw
            gw.[0] <- m.S1 * w.[0]
            gw.[1] <- m.S2 * w.[1]
        member _.Observe<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, obs: 'V) =
            let mutable obs = obs
            obs.[0] <- x.[0]
            obs.[1] <- x.[1]
            obs.[2] <- x.[0] * x.[1]

/// dx = x³ dt from x(0) = X0: blows up in finite time (an ODE, no noise). Observable: x.
[<Struct>]
type Explode =
    { X0: float }
    interface ISdeModel with
        member _.Dim = 1
        member _.NoiseDim = 0
        member _.ObservableCount = 1
        member m.Init<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _zn: 'V, _zu: 'V) =
            let mutable x = x
            x.[0] <- m.X0
        member _.Step<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, y: 'V, _w: 'V, _t: float, dt: float, _sqdt: float) =
            let mutable y = y
            let v = x.[0]
            y.[0] <- v + v * v * v * dt
        member _.Drift<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, f: 'V) =
            let mutable f = f
            let v = x.[0]
            f.[0] <- v * v * v
        member _.Diffuse<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _t: float, _w: 'V, _gw: 'V) = ()
        member _.Observe<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, obs: 'V) =
            let mutable obs = obs
            obs.[0] <- x.[0]

/// A model too large to run: int.MaxValue state components. Never stepped (the engine refuses it first).
[<Struct>]
type Huge =
    { Unused: float }
    interface ISdeModel with
        member _.Dim = System.Int32.MaxValue
        member _.NoiseDim = System.Int32.MaxValue
        member _.ObservableCount = 1
        member _.Init<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _zn: 'V, _zu: 'V) = failwith "Huge must not run"
        member _.Step<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _y: 'V, _w: 'V, _t: float, _dt: float, _sqdt: float) = failwith "Huge must not run"
        member _.Drift<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _t: float, _f: 'V) = ()
        member _.Diffuse<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _t: float, _w: 'V, _gw: 'V) = ()
        member _.Observe<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _t: float, _obs: 'V) = ()

/// Noisy Lorenz-96, N = 40 (periodic), dx_i = ((x_{i+1} − x_{i−2}) x_{i−1} − x_i + F) dt + σ dW_i,
/// x_i(0) = F + 0.01·[i = 0], as in bench/peers/l96_em.c. Observables: x_0, mean of x_i².
[<Struct>]
type L96 =
    { F: float; Sigma: float }
    interface ISdeModel with
        member _.Dim = 40
        member _.NoiseDim = 40
        member _.ObservableCount = 2
        member m.Init<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _zn: 'V, _zu: 'V) =
            let mutable x = x
            for i in 0 .. 39 do
                x.[i] <- m.F + (if i = 0 then 0.01 else 0.0)
        member m.Step<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, y: 'V, w: 'V, _t: float, dt: float, sqdt: float) =
            let mutable y = y
            let s = m.Sigma * sqdt
            let f = m.F
            // Wrap-around terms outside the loop so the interior needs no modulo.
            y.[0] <- x.[0] + ((x.[1] - x.[38]) * x.[39] - x.[0] + f) * dt + s * w.[0]
            y.[1] <- x.[1] + ((x.[2] - x.[39]) * x.[0] - x.[1] + f) * dt + s * w.[1]
            for i in 2 .. 38 do
                y.[i] <- x.[i] + ((x.[i + 1] - x.[i - 2]) * x.[i - 1] - x.[i] + f) * dt + s * w.[i]
            y.[39] <- x.[39] + ((x.[0] - x.[37]) * x.[38] - x.[39] + f) * dt + s * w.[39]
        member m.Drift<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, f: 'V) =
            let mutable f = f
            for i in 0 .. 39 do
                f.[i] <- (x.[(i + 1) % 40] - x.[(i + 38) % 40]) * x.[(i + 39) % 40] - x.[i] + m.F
        member m.Diffuse<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(_x: 'V, _t: float, w: 'V, gw: 'V) =
            let mutable gw = gw
            for i in 0 .. 39 do
                gw.[i] <- m.Sigma * w.[i]
        member _.Observe<'V when 'V : struct and 'V :> System.ValueType and 'V :> IVec and 'V : (new : unit -> 'V)>(x: 'V, _t: float, obs: 'V) =
            let mutable obs = obs
            obs.[0] <- x.[0]
            let mutable s = 0.0
            for i in 0 .. 39 do
                s <- s + x.[i] * x.[i]
            obs.[1] <- s / 40.0
