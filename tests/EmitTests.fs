module Sde.Tests.EmitTests

// FS0009: the vector tests pin arrays and hand the engine raw pointers (PtrVec), as the engine does
#nowarn "9"

open System
open Expecto
open Sde.Core
open Sde.Lang
open Sde.Lang.Checked
open Sde.Lang.Ir

let private pos : Syntax.Pos = Syntax.noPos

/// Lorenz-96 with N components built directly as a checked model (independent of the parser).
let l96Checked (n: int) : CheckedModel =
    let x ix = StateRef(0, ix)
    let i = IVar "i"
    let drift =
        CExpr.Add(CExpr.Sub(CExpr.Mul(CExpr.Sub(x (IAdd(i, IConst 1)), x (ISub(i, IConst 2))), x (ISub(i, IConst 1))), x i), CExpr.Param 0)
    { Name = "L96"
      Consts = [ "N", n ]
      Params = [ { Name = "F"; Default = 8.0; Domain = None; Pos = pos }; { Name = "sigma"; Default = 0.5; Domain = None; Pos = pos } ]
      States = [ { Name = "x"; Size = n; IsVector = true; Periodic = true; Offset = 0; Pos = pos } ]
      Brownians = [ { Name = "W"; Size = n; IsVector = true; Offset = 0; Pos = pos } ]
      Inits = [ { State = 0; Index = Some "i"; Kind = Normal(CExpr.Param 0, Const 1.0); Pos = pos } ]
      Equations = [ { State = 0; Index = Some "i"; Drift = drift; Noise = [ { Brownian = 0; Index = i; Coeff = CExpr.Param 1 } ]; Pos = pos } ]
      Dim = n
      NoiseDim = n
      Calculus = Ito
      Pos = pos }

/// A 2-state model with multiplicative, non-diagonal noise, `if` on time and functions.
let twoChecked () : CheckedModel =
    let x = StateRef(0, IConst 0)
    let y = StateRef(1, IConst 0)
    let a = CExpr.Param 0
    { Name = "Two"
      Consts = []
      Params = [ { Name = "a"; Default = 0.7; Domain = None; Pos = pos } ]
      States =
        [ { Name = "x"; Size = 1; IsVector = false; Periodic = false; Offset = 0; Pos = pos }
          { Name = "y"; Size = 1; IsVector = false; Periodic = false; Offset = 1; Pos = pos } ]
      Brownians = [ { Name = "W"; Size = 2; IsVector = true; Offset = 0; Pos = pos } ]
      Inits = [ { State = 0; Index = None; Kind = Uniform(Const -1.0, a); Pos = pos } ]
      Equations =
        [ { State = 0; Index = None
            Drift = CExpr.Sub(CExpr.Mul(a, y), Power(x, Const 3.0))
            Noise = [ { Brownian = 0; Index = IConst 0; Coeff = Func(Sqrt, [ CExpr.Add(Const 1.0, CExpr.Mul(x, x)) ]) }
                      { Brownian = 0; Index = IConst 1; Coeff = CExpr.Mul(Const 0.3, Func(Sin, [ y ])) } ]
            Pos = pos }
          { State = 1; Index = None
            Drift = IfThen(CCmp(Syntax.Lt, CExpr.Time, Const 0.5), CExpr.Neg y, Func(Tanh, [ x ]))
            Noise = [ { Brownian = 0; Index = IConst 1; Coeff = CExpr.Div(a, CExpr.Add(Const 2.0, Func(Cos, [ x ]))) } ]
            Pos = pos } ]
      Dim = 2
      NoiseDim = 2
      Calculus = Ito
      Pos = pos }

