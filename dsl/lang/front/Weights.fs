/// Weighted (Feynman–Kac) models, before the checker: `weight w` and `d log w = V dt [+ b dW]` become
/// a hidden scalar state holding log w (init 0, appended after the user's states), `log_density(x)` a
/// second hidden state that the engine fills before each step, and the simulate keys `resample`, `ess`
/// and `bandwidth` a `WeightSpec`. The checker then sees an ordinary model (and checks V, b like any
/// equation: linear in dt and dW, names, indices); a file without `weight` passes through unchanged.
module Sde.Lang.Weights

open Sde.Lang.Syntax

/// The hidden state of log_density(...): a name no source can write (`'` is not a name character).
let densityState = "log_density'"

let private resampleNames =
    [ "systematic", Checked.Systematic
      "stratified", Checked.Stratified
      "multinomial", Checked.Multinomial
      "residual", Checked.Residual
      "birth_death", Checked.BirthDeath
      "none", Checked.NoResample ]

/// Every sub-expression, in O(size) with an explicit stack (expressions may be 10^4 levels deep).
let private subExprs (e: Expr) : Expr list =
    let out = System.Collections.Generic.List<Expr>()
    let stack = System.Collections.Generic.Stack<Expr>()
    stack.Push e
    while stack.Count > 0 do
        let e = stack.Pop()
        out.Add e
        match e.Kind with
        | Num _ | Var _ -> ()
        | Index(_, i) -> stack.Push i
        | Neg a | Not a | Reduce(_, _, a) -> stack.Push a
        | Bin(_, a, b) | Cmp(_, a, b) | And(a, b) | Or(a, b) -> stack.Push b; stack.Push a
        | Call(_, args) -> for a in List.rev args do stack.Push a
        | If(c, a, b) -> stack.Push b; stack.Push a; stack.Push c
    List.ofSeq out

/// `log_density(...)` replaced by the hidden state.
let rec private replaceDensity (e: Expr) : Expr =
    let r = replaceDensity
    let k =
        match e.Kind with
        | Call("log_density", _) -> Var densityState
        | Num _ | Var _ -> e.Kind
        | Index(n, i) -> Index(n, r i)
        | Neg a -> Neg(r a)
        | Not a -> Not(r a)
        | Reduce(op, j, a) -> Reduce(op, j, r a)
        | Bin(op, a, b) -> Bin(op, r a, r b)
        | Cmp(op, a, b) -> Cmp(op, r a, r b)
        | And(a, b) -> And(r a, r b)
        | Or(a, b) -> Or(r a, r b)
        | Call(f, args) -> Call(f, List.map r args)
        | If(c, a, b) -> If(r c, r a, r b)
    { e with Kind = k }

let private modelExprs (items: ModelItem list) =
    [ for mi in items do
          match mi with
          | ConstDecl(_, e, _) | ParamDecl(_, _, e, _, _) | LetDecl(_, e, _) -> yield e
          | StateDecl(_, size, _, _) | BrownianDecl(_, size, _) -> yield! Option.toList size
          | InitDecl(_, _, rhs, _) ->
              match rhs with
              | InitValue e -> yield e
              | InitNormal(a, b) | InitUniform(a, b) -> yield! [ a; b ]
          | Equation(_, _, e, _) -> yield e
          | LogWeightEquation _ | WeightDecl _ | CalculusDecl _ -> () ]

let private queryExprs (qs: Query list) =
    [ for q in qs do
          let target t =
              match t with
              | MeanOf e | VarianceOf e -> [ e ]
              | SeriesOf(e, d) -> [ e; d ]
              | DensityOf(e, a, b, n) -> [ e; a; b; n ]
              | CovarianceOf(a, b) -> [ a; b ]
              | QuantileOf(e, p, a, b, n) -> [ e; p; a; b; n ]
              | Density2Of(e1, e2, a, b, c, d, n, m) -> [ e1; e2; a; b; c; d; n; m ]
          match q.Kind with
          | Plain(t, _) | Response(t, _, _, _, _) -> yield! target t
          | Let(_, e) -> yield e
          | Samples(es, every) -> yield! es @ Option.toList every
          | Score(e, a, b, n) -> yield! [ e; a; b; n ]
          | Lyapunov _ | Alignment _ | WeightQuery _ -> () ]

let private err (p: Pos) (m: string) = { Pos = p; Message = m }

/// A positive finite number written as a literal (a simulate value).
let private literal (e: Expr) =
    match e.Kind with
    | Num v -> Some v
    | Neg { Kind = Num v } -> Some(-v)
    | _ -> None