let private vec (a: float[]) (f: PtrVec -> 'r) : 'r =
    let h = Runtime.InteropServices.GCHandle.Alloc(a, Runtime.InteropServices.GCHandleType.Pinned)
    try
        f (PtrVec(NativeInterop.NativePtr.ofNativeInt<float> (h.AddrOfPinnedObject())))
    finally
        h.Free()

/// Emitted code against the IR interpreter on random inputs.
let private agreesWithInterpreter (cm: CheckedModel) (pvals: float[]) =
    let ir = Lower.lowerModel cm
    let obs = [| add (state 0) (mul (num 2.0) (powi (state (ir.Dim - 1)) 2)); select (cmp Syntax.Gt (state 0) zero) one (neg one) |]
    let c = Compile.compile ir obs [| 0 |]
    let m = c.Instance pvals :?> ISdeModel
    let rng = Random(5)
    for _ in 1..20 do
        let x = Array.init ir.Dim (fun _ -> rng.NextDouble() * 4.0 - 2.0)
        let w = Array.init ir.NoiseDim (fun _ -> rng.NextDouble() * 2.0 - 1.0)
        let t = rng.NextDouble()
        let dt, sq = 0.01, 0.1
        let leaf op =
            match op with
            | Param i -> pvals[i]
            | State k -> x[k]
            | Noise l -> w[l]
            | Time -> t
            | Ext ("dt", _) -> dt
            | Ext ("sqdt", _) -> sq
            | op -> failwithf "%A" op
        let y = Array.zeroCreate ir.Dim
        let f = Array.zeroCreate ir.Dim
        let gw = Array.zeroCreate ir.Dim
        let o = Array.zeroCreate obs.Length
        vec x (fun xv -> vec y (fun yv -> vec w (fun wv -> m.Step(xv, yv, wv, t, dt, sq))))
        vec x (fun xv -> vec f (fun fv -> m.Drift(xv, t, fv)))
        vec x (fun xv -> vec w (fun wv -> vec gw (fun gv -> m.Diffuse(xv, t, wv, gv))))
        vec x (fun xv -> vec o (fun ov -> m.Observe(xv, t, ov)))
        let steps = Lower.stepExpressions ir
        for k in 0 .. ir.Dim - 1 do
            Expect.floatClose Accuracy.veryHigh f[k] (eval leaf ir.Drift[k]) "drift"
            Expect.floatClose Accuracy.veryHigh y[k] (eval leaf steps[k]) "step"
            Expect.floatClose Accuracy.veryHigh y[k] (x[k] + f[k] * dt + gw[k] * sq) "step = x + f dt + g w sqdt"
        for q in 0 .. obs.Length - 1 do
            Expect.floatClose Accuracy.veryHigh o[q] (eval leaf obs[q]) "observable"


/// The opcodes of a method body, operands skipped (a small IL reader).
let private ilOpCodes (body: byte[]) : Reflection.Emit.OpCode list =
    let table =
        typeof<Reflection.Emit.OpCodes>.GetFields(Reflection.BindingFlags.Public ||| Reflection.BindingFlags.Static)
        |> Array.map (fun f -> f.GetValue null :?> Reflection.Emit.OpCode)
        |> Array.map (fun o -> uint16 o.Value, o)
        |> dict
    let rec go i acc =
        if i >= body.Length then List.rev acc
        else
            let code, len = if body[i] = 0xFEuy then (0xFE00us ||| uint16 body[i + 1]), 2 else uint16 body[i], 1
            let op = table[code]
            let operand =
                match op.OperandType with
                | Reflection.Emit.OperandType.InlineNone -> 0
                | Reflection.Emit.OperandType.ShortInlineBrTarget
                | Reflection.Emit.OperandType.ShortInlineI
                | Reflection.Emit.OperandType.ShortInlineVar -> 1
                | Reflection.Emit.OperandType.InlineVar -> 2
                | Reflection.Emit.OperandType.InlineI8
                | Reflection.Emit.OperandType.InlineR -> 8
                | Reflection.Emit.OperandType.InlineSwitch -> 4 + 4 * BitConverter.ToInt32(body, i + len)
                | _ -> 4
            go (i + len + operand) (op :: acc)
    go 0 []

[<Tests>]
let tests =
    testList "Emit" [
        test "Lorenz-96 emitted code equals the IR interpreter" { agreesWithInterpreter (l96Checked 7) [| 8.0; 0.5 |] }
        test "multiplicative non-diagonal noise, if, functions" { agreesWithInterpreter (twoChecked ()) [| 0.7 |] }
        test "ParamTangent dispatches on the parameter without an IL switch (ILGPU swaps a one-case switch's branches)" {
            let ir = Lower.lowerModel (l96Checked 5)
            for wrt in [ [| 0 |]; [| 1 |]; [| 0; 1 |] ] do
                let c = Compile.compile ir [||] wrt
                let m =
                    c.Type.GetMethods(Reflection.BindingFlags.Instance ||| Reflection.BindingFlags.Public ||| Reflection.BindingFlags.NonPublic)
                    |> Array.find (fun m -> m.Name.EndsWith "ParamTangent")
                let ops = ilOpCodes (m.GetMethodBody().GetILAsByteArray())
                Expect.isFalse (List.contains Reflection.Emit.OpCodes.Switch ops) (sprintf "%A: no switch" wrt)
                Expect.equal (ops |> List.filter ((=) Reflection.Emit.OpCodes.Bne_Un) |> List.length) wrt.Length (sprintf "%A: one comparison per parameter" wrt)
        }
        test "Lorenz-96 drift is sparse: 4 states per component" {
            let ir = Lower.lowerModel (l96Checked 40)
            for k in 0 .. 39 do
                Expect.equal (stateDeps ir.Drift[k]).Length 4 "four neighbours"
        }
        test "init: normal and uniform use their lanes" {
            let ir = Lower.lowerModel (twoChecked ())
            let c = Compile.compile ir [||] [| 0 |]
            let m = c.Instance [| 0.7 |] :?> ISdeModel
            let x = Array.zeroCreate 2
            let zn = [| 0.3; -0.2 |]
            let zu = [| 0.25; 0.5 |]
            vec x (fun xv -> vec zn (fun a -> vec zu (fun b -> m.Init(xv, a, b))))
            Expect.floatClose Accuracy.veryHigh x[0] (-1.0 + 1.7 * 0.25) "uniform(-1, a)"
            Expect.equal x[1] 0.0 "missing init is 0"
        }
        test "symbolic derivative of x^3 - a y" {
            let e = sub (powi (state 0) 3) (mul (param 0) (state 1))
            let d = derivative (State 0) e
            Expect.floatClose Accuracy.veryHigh (eval (function State 0 -> 2.0 | _ -> 0.0) d) 12.0 "3x^2"
            Expect.equal (derivative (State 1) e) (neg (param 0)) "-a"
        }
    ]