/// The desugared file and the weight, or the located errors.
let desugar (f: File) : Result<File * Checked.WeightSpec option, Diagnostic list> =
    let model = f.Items |> List.tryPick (function ModelBlock m -> Some m | _ -> None)
    let sim = f.Items |> List.tryPick (function SimulateBlock(s, _) -> Some s | _ -> None) |> Option.defaultValue []
    let queries = f.Items |> List.tryPick (function QueryBlock(q, _) -> Some q | _ -> None) |> Option.defaultValue []
    let weightKeys = [ "resample"; "ess"; "bandwidth" ]

    match model with
    | None -> Ok(f, None)
    | Some m ->
        let decls = m.Items |> List.choose (function WeightDecl(n, p) -> Some(n, p) | _ -> None)
        let eqs = m.Items |> List.choose (function LogWeightEquation(n, e, p) -> Some(n, e, p) | _ -> None)
        let allExprs = modelExprs m.Items @ queryExprs queries @ (sim |> List.map (fun s -> s.Value))

        let densityCalls (es: Expr list) =
            es |> List.collect subExprs |> List.filter (fun e -> match e.Kind with Call("log_density", _) -> true | _ -> false)

        match decls with
        | [] ->
            // no weight: the weighted forms are errors, everything else passes unchanged
            let errs =
                [ for (n, _, p) in eqs -> err p (sprintf "'d log %s' needs a weight: declare 'weight %s' in the model" n n)
                  for s in sim do
                      if List.contains s.Key weightKeys then
                          yield err s.Pos (sprintf "'%s' applies to weighted models: declare 'weight w' and 'd log w = ...' in the model" s.Key)
                  for q in queries do
                      match q.Kind with
                      | WeightQuery n -> yield err q.Pos (sprintf "'%s' is a property of a weighted population: declare 'weight w' and 'd log w = ...' in the model" n)
                      | _ -> ()
                  for e in densityCalls allExprs ->
                      err e.Pos "log_density(...) is the density of the weighted population: it needs 'weight w' and may appear only in 'd log w = ...'" ]

            if errs.IsEmpty then Ok(f, None) else Error(errs |> List.sortBy (fun d -> d.Pos.Line, d.Pos.Col))
        | (w, wpos) :: more ->
            let weightEqs = eqs |> List.filter (fun (n, _, _) -> n = w)
            let uses (e: Expr) = match e.Kind with Var n | Index(n, _) when n = w -> true | _ -> false
            let calls = densityCalls allExprs

            let densityArgs =
                eqs
                |> List.collect (fun (_, e, _) -> densityCalls [ e ])
                |> List.map (fun e -> match e.Kind with Call(_, args) -> e, args | _ -> e, [])

            let stateSizes =
                m.Items |> List.choose (function StateDecl(n, size, _, _) -> Some(n, size) | _ -> None) |> Map.ofList

            let argErrs =
                [ for (call, args) in densityArgs do
                      if args.IsEmpty then yield err call.Pos "log_density needs the states whose density it estimates: log_density(x) or log_density(x, y)"
                      for a in args do
                          match a.Kind with
                          | Var n when stateSizes.ContainsKey n && stateSizes[n].IsNone -> ()
                          | Var n when stateSizes.ContainsKey n ->
                              yield err a.Pos (sprintf "log_density of the vector state '%s': name scalar states (log_density(x, y)); vector states are not available yet" n)
                          | Var n when n = w -> yield err a.Pos (sprintf "log_density of the weight '%s': it estimates the density of states" n)
                          | Var n -> yield err a.Pos (sprintf "log_density of '%s': no such state" n)
                          | _ -> yield err a.Pos "log_density takes state names (log_density(x) or log_density(x, y)), not expressions"
                      let names = args |> List.map (fun a -> match a.Kind with Var n -> n | _ -> "")
                      if names.Length > 3 then
                          yield err call.Pos (sprintf "log_density over %d coordinates is not available yet (the binned estimate works in 1 to 3)" names.Length)
                      if names.Length <> (List.distinct names).Length then yield err call.Pos "log_density names a state twice" ]

            let firstArgs = densityArgs |> List.tryHead |> Option.map (fun (_, args) -> args |> List.map (fun a -> match a.Kind with Var n -> n | _ -> ""))

            let sameArgs =
                [ for (call, args) in densityArgs do
                      let names = args |> List.map (fun a -> match a.Kind with Var n -> n | _ -> "")
                      if Some names <> firstArgs then err call.Pos "every log_density(...) of a model must name the same states (there is one density estimate)" ]

            let simErrs, resample, ess, bandwidth =
                let get k = sim |> List.tryFind (fun s -> s.Key = k)
                let resample =
                    match get "resample" with
                    | None -> Ok Checked.Systematic
                    | Some s ->
                        match s.Value.Kind with
                        | Var n when resampleNames |> List.exists (fun (k, _) -> k = n) -> Ok(resampleNames |> List.find (fun (k, _) -> k = n) |> snd)
                        | _ -> Error(err s.Value.Pos (sprintf "resample must be one of %s" (resampleNames |> List.map fst |> String.concat ", ")))
                let ess =
                    match get "ess" with
                    | None -> Ok 0.5
                    | Some s ->
                        match literal s.Value with
                        | Some v when v > 0.0 && v <= 1.0 -> Ok v
                        | Some v -> Error(err s.Value.Pos (sprintf "ess = %g is outside (0, 1]: it is the fraction ESS/paths below which the population is resampled" v))
                        | None -> Error(err s.Value.Pos "ess must be a number in (0, 1]")
                let bandwidth =
                    match get "bandwidth" with
                    | None -> Ok None
                    | Some s ->
                        match literal s.Value with
                        | Some v when v > 0.0 && System.Double.IsFinite v -> Ok(Some v)
                        | _ -> Error(err s.Value.Pos "bandwidth must be a positive number (the kernel's standard deviation in every coordinate)")
                let errs = [ for r in [ resample |> Result.map ignore; ess |> Result.map ignore; bandwidth |> Result.map ignore ] do match r with Error e -> e | Ok() -> () ]
                errs, resample, ess, bandwidth

            let errs =
                [ for (_, p) in more -> err p "a second weight; a model carries one ('weight w' with its 'd log w = ...')"
                  match weightEqs with
                  | [] -> yield err wpos (sprintf "the weight '%s' has no equation: add 'd log %s = V dt' (V any expression of states, params and t)" w w)
                  | _ :: extra -> for (_, _, p) in extra -> err p (sprintf "a second equation for the weight '%s'; write one 'd log %s = ...' with the terms summed" w w)
                  for (n, _, p) in eqs do
                      if n <> w then yield err p (sprintf "'%s' is not a weight (the weight is '%s')" n w)
                  for mi in m.Items do
                      match mi with
                      | InitDecl(n, _, _, p) when n = w ->
                          yield err p (sprintf "the weight '%s' has no init: every path starts with weight 1 (log %s = 0)" w w)
                      | Equation(n, _, _, p) when n = w ->
                          yield err p (sprintf "the weight's equation is written for its log: 'd log %s = V dt [+ b dW]'" w)
                      | _ -> ()
                  for e in allExprs |> Seq.collect subExprs |> Seq.filter uses ->
                      err e.Pos (sprintf "the weight '%s' cannot appear in expressions: means and densities are weighted by it automatically" w)
                  for (_, e, _) in eqs do
                      for u in subExprs e |> Seq.filter uses -> err u.Pos (sprintf "the weight '%s' cannot appear in its own equation: V and b are functions of the states, params and t" w)
                  let inWeight = eqs |> List.collect (fun (_, e, _) -> densityCalls [ e ]) |> List.map (fun e -> e.Pos.Line, e.Pos.Col) |> Set.ofList
                  for c in calls do
                      if not (inWeight.Contains(c.Pos.Line, c.Pos.Col)) then
                          yield err c.Pos "log_density(...) may appear only in the weight's equation 'd log w = ...'"
                  // the log-weight is a hidden state whose diffusion may read log_density(...), an
                  // ensemble quantity with no derivative in the path's state: the Stratonovich
                  // correction of its row has no symbolic form
                  for mi in m.Items do
                      match mi with
                      | CalculusDecl("stratonovich", p) ->
                          yield err p (sprintf "calculus stratonovich is not available for a weighted model: the weight's equation 'd log %s = ...' is read as Itô; write the model's equations in Itô form (docs/estimators.md, Stratonovich models)" w)
                      | _ -> ()
                  yield! argErrs
                  yield! sameArgs
                  yield! simErrs ]

            if not errs.IsEmpty then Error(errs |> List.distinctBy (fun d -> d.Pos.Line, d.Pos.Col, d.Message) |> List.sortBy (fun d -> d.Pos.Line, d.Pos.Col))
            else
                let _, rhs, epos = weightEqs.Head
                let hasDensity = not densityArgs.IsEmpty
                let zero p = { Kind = Num 0.0; Pos = p }
                let hidden =
                    [ StateDecl(w, None, false, wpos)
                      InitDecl(w, None, InitValue(zero wpos), wpos)
                      Equation(w, None, replaceDensity rhs, epos)
                      if hasDensity then
                          StateDecl(densityState, None, false, wpos)
                          InitDecl(densityState, None, InitValue(zero wpos), wpos)
                          Equation(densityState, None, { Kind = Bin(Mul, zero epos, { Kind = Var "dt"; Pos = epos }); Pos = epos }, epos) ]
                let items = (m.Items |> List.filter (function WeightDecl _ | LogWeightEquation _ -> false | _ -> true)) @ hidden
                let fileItems =
                    f.Items
                    |> List.map (function
                        | ModelBlock mb -> ModelBlock { mb with Items = items }
                        | SimulateBlock(s, p) -> SimulateBlock(s |> List.filter (fun s -> not (List.contains s.Key weightKeys)), p)
                        | it -> it)
                let spec: Checked.WeightSpec =
                    { Name = w
                      LogState = w
                      DensityState = (if hasDensity then Some densityState else None)
                      DensityOf = defaultArg firstArgs []
                      Resample = (match resample with Ok r -> r | Error _ -> Checked.Systematic)
                      Ess = (match ess with Ok e -> e | Error _ -> 0.5)
                      Bandwidth = (match bandwidth with Ok b -> b | Error _ -> None)
                      Pos = wpos }
                Ok({ Items = fileItems }, Some spec)
